"""A replicated cluster: real etcd and three brokers on loopback ports
(Deploy/cluster/local-cluster.sh, the script behind `make cluster`), driven
by confluent-kafka. Leaders are killed with SIGKILL and paused with
SIGSTOP while an idempotent acks=all producer writes; afterwards every
acknowledged message is read exactly once, in order per conversation, and
the replicas' logs are identical (postduif inspect). Bounded: every wait
has a deadline."""
import os
import random
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BINARY, ROOT

SCRIPT = os.path.join(ROOT, "Deploy", "cluster", "local-cluster.sh")


# Ports free_block handed out in this run: a later block never overlaps
# one (a cluster's etcd block once took its brokers' operations ports,
# both free when each was chosen).
_handed_out = set()


def free_block(count):
    """A base port with `count` free ports after it, none handed out
    before, below Linux's ephemeral range (32768 and up), so no outgoing
    connection takes one between this check and the server's bind."""
    for _ in range(100):
        base = random.randint(20000, 32000 - count)
        block = set(range(base, base + count))
        if block & _handed_out:
            continue
        sockets = []
        try:
            for port in sorted(block):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            _handed_out.update(block)
            return base
        except OSError:
            pass
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port block")


class Cluster:
    def __init__(self, broker_args="", gateways=False, racks=None):
        self.dir = tempfile.mkdtemp(prefix="postduif-cluster-test-")
        os.rmdir(self.dir)
        self.env = dict(os.environ, ETCD_PORT=str(free_block(2)), KAFKA_PORT_BASE=str(free_block(3)),
                        HTTP_PORT_BASE=str(free_block(3)), BINARY=BINARY,
                        BROKER_ARGS="--log-level info --default-partitions 2 " + broker_args)
        if racks:
            self.env["RACKS"] = racks
        if gateways:
            # A chat gateway inside each broker (ADR 0016).
            self.env["GATEWAY_PORT_BASE"] = str(free_block(3))
        self.base = int(self.env["KAFKA_PORT_BASE"])

    def gateway_url(self, broker):
        return "http://127.0.0.1:%d" % (int(self.env["GATEWAY_PORT_BASE"]) + broker - 1)

    def run(self, *args):
        subprocess.run([SCRIPT, *args], check=True, env=self.env, timeout=120, capture_output=True)

    def start(self):
        self.run("start", self.dir)
        return self

    def stop(self):
        self.run("stop", self.dir)

    @property
    def bootstrap(self):
        return ",".join("127.0.0.1:%d" % (self.base + i) for i in range(3))

    def pid(self, broker):
        with open(os.path.join(self.dir, "broker-%d" % broker, "pid")) as f:
            return int(f.read())

    def signal(self, broker, sig):
        os.kill(self.pid(broker), sig)

    def restart(self, broker):
        self.run("restart", self.dir, str(broker))

    def wait_exited(self, broker, timeout=30):
        """Seconds until the broker's process is gone (it is not our child: polled)."""
        pid = self.pid(broker)
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError("broker %d (pid %d) still runs %d s after SIGTERM; its log ends:\n%s"
                             % (broker, pid, timeout, self.log(broker)[-3000:]))

    def log(self, broker):
        with open(os.path.join(self.dir, "broker-%d" % broker, "log.txt"), errors="replace") as f:
            return f.read()

    def leader(self, topic, partition, avoid=None, timeout=30):
        """The partition's leader per Metadata, once it is not `avoid`."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                metadata = admin.list_topics(topic, timeout=5)
                leader = metadata.topics[topic].partitions[partition].leader
                if leader > 0 and leader != avoid:
                    return leader
            except Exception:
                pass
            time.sleep(0.1)
        tails = "".join("\n--- broker %d log ends:\n%s" % (b, self.log(b)[-1500:]) for b in (1, 2, 3))
        raise AssertionError("no leader for %s/%d within %ds%s" % (topic, partition, timeout, tails))

    def create_topic(self, name, partitions=2, replication=3):
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(name, partitions, replication)]).values():
            future.result(timeout=30)
        for partition in range(partitions):
            self.leader(name, partition)


@pytest.fixture
def cluster():
    made = Cluster().start()
    yield made
    made.stop()


def consume_all(bootstrap, topic, partitions, expected, timeout=60):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "verify-%d" % time.time(), "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = []
    deadline = time.monotonic() + timeout
    while len(seen) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        seen.append((message.key(), message.value(), message.partition(), message.offset()))
    # Anything beyond what was expected would be a duplicate: look a little longer.
    end = time.monotonic() + 2
    while time.monotonic() < end:
        message = consumer.poll(0.2)
        if message is not None and not message.error():
            seen.append((message.key(), message.value(), message.partition(), message.offset()))
    consumer.close()
    return seen


def test_leader_killed_twice_loses_and_duplicates_nothing(cluster):
    topic = "chat-failover"
    cluster.create_topic(topic)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "message.timeout.ms": 120000, "retry.backoff.ms": 100})
    acknowledged = {}
    failed = []

    def delivered(error, message):
        if error is None:
            acknowledged[message.value()] = (message.partition(), message.offset())
        else:
            failed.append(error)

    total = 100000
    killed = []
    for i in range(total):
        key = b"conversation-%d" % (i % 1000)
        while True:
            try:
                producer.produce(topic, key=key, value=b"%08d" % i, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if i in (25000, 60000):
            # The second victim is the leader that replaced the first.
            victim = cluster.leader(topic, 0, avoid=killed[0] if killed else None)
            cluster.signal(victim, signal.SIGKILL)
            killed.append(victim)
            if len(killed) == 1:
                # The first victim comes back while the second failover happens.
                threading.Timer(3.0, cluster.restart, args=(victim,)).start()
    remaining = producer.flush(120)
    assert remaining == 0, "%d messages still unacknowledged" % remaining
    assert failed == []
    assert len(acknowledged) == total
    assert killed[0] != killed[1], "the second kill should hit the new leader"

    seen = consume_all(cluster.bootstrap, topic, 2, total)
    values = [value for _, value, _, _ in seen]
    assert len(values) == len(set(values)), "duplicates: %d" % (len(values) - len(set(values)))
    assert set(values) == set(acknowledged), "missing %d acknowledged messages" % len(set(acknowledged) - set(values))
    # In order per conversation (the producer sent each conversation's messages in increasing order).
    by_key = {}
    for key, value, _, _ in seen:
        by_key.setdefault(key, []).append(int(value))
    for key, numbers in by_key.items():
        assert numbers == sorted(numbers), "conversation %s out of order" % key

    # The restarted broker catches up and rejoins the ISR; then the replicas hold the same log.
    first = killed[0]
    cluster.restart(killed[1])
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partitions = admin.list_topics(topic, timeout=5).topics[topic].partitions
        if all(sorted(p.isrs) == [1, 2, 3] for p in partitions.values()):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the ISR did not return to all three brokers: %s" % {p: v.isrs for p, v in partitions.items()})
    for broker in (1, 2, 3):
        cluster.signal(broker, signal.SIGTERM)
    # A clean stop closes the store (and its lock) before the process ends.
    stopped = [cluster.wait_exited(broker) for broker in (1, 2, 3)]
    print("brokers stopped after", ["%.2f s" % seconds for seconds in stopped])
    reports = []
    for broker in (1, 2, 3):
        data = os.path.join(cluster.dir, "broker-%d" % broker, "data")
        result = subprocess.run([BINARY, "inspect", "--data", data], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        rows = sorted(line.split() for line in result.stdout.splitlines() if line.startswith(topic))
        reports.append(rows)
    assert reports[0] == reports[1] == reports[2], reports
    assert first in (1, 2, 3)


def test_with_two_brokers_down_acks_all_fails_clearly():
    cluster = Cluster("--min-insync-replicas 2").start()
    try:
        topic = "chat-min-isr"
        cluster.create_topic(topic, partitions=1)
        leader = cluster.leader(topic, 0)
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "message.timeout.ms": 8000, "retries": 0})
        results = []
        producer.produce(topic, key=b"k", value=b"before", on_delivery=lambda e, m: results.append(e))
        producer.flush(30)
        assert results == [None]
        for broker in (1, 2, 3):
            if broker != leader:
                cluster.signal(broker, signal.SIGKILL)
        # The controller drops the dead brokers from the ISR once their leases end.
        deadline = time.monotonic() + 30
        admin = AdminClient({"bootstrap.servers": "127.0.0.1:%d" % (cluster.base + leader - 1)})
        while time.monotonic() < deadline:
            if admin.list_topics(topic, timeout=5).topics[topic].partitions[0].isrs == [leader]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the dead brokers stayed in the ISR")
        results.clear()
        producer.produce(topic, key=b"k", value=b"after", on_delivery=lambda e, m: results.append(e))
        producer.flush(30)
        assert len(results) == 1 and results[0] is not None
        assert results[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, results[0]
    finally:
        cluster.stop()


def test_a_paused_leader_is_replaced_and_cannot_acknowledge_after(cluster):
    topic = "chat-paused"
    cluster.create_topic(topic, partitions=1)
    old = cluster.leader(topic, 0)
    cluster.signal(old, signal.SIGSTOP)
    try:
        new = cluster.leader(topic, 0, avoid=old)
        assert new != old
    finally:
        cluster.signal(old, signal.SIGCONT)
    # Resumed, the old leader finds its lease gone and stops rather than act as leader.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(cluster.pid(old), 0)
        except ProcessLookupError:
            break
        if subprocess.run(["ps", "-o", "stat=", "-p", str(cluster.pid(old))], capture_output=True, text=True).stdout.strip().startswith("Z"):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the paused leader kept running after its lease ended")
    log = cluster.log(old)
    # A crash report ends in registers and images: show where it starts.
    crash = max(log.find("Fatal error"), log.find("Program crashed"))
    assert re.search(r"lease .* not found|node stopped", log), log[max(0, crash - 1500):crash + 3000] if crash >= 0 else log[-3000:]
    # Its partition took writes under the new leader only.
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "message.timeout.ms": 20000})
    results = []
    producer.produce(topic, key=b"k", value=b"after", on_delivery=lambda e, m: results.append(e))
    producer.flush(30)
    assert results == [None]


def java_hash(text):
    """Java's String.hashCode, which Kafka (and Postduif) use to place a group."""
    value = 0
    for unit in text.encode("utf-16-be").hex(" ", 2).split():
        value = (value * 31 + int(unit, 16)) & 0xFFFFFFFF
    return value


