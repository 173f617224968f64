"""kcat 1.7.1 (Debian, librdkafka 2.0.2): scenarios 1 to 4 of the research
brief's client table. librdkafka 2.0.2 turns features on only when the
broker lists specific old versions, which is what scenario 1 checks."""
import re
import subprocess
import threading
import time

from conftest import kcat, unique


def test_feature_detection_enables_the_features_clients_need(broker):
    result = kcat("-b", broker.address, "-L", "-d", "feature")
    log = result.stderr.decode()
    assert result.returncode == 0, log
    enabled = set(re.findall(r"Enabling feature (\w+)", log))
    for feature in ["MsgVer2", "IdempotentProducer", "ZSTD", "LZ4", "ApiVersion", "BrokerGroupCoordinator"]:
        assert feature in enabled, "%s missing from %s" % (feature, sorted(enabled))


def test_every_codec_is_sent_compressed_and_reads_back(broker):
    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        topic = unique("codec-" + codec)
        produced = kcat("-P", "-b", broker.address, "-t", topic, "-p", "0", "-z", codec, "-d", "msg",
                        input=b"".join(b"message %d\n" % i for i in range(1000)))
        assert produced.returncode == 0, produced.stderr.decode()
        assert b"not compressing" not in produced.stderr.lower(), produced.stderr.decode()
        consumed = kcat("-C", "-b", broker.address, "-t", topic, "-o", "beginning", "-e", "-f", "%o %s\\n")
        lines = consumed.stdout.decode().splitlines()
        assert len(lines) == 1000, consumed.stderr.decode()
        assert lines[0] == "0 message 0" and lines[-1] == "999 message 999"


def test_acks_zero_one_all_and_idempotence_store_every_message_once(broker):
    topic = unique("acks")
    settings = [["-X", "acks=0"], ["-X", "acks=1"], ["-X", "acks=all"],
                ["-X", "enable.idempotence=true"]]
    for extra in settings:
        result = kcat("-P", "-b", broker.address, "-t", topic, "-p", "0", *extra,
                      input=b"".join(b"%d\n" % i for i in range(500)))
        assert result.returncode == 0, result.stderr.decode()
    consumed = kcat("-C", "-b", broker.address, "-t", topic, "-o", "beginning", "-e", "-f", "%o\\n")
    offsets = [int(line) for line in consumed.stdout.decode().split()]
    assert offsets == list(range(2000))


def test_relative_and_timestamp_offsets(broker):
    topic = unique("offsets")
    first = kcat("-P", "-b", broker.address, "-t", topic, "-p", "0", input=b"".join(b"a%d\n" % i for i in range(10)))
    assert first.returncode == 0
    time.sleep(0.05)  # a later wall-clock millisecond for the second batch's timestamps
    marker_ms = int(time.time() * 1000)
    time.sleep(0.05)
    second = kcat("-P", "-b", broker.address, "-t", topic, "-p", "0", input=b"".join(b"b%d\n" % i for i in range(10)))
    assert second.returncode == 0
    last5 = kcat("-C", "-b", broker.address, "-t", topic, "-p", "0", "-o", "-5", "-e", "-f", "%o\\n")
    assert [int(x) for x in last5.stdout.split()] == [15, 16, 17, 18, 19]
    by_time = kcat("-C", "-b", broker.address, "-t", topic, "-p", "0", "-o", "s@%d" % marker_ms, "-e", "-f", "%s\\n")
    assert by_time.stdout.decode().split()[0] == "b0"
    query = kcat("-Q", "-b", broker.address, "-t", "%s:0:%d" % (topic, marker_ms))
    assert query.returncode == 0, query.stderr.decode()
    assert re.search(r"offset 10\b", query.stdout.decode()), query.stdout.decode()


def test_a_tail_consumer_receives_a_message_produced_while_it_waits(broker):
    topic = unique("tail")
    kcat("-P", "-b", broker.address, "-t", topic, "-p", "0", input=b"before\n")
    consumer = subprocess.Popen(["kcat", "-C", "-b", broker.address, "-t", topic, "-p", "0", "-o", "end", "-c", "1",
                                 "-f", "%s\\n"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Produce repeatedly until the waiting consumer sees one (it may start
        # after the first produce); every produce is bounded.
        received = None
        for attempt in range(50):
            kcat("-P", "-b", broker.address, "-t", topic, "-p", "0", input=b"live\n")
            try:
                out, _ = consumer.communicate(timeout=0.5)
                received = out.decode().strip()
                break
            except subprocess.TimeoutExpired:
                continue
        assert received == "live"
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
