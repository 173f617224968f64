"""TLS on Kafka listeners (Docs/security.md), with the clients people use:
kcat, confluent-kafka, kafka-python and aiokafka over SSL, SASL_SSL with
SCRAM-SHA-512, and client certificates. Certificates are made here with
the openssl command line; no private key is committed. Bad input gets a
clear log line and a live broker: plaintext on a TLS port and the reverse,
an expired certificate, one from another CA, a handshake never finished,
a private key others may read."""
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import BINARY, BrokerProcess, free_port, kcat, unique, wait_port


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Certificates:
    """A CA, a broker certificate for 127.0.0.1, client certificates, an
    expired one and one from a second CA."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="postduif-tls-")
        for ca in ("ca", "other-ca"):
            openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + ".key", "-out", ca + ".pem",
                    "-days", "2", "-subj", "/CN=Postduif test " + ca, cwd=self.dir)
        with open(os.path.join(self.dir, "san.cnf"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        self.issue("broker", "/CN=localhost", extfile="san.cnf")
        self.issue("alice", "/O=Ministerie/CN=alice")
        self.issue("stranger", "/CN=stranger", ca="other-ca")
        self.issue("expired", "/CN=expired", days=-1)
        for name in os.listdir(self.dir):
            if name.endswith(".key"):
                os.chmod(self.path(name), 0o600)

    def issue(self, name, subject, ca="ca", extfile=None, days=2):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", subject, cwd=self.dir)
        args = ["x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key", "-CAcreateserial", "-out", name + ".pem"]
        # -days -1: its validity ended a day before it began, so it is expired.
        args += ["-days", str(days)]
        if extfile:
            args += ["-extfile", extfile]
        openssl(*args, cwd=self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)


@pytest.fixture(scope="module")
def certificates():
    made = Certificates()
    yield made
    shutil.rmtree(made.dir, ignore_errors=True)


def tls_broker(certificates, client_auth="requested", extra=()):
    process = BrokerProcess()
    process.ssl_port = free_port()
    process.sasl_ssl_port = free_port()
    process.extra_args = [
        "--listeners", "PLAINTEXT://127.0.0.1:%d,SSL://127.0.0.1:%d,SASL_SSL://127.0.0.1:%d" % (process.port, process.ssl_port, process.sasl_ssl_port),
        "--tls-cert-file", certificates.path("broker.pem"), "--tls-key-file", certificates.path("broker.key"),
        "--tls-ca-file", certificates.path("ca.pem"), "--tls-client-auth", client_auth,
        "--ssl-principal-mapping-rules", "RULE:^CN=([^,]*),O=.*$/$1/L,DEFAULT",
        "--tls-handshake-timeout-ms", "1500", *extra]
    added = subprocess.run([BINARY, "user", "add", "alice", "--password-stdin", "--data", process.data_dir],
                           input=b"wonderland\n", capture_output=True)
    assert added.returncode == 0, added.stderr
    process.start()
    # start() waits for the first listener only; the tests use the others
    # and the HTTP proxy, which starts beside them.
    wait_port(process.ssl_port)
    wait_port(process.sasl_ssl_port)
    wait_port(process.proxy_port)
    return process


@pytest.fixture(scope="module")
def broker_tls(certificates):
    process = tls_broker(certificates)
    yield process
    assert process.stop() == 0, process.read_log()
    shutil.rmtree(process.data_dir, ignore_errors=True)


def ssl_settings(certificates, port, client=None):
    settings = {"bootstrap.servers": "127.0.0.1:%d" % port, "security.protocol": "SSL", "ssl.ca.location": certificates.path("ca.pem")}
    if client:
        settings.update({"ssl.certificate.location": certificates.path(client + ".pem"), "ssl.key.location": certificates.path(client + ".key")})
    return settings


def kcat_settings(settings):
    args = []
    for key, value in settings.items():
        args += ["-b", value] if key == "bootstrap.servers" else ["-X", "%s=%s" % (key, value)]
    return args


def test_kcat_over_ssl_is_told_the_ssl_address_and_round_trips(broker_tls, certificates):
    settings = kcat_settings(ssl_settings(certificates, broker_tls.ssl_port))
    listed = kcat(*settings, "-L")
    assert listed.returncode == 0, listed.stderr.decode()
    assert ("broker 1 at 127.0.0.1:%d" % broker_tls.ssl_port).encode() in listed.stdout
    plain = kcat("-b", broker_tls.address, "-L")
    assert ("broker 1 at 127.0.0.1:%d" % broker_tls.port).encode() in plain.stdout
    topic = unique("tls-kcat")
    produced = kcat(*settings, "-P", "-t", topic, "-p", "0", input=b"one\ntwo\n")
    assert produced.returncode == 0, produced.stderr.decode()
    consumed = kcat(*settings, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%s\\n")
    assert consumed.stdout.decode().split() == ["one", "two"]


def test_confluent_kafka_with_a_client_certificate(broker_tls, certificates):
    topic = unique("tls-ck")
    producer = Producer(dict(ssl_settings(certificates, broker_tls.ssl_port, client="alice"), **{"enable.idempotence": True}))
    for i in range(100):
        producer.produce(topic, b"m%d" % i, partition=0)
    assert producer.flush(30) == 0
    consumer = Consumer(dict(ssl_settings(certificates, broker_tls.ssl_port, client="alice"), **{"group.id": unique("g"), "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 100 and time.monotonic() < deadline:
        message = consumer.poll(1)
        if message is not None and message.error() is None:
            got.append(message.value())
    consumer.close()
    assert got == [b"m%d" % i for i in range(100)]
    # The certificate's subject, mapped by the rule, names the connection.
    with open(broker_tls.log_path, errors="replace") as log:
        assert "principal=User:alice" in log.read()


def test_kafka_python_over_ssl_with_a_client_certificate(broker_tls, certificates):
    topic = unique("tls-kp")
    options = dict(bootstrap_servers="127.0.0.1:%d" % broker_tls.ssl_port, security_protocol="SSL", ssl_cafile=certificates.path("ca.pem"),
                   ssl_certfile=certificates.path("alice.pem"), ssl_keyfile=certificates.path("alice.key"))
    producer = KafkaProducer(**options)
    producer.send(topic, b"over tls", partition=0).get(30)
    producer.close()
    consumer = KafkaConsumer(auto_offset_reset="earliest", consumer_timeout_ms=5000, **options)
    consumer.assign([TopicPartition(topic, 0)])
    assert [m.value for m in consumer] == [b"over tls"]
    consumer.close()


def test_aiokafka_over_sasl_ssl_with_scram_sha_512(broker_tls, certificates):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.helpers import create_ssl_context

    topic = unique("tls-aio")

    async def run():
        # With a client certificate too: SASL's user wins as the principal.
        context = create_ssl_context(cafile=certificates.path("ca.pem"), certfile=certificates.path("alice.pem"), keyfile=certificates.path("alice.key"))
        options = dict(bootstrap_servers="127.0.0.1:%d" % broker_tls.sasl_ssl_port, security_protocol="SASL_SSL", ssl_context=context,
                       sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice", sasl_plain_password="wonderland")
        producer = AIOKafkaProducer(**options)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"over sasl_ssl", partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **options)
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()
        return message.value

    assert asyncio.run(run()) == b"over sasl_ssl"


def test_sasl_ssl_refuses_requests_before_authentication_and_wrong_passwords(broker_tls, certificates):
    settings = kcat_settings(ssl_settings(certificates, broker_tls.sasl_ssl_port))
    good = kcat(*settings, "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=SCRAM-SHA-512",
                "-X", "sasl.username=alice", "-X", "sasl.password=wonderland", "-L")
    assert good.returncode == 0, good.stderr.decode()
    assert ("broker 1 at 127.0.0.1:%d" % broker_tls.sasl_ssl_port).encode() in good.stdout
    bad = kcat(*settings, "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=SCRAM-SHA-512",
               "-X", "sasl.username=alice", "-X", "sasl.password=looking-glass", "-L", "-m", "3")
    assert bad.returncode != 0
    # TLS alone is not enough on a SASL_SSL listener.
    unauthenticated = kcat(*settings, "-L", "-m", "3")
    assert unauthenticated.returncode != 0
    assert "before SASL authentication" in broker_tls.read_log()


def handshake(port, certificates, client=None, ca="ca.pem"):
    context = ssl.create_default_context(cafile=certificates.path(ca))
    if client:
        context.load_cert_chain(certificates.path(client + ".pem"), certificates.path(client + ".key"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped:
            # An ApiVersions v0 request: the answer proves the session works.
            wrapped.sendall(b"\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x07\x00\x00")
            return wrapped.recv(4)


def test_bad_tls_input_gets_a_clear_error_and_the_broker_lives(broker_tls, certificates):
    # A plaintext client on the TLS port.
    plain = kcat("-b", "127.0.0.1:%d" % broker_tls.ssl_port, "-L", "-m", "3")
    assert plain.returncode != 0
    assert "TLS: handshakeFailed" in broker_tls.read_log()
    # A TLS client on the plaintext port: its hello is no Kafka frame.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        handshake(broker_tls.port, certificates)
    # An expired client certificate, and one from another CA.
    for client in ("expired", "stranger"):
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            handshake(broker_tls.ssl_port, certificates, client=client)
    # A connection that never finishes its handshake is closed by the deadline.
    with socket.create_connection(("127.0.0.1", broker_tls.ssl_port), timeout=10) as idle:
        started = time.monotonic()
        assert idle.recv(1) == b""
        assert time.monotonic() - started < 8
    assert "TLS handshake not finished within 1500 ms" in broker_tls.read_log()
    # And the broker still serves.
    assert len(handshake(broker_tls.ssl_port, certificates, client="alice")) == 4


def test_required_client_certificates_refuse_clients_without_one(certificates):
    process = tls_broker(certificates, client_auth="required")
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            handshake(process.ssl_port, certificates)
        assert len(handshake(process.ssl_port, certificates, client="alice")) == 4
    finally:
        assert process.stop() == 0
        shutil.rmtree(process.data_dir, ignore_errors=True)


def test_a_private_key_others_may_read_is_refused(certificates):
    loose = certificates.path("loose.key")
    shutil.copy(certificates.path("broker.key"), loose)
    os.chmod(loose, 0o644)
    data = tempfile.mkdtemp(prefix="postduif-tls-loose-")
    try:
        result = subprocess.run([BINARY, "serve", "--data", data, "--http-port", "0",
                                 "--listeners", "SSL://127.0.0.1:%d" % free_port(),
                                 "--tls-cert-file", certificates.path("broker.pem"), "--tls-key-file", loose],
                                capture_output=True, timeout=30)
        assert result.returncode != 0
        assert b"may be read by others than its owner" in result.stderr + result.stdout
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_a_root_owned_key_its_group_may_read_is_accepted_as_kubernetes_mounts_it(certificates):
    # A Secret mounted for a non-root pod: owned by root, mode 0440 or 0640
    # through the pod's fsGroup. Group write, or any world bit, is still refused.
    assert os.getuid() == 0 or os.stat(certificates.path("broker.key")).st_uid == 0, "needs a root-owned file"
    mounted = certificates.path("mounted.key")
    shutil.copy(certificates.path("broker.key"), mounted)
    os.chown(mounted, 0, os.getgid())
    os.chmod(mounted, 0o640)
    broker = BrokerProcess(extra_args=["--listeners", "SSL://127.0.0.1:%d" % free_port(),
                                       "--tls-cert-file", certificates.path("broker.pem"), "--tls-key-file", mounted])
    broker.port = int(broker.extra_args[1].rsplit(":", 1)[1])
    broker.start()
    assert broker.stop() == 0, broker.read_log()
    os.chmod(mounted, 0o660)
    data = tempfile.mkdtemp(prefix="postduif-tls-group-")
    try:
        result = subprocess.run([BINARY, "serve", "--data", data, "--http-port", "0", "--listeners", "SSL://127.0.0.1:%d" % free_port(),
                                 "--tls-cert-file", certificates.path("broker.pem"), "--tls-key-file", mounted],
                                capture_output=True, timeout=30)
        assert result.returncode != 0 and b"may be read by others than its owner" in result.stderr + result.stdout
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(broker.data_dir, ignore_errors=True)


def test_sighup_reloads_the_certificate_without_dropping_connections(certificates):
    # The broker reads its certificate from a copy the test then replaces.
    work = tempfile.mkdtemp(prefix="postduif-tls-reload-")
    for name in ("broker.pem", "broker.key"):
        shutil.copy(certificates.path(name), os.path.join(work, name))
    os.chmod(os.path.join(work, "broker.key"), 0o600)
    process = BrokerProcess()
    process.ssl_port = free_port()
    process.extra_args = ["--listeners", "PLAINTEXT://127.0.0.1:%d,SSL://127.0.0.1:%d" % (process.port, process.ssl_port),
                          "--tls-cert-file", os.path.join(work, "broker.pem"), "--tls-key-file", os.path.join(work, "broker.key")]
    process.start()
    # start() waits for the plaintext listener; the SSL one is bound beside it.
    wait_port(process.ssl_port)
    try:
        def served_serial():
            with socket.create_connection(("127.0.0.1", process.ssl_port), timeout=10) as raw:
                context = ssl.create_default_context(cafile=certificates.path("ca.pem"))
                context.load_verify_locations(certificates.path("other-ca.pem"))
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped:
                    return wrapped.getpeercert()["serialNumber"]

        before = served_serial()
        # An open connection across the reload keeps working.
        settings = ssl_settings(certificates, process.ssl_port)
        settings["ssl.ca.location"] = certificates.path("ca.pem")
        producer = Producer(settings)
        producer.produce(unique("reload"), b"before")
        assert producer.flush(30) == 0
        # The new certificate: from the other CA, for 127.0.0.1.
        made = Certificates.__new__(Certificates)
        made.dir = certificates.dir
        made.issue("renewed", "/CN=localhost", ca="other-ca", extfile="san.cnf")
        shutil.copy(certificates.path("renewed.pem"), os.path.join(work, "broker.pem"))
        shutil.copy(certificates.path("renewed.key"), os.path.join(work, "broker.key"))
        os.chmod(os.path.join(work, "broker.key"), 0o600)
        process.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "TLS certificate reloaded" not in process.read_log():
            assert time.monotonic() < deadline, process.read_log()
            time.sleep(0.1)
        assert served_serial() != before
        producer.produce(unique("reload"), b"after")
        assert producer.flush(30) == 0
        assert process.alive()
    finally:
        assert process.stop() == 0
        shutil.rmtree(process.data_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def test_a_cluster_with_tls_sasl_and_acls_everywhere_survives_a_leader_sigkill(certificates):
    """Three brokers on etcd whose clients and replication all go over
    SASL_SSL with the authorizer on: the brokers sign in to each other as
    User:broker (a super user), and an idempotent acks=all producer loses
    nothing when the leader is killed."""
    from confluent_kafka.admin import AdminClient, NewTopic
    from test_cluster import Cluster

    users = os.path.join(certificates.dir, "cluster-users.json")
    for user, password in (("broker", "broker-secret"), ("alice", "alice-secret")):
        added = subprocess.run([BINARY, "user", "add", user, "--password-stdin", "--users-file", users],
                               input=(password + "\n").encode(), capture_output=True)
        assert added.returncode == 0, added.stderr
    made = Cluster(broker_args=" ".join([
        "--tls-cert-file", certificates.path("broker.pem"), "--tls-key-file", certificates.path("broker.key"),
        "--tls-ca-file", certificates.path("ca.pem"), "--users-file", users,
        "--authorizer", "true", "--super-users", "User:broker;User:alice", "--inter-broker-sasl-user", "broker"]))
    made.env["SECURE_PORT_BASE"] = str(free_port_block(3))
    made.env["POSTDUIF_INTER_BROKER_SASL_PASSWORD"] = "broker-secret"
    secure = ",".join("127.0.0.1:%d" % (int(made.env["SECURE_PORT_BASE"]) + i) for i in range(3))
    client = {"bootstrap.servers": secure, "security.protocol": "SASL_SSL", "ssl.ca.location": certificates.path("ca.pem"),
              "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "alice", "sasl.password": "alice-secret"}
    made.start()
    try:
        admin = AdminClient(client)
        topic = "secure-failover"
        for future in admin.create_topics([NewTopic(topic, 2, 3)]).values():
            future.result(timeout=60)

        def leader(avoid=None):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                # A broker that has not yet seen the new topic from etcd answers
                # it without partitions; that is not ready yet, not a failure.
                partition = admin.list_topics(topic, timeout=10).topics[topic].partitions.get(0)
                if partition is not None and partition.leader > 0 and partition.leader != avoid and sorted(partition.isrs) == [1, 2, 3]:
                    return partition.leader
                time.sleep(0.2)
            raise AssertionError("no leader with a full ISR")

        # Replication over SASL_SSL works: every replica is in sync.
        victim = leader()
        producer = Producer(dict(client, **{"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                            "message.timeout.ms": 120000, "retry.backoff.ms": 100}))
        acknowledged = set()
        failed = []

        def delivered(error, message):
            (failed.append(error) if error else acknowledged.add(message.value()))

        total = 20000
        for i in range(total):
            while True:
                try:
                    producer.produce(topic, key=b"conversation-%d" % (i % 100), value=b"%08d" % i, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            if i == total // 2:
                made.signal(victim, signal.SIGKILL)
        assert producer.flush(120) == 0
        assert failed == []
        assert len(acknowledged) == total
        seen = consume_all_secure(client, topic, 2, total)
        assert set(seen) == acknowledged and len(seen) == total
        # A plaintext client on the same brokers is nobody and may do nothing.
        plain = AdminClient({"bootstrap.servers": made.bootstrap}).list_topics(timeout=10)
        assert topic not in plain.topics
        # No broker was ever refused by another.
        for broker in (1, 2, 3):
            refusals = [line for line in made.log(broker).splitlines() if "refused by the authorizer" in line and "principal=User:broker" in line]
            assert refusals == [], refusals[:3]
    finally:
        made.stop()


def test_the_http_proxy_never_lends_its_broker_certificate_to_a_caller(certificates):
    """Brokers that know each other by certificate (an SSL inter-broker
    listener, the broker's certificate a super user) and an HTTP proxy
    that asks nobody for a password (no SASL listener): a request for a
    partition led by another broker goes there as the caller, who has no
    certificate to show, never with the broker's own. Before, such a
    caller was the other broker's super user there."""
    from confluent_kafka.admin import AdminClient
    made, as_broker, _ = secure_proxy_cluster(certificates)
    made.start()
    try:
        admin = AdminClient(as_broker)
        topic = "deputy"
        leaders = topic_with_leaders(admin, topic, 3)
        elsewhere = [index for index, leader in leaders.items() if leader != 1]
        assert elsewhere, leaders
        # Everyone may see the topic (so the proxy finds its leaders), nobody may write it.
        from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType
        seeing = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:*", "*", AclOperation.DESCRIBE, AclPermissionType.ALLOW)
        admin.create_acls([seeing])[seeing].result(timeout=30)
        context = ssl.create_default_context(cafile=certificates.path("ca.pem"))
        proxy = "https://127.0.0.1:%d" % int(made.env["HTTP_PROXY_PORT_BASE"])

        def described():
            try:
                with urllib.request.urlopen("%s/topics/%s" % (proxy, topic), timeout=10, context=context) as response:
                    return response.status == 200
            except urllib.error.HTTPError:
                return False

        # The ACL reaches the brokers through etcd: the proxy's broker lets
        # nobody see the topic once it has it.
        deadline = time.monotonic() + 30
        while not described():
            assert time.monotonic() < deadline, "the Describe ACL never reached broker 1"
            time.sleep(0.2)
        body = json.dumps({"records": [{"value": base64.b64encode(b"as a broker").decode()}]}).encode()
        request = urllib.request.Request("%s/topics/%s/partitions/%d" % (proxy, topic, elsewhere[0]), data=body, method="POST",
                                         headers={"Content-Type": "application/vnd.kafka.binary.v2+json"})

        def post():
            try:
                with urllib.request.urlopen(request, timeout=30, context=context) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        status, answer = post()
        assert status == 403 and "topicAuthorizationFailed" in answer["message"], (status, answer)
        # Nothing reached the partition.
        consumer = Consumer(dict(as_broker, **{"group.id": "deputy-check", "enable.auto.commit": False}))
        assert consumer.get_watermark_offsets(ConfluentPartition(topic, elsewhere[0]), timeout=10)[1] == 0
        # Once everyone may write, the same request goes through the other
        # broker as nobody: the way there still works.
        writing = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:*", "*", AclOperation.WRITE, AclPermissionType.ALLOW)
        admin.create_acls([writing])[writing].result(timeout=30)
        # Refused until the ACL reaches the partition's leader through etcd.
        deadline = time.monotonic() + 30
        status, answer = post()
        while status == 403 and time.monotonic() < deadline:
            time.sleep(0.2)
            status, answer = post()
        assert status == 200 and answer["offsets"][0]["offset"] == 0, (status, answer)
        assert consumer.get_watermark_offsets(ConfluentPartition(topic, elsewhere[0]), timeout=10)[1] == 1
        consumer.close()
    finally:
        made.stop()


def test_an_http_caller_with_a_client_certificate_is_its_principal_on_every_broker(certificates):
    """Brokers that ask for client certificates: an HTTP caller who shows
    one is the user it names, as on the Kafka port, both for a partition
    this broker leads and for one led elsewhere (reached as the broker,
    each request in an Envelope for the caller). Alice may write and
    writes both; bob, with a certificate from the same CA and no ACL, is
    refused both. A client that is not a broker cannot use an Envelope to
    speak for others."""
    import struct

    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType, ResourceType
    if not os.path.exists(certificates.path("bob.pem")):
        certificates.issue("bob", "/CN=bob")
        os.chmod(certificates.path("bob.key"), 0o600)
    made, as_broker, secure_ports = secure_proxy_cluster(certificates)
    made.start()
    try:
        admin = AdminClient(as_broker)
        topic = "envoy"
        leaders = topic_with_leaders(admin, topic, 6)
        here = [index for index, leader in leaders.items() if leader == 1]
        elsewhere = [index for index, leader in leaders.items() if leader != 1]
        assert here and elsewhere, leaders
        alice = "User:CN=alice,O=Ministerie"
        bindings = [AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:*", "*", AclOperation.DESCRIBE, AclPermissionType.ALLOW),
                    AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, alice, "*", AclOperation.WRITE, AclPermissionType.ALLOW)]
        for binding, future in admin.create_acls(bindings).items():
            future.result(timeout=30)
        proxy = "https://127.0.0.1:%d" % int(made.env["HTTP_PROXY_PORT_BASE"])

        def context(user):
            made_context = ssl.create_default_context(cafile=certificates.path("ca.pem"))
            made_context.load_cert_chain(certificates.path(user + ".pem"), certificates.path(user + ".key"))
            return made_context

        def post(user, partition):
            body = json.dumps({"records": [{"value": base64.b64encode(user.encode()).decode()}]}).encode()
            request = urllib.request.Request("%s/topics/%s/partitions/%d" % (proxy, topic, partition), data=body, method="POST",
                                             headers={"Content-Type": "application/vnd.kafka.binary.v2+json"})
            try:
                with urllib.request.urlopen(request, timeout=30, context=context(user)) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        # Alice's ACL reaches every broker through etcd: refused until then.
        for partition in (here[0], elsewhere[0]):
            deadline = time.monotonic() + 30
            status, answer = post("alice", partition)
            while status == 403 and time.monotonic() < deadline:
                time.sleep(0.2)
                status, answer = post("alice", partition)
            assert status == 200 and answer["offsets"][0]["offset"] == 0, (partition, status, answer)
        for partition in (here[0], elsewhere[0]):
            status, answer = post("bob", partition)
            assert status == 403 and "topicAuthorizationFailed" in answer["message"], (partition, status, answer)
        consumer = Consumer(dict(as_broker, **{"group.id": "envoy-check", "enable.auto.commit": False}))
        for partition in (here[0], elsewhere[0]):
            assert consumer.get_watermark_offsets(ConfluentPartition(topic, partition), timeout=10) == (0, 1), partition
        consumer.close()
        # The other broker refused bob himself, not the broker that forwarded.
        assert "principal=User:CN=bob" in made.log(leaders[elsewhere[0]])

        # Alice's own Kafka connection may not claim to be the broker.
        def envelope(user, principal):
            raw = context(user).wrap_socket(socket.create_connection(("127.0.0.1", secure_ports[1]), timeout=10), server_hostname="localhost")
            client = b"envoy"
            embedded = struct.pack(">hhih", 3, 1, 0, len(client)) + client + struct.pack(">i", -1)
            def compact(data):
                return bytes([len(data) + 1]) + data
            body = compact(embedded) + compact(principal.encode()) + compact(bytes([127, 0, 0, 1])) + b"\0"
            header = struct.pack(">hhih", 58, 0, 7, len(client)) + client + b"\0"
            raw.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
            def exactly(count):
                got = b""
                while len(got) < count:
                    more = raw.recv(count - len(got))
                    assert more, "the broker closed the connection"
                    got += more
                return got

            answer = exactly(struct.unpack(">i", exactly(4))[0])
            raw.close()
            correlation, tags = struct.unpack(">iB", answer[:5])
            assert correlation == 7 and tags == 0, answer
            length, shift, at = 0, 0, 5
            while True:  # the embedded answer's size + 1, an unsigned varint (0: none)
                length |= (answer[at] & 0x7F) << shift
                shift, at = shift + 7, at + 1
                if answer[at - 1] < 0x80:
                    break
            data = answer[at:at + length - 1] if length else None
            at += max(length - 1, 0)
            return data, struct.unpack(">h", answer[at:at + 2])[0]

        assert envelope("alice", "User:CN=localhost") == (None, 31)
        data, code = envelope("broker", alice)
        assert code == 0 and data and struct.unpack(">i", data[:4])[0] == 0, (data, code)
    finally:
        made.stop()


