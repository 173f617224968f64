#!/usr/bin/env python3
"""The fault campaign: a seeded nemesis over three (or, `--brokers 5`, five) brokers and a
three-member etcd, each in a network namespace of its own on one bridge,
while an idempotent acks=all producer writes over 1,000 conversations, a
consumer group commits offsets and two members chat through a gateway. Each round makes a topic, injects one
or two faults from the round's schedule (SIGKILL or SIGSTOP of a broker
or an etcd member, a node's link cut, a broker cut from etcd but not from
its clients, a rolling restart, a partition reassignment; in about a third
of the rounds also a broker's disk full or slow, injected by a preloaded
library, Tests/Chaos/diskfault.c), heals them,
waits for every replica to be back in sync and checks: every acknowledged
record is read exactly once and in order per conversation; the group's
committed offsets never moved back; every chat message the gateway
acknowledged is in the room's history; every replica is back in sync. At the
end the brokers stop and `postduif inspect` must find every replica's log
intact and the same as the others' (start, end, batches, bytes). The schedule of round r comes from Random(seed * 1000003 + r):
a failing seed replays the same faults (the timing of the system under
test varies, not the schedule).

    make chaos ROUNDS=N SEED=S [BROKERS=5] [JOBS=J]   (outside make test; root for namespaces)
    Tests/Chaos/chaos.py --rounds N --seed S [--brokers 5] [--jobs J] [--cluster-rounds C]

With --jobs J, J campaigns run at once, each on a cluster of its own over
its share of the rounds; every cluster is replaced by a fresh one after C
rounds (100 unless told).

Exit status 0: nothing lost; 1: a check failed (the round, seed and what
was lost are printed); 2: the machine cannot make network namespaces."""
import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "Tests", "Compat"))

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from test_netcut import build_bridge, ip, namespaces_allowed, remove_bridge, unused_prefix, wait_port  # noqa: E402

BINARY = os.environ.get("POSTDUIF_BIN", os.path.join(ROOT, ".build", "debug", "postduif"))
BROKERS = (1, 2, 3)
MEMBERS = (1, 2, 3)


class Lost(AssertionError):
    """A check failed: something acknowledged went missing or moved back."""


