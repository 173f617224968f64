"""Topic upkeep in a three-broker cluster on real etcd, with
confluent-kafka: a topic's own min.insync.replicas refusing acks=all,
configs and DeleteRecords reaching every replica (seen after the leader
dies), CreatePartitions through the controller, and a topic deleted while
a replica is down and made again under the same name: the returning
replica holds none of the old data, and the deleted topic's record leaves
etcd once every holder has deleted its replica (or its retention ends)."""
import base64
import json
import signal
import time
import urllib.request

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

from test_cluster import Cluster, java_hash


def produce(bootstrap, topic, values, partition=0, **settings):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 0, **settings})
    errors = []
    for value in values:
        producer.produce(topic, value=value, partition=partition, on_delivery=lambda e, m: errors.append(e))
        producer.flush(30)
    return errors


def earliest(address, topic, partition=0):
    consumer = Consumer({"bootstrap.servers": address, "group.id": "watermarks"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        consumer.close()


def read_from_start(bootstrap, topic, count, partition=0, timeout=30):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader-%f" % time.time(), "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, partition, -2)])
    values = []
    deadline = time.monotonic() + timeout
    while len(values) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
    consumer.close()
    return values


def etcd_keys(cluster, prefix):
    """The keys under the cluster's root + `prefix`, read from etcd itself."""
    root = "/postduif/postduif/" + prefix
    end = root[:-1] + chr(ord(root[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(root.encode()).decode(), "range_end": base64.b64encode(end.encode()).decode(), "keys_only": True})
    request = urllib.request.Request("http://127.0.0.1:%s/v3/kv/range" % cluster.env["ETCD_PORT"], data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        found = json.loads(answer.read()).get("kvs", [])
    return sorted(base64.b64decode(kv["key"]).decode()[len(root):] for kv in found)


def wait_until(condition, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_min_insync_configs_delete_records_and_create_partitions_in_a_cluster():
    cluster = Cluster().start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        topic = "upkeep-conf"
        cluster.create_topic(topic, partitions=1)
        assert produce(cluster.bootstrap, topic, [b"m%d" % i for i in range(10)]) == [None] * 10

        # DeleteRecords on the leader; the followers take the new start from their fetches.
        deleted = list(admin.delete_records([TopicPartition(topic, 0, 6)]).values())[0].result(timeout=30)
        assert deleted.low_watermark == 6
        # A topic's own min.insync.replicas of 3, set live.
        admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
            ConfigEntry("min.insync.replicas", "3", incremental_operation=AlterConfigOpType.SET)])])[
            ConfigResource(ConfigResource.Type.TOPIC, topic)].result(timeout=30)
        # One more acks=all record: acknowledged once every follower fetched
        # again after the fetch that carried the leader's new log start.
        assert produce(cluster.bootstrap, topic, [b"m10"]) == [None]
        leader = cluster.leader(topic, 0)
        cluster.signal(leader, signal.SIGKILL)
        survivor = cluster.leader(topic, 0, avoid=leader)
        address = "127.0.0.1:%d" % (cluster.base + survivor - 1)
        assert earliest(address, topic) == (6, 11), "the new leader's log starts where the old leader's was moved"
        assert read_from_start(address, topic, 5) == [b"m%d" % i for i in range(6, 11)]
        # Two replicas in sync, the topic asks three: acks=all is refused.
        deadline = time.monotonic() + 30
        while len(AdminClient({"bootstrap.servers": address}).list_topics(topic, timeout=5).topics[topic].partitions[0].isrs) > 2:
            assert time.monotonic() < deadline, "the dead broker stayed in the ISR"
            time.sleep(0.2)
        errors = produce(address, topic, [b"refused"], **{"message.timeout.ms": 8000, "retries": 0, "enable.idempotence": False})
        assert len(errors) == 1 and errors[0] is not None and errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, errors
        cluster.restart(leader)

        # CreatePartitions through the controller: the new partition gets a leader and takes writes.
        grown = "upkeep-grow"
        cluster.create_topic(grown, partitions=1)
        admin.create_partitions([NewPartitions(grown, 3)])[grown].result(timeout=30)
        for partition in (1, 2):
            cluster.leader(grown, partition)
        assert produce(cluster.bootstrap, grown, [b"new"], partition=2) == [None]
        assert read_from_start(cluster.bootstrap, grown, 1, partition=2) == [b"new"]
    finally:
        cluster.stop()