def test_committed_offsets_survive_the_loss_of_their_coordinator(cluster):
    topic, group = "chat-groups", "archive-writers"
    cluster.create_topic(topic)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(100):
        producer.produce(topic, key=b"c%d" % (i % 10), value=b"m%d" % i)
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    taken = []
    deadline = time.monotonic() + 60
    while len(taken) < 60 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            taken.append(message)
    assert len(taken) == 60
    # Commit exactly what was taken, per partition.
    positions = {}
    for message in taken:
        positions[message.partition()] = message.offset() + 1
    consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in positions.items()], asynchronous=False)
    consumer.close()

    # The coordinator is the leader of the group's partition of __consumer_offsets.
    offsets_partition = (java_hash(group) & 0x7FFFFFFF) % 10
    coordinator = cluster.leader("__consumer_offsets", offsets_partition)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    assert description.coordinator.id == coordinator
    cluster.signal(coordinator, signal.SIGKILL)
    cluster.leader("__consumer_offsets", offsets_partition, avoid=coordinator)

    # A new member of the group, through the surviving brokers, resumes where the commit left off.
    survivors = ",".join("127.0.0.1:%d" % (cluster.base + b - 1) for b in (1, 2, 3) if b != coordinator)
    resumed = Consumer({"bootstrap.servers": survivors, "group.id": group, "enable.auto.commit": False,
                        "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    committed = resumed.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=30)
    assert {tp.partition: tp.offset for tp in committed if tp.offset >= 0} == positions
    resumed.subscribe([topic])
    rest = []
    deadline = time.monotonic() + 60
    while len(rest) < 40 and time.monotonic() < deadline:
        message = resumed.poll(0.5)
        if message is not None and not message.error():
            rest.append(message)
    # Nothing more: the first 60 are not read again.
    end = time.monotonic() + 2
    while time.monotonic() < end:
        message = resumed.poll(0.2)
        if message is not None and not message.error():
            rest.append(message)
    resumed.close()
    seen = sorted(m.value() for m in taken) + sorted(m.value() for m in rest)
    assert len(rest) == 40, len(rest)
    assert sorted(seen) == sorted(b"m%d" % i for i in range(100))


def test_the_chat_gateway_works_over_the_cluster_and_through_a_leader_failover(cluster):
    """The matrix-nio scenario with the gateway in front of three brokers,
    then a room's partition leader killed: messages still reach members."""
    import asyncio

    from test_chat import GatewayProcess, ministers, registered

    class Bootstrap:
        address = cluster.bootstrap

    gateway = GatewayProcess(Bootstrap()).start()
    try:
        asyncio.run(asyncio.wait_for(ministers(gateway.url), 180))

        async def after_failover():
            from nio import RoomSendResponse, SyncResponse
            ann = await registered(gateway.url, "ann")
            ben = await registered(gateway.url, "ben")
            room = (await ann.room_create(name="Failover", invite=["@ben:gov.test"])).room_id
            await ben.join(room)
            await ben.sync(timeout=0)
            # Kill the leader of the room's partition (the gateway lists every broker).
            from confluent_kafka.admin import AdminClient
            from kafka.partitioner.default import murmur2
            partitions = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics("conversations", timeout=10).topics["conversations"].partitions
            victim = partitions[(murmur2(room.encode()) & 0x7FFFFFFF) % len(partitions)].leader
            cluster.signal(victim, signal.SIGKILL)
            deadline = time.monotonic() + 60
            sent = None
            while time.monotonic() < deadline:
                sent = await ann.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "na de storing"}, tx_id="after-failover")
                if isinstance(sent, RoomSendResponse):
                    break
                await asyncio.sleep(0.5)
            assert isinstance(sent, RoomSendResponse), sent
            got = []
            while time.monotonic() < deadline and "na de storing" not in got:
                response = await ben.sync(timeout=5000, since=ben.next_batch)
                if isinstance(response, SyncResponse) and room in response.rooms.join:
                    got += [getattr(e, "body", None) for e in response.rooms.join[room].timeline.events]
            assert "na de storing" in got
            await ann.close()
            await ben.close()

        asyncio.run(asyncio.wait_for(after_failover(), 180))
    finally:
        gateway.stop()


