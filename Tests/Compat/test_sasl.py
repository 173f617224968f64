"""SASL (off by default): PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 with users
made by `postduif user add`, against kcat, kafka-python and confluent-kafka.
Right passwords get in, wrong ones are refused, and nothing but ApiVersions
and the SASL handshake is answered before authentication."""
import shutil
import socket
import subprocess

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from conftest import BINARY, BrokerProcess, kcat, unique


@pytest.fixture(scope="module")
def sasl_broker():
    process = BrokerProcess(extra_args=["--sasl", "true"])
    added = subprocess.run([BINARY, "user", "add", "alice", "--password-stdin", "--data", process.data_dir],
                           input=b"wonderland\n", capture_output=True)
    assert added.returncode == 0, added.stderr
    process.start()
    yield process
    assert process.stop() == 0
    shutil.rmtree(process.data_dir, ignore_errors=True)


def kcat_sasl(broker, mechanism, password, *args, input=None):
    return kcat("-b", broker.address, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=" + mechanism,
                "-X", "sasl.username=alice", "-X", "sasl.password=" + password, *args, input=input, timeout=30)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kcat_with_the_right_password_gets_in_and_the_wrong_one_does_not(sasl_broker, mechanism):
    good = kcat_sasl(sasl_broker, mechanism, "wonderland", "-L")
    assert good.returncode == 0 and b"1 brokers" in good.stdout, good.stderr.decode()
    bad = kcat_sasl(sasl_broker, mechanism, "looking-glass", "-L", "-m", "2")
    assert bad.returncode != 0
    assert b"Authentication failed" in bad.stderr or b"authentication failed" in bad.stderr.lower()
    assert "authentication failed" in sasl_broker.read_log()


def test_kcat_produces_and_consumes_after_scram(sasl_broker):
    topic = unique("sasl")
    produced = kcat_sasl(sasl_broker, "SCRAM-SHA-256", "wonderland", "-P", "-t", topic, "-p", "0", input=b"a\nb\nc\n")
    assert produced.returncode == 0, produced.stderr.decode()
    consumed = kcat_sasl(sasl_broker, "SCRAM-SHA-512", "wonderland", "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%s\\n")
    assert consumed.stdout.decode().split() == ["a", "b", "c"]


def test_kafka_python_scram_sha_256(sasl_broker):
    topic = unique("sasl-kp")
    options = dict(bootstrap_servers=sasl_broker.address, security_protocol="SASL_PLAINTEXT",
                   sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice", sasl_plain_password="wonderland")
    producer = KafkaProducer(**options)
    producer.send(topic, b"over scram", partition=0).get(30)
    producer.close()
    consumer = KafkaConsumer(auto_offset_reset="earliest", consumer_timeout_ms=5000, **options)
    consumer.assign([TopicPartition(topic, 0)])
    assert [m.value for m in consumer] == [b"over scram"]
    consumer.close()
    with pytest.raises(KafkaError):
        KafkaProducer(**dict(options, sasl_plain_password="wrong", request_timeout_ms=5000, max_block_ms=5000))


def test_confluent_scram_sha_512_admin(sasl_broker):
    settings = {"bootstrap.servers": sasl_broker.address, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "alice", "sasl.password": "wonderland"}
    metadata = AdminClient(settings).list_topics(timeout=10)
    assert 1 in metadata.brokers
    producer = Producer(settings)
    producer.produce(unique("sasl-ck"), b"x")
    assert producer.flush(30) == 0


def test_requests_before_authentication_close_the_connection(sasl_broker):
    plain = kcat("-b", sasl_broker.address, "-L", "-m", "2", timeout=30)
    assert plain.returncode != 0
    assert "before SASL authentication" in sasl_broker.read_log()


def sasl_plain_attempt(port, user, password):
    """One SASL PLAIN exchange on a fresh connection, in raw bytes:
    (error code, error message) of the SaslAuthenticate answer."""
    import socket
    import struct

    def request(sock, api, version, correlation, body):
        header = struct.pack(">hhih", api, version, correlation, 5) + b"flood"
        frame = header + body
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
        return sock.recv(size, socket.MSG_WAITALL)[4:]

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        handshake = request(sock, 17, 1, 1, struct.pack(">h", 5) + b"PLAIN")
        assert struct.unpack(">h", handshake[:2])[0] == 0
        token = b"\0" + user.encode() + b"\0" + password.encode()
        answer = request(sock, 36, 1, 2, struct.pack(">i", len(token)) + token)
        code = struct.unpack(">h", answer[:2])[0]
        length = struct.unpack(">h", answer[2:4])[0]
        return code, answer[4:4 + length].decode() if length >= 0 else None


def test_a_flood_of_failed_sasl_attempts_is_slowed_then_refused_and_the_broker_lives():
    process = BrokerProcess(extra_args=["--sasl", "true"])
    added = subprocess.run([BINARY, "user", "add", "alice", "--password-stdin", "--data", process.data_dir],
                           input=b"wonderland\n", capture_output=True)
    assert added.returncode == 0, added.stderr
    process.start()
    try:
        import time
        started = time.monotonic()
        answers = [sasl_plain_attempt(process.port, "alice", "guess-%d" % i) for i in range(25)]
        # Each failure waits before its answer: 25 guesses take seconds, not milliseconds.
        assert time.monotonic() - started >= 2.0
        assert all(code == 58 for code, _ in answers)
        assert answers[0][1] == "authentication failed"
        assert "too many failed authentications" in answers[-1][1]
        # Past the limit even the right password waits out the minute.
        code, message = sasl_plain_attempt(process.port, "alice", "wonderland")
        assert code == 58 and "too many failed authentications" in message
        assert "too many failures from this address" in process.read_log()
        assert process.alive()
    finally:
        assert process.stop() == 0
        shutil.rmtree(process.data_dir, ignore_errors=True)


def test_sasl_authenticate_v2_gets_unsupported_version_in_its_own_schema(sasl_broker):
    """SaslAuthenticate v2 (flexible) is above the broker's v1: the answer is
    v2's schema with UNSUPPORTED_VERSION and a message, as kafka-python
    decodes it byte for byte, and the connection stays open."""
    from kafka.protocol.sasl import SaslAuthenticateRequest
    from test_golden_responses import decoded_exactly, read_frame
    request = SaslAuthenticateRequest[2](auth_bytes=b"\x00alice\x00wonderland")
    request.with_header(correlation_id=42, client_id="golden")
    with socket.create_connection(("127.0.0.1", sasl_broker.port), timeout=10) as s:
        s.sendall(request.encode(version=2, header=True, framed=True))
        decoded = decoded_exactly(SaslAuthenticateRequest, 2, read_frame(s))
        assert decoded.error_code == 35 and "v0 to v1" in decoded.error_message
