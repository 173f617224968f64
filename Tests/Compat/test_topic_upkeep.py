"""Topic and group upkeep with the admin clients people use:
DeleteRecords, CreatePartitions, DeleteGroups, OffsetDelete,
DescribeLogDirs, DescribeCluster and DescribeProducers, through
confluent-kafka (librdkafka) and kafka-python."""
import shutil
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kafka.admin import KafkaAdminClient
from kafka.structs import TopicPartition as KafkaTopicPartition

from conftest import BrokerProcess, unique


@pytest.fixture(scope="module")
def node():
    process = BrokerProcess().start()
    yield process
    assert process.stop() == 0
    shutil.rmtree(process.data_dir, ignore_errors=True)


def make_topic(address, partitions=1, messages=10):
    admin = AdminClient({"bootstrap.servers": address})
    topic = unique("upkeep")
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": address, "enable.idempotence": True, "linger.ms": 0})
    for i in range(messages):
        producer.produce(topic, key=b"k%d" % i, value=b"m%d" % i, partition=0)
        producer.flush(10)  # one batch per message, so a deletion point falls between batches
    return admin, topic


def consume(address, topic, group, count, partition=None, timeout=30):
    consumer = Consumer({"bootstrap.servers": address, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    if partition is None:
        consumer.subscribe([topic])
    else:
        consumer.assign([TopicPartition(topic, partition, -2)])
    values = []
    deadline = time.monotonic() + timeout
    while len(values) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
    return consumer, values


def test_delete_records_moves_the_start_for_confluent_kafka_and_kafka_python(node):
    admin, topic = make_topic(node.address)
    result = admin.delete_records([TopicPartition(topic, 0, 4)])
    deleted = list(result.values())[0].result(timeout=30)
    assert deleted.low_watermark == 4
    consumer, values = consume(node.address, topic, unique("g"), 6, partition=0)
    assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (4, 10)
    consumer.close()
    assert values == [b"m%d" % i for i in range(4, 10)]
    python_admin = KafkaAdminClient(bootstrap_servers=node.address)
    try:
        answer = python_admin.delete_records({KafkaTopicPartition(topic, 0): 7})
        assert list(answer.values())[0]["low_watermark"] == 7
        # Beyond the high watermark: OFFSET_OUT_OF_RANGE, nothing deleted.
        with pytest.raises(Exception) as refused:
            python_admin.delete_records({KafkaTopicPartition(topic, 0): 50})
        assert "OffsetOutOfRange" in repr(refused.value) or "1" in str(refused.value)
    finally:
        python_admin.close()


def test_create_partitions_grows_a_topic_and_keeps_its_records(node):
    admin, topic = make_topic(node.address)
    admin.create_partitions([NewPartitions(topic, 3)])[topic].result(timeout=30)
    metadata = admin.list_topics(topic, timeout=10)
    assert sorted(metadata.topics[topic].partitions) == [0, 1, 2]
    producer = Producer({"bootstrap.servers": node.address})
    producer.produce(topic, value=b"in-the-new-one", partition=2)
    producer.flush(10)
    consumer, values = consume(node.address, topic, unique("g"), 1, partition=2)
    consumer.close()
    assert values == [b"in-the-new-one"]
    consumer, values = consume(node.address, topic, unique("g"), 10, partition=0)
    consumer.close()
    assert values == [b"m%d" % i for i in range(10)]
    # A topic never shrinks.
    with pytest.raises(Exception) as refused:
        admin.create_partitions([NewPartitions(topic, 2)])[topic].result(timeout=30)
    assert "INVALID_PARTITIONS" in str(refused.value)
    # A topic with the conversation index keeps its count: a conversation's
    # records would split across partitions.
    indexed = unique("rooms")
    admin.create_topics([NewTopic(indexed, 2, 1, config={"postduif.conversation.index": "true"})])[indexed].result(timeout=30)
    with pytest.raises(Exception) as refused:
        admin.create_partitions([NewPartitions(indexed, 4)])[indexed].result(timeout=30)
    assert "POLICY_VIOLATION" in str(refused.value)


def test_delete_groups_and_offset_delete(node):
    _, topic = make_topic(node.address)
    group = unique("group")
    consumer, values = consume(node.address, topic, group, 10)
    assert len(values) == 10
    consumer.commit(asynchronous=False)
    python_admin = KafkaAdminClient(bootstrap_servers=node.address)
    try:
        # A group with a member can be neither deleted nor lose a subscribed topic's offsets.
        assert python_admin.delete_groups([group])[group] != "OK"
        consumer.close()
        assert python_admin.list_group_offsets(group)[group][KafkaTopicPartition(topic, 0)].offset == 10
        python_admin.delete_group_offsets(group, [KafkaTopicPartition(topic, 0)])
        assert KafkaTopicPartition(topic, 0) not in python_admin.list_group_offsets(group).get(group, {})
        confluent = AdminClient({"bootstrap.servers": node.address})
        # Committed again, then the whole group goes (confluent-kafka's DeleteGroups).
        again, _ = consume(node.address, topic, group, 10)
        again.commit(asynchronous=False)
        again.close()
        list(confluent.delete_consumer_groups([group]).values())[0].result(timeout=30)
        # Deleted: a second deletion finds no such group, as for one never seen.
        never = unique("never-seen")
        assert python_admin.delete_groups([group, never]) == {group: "GroupIdNotFoundError", never: "GroupIdNotFoundError"}
        assert python_admin.list_group_offsets(group).get(group, {}) == {}
    finally:
        python_admin.close()


def test_describe_log_dirs_cluster_and_producers(node):
    admin, topic = make_topic(node.address)
    python_admin = KafkaAdminClient(bootstrap_servers=node.address)
    try:
        dirs = python_admin.describe_log_dirs()
        partitions = {(t["name"], p["partition_index"]): p for d in dirs[0]["log_dirs"] for t in d["topics"] for p in t["partitions"]}
        assert partitions[(topic, 0)]["partition_size"] > 0 and partitions[(topic, 0)]["offset_lag"] == 0
        assert dirs[0]["log_dirs"][0]["total_bytes"] > 0
        producers = python_admin.describe_producers([KafkaTopicPartition(topic, 0)])
        states = list(producers.values())[0].active_producers
        assert len(states) == 1 and states[0].last_sequence == 9
        cluster = python_admin.describe_cluster()
        assert cluster["controller_id"] == 1 and [b["port"] for b in cluster["brokers"]] == [node.port]
    finally:
        python_admin.close()
    described = admin.describe_cluster().result(timeout=30)
    assert described.controller.id == 1 and [n.port for n in described.nodes] == [node.port]
    assert described.cluster_id
