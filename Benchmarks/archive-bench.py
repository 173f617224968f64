#!/usr/bin/env python3
"""How fast `postduif archive` keeps conversations, against the chat
benchmark's peak send rate (Docs/benchmarks.md: about 1,500 messages/s
closed loop in rooms of 2):

    .venv/bin/python Benchmarks/archive-bench.py [--events 100000] [--rooms 1000]

On one release broker, confluent-kafka writes --events chat events (JSON
as the gateway stores them, ~300 bytes) keyed over --rooms rooms to a
`conversations` topic of 4 partitions; then the archive (release build)
starts and the figure is events archived per second until its state
reaches the end, with the archive's CPU seconds. Then `verify` is timed.

Servers start on free loopback ports; exactly the ones started are stopped."""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchkit import RELEASE_BINARY, cpu_seconds, start_broker


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--bin", default=RELEASE_BINARY)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="postduif-archive-bench-")
    broker, address = start_broker(args.bin, work, ["--http-proxy-port", "0"])
    archiver = None
    try:
        admin = AdminClient({"bootstrap.servers": address})
        admin.create_topics([NewTopic("conversations", 4, 1)])["conversations"].result(30)
        producer = Producer({"bootstrap.servers": address, "linger.ms": 5})
        for i in range(args.events):
            room = "!room%d:gov.example" % (i % args.rooms)
            event = {"type": "m.room.message", "sender": "@user%d:gov.example" % (i % 7),
                     "content": {"msgtype": "m.text", "body": "message %d about the cabinet's agenda for the week, item %d" % (i, i % 13)}}
            producer.produce("conversations", key=room.encode(), value=json.dumps(event).encode())
            if i % 10_000 == 0:
                producer.poll(0)
        producer.flush(60)
        folder = os.path.join(work, "archive")
        started = time.monotonic()
        archiver = subprocess.Popen([args.bin, "archive", "run", "--broker", address, "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = started + 600
        done = 0
        while time.monotonic() < deadline:
            try:
                with open(os.path.join(folder, "state.json")) as f:
                    state = json.load(f)
                done = sum(state["offsets"].values())
            except (OSError, ValueError):
                pass
            if done >= args.events:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(archiver.pid)
        archiver.kill()
        archiver.wait()
        archiver = None
        verify_started = time.monotonic()
        verified = subprocess.run([args.bin, "archive", "verify", "--dir", folder], capture_output=True, text=True)
        verify_seconds = time.monotonic() - verify_started
        size = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)
        print("archived %d of %d events in %d rooms in %.1f s: %.0f events/s (archive CPU %.1f s, %.0f events per CPU-second); %.0f MB on disk; "
              "verify %s in %.1f s" % (done, args.events, args.rooms, elapsed, done / elapsed, cpu, done / max(cpu, 0.001), size / 1e6,
                                       "intact" if verified.returncode == 0 else "FAILED", verify_seconds))
    finally:
        if archiver is not None:
            archiver.kill()
            archiver.wait()
        broker.terminate()
        broker.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