def secure_proxy_cluster(certificates):
    """Three brokers that know each other by certificate (an SSL
    inter-broker listener, the broker's certificate a super user), ask
    clients for certificates, authorize, and serve the HTTP proxy on
    HTTP_PROXY_PORT_BASE and on. Returns the cluster (not started), the
    settings of a client with the broker's certificate, and the SSL ports."""
    from test_cluster import Cluster, free_block

    made = Cluster(broker_args=" ".join([
        "--tls-cert-file", certificates.path("broker.pem"), "--tls-key-file", certificates.path("broker.key"),
        "--tls-ca-file", certificates.path("ca.pem"), "--tls-client-auth", "requested",
        "--authorizer", "true", "--super-users", "User:CN=localhost"]))
    made.env["SECURE_PORT_BASE"] = str(free_port_block(3))
    made.env["SECURE_PROTOCOL"] = "SSL"
    made.env["HTTP_PROXY_PORT_BASE"] = str(free_block(3))
    # The tests' environment asks for free proxy ports; these are called.
    made.env.pop("POSTDUIF_HTTP_PROXY_PORT", None)
    secure_ports = [int(made.env["SECURE_PORT_BASE"]) + i for i in range(3)]
    as_broker = {"bootstrap.servers": ",".join("127.0.0.1:%d" % port for port in secure_ports),
                 "security.protocol": "SSL", "ssl.ca.location": certificates.path("ca.pem"),
                 "ssl.certificate.location": certificates.path("broker.pem"), "ssl.key.location": certificates.path("broker.key")}
    return made, as_broker, secure_ports


