"""Authorization like Kafka's (--authorizer): ACLs made with confluent-kafka's
and kafka-python's admin clients, then every API a client uses walked by a
principal the ACLs allow (alice) and one they do not (mallory), each refusal
with Kafka's error. The ACLs survive a restart of the single node."""
import os
import shutil
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, ConfigResource,
                                   NewTopic, ResourcePatternType, ResourceType)

from conftest import BINARY, BrokerProcess, add_users, unique

USERS = {"admin": "admin-secret", "alice": "alice-secret", "mallory": "mallory-secret"}


@pytest.fixture(scope="module")
def acl_broker():
    process = BrokerProcess(extra_args=["--sasl", "true", "--authorizer", "true", "--super-users", "User:admin"])
    add_users(process.data_dir, USERS)
    process.start()
    yield process
    assert process.stop() == 0, process.read_log()
    shutil.rmtree(process.data_dir, ignore_errors=True)


def settings(broker, user, **more):
    base = {"bootstrap.servers": broker.address, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": user, "sasl.password": USERS[user]}
    base.update(more)
    return base


def wait(futures):
    return {key: future.result(timeout=30) for key, future in futures.items()}


@pytest.fixture(scope="module")
def granted(acl_broker):
    """Alice may write and read topics prefixed `ministry-`, use groups
    prefixed `ministry-`, and describe the configs of her topics."""
    admin = AdminClient(settings(acl_broker, "admin"))
    topic = "ministry-" + unique("t")
    wait(admin.create_topics([NewTopic(topic, 2, 1)]))
    bindings = [AclBinding(ResourceType.TOPIC, "ministry-", ResourcePatternType.PREFIXED, "User:alice", "*", operation, AclPermissionType.ALLOW)
                for operation in (AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE_CONFIGS, AclOperation.CREATE, AclOperation.DELETE)]
    bindings.append(AclBinding(ResourceType.GROUP, "ministry-", ResourcePatternType.PREFIXED, "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW))
    # A deny wins over the allow above, for one topic.
    bindings.append(AclBinding(ResourceType.TOPIC, "ministry-secret", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.ALL, AclPermissionType.DENY))
    results = wait(admin.create_acls(bindings))
    assert all(result is None for result in results.values())
    return topic


def test_acls_are_listed_and_refused_to_those_without_alter(acl_broker, granted):
    admin = AdminClient(settings(acl_broker, "admin"))
    described = admin.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)).result(timeout=30)
    assert {(b.name, b.principal, b.operation) for b in described} >= {("ministry-", "User:alice", AclOperation.WRITE), ("ministry-secret", "User:alice", AclOperation.ALL)}
    matching = admin.describe_acls(AclBindingFilter(ResourceType.TOPIC, "ministry-anything", ResourcePatternType.MATCH, None, None, AclOperation.ANY, AclPermissionType.ANY)).result(timeout=30)
    assert {b.name for b in matching} == {"ministry-"}
    # kafka-python's admin sees the same.
    from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, KafkaAdminClient, ResourcePatternFilter
    from kafka.admin import ResourceType as KResourceType
    kadmin = KafkaAdminClient(bootstrap_servers=acl_broker.address, security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                              sasl_plain_username="admin", sasl_plain_password=USERS["admin"])
    acls, error = kadmin.describe_acls(ACLFilter(principal="User:alice", host="*", operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
                                                 resource_pattern=ResourcePatternFilter(KResourceType.GROUP, None, ACLResourcePatternType.ANY)))
    assert [a.resource_pattern.resource_name for a in acls] == ["ministry-"]
    kadmin.close()
    alice = AdminClient(settings(acl_broker, "alice"))
    wanted = AclBinding(ResourceType.TOPIC, "x", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.ALL, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as refused:
        alice.create_acls([wanted])[wanted].result(timeout=30)
    assert refused.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED


def test_metadata_shows_only_topics_the_principal_may_describe(acl_broker, granted):
    alice = AdminClient(settings(acl_broker, "alice")).list_topics(timeout=10)
    assert granted in alice.topics
    mallory = AdminClient(settings(acl_broker, "mallory")).list_topics(timeout=10)
    assert granted not in mallory.topics
    named = AdminClient(settings(acl_broker, "mallory")).list_topics(granted, timeout=10)
    assert named.topics[granted].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_produce_fetch_and_list_offsets(acl_broker, granted):
    producer = Producer(settings(acl_broker, "alice", **{"enable.idempotence": True}))
    producer.produce(granted, b"allowed", partition=0)
    assert producer.flush(30) == 0
    consumer = Consumer(settings(acl_broker, "alice", **{"group.id": "ministry-" + unique("g"), "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    low, high = consumer.get_watermark_offsets(TopicPartition(granted, 0), timeout=10)
    assert (low, high) == (0, 1)
    consumer.assign([TopicPartition(granted, 0, 0)])
    message = None
    deadline = time.monotonic() + 20
    while message is None and time.monotonic() < deadline:
        message = consumer.poll(1)
    assert message is not None and message.error() is None and message.value() == b"allowed"
    consumer.commit(message=message, asynchronous=False)
    assert consumer.committed([TopicPartition(granted, 0)], timeout=10)[0].offset == 1
    consumer.close()

    # Mallory: the idempotent producer cannot get an id; a plain one is refused the topic.
    errors = []
    refused = Producer(settings(acl_broker, "mallory", **{"enable.idempotence": False, "message.timeout.ms": 5000, "error_cb": errors.append}))
    delivered = []
    refused.produce(granted, b"refused", partition=0, on_delivery=lambda error, message: delivered.append(error))
    refused.flush(15)
    assert delivered and delivered[0] is not None and delivered[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    mallory = Consumer(settings(acl_broker, "mallory", **{"group.id": "ministry-" + unique("g"), "auto.offset.reset": "earliest"}))
    with pytest.raises(KafkaException) as offsets:
        mallory.get_watermark_offsets(TopicPartition(granted, 0), timeout=10)
    # librdkafka asks Metadata first, which hides the topic from Mallory:
    # the client refuses itself before any ListOffsets or Fetch is sent.
    assert offsets.value.args[0].code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._UNKNOWN_PARTITION)
    mallory.assign([TopicPartition(granted, 0, 0)])
    seen = None
    records = []
    deadline = time.monotonic() + 20
    while seen is None and time.monotonic() < deadline:
        polled = mallory.poll(1)
        if polled is not None and polled.error() is not None:
            seen = polled.error().code()
        elif polled is not None:
            records.append(polled.value())
    mallory.close()
    assert records == []
    # Her group (which she may not read) is refused first, or the topic.
    assert seen in (KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART)
    # Nothing of Mallory's was written.
    assert Consumer(settings(acl_broker, "alice", **{"group.id": "ministry-x"})).get_watermark_offsets(TopicPartition(granted, 0), timeout=10)[1] == 1


def test_idempotence_needs_write_somewhere(acl_broker, granted):
    errors = []
    producer = Producer(settings(acl_broker, "mallory", **{"enable.idempotence": True, "message.timeout.ms": 5000, "error_cb": errors.append}))
    producer.produce(granted, b"x")
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        try:
            producer.poll(0.5)
        except KafkaException as fatal:
            errors.append(fatal.args[0])
    # librdkafka raises the refused InitProducerId as a fatal error.
    assert errors, "no error reported"
    fatal = producer.fatal_error() if hasattr(producer, "fatal_error") else None
    codes = {e.code() for e in errors} | ({fatal.code()} if fatal else set())
    assert KafkaError.CLUSTER_AUTHORIZATION_FAILED in codes or KafkaError._FATAL in codes, errors
    assert "operation=idempotentWrite principal=User:mallory" in acl_broker.read_log()


def test_groups_need_read_on_the_group(acl_broker, granted):
    group = "elsewhere-" + unique("g")
    errors = []
    consumer = Consumer(settings(acl_broker, "alice", **{"group.id": group, "auto.offset.reset": "earliest", "error_cb": errors.append}))
    consumer.subscribe([granted])
    seen = None
    deadline = time.monotonic() + 20
    while seen is None and time.monotonic() < deadline:
        polled = consumer.poll(1)
        if polled is not None and polled.error() is not None:
            seen = polled.error().code()
        elif errors:
            seen = errors[0].code()
    consumer.close()
    assert seen == KafkaError.GROUP_AUTHORIZATION_FAILED
    admin = AdminClient(settings(acl_broker, "alice"))
    listed = admin.list_consumer_groups().result(timeout=30)
    assert all(g.group_id.startswith("ministry-") for g in listed.valid)


def test_topics_created_deleted_and_configs_described_by_acl(acl_broker, granted):
    alice = AdminClient(settings(acl_broker, "alice"))
    mine = "ministry-" + unique("new")
    wait(alice.create_topics([NewTopic(mine, 1, 1)]))
    with pytest.raises(KafkaException) as refused:
        wait(alice.create_topics([NewTopic("elsewhere-" + unique("t"), 1, 1)]))
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    configs = wait(alice.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, mine)]))
    assert configs
    mallory = AdminClient(settings(acl_broker, "mallory"))
    with pytest.raises(KafkaException) as hidden:
        wait(mallory.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, mine)]))
    assert hidden.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as undeletable:
        wait(mallory.delete_topics([mine]))
    assert undeletable.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    wait(alice.delete_topics([mine]))


