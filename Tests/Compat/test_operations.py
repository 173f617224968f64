"""The operations port: /health, /ready and Prometheus /metrics with request
counts and latencies per API, bytes in and out, connections and partition
offsets, as an operator's scraper sees them."""
import re
import urllib.request

from kafka import KafkaProducer

from conftest import unique


def get(broker, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (broker.http_port, path), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(text, name, **labels):
    pattern = re.escape(name) + r"\{([^}]*)\} ([0-9.e+-]+)|^" + re.escape(name) + r" ([0-9.e+-]+)"
    total = None
    for match in re.finditer(pattern, text, re.M):
        found_labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found_labels.get(k) == v for k, v in labels.items()):
            total = (total or 0) + float(match.group(2) or match.group(3))
    return total


def test_health_and_ready(broker):
    assert get(broker, "/health") == (200, "ok\n")
    assert get(broker, "/ready") == (200, "ready\n")
    assert get(broker, "/nope")[0] == 404


def test_metrics_count_requests_bytes_connections_and_offsets(broker):
    topic = unique("metrics")
    producer = KafkaProducer(bootstrap_servers=broker.address)
    for i in range(20):
        producer.send(topic, b"m%d" % i, partition=0)
    producer.flush()
    status, text = get(broker, "/metrics")
    assert status == 200
    assert metric(text, "postduif_requests_total", api="Produce") >= 1
    assert metric(text, "postduif_requests_total", api="Metadata") >= 1
    assert metric(text, "postduif_request_duration_seconds_count", api="Produce") >= 1
    assert metric(text, "postduif_bytes_in_total") > 0
    assert metric(text, "postduif_bytes_out_total") > 0
    assert metric(text, "postduif_connections") >= 1
    assert metric(text, "postduif_partition_log_end_offset", topic=topic, partition="0") == 20
    assert metric(text, "postduif_partition_high_watermark", topic=topic, partition="0") == 20
    producer.close()


def test_consumer_group_lag_follows_commits_and_new_records(broker):
    """The lag an operator alerts on: the high watermark less the group's
    committed offset, per partition, measured at each scrape (so a group
    that stopped committing shows its lag growing)."""
    from kafka import KafkaConsumer, TopicPartition

    topic, group = unique("lagging"), unique("lag-group")
    producer = KafkaProducer(bootstrap_servers=broker.address)
    for i in range(30):
        producer.send(topic, b"m%d" % i, partition=0)
    producer.flush()
    consumer = KafkaConsumer(bootstrap_servers=broker.address, group_id=group, enable_auto_commit=False)
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek(partition, 10)
    consumer.commit({partition: __import__("kafka").OffsetAndMetadata(10, None, -1)})
    assert metric(get(broker, "/metrics")[1], "postduif_consumer_group_lag", group=group, topic=topic, partition="0") == 20
    # The group stops committing; new records grow its lag at the next scrape.
    for i in range(5):
        producer.send(topic, b"n%d" % i, partition=0)
    producer.flush()
    assert metric(get(broker, "/metrics")[1], "postduif_consumer_group_lag", group=group, topic=topic, partition="0") == 25
    consumer.close()
    producer.close()
