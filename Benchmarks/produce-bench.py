#!/usr/bin/env python3
"""Produce and consume throughput of one Postduif node, driven by
confluent-kafka (librdkafka does the batching, as in production).

Workload (issue "[2 of 5]"): 1 KiB messages keyed over 10,000
conversations, acks=all, fsync durability, several producer processes;
then a consumer reads everything back. Phase two produces at half the peak
rate and records each message's produce-to-acknowledgement latency.

The script starts a release-built broker itself (so it can read the
broker's CPU time and peak memory from /proc) with its data on DATA_DIR,
and stops it with SIGTERM at the end.

Usage: .venv/bin/python Benchmarks/produce-bench.py [--data-dir /work/bench-data] [--producers 2]
       [--messages 400000] [--seconds-at-half 20]
"""
import argparse
import gc
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def proc_peak_memory_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def producer_settings(address):
    return {"bootstrap.servers": address, "acks": "all", "linger.ms": 5, "batch.size": 1 << 20,
            "queue.buffering.max.messages": 200_000, "enable.idempotence": False}


def produce_peak(address, topic, count, index, results):
    from confluent_kafka import Producer
    producer = Producer(producer_settings(address))
    value = os.urandom(1024)
    delivered = [0]

    def on_delivery(error, message):
        if error is None:
            delivered[0] += 1

    start = time.monotonic()
    for i in range(count):
        key = b"conversation-%d" % ((index * count + i) % 10_000)
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(120)
    results.put((delivered[0], time.monotonic() - start))


