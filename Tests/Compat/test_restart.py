"""A broker restart mid-stream: an idempotent producer that keeps sending
across the restart, or across a SIGKILL, leaves every message exactly once."""
import re
import signal
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import unique


def test_idempotent_producer_across_a_restart_leaves_no_duplicates_and_loses_nothing(fresh_broker):
    broker = fresh_broker.start()
    topic = unique("restart")
    producer = KafkaProducer(bootstrap_servers=broker.address, retries=100, retry_backoff_ms=100,
                             request_timeout_ms=5000, max_block_ms=60000, reconnect_backoff_ms=50)
    futures = [producer.send(topic, b"m-%d" % i, partition=0) for i in range(500)]
    producer.flush()
    assert broker.stop() == 0
    broker.start()
    futures += [producer.send(topic, b"m-%d" % i, partition=0) for i in range(500, 1000)]
    producer.flush()
    assert all(f.get(30).offset >= 0 for f in futures)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.address, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(topic, 0)])
    values = [m.value for m in consumer]
    consumer.close()
    assert values == [b"m-%d" % i for i in range(1000)]


def test_a_broker_killed_with_its_index_entries_unwritten_rebuilds_them_and_the_idempotent_producer_goes_on(fresh_broker):
    """Appends keep RocksDB's entries for a batch (its location, the producer's
    sequences, the partition's state) in the WAL's buffer in the process
    (ADR 0013): a SIGKILL loses them, and the next start rebuilds them from
    the segments. Here the broker is killed right after confluent-kafka's
    idempotent producer had every record acknowledged; after the restart the
    broker says what it rebuilt, every record is there once, and the same
    producer goes on where it was (its sequences were rebuilt too, or the
    broker would refuse them as out of order)."""
    from confluent_kafka import Consumer, Producer, TopicPartition as ConfluentTopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    broker = fresh_broker.start()
    topic = unique("killed")
    admin = AdminClient({"bootstrap.servers": broker.address})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    errors = []

    def report(error, message):
        if error is not None:
            errors.append(str(error))

    producer = Producer({"bootstrap.servers": broker.address, "enable.idempotence": True, "linger.ms": 0,
                         "message.timeout.ms": 60000, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500})
    for i in range(600):
        producer.produce(topic, b"m-%d" % i, key=b"conversation-%d" % (i % 7), partition=i % 2, on_delivery=report)
        if i % 50 == 49:
            producer.flush(30)
    assert producer.flush(30) == 0 and errors == []

    broker.stop(signal.SIGKILL)
    broker.start()
    log = open(broker.log_path, "rb").read().decode(errors="replace")
    rebuilt = re.findall(r"recorded (\d+) batches the segments held beyond RocksDB's entries", log)
    assert rebuilt, "the kill left no index entry to rebuild; log: %s" % log[-3000:]

    for i in range(600, 1000):
        producer.produce(topic, b"m-%d" % i, key=b"conversation-%d" % (i % 7), partition=i % 2, on_delivery=report)
    assert producer.flush(60) == 0
    assert errors == [], "the producer's records after the restart were refused: %s" % errors[:5]

    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": unique("reader"), "enable.auto.commit": False})
    consumer.assign([ConfluentTopicPartition(topic, p, 0) for p in (0, 1)])
    seen = {0: [], 1: []}
    deadline = time.monotonic() + 60
    while len(seen[0]) + len(seen[1]) < 1000 and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        seen[message.partition()].append(message.value())
    consumer.close()
    for p in (0, 1):
        assert seen[p] == [b"m-%d" % i for i in range(p, 1000, 2)], "partition %d holds a record twice, out of order or not at all" % p
