"""Backup while running: `postduif backup` copies a live broker's store
while an idempotent acks=all confluent-kafka producer keeps writing;
`postduif restore` makes the copy a data directory, a second broker serves
it, and a confluent-kafka consumer reads every record acknowledged before
the backup began, each at the offset and with the value the live broker
has. With the authorizer on, a principal without Alter on the cluster is
refused."""
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BINARY, BrokerProcess, add_users, unique
from test_cluster_reshape import metadata, wait_for

PARTITIONS = 3
RECORDS_MAX = 200_000


def read_everything(address, topic, partitions):
    """{partition: [(offset, key, value)]} from each log's start to its end."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": unique("reader"), "enable.auto.commit": False})
    found = {}
    try:
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            consumer.assign([TopicPartition(topic, partition, low)])
            records = []
            deadline = time.monotonic() + 60
            while (not records or records[-1][0] < high - 1) and time.monotonic() < deadline and high > low:
                for message in consumer.consume(1000, timeout=1):
                    assert message.error() is None, message.error()
                    records.append((message.offset(), message.key(), message.value()))
            found[partition] = records
    finally:
        consumer.close()
    return found


class Load:
    """A producer in a thread, acks=all and idempotent, until stopped;
    `acknowledged` holds (partition, offset, value) of each delivery."""

    def __init__(self, address, topic):
        self.producer = Producer({"bootstrap.servers": address, "enable.idempotence": True, "linger.ms": 2})
        self.topic = topic
        self.acknowledged = []
        self.failed = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def delivered(self, error, message):
        with self.lock:
            if error is not None:
                self.failed.append(error)
            else:
                self.acknowledged.append((message.partition(), message.offset(), message.value()))

    def run(self):
        for number in range(RECORDS_MAX):
            if self.stopping.is_set():
                break
            value = b"record-%08d" % number + b"." * 200
            while True:
                try:
                    self.producer.produce(self.topic, key=b"conversation-%d" % (number % 50), value=value, on_delivery=self.delivered)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)
        self.producer.flush(60)

    def snapshot(self):
        with self.lock:
            return list(self.acknowledged)


def test_a_backup_of_a_broker_under_load_restores_every_record_acknowledged_before_it(fresh_broker):
    fresh_broker.extra_args = ["--log-segment-bytes", "262144"]
    fresh_broker.start()
    topic = unique("backed-up")
    admin = AdminClient({"bootstrap.servers": fresh_broker.address})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)
    load = Load(fresh_broker.address, topic)
    load.thread.start()
    backup = tempfile.mkdtemp(prefix="postduif-backup-") + "/copy"
    restored = tempfile.mkdtemp(prefix="postduif-restored-") + "/data"
    second = None
    try:
        wait_for(lambda: len(load.snapshot()) >= 20_000, "the load acknowledged 20,000 records")
        before = load.snapshot()
        assert len(before) >= 20_000, "the load did not get going"
        result = subprocess.run([BINARY, "backup", "--broker", fresh_broker.address, "--to", backup], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr + result.stdout
        assert result.stdout.startswith("backup at " + backup), result.stdout
        # Writes went on through the backup, and go on after it.
        during = len(load.snapshot())
        deadline = time.monotonic() + 30
        while len(load.snapshot()) < during + 5_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        load.stopping.set()
        load.thread.join(90)
        assert not load.failed, load.failed[:5]
        assert len(load.snapshot()) > len(before), "appends stopped during the backup"

        # A backup goes to a folder of its own: a second one to the same place is refused.
        again = subprocess.run([BINARY, "backup", "--broker", fresh_broker.address, "--to", backup], capture_output=True, text=True, timeout=60)
        assert again.returncode != 0 and "already exists" in again.stderr, again.stderr

        result = subprocess.run([BINARY, "restore", "--from", backup, "--data", restored], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr + result.stdout
        assert "verified" in result.stdout, result.stdout

        live = read_everything(fresh_broker.address, topic, PARTITIONS)
        second = BrokerProcess(data_dir=restored).start()
        copy = read_everything(second.address, topic, PARTITIONS)
        for partition in range(PARTITIONS):
            records = copy[partition]
            # The copy is a prefix of the live log: the same offsets, keys and values.
            assert records == live[partition][:len(records)], "partition %d differs from the live log" % partition
            offsets = [offset for offset, _, _ in records]
            assert offsets == list(range(len(offsets))), "partition %d has a hole" % partition
        held = {(partition, offset): value for partition in copy for offset, _, value in copy[partition]}
        missing = [(partition, offset) for partition, offset, value in before if held.get((partition, offset)) != value]
        assert not missing, "%d records acknowledged before the backup are not in it: %s" % (len(missing), missing[:5])
        # The restored node takes writes at the next offsets.
        producer = Producer({"bootstrap.servers": second.address, "enable.idempotence": True})
        offsets = []
        producer.produce(topic, key=b"after", value=b"after-restore", partition=0,
                         on_delivery=lambda error, message: offsets.append((error, message.offset())))
        producer.flush(30)
        assert offsets == [(None, len(copy[0]))], offsets
    finally:
        load.stopping.set()
        if second is not None:
            assert second.stop() == 0, second.read_log()
            inspected = subprocess.run([BINARY, "inspect", "--data", restored], capture_output=True, text=True, timeout=120)
            assert inspected.returncode == 0 and "verified" in inspected.stdout, inspected.stdout + inspected.stderr
        shutil.rmtree(os.path.dirname(backup), ignore_errors=True)
        shutil.rmtree(os.path.dirname(restored), ignore_errors=True)


def test_a_backup_needs_alter_on_the_cluster():
    users = {"admin": "admin-secret", "alice": "alice-secret"}
    process = BrokerProcess(extra_args=["--sasl", "true", "--authorizer", "true", "--super-users", "User:admin"])
    add_users(process.data_dir, users)
    process.start()
    target = tempfile.mkdtemp(prefix="postduif-backup-")
    try:
        environment = dict(os.environ, POSTDUIF_ACL_PASSWORD=users["alice"])
        refused = subprocess.run([BINARY, "backup", "--broker", process.address, "--user", "alice", "--to", target + "/alice"],
                                 capture_output=True, text=True, timeout=60, env=environment)
        assert refused.returncode != 0 and "Alter on the cluster" in refused.stderr, refused.stderr
        assert not os.path.exists(target + "/alice")
        assert "Backup refused" in process.read_log() and "alice" in process.read_log()
        environment["POSTDUIF_ACL_PASSWORD"] = users["admin"]
        taken = subprocess.run([BINARY, "backup", "--broker", process.address, "--user", "admin", "--to", target + "/admin"],
                               capture_output=True, text=True, timeout=60, env=environment)
        assert taken.returncode == 0, taken.stderr
        assert os.path.exists(target + "/admin/CURRENT")
    finally:
        assert process.stop() == 0, process.read_log()
        shutil.rmtree(process.data_dir, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)


def test_a_broker_restored_from_its_backup_catches_up_from_its_peers():
    """In a cluster: broker 2's backup, taken while records arrive, is put
    in place of its data after 1,000 more records; started again with its
    own id, it copies what it lacks from the leaders, returns to every
    ISR, and alone (the other two stopped) serves every record."""
    from test_cluster import Cluster, consume_all

    cluster = Cluster().start()
    try:
        topic = unique("restored")
        cluster.create_topic(topic, partitions=2, replication=3)
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
        for number in range(1000):
            producer.produce(topic, key=b"k%d" % (number % 20), value=b"before-%d" % number)
        assert producer.flush(60) == 0
        broker_two = "127.0.0.1:%d" % (cluster.base + 1)
        backup = os.path.join(cluster.dir, "backup-2")
        taken = subprocess.run([BINARY, "backup", "--broker", broker_two, "--to", backup], capture_output=True, text=True, timeout=120)
        assert taken.returncode == 0, taken.stderr
        for number in range(1000):
            producer.produce(topic, key=b"k%d" % (number % 20), value=b"after-%d" % number)
        assert producer.flush(60) == 0

        cluster.signal(2, signal.SIGTERM)
        cluster.wait_exited(2, timeout=60)
        data = os.path.join(cluster.dir, "broker-2", "data")
        shutil.rmtree(data)
        restored = subprocess.run([BINARY, "restore", "--from", backup, "--data", data], capture_output=True, text=True, timeout=300)
        assert restored.returncode == 0, restored.stderr + restored.stdout
        cluster.restart(2)

        wait_for(lambda: all(2 in isr for _, _, isr in metadata(cluster, topic).values()), "broker 2 back in every ISR", timeout=90)

        for other in (1, 3):
            cluster.signal(other, signal.SIGTERM)
            cluster.wait_exited(other, timeout=90)
        seen = consume_all(broker_two, topic, 2, 2000, timeout=90)
        values = sorted(value for _, value, _, _ in seen)
        assert len(values) == 2000 and len(set(values)) == 2000, (len(values), len(set(values)))
        assert set(values) == {b"before-%d" % n for n in range(1000)} | {b"after-%d" % n for n in range(1000)}
    finally:
        cluster.stop()
