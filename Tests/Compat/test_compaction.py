"""Compaction (cleanup.policy=compact) seen by real clients: 100,000
updates over 1,000 keys become about 1,000 records, every key's newest
value kept at its own offset; tombstones go after delete.retention.ms; a
consumer reads the compacted topic from the start. The broker's cleaner
runs every 100 ms here; segments close after segment.ms, so each wave of
updates lands in a closed segment once the next record arrives."""
import shutil
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BrokerProcess, unique

KEYS = 1000
UPDATES = 100_000


@pytest.fixture(scope="module")
def node():
    process = BrokerProcess(extra_args=["--log-retention-check-interval-ms", "100"]).start()
    yield process
    assert process.stop() == 0
    shutil.rmtree(process.data_dir, ignore_errors=True)


def read_all(address, topic, expect_at_least=1, timeout=30):
    """Every record from the start to the end offset: {key: (offset, value)} and the count read."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": unique("reader"), "enable.auto.commit": False})
    partition = TopicPartition(topic, 0)
    low, high = consumer.get_watermark_offsets(partition, timeout=10)
    consumer.assign([TopicPartition(topic, 0, low)])
    latest, count, offset = {}, 0, low
    deadline = time.monotonic() + timeout
    while offset < high and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        latest[message.key()] = (message.offset(), message.value())
        count += 1
        offset = message.offset() + 1
    consumer.close()
    assert offset >= high, "read to %d of %d" % (offset, high)
    return latest, count, high


class Roller:
    """Writes a record under its own key: once segment.ms has closed the
    active segment (the broker's clock decides when), the next record
    begins a new one, and the closed one can be compacted. Counted, so the
    end offset can be checked."""

    def __init__(self, producer, topic):
        self.producer, self.topic, self.count = producer, topic, 0

    def __call__(self):
        self.producer.produce(self.topic, key=b"roll", value=b"%d" % self.count)
        self.producer.flush(30)
        self.count += 1


def read_until(address, topic, roll, done, what, timeout=60):
    """Reads the topic from the start until `done(latest, count, high)`,
    writing a roll record before each read; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        roll()
        latest, count, high = read_all(address, topic)
        if done(latest, count, high):
            return latest, count, high
        assert time.monotonic() < deadline, "%s: %d records after %d s" % (what, count, timeout)
        time.sleep(0.3)  # poll pacing


def test_compaction_keeps_the_newest_record_of_each_key_and_tombstones_go_after_their_delay(node):
    admin = AdminClient({"bootstrap.servers": node.address})
    topic = unique("compacted")
    futures = admin.create_topics([NewTopic(topic, 1, 1, config={
        "cleanup.policy": "compact", "segment.ms": "500", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "2000"})])
    futures[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": node.address, "linger.ms": 5, "enable.idempotence": True})
    for update in range(UPDATES):
        producer.produce(topic, key=b"k%d" % (update % KEYS), value=b"v%d" % update)
        if update % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    roll = Roller(producer, topic)

    latest, count, high = read_until(node.address, topic, roll, lambda latest, count, high: count <= KEYS + 10, "compaction")
    assert count <= KEYS + 10, "still %d records after compaction" % count
    assert high == UPDATES + roll.count, "offsets are kept: the end offset does not move"
    for key in range(KEYS):
        offset, value = latest[b"k%d" % key]
        newest = UPDATES - KEYS + key
        assert (offset, value) == (newest, b"v%d" % newest), (key, offset, value)

    # Tombstones for a tenth of the keys: kept for delete.retention.ms, then gone.
    for key in range(0, KEYS, 10):
        producer.produce(topic, key=b"k%d" % key, value=None)
    producer.flush(30)
    latest, count, _ = read_until(node.address, topic, roll, lambda latest, count, high: all(
        latest.get(b"k%d" % key, (0, b""))[1] is None for key in range(0, KEYS, 10)), "tombstones", timeout=30)
    assert all(latest[b"k%d" % key][1] is None for key in range(0, KEYS, 10)), "the tombstones replace the keys' values"
    # Past delete.retention.ms (and one more closed segment), they go.
    latest, count, _ = read_until(node.address, topic, roll, lambda latest, count, high: all(
        b"k%d" % key not in latest for key in range(0, KEYS, 10)), "tombstones older than delete.retention.ms", timeout=30)
    assert all(b"k%d" % key not in latest for key in range(0, KEYS, 10)), "tombstones older than delete.retention.ms are gone"
    assert all(latest[b"k%d" % key][1] == b"v%d" % (UPDATES - KEYS + key) for key in range(KEYS) if key % 10)
    with open(node.log_path, errors="replace") as log:
        assert "compacted" in log.read()