class ChaosCluster:
    def __init__(self):
        tag = "%04x" % random.SystemRandom().randrange(0x10000)
        self.prefix, self.tag = unused_prefix(), tag
        self.hub = "pchub-" + tag
        self.spaces = {("b", n): "pcb%d-%s" % (n, tag) for n in BROKERS}
        self.spaces.update({("e", n): "pce%d-%s" % (n, tag) for n in MEMBERS})
        self.root_link = "pcr-" + tag
        self.dir = tempfile.mkdtemp(prefix="postduif-chaos-")
        self.processes = {}
        self.made = []
        # Brokers the nemesis keeps down (killed until healed, or mid-restart):
        # the supervisor leaves them alone.
        self.held = set()
        self.lock = threading.RLock()

    def address(self, node):
        kind, n = node
        return self.prefix + str((10 if kind == "b" else 20) + n)

    def link(self, node):
        return "pc%s%dh-%s" % (node[0], node[1], self.tag)

    @property
    def bootstrap(self):
        return ",".join("%s:9092" % self.address(("b", n)) for n in BROKERS)

    @property
    def etcd_endpoints(self):
        return ",".join("http://%s:2379" % self.address(("e", n)) for n in MEMBERS)

    def build(self):
        build_bridge(self.made, self.hub, [(space, "pc%s%da-%s" % (node[0], node[1], self.tag), self.link(node), self.address(node))
                                           for node, space in self.spaces.items()],
                     self.root_link, "pcrh-" + self.tag, self.prefix)

    def spawn(self, name, node, argv):
        log = open(os.path.join(self.dir, name + ".log"), "ab")
        self.processes[name] = subprocess.Popen(["ip", "netns", "exec", self.spaces[node], *argv], stdout=log, stderr=subprocess.STDOUT)

    def start_member(self, n):
        node = ("e", n)
        cluster = ",".join("e%d=http://%s:2380" % (m, self.address(("e", m))) for m in MEMBERS)
        self.spawn("etcd-%d" % n, node, [
            "etcd", "--name", "e%d" % n, "--data-dir", os.path.join(self.dir, "etcd-%d" % n),
            "--listen-client-urls", "http://%s:2379" % self.address(node), "--advertise-client-urls", "http://%s:2379" % self.address(node),
            "--listen-peer-urls", "http://%s:2380" % self.address(node), "--initial-advertise-peer-urls", "http://%s:2380" % self.address(node),
            "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "chaos-" + self.tag,
            # Pre-vote: a member back from a cut does not force an election
            # (Docs/operations.md recommends it for every etcd cluster).
            "--heartbeat-interval", "100", "--election-timeout", "1000", "--pre-vote"])

    def build_disk_faults(self):
        """Tests/Chaos/diskfault.c as a library each broker preloads, and
        one control file per broker (no fault to begin with)."""
        self.disk_faults = os.path.join(self.dir, "diskfault.so")
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", self.disk_faults, os.path.join(HERE, "diskfault.c"), "-ldl"], check=True)
        for n in BROKERS:
            self.disk(n)

    @staticmethod
    def refusals(log):
        with open(log, "rb") as f:
            return f.read().count(b"No space left on device")

    def disk(self, n, delay_ms=0, full=False):
        """Sets broker n's disk fault; no arguments heal it. The file is
        written in place, never truncated: a broker maps it, and reading
        a mapped page past the end of its file is SIGBUS (an early
        version of this campaign "crashed" a broker that way)."""
        path = os.path.join(self.dir, "disk-%d" % n)
        with open(path, "r+b" if os.path.exists(path) else "wb") as f:
            f.write(struct.pack("<ii", delay_ms * 1000, 1 if full else 0))

    def start_broker(self, n, wait=True):
        node = ("b", n)
        self.spawn("broker-%d" % n, node, [
            "env", "LD_PRELOAD=" + self.disk_faults, "POSTDUIF_DISK_FAULTS=" + os.path.join(self.dir, "disk-%d" % n),
            BINARY, "serve", "--node-id", str(n), "--host", self.address(node), "--port", "9092", "--http-port", "9644",
            "--data", os.path.join(self.dir, "broker-%d" % n), "--etcd-endpoints", self.etcd_endpoints,
            "--log-level", "info", "--default-partitions", "3", "--leader-rebalance-interval-ms", "3000"])
        if wait:
            wait_port(self.address(node), 9092, timeout=60)

    def start(self):
        self.build()
        self.build_disk_faults()
        for n in MEMBERS:
            self.start_member(n)
        for n in MEMBERS:
            wait_port(self.address(("e", n)), 2379)
        for n in BROKERS:
            self.start_broker(n)
        return self

    def alive(self, name):
        return self.processes[name].poll() is None

    def running_pid(self, name):
        """The pid of the program itself (ip netns exec execs it in place)."""
        return self.processes[name].pid

    def signal(self, name, sig):
        if self.alive(name):
            os.kill(self.running_pid(name), sig)

    def kill(self, name):
        self.signal(name, signal.SIGKILL)
        self.processes[name].wait(timeout=30)

    def restart(self, name):
        kind, n = name.split("-")
        with self.lock:
            self.held.discard(name)
            if self.alive(name):
                return
            if kind == "etcd":
                self.start_member(int(n))
            else:
                # A broker that was killed while its lease lived waits it out at start.
                self.start_broker(int(n), wait=False)

    def supervise(self, log):
        """Starts again every broker that stopped: a broker whose lease
        ended stops by design, and its supervisor (systemd's Restart=,
        Kubernetes) starts it again."""
        with self.lock:
            for n in BROKERS:
                name = "broker-%d" % n
                if not self.alive(name) and name not in self.held:
                    log("  broker %d had stopped (%s); starting it" % (n, self.last_words(name)))
                    self.restart(name)

    def last_words(self, name):
        lines = [line for line in self.log(name).splitlines() if line.startswith("Error:")]
        return lines[-1][:160] if lines else "no error printed"

    def cut(self, node):
        ip("-n", self.hub, "link", "set", self.link(node), "down")

    def heal(self, node):
        ip("-n", self.hub, "link", "set", self.link(node), "up")

    def cut_from_etcd(self, broker):
        space = self.spaces[("b", broker)]
        for n in MEMBERS:
            ip("-n", space, "route", "add", "blackhole", self.address(("e", n)) + "/32", check=False)

    def rejoin_etcd(self, broker):
        space = self.spaces[("b", broker)]
        for n in MEMBERS:
            ip("-n", space, "route", "del", "blackhole", self.address(("e", n)) + "/32", check=False)

    def log(self, name):
        with open(os.path.join(self.dir, name + ".log"), errors="replace") as f:
            return f.read()

    def stop_brokers(self):
        for n in BROKERS:
            self.signal("broker-%d" % n, signal.SIGCONT)
            self.signal("broker-%d" % n, signal.SIGTERM)
        for n in BROKERS:
            process = self.processes["broker-%d" % n]
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def remove(self):
        for name, process in self.processes.items():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        remove_bridge(self.made, self.root_link)
        if os.environ.get("CHAOS_KEEP") is None:
            shutil.rmtree(self.dir, ignore_errors=True)


