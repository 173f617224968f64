"""Consumer groups (the classic protocol) with real clients: confluent-kafka's
subscribe/commit/committed flow, a kcat group that rebalances when members
come and go and resumes from its commits, and one group of three members
from two client libraries."""
import queue
import subprocess
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer

from conftest import unique


def create_topic(broker, name, partitions):
    admin = AdminClient({"bootstrap.servers": broker.address})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result()


def produce(broker, topic, values, partitions):
    producer = Producer({"bootstrap.servers": broker.address, "linger.ms": 5})
    for i, value in enumerate(values):
        producer.produce(topic, value=value, partition=i % partitions)
    assert producer.flush(30) == 0


def test_confluent_subscribe_consume_commit_and_committed(broker):
    topic = unique("grp-ck")
    create_topic(broker, topic, 3)
    produce(broker, topic, [b"v%d" % i for i in range(300)], 3)
    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": unique("g"), "auto.offset.reset": "earliest",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    consumer.subscribe([topic])
    values, eofs = [], set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(values) < 300 or len(eofs) < 3):
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() == -191:  # _PARTITION_EOF
                eofs.add(message.partition())
            continue
        values.append(message.value())
    assert sorted(values) == sorted(b"v%d" % i for i in range(300))
    assert eofs == {0, 1, 2}
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    assert sum(tp.offset for tp in committed) == 300
    consumer.close()


class KcatMember:
    """A kcat -G consumer whose lines ("partition offset value") are read on a thread."""

    def __init__(self, broker, group, topic):
        self.lines = queue.Queue()
        self.process = subprocess.Popen(
            ["kcat", "-u", "-b", broker.address, "-G", group, "-X", "auto.offset.reset=earliest",
             "-X", "auto.commit.interval.ms=200", "-f", "%p %o %s\\n", topic],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.decode().split())

    def stop(self):
        self.process.terminate()  # kcat leaves the group and commits on SIGTERM
        self.process.wait(timeout=30)


def collect(members, wanted, seconds=60):
    """Reads from every member until the wanted values all arrived; returns value -> members that got it."""
    seen = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not wanted.issubset(seen):
        for index, member in enumerate(members):
            try:
                while True:
                    partition, offset, value = member.lines.get_nowait()
                    seen.setdefault(value, set()).add(index)
            except queue.Empty:
                pass
        time.sleep(0.05)
    return seen


def test_kcat_group_rebalances_as_members_come_and_go_and_resumes_from_commits(broker):
    topic, group = unique("grp-kcat"), unique("g-kcat")
    create_topic(broker, topic, 4)
    first = KcatMember(broker, group, topic)
    wave1 = [b"a%d" % i for i in range(200)]
    produce(broker, topic, wave1, 4)
    seen = collect([first], {v.decode() for v in wave1})
    assert {v.decode() for v in wave1}.issubset(seen)

    second = KcatMember(broker, group, topic)
    # The second member joins: keep producing until both members receive,
    # which shows the partitions were split between them.
    both = set()
    deadline = time.monotonic() + 90
    wave = 0
    while time.monotonic() < deadline:
        wave += 1
        values = [b"b%d-%d" % (wave, i) for i in range(40)]
        produce(broker, topic, values, 4)
        got = collect([first, second], {v.decode() for v in values}, seconds=10)
        assert {v.decode() for v in values}.issubset(got)
        both |= set().union(*got.values())
        if both == {0, 1}:
            break
        time.sleep(0.5)  # bounded pacing while the group rebalances (heartbeats every 3 s)
    assert both == {0, 1}, "the partitions were never split between the two members"

    second.stop()
    wave3 = [b"c%d" % i for i in range(100)]
    produce(broker, topic, wave3, 4)
    got = collect([first], {v.decode() for v in wave3})
    assert {v.decode() for v in wave3}.issubset(got), "the remaining member did not take over every partition"
    first.stop()

    # A new member resumes from the group's commits: none of the old values again.
    wave4 = [b"d%d" % i for i in range(20)]
    third = KcatMember(broker, group, topic)
    # No wait for the join: the member starts from the group's commits, so
    # it reads wave4 whenever its partitions are assigned.
    produce(broker, topic, wave4, 4)
    got = collect([third], {v.decode() for v in wave4})
    third.stop()
    assert {v.decode() for v in wave4}.issubset(got)
    old = [value for value in got if not value.startswith("d")]
    assert old == [], "a resumed member re-read committed messages: %s" % old[:5]


def test_one_group_of_three_members_from_two_libraries(broker):
    topic, group = unique("grp-mixed"), unique("g-mixed")
    create_topic(broker, topic, 6)
    settings = {"bootstrap.servers": broker.address, "group.id": group, "auto.offset.reset": "earliest",
                "session.timeout.ms": 10000, "heartbeat.interval.ms": 500}
    confluent = [Consumer(settings), Consumer(settings)]
    for consumer in confluent:
        consumer.subscribe([topic])
    python_consumer = KafkaConsumer(topic, bootstrap_servers=broker.address, group_id=group,
                                    auto_offset_reset="earliest", session_timeout_ms=10000, heartbeat_interval_ms=500)
    received = [dict(), dict(), dict()]  # value -> partition, per member
    holders = []

    def poll_all():
        for index, consumer in enumerate(confluent):
            for message in consumer.consume(num_messages=500, timeout=0.05):
                if not message.error():
                    received[index][message.value()] = message.partition()
        # kafka-python 3.0.12 discards a join that completes just as a short
        # poll times out and sends a new JoinGroup instead (its join task is
        # "done" on the next poll and is replaced, not read): with 100 ms
        # polls that restarted every generation. A poll long enough for a
        # whole join and sync avoids that client race.
        for records in python_consumer.poll(timeout_ms=1000, max_records=500).values():
            for record in records:
                received[2][record.value] = record.partition

    try:
        # Produce in waves until one wave is spread over all three members:
        # the group then has a generation in which all three hold partitions.
        deadline_all = time.monotonic() + 120
        wave = 0
        while True:
            assert time.monotonic() < deadline_all, "the three members never shared the six partitions: %s" % holders
            wave += 1
            values = [b"w%d-%d" % (wave, i) for i in range(60)]
            produce(broker, topic, values, 6)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not all(any(v in r for r in received) for v in values):
                poll_all()
            holders = [{r[v] for v in values if v in r} for r in received]
            if all(holders) and set().union(*holders) == set(range(6)) and sum(len(h) for h in holders) == 6:
                break
    finally:
        for consumer in confluent:
            consumer.close()
        python_consumer.close()


def test_admin_tools_list_and_describe_groups(broker):
    from kafka import KafkaAdminClient
    topic, group = unique("grp-admin"), unique("g-admin")
    create_topic(broker, topic, 2)
    produce(broker, topic, [b"x"], 2)
    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    admin = KafkaAdminClient(bootstrap_servers=broker.address)
    try:
        deadline = time.monotonic() + 60
        described = None
        while time.monotonic() < deadline:
            consumer.poll(0.2)
            described = admin.describe_groups([group])[group]
            if described["group_state"] == "Stable":
                break
        assert described["group_state"] == "Stable" and described["protocol_type"] == "consumer"
        assert described["protocol_data"] in ("range", "roundrobin")
        assignments = [m["member_assignment"]["assigned_partitions"] for m in described["members"]]
        assert assignments == [[{"topic": topic, "partitions": [0, 1]}]]
        assert {"group_id": group, "protocol_type": "consumer"} in admin.list_groups()
    finally:
        consumer.close()
        admin.close()