def test_a_deny_wins_over_an_allow(acl_broker, granted):
    admin = AdminClient(settings(acl_broker, "admin"))
    wait(admin.create_topics([NewTopic("ministry-secret", 1, 1)]))
    delivered = []
    producer = Producer(settings(acl_broker, "alice", **{"message.timeout.ms": 5000}))
    producer.produce("ministry-secret", b"x", on_delivery=lambda error, message: delivered.append(error))
    producer.flush(15)
    assert delivered and delivered[0] is not None and delivered[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_deleted_acls_stop_applying_and_acls_survive_a_restart(acl_broker, granted):
    admin = AdminClient(settings(acl_broker, "admin"))
    extra = AclBinding(ResourceType.TOPIC, granted, ResourcePatternType.LITERAL, "User:mallory", "*", AclOperation.DESCRIBE, AclPermissionType.ALLOW)
    wait(admin.create_acls([extra]))
    assert granted in AdminClient(settings(acl_broker, "mallory")).list_topics(timeout=10).topics
    deleted = wait(admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, granted, ResourcePatternType.LITERAL, "User:mallory", None, AclOperation.ANY, AclPermissionType.ANY)]))
    assert [len(v) for v in deleted.values()] == [1]
    assert granted not in AdminClient(settings(acl_broker, "mallory")).list_topics(timeout=10).topics
    # A restart keeps every ACL.
    before = admin.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)).result(timeout=30)
    assert acl_broker.stop() == 0
    acl_broker.start()
    restarted = AdminClient(settings(acl_broker, "admin"))
    after = restarted.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)).result(timeout=30)
    assert sorted(map(str, before)) == sorted(map(str, after))