# MARK: the nemesis

FAULTS = ["kill-broker", "pause-broker", "kill-etcd", "pause-etcd", "cut-broker", "cut-etcd", "broker-from-etcd",
          "rolling-restart", "reassign"]
# A broker's disk full (writes needing new blocks fail with ENOSPC, as on
# a full file system) or slow (each write and sync of a file waits),
# through Tests/Chaos/diskfault.c.
DISK_FAULT_KINDS = ["full-disk", "slow-disk"]
DISK_FAULTS = True


def schedule(seed, round_number):
    """The round's faults: one or two, each with when it starts and how
    long it lasts (seconds), and its target. Pure: a seed replays."""
    rng = random.Random(seed * 1000003 + round_number)
    faults = []
    for _ in range(rng.choice((1, 1, 2))):
        kind = rng.choice(FAULTS)
        faults.append({"fault": kind, "target": rng.choice(BROKERS if "etcd" not in kind or kind == "broker-from-etcd" else MEMBERS),
                       "at": round(rng.uniform(0.5, 3.0), 2), "lasts": round(rng.uniform(1.0, 5.0), 2)})
    replication = rng.choice((2, 3))
    if DISK_FAULTS:
        # Drawn from a stream of their own, so the faults above are the
        # same as before disk faults existed (`--no-disk-faults` replays
        # a seed run then exactly).
        disk = random.Random(seed * 1000033 + round_number + 7)
        if disk.random() < 0.3:
            fault = {"fault": disk.choice(DISK_FAULT_KINDS), "target": disk.choice(BROKERS),
                     "at": round(disk.uniform(0.5, 3.0), 2), "lasts": round(disk.uniform(1.0, 5.0), 2)}
            if fault["fault"] == "slow-disk":
                fault["delay_ms"] = disk.choice((5, 20, 100))
            faults.append(fault)
    return {"round": round_number, "replication": replication, "faults": faults}


