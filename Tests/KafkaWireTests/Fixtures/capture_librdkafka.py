"""Captures the record batches that kcat (librdkafka) really sends.

A tiny stand-in broker on 127.0.0.1 answers just enough of the Kafka protocol
(ApiVersions v0, Metadata v0, InitProducerId v0, Produce v3-7) for kcat to
produce, and writes each Produce request's record batch to a file. The bytes
are librdkafka's own; nothing here builds a batch.

Captured with (from the repository root, Debian's kcat 1.7.1 / librdkafka 2.0.2):
    .venv/bin/python Tests/KafkaWireTests/Fixtures/capture_librdkafka.py
which runs, for each codec C in none, gzip, snappy, lz4, zstd:
    printf 'conversation-0:message 0\\n...' | kcat -P -b 127.0.0.1:PORT -t capture -p 0 -K : -z C
and once more with -X enable.idempotence=true.
"""
import os
import socket
import struct
import subprocess
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
captured = []


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def serve(conn, port):
    try:
        while True:
            size = struct.unpack(">i", read_exact(conn, 4))[0]
            frame = read_exact(conn, size)
            api_key, version, correlation = struct.unpack(">hhi", frame[:8])
            client_id_len = struct.unpack(">h", frame[8:10])[0]
            body = frame[10 + max(client_id_len, 0):]
            if api_key == 18:  # ApiVersions: only v0, so any newer request gets 35 and a retry
                # Fetch and FindCoordinator are advertised (never served) because
                # librdkafka 2.0.2 gates MsgVer2, zstd and lz4 on them.
                apis = [(0, 0, 7), (1, 0, 11), (3, 0, 0), (10, 0, 0), (18, 0, 0), (22, 0, 0)]
                error = 0 if version == 0 else 35
                payload = struct.pack(">hi", error, len(apis)) + b"".join(struct.pack(">hhh", *a) for a in apis)
            elif api_key == 3:  # Metadata v0: this broker leads partition 0 of every topic asked for
                count = struct.unpack(">i", body[:4])[0]
                pos, topics = 4, []
                for _ in range(max(count, 0)):
                    n = struct.unpack(">h", body[pos:pos + 2])[0]
                    topics.append(body[pos + 2:pos + 2 + n].decode())
                    pos += 2 + n
                payload = struct.pack(">i", 1) + struct.pack(">i", 1) + string("127.0.0.1") + struct.pack(">i", port)
                payload += struct.pack(">i", len(topics))
                for t in topics:
                    payload += struct.pack(">h", 0) + string(t) + struct.pack(">i", 1)
                    payload += struct.pack(">hii", 0, 0, 1) + struct.pack(">ii", 1, 1) + struct.pack(">ii", 1, 1)
            elif api_key == 22:  # InitProducerId v0
                payload = struct.pack(">ihqh", 0, 0, 4242, 0)
            elif api_key == 0:  # Produce v3+: transactional id, acks, timeout, topics
                pos = 0
                tid = struct.unpack(">h", body[pos:pos + 2])[0]
                pos += 2 + max(tid, 0)
                acks, _timeout, topic_count = struct.unpack(">hii", body[pos:pos + 10])
                pos += 10
                responses = b""
                for _ in range(topic_count):
                    n = struct.unpack(">h", body[pos:pos + 2])[0]
                    name = body[pos + 2:pos + 2 + n]
                    pos += 2 + n
                    partition_count = struct.unpack(">i", body[pos:pos + 4])[0]
                    pos += 4
                    responses += struct.pack(">h", n) + name + struct.pack(">i", partition_count)
                    for _ in range(partition_count):
                        index, length = struct.unpack(">ii", body[pos:pos + 8])
                        pos += 8
                        captured.append(body[pos:pos + length])
                        pos += length
                        responses += struct.pack(">ihqq", index, 0, 0, -1)
                        if version >= 5:
                            responses += struct.pack(">q", 0)
                payload = struct.pack(">i", topic_count) + responses + struct.pack(">i", 0)
                if acks == 0:
                    continue
            else:
                return
            response = struct.pack(">i", correlation) + payload
            conn.sendall(struct.pack(">i", len(response)) + response)
    except (EOFError, ConnectionResetError):
        pass
    finally:
        conn.close()


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def accept_loop():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn, port), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    lines = "".join("conversation-%d:message %d %s\n" % (i % 3, i, "x" * 40) for i in range(20))
    runs = [(c, c, []) for c in ["none", "gzip", "snappy", "lz4", "zstd"]]
    runs.append(("idempotent", "none", ["-X", "enable.idempotence=true"]))
    for name, codec, extra in runs:
        before = len(captured)
        subprocess.run(["kcat", "-P", "-b", "127.0.0.1:%d" % port, "-t", "capture", "-p", "0", "-K", ":",
                        "-z", codec, "-X", "linger.ms=100", "-X", "api.version.request=true"] + extra + (["-d", "protocol,feature"] if os.environ.get("DEBUG") else []),
                       input=lines.encode(), check=True, timeout=30)
        assert len(captured) == before + 1, "expected one batch for %s, got %d" % (name, len(captured) - before)
        with open(os.path.join(HERE, "kcat-%s.bin" % name), "wb") as f:
            f.write(captured[-1])
    listener.close()


if __name__ == "__main__":
    main()
