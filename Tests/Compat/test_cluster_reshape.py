"""A cluster reshaped while it works: a partition moved under an
idempotent acks=all load (kafka-python's AlterPartitionReassignments and
ListPartitionReassignments, the APIs of Kafka's own reassignment tool),
a broker drained and the cluster rebalanced with `postduif cluster`,
preferred leaders elected with confluent-kafka, and a rolling restart of
every broker under load in which controlled shutdown leaves clients
nothing worse than retriable errors. Real etcd and three brokers
(local-cluster.sh); every wait has a deadline."""
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from conftest import BINARY
from test_cluster import Cluster, consume_all


class Load:
    """An idempotent acks=all producer in a thread, keyed over 200
    conversations, until stopped or `total` is reached; it records every
    acknowledgement, every failure and the longest produce-to-ack wait."""

    def __init__(self, bootstrap, topic, total, rate=2000):
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                  "message.timeout.ms": 120000, "retry.backoff.ms": 50})
        self.topic, self.total, self.rate = topic, total, rate
        self.acknowledged, self.failed, self.sent = {}, [], {}
        self.longest = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def delivered(self, error, message):
        if error is None:
            self.acknowledged[message.value()] = (message.partition(), message.offset())
            self.longest = max(self.longest, time.monotonic() - self.sent[message.value()])
        else:
            self.failed.append(error)

    def run(self):
        started = time.monotonic()
        for i in range(self.total):
            if self.stop.is_set():
                break
            value = b"%08d" % i
            self.sent[value] = time.monotonic()
            while True:
                try:
                    self.producer.produce(self.topic, key=b"conversation-%d" % (i % 200), value=value, on_delivery=self.delivered)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)
            # Paced, so the load lasts through the reshaping.
            ahead = (i + 1) / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        self.producer.flush(120)

    def start(self):
        self.thread.start()
        return self

    def finish(self, timeout=180):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the producer did not finish"
        assert self.producer.flush(30) == 0

    def check(self, bootstrap, partitions):
        """Every acknowledged record read exactly once, in order per conversation."""
        assert self.failed == [], self.failed[:5]
        seen = consume_all(bootstrap, self.topic, partitions, len(self.acknowledged))
        values = [value for _, value, _, _ in seen]
        assert len(values) == len(set(values)), "duplicates: %d" % (len(values) - len(set(values)))
        assert set(values) == set(self.acknowledged), "missing %d acknowledged records" % len(set(self.acknowledged) - set(values))
        by_key = {}
        for key, value, _, _ in seen:
            by_key.setdefault(key, []).append(int(value))
        for key, numbers in by_key.items():
            assert numbers == sorted(numbers), "conversation %s out of order" % key


def metadata(cluster, topic):
    partitions = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(topic, timeout=10).topics[topic].partitions
    return {index: (p.leader, list(p.replicas), sorted(p.isrs)) for index, p in partitions.items()}


def wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError("%s: not within %d s" % (what, timeout))


def scrape(cluster, broker, name):
    """A metric's value on a broker's operations port (summed over labels)."""
    from test_operations import metric
    port = int(cluster.env["HTTP_PORT_BASE"]) + broker - 1
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as response:
        return metric(response.read().decode(), name) or 0