def test_a_topic_deleted_while_a_replica_is_down_and_made_again_never_mixes_with_the_old_data():
    cluster = Cluster().start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        topic = "upkeep-again"
        cluster.create_topic(topic, partitions=1)
        assert produce(cluster.bootstrap, topic, [b"old-%d" % i for i in range(20)]) == [None] * 20
        # The replica that goes down is the controller's broker: the hardest
        # case (the deletion waits for a new controller), every run.
        down = admin.list_topics(timeout=10).controller_id
        assert down in (1, 2, 3)
        cluster.signal(down, signal.SIGKILL)
        cluster.wait_exited(down)
        others = ",".join("127.0.0.1:%d" % (cluster.base + b - 1) for b in (1, 2, 3) if b != down)
        # librdkafka sends DeleteTopics to the controller Metadata names and
        # does not look again while it waits: ask once the controller is alive.
        deadline = time.monotonic() + 30
        while AdminClient({"bootstrap.servers": others}).list_topics(timeout=5).controller_id in (down, -1):
            assert time.monotonic() < deadline, "no controller took over from the stopped broker"
            time.sleep(0.2)
        admin = AdminClient({"bootstrap.servers": others})
        admin.delete_topics([topic])[topic].result(timeout=30)
        deadline = time.monotonic() + 30
        while topic in admin.list_topics(timeout=5).topics:
            assert time.monotonic() < deadline, "the deleted topic is still listed"
            time.sleep(0.2)
        # The record stays while the stopped holder has not deleted its replica;
        # the two others say theirs are gone.
        [record] = etcd_keys(cluster, "deleted-topics/")
        alive = sorted(str(b) for b in (1, 2, 3) if b != down)
        wait_until(lambda: etcd_keys(cluster, "deleted-topic-replicas/") == ["%s/%s" % (record, b) for b in alive],
                   "the live holders did not say their replicas are gone: %s" % etcd_keys(cluster, "deleted-topic-replicas/"))
        assert etcd_keys(cluster, "deleted-topics/") == [record]
        admin.create_topics([NewTopic(topic, 1, 2)])[topic].result(timeout=30)
        cluster.leader(topic, 0)
        assert produce(others, topic, [b"new-%d" % i for i in range(3)]) == [None] * 3
        cluster.restart(down)
        deadline = time.monotonic() + 30
        while "deleted a local replica" not in cluster.log(down):
            assert time.monotonic() < deadline, "the returning broker kept the deleted topic's replica:\n" + cluster.log(down)[-3000:]
            time.sleep(0.2)
        # The new topic lives on the two others only; the old replica is gone,
        # and what everyone reads is the new data alone.
        assert read_from_start(cluster.bootstrap, topic, 3) == [b"new-%d" % i for i in range(3)]
        assert earliest(cluster.bootstrap, topic) == (0, 3)
        # Every holder has deleted its replica: the record and their words are gone.
        wait_until(lambda: etcd_keys(cluster, "deleted-topics/") == [] and etcd_keys(cluster, "deleted-topic-replicas/") == [],
                   "the deleted topic's record stayed: %s %s" % (etcd_keys(cluster, "deleted-topics/"), etcd_keys(cluster, "deleted-topic-replicas/")))
    finally:
        cluster.stop()


def test_a_deleted_topics_record_leaves_etcd_after_its_retention_when_a_holder_stays_away():
    cluster = Cluster(broker_args="--deleted-topic-retention-ms 4000").start()
    try:
        topic = "upkeep-away"
        cluster.create_topic(topic, partitions=1)
        assert produce(cluster.bootstrap, topic, [b"m"]) == [None]
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        away = next(b for b in (1, 2, 3) if b != admin.list_topics(timeout=10).controller_id)
        cluster.signal(away, signal.SIGKILL)
        cluster.wait_exited(away)
        others = ",".join("127.0.0.1:%d" % (cluster.base + b - 1) for b in (1, 2, 3) if b != away)
        survivors = AdminClient({"bootstrap.servers": others})
        survivors.delete_topics([topic])[topic].result(timeout=30)
        assert len(etcd_keys(cluster, "deleted-topics/")) == 1
        # The holder that stays away never says its replica is gone; the
        # record's lease ends and etcd removes it with the others' words.
        wait_until(lambda: etcd_keys(cluster, "deleted-topics/") == [] and etcd_keys(cluster, "deleted-topic-replicas/") == [],
                   "the record outlived its retention: %s" % etcd_keys(cluster, "deleted-topics/"))
    finally:
        cluster.stop()


def test_a_group_deleted_in_a_cluster_loses_its_offsets_on_every_coordinator():
    """DeleteGroups in a cluster writes tombstones to __consumer_offsets: the
    offsets are gone, and stay gone when another broker becomes the
    group's coordinator (it reads the partition again)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    cluster = Cluster().start()
    try:
        topic, group = "upkeep-groups", "upkeep-group"
        cluster.create_topic(topic, partitions=1)
        assert produce(cluster.bootstrap, topic, [b"m%d" % i for i in range(5)]) == [None] * 5
        consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([topic])
        seen, deadline = 0, time.monotonic() + 60
        while seen < 5 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen += 1
        consumer.commit(asynchronous=False)
        consumer.close()
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})

        def committed():
            request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])]
            return list(admin.list_consumer_group_offsets(request).values())[0].result(timeout=30).topic_partitions[0].offset

        assert committed() == 5
        list(admin.delete_consumer_groups([group]).values())[0].result(timeout=30)
        assert committed() < 0
        # The coordinator's broker dies; the next one reads the tombstones too.
        coordinator = cluster.leader("__consumer_offsets", (java_hash(group) & 0x7FFFFFFF) % 10)
        cluster.signal(coordinator, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            try:
                offset = committed()
                break
            except Exception:  # no coordinator yet: the group's partition is changing leaders
                assert time.monotonic() < deadline, "no coordinator answered"
                time.sleep(0.5)
        assert offset < 0, "the deleted group's offsets came back on the new coordinator"
    finally:
        cluster.stop()
