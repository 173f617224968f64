#!/usr/bin/env python3
"""What reshaping a cluster costs the clients, measured with librdkafka
(Benchmarks/clients/rdkafka-bench.c: one idempotent acks=all producer,
1 KiB values over 10,000 keys, latency = produce() to delivery report):

    .venv/bin/python Benchmarks/reshape-bench.py [--gib 1] [--seconds 15] [--throttle-mb-per-s 0]

On etcd and three release brokers (Deploy/cluster/local-cluster.sh, free
loopback ports, `none` durability so that the disk is not what is measured):
1. A partition of --gib GiB (replication factor 2) is filled; the peak of a
   4-partition, replication-factor-3 topic is measured (closed loop); then
   the producer runs paced at half that peak, once before the move and
   once while the big partition moves to the broker that lacked it
   (AlterPartitionReassignments through kafka-python, finished when
   ListPartitionReassignments is empty). Figures: the move's MB/s and the
   ack p99 during it against before it.
2. A rolling restart: each broker in turn gets SIGTERM (controlled
   shutdown), starts again and catches up, while the producer runs paced;
   figures: the longest produce-to-ack wait (max), failed deliveries, and
   how long each stop took.
Exactly the processes started are stopped."""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "Deploy", "cluster", "local-cluster.sh")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--throttle-mb-per-s", type=float, default=0, help="the reassignment throttle; 0 for none")
    parser.add_argument("--rate", type=int, default=0, help="the paced rate; 0 for half the measured peak")
    parser.add_argument("--skip-restart", action="store_true", help="measure the move only")
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "postduif"))
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    bench = os.path.join(tempfile.gettempdir(), "postduif-clients", "rdkafka-bench")
    os.makedirs(os.path.dirname(bench), exist_ok=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", bench, os.path.join(ROOT, "Benchmarks/clients/rdkafka-bench.c"), "-lrdkafka", "-lpthread"], check=True)

    base = random.randint(20000, 40000)
    folder = tempfile.mkdtemp(prefix="postduif-reshape-")
    os.rmdir(folder)
    extra = "--durability none --log-level info"
    if args.throttle_mb_per_s:
        extra += " --reassignment-throttle-mb-per-s %g" % args.throttle_mb_per_s
    env = dict(os.environ, ETCD_PORT=str(base), KAFKA_PORT_BASE=str(base + 10), HTTP_PORT_BASE=str(base + 20),
               BINARY=args.binary, BROKER_ARGS=extra)
    subprocess.run([SCRIPT, "start", folder], check=True, env=env, capture_output=True)
    bootstrap = ",".join("127.0.0.1:%d" % (base + 10 + i) for i in range(3))
    admin = AdminClient({"bootstrap.servers": bootstrap})

    def pid(broker):
        with open(os.path.join(folder, "broker-%d" % broker, "pid")) as f:
            return int(f.read())

    def rdkafka(label, topic, rate, seconds, count=None, replicas=3, partitions=4):
        out = os.path.join(args.out, "reshape-%s.json" % label)
        command = [bench, "--brokers", bootstrap, "--topic", topic, "--partitions", str(partitions), "--replicas", str(replicas),
                   "--rate", str(rate), "--linger-ms", "5", "--seconds", str(seconds), "--keys", "10000", "--label", label, "--json", out]
        if count:
            command += ["--count", str(count)]
        subprocess.run(command, check=True)
        with open(out) as f:
            return json.load(f)

    def partitions(topic):
        return admin.list_topics(topic, timeout=10).topics[topic].partitions

    def in_sync(topic):
        return all(sorted(p.isrs) == sorted(p.replicas) and p.leader > 0 for p in partitions(topic).values())

    def wait(condition, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return True
            except Exception:
                pass
            time.sleep(0.2)
        return False

    results = {}
    try:
        # 1. The move.
        count = int(args.gib * (1 << 30) / 1024)
        admin.create_topics([NewTopic("big", 1, 2)])["big"].result(30)
        fill = rdkafka("fill", "big", 0, 600, count=count, replicas=2, partitions=1)
        print("filled %.2f GiB at %.0f msgs/s" % (args.gib, fill["sendsPerSecond"]), flush=True)
        peak = rdkafka("peak", "load", 0, args.seconds)["sendsPerSecond"]
        half = args.rate or int(peak / 2)
        before = rdkafka("before", "load", half, args.seconds)
        replicas = list(partitions("big")[0].replicas)
        newcomer = ({1, 2, 3} - set(replicas)).pop()
        target = [newcomer, replicas[1]]
        from kafka import KafkaAdminClient, TopicPartition
        mover = KafkaAdminClient(bootstrap_servers=bootstrap)
        moved = {}

        def move():
            started = time.monotonic()
            mover.alter_partition_reassignments({TopicPartition("big", 0): target})
            wait(lambda: mover.list_partition_reassignments() == {}, 1800)
            moved["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=move)
        thread.start()
        during = rdkafka("during", "load", half, args.seconds)
        thread.join()
        mover.close()
        rate = args.gib * (1 << 30) / 1e6 / moved["seconds"]
        results["move"] = {"gib": args.gib, "seconds": moved["seconds"], "mbPerSecond": rate, "peak": peak, "paced": half,
                           "p99Before": before["ackMilliseconds"]["p99"], "p99During": during["ackMilliseconds"]["p99"],
                           "p50Before": before["ackMilliseconds"]["p50"], "p50During": during["ackMilliseconds"]["p50"],
                           "from": replicas, "to": target}
        print("move of %.2f GiB %s -> %s: %.1f s, %.0f MB/s; paced at %d msgs/s (peak %.0f): ack p99 %.2f ms before, %.2f ms during"
              " (the paced run lasted %g s of the move)" % (args.gib, replicas, target, moved["seconds"], rate, half, peak,
                                                             before["ackMilliseconds"]["p99"], during["ackMilliseconds"]["p99"], args.seconds), flush=True)

        # 2. The rolling restart.
        if args.skip_restart:
            with open(os.path.join(args.out, "reshape.json"), "w") as f:
                json.dump(results, f, indent=2)
            return
        restart = {}

        def roll():
            time.sleep(3)
            stops = []
            for broker in (1, 2, 3):
                victim = pid(broker)
                started = time.monotonic()
                os.kill(victim, signal.SIGTERM)
                while True:
                    try:
                        os.kill(victim, 0)
                        time.sleep(0.02)
                    except ProcessLookupError:
                        break
                stops.append(time.monotonic() - started)
                subprocess.run([SCRIPT, "restart", folder, str(broker)], check=True, env=env, capture_output=True)
                wait(lambda: in_sync("load") and in_sync("big"), 300)
            restart["stops"] = stops

        roller = threading.Thread(target=roll)
        roller.start()
        rolling = rdkafka("rolling", "load", min(half, 5000), 60)
        roller.join()
        results["rollingRestart"] = {"rate": min(half, 5000), "failed": rolling["failed"], "acked": rolling["acked"],
                                     "maxAckMilliseconds": rolling["ackMilliseconds"]["max"], "p99": rolling["ackMilliseconds"]["p99"],
                                     "stopSeconds": restart.get("stops")}
        print("rolling restart under %d msgs/s: %d acked, %d failed, ack p99 %.2f ms, longest wait %.0f ms; stops took %s s" % (
            min(half, 5000), rolling["acked"], rolling["failed"], rolling["ackMilliseconds"]["p99"], rolling["ackMilliseconds"]["max"],
            ["%.2f" % s for s in restart.get("stops", [])]), flush=True)
        with open(os.path.join(args.out, "reshape.json"), "w") as f:
            json.dump(results, f, indent=2)
    finally:
        subprocess.run([SCRIPT, "stop", folder], env=env, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
