"""HTTP access to the streams (Docs/services.md): the REST Proxy v2 API
driven with curl and with Python's own HTTP client, a consumer group that
mixes an HTTP consumer instance with a confluent-kafka consumer (every
record read once between them), Server-Sent Events receiving live
records, and the ACLs of the Kafka port deciding on HTTP too."""
import base64
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, AdminClient, ConfigResource, NewTopic, ResourcePatternType, ResourceType

from conftest import unique
# The broker with SASL users and the authorizer on that test_acls.py uses.
from test_acls import USERS, acl_broker  # noqa: F401 (a fixture)

V2 = "application/vnd.kafka.v2+json"
JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"


def call(url, method="GET", body=None, content_type=V2, accept=None, auth=None, timeout=30):
    """(status, parsed JSON or None) of one request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    if accept:
        request.add_header("Accept", accept)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
            return answer.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, (json.loads(raw) if raw else None)


def make_topic(broker, name, partitions, **settings):
    admin = AdminClient(dict({"bootstrap.servers": broker.address}, **settings))
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)


def test_curl_produces_json_and_binary_records_that_kafka_clients_read(broker):
    topic = unique("http-produce")
    make_topic(broker, topic, 2)
    body = json.dumps({"records": [{"key": "room-1", "value": {"text": "hello"}}, {"value": [1, 2, 3], "partition": 1}]})
    out = subprocess.run(["curl", "-sS", "-X", "POST", "-H", "Content-Type: " + JSON_V2, "--data", body, "%s/topics/%s" % (broker.proxy_url, topic)],
                         capture_output=True, timeout=30, check=True)
    answer = json.loads(out.stdout)
    assert [entry["error_code"] for entry in answer["offsets"]] == [None, None]
    assert answer["offsets"][1]["partition"] == 1
    status, binary = call("%s/topics/%s/partitions/0" % (broker.proxy_url, topic), "POST",
                          {"records": [{"key": base64.b64encode(b"k").decode(), "value": base64.b64encode(b"\x00\xffraw").decode()}]},
                          content_type=BINARY_V2)
    assert status == 200 and binary["offsets"][0]["partition"] == 0

    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": unique("reader"), "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen = {}
    deadline = time.monotonic() + 30
    while len(seen) < 3 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen[(message.partition(), message.offset())] = (message.key(), message.value())
    consumer.close()
    values = sorted(value for _, value in seen.values())
    assert values == sorted([b'{"text":"hello"}', b"[1,2,3]", b"\x00\xffraw"])
    assert (b'"room-1"', b'{"text":"hello"}') in seen.values()  # a json key is JSON

    status, described = call("%s/topics/%s" % (broker.proxy_url, topic))
    assert status == 200 and described["name"] == topic and [p["partition"] for p in described["partitions"]] == [0, 1]
    assert described["configs"]["cleanup.policy"] == "delete", described
    status, topics = call("%s/topics" % broker.proxy_url)
    assert status == 200 and topic in topics
    assert call("%s/topics/%s" % (broker.proxy_url, unique("absent")))[0] == 404
    status, refused = call("%s/topics/%s" % (broker.proxy_url, topic), "POST", {"records": [{"value": 1}]}, content_type="application/vnd.kafka.avro.v2+json")
    assert status == 415 and refused["error_code"] == 41501


def test_a_request_with_more_records_than_a_batch_holds_is_refused_and_the_broker_serves_on(broker):
    # Every record of a request may go to one partition, in one batch, and
    # a batch holds at most 2^20 records: a body of empty objects gets there
    # in 3 MB. Refused whole, in both embedded formats; the next request works.
    topic = unique("http-many")
    make_topic(broker, topic, 1)
    body = ('{"records":[' + ",".join(["{}"] * ((1 << 20) + 1)) + "]}").encode()
    for content_type in (BINARY_V2, JSON_V2):
        request = urllib.request.Request("%s/topics/%s" % (broker.proxy_url, topic), data=body, method="POST", headers={"Content-Type": content_type})
        try:
            urllib.request.urlopen(request, timeout=120)
            raise AssertionError("accepted")
        except urllib.error.HTTPError as refused:
            answer = json.loads(refused.read())
            assert refused.code == 422 and "at most 1048576" in answer["message"], answer
    status, answer = call("%s/topics/%s" % (broker.proxy_url, topic), "POST", {"records": [{"value": base64.b64encode(b"after").decode()}]},
                          content_type=BINARY_V2)
    assert status == 200 and answer["offsets"][0]["error_code"] is None, answer


def test_concurrent_requests_each_get_their_records_stored_once_where_their_answer_says(broker):
    # Requests that come while a partition's batch is being written share
    # the next batch (SharedBatches). Whatever they shared: every record of
    # an accepted request is stored once, at the offset its answer gives,
    # a request's records stay together and in order; a request too large
    # for the topic is refused alone, and the requests that shared a batch
    # with it are stored (their shared batch refused, each is tried alone).
    topic = unique("http-shared")
    make_topic(broker, topic, 2)
    admin = AdminClient({"bootstrap.servers": broker.address})
    admin.alter_configs([ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"max.message.bytes": "40000"})])[
        ConfigResource(ConfigResource.Type.TOPIC, topic)].result(30)
    answers, failures = {}, []

    def send(thread):
        for number in range(12):
            # Every fourth request is too large for the topic on its own (about
            # 51 KB in one partition); the rest take 10 KB a partition.
            large = number % 4 == 3
            count = 50 if large else 10
            partition = (thread + number) % 2
            records = [{"value": base64.b64encode(b"%d/%d/%d/" % (thread, number, index) + b"x" * 1000).decode(), "partition": partition}
                       for index in range(count)]
            status, answer = call("%s/topics/%s" % (broker.proxy_url, topic), "POST", {"records": records}, content_type=BINARY_V2)
            if status != 200:
                failures.append((thread, number, status, answer))
            else:
                answers[(thread, number)] = (large, partition, answer["offsets"])

    threads = [threading.Thread(target=send, args=(thread,)) for thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:3]
    assert len(answers) == 8 * 12
    expected = {}
    for (thread, number), (large, partition, offsets) in answers.items():
        if large:
            # Refused whole, with a Kafka error that is not retriable.
            assert all(entry["offset"] is None and entry["error_code"] == 2 for entry in offsets), offsets[:2]
            continue
        assert all(entry["error_code"] is None and entry["partition"] == partition for entry in offsets), offsets[:2]
        first = offsets[0]["offset"]
        assert [entry["offset"] for entry in offsets] == list(range(first, first + len(offsets)))
        for index, entry in enumerate(offsets):
            expected[(partition, entry["offset"])] = b"%d/%d/%d/" % (thread, number, index)
    assert len(expected) == 8 * 9 * 10

    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": unique("shared-reader"), "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen = {}
    deadline = time.monotonic() + 60
    while len(seen) < len(expected) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            place = (message.partition(), message.offset())
            assert place not in seen, place
            seen[place] = message.value().split(b"x", 1)[0]
    consumer.close()
    assert seen == expected


def records_of(url, accept=JSON_V2, timeout_ms=500):
    status, records = call(url + "/records?timeout=%d" % timeout_ms, accept=accept, timeout=30)
    assert status == 200, records
    return records


def test_one_group_mixes_an_http_consumer_and_a_kafka_consumer_and_reads_every_record_once(broker):
    topic = unique("http-group")
    group = unique("mixed")
    make_topic(broker, topic, 4)
    status, created = call("%s/consumers/%s" % (broker.proxy_url, group), "POST",
                           {"name": "web-1", "format": "json", "auto.offset.reset": "earliest"})
    assert status == 200, created
    instance = created["base_uri"]
    assert call(instance + "/subscription", "POST", {"topics": [topic]})[0] == 204
    assert call(instance + "/subscription")[1] == {"topics": [topic]}
    # The HTTP member joins first and holds all four partitions.
    deadline = time.monotonic() + 30
    while not call(instance + "/assignments")[1]["partitions"] and time.monotonic() < deadline:
        records_of(instance)
    assert len(call(instance + "/assignments")[1]["partitions"]) == 4

    kafka = Consumer({"bootstrap.servers": broker.address, "group.id": group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False, "session.timeout.ms": 10000})
    kafka.subscribe([topic])
    # The group rebalances: the Kafka member gets its share before any
    # record is written (the HTTP member rejoins on its own, between polls).
    deadline = time.monotonic() + 60
    while not kafka.assignment() and time.monotonic() < deadline:
        assert kafka.poll(0.2) is None
    assert len(kafka.assignment()) == 2, kafka.assignment()
    deadline = time.monotonic() + 30
    while len(call(instance + "/assignments")[1]["partitions"]) != 2 and time.monotonic() < deadline:
        records_of(instance, timeout_ms=200)
    assert len(call(instance + "/assignments")[1]["partitions"]) == 2
    producer = Producer({"bootstrap.servers": broker.address})
    total = 200
    for i in range(total):
        producer.produce(topic, value=json.dumps({"n": i}).encode(), partition=i % 4)
    producer.flush(30)

    by_http, by_kafka = [], []
    deadline = time.monotonic() + 90
    while len(by_http) + len(by_kafka) < total and time.monotonic() < deadline:
        message = kafka.poll(0.2)
        if message is not None and message.error() is None:
            by_kafka.append(json.loads(message.value())["n"])
            kafka.commit(message=message, asynchronous=False)
        by_http += [record["value"]["n"] for record in records_of(instance, timeout_ms=200)]
    # A last look on both sides: nothing more may arrive.
    for _ in range(5):
        message = kafka.poll(0.2)
        if message is not None and message.error() is None:
            by_kafka.append(json.loads(message.value())["n"])
        by_http += [record["value"]["n"] for record in records_of(instance, timeout_ms=200)]
    kafka.close()
    assert call(instance, "DELETE")[0] == 204
    assert call(instance + "/subscription")[0] == 404
    every = by_http + by_kafka
    assert sorted(every) == list(range(total)), "missing %s, twice %s" % (
        sorted(set(range(total)) - set(every)), sorted({n for n in every if every.count(n) > 1}))
    assert by_http and by_kafka, "both members read: http %d, kafka %d" % (len(by_http), len(by_kafka))


def test_manual_commits_and_seeks_of_an_http_consumer(broker):
    topic = unique("http-commit")
    group = unique("commits")
    make_topic(broker, topic, 1)
    call("%s/topics/%s" % (broker.proxy_url, topic), "POST", {"records": [{"value": "aGk=", "partition": 0}] * 5}, content_type=BINARY_V2)
    status, created = call("%s/consumers/%s" % (broker.proxy_url, group), "POST",
                           {"name": "c", "format": "binary", "auto.offset.reset": "earliest", "auto.commit.enable": "false"})
    instance = created["base_uri"]
    assert call(instance + "/assignments", "POST", {"partitions": [{"topic": topic, "partition": 0}]})[0] == 204
    got = records_of(instance, accept=BINARY_V2, timeout_ms=3000)
    assert [record["offset"] for record in got] == [0, 1, 2, 3, 4]
    assert base64.b64decode(got[0]["value"]) == b"hi"
    # The REST Proxy commits after the offset named: the group resumes at 3.
    assert call(instance + "/offsets", "POST", {"offsets": [{"topic": topic, "partition": 0, "offset": 2}]})[0] == 204
    status, committed = call(instance + "/committed/offsets", "GET", {"partitions": [{"topic": topic, "partition": 0}]})
    assert committed["offsets"][0]["offset"] == 3
    assert call(instance + "/positions", "POST", {"offsets": [{"topic": topic, "partition": 0, "offset": 1}]})[0] == 204
    assert [record["offset"] for record in records_of(instance, accept=BINARY_V2, timeout_ms=3000)] == [1, 2, 3, 4]
    assert call(instance + "/positions/beginning", "POST", {"partitions": [{"topic": topic, "partition": 0}]})[0] == 204
    assert records_of(instance, accept=BINARY_V2, timeout_ms=3000)[0]["offset"] == 0
    # A json Accept for a binary consumer is refused, as the REST Proxy does.
    assert call(instance + "/records", accept=JSON_V2)[0] == 406
    assert call(instance, "DELETE")[0] == 204
    # The group's offset is where Kafka clients of the group start.
    kafka = Consumer({"bootstrap.servers": broker.address, "group.id": group, "auto.offset.reset": "earliest"})
    kafka.subscribe([topic])
    first = None
    deadline = time.monotonic() + 30
    while first is None and time.monotonic() < deadline:
        message = kafka.poll(0.5)
        if message is not None and message.error() is None:
            first = message.offset()
    kafka.close()
    assert first == 3


def read_events(url, count, timeout=30):
    """The first `count` record events of a Server-Sent Events stream."""
    events = []
    with urllib.request.urlopen(url, timeout=timeout) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        event = {}
        deadline = time.monotonic() + timeout
        while len(events) < count and time.monotonic() < deadline:
            line = stream.readline().decode().rstrip("\n")
            if line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line.startswith("id: "):
                event["id"] = line[4:]
            elif line == "" and "data" in event:
                events.append(event)
                event = {}
    return events


def test_server_sent_events_deliver_live_records_from_an_offset_and_in_a_group(broker):
    topic = unique("http-sse")
    make_topic(broker, topic, 2)
    call("%s/topics/%s" % (broker.proxy_url, topic), "POST", {"records": [{"value": {"before": True}, "partition": 0}]}, content_type=JSON_V2)
    found = {}

    def listen(name, url, count):
        found[name] = read_events(url, count)

    listeners = [
        threading.Thread(target=listen, args=("all", "%s/topics/%s/events?from=earliest&format=json" % (broker.proxy_url, topic), 4)),
        threading.Thread(target=listen, args=("group", "%s/topics/%s/events?group=%s&from=earliest&format=json" % (broker.proxy_url, topic, unique("sse")), 4)),
    ]
    for listener in listeners:
        listener.start()
    time.sleep(1)  # the streams are open before the live records come
    for i in range(3):
        assert call("%s/topics/%s" % (broker.proxy_url, topic), "POST", {"records": [{"value": {"live": i}, "partition": i % 2}]}, content_type=JSON_V2)[0] == 200
    for listener in listeners:
        listener.join(timeout=40)
    for name in ("all", "group"):
        values = sorted(json.dumps(event["data"]["value"], sort_keys=True) for event in found[name])
        assert values == sorted(['{"before": true}', '{"live": 0}', '{"live": 1}', '{"live": 2}']), (name, found[name])
        assert all(event["id"] == "%d:%d" % (event["data"]["partition"], event["data"]["offset"]) for event in found[name])


def test_http_requests_are_authenticated_and_the_kafka_acls_decide(acl_broker):
    admin_settings = {"bootstrap.servers": acl_broker.address, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
                      "sasl.username": "admin", "sasl.password": USERS["admin"]}
    topic = "ministry-" + unique("http")
    make_topic(acl_broker, topic, 1, **{k: v for k, v in admin_settings.items() if k != "bootstrap.servers"})
    admin = AdminClient(admin_settings)
    for future in admin.create_acls([
        AclBinding(ResourceType.TOPIC, "ministry-", ResourcePatternType.PREFIXED, "User:alice", "*", operation, AclPermissionType.ALLOW)
        for operation in (AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE)
    ] + [AclBinding(ResourceType.GROUP, "ministry-", ResourcePatternType.PREFIXED, "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW)]).values():
        future.result(timeout=30)
    url = "%s/topics/%s" % (acl_broker.proxy_url, topic)
    record = {"records": [{"value": {"memo": 1}}]}

    status, refused = call(url, "POST", record, content_type=JSON_V2)
    assert status == 401 and refused["error_code"] == 40101
    # A wrong password is answered after a pause, as on the Kafka port.
    started = time.monotonic()
    assert call(url, "POST", record, content_type=JSON_V2, auth=("alice", "wrong"))[0] == 401
    assert time.monotonic() - started >= 0.9
    status, refused = call(url, "POST", record, content_type=JSON_V2, auth=("mallory", USERS["mallory"]))
    assert status == 403 and refused["error_code"] == 40301, refused
    status, written = call(url, "POST", record, content_type=JSON_V2, auth=("alice", USERS["alice"]))
    assert status == 200 and written["offsets"][0]["error_code"] is None, written

    # Groups as on Kafka: alice may use ministry- groups, not others.
    def consume_as(user, group):
        status, created = call("%s/consumers/%s" % (acl_broker.proxy_url, group), "POST", {"name": "c", "format": "json", "auto.offset.reset": "earliest"}, auth=(user, USERS[user]))
        assert status == 200
        instance = created["base_uri"]
        call(instance + "/subscription", "POST", {"topics": [topic]}, auth=(user, USERS[user]))
        status, records = call(instance + "/records?timeout=3000", accept=JSON_V2, auth=(user, USERS[user]))
        return status, records, instance

    status, records, instance = consume_as("alice", "ministry-" + unique("g"))
    assert status == 200 and [r["value"] for r in records] == [{"memo": 1}]
    # Another user cannot drive alice's consumer instance.
    assert call(instance + "/records", accept=JSON_V2, auth=("mallory", USERS["mallory"]))[0] == 404
    status, refused, _ = consume_as("alice", unique("other-group"))
    assert status == 403 and refused["error_code"] == 40301, refused
    status, topics = call("%s/topics" % acl_broker.proxy_url, auth=("mallory", USERS["mallory"]))
    assert status == 200 and topic not in topics


def test_every_route_of_the_openapi_description_is_served(broker):
    """Docs/http-proxy.openapi.yaml and the server agree: each documented
    route answers in the proxy's own JSON (an undocumented path gets the
    router's bare 404, which would fail here)."""
    import os
    import yaml
    from conftest import ROOT
    with open(os.path.join(ROOT, "Docs", "http-proxy.openapi.yaml")) as f:
        description = yaml.safe_load(f)
    topic = unique("http-doc")
    make_topic(broker, topic, 1)
    assert call("%s/topics/%s/partitions/0" % (broker.proxy_url, unique("nope")))[1]["error_code"] == 40401
    status, _ = call("%s/no/such/route" % broker.proxy_url)
    assert status == 404
    checked = 0
    for path, operations in description["paths"].items():
        url = broker.proxy_url + path.format(topic=topic, partition=0, group="doc-group", instance="absent-instance")
        for method in ("get", "post", "delete"):
            if method not in operations or path.endswith("/events") or path.endswith("/ws"):
                continue
            body = {} if method == "post" else None
            content_type = JSON_V2 if path.startswith("/topics/") else V2
            status, answer = call(url + ("?timeout=0" if path.endswith("/records") else ""), method.upper(), body, content_type=content_type)
            assert status != 404 or (isinstance(answer, dict) and "error_code" in answer), (method, path, status, answer)
            checked += 1
    assert checked >= 20


