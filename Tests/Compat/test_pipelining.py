"""Pipelined requests on one connection: a client may send many Produce
requests before reading an answer. The broker writes each in turn while the
earlier ones wait for their sync, and must still append them in order and
answer them in order, with any other request answered after them and
seeing what they wrote. Raw frames, so the pipelining is certain."""
import socket
import struct

from kafka import KafkaConsumer, TopicPartition
from kafka.record.default_records import DefaultRecordBatchBuilder

from conftest import unique

PRODUCE_VERSION = 7
BATCH_RECORDS = 10
OUT_OF_ORDER_SEQUENCE_NUMBER = 45


def string(value):
    data = value.encode()
    return struct.pack(">h", len(data)) + data


def request(api_key, version, correlation, body):
    message = struct.pack(">hhi", api_key, version, correlation) + string("pipelining-test") + body
    return struct.pack(">i", len(message)) + message


def batch(first_value, producer_id, sequence):
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False,
        producer_id=producer_id, producer_epoch=0, base_sequence=sequence, batch_size=1 << 20)
    for i in range(BATCH_RECORDS):
        builder.append(i, timestamp=None, key=b"conversation-%d" % (i % 3), value=b"m-%d" % (first_value + i), headers=[])
    return bytes(builder.build())


def produce(topic, records, correlation):
    body = struct.pack(">hhi", -1, -1, 10_000)  # no transactional id, acks=all, timeout
    body += struct.pack(">i", 1) + string(topic) + struct.pack(">i", 1)
    body += struct.pack(">ii", 0, len(records)) + records
    return request(0, PRODUCE_VERSION, correlation, body)


def metadata(topic, correlation):
    body = struct.pack(">i", 1) + string(topic) + struct.pack(">?", True)
    return request(3, 4, correlation, body)


def init_producer_id(correlation):
    return request(22, 1, correlation, struct.pack(">hi", -1, 60_000))


class Connection:
    def __init__(self, broker):
        self.socket = socket.create_connection(("127.0.0.1", broker.port), timeout=20)
        self.buffer = b""

    def read_exactly(self, count):
        while len(self.buffer) < count:
            chunk = self.socket.recv(1 << 16)
            assert chunk, "the broker closed the connection"
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def response(self):
        (size,) = struct.unpack(">i", self.read_exactly(4))
        body = self.read_exactly(size)
        (correlation,) = struct.unpack(">i", body[:4])
        return correlation, body[4:]

    def close(self):
        self.socket.close()


def parse_produce(body):
    """Produce v7 answer for one topic with one partition: (error, base offset)."""
    offset = 4  # topic count
    (name_length,) = struct.unpack_from(">h", body, offset)
    offset += 2 + name_length + 4  # name, partition count
    _, error, base_offset = struct.unpack_from(">ihq", body, offset)
    return error, base_offset


def producer_id(connection):
    connection.socket.sendall(init_producer_id(1))
    correlation, body = connection.response()
    assert correlation == 1
    _, error, pid, _ = struct.unpack_from(">ihqh", body)
    assert error == 0
    return pid


def test_pipelined_idempotent_produce_is_appended_and_answered_in_order(broker):
    topic = unique("pipelined")
    connection = Connection(broker)
    try:
        connection.socket.sendall(metadata(topic, 0))  # auto-creates the topic
        assert connection.response()[0] == 0
        pid = producer_id(connection)

        requests = 30
        frames = b"".join(
            produce(topic, batch(n * BATCH_RECORDS, pid, n * BATCH_RECORDS), correlation=100 + n)
            for n in range(requests))
        # Every Produce, then a Metadata, in one write: nothing is read until all are sent.
        connection.socket.sendall(frames + metadata(topic, 100 + requests))
        answers = [connection.response() for _ in range(requests + 1)]
    finally:
        connection.close()

    assert [correlation for correlation, _ in answers] == list(range(100, 100 + requests + 1))
    produced = [parse_produce(body) for _, body in answers[:requests]]
    assert produced == [(0, n * BATCH_RECORDS) for n in range(requests)]

    consumer = KafkaConsumer(bootstrap_servers=broker.address, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(topic, 0)])
    values = [m.value for m in consumer]
    consumer.close()
    assert values == [b"m-%d" % i for i in range(requests * BATCH_RECORDS)]


def test_a_sequence_gap_inside_a_pipeline_is_refused_alone(broker):
    topic = unique("pipelined-gap")
    connection = Connection(broker)
    try:
        connection.socket.sendall(metadata(topic, 0))
        assert connection.response()[0] == 0
        pid = producer_id(connection)
        sequences = [0, 10, 30, 20, 30]  # the third skips a batch; 20 and 30 then follow on
        frames = b"".join(
            produce(topic, batch(sequence, pid, sequence), correlation=200 + n)
            for n, sequence in enumerate(sequences))
        connection.socket.sendall(frames)
        answers = [connection.response() for _ in sequences]
    finally:
        connection.close()

    assert [correlation for correlation, _ in answers] == [200 + n for n in range(len(sequences))]
    errors = [parse_produce(body)[0] for _, body in answers]
    assert errors == [0, 0, OUT_OF_ORDER_SEQUENCE_NUMBER, 0, 0]
    assert [parse_produce(body)[1] for _, body in answers][3:] == [20, 30]
