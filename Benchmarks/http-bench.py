#!/usr/bin/env python3
"""HTTP against the Kafka port, in the same sitting, with clients we did
not write:

    .venv/bin/python Benchmarks/http-bench.py [--pairs 3] [--seconds 10] [--batch 100] [--connections 32] [--rate 2000]

On release brokers (`none` durability: the disk is not what is measured),
a fresh one with an empty data folder for each run, a topic of 4
partitions, 1 KiB values:
1. Produce throughput, in alternating pairs: librdkafka's peak
   (Benchmarks/clients/rdkafka-bench.c, closed loop, linger 5, acks=all)
   against wrk (Debian's) POSTing batches of --batch records in the
   REST Proxy's binary format over --connections connections. Figures:
   records/s of each, their ratio (the aim: HTTP at least half), and
   wrk's request latency.
2. Consume latency at --rate msgs/s produced by confluent-kafka (the
   send time in the value): a Server-Sent Events stream read with aiohttp
   against a confluent-kafka consumer, both reading the same records.

Servers start on free loopback ports; exactly the one started is stopped."""
import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

import aiohttp
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchkit import RELEASE_BINARY, ROOT, free_port, percentile, start_broker


def wrk_run(url, body_path, seconds, connections):
    script = body_path + ".lua"
    with open(script, "w") as f:
        f.write('local f = io.open("%s", "rb")\nwrk.body = f:read("*a")\nf:close()\n' % body_path)
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/vnd.kafka.binary.v2+json"\n')
    out = subprocess.run(["wrk", "-t2", "-c%d" % connections, "-d%ds" % seconds, "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = {p: m for p, m in re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", out)}
    return rate, int(errors.group(1)) if errors else 0, latency


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--bin", default=RELEASE_BINARY)
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="postduif-http-bench-")
    bench = os.path.join(work, "rdkafka-bench")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", bench, os.path.join(ROOT, "Benchmarks/clients/rdkafka-bench.c"), "-lrdkafka", "-lpthread"], check=True)
    body_path = os.path.join(work, "body.json")
    with open(body_path, "w") as f:
        json.dump({"records": [{"key": base64.b64encode(b"room-%d" % i).decode(), "value": base64.b64encode(os.urandom(1024)).decode()}
                               for i in range(args.batch)]}, f)

    def fresh_broker(name):
        """A broker of its own for one run, on an empty data folder: a run
        after gigabytes already written pays for page-cache memory the
        machine had not yet touched (the Kafka port's figure fell from
        800,000 to 470,000 records/s over four runs on one broker), so runs
        on one broker would not be alike."""
        folder = os.path.join(work, name)
        os.makedirs(folder)
        proxy = free_port()
        process, address = start_broker(args.bin, folder, ["--http-proxy-port", str(proxy)], wait_port=proxy)
        return process, address, "http://127.0.0.1:%d" % proxy, folder

    def stop_broker(process, folder):
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)

    broker = None
    try:
        kafka_rates, http_rates, http_p50, http_p99 = [], [], [], []
        for pair in range(args.pairs):
            broker, address, _, folder = fresh_broker("kafka-%d" % pair)
            topic = "kafka"
            admin = AdminClient({"bootstrap.servers": address})
            admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
            out = os.path.join(args.out, "http-bench-kafka-%d.json" % pair)
            subprocess.run([bench, "--brokers", address, "--topic", topic, "--partitions", "4", "--rate", "0", "--linger-ms", "5",
                            "--seconds", str(args.seconds), "--keys", "10000", "--label", "kafka-peak", "--json", out], check=True, capture_output=True)
            with open(out) as f:
                kafka_rates.append(json.load(f)["sendsPerSecond"])
            stop_broker(broker, folder)
            broker, address, base, folder = fresh_broker("http-%d" % pair)
            topic = "http"
            admin = AdminClient({"bootstrap.servers": address})
            admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
            rate, errors, latency = wrk_run("%s/topics/%s" % (base, topic), body_path, args.seconds, args.connections)
            assert errors == 0, "%d HTTP requests were refused" % errors
            stop_broker(broker, folder)
            broker = None
            http_rates.append(rate * args.batch)
            http_p50.append(latency.get("50"))
            http_p99.append(latency.get("99"))
            print("pair %d: Kafka (librdkafka) %.0f records/s, HTTP (wrk, %d per request) %.0f records/s, request p50 %s p99 %s"
                  % (pair, kafka_rates[-1], args.batch, http_rates[-1], http_p50[-1], http_p99[-1]), flush=True)
        kafka, http = statistics.median(kafka_rates), statistics.median(http_rates)
        print("produce, medians of %d pairs: Kafka %.0f records/s, HTTP %.0f records/s: HTTP is %.2f of Kafka" % (args.pairs, kafka, http, http / kafka))

        broker, address, base, _ = fresh_broker("latency")
        admin = AdminClient({"bootstrap.servers": address})
        # Consume latency: SSE against a Kafka consumer on the same records.
        topic = "latency"
        admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
        sse_latency, kafka_latency = [], []
        stop = threading.Event()

        def kafka_reader():
            consumer = Consumer({"bootstrap.servers": address, "group.id": "latency-kafka", "auto.offset.reset": "latest", "fetch.wait.max.ms": 100})
            consumer.subscribe([topic])
            while not stop.is_set():
                message = consumer.poll(0.1)
                if message is not None and message.error() is None:
                    kafka_latency.append((time.monotonic_ns() - int(message.value()[:20])) / 1e6)
            consumer.close()

        async def sse_reader(ready):
            async with aiohttp.ClientSession() as session:
                async with session.get("%s/topics/%s/events?from=latest" % (base, topic), timeout=aiohttp.ClientTimeout(total=None)) as stream:
                    ready.set()
                    async for line in stream.content:
                        if stop.is_set():
                            return
                        if line.startswith(b"data: "):
                            value = base64.b64decode(json.loads(line[6:])["value"])
                            sse_latency.append((time.monotonic_ns() - int(value[:20])) / 1e6)

        def sse_thread(ready):
            asyncio.run(sse_reader(ready))

        ready = threading.Event()
        threads = [threading.Thread(target=kafka_reader), threading.Thread(target=sse_thread, args=(ready,))]
        for thread in threads:
            thread.start()
        ready.wait(30)
        time.sleep(3)  # the Kafka consumer's group has its partitions
        producer = Producer({"bootstrap.servers": address, "linger.ms": 0, "acks": "all"})
        padding = b"x" * 1004
        interval = 1.0 / args.rate
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < args.seconds:
            due = start + sent * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            producer.produce(topic, key=b"room-%d" % (sent % 1000), value=b"%020d" % time.monotonic_ns() + padding)
            producer.poll(0)
            sent += 1
        producer.flush(30)
        time.sleep(2)
        stop.set()
        # One more record wakes the SSE reader so it sees the stop.
        producer.produce(topic, value=b"%020d" % time.monotonic_ns())
        producer.flush(10)
        for thread in threads:
            thread.join(timeout=30)
        print("consume latency at %d msgs/s, %d sent: SSE (aiohttp) %d read, p50 %.2f ms p99 %.2f ms; Kafka (confluent-kafka) %d read, p50 %.2f ms p99 %.2f ms"
              % (args.rate, sent, len(sse_latency), percentile(sse_latency, 0.5), percentile(sse_latency, 0.99),
                 len(kafka_latency), percentile(kafka_latency, 0.5), percentile(kafka_latency, 0.99)))
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
