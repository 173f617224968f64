"""Topic configs changed live and retention applied, with the admin
clients of confluent-kafka (librdkafka) and kafka-python: DescribeConfigs
with sources and synonyms, AlterConfigs, IncrementalAlterConfigs, the
cluster's dynamic defaults (broker ""), refusals with INVALID_CONFIG, and
retention moving the log start (ListOffsets earliest) while a consumer
from the start reads only what is kept."""
import shutil
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic)
from kafka.admin import ConfigResource as KPConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient

from conftest import BrokerProcess, unique


def wait(futures):
    return {key: future.result(timeout=30) for key, future in futures.items()}


def describe(admin, topic):
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return wait(admin.describe_configs([resource]))[resource]


@pytest.fixture(scope="module")
def node():
    process = BrokerProcess(extra_args=["--log-retention-check-interval-ms", "100", "--log-retention-bytes", "10737418240"]).start()
    yield process
    assert process.stop() == 0
    shutil.rmtree(process.data_dir, ignore_errors=True)


def test_describe_alter_and_incremental_alter_with_confluent_kafka(node):
    admin = AdminClient({"bootstrap.servers": node.address})
    topic = unique("configs")
    wait(admin.create_topics([NewTopic(topic, 2, 1, config={"retention.ms": "3600000", "cleanup.policy": "delete"})]))
    configs = describe(admin, topic)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert [s.name for s in configs["retention.ms"].synonyms.values()][:2] == ["retention.ms", "log.retention.ms"]
    assert configs["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    # The flag given at start is the static broker layer.
    assert configs["retention.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert configs["min.insync.replicas"].value == "1"

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("min.insync.replicas", "2", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)])
    wait(admin.incremental_alter_configs([resource]))
    configs = describe(admin, topic)
    assert configs["retention.ms"].value == "7200000"
    assert configs["min.insync.replicas"].value == "2"
    assert configs["cleanup.policy"].value == "delete,compact"

    # DELETE returns a config to its default.
    wait(admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("min.insync.replicas", None, incremental_operation=AlterConfigOpType.DELETE)])]))
    assert describe(admin, topic)["min.insync.replicas"].source == ConfigSource.DEFAULT_CONFIG.value

    # Refusals, each with INVALID_CONFIG and nothing changed.
    for name, value in (("no.such.config", "1"), ("retention.ms", "soon"), ("postduif.conversation.index", "true"), ("segment.bytes", "10")):
        with pytest.raises(KafkaException) as refused:
            wait(admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
                ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])]))
        assert refused.value.args[0].code() == 40, (name, refused.value)
    assert describe(admin, topic)["retention.ms"].value == "7200000"


def test_broker_configs_are_defaults_for_topics_without_their_own_and_survive_a_restart():
    """A broker's own dynamic configs (its id, as kafka-python and
    confluent-kafka send them) over the cluster's defaults (broker "", as
    kafka-configs --entity-default sends it: here kafka-python's own request
    class on a raw connection, since both admin clients refuse the empty name)."""
    from kafka.protocol.admin import IncrementalAlterConfigsRequest

    from test_golden_responses import exchange

    process = BrokerProcess().start()
    try:
        admin = AdminClient({"bootstrap.servers": process.address})
        plain, own = unique("plain"), unique("own")
        wait(admin.create_topics([NewTopic(plain, 1, 1), NewTopic(own, 1, 1, config={"retention.ms": "1000000"})]))
        python_admin = KafkaAdminClient(bootstrap_servers=process.address)
        python_admin.alter_configs([KPConfigResource(ConfigResourceType.BROKER, "1", configs={"log.retention.ms": "500000"})])
        python_admin.close()
        assert describe(admin, plain)["retention.ms"].value == "500000"
        assert describe(admin, plain)["retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
        assert describe(admin, own)["retention.ms"].value == "1000000"

        I = IncrementalAlterConfigsRequest
        request = I[1](resources=[I.AlterConfigsResource(resource_type=4, resource_name="", configs=[
            I.AlterConfigsResource.AlterableConfig(name="log.retention.ms", config_operation=0, value="400000")])], validate_only=False)
        assert [r.error_code for r in exchange(process, request, 1).responses] == [0]
        broker = ConfigResource(ConfigResource.Type.BROKER, "1")
        # (confluent-kafka keeps synonyms by name, so a broker setting's chain
        # collapses to one entry; the golden test checks the whole chain's bytes.)
        entry = wait(admin.describe_configs([broker]))[broker]["log.retention.ms"]
        assert (entry.value, entry.source) == ("500000", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
        assert describe(admin, plain)["retention.ms"].value == "500000", "the broker's own setting comes before the cluster default"
        wait(admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
            ConfigEntry("log.retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])]))
        assert describe(admin, plain)["retention.ms"].value == "400000"
        assert describe(admin, plain)["retention.ms"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value

        # Not every broker setting is dynamic.
        with pytest.raises(KafkaException) as refused:
            wait(admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
                ConfigEntry("log.dirs", "/tmp", incremental_operation=AlterConfigOpType.SET)])]))
        assert refused.value.args[0].code() == 40
        assert process.stop() == 0
        process.start()
        admin = AdminClient({"bootstrap.servers": process.address})
        assert describe(admin, plain)["retention.ms"].value == "400000"
        assert describe(admin, own)["retention.ms"].value == "1000000"
    finally:
        process.stop()
        shutil.rmtree(process.data_dir, ignore_errors=True)


def test_alter_configs_replaces_every_config_of_the_resource(node):
    """Kafka's (non-incremental) AlterConfigs: the configs named are the
    topic's whole set; the others return to their defaults. Sent as
    kafka-python's own AlterConfigs v1 request on a raw connection, since
    its admin client fills in the configs a request leaves out."""
    from kafka.protocol.admin import AlterConfigsRequest

    from test_golden_responses import exchange

    admin = AdminClient({"bootstrap.servers": node.address})
    topic = unique("replace")
    wait(admin.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "3600000", "max.message.bytes": "500000"})]))
    request = AlterConfigsRequest[1](resources=[AlterConfigsRequest.AlterConfigsResource(resource_type=2, resource_name=topic, configs=[
        AlterConfigsRequest.AlterConfigsResource.AlterableConfig(name="retention.bytes", value="1048576")])], validate_only=False)
    response = exchange(node, request, 1)
    assert [r.error_code for r in response.responses] == [0], response
    configs = describe(admin, topic)
    assert configs["retention.bytes"].value == "1048576"
    assert configs["retention.ms"].value == "-1"
    assert configs["max.message.bytes"].value == "1048576"
    # validate_only changes nothing.
    request = AlterConfigsRequest[1](resources=[AlterConfigsRequest.AlterConfigsResource(resource_type=2, resource_name=topic, configs=[
        AlterConfigsRequest.AlterConfigsResource.AlterableConfig(name="retention.bytes", value="5")])], validate_only=True)
    assert [r.error_code for r in exchange(node, request, 1).responses] == [0]
    assert describe(admin, topic)["retention.bytes"].value == "1048576"