class Nemesis:
    def __init__(self, cluster, topic, log):
        self.cluster, self.topic, self.log = cluster, topic, log
        self.heals = []

    def inject(self, fault):
        c, kind, target = self.cluster, fault["fault"], fault["target"]
        self.log("  %5.2fs inject %s %d" % (fault["at"], kind, target))
        if kind == "kill-broker":
            c.held.add("broker-%d" % target)
            c.kill("broker-%d" % target)
            self.heals.append(lambda: c.restart("broker-%d" % target))
        elif kind == "pause-broker":
            c.signal("broker-%d" % target, signal.SIGSTOP)
            self.heals.append(lambda: c.signal("broker-%d" % target, signal.SIGCONT))
        elif kind == "kill-etcd":
            c.kill("etcd-%d" % target)
            self.heals.append(lambda: c.restart("etcd-%d" % target))
        elif kind == "pause-etcd":
            c.signal("etcd-%d" % target, signal.SIGSTOP)
            self.heals.append(lambda: c.signal("etcd-%d" % target, signal.SIGCONT))
        elif kind == "cut-broker":
            c.cut(("b", target))
            self.heals.append(lambda: c.heal(("b", target)))
        elif kind == "cut-etcd":
            c.cut(("e", target))
            self.heals.append(lambda: c.heal(("e", target)))
        elif kind == "broker-from-etcd":
            c.cut_from_etcd(target)
            self.heals.append(lambda: c.rejoin_etcd(target))
        elif kind == "rolling-restart":
            for n in BROKERS:
                name = "broker-%d" % n
                if not c.alive(name):
                    continue
                c.held.add(name)
                c.signal(name, signal.SIGCONT)
                c.signal(name, signal.SIGTERM)
                try:
                    c.processes[name].wait(timeout=30)
                except subprocess.TimeoutExpired:
                    c.kill(name)
                c.restart(name)
                wait_port(c.address(("b", n)), 9092, timeout=60)
        elif kind == "reassign":
            self.reassign(target)
        elif kind == "full-disk":
            log = os.path.join(c.dir, "broker-%d.log" % target)
            before = c.refusals(log)
            c.disk(target, full=True)

            def heal_full():
                c.disk(target)
                # The fault's mark in the broker's own words.
                self.log("         broker %d logged %d writes refused for want of space" % (target, c.refusals(log) - before))
            self.heals.append(heal_full)
        elif kind == "slow-disk":
            c.disk(target, delay_ms=fault["delay_ms"])
            self.heals.append(lambda: c.disk(target))

    def reassign(self, target):
        """Moves partition 0 of the round's topic to another replica set
        (the one without `target`, or with it when it had none)."""
        from kafka import KafkaAdminClient, TopicPartition as KTopicPartition
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.cluster.bootstrap, request_timeout_ms=10000)
            try:
                current = AdminClient({"bootstrap.servers": self.cluster.bootstrap}).list_topics(self.topic, timeout=10).topics[self.topic].partitions[0].replicas
                others = [b for b in BROKERS if b != target]
                wanted = others if target in current else [target] + list(current)[:len(current) - 1]
                answer = admin.alter_partition_reassignments({KTopicPartition(self.topic, 0): wanted[:len(current)]})
                self.log("         reassign %s/0 %s -> %s: %s" % (self.topic, list(current), wanted[:len(current)], answer))
            finally:
                admin.close()
        except Exception as error:  # a fault may make the request fail: that is allowed
            self.log("         reassign refused: %s" % error)

    def heal(self):
        for heal in reversed(self.heals):
            heal()
        self.heals = []


# MARK: the workload and the checks

class Chat:
    """Chat through a gateway (outside the nemesis, in front of the three
    brokers): per round Ann sends messages to a room she shares with Ben,
    each retried with its transaction id until the gateway acknowledges it;
    afterwards Ben must find every acknowledged message in the room's
    history."""

    def __init__(self, bootstrap, tag):
        from test_chat import GatewayProcess

        class Brokers:
            address = bootstrap

        self.gateway = GatewayProcess(Brokers()).start()
        self.ann, self.ben = "ann%s" % tag, "ben%s" % tag
        self.room = None

    async def login(self, name):
        from nio import AsyncClient, LoginResponse
        client = AsyncClient(self.gateway.url, "@%s:gov.test" % name)
        for _ in range(120):
            if isinstance(await client.login("correct horse " + name), LoginResponse):
                return client
            await asyncio.sleep(0.5)
        raise Unavailable("%s cannot log in at the gateway" % name)

    def prepare(self):
        from nio import AsyncClient, RegisterResponse, RoomCreateResponse

        async def go():
            for name in (self.ann, self.ben):
                client = AsyncClient(self.gateway.url, "@%s:gov.test" % name)
                registered = await client.register(name, "correct horse " + name)
                assert isinstance(registered, RegisterResponse), registered
                await client.close()
            ann, ben = await self.login(self.ann), await self.login(self.ben)
            made = await ann.room_create(name="Chaos", invite=["@%s:gov.test" % self.ben])
            assert isinstance(made, RoomCreateResponse), made
            self.room = made.room_id
            await ben.join(self.room)
            await ann.close()
            await ben.close()

        asyncio.run(go())

    def send(self, round_number, count, acknowledged):
        from nio import RoomSendResponse

        async def go():
            ann = await self.login(self.ann)
            try:
                for i in range(count):
                    body = "r%d-%d" % (round_number, i)
                    deadline = time.monotonic() + 90
                    while time.monotonic() < deadline:
                        try:
                            sent = await ann.room_send(self.room, "m.room.message", {"msgtype": "m.text", "body": body}, tx_id=body)
                        except Exception:
                            sent = None
                        if isinstance(sent, RoomSendResponse):
                            acknowledged.add(body)
                            break
                        await asyncio.sleep(0.3)
                    await asyncio.sleep(0.05)
            finally:
                await ann.close()

        asyncio.run(go())

    def seen(self, wanted, timeout=90):
        """The wanted bodies Ben finds paging back through the room."""
        from nio import RoomMessagesResponse

        async def go():
            ben = await self.login(self.ben)
            found = set()
            deadline = time.monotonic() + timeout
            try:
                while time.monotonic() < deadline and not wanted <= found:
                    token = None
                    for _ in range(200):
                        page = await ben.room_messages(self.room, start=token or "", limit=100)
                        if not isinstance(page, RoomMessagesResponse):
                            break
                        found |= {getattr(e, "body", None) for e in page.chunk} & wanted
                        if wanted <= found or not page.end:
                            break
                        token = page.end
                    if not wanted <= found:
                        await asyncio.sleep(1)
            finally:
                await ben.close()
            return found

        return asyncio.run(go())

    def stop(self):
        self.gateway.stop()


