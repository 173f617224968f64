#!/usr/bin/env python3
"""What retention and compaction cost produce latency, and how fast
compaction runs, measured with librdkafka (Benchmarks/clients/rdkafka-bench.c):

    .venv/bin/python Benchmarks/cleaner-bench.py [--pairs 3] [--seconds 8] [--rate N] [--linger 5] [--out bench-results]

On one release broker (`none` durability: the disk is not what is measured):
1. Peak produce (closed loop, linger 5), then, in alternating pairs, the
   paced produce benchmark at half that peak (linger 5, acks=all, 1 KiB
   values, 4 partitions): once with the cleaner idle, once while it
   compacts a topic of ~300 MB of updates over 10,000 keys and retention
   removes another ~300 MB topic whose records just expired. Both runs
   start from the same filled topics; only the configs that set the
   cleaner to work differ. The figure is the ratio of the p99s (medians of
   the pairs); the aim is at most 1.2. `--rate` paces at a given rate
   instead: on a 2-core machine shared with the client, half the closed
   loop's peak saturates both and measures queueing in the client.
2. Compaction alone, unthrottled: MB read per CPU-second of the broker
   process while it compacts ~300 MB.

Servers start on free loopback ports; exactly the one started is stopped."""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--fill-seconds", type=float, default=3)
    parser.add_argument("--rate", type=int, default=0, help="paced rate; 0 for half the measured peak")
    parser.add_argument("--linger", type=int, default=5, help="linger.ms of the paced runs")
    parser.add_argument("--only", choices=["compaction", "retention"], help="set only one of the two to work")
    parser.add_argument("--cleaner-mb-per-s", type=float, help="the cleaner's I/O limit for the paced runs (the broker's default otherwise)")
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--bin", default=os.path.join(ROOT, ".build", "release", "postduif"))
    parser.add_argument("--work", default=tempfile.gettempdir())
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    clients = os.path.join(args.work, "postduif-clients")
    os.makedirs(clients, exist_ok=True)
    bench = os.path.join(clients, "rdkafka-bench")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", bench, os.path.join(ROOT, "Benchmarks/clients/rdkafka-bench.c"), "-lrdkafka", "-lpthread"], check=True)

    work = tempfile.mkdtemp(prefix="postduif-cleaner-", dir=args.work)
    port = free_port()
    log_path = os.path.join(work, "broker.log")
    log = open(log_path, "wb")
    broker = subprocess.Popen([args.bin, "serve", "--data", os.path.join(work, "data"), "--port", str(port), "--http-port", "0",
                               "--durability", "none", "--log-level", "info", "--log-retention-check-interval-ms", "1000"],
                              stdout=log, stderr=subprocess.STDOUT)
    address = "127.0.0.1:%d" % port
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        admin = AdminClient({"bootstrap.servers": address})

        def rdkafka(label, topic, rate, seconds, linger):
            out = os.path.join(args.out, "cleaner-%s.json" % label)
            subprocess.run([bench, "--brokers", address, "--topic", topic, "--partitions", "4", "--rate", str(rate), "--linger-ms", str(linger),
                            "--seconds", str(seconds), "--keys", "10000", "--server-pid", str(broker.pid), "--label", label, "--json", out],
                           check=True)
            with open(out) as f:
                return json.load(f)

        def create(topic, **configs):
            admin.create_topics([NewTopic(topic, 4, 1, config={k.replace("_", "."): str(v) for k, v in configs.items()})])[topic].result(30)

        def alter(topic, **configs):
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
                ConfigEntry(k.replace("_", "."), str(v), incremental_operation=AlterConfigOpType.SET) for k, v in configs.items()])
            admin.incremental_alter_configs([resource])[ConfigResource(ConfigResource.Type.TOPIC, topic)].result(30)

        if args.cleaner_mb_per_s:
            limit = ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
                ConfigEntry("log.cleaner.io.max.bytes.per.second", str(args.cleaner_mb_per_s * 1_048_576), incremental_operation=AlterConfigOpType.SET)])
            admin.incremental_alter_configs([limit])[ConfigResource(ConfigResource.Type.BROKER, "1")].result(30)
        if args.rate:
            half = args.rate
        else:
            peak = rdkafka("peak", "peak", 0, args.seconds, 5)["sendsPerSecond"]
            half = int(peak / 2)
        print("paced runs at %d msgs/s, linger %d ms" % (half, args.linger), flush=True)
        fill_rate = 100_000

        results = {"quiet": [], "cleaning": []}
        for pair in range(args.pairs):
            for mode in ("quiet", "cleaning"):
                compacted, expiring = "compact-%s-%d" % (mode, pair), "expire-%s-%d" % (mode, pair)
                create(compacted, segment_ms=1000, min_cleanable_dirty_ratio=0.1)
                create(expiring, segment_ms=1000)
                rdkafka("fill-%s" % compacted, compacted, fill_rate, args.fill_seconds, 5)
                rdkafka("fill-%s" % expiring, expiring, fill_rate, args.fill_seconds, 5)
                time.sleep(2)
                before = open(log_path, errors="replace").read()
                if mode == "cleaning" and args.only != "retention":
                    alter(compacted, cleanup_policy="compact", segment_ms=1000, min_cleanable_dirty_ratio=0.1)
                if mode == "cleaning" and args.only != "compaction":
                    alter(expiring, retention_ms=1500, segment_ms=1000)
                run = rdkafka("%s-%d" % (mode, pair), "paced-%s-%d" % (mode, pair), half, args.seconds, args.linger)
                during = open(log_path, errors="replace").read()[len(before):]
                compactions = len(re.findall(r"compacted", during))
                removals = len(re.findall(r"retention removed old records", during))
                results[mode].append(run["ackMilliseconds"]["p99"])
                print("%s %d: ack p50 %.2f p99 %.2f ms at %.0f msgs/s; during it %d compactions, %d retention removals" % (
                    mode, pair, run["ackMilliseconds"]["p50"], run["ackMilliseconds"]["p99"], run["sendsPerSecond"], compactions, removals), flush=True)
                if mode == "cleaning" and compactions == 0 and removals == 0:
                    print("  (the cleaner did nothing during this run: the comparison does not hold)", flush=True)
                admin.delete_topics([compacted, expiring])
        quiet, cleaning = statistics.median(results["quiet"]), statistics.median(results["cleaning"])
        pairs = statistics.median(c / q for q, c in zip(results["quiet"], results["cleaning"]))
        print("median ack p99: quiet %.2f ms, cleaning %.2f ms, ratio %.2f; median of the pairs' ratios %.2f (aim <= 1.20)" % (
            quiet, cleaning, cleaning / quiet, pairs), flush=True)

        # Compaction alone, unthrottled.
        broker_resource = ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
            ConfigEntry("log.cleaner.io.max.bytes.per.second", "1e12", incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([broker_resource])[ConfigResource(ConfigResource.Type.BROKER, "1")].result(30)
        topic = "compact-rate"
        create(topic, segment_ms=1000, min_cleanable_dirty_ratio=0.1)
        rdkafka("fill-rate", topic, fill_rate, args.fill_seconds, 5)
        time.sleep(2)
        before = open(log_path, errors="replace").read()
        cpu_before, wall_before = cpu_seconds(broker.pid), time.monotonic()
        alter(topic, cleanup_policy="compact")
        deadline = time.monotonic() + 120
        read = 0
        while time.monotonic() < deadline:
            lines = [l for l in open(log_path, errors="replace").read()[len(before):].splitlines() if "compacted" in l and topic in l]
            if len(lines) >= 4:
                read = sum(int(re.search(r"bytesRead=(\d+)", l).group(1)) for l in lines)
                break
            time.sleep(0.05)
        cpu, wall = cpu_seconds(broker.pid) - cpu_before, time.monotonic() - wall_before
        print("compaction: %.1f MB read in %.2f s wall, %.2f CPU-s: %.0f MB/s per core" % (read / 1e6, wall, cpu, read / 1e6 / max(cpu, 1e-9)), flush=True)
    finally:
        broker.terminate()
        broker.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