def test_gateways_inside_the_brokers_of_a_cluster_serve_one_room_together():
    """Each broker runs a gateway in its process: it reaches the partitions
    it leads as calls and the others' over their sockets. Two ministers on
    the gateways of different brokers share a room; what one sends reaches
    the other, whichever broker leads the room's partition."""
    import asyncio

    from nio import RoomSendResponse, SyncResponse

    from test_chat import registered

    made = Cluster(broker_args="--server-name gov.test --conversation-partitions 2", gateways=True).start()
    try:
        for broker in (1, 2, 3):
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(made.gateway_url(broker) + "/_matrix/client/versions", timeout=1):
                        break
                except OSError:
                    assert time.monotonic() < deadline, "broker %d's gateway did not answer; its log ends:\n%s" % (broker, made.log(broker)[-3000:])
                    time.sleep(0.2)

        # Ann's gateway is in the process of partition 0's leader; Ben's in
        # another broker's, partition 1's leader's when it is another. With
        # rooms in both partitions, one gateway reaches a room's leader as a
        # call and the other over a socket, however the controller placed
        # the leaders (both on one broker when it made the topic before the
        # others had registered).
        from confluent_kafka.admin import AdminClient
        from kafka.partitioner.default import murmur2
        partitions = AdminClient({"bootstrap.servers": made.bootstrap}).list_topics("conversations", timeout=10).topics["conversations"].partitions
        assert len(partitions) == 2, partitions
        ann_broker = partitions[0].leader
        # The fan-out reads memberships from its replicas of the members
        # topic, whose leaders may be elsewhere: a join just written may not
        # be committed there yet when the next message is (MembershipIndex).
        members = AdminClient({"bootstrap.servers": made.bootstrap}).list_topics("conversation-members", timeout=10).topics["conversation-members"].partitions
        layout = "conversations led by %s, members by %s" % ({p: v.leader for p, v in partitions.items()}, {p: v.leader for p, v in members.items()})
        ben_broker = partitions[1].leader if partitions[1].leader != ann_broker else next(b for b in (1, 2, 3) if b != ann_broker)

        async def talk():
            ann = await registered(made.gateway_url(ann_broker), "ann")
            ben = await registered(made.gateway_url(ben_broker), "ben")
            deadline = time.monotonic() + 60
            rooms = []
            covered = set()
            for name in ("Kamer %d" % i for i in range(40)):
                if covered == {0, 1}:
                    break
                # Each gateway learns the other's accounts and rooms from the
                # topics it tails: retried until it has.
                created = await ann.room_create(name=name, invite=["@ben:gov.test"])
                while not hasattr(created, "room_id") and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    created = await ann.room_create(name=name, invite=["@ben:gov.test"])
                assert hasattr(created, "room_id"), created
                room = created.room_id
                rooms.append(room)
                covered.add((murmur2(room.encode()) & 0x7FFFFFFF) % 2)
                joined = await ben.join(room)
                while not hasattr(joined, "room_id") and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    joined = await ben.join(room)
                assert hasattr(joined, "room_id"), joined
            assert covered == {0, 1}, "forty rooms, all in one partition"
            await ben.sync(timeout=0)
            for room in rooms:
                sent = await ann.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "over " + room}, tx_id="t-" + room)
                assert isinstance(sent, RoomSendResponse), sent
            got = set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(got) < len(rooms):
                response = await ben.sync(timeout=5000, since=ben.next_batch)
                if isinstance(response, SyncResponse):
                    for room in rooms:
                        if room in response.rooms.join:
                            got |= {getattr(e, "body", None) for e in response.rooms.join[room].timeline.events if getattr(e, "body", "").startswith("over ")}
            assert got == {"over " + room for room in rooms}, (got, layout)
            await ann.close()
            await ben.close()

        asyncio.run(asyncio.wait_for(talk(), 180))
    finally:
        made.stop()