def test_without_the_authorizer_acl_apis_say_security_is_disabled(broker):
    admin = AdminClient({"bootstrap.servers": broker.address})
    binding = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:a", "*", AclOperation.READ, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as disabled:
        admin.create_acls([binding])[binding].result(timeout=30)
    assert disabled.value.args[0].code() == KafkaError.SECURITY_DISABLED


def test_operators_manage_acls_with_postduif_acl(acl_broker, granted):
    def acl(*args, user="admin"):
        env = dict(os.environ, POSTDUIF_ACL_PASSWORD=USERS[user])
        return subprocess.run([BINARY, "acl", *args, "--broker", acl_broker.address, "--user", user], capture_output=True, env=env, timeout=30)

    topic = "ministry-" + unique("cli")
    added = acl("add", "--principal", "User:mallory", "--operation", "describe", "--topic", topic)
    assert added.returncode == 0, added.stderr.decode()
    assert b"allow\tUser:mallory\t*\tdescribe\ttopic\t" + topic.encode() in added.stdout
    listed = acl("list", "--principal", "User:mallory")
    assert topic.encode() in listed.stdout
    refused = acl("add", "--principal", "User:mallory", "--operation", "all", "--cluster", user="alice")
    assert refused.returncode != 0 and b"Kafka error 31" in refused.stderr
    removed = acl("remove", "--principal", "User:mallory", "--topic", topic)
    assert removed.returncode == 0 and b"removed:" in removed.stdout
    assert topic.encode() not in acl("list", "--principal", "User:mallory").stdout
    everything = acl("remove")
    assert everything.returncode != 0 and b"never removes every ACL" in everything.stderr


