"""Captures the Kafka requests real clients send, as golden bytes.

A recording TCP proxy sits between the clients and a running Postduif
broker and writes every request frame (without its size prefix) to
requests/<client>-<api>_request_v<N>.bin, the first of each kind only. The
bytes are the clients' own; the broker only makes the conversation go on.

Captured with (from the repository root, broker built):
    .venv/bin/python Tests/KafkaWireTests/Fixtures/capture_requests.py
which starts `.build/debug/postduif serve` on a free port and runs kcat
1.7.1 (librdkafka 2.0.2) and kafka-python 3.0.12 flows through the proxy:
metadata, produce, fetch, offsets, topic admin and a consumer group.
"""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "requests")
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
NAMES = {0: "produce", 1: "fetch", 2: "list_offsets", 3: "metadata", 8: "offset_commit", 9: "offset_fetch",
         10: "find_coordinator", 11: "join_group", 12: "heartbeat", 13: "leave_group", 14: "sync_group",
         18: "api_versions", 19: "create_topics", 20: "delete_topics", 22: "init_producer_id", 23: "offset_for_leader_epoch"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """Forwards bytes both ways; records request frames from the client side."""

    def __init__(self, listen_port, broker_port):
        self.client = "unknown"
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", listen_port))
        self.listener.listen()
        self.broker_port = broker_port
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.broker_port))
            threading.Thread(target=self.requests, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=self.pipe, args=(upstream, conn), daemon=True).start()

    def pipe(self, source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def requests(self, source, sink):
        buffer = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
                buffer += data
                while len(buffer) >= 4:
                    size = struct.unpack(">i", buffer[:4])[0]
                    if len(buffer) < 4 + size:
                        break
                    frame, buffer = buffer[4:4 + size], buffer[4 + size:]
                    key, version = struct.unpack(">hh", frame[:4])
                    if key in NAMES:
                        path = os.path.join(OUT, "%s-%s_request_v%d.bin" % (self.client, NAMES[key], version))
                        if not os.path.exists(path):
                            with open(path, "wb") as f:
                                f.write(frame)
        except OSError:
            pass
        finally:
            sink.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    data = tempfile.mkdtemp(prefix="postduif-capture-")
    broker_port, proxy_port, http_port = free_port(), free_port(), free_port()
    broker = subprocess.Popen([os.path.join(ROOT, ".build", "debug", "postduif"), "serve", "--port", str(broker_port),
                               "--advertised-port", str(proxy_port), "--http-port", str(http_port), "--data", data,
                               "--log-level", "warning"])
    try:
        time.sleep(1.5)
        proxy = Proxy(proxy_port, broker_port)
        address = "127.0.0.1:%d" % proxy_port
        proxy.client = "kcat"
        run = lambda *args, **kw: subprocess.run(["kcat", "-b", address] + list(args), capture_output=True, timeout=60, **kw)
        run("-L")
        run("-P", "-t", "golden", "-p", "0", "-z", "lz4", "-X", "enable.idempotence=true", input=b"a\nb\nc\n")
        run("-C", "-t", "golden", "-p", "0", "-o", "beginning", "-e")
        run("-Q", "-t", "golden:0:0")
        group = subprocess.Popen(["kcat", "-b", address, "-G", "golden-group", "-X", "auto.offset.reset=earliest", "golden"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(8)
        group.terminate()
        group.wait(timeout=30)

        proxy.client = "kafka-python"
        from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
        from kafka.admin import NewTopic
        admin = KafkaAdminClient(bootstrap_servers=address)
        admin.create_topics([NewTopic("golden-kp", 1, 1)])
        producer = KafkaProducer(bootstrap_servers=address)
        producer.send("golden-kp", b"v", key=b"k").get(10)
        producer.close()
        consumer = KafkaConsumer("golden-kp", bootstrap_servers=address, group_id="golden-kp-group",
                                 auto_offset_reset="earliest", consumer_timeout_ms=3000)
        list(consumer)
        consumer.offsets_for_times({TopicPartition("golden-kp", 0): 0})
        consumer.commit()
        consumer.close()
        admin.delete_topics(["golden-kp"])
        admin.close()
        time.sleep(0.5)
    finally:
        broker.terminate()
        broker.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