def test_with_etcd_gone_brokers_stop_saying_why_and_keep_every_acknowledged_write(cluster):
    """etcd killed mid-stream: a broker cannot know whether it still leads,
    so it stops (logging why) rather than act on stale roles. Every write it
    acknowledged is there after etcd and the brokers come back."""
    topic = "chat-etcd-gone"
    cluster.create_topic(topic, partitions=1)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True, "acks": "all",
                         "message.timeout.ms": 15000, "retry.backoff.ms": 100})
    acknowledged = set()

    def delivered(error, message):
        if error is None:
            acknowledged.add(message.value())

    for i in range(1000):
        producer.produce(topic, key=b"room", value=b"before-%05d" % i, on_delivery=delivered)
    assert producer.flush(30) == 0 and len(acknowledged) == 1000

    with open(os.path.join(cluster.dir, "etcd", "pid")) as f:
        os.kill(int(f.read()), signal.SIGKILL)
    for i in range(500):
        producer.produce(topic, key=b"room", value=b"during-%05d" % i, on_delivery=delivered)
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(30)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [b for b in (1, 2, 3) if subprocess.run(["kill", "-0", str(cluster.pid(b))], capture_output=True).returncode == 0]
        if not alive:
            break
        time.sleep(0.2)
    assert not alive, "brokers %s kept running without etcd" % alive
    for broker in (1, 2, 3):
        log = cluster.log(broker)
        assert "coordination store unavailable" in log or "lease" in log, log[-1500:]

    cluster.run("restart-etcd", cluster.dir)
    for broker in (1, 2, 3):
        cluster.restart(broker)
    cluster.leader(topic, 0, timeout=60)
    seen = consume_all(cluster.bootstrap, topic, 1, len(acknowledged))
    values = [value for _, value, _, _ in seen]
    assert len(values) == len(set(values)), "duplicates"
    assert acknowledged <= set(values), "lost %d acknowledged writes" % len(acknowledged - set(values))