def test_chat_topics_are_the_gateways_alone_unless_an_operator_grants_more():
    """With the authorizer on, the broker gives the gateway's principal the
    chat topics at start and nobody else anything: a service must be
    granted Read on conversations explicitly, and chat-accounts (password
    hashes) stays the gateway's."""
    from test_chat import GatewayProcess, call

    process = BrokerProcess(extra_args=["--sasl", "true", "--authorizer", "true", "--super-users", "User:admin", "--durability", "none"])
    add_users(process.data_dir, (("postduif-gateway", "gateway-secret"), ("admin", USERS["admin"]), ("archive", "archive-secret")))
    process.start()
    gateway = GatewayProcess(process, env=dict(os.environ, POSTDUIF_GATEWAY_BROKER_USER="postduif-gateway", POSTDUIF_GATEWAY_BROKER_PASSWORD="gateway-secret"))
    try:
        gateway.start()
        status, body = call(gateway, "POST", "/register", {"username": "minister", "password": "pw-minister"})
        assert status == 200, body
        status, room = call(gateway, "POST", "/createRoom", {"name": "Overleg"}, token=body["access_token"])
        assert status == 200, room
        status, _ = call(gateway, "PUT", "/rooms/%s/send/m.room.message/t1" % room["room_id"], {"msgtype": "m.text", "body": "vertrouwelijk"}, token=body["access_token"])
        assert status == 200

        archive = {"bootstrap.servers": process.address, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-256",
                   "sasl.username": "archive", "sasl.password": "archive-secret"}
        listed = AdminClient(archive).list_topics(timeout=10)
        assert not set(listed.topics) & {"conversations", "chat-accounts"}

        env = dict(os.environ, POSTDUIF_ACL_PASSWORD=USERS["admin"])
        granted = subprocess.run([BINARY, "acl", "add", "--broker", process.address, "--user", "admin", "--principal", "User:archive",
                                  "--operation", "read", "--topic", "conversations"], capture_output=True, env=env, timeout=30)
        assert granted.returncode == 0, granted.stderr
        consumer = Consumer(dict(archive, **{"group.id": "unused", "enable.auto.commit": False}))
        consumer.assign([TopicPartition("conversations", p, 0) for p in range(2)])
        bodies = []
        deadline = time.monotonic() + 20
        while not any(b"vertrouwelijk" in b for b in bodies) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                bodies.append(message.value())
        consumer.close()
        assert any(b"vertrouwelijk" in b for b in bodies)
        assert "chat-accounts" not in AdminClient(archive).list_topics(timeout=10).topics
    finally:
        gateway.stop()
        assert process.stop() == 0
        shutil.rmtree(process.data_dir, ignore_errors=True)