def topic_with_leaders(admin, topic, partitions):
    """Creates a topic of one replica per partition and waits until every
    partition has a leader; returns {partition: leader}."""
    from confluent_kafka.admin import NewTopic

    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=60)
    leaders = {}
    deadline = time.monotonic() + 60
    while len(leaders) < partitions and time.monotonic() < deadline:
        found = admin.list_topics(topic, timeout=10).topics[topic].partitions
        leaders = {index: p.leader for index, p in found.items() if p.leader > 0}
        time.sleep(0.2)
    return leaders


def free_port_block(count):
    from test_cluster import free_block
    return free_block(count)


def consume_all_secure(settings, topic, partitions, expected, timeout=60):
    consumer = Consumer(dict(settings, **{"group.id": "verify-%d" % time.time(), "enable.auto.commit": False}))
    consumer.assign([ConfluentPartition(topic, p, 0) for p in range(partitions)])
    values = []
    deadline = time.monotonic() + timeout
    while len(values) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
    consumer.close()
    return values


def test_matrix_nio_over_https_to_the_embedded_gateway(certificates):
    """The gateway inside the broker serves HTTPS with the operator's
    certificate: matrix-nio registers, makes a room and sends over it, and
    a plain HTTP request on the HTTPS port gets no Matrix answer."""
    from nio import AsyncClient, AsyncClientConfig, RegisterResponse, RoomSendResponse

    process = BrokerProcess()
    gateway_port = free_port()
    process.extra_args = ["--with-gateway", "true", "--gateway-port", str(gateway_port), "--server-name", "gov.test",
                          "--gateway-tls-cert-file", certificates.path("broker.pem"), "--gateway-tls-key-file", certificates.path("broker.key")]
    process.start()
    url = "https://127.0.0.1:%d" % gateway_port
    context = ssl.create_default_context(cafile=certificates.path("ca.pem"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                import urllib.request
                with urllib.request.urlopen(url + "/_matrix/client/versions", timeout=2, context=context) as answer:
                    assert b"versions" in answer.read()
                    break
            except OSError:
                assert time.monotonic() < deadline, process.read_log()
                time.sleep(0.2)

        async def talk():
            client = AsyncClient(url, "@ann:gov.test", config=AsyncClientConfig(), ssl=context)
            registered = await client.register("ann", "correct horse ann")
            assert isinstance(registered, RegisterResponse), registered
            room = await client.room_create(name="Beveiligd")
            sent = await client.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": "over https"})
            assert isinstance(sent, RoomSendResponse), sent
            await client.close()

        asyncio.run(asyncio.wait_for(talk(), 60))
        with socket.create_connection(("127.0.0.1", gateway_port), timeout=10) as plain:
            plain.sendall(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"versions" not in plain.recv(4096)
    finally:
        assert process.stop() == 0, process.read_log()
        shutil.rmtree(process.data_dir, ignore_errors=True)


def test_a_gateway_reaches_its_broker_over_sasl_ssl(broker_tls, certificates):
    """`postduif gateway --broker-tls` (Kubernetes runs gateways this way):
    it signs in over the broker's SASL_SSL listener, checking the broker's
    certificate against the CA, and matrix-nio chats through it."""
    from nio import AsyncClient, RegisterResponse, RoomSendResponse, SyncResponse
    from test_chat import GatewayProcess

    class SecureBroker:
        address = "127.0.0.1:%d" % broker_tls.sasl_ssl_port

    environment = dict(os.environ, POSTDUIF_GATEWAY_BROKER_PASSWORD="wonderland")
    gateway = GatewayProcess(SecureBroker(), extra_args=["--broker-tls", "--broker-tls-ca-file", certificates.path("ca.pem"),
                                                          "--broker-user", "alice"], env=environment).start()
    try:
        async def talk():
            client = AsyncClient(gateway.url, "@bea:gov.test")
            registered = await client.register("bea", "correct horse bea")
            assert isinstance(registered, RegisterResponse), registered
            room = await client.room_create(name="Via TLS")
            sent = await client.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": "through SASL_SSL"})
            assert isinstance(sent, RoomSendResponse), sent
            synced = await client.sync(timeout=0)
            assert isinstance(synced, SyncResponse), synced
            bodies = [getattr(event, "body", None) for event in synced.rooms.join[room.room_id].timeline.events]
            assert "through SASL_SSL" in bodies, bodies
            await client.close()

        asyncio.run(asyncio.wait_for(talk(), 60))
    finally:
        assert gateway.stop() == 0, gateway.read_log()
    # Without the CA the broker's certificate is not trusted: the gateway does not get going.
    untrusting = GatewayProcess(SecureBroker(), extra_args=["--broker-tls", "--broker-user", "alice"], env=environment)
    with pytest.raises(AssertionError):
        untrusting.start()
    untrusting.stop()


def test_logins_and_registrations_are_limited_so_passwords_cannot_be_guessed_at_speed():
    from test_chat import GatewayProcess, call

    broker = BrokerProcess(extra_args=["--durability", "none"]).start()
    gateway = GatewayProcess(broker, ["--registrations-per-minute", "3"]).start()
    try:
        for name in ("minister", "staf", "griffie"):
            status, body = call(gateway, "POST", "/register", {"username": name, "password": "pw-" + name})
            assert status == 200, body
        status, body = call(gateway, "POST", "/register", {"username": "vierde", "password": "pw"})
        assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and 0 < body["retry_after_ms"] <= 60000, body

        def login(password):
            return call(gateway, "POST", "/login", {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "minister"}, "password": password})

        assert login("pw-minister")[0] == 200
        answers = [login("guess-%d" % i) for i in range(11)]
        assert [status for status, _ in answers[:10]] == [403] * 10
        assert answers[10][0] == 429 and answers[10][1]["errcode"] == "M_LIMIT_EXCEEDED"
        # The right password waits out the minute too; another user does not.
        assert login("pw-minister")[0] == 429
        assert call(gateway, "POST", "/login", {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "staf"}, "password": "pw-staf"})[0] == 200
        assert "too many attempts" in gateway.read_log()
    finally:
        assert gateway.stop() == 0
        broker.stop()


@pytest.mark.parametrize("etcd_auth", ["client-certificates", "users"])
def test_a_broker_reaches_etcd_over_tls(certificates, etcd_auth):
    """etcd over TLS, either requiring client certificates (--client-cert-auth)
    or with its user authentication on (etcd's JSON gateway ignores a
    certificate's name when users are on, and says so): a broker with etcd's
    CA and the right credential registers, is elected and serves; one
    without is refused by etcd and stops, saying why."""
    import base64
    import json as jsonlib
    import urllib.request
    from test_cluster import free_block

    base = free_block(2)
    data = tempfile.mkdtemp(prefix="postduif-etcd-tls-")
    arguments = ["etcd", "--name", "s", "--data-dir", os.path.join(data, "etcd"),
                 "--listen-client-urls", "https://127.0.0.1:%d" % base, "--advertise-client-urls", "https://127.0.0.1:%d" % base,
                 "--listen-peer-urls", "http://127.0.0.1:%d" % (base + 1), "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % (base + 1),
                 "--initial-cluster", "s=http://127.0.0.1:%d" % (base + 1),
                 "--cert-file", certificates.path("broker.pem"), "--key-file", certificates.path("broker.key")]
    if etcd_auth == "client-certificates":
        arguments += ["--trusted-ca-file", certificates.path("ca.pem"), "--client-cert-auth"]
    etcd = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "etcd.log"), "wb"))
    context = ssl.create_default_context(cafile=certificates.path("ca.pem"))
    context.load_cert_chain(certificates.path("alice.pem"), certificates.path("alice.key"))

    def etcd_call(path, body):
        request = urllib.request.Request("https://127.0.0.1:%d%s" % (base, path), data=jsonlib.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return jsonlib.loads(answer.read())

    def serve(extra):
        return BrokerProcess(extra_args=["--node-id", "1", "--etcd-endpoints", "https://127.0.0.1:%d" % base,
                                         "--etcd-ca-file", certificates.path("ca.pem"), "--default-replication-factor", "1"] + extra)

    broker = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                etcd_call("/v3/kv/range", {"key": base64.b64encode(b"x").decode()})
                break
            except OSError:
                assert time.monotonic() < deadline, open(os.path.join(data, "etcd.log")).read()[-2000:]
                time.sleep(0.2)
        if etcd_auth == "users":
            # root (needed to turn users on) and the brokers' own, limited to /postduif/.
            b64 = lambda text: base64.b64encode(text.encode()).decode()
            etcd_call("/v3/auth/user/add", {"name": "root", "password": "root-secret"})
            etcd_call("/v3/auth/role/add", {"name": "root"})
            etcd_call("/v3/auth/user/grant", {"user": "root", "role": "root"})
            etcd_call("/v3/auth/user/add", {"name": "postduif", "password": "etcd-secret"})
            etcd_call("/v3/auth/role/add", {"name": "brokers"})
            etcd_call("/v3/auth/role/grant", {"name": "brokers", "perm": {"permType": "READWRITE", "key": b64("/postduif/"), "range_end": b64("/postduif0")}})
            etcd_call("/v3/auth/user/grant", {"user": "postduif", "role": "brokers"})
            etcd_call("/v3/auth/enable", {})
            credential = ["--etcd-user", "postduif"]
        else:
            credential = ["--etcd-cert-file", certificates.path("alice.pem"), "--etcd-key-file", certificates.path("alice.key")]

        # Without the credential etcd refuses the broker, which stops and says why.
        refused = serve([])
        result = subprocess.run([BINARY, "serve", "--port", str(refused.port), "--http-port", "0", "--data", refused.data_dir] + refused.extra_args,
                                capture_output=True, timeout=60)
        shutil.rmtree(refused.data_dir, ignore_errors=True)
        said = (result.stderr + result.stdout).lower()
        assert result.returncode != 0 and b"the node stopped" in said, said[-2000:]

        broker = serve(credential)
        os.environ["POSTDUIF_ETCD_PASSWORD"] = "etcd-secret"
        try:
            broker.start()
        finally:
            del os.environ["POSTDUIF_ETCD_PASSWORD"]
        topic = unique("etcd-tls")
        produced = kcat("-b", broker.address, "-P", "-t", topic, "-p", "0", input=b"over etcd tls\n")
        assert produced.returncode == 0, produced.stderr.decode() + broker.read_log()
        consumed = kcat("-b", broker.address, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%s\\n")
        assert consumed.stdout.decode().split("\n")[0] == "over etcd tls", broker.read_log()
        with open(broker.log_path, errors="replace") as log:
            assert "registered in the cluster" in log.read()
    finally:
        if broker is not None and broker.alive():
            broker.stop()
        etcd.terminate()
        etcd.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


class RecordingTLSFront:
    """A TLS front for a plain etcd, as a load balancer in front of etcd
    would be: it asks every client for a certificate of the test CA,
    records the common name of each one it accepts, and passes the bytes
    through. It shows which certificate the broker's etcd client uses."""

    def __init__(self, certificates, upstream_port):
        self.upstream_port = upstream_port
        self.names = []
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificates.path("broker.pem"), certificates.path("broker.key"))
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(certificates.path("ca.pem"))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.serve, "127.0.0.1", 0, ssl=self.context), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def serve(self, reader, writer):
        subject = dict(entry[0] for entry in writer.get_extra_info("peercert")["subject"])
        self.names.append(subject.get("commonName"))
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(source, sink):
            try:
                while True:
                    data = await source.read(65536)
                    if not data:
                        break
                    sink.write(data)
                    await sink.drain()
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def close(self):
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def test_the_etcd_client_certificate_reloads_on_sighup(certificates):
    """A broker's etcd client certificate is rotated: after SIGHUP its new
    connections to etcd show the new certificate, the broker stays in its
    cluster and serves; a reload that cannot load (a key others may read)
    keeps the old files, says why, and the broker goes on."""
    from test_cluster import free_block

    base = free_block(2)
    data = tempfile.mkdtemp(prefix="postduif-etcd-reload-")
    etcd = subprocess.Popen(
        ["etcd", "--name", "s", "--data-dir", os.path.join(data, "etcd"),
         "--listen-client-urls", "http://127.0.0.1:%d" % base, "--advertise-client-urls", "http://127.0.0.1:%d" % base,
         "--listen-peer-urls", "http://127.0.0.1:%d" % (base + 1), "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % (base + 1),
         "--initial-cluster", "s=http://127.0.0.1:%d" % (base + 1)],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "etcd.log"), "wb"))
    front = None
    broker = None
    work = tempfile.mkdtemp(prefix="postduif-etcd-client-")
    client_pem, client_key = os.path.join(work, "client.pem"), os.path.join(work, "client.key")

    def install(name):
        shutil.copy(certificates.path(name + ".pem"), client_pem)
        shutil.copy(certificates.path(name + ".key"), client_key)
        os.chmod(client_key, 0o600)

    def whole_log():
        with open(broker.log_path, errors="replace") as log:
            return log.read()

    def wait_for(condition, what, seconds=30):
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, "%s; front saw %s; log: %s" % (what, sorted(set(front.names)), broker.read_log())
            time.sleep(0.1)

    try:
        wait_port(base)
        front = RecordingTLSFront(certificates, base)
        made = Certificates.__new__(Certificates)
        made.dir = certificates.dir
        made.issue("etcd-client-rotated", "/CN=etcd-client-rotated")
        install("alice")
        broker = BrokerProcess(extra_args=[
            "--node-id", "1", "--etcd-endpoints", "https://127.0.0.1:%d" % front.port, "--default-replication-factor", "1",
            "--etcd-ca-file", certificates.path("ca.pem"), "--etcd-cert-file", client_pem, "--etcd-key-file", client_key])
        broker.start()
        wait_for(lambda: "registered in the cluster" in whole_log(), "the broker registered")
        assert set(front.names) == {"alice"}

        install("etcd-client-rotated")
        broker.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "etcd client TLS files reloaded" in whole_log(), "the reload was logged")
        # Lease renewals and a new topic's records go over new connections.
        topic = unique("etcd-reload")
        produced = kcat("-b", broker.address, "-P", "-t", topic, "-p", "0", input=b"after the rotation\n")
        assert produced.returncode == 0, produced.stderr.decode() + broker.read_log()
        wait_for(lambda: "etcd-client-rotated" in front.names, "a connection with the rotated certificate")

        # A key others may read is refused; the rotated files stay in use.
        os.chmod(client_key, 0o644)
        broker.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "etcd client TLS files not reloaded" in whole_log(), "the refused reload was logged")
        refusal = [line for line in whole_log().splitlines() if "etcd client TLS files not reloaded" in line]
        assert "may be read by others" in refusal[0], refusal
        consumed = kcat("-b", broker.address, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%s\\n")
        assert consumed.stdout.decode().split("\n")[0] == "after the rotation", broker.read_log()
        second = unique("etcd-reload")
        produced = kcat("-b", broker.address, "-P", "-t", second, "-p", "0", input=b"still in the cluster\n")
        assert produced.returncode == 0, produced.stderr.decode() + broker.read_log()
        assert broker.alive()
    finally:
        if broker is not None and broker.alive():
            assert broker.stop() == 0
        if front is not None:
            front.close()
        etcd.terminate()
        etcd.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def test_the_operations_port_over_tls(certificates):
    import urllib.request

    process = tls_broker(certificates, extra=["--http-tls", "true"])
    try:
        context = ssl.create_default_context(cafile=certificates.path("ca.pem"))
        with urllib.request.urlopen("https://127.0.0.1:%d/ready" % process.http_port, context=context, timeout=10) as answer:
            assert answer.status == 200
        with urllib.request.urlopen("https://127.0.0.1:%d/metrics" % process.http_port, context=context, timeout=10) as answer:
            assert b"postduif_" in answer.read()
        with pytest.raises(OSError):
            urllib.request.urlopen("http://127.0.0.1:%d/health" % process.http_port, timeout=5).read()
    finally:
        assert process.stop() == 0
        shutil.rmtree(process.data_dir, ignore_errors=True)


def test_the_http_proxy_serves_https_with_the_broker_certificate_and_asks_for_basic_credentials(certificates):
    """With a certificate the HTTP proxy speaks HTTPS only, and a listener
    asking for SASL makes it ask for the same users' passwords."""
    import base64
    import json
    import urllib.error
    import urllib.request

    process = tls_broker(certificates)
    try:
        context = ssl.create_default_context(cafile=certificates.path("ca.pem"))
        url = "https://127.0.0.1:%d/topics/%s" % (process.proxy_port, unique("https"))
        body = json.dumps({"records": [{"value": {"sealed": True}}]}).encode()
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/vnd.kafka.json.v2+json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, context=context, timeout=10)
        assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"].startswith("Basic")
        request.add_header("Authorization", "Basic " + base64.b64encode(b"alice:wonderland").decode())
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            assert json.loads(answer.read())["offsets"][0]["error_code"] is None
        with pytest.raises(OSError):
            urllib.request.urlopen("http://127.0.0.1:%d/topics" % process.proxy_port, timeout=5).read()
    finally:
        assert process.stop() == 0
        shutil.rmtree(process.data_dir, ignore_errors=True)