def metric(cluster, broker, name):
    """A counter from broker's /metrics (0 when absent)."""
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % (int(cluster.env["HTTP_PORT_BASE"]) + broker - 1), timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_consumer_fetches_from_the_in_sync_follower_in_its_rack():
    """KIP-392 with librdkafka's client.rack: the leader sends a consumer
    in another rack to the in-sync follower there, which serves every
    record, those produced while it reads too."""
    cluster = Cluster(racks="zone-a zone-b zone-c").start()
    try:
        topic = "closest-replica"
        cluster.create_topic(topic, partitions=1)
        leader = cluster.leader(topic, 0)
        follower = next(b for b in (1, 2, 3) if b != leader)
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
        for i in range(200):
            producer.produce(topic, value=b"m%d" % i, partition=0)
        assert producer.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "closest", "auto.offset.reset": "earliest",
                             "client.rack": "zone-" + "abc"[follower - 1], "enable.auto.commit": False})
        consumer.subscribe([topic])
        values, more, deadline = [], False, time.monotonic() + 60
        while len(values) < 250 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
            if len(values) == 200 and not more:
                # Fifty more while the consumer reads at the follower.
                more = True
                for i in range(200, 250):
                    producer.produce(topic, value=b"m%d" % i, partition=0)
                assert producer.flush(30) == 0
        consumer.close()
        assert values == [b"m%d" % i for i in range(250)]
        assert metric(cluster, leader, "postduif_fetch_preferred_read_replica_answers_total") >= 1
        assert metric(cluster, follower, "postduif_fetch_follower_reads_total") >= 1, cluster.log(follower)[-2000:]
    finally:
        cluster.stop()