def test_a_websocket_subscription_receives_live_records_and_is_refused_without_authority(broker, acl_broker):
    import asyncio
    import aiohttp

    topic = unique("http-ws")
    make_topic(broker, topic, 2)
    call("%s/topics/%s" % (broker.proxy_url, topic), "POST", {"records": [{"value": {"n": 0}, "partition": 0}]}, content_type=JSON_V2)

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect("%s/topics/%s/ws?from=earliest&format=json" % (broker.proxy_url.replace("http", "ws"), topic)) as socket:
                for n in (1, 2):
                    status, _ = await asyncio.to_thread(call, "%s/topics/%s" % (broker.proxy_url, topic), "POST",
                                                        {"records": [{"value": {"n": n}, "partition": n % 2}]}, JSON_V2)
                    assert status == 200
                got = []
                while len(got) < 3:
                    message = await asyncio.wait_for(socket.receive(), 30)
                    assert message.type == aiohttp.WSMsgType.TEXT, message
                    got.append(json.loads(message.data)["value"]["n"])
                return sorted(got)

    assert asyncio.run(scenario()) == [0, 1, 2]
    # Without a WebSocket upgrade the route says what it needs.
    assert call("%s/topics/%s/ws" % (broker.proxy_url, topic))[1]["error_code"] == 42601
    # Where SASL is asked for, no credentials: the socket closes at once
    # with a policy violation that carries the proxy's error.

    async def refused():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect("%s/topics/%s/ws" % (acl_broker.proxy_url.replace("http", "ws"), "ministry-x")) as socket:
                message = await asyncio.wait_for(socket.receive(), 30)
                # The code the proxy's close frame carries: aiohttp's own
                # close_code says 1006 when the proxy ends the connection
                # before aiohttp's reply to that frame goes out.
                return message.type, message.data, message.extra

    kind, code, reason = asyncio.run(refused())
    assert kind == aiohttp.WSMsgType.CLOSE and code == 1008 and reason.startswith("40101"), (kind, code, reason)


