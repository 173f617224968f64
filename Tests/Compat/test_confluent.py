"""confluent-kafka 2.16 (its own librdkafka): admin, an idempotent LZ4
producer, watermarks and offsets by time. The consumer-group flows arrive
with the group coordinator."""
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import unique


def test_admin_create_and_delete_topics(broker):
    admin = AdminClient({"bootstrap.servers": broker.address})
    topic = unique("ck-admin")
    for future in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        assert future.result() is None
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[topic].partitions) == 3
    duplicate = admin.create_topics([NewTopic(topic, 3, 1)])[topic]
    try:
        duplicate.result()
        raise AssertionError("creating an existing topic succeeded")
    except KafkaException as error:
        assert error.args[0].code() == 36  # TOPIC_ALREADY_EXISTS
    bad = admin.create_topics([NewTopic(unique("ck-rf"), 1, 3)])
    for future in bad.values():
        try:
            future.result()
            raise AssertionError("replication factor 3 accepted by a single node")
        except KafkaException as error:
            assert error.args[0].code() == 38  # INVALID_REPLICATION_FACTOR
    for future in admin.delete_topics([topic]).values():
        assert future.result() is None


def test_idempotent_lz4_producer_then_watermarks_and_times(broker):
    admin = AdminClient({"bootstrap.servers": broker.address})
    topic = unique("ck-produce")
    for future in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": broker.address, "enable.idempotence": True, "compression.type": "lz4",
                         "linger.ms": 5})
    delivered = []
    start_ms = int(time.time() * 1000)
    for i in range(10_000):
        producer.produce(topic, key=b"conversation-%d" % (i % 100), value=b"x" * 100,
                         on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(60) == 0
    assert len(delivered) == 10_000 and all(err is None for err in delivered)
    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": unique("ck-g")})
    total = 0
    for partition in range(3):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        assert low == 0
        total += high
    assert total == 10_000
    found = consumer.offsets_for_times([TopicPartition(topic, 0, start_ms)], timeout=10)
    assert found[0].offset == 0 and found[0].error is None
    consumer.close()


def test_describe_configs_shows_topic_settings(broker):
    admin = AdminClient({"bootstrap.servers": broker.address})
    topic = unique("ck-configs")
    created = admin.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "60000", "postduif.conversation.index": "true"})])
    for future in created.values():
        future.result()
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["retention.ms"].value == "60000"
    assert configs["postduif.conversation.index"].value == "true"
    assert configs["cleanup.policy"].value == "delete"
    unknown = admin.create_topics([NewTopic(unique("ck-bad-config"), 1, 1, config={"no.such.config": "1"})])
    for future in unknown.values():
        try:
            future.result()
            raise AssertionError("an unknown topic config was accepted")
        except KafkaException as error:
            assert error.args[0].code() == 40  # INVALID_CONFIG
