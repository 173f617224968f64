"""Bad bytes on the wire: each case gets a closed connection (or the Kafka
error the protocol defines), the broker logs it and keeps serving everyone
else, and nothing already stored is lost."""
import os
import socket
import struct

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import kcat, unique


def send_raw(broker, payload, read=True):
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
        s.sendall(payload)
        if not read:
            return b""
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
        return data


def header(api_key, version, correlation=7, client=b"bad-input-test"):
    return struct.pack(">hhih", api_key, version, correlation, len(client)) + client


def frame(body):
    return struct.pack(">i", len(body)) + body


def stored_topic(broker):
    topic = unique("survivor")
    producer = KafkaProducer(bootstrap_servers=broker.address)
    for i in range(50):
        producer.send(topic, b"kept-%d" % i, partition=0)
    producer.flush()
    producer.close()
    return topic


def assert_still_serving(broker, topic):
    consumer = KafkaConsumer(bootstrap_servers=broker.address, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(topic, 0)])
    values = [m.value for m in consumer]
    consumer.close()
    assert values == [b"kept-%d" % i for i in range(50)]
    assert broker.alive()


def test_malformed_frames_close_only_their_connection(broker):
    topic = stored_topic(broker)
    cases = {
        "size zero": struct.pack(">i", 0),
        "negative size": struct.pack(">i", -5),
        "over the limit": struct.pack(">i", 200 << 20) + b"x" * 100,
        "unknown api key": frame(header(999, 0)),
        "unsupported version": frame(header(3, 99)),
        "garbage": b"\x00\x00\x00\x10" + bytes(range(16)),
        "truncated metadata body": frame(header(3, 1) + b"\x00\x00"),
        "lying array count": frame(header(3, 1) + struct.pack(">i", 1 << 30)),
    }
    for name, payload in cases.items():
        answer = send_raw(broker, payload)
        assert answer == b"", "%s got an answer: %r" % (name, answer[:64])
    assert_still_serving(broker, topic)
    log = broker.read_log()
    assert "closing connection" in log


def test_unsupported_api_versions_version_gets_error_35_in_a_v0_body(broker):
    answer = send_raw(broker, frame(header(18, 99, correlation=42)))
    size, correlation, error = struct.unpack(">iih", answer[:10])
    assert size == len(answer) - 4 and correlation == 42 and error == 35
    count = struct.unpack(">i", answer[10:14])[0]
    keys = [struct.unpack(">hhh", answer[14 + 6 * i:20 + 6 * i]) for i in range(count)]
    assert (18, 0, 4) in keys


def test_a_client_that_disconnects_mid_request_harms_nobody(broker):
    topic = stored_topic(broker)
    produce = frame(header(0, 3) + b"\xff\xff\x00\x01\x00\x00\x75\x30" + b"\x00" * 40)
    send_raw(broker, produce[: len(produce) // 2], read=False)
    assert_still_serving(broker, topic)


def test_a_thousand_connections_opened_and_dropped(broker):
    topic = stored_topic(broker)
    for _ in range(1000):
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        s.close()
    assert_still_serving(broker, topic)
    metadata = kcat("-b", broker.address, "-L")
    assert metadata.returncode == 0


def test_a_client_that_closes_its_side_gets_every_answer_then_the_close(broker):
    # Three pipelined ApiVersions requests, then the client's FIN: the broker
    # answers all three in order and closes the connection itself (the read
    # ends with EOF, not with the socket's timeout).
    requests = b"".join(frame(header(18, 0, correlation=c)) for c in (1, 2, 3))
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(requests)
        s.shutdown(socket.SHUT_WR)
        data, closed = b"", False
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                closed = True
                break
            data += chunk
    correlations = []
    while len(data) >= 8:
        size, correlation = struct.unpack(">ii", data[:8])
        correlations.append(correlation)
        data = data[4 + size:]
    assert correlations == [1, 2, 3]
    assert closed, "the broker kept the connection open after answering a half-closed client"


def offset_commit_v2(group, topic, partition, offsets, correlation=9):
    """An OffsetCommit v2 naming one partition once per offset given."""
    body = header(8, 2, correlation)
    body += struct.pack(">h", len(group)) + group + struct.pack(">i", -1) + struct.pack(">h", 0) + struct.pack(">q", -1)
    body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic + struct.pack(">i", len(offsets))
    body += b"".join(struct.pack(">iqh", partition, offset, -1) for offset in offsets)
    return frame(body)


def test_an_offset_commit_naming_one_partition_a_million_times_is_stored_once():
    # In a cluster a commit is a batch in __consumer_offsets, one record per
    # partition named, and a batch holds at most 2^20 records: 15 MB of one
    # partition named over and over stopped the coordinator. The last offset
    # named is the one kept, as it would be had they come one by one.
    from confluent_kafka import Consumer, TopicPartition as Place
    from test_cluster import Cluster
    cluster = Cluster().start()
    try:
        topic = "committed"
        cluster.create_topic(topic, partitions=1, replication=2)
        group = unique("many-commits")
        consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "enable.auto.commit": False})
        consumer.commit(offsets=[Place(topic, 0, 1)], asynchronous=False)
        payload = offset_commit_v2(group.encode(), topic.encode(), 0, list(range(1, (1 << 20) + 2)))
        codes = set()
        for broker in range(3):
            with socket.create_connection(("127.0.0.1", cluster.base + broker), timeout=60) as s:
                s.sendall(payload)
                size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
                answer = b""
                while len(answer) < size:
                    chunk = s.recv(size - len(answer))
                    assert chunk, "broker %d closed the connection" % (broker + 1)
                    answer += chunk
            # correlation, topics count, name, partitions count, then the first partition's code
            name_length = struct.unpack(">h", answer[8:10])[0]
            at = 10 + name_length + 4
            codes.add(struct.unpack(">ih", answer[at:at + 6])[1])
        assert 0 in codes, codes  # the coordinator took it; the others said NOT_COORDINATOR (16)
        assert codes <= {0, 16}, codes
        committed = consumer.committed([Place(topic, 0)], timeout=30)
        assert committed[0].offset == (1 << 20) + 1, committed
        consumer.close()
        for broker in (1, 2, 3):
            os.kill(cluster.pid(broker), 0)  # ProcessLookupError if it stopped
    finally:
        cluster.stop()
