"""A broker restart mid-stream: an idempotent producer that keeps sending
across the restart leaves every message exactly once."""
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