def test_kafka_python_admin_alters_and_describes_topic_configs(node):
    admin = KafkaAdminClient(bootstrap_servers=node.address)
    try:
        confluent = AdminClient({"bootstrap.servers": node.address})
        topic = unique("kp-configs")
        wait(confluent.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "3600000"})]))
        admin.alter_configs([KPConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.bytes": "1048576"})])
        configs = describe(confluent, topic)
        assert configs["retention.bytes"].value == "1048576"
        assert configs["retention.ms"].value == "3600000"
        described = str(admin.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, topic)]))
        assert "retention.bytes" in described and "1048576" in described
    finally:
        admin.close()


def test_retention_moves_the_log_start_and_a_consumer_from_the_start_reads_only_what_is_kept(node):
    admin = AdminClient({"bootstrap.servers": node.address})
    topic = unique("retention")
    wait(admin.create_topics([NewTopic(topic, 1, 1, config={"segment.ms": "300"})]))
    producer = Producer({"bootstrap.servers": node.address, "linger.ms": 0})
    old = int(time.time() * 1000) - 3_600_000
    for i in range(50):
        producer.produce(topic, key=b"k", value=b"old-%d" % i, timestamp=old + i)
    producer.flush(30)
    consumer = Consumer({"bootstrap.servers": node.address, "group.id": unique("g"), "enable.auto.commit": False})
    partition = TopicPartition(topic, 0)
    assert consumer.get_watermark_offsets(partition, timeout=10) == (0, 50)
    # Retention drops whole batches by their own timestamps, whatever segment
    # holds them: the new records may share the old ones' segment.
    for i in range(10):
        producer.produce(topic, key=b"k", value=b"new-%d" % i)
    producer.flush(30)
    # Retention of an hour, set live: the old records go within a few passes.
    wait(admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "1800000", incremental_operation=AlterConfigOpType.SET)])]))
    deadline = time.monotonic() + 15
    while consumer.get_watermark_offsets(partition, timeout=10)[0] == 0:
        assert time.monotonic() < deadline, "retention did not move the log start"
        time.sleep(0.1)
    assert consumer.get_watermark_offsets(partition, timeout=10) == (50, 60)
    consumer.assign([TopicPartition(topic, 0, 0)])  # below the start: auto.offset.reset (latest) would skip; ask earliest
    consumer.close()
    reader = Consumer({"bootstrap.servers": node.address, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    reader.subscribe([topic])
    values = []
    deadline = time.monotonic() + 30
    while len(values) < 10 and time.monotonic() < deadline:
        message = reader.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
    reader.close()
    assert values == [b"new-%d" % i for i in range(10)]
    with open(node.log_path, errors="replace") as log:
        assert "retention removed old records" in log.read()


def test_log_append_time_stamps_the_brokers_clock_for_consumers(node):
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

    admin = AdminClient({"bootstrap.servers": node.address})
    topic = unique("append-time")
    wait(admin.create_topics([NewTopic(topic, 1, 1, config={"message.timestamp.type": "LogAppendTime"})]))
    producer = Producer({"bootstrap.servers": node.address})
    before = int(time.time() * 1000)
    producer.produce(topic, value=b"stamped", timestamp=1_000_000_000_000)
    producer.flush(30)
    after = int(time.time() * 1000)
    consumer = Consumer({"bootstrap.servers": node.address, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    message = None
    while message is None and time.monotonic() < deadline:
        polled = consumer.poll(0.5)
        if polled is not None and polled.error() is None:
            message = polled
    consumer.close()
    kind, stamp = message.timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert before <= stamp <= after, (before, stamp, after)