def test_in_a_cluster_one_brokers_proxy_writes_and_reads_partitions_led_by_the_others():
    """The proxy of broker 1 reaches the leaders and the group coordinator
    on brokers 2 and 3 over the inter-broker listener."""
    import re
    from test_cluster import Cluster

    cluster = Cluster().start()
    try:
        topic = "spread"
        cluster.create_topic(topic, partitions=3, replication=3)
        leaders = {cluster.leader(topic, p) for p in range(3)}
        match = None
        deadline = time.monotonic() + 30
        while match is None and time.monotonic() < deadline:
            match = re.search(r"HTTP proxy .* on http://127\.0\.0\.1:(\d+)", cluster.log(1))
            time.sleep(0.1)
        assert match, cluster.log(1)[-2000:]
        proxy = "http://127.0.0.1:%s" % match.group(1)
        for p in range(3):
            status, written = call("%s/topics/%s/partitions/%d" % (proxy, topic, p), "POST",
                                   {"records": [{"value": {"p": p, "n": n}} for n in range(5)]}, content_type=JSON_V2)
            assert status == 200 and [o["offset"] for o in written["offsets"]] == [0, 1, 2, 3, 4], written
        group = unique("cluster-http")
        status, created = call("%s/consumers/%s" % (proxy, group), "POST", {"name": "c", "format": "json", "auto.offset.reset": "earliest"})
        instance = created["base_uri"]
        assert call(instance + "/subscription", "POST", {"topics": [topic]})[0] == 204
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 15 and time.monotonic() < deadline:
            got += [(r["partition"], r["value"]["n"]) for r in records_of(instance, timeout_ms=1000)]
        assert sorted(got) == [(p, n) for p in range(3) for n in range(5)]
        assert call(instance + "/offsets", "POST")[0] == 204
        status, committed = call(instance + "/committed/offsets", "GET", {"partitions": [{"topic": topic, "partition": p} for p in range(3)]})
        assert sorted(o["offset"] for o in committed["offsets"]) == [5, 5, 5]
        assert call(instance, "DELETE")[0] == 204
        print("leaders of the three partitions: %s" % sorted(leaders))
    finally:
        cluster.stop()