def cluster_tool(cluster, *args):
    result = subprocess.run([BINARY, "cluster", *args, "--broker", "127.0.0.1:%d" % cluster.base],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def local_topics(cluster, broker):
    """The topics in a stopped broker's store, per `postduif inspect`."""
    data = os.path.join(cluster.dir, "broker-%d" % broker, "data")
    result = subprocess.run([BINARY, "inspect", "--data", data], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_partition_moves_under_load_and_its_old_replica_goes():
    from kafka import KafkaAdminClient, TopicPartition as KTopicPartition

    cluster = Cluster(broker_args="--reassignment-throttle-mb-per-s 20").start()
    try:
        topic = "moving"
        cluster.create_topic(topic, partitions=2, replication=2)
        before = metadata(cluster, topic)
        # Partition 0 leaves its preferred leader's broker for the one it lacks.
        old = before[0][1]
        gone = old[0]
        newcomer = ({1, 2, 3} - set(old)).pop()
        target = [newcomer, old[1]]
        load = Load(cluster.bootstrap, topic, 12000).start()
        wait_for(lambda: len(load.acknowledged) > 3000, "the load acknowledged")
        admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        try:
            answer = admin.alter_partition_reassignments({KTopicPartition(topic, 0): target})
            assert answer == {KTopicPartition(topic, 0): None}, answer
            wait_for(lambda: admin.list_partition_reassignments() == {}, "the move finished", timeout=90)
        finally:
            admin.close()
        after = metadata(cluster, topic)
        assert after[0][1] == target and after[0][2] == sorted(target) and after[0][0] in target, after
        load.finish()
        load.check(cluster.bootstrap, 2)
        # The broker that left keeps nothing of partition 0 (nor of the
        # topic, when partition 1 was not on it either).
        cluster.signal(gone, signal.SIGTERM)
        cluster.wait_exited(gone)
        report = local_topics(cluster, gone)
        rows = [line.split() for line in report.splitlines() if line.split()[:1] == [topic]]
        if gone in before[1][1]:
            # Partition 1 stays there; partition 0 is there empty (columns: topic partition start end hw batches bytes ...).
            assert [row[5:7] for row in rows if row[1] == "0"] == [["0", "0"]], report
        else:
            assert rows == [], report
        assert "removed a replica moved to other brokers" in cluster.log(gone) or "every partition moved to other brokers" in cluster.log(gone)
    finally:
        cluster.stop()


def test_drain_rebalance_and_preferred_leaders_with_the_cluster_tool():
    cluster = Cluster().start()
    try:
        topic = "reshaped"
        cluster.create_topic(topic, partitions=6, replication=2)
        status = cluster_tool(cluster, "status")
        assert "controller" in status and "0 under-replicated, 0 offline, 0 moving" in status, status
        # Drain broker 1: the plan is printed, then applied and waited for.
        plan = cluster_tool(cluster, "drain", "1")
        assert '"partitions"' in plan and '"version":1' in plan, plan
        drained = cluster_tool(cluster, "drain", "1", "--execute", "--wait", "--timeout", "120")
        assert "every move finished" in drained, drained
        # The tool waited on the broker it asked; the client's Metadata may
        # come from another, whose view follows etcd a moment later.
        wait_for(lambda: all(1 not in replicas for _, replicas, _ in metadata(cluster, topic).values()), "broker 1 drained", timeout=20)
        status = cluster_tool(cluster, "status")
        broker_one = [line for line in status.splitlines() if line.startswith("1")][0]
        assert broker_one.split("\t")[3:5] == ["0", "0"], status
        # Rebalance brings broker 1 back into use, evenly.
        rebalanced = cluster_tool(cluster, "rebalance", "--execute", "--wait", "--timeout", "120")
        assert "every move finished" in rebalanced, rebalanced

        def load():
            after = metadata(cluster, topic)
            return {b: sum(b in replicas for _, replicas, _ in after.values()) for b in (1, 2, 3)}
        wait_for(lambda: max(load().values()) - min(load().values()) <= 1, "replicas spread evenly", timeout=20)
        # Every preferred replica leads (the tool's election, or the controller's own).
        cluster_tool(cluster, "elect-leaders")
        wait_for(lambda: all(leader == replicas[0] for leader, replicas, _ in metadata(cluster, topic).values()), "preferred leaders lead")
        # Nothing to rebalance now.
        assert '"partitions":[]' in cluster_tool(cluster, "rebalance")
        # An election for one topic answers for each of its partitions.
        elected = cluster_tool(cluster, "elect-leaders", "--topic", topic)
        assert all("%s/%d: " % (topic, index) in elected for index in range(6)), elected
        # A plan in kafka-reassign-partitions' form, applied and waited for.
        _, replicas, _ = metadata(cluster, topic)[0]
        spare = [broker for broker in (1, 2, 3) if broker not in replicas][0]
        target = [spare, replicas[0]]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as plan_file:
            json.dump({"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": target}]}, plan_file)
        try:
            moved = cluster_tool(cluster, "reassign", "--plan", plan_file.name, "--wait", "--timeout", "120")
            assert "started 1 moves" in moved and "every move finished" in moved, moved
            wait_for(lambda: metadata(cluster, topic)[0][1] == target, "partition 0 on %s" % target, timeout=20)
            # Cancelling a move that is over is refused per partition, by name.
            cancelled = cluster_tool(cluster, "reassign", "--plan", plan_file.name, "--cancel")
            assert "%s/0: " % topic in cancelled and "Kafka error 85" in cancelled, cancelled
        finally:
            os.unlink(plan_file.name)
    finally:
        cluster.stop()


def test_confluent_kafkas_elect_leaders_returns_leadership_to_the_preferred_replica():
    from confluent_kafka import ElectionType, TopicPartition

    cluster = Cluster(broker_args="--leader-rebalance-interval-ms 0").start()
    try:
        topic = "elected"
        cluster.create_topic(topic, partitions=1, replication=3)
        preferred = metadata(cluster, topic)[0][1][0]
        cluster.signal(preferred, signal.SIGTERM)
        cluster.wait_exited(preferred)
        wait_for(lambda: metadata(cluster, topic)[0][0] not in (preferred, -1), "another leader")
        cluster.restart(preferred)
        wait_for(lambda: metadata(cluster, topic)[0][2] == [1, 2, 3], "the preferred replica back in sync")
        # Without the automatic rebalance, it leads again only when asked.
        assert metadata(cluster, topic)[0][0] != preferred
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        result = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic, 0)]).result(timeout=30)
        assert result[TopicPartition(topic, 0)] is None, result
        wait_for(lambda: metadata(cluster, topic)[0][0] == preferred, "the preferred replica leads")
    finally:
        cluster.stop()


