#!/usr/bin/env python3
"""Failover time of a Postduif cluster: the time from a partition leader's
SIGKILL to the first produce acknowledged on that partition afterwards.

Starts etcd and three release brokers with Deploy/cluster/local-cluster.sh
(free loopback ports, a temporary folder), produces one acks=all message
every 5 ms to a one-partition topic of replication factor 3, kills the
leader, and records when the first message sent after the kill is
acknowledged. Repeats --rounds times (restarting the killed broker each
time) and prints each figure and the median.

Usage: .venv/bin/python Benchmarks/failover-bench.py [--rounds 5]
"""
import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPT = os.path.join(ROOT, "Deploy", "cluster", "local-cluster.sh")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "postduif"))
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="postduif-failover-")
    os.rmdir(folder)
    base = random.randint(20000, 40000)
    env = dict(os.environ, ETCD_PORT=str(base), KAFKA_PORT_BASE=str(base + 10), HTTP_PORT_BASE=str(base + 20),
               BINARY=args.binary, BROKER_ARGS="--log-level warning")
    bootstrap = ",".join("127.0.0.1:%d" % (base + 10 + i) for i in range(3))
    subprocess.run([SCRIPT, "start", folder], check=True, env=env, capture_output=True)
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic("failover", 1, 3)]).values():
            future.result(timeout=30)
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 0, "message.timeout.ms": 60000, "retry.backoff.ms": 20,
                             "topic.metadata.refresh.interval.ms": 1000})
        acks = []
        lock = threading.Lock()

        def delivered(error, message):
            if error is None:
                with lock:
                    acks.append((time.monotonic(), int(message.value())))

        figures = []
        sent = 0
        for round_ in range(args.rounds):
            # Warm: a second of steady produce.
            end = time.monotonic() + 1
            while time.monotonic() < end:
                producer.produce("failover", value=b"%d" % sent, on_delivery=delivered)
                sent += 1
                producer.poll(0.005)
            producer.flush(30)
            leader = admin.list_topics("failover", timeout=5).topics["failover"].partitions[0].leader
            with open(os.path.join(folder, "broker-%d" % leader, "pid")) as f:
                pid = int(f.read())
            killed_at = time.monotonic()
            first_after = sent
            os.kill(pid, signal.SIGKILL)
            deadline = killed_at + 60
            figure = None
            while time.monotonic() < deadline and figure is None:
                producer.produce("failover", value=b"%d" % sent, on_delivery=delivered)
                sent += 1
                producer.poll(0.005)
                with lock:
                    after = [t for t, n in acks if n >= first_after]
                if after:
                    figure = min(after) - killed_at
            producer.flush(60)
            print("round %d: leader %d killed, first acknowledged produce after %.2f s" % (round_ + 1, leader, figure), flush=True)
            figures.append(figure)
            subprocess.run([SCRIPT, "restart", folder, str(leader)], check=True, env=env, capture_output=True)
            time.sleep(3)  # let it catch up and rejoin before the next round
        print("failover: median %.2f s, max %.2f s over %d rounds" % (statistics.median(figures), max(figures), len(figures)))
    finally:
        subprocess.run([SCRIPT, "stop", folder], env=env, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