def test_a_topic_pattern_subscription_follows_topics_as_they_are_made(broker):
    """`topic_pattern` (a regular expression over whole topic names, as the
    REST Proxy and Kafka's subscribe(Pattern)): the matching topic is read
    and the other is not; a matching topic made later joins the
    subscription by itself; a pattern that is not a regular expression is
    refused with 422."""
    prefix = unique("pattern")
    first, later, other = prefix + "-a", prefix + "-b", prefix + "x-a"
    make_topic(broker, first, 2)
    make_topic(broker, other, 1)
    status, created = call("%s/consumers/%s" % (broker.proxy_url, unique("pattern-group")), "POST",
                           {"name": "web", "format": "json", "auto.offset.reset": "earliest"})
    assert status == 200, created
    instance = created["base_uri"]
    assert call(instance + "/subscription", "POST", {"topic_pattern": "("})[0] == 422
    assert call(instance + "/subscription", "POST", {"topics": [first], "topic_pattern": ".*"})[0] == 422
    assert call(instance + "/subscription", "POST", {"topic_pattern": prefix + "-[ab]"})[0] == 204
    producer = Producer({"bootstrap.servers": broker.address})
    for topic in (first, other):
        for i in range(10):
            producer.produce(topic, value=json.dumps({"topic": topic, "n": i}).encode())
    producer.flush(30)

    def read_until(count, deadline_s):
        seen = []
        deadline = time.monotonic() + deadline_s
        while len(seen) < count and time.monotonic() < deadline:
            seen += [(record["topic"], record["value"]["n"]) for record in records_of(instance, timeout_ms=300)]
        for _ in range(3):
            seen += [(record["topic"], record["value"]["n"]) for record in records_of(instance, timeout_ms=200)]
        return seen

    seen = read_until(10, 60)
    assert sorted(seen) == [(first, i) for i in range(10)], seen
    assert call(instance + "/subscription")[1] == {"topics": [first]}
    make_topic(broker, later, 1)
    for i in range(10):
        producer.produce(later, value=json.dumps({"topic": later, "n": i}).encode())
    producer.flush(30)
    seen = read_until(10, 60)
    assert sorted(seen) == [(later, i) for i in range(10)], seen
    assert call(instance + "/subscription")[1] == {"topics": [first, later]}
    assert call(instance, "DELETE")[0] == 204
