"""kafka-python 3.0 with its defaults: an idempotent producer (its default),
the admin client, and a consumer without a group (groups arrive later)."""
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from conftest import unique


def test_admin_producer_and_consumer_with_defaults(broker):
    topic = unique("kp")
    admin = KafkaAdminClient(bootstrap_servers=broker.address)
    result = admin.create_topics([NewTopic(topic, 2, 1)])
    assert all(t["error_code"] == 0 for t in result.to_object()["topics"]) if hasattr(result, "to_object") else True
    producer = KafkaProducer(bootstrap_servers=broker.address)
    futures = [producer.send(topic, b"value-%d" % i, key=b"key-%d" % (i % 7)) for i in range(300)]
    producer.flush()
    metadata = [f.get(10) for f in futures]
    assert sum(1 for m in metadata if m.offset >= 0) == 300
    producer.close()

    fast = KafkaProducer(bootstrap_servers=broker.address, acks=0, enable_idempotence=False)
    for i in range(100):
        fast.send(topic, b"fast-%d" % i, partition=0)
    fast.flush()
    fast.close()

    partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer = KafkaConsumer(bootstrap_servers=broker.address, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.assign(partitions)
    ends = consumer.end_offsets(partitions)
    assert sum(ends.values()) == 400
    values = [m.value for m in consumer]
    assert len(values) == 400
    assert sorted(v for v in values if v.startswith(b"value-")) == sorted(b"value-%d" % i for i in range(300))
    consumer.close()
    admin.close()


def test_offsets_for_times_finds_the_first_later_record(broker):
    topic = unique("kp-times")
    producer = KafkaProducer(bootstrap_servers=broker.address)
    base = int(time.time() * 1000)
    for i in range(10):
        producer.send(topic, b"%d" % i, partition=0, timestamp_ms=base + i * 10)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.address)
    found = consumer.offsets_for_times({TopicPartition(topic, 0): base + 45})
    assert found[TopicPartition(topic, 0)].offset == 5
    assert found[TopicPartition(topic, 0)].timestamp == base + 50
    late = consumer.offsets_for_times({TopicPartition(topic, 0): base + 10_000})
    assert late[TopicPartition(topic, 0)] is None
    consumer.close()