class Workload:
    def __init__(self, bootstrap, topic, total, rate):
        self.bootstrap, self.topic, self.total, self.rate = bootstrap, topic, total, rate
        self.acknowledged, self.failed = {}, []
        self.commits, self.backwards, self.commit_count = {}, [], 0
        self.stop = threading.Event()

    def produce(self):
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                             "message.timeout.ms": 60000, "retry.backoff.ms": 100, "socket.timeout.ms": 5000})

        def delivered(error, message):
            if error is None:
                self.acknowledged[message.value()] = (message.partition(), message.offset())
            else:
                self.failed.append(str(error))

        started = time.monotonic()
        for i in range(self.total):
            while True:
                try:
                    producer.produce(self.topic, key=b"conversation-%d" % (i % 1000), value=b"%08d" % i, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            ahead = (i + 1) / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.flush(90)

    def consume_and_commit(self, group):
        """A group member reading the topic and committing synchronously;
        each committed offset it reads back must not be below the last."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False,
                             "auto.offset.reset": "earliest", "session.timeout.ms": 10000})
        consumer.subscribe([self.topic])
        try:
            while not self.stop.is_set():
                message = consumer.poll(0.2)
                if message is None or message.error():
                    continue
                try:
                    consumer.commit(message=message, asynchronous=False)
                    partition = TopicPartition(self.topic, message.partition())
                    committed = consumer.committed([partition], timeout=5)[0].offset
                except KafkaException:
                    continue  # a fault: the commit may not have happened
                last = self.commits.get(message.partition(), -1)
                if committed >= 0 and committed < last:
                    self.backwards.append((message.partition(), last, committed))
                self.commits[message.partition()] = max(last, committed)
                self.commit_count += 1
        finally:
            consumer.close()


def wait_until(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except Exception:
            pass
        time.sleep(0.5)
    return False


def in_sync(cluster, topic, log=lambda line: None):
    cluster.supervise(log)
    partitions = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(topic, timeout=5).topics[topic].partitions
    return partitions and all(p.leader > 0 and sorted(p.isrs) == sorted(p.replicas) for p in partitions.values())


class Unavailable(AssertionError):
    """The cluster did not recover (no loss shown, but no progress either)."""


def read_all(bootstrap, topic, timeout=120):
    """Every record of the topic up to each partition's high watermark;
    Unavailable when a partition cannot be read that far in time."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-check-%f" % time.time(), "enable.auto.commit": False})
    try:
        partitions = sorted(AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout
        ends = {}
        while len(ends) < len(partitions):
            for p in partitions:
                try:
                    ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise Unavailable("no high watermark of %s/%d within %d s" % (topic, p, timeout))
                    time.sleep(0.5)
        positions = {p: 0 for p in partitions}
        seen = []
        while any(positions[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise Unavailable("partitions %s of %s not readable to their high watermarks %s within %d s (read to %s)"
                                  % ([p for p in partitions if positions[p] < ends[p]], topic, ends, timeout, positions))
            message = consumer.poll(0.3)
            if message is None or message.error():
                continue
            seen.append((message.key(), message.value()))
            positions[message.partition()] = message.offset() + 1
        # Anything past the high watermarks read at the start is read too.
        end = time.monotonic() + 1
        while time.monotonic() < end:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                seen.append((message.key(), message.value()))
        return seen
    finally:
        consumer.close()


def check(cluster, workload, topic, log, chat=None, chat_acknowledged=None):
    if not wait_until(lambda: in_sync(cluster, topic, log), 120):
        raise Unavailable("the replicas of %s did not return to sync within 120 s" % topic)
    seen = read_all(cluster.bootstrap, topic)
    values = [value for _, value in seen]
    duplicates = len(values) - len(set(values))
    missing = set(workload.acknowledged) - set(values)
    if missing:
        # With where each was acknowledged (partition, offset): the replay starts there.
        raise Lost("%d acknowledged records missing, e.g. %s" % (len(missing), [(value, workload.acknowledged[value]) for value in sorted(missing)[:5]]))
    if duplicates:
        raise Lost("%d records read twice" % duplicates)
    by_key = {}
    for key, value in seen:
        by_key.setdefault(key, []).append(int(value))
    for key, numbers in by_key.items():
        if numbers != sorted(numbers):
            raise Lost("conversation %s out of order" % key)
    if workload.backwards:
        raise Lost("committed offsets moved back: %s" % workload.backwards[:5])
    if chat is not None:
        found = chat.seen(set(chat_acknowledged))
        if found != set(chat_acknowledged):
            raise Lost("chat messages acknowledged by the gateway but not in the room: %s" % sorted(set(chat_acknowledged) - found)[:5])
    log("  checked: %d acknowledged, %d failed deliveries, all read once in order; %d commits never moved back%s"
        % (len(workload.acknowledged), len(workload.failed), workload.commit_count,
           "; %d chat messages acknowledged, all seen by the other member" % len(chat_acknowledged) if chat is not None else ""))


def inspect_identical(cluster, topics):
    """With the brokers stopped: each partition's log (start, end, batches,
    bytes) is the same on every broker holding it. The high watermarks may
    differ: a follower learns the last one from a fetch it never made."""
    rows = {}
    for n in BROKERS:
        result = subprocess.run([BINARY, "inspect", "--data", os.path.join(cluster.dir, "broker-%d" % n), "--skip-index"],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise Lost("postduif inspect found damage on broker %d:\n%s" % (n, result.stdout[-2000:]))
        for line in result.stdout.splitlines():
            fields = line.split()
            if fields and fields[0] in topics and fields[5] != "0":
                rows.setdefault((fields[0], fields[1]), set()).add((fields[2], fields[3], fields[5], fields[6]))
    differing = {key: value for key, value in rows.items() if len(value) > 1}
    if differing:
        raise Lost("replicas differ: %s" % differing)


def run(rounds, seed, log=print, first=1, chat=True):
    if not namespaces_allowed():
        return None
    cluster = ChaosCluster().start()
    stop_supervising = threading.Event()

    def supervisor():
        while not stop_supervising.wait(0.5):
            try:
                cluster.supervise(log)
            except Exception as error:
                log("  supervisor: %s" % error)

    threading.Thread(target=supervisor, daemon=True).start()
    talk = None
    started = time.monotonic()
    injected = 0
    topics = []
    try:
        if chat:
            talk = Chat(cluster.bootstrap, "%d" % seed)
            talk.prepare()
        for round_number in range(first, first + rounds):
            cluster.supervise(log)
            plan = schedule(seed, round_number)
            topic = "chaos-%d-%d" % (seed, round_number)
            topics.append(topic)
            log("round %d (seed %d): %s" % (round_number, seed, json.dumps(plan["faults"])))
            def make_topic():
                # A client of its own each time: after a rolling restart
                # librdkafka 2.0.2's admin client waits about 20 s on the
                # controller it knew (gone, no connection) before it asks
                # for metadata again; the broker answers in milliseconds
                # once asked.
                creator = AdminClient({"bootstrap.servers": cluster.bootstrap})
                try:
                    creator.create_topics([NewTopic(topic, 3, plan["replication"])])[topic].result(timeout=20)
                except Exception as error:
                    if "already exists" in str(error):
                        return True
                    # Said, so a round that cannot start shows why.
                    try:
                        seen = creator.list_topics(timeout=5).controller_id
                    except Exception as other:
                        seen = other
                    log("  creating %s: %r (controller per the client: %s)" % (topic, error, seen))
                    raise
                return True

            if not wait_until(make_topic, 60) or not wait_until(lambda: in_sync(cluster, topic), 60):
                raise Unavailable("round %d: topic %s not made in sync within 60 s" % (round_number, topic))
            workload = Workload(cluster.bootstrap, topic, total=3000, rate=600)
            # Daemons: a round that ends in an error must not leave the process unable to exit.
            producer = threading.Thread(target=workload.produce, daemon=True)
            consumer = threading.Thread(target=workload.consume_and_commit, args=("chaos-group-%d" % round_number,), daemon=True)
            chat_acknowledged = set()
            chatter = threading.Thread(target=talk.send, args=(round_number, 40, chat_acknowledged), daemon=True) if talk else None
            producer.start()
            consumer.start()
            if chatter:
                chatter.start()
            nemesis = Nemesis(cluster, topic, log)
            round_started = time.monotonic()
            try:
                for fault in sorted(plan["faults"], key=lambda f: f["at"]):
                    time.sleep(max(0, fault["at"] - (time.monotonic() - round_started)))
                    nemesis.inject(fault)
                    injected += 1
                time.sleep(max(f["lasts"] for f in plan["faults"]))
            except (AssertionError, subprocess.SubprocessError, OSError) as error:
                # A fault that could not be carried out in full (a broker that
                # did not come back within the rolling restart's wait): the
                # round goes on and its checks decide.
                log("  the nemesis could not finish: %s" % error)
            finally:
                nemesis.heal()
            producer.join(150)
            if chatter:
                chatter.join(200)
            workload.stop.set()
            consumer.join(30)
            if producer.is_alive():
                raise Unavailable("round %d: the producer did not finish" % round_number)
            check(cluster, workload, topic, log, talk, chat_acknowledged)
        stop_supervising.set()
        cluster.stop_brokers()
        inspect_identical(cluster, set(topics))
        elapsed = time.monotonic() - started
        log("campaign: %d rounds, %d faults injected, 0 acknowledged records lost, %.0f rounds per hour"
            % (rounds, injected, rounds * 3600 / elapsed))
        return True
    except Exception as lost:
        if not isinstance(lost, (Lost, Unavailable)):
            lost = Unavailable("the campaign itself failed: %r" % lost)
        what = "LOST" if isinstance(lost, Lost) else "STUCK (nothing shown lost)"
        log("%s in the campaign with seed %d: %s\n  replay: Tests/Chaos/chaos.py --seed %d --rounds %d --first %d; logs kept in %s"
            % (what, seed, lost, seed, rounds, first, cluster.dir))
        os.environ["CHAOS_KEEP"] = "1"
        return False
    finally:
        stop_supervising.set()
        if talk:
            talk.stop()
        cluster.remove()


def run_chunks(rounds, seed, first, chunk, chat, log):
    """Rounds first .. first+rounds-1, a fresh cluster for every `chunk`
    of them: each cluster ends with the check that every replica's log is
    intact and the same, so more clusters mean more of those checks, and
    no cluster carries hundreds of rounds' topics. Stops at the first
    failing chunk."""
    for start in range(first, first + rounds, chunk):
        outcome = run(min(chunk, first + rounds - start), seed, log=log, first=start, chat=chat)
        if not outcome:
            return outcome
    return True


def run_jobs(arguments, jobs):
    """`jobs` campaigns at once, each over its own share of the seed's
    rounds and its own cluster (namespaces, addresses and gateway port of
    its own): a round mostly waits on its faults and its paced workload,
    so a machine of two cores checks more rounds per hour this way. Each
    job's lines are printed prefixed with its number; the summary counts
    every job's rounds."""
    share, extra = divmod(arguments.rounds, jobs)
    children, start = [], arguments.first
    for job in range(jobs):
        count = share + (1 if job < extra else 0)
        if count == 0:
            continue
        argv = [sys.executable, os.path.abspath(__file__), "--seed", str(arguments.seed), "--rounds", str(count),
                "--first", str(start), "--brokers", str(len(BROKERS)), "--cluster-rounds", str(arguments.cluster_rounds)]
        argv += ["--no-chat"] if arguments.no_chat else []
        argv += ["--no-disk-faults"] if arguments.no_disk_faults else []
        children.append((job + 1, start, count, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        start += count

    def stop_children(signum, frame):
        # Each job removes its cluster (processes, namespaces) as it stops.
        for _, _, _, child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    started = time.monotonic()
    checked = {}
    lock = threading.Lock()

    def relay(job, child):
        for line in child.stdout:
            line = line.rstrip("\n")
            if line.startswith("  checked:"):
                with lock:
                    checked[job] = checked.get(job, 0) + 1
            print("[%d] %s" % (job, line), flush=True)

    relays = [threading.Thread(target=relay, args=(job, child)) for job, _, _, child in children]
    for thread in relays:
        thread.start()
    codes = [child.wait() for _, _, _, child in children]
    for thread in relays:
        thread.join()
    elapsed = time.monotonic() - started
    total = sum(checked.values())
    for (job, first, count, _), code in zip(children, codes):
        print("job %d: rounds %d-%d of seed %d, %d checked, %s" % (
            job, first, first + count - 1, arguments.seed, checked.get(job, 0),
            "clean" if code == 0 else "FAILED (exit %d; its lines say what and how to replay)" % code))
    print("campaign of %d jobs: %d of %d rounds checked in %.0f minutes, %.0f rounds per hour; %s" % (
        len(children), total, arguments.rounds, elapsed / 60, total * 3600 / max(elapsed, 1),
        "0 acknowledged records lost" if all(code == 0 for code in codes) else "NOT clean"))
    if any(code == 2 for code in codes):
        return 2
    return 0 if all(code == 0 for code in codes) else 1


def main():
    parser = argparse.ArgumentParser(description="Postduif's fault campaign (needs root for network namespaces).")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--first", type=int, default=1, help="the first round's number (to replay one round)")
    parser.add_argument("--no-chat", action="store_true", help="leave out the chat workload through a gateway")
    parser.add_argument("--no-disk-faults", action="store_true",
                        help="leave out full and slow disks (replays a seed's schedule as it was before they existed)")
    parser.add_argument("--brokers", type=int, choices=(3, 5), default=3, help="brokers in the cluster (a seed's schedule depends on it)")
    parser.add_argument("--jobs", type=int, default=1, help="campaigns at once, each on its own cluster and share of the rounds")
    parser.add_argument("--cluster-rounds", type=int, default=100, help="rounds per cluster before a fresh one is made")
    arguments = parser.parse_args()
    global BROKERS, DISK_FAULTS
    BROKERS = tuple(range(1, arguments.brokers + 1))
    DISK_FAULTS = not arguments.no_disk_faults
    if arguments.jobs < 1 or arguments.cluster_rounds < 1:
        parser.error("--jobs and --cluster-rounds must be at least 1")
    if arguments.jobs > 1:
        sys.exit(run_jobs(arguments, arguments.jobs))

    def stopped(signum, frame):
        # Through the `finally` of `run`: the cluster's processes and
        # namespaces go with the campaign.
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, stopped)
    outcome = run_chunks(arguments.rounds, arguments.seed, arguments.first, arguments.cluster_rounds,
                         not arguments.no_chat, lambda line: print(line, flush=True))
    if outcome is None:
        print("network namespaces need root and `ip netns`: the campaign cannot run here")
        sys.exit(2)
    sys.exit(0 if outcome else 1)


if __name__ == "__main__":
    main()
