#!/usr/bin/env python3
"""Many WebSocket subscribers on one node (Docs/benchmarks.md):

    .venv/bin/python Benchmarks/ws-subscribers.py [--subscribers 10000] [--records 10]

On one release broker, --subscribers WebSockets (aiohttp, in one client
process) subscribe to a topic of 4 partitions from its end; the broker's
RSS is read once all are open (the aim: within 1 GiB); then --records
records are written one a second with confluent-kafka, each carrying its
send time, and the figure is the time from send to arrival over every
subscriber and record (p50, p99, max), with how many arrived.

Servers start on free loopback ports; exactly the one started is stopped."""
import argparse
import asyncio
import base64
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time

import aiohttp
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchkit import RELEASE_BINARY, free_port, percentile, rss_mb, start_broker


async def run(args, address, url, broker_pid):
    latencies = []
    arrived = 0
    opened = 0
    ready = asyncio.Event()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def subscriber():
        nonlocal arrived, opened
        async with session.ws_connect(url, heartbeat=None, autoping=True) as ws:
            opened += 1
            if opened == args.subscribers:
                ready.set()
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                value = base64.b64decode(json.loads(message.data)["value"])
                latencies.append((time.monotonic_ns() - int(value[:20])) / 1e6)
                arrived += 1

    tasks = []
    started = time.monotonic()
    for i in range(args.subscribers):
        tasks.append(asyncio.create_task(subscriber()))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(ready.wait(), 300)
    connect_seconds = time.monotonic() - started
    await asyncio.sleep(6)  # every reader's first Fetch is parked
    rss_idle = rss_mb(broker_pid)
    producer = Producer({"bootstrap.servers": address, "linger.ms": 0})
    for r in range(args.records):
        producer.produce("fanout", value=b"%020d" % time.monotonic_ns() + b"x" * 200, partition=r % 4)
        producer.flush(10)
        await asyncio.sleep(1)
    deadline = time.monotonic() + 60
    while arrived < args.subscribers * args.records and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    rss_after = rss_mb(broker_pid)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    print("%d WebSocket subscribers open in %.1f s; broker RSS %.0f MB idle, %.0f MB after; %d of %d deliveries, send to arrival p50 %.0f ms, p99 %.0f ms, max %.0f ms"
          % (args.subscribers, connect_seconds, rss_idle, rss_after, arrived, args.subscribers * args.records,
             percentile(latencies, 0.5), percentile(latencies, 0.99), max(latencies) if latencies else float("nan")))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=10)
    parser.add_argument("--bin", default=RELEASE_BINARY)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="postduif-ws-bench-")
    proxy = free_port()
    broker, address = start_broker(args.bin, work, ["--http-proxy-port", str(proxy)], wait_port=proxy)
    try:
        admin = AdminClient({"bootstrap.servers": address})
        admin.create_topics([NewTopic("fanout", 4, 1)])["fanout"].result(30)
        asyncio.run(run(args, address, "http://127.0.0.1:%d/topics/fanout/ws?from=latest" % proxy, broker.pid))
    finally:
        broker.terminate()
        broker.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