def test_every_api_asks_the_authorizer_with_an_allowed_and_a_refused_principal():
    """The golden test's request for every advertised API, sent on raw
    connections (SASL PLAIN first) by alice, whom ACLs allow the golden
    topics, groups and the cluster, and by mallory, whom nothing allows:
    alice's answers carry no authorization error, mallory's carry Kafka's
    (29, 30, 31 or 53), and ListGroups leaves her groups out."""
    import socket
    import struct

    import test_golden_responses as golden

    process = BrokerProcess(extra_args=["--sasl", "true", "--authorizer", "true", "--super-users", "User:admin"])
    add_users(process.data_dir, (("admin", USERS["admin"]), ("alice", USERS["alice"]), ("mallory", USERS["mallory"])))
    process.start()
    try:
        env = dict(os.environ, POSTDUIF_ACL_PASSWORD=USERS["admin"])
        for grant in (["--topic", "golden", "--prefixed"], ["--group", "golden", "--prefixed"], ["--cluster"]):
            made = subprocess.run([BINARY, "acl", "add", "--broker", process.address, "--user", "admin", "--principal", "User:alice",
                                   "--operation", "all"] + grant, capture_output=True, env=env, timeout=30)
            assert made.returncode == 0, made.stderr

        def connect(user):
            sock = socket.create_connection(("127.0.0.1", process.port), timeout=10)

            def request(api, version, correlation, body):
                header = struct.pack(">hhih", api, version, correlation, 6) + b"walker"
                sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
                size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
                return sock.recv(size, socket.MSG_WAITALL)[4:]

            assert struct.unpack(">h", request(17, 1, 1, struct.pack(">h", 5) + b"PLAIN")[:2])[0] == 0
            token = b"\0" + user.encode() + b"\0" + USERS[user].encode()
            assert struct.unpack(">h", request(36, 1, 2, struct.pack(">i", len(token)) + token)[:2])[0] == 0
            return sock

        def exchange(sock, message, version):
            message.with_header(correlation_id=42, client_id="walker")
            sock.sendall(message.encode(version=version, header=True, framed=True))
            size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
            data = struct.pack(">i", size) + sock.recv(size, socket.MSG_WAITALL)
            return golden.response_class(type(message), version).decode(data, header=True, framed=True).to_dict()

        def codes(value):
            if isinstance(value, dict):
                return [c for k, v in value.items() for c in ([v] if k == "error_code" else codes(v))]
            if isinstance(value, list):
                return [c for v in value for c in codes(v)]
            return []

        refusals = {29, 30, 31, 53}
        alice, mallory = connect("alice"), connect("mallory")
        walked = []
        for name, cls, build in golden.requests(None):
            if name == "ApiVersions":
                continue
            version = cls.max_version if hasattr(cls, "max_version") else 0
            version = min(version, {"Produce": 8, "Fetch": 11, "Metadata": 8, "ListOffsets": 5, "FindCoordinator": 2, "CreateTopics": 4,
                                    "DeleteTopics": 3, "InitProducerId": 1, "OffsetForLeaderEpoch": 3, "JoinGroup": 5, "SyncGroup": 3,
                                    "Heartbeat": 3, "LeaveGroup": 2, "OffsetCommit": 7, "OffsetFetch": 5, "DescribeGroups": 4,
                                    "ListGroups": 2, "DescribeConfigs": 4, "AlterConfigs": 1,
                                    "IncrementalAlterConfigs": 1, "DeleteRecords": 2, "CreatePartitions": 3, "DeleteGroups": 2,
                                    "OffsetDelete": 0, "DescribeLogDirs": 4, "DescribeCluster": 1, "DescribeProducers": 0, "CreateAcls": 3, "DescribeAcls": 3, "DeleteAcls": 3,
                                    "ElectLeaders": 2, "AlterPartitionReassignments": 0, "ListPartitionReassignments": 0}[name])
            allowed = exchange(alice, build(version), version)
            assert not set(codes(allowed)) & refusals, (name, allowed)
            refused = exchange(mallory, build(version), version)
            if name == "ListGroups":
                assert refused["groups"] == [] and codes(refused) == [0], refused
            elif name == "DescribeCluster":
                # As Kafka: every authenticated principal may learn the brokers (Metadata tells them too).
                assert codes(refused) == [0] and refused["brokers"], refused
            else:
                assert set(codes(refused)) & refusals, (name, refused)
            walked.append(name)
        alice.close()
        mallory.close()
        assert len(walked) == len(golden.CASES) - 1
        with open(process.log_path, errors="replace") as log:
            assert "principal=User:mallory" in log.read()
    finally:
        assert process.stop() == 0
        shutil.rmtree(process.data_dir, ignore_errors=True)