def produce_at_rate(address, topic, rate, seconds, results):
    from confluent_kafka import Producer
    producer = Producer(producer_settings(address))
    value = os.urandom(1024)
    keys = [b"conversation-%d" % k for k in range(10_000)]
    latencies = []
    # Every message is produced; one in `sample_every` (about 20,000 a
    # second) carries a delivery callback that records its latency. A
    # Python callback per message would make the generator, not the broker,
    # the bottleneck at the rates measured here; messages of one batch share
    # its fate, so the sample stands for all of them.
    sample_every = max(1, int(rate // 20_000))

    # The cyclic collector's full passes pause the generator for tens of
    # milliseconds, which would be counted as the broker's latency.
    gc.disable()
    start = time.monotonic()
    total = int(rate * seconds)
    i = 0
    while i < total:
        now = time.monotonic()
        due = min(total, int((now - start) * rate) + 1)
        if due <= i:
            time.sleep(max(0.0, min(0.0005, start + i / rate - now)))
            continue
        # Everything due by now goes out; latency counts from each message's
        # intended send time (coordinated omission corrected).
        while i < due:
            try:
                if i % sample_every == 0:
                    producer.produce(topic, key=keys[i % 10_000], value=value,
                                     on_delivery=lambda error, message, t=start + i / rate: latencies.append(time.monotonic() - t))
                else:
                    producer.produce(topic, key=keys[i % 10_000], value=value)
            except BufferError:
                producer.poll(0.001)
                continue
            i += 1
        producer.poll(0)
    sending = time.monotonic() - start
    producer.flush(120)
    # A generator that fell behind its schedule measures its own lag: the
    # caller reports the achieved rate beside the latencies.
    results.put((latencies, total / sending, total))


def consume_all(address, topic, expected):
    from confluent_kafka import Consumer
    consumer = Consumer({"bootstrap.servers": address, "group.id": "bench-%d" % time.time(),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 10485760})
    consumer.subscribe([topic])
    received = 0
    start = None
    deadline = time.monotonic() + 300
    while received < expected and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=10_000, timeout=1.0):
            if message.error():
                continue
            if start is None:
                start = time.monotonic()
            received += 1
    elapsed = time.monotonic() - (start or time.monotonic())
    consumer.close()
    return received, elapsed


def stored_messages(address, topic, partitions):
    """Messages the broker holds in a topic: the sum of its partitions' high watermarks."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": address, "group.id": "bench-count"})
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions))
    finally:
        consumer.close()


def broker_histograms(http_port):
    """The broker's own Produce request and WAL sync histograms (cumulative
    bucket counts by upper bound), from its Prometheus endpoint."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % http_port, timeout=5).read().decode()
    found = {"produce": {}, "sync": {}}
    for line in text.splitlines():
        if "_bucket{" not in line:
            continue
        name = None
        if line.startswith("postduif_request_duration_seconds_bucket") and 'api="Produce"' in line:
            name = "produce"
        elif line.startswith("postduif_wal_sync_duration_seconds_bucket"):
            name = "sync"
        if name:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            found[name][le] = float(line.rsplit(" ", 1)[1])
    return found


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=os.environ.get("POSTDUIF_BENCH_DIR", tempfile.gettempdir()))
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--messages", type=int, default=400_000, help="total messages in the peak phase")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seconds-at-half", type=float, default=20)
    parser.add_argument("--rate", type=float, default=None, help="msgs/s for the latency phase (default: half the peak)")
    parser.add_argument("--latency-producers", type=int, default=None,
                        help="producer processes in the latency phase (default: --producers)")
    parser.add_argument("--skip-peak", action="store_true", help="only the latency phase, at --rate, on a fresh broker")
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "postduif"))
    args = parser.parse_args()
    if args.skip_peak and not args.rate:
        parser.error("--skip-peak needs --rate")

    data = tempfile.mkdtemp(prefix="postduif-produce-bench-", dir=args.data_dir)
    port = free_port()
    http_port = free_port()
    address = "127.0.0.1:%d" % port
    broker = subprocess.Popen([args.binary, "serve", "--port", str(port), "--http-port", str(http_port),
                               "--data", data, "--durability", "fsync",
                               "--default-partitions", str(args.partitions), "--log-level", "warning"])
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": address})
        for name in ["peak", "half"]:
            for future in admin.create_topics([NewTopic(name, args.partitions, 1)]).values():
                future.result()

        peak_rate = None
        if not args.skip_peak:
            cpu_before = proc_cpu_seconds(broker.pid)
            results = multiprocessing.Queue()
            per_producer = args.messages // args.producers
            workers = [multiprocessing.Process(target=produce_peak, args=(address, "peak", per_producer, i, results))
                       for i in range(args.producers)]
            start = time.monotonic()
            for w in workers:
                w.start()
            outcomes = [results.get() for _ in workers]
            for w in workers:
                w.join()
            elapsed = time.monotonic() - start
            cpu_peak = proc_cpu_seconds(broker.pid) - cpu_before
            delivered = sum(o[0] for o in outcomes)
            bytes_total = delivered * 1024
            peak_rate = delivered / elapsed
            print("fsync syncs are shared by group commit; peak phase:")
            print("peak produce: %d messages in %.1f s = %.0f msgs/s, %.1f MB/s (1 KiB values), broker CPU %.2f s/GB"
                  % (delivered, elapsed, peak_rate, bytes_total / elapsed / 1e6, cpu_peak / (bytes_total / 1e9)))

            received, consume_elapsed = consume_all(address, "peak", delivered)
            print("consume: %d messages in %.1f s = %.0f msgs/s, %.1f MB/s" % (received, consume_elapsed, received / max(consume_elapsed, 1e-9), received * 1024 / max(consume_elapsed, 1e-9) / 1e6))

        half = args.rate or peak_rate / 2
        latency_producers = args.latency_producers or args.producers
        per_producer_rate = half / latency_producers
        before = broker_histograms(http_port)
        results = multiprocessing.Queue()
        workers = [multiprocessing.Process(target=produce_at_rate, args=(address, "half", per_producer_rate, args.seconds_at_half, results))
                   for _ in range(latency_producers)]
        for w in workers:
            w.start()
        outcomes = [results.get() for _ in workers]
        for w in workers:
            w.join()
        latencies = sorted(sum((o[0] for o in outcomes), []))
        achieved = sum(o[1] for o in outcomes)
        sent = sum(o[2] for o in outcomes)
        stored = stored_messages(address, "half", args.partitions)
        print("latency phase: intended %.0f msgs/s, generator achieved %.0f msgs/s, %d sent, %d in the log, %d latency samples: produce latency p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms"
              % (half, achieved, sent, stored, len(latencies), percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3,
                 percentile(latencies, 99.9) * 1e3, latencies[-1] * 1e3 if latencies else float("nan")))
        after = broker_histograms(http_port)
        for name, label in [("produce", "broker-side Produce request time"), ("sync", "WAL sync time")]:
            counts = {le: after[name][le] - before[name].get(le, 0) for le in after[name]}
            total = counts.get("+Inf", 0)
            if total:
                shares = ", ".join("%.2f%% <= %s s" % (100 * counts[le] / total, le) for le in ["0.005", "0.01", "0.025", "0.05"])
                print("%s (%d, %s producer process(es)): %s" % (label, total, latency_producers, shares))
        print("broker peak memory (VmHWM): %.0f MiB" % proc_peak_memory_mib(broker.pid))
    finally:
        broker.send_signal(signal.SIGTERM)
        code = broker.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)
        print("broker stopped with exit code %d" % code)


if __name__ == "__main__":
    main()