def test_a_rolling_restart_under_load_fails_no_delivery():
    """Each broker in turn gets SIGTERM, hands its leaderships over, stops,
    starts again and catches up before the next one goes."""
    cluster = Cluster().start()
    try:
        topic = "rolling"
        cluster.create_topic(topic, partitions=3, replication=3)
        load = Load(cluster.bootstrap, topic, 60000, rate=1500).start()
        wait_for(lambda: len(load.acknowledged) > 2000, "the load acknowledged")
        stops = []
        for broker in (1, 2, 3):
            cluster.signal(broker, signal.SIGTERM)
            stops.append(cluster.wait_exited(broker))
            # While it is down its partitions are under-replicated, on their leaders.
            wait_for(lambda: sum(scrape(cluster, b, "postduif_under_replicated_partitions") for b in (1, 2, 3) if b != broker) == 3,
                     "under-replicated partitions reported")
            cluster.restart(broker)
            wait_for(lambda: all(isr == [1, 2, 3] for _, _, isr in metadata(cluster, topic).values()), "broker %d back in sync" % broker, timeout=90)
        load.stop.set()
        load.finish()
        print("stops took", ["%.2f s" % s for s in stops], "longest produce-to-ack wait %.3f s" % load.longest,
              "acknowledged", len(load.acknowledged))
        load.check(cluster.bootstrap, 3)
        for broker in (1, 2, 3):
            assert "controlled shutdown: leaderships handed over" in cluster.log(broker)
        wait_for(lambda: sum(scrape(cluster, b, "postduif_under_replicated_partitions") for b in (1, 2, 3)) == 0, "no under-replicated partitions")
        assert sum(scrape(cluster, b, "postduif_controller_active") for b in (1, 2, 3)) == 1
        # Counted on the leaders since their own last start.
        assert sum(scrape(cluster, b, "postduif_isr_shrinks_total") for b in (1, 2, 3)) >= 1
        assert sum(scrape(cluster, b, "postduif_isr_expands_total") for b in (1, 2, 3)) >= 1
    finally:
        cluster.stop()


def test_a_leader_that_cannot_hand_over_stops_without_waiting_out_its_produces():
    """SIGTERM to a leader whose followers are stopped (SIGSTOP, the
    controller among them): no leadership can move and an acks=all Produce
    waits for followers that never fetch. The broker gives up the handover
    after --controlled-shutdown-timeout-ms and stops without waiting out the
    Produce's 30 s timeout; resumed, the others take over and the producer's
    retry is stored once. (Leases of 10 s: the paused brokers keep theirs.)"""
    cluster = Cluster("--controlled-shutdown-timeout-ms 1000 --lease-seconds 10").start()
    stopped = []
    try:
        topic = "handover-impossible"
        cluster.create_topic(topic, partitions=3, replication=3)
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        described = admin.list_topics(topic, timeout=10)
        controller = described.controller_id
        # A partition led by a broker that is not the controller.
        partition, leader = next((p.id, p.leader) for p in described.topics[topic].partitions.values() if p.leader != controller)
        awaiting = []  # messages librdkafka has sent and awaits an answer for, per its statistics

        def statistics(text):
            awaiting.append(sum(b.get("waitresp_msg_cnt", 0) for b in json.loads(text)["brokers"].values()))

        producer = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True, "acks": "all",
                             "request.timeout.ms": 30000, "message.timeout.ms": 120000, "retry.backoff.ms": 100,
                             "statistics.interval.ms": 100, "stats_cb": statistics})
        results = []
        producer.produce(topic, partition=partition, key=b"k", value=b"waited", on_delivery=lambda e, m: results.append(e))
        producer.flush(10)
        assert results == [None], results
        for broker in (1, 2, 3):
            if broker != leader:
                cluster.signal(broker, signal.SIGSTOP)
                stopped.append(broker)
        producer.produce(topic, partition=partition, key=b"k", value=b"unreplicated", on_delivery=lambda e, m: results.append(e))
        # Sent: its batch is in the leader's log, the answer waits for followers.
        deadline = time.monotonic() + 10
        while not (awaiting and awaiting[-1] > 0) and time.monotonic() < deadline:
            producer.poll(0.1)
        assert awaiting and awaiting[-1] > 0, "the produce was never sent"
        cluster.signal(leader, signal.SIGTERM)
        took = cluster.wait_exited(leader, timeout=25)
        print("the leader stopped in %.2f s" % took)
        log = cluster.log(leader)
        assert "stopped; log synced and closed" in log, log[-3000:]
        for broker in stopped:
            cluster.signal(broker, signal.SIGCONT)
        stopped.clear()
        deadline = time.monotonic() + 90
        while len(results) < 2 and time.monotonic() < deadline:
            producer.poll(0.5)
        assert results == [None, None], results
        values = sorted(value for _, value, _, _ in consume_all(cluster.bootstrap, topic, 3, 2))
        assert values == [b"unreplicated", b"waited"], values
    finally:
        for broker in stopped:
            cluster.signal(broker, signal.SIGCONT)
        cluster.stop()
