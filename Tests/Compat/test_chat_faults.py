"""Delivery under faults: a 100-member room served by three gateways over
one broker. While one member sends, a gateway is killed (SIGKILL) and
restarted, then the broker is restarted. The second test runs the same
with the first gateway inside the broker's process (`serve
--with-gateway`, as `make run` starts it), and that one process is killed
with SIGKILL instead: a third of the members lose their gateway and every
member the broker. Every member long-polls /sync the
way a Matrix client does (following `limited` timelines back with
/messages) and keeps what it sees by `unsigned.postduif.seq`; afterwards
each member has seen every acknowledged message exactly once after
de-duplication by sequence, in order, and no message was stored twice.
Bounded: every wait has a deadline."""
import asyncio
import signal
import time

import aiohttp
import pytest

from conftest import BrokerProcess
from test_chat import EmbeddedGateway, GatewayProcess

MEMBERS = 100
MESSAGES = 240


class Member:
    def __init__(self, name, gateway):
        self.name = name
        self.gateway = gateway
        self.token = None
        self.seen = {}          # sequence -> body
        self.duplicates = 0     # the same sequence delivered again (dropped)
        self.errors = 0

    @property
    def base(self):
        return self.gateway.url + "/_matrix/client/v3"

    def headers(self):
        return {"Authorization": "Bearer " + self.token}


async def call(session, method, url, member=None, retry_until=None, **kwargs):
    """One request; with `retry_until`, retried through outages until then."""
    while True:
        try:
            async with session.request(method, url, headers=member.headers() if member else None,
                                       timeout=aiohttp.ClientTimeout(total=20), **kwargs) as response:
                body = await response.json(content_type=None)
                if response.status == 200 or retry_until is None or time.monotonic() > retry_until:
                    return response.status, body
        except (aiohttp.ClientError, asyncio.TimeoutError):
            if retry_until is None or time.monotonic() > retry_until:
                raise
        await asyncio.sleep(0.2)


def keep(member, events):
    for event in events:
        if event.get("type") != "m.room.message":
            continue
        sequence = event["unsigned"]["postduif.seq"]
        if sequence in member.seen:
            member.duplicates += 1
        else:
            member.seen[sequence] = event["content"]["body"]


async def follow(session, member, room, stop):
    """A member's sync loop, as a Matrix client runs it."""
    since = None
    while not stop.is_set():
        params = {"timeout": "3000"}
        if since:
            params["since"] = since
        try:
            status, body = await call(session, "GET", member.base + "/sync", member, params=params)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            member.errors += 1
            await asyncio.sleep(0.2)
            continue
        if status != 200:
            member.errors += 1
            await asyncio.sleep(0.2)
            continue
        joined = body["rooms"]["join"].get(room)
        if joined:
            timeline = joined["timeline"]
            # The newest event seen before this answer: a gap is closed
            # once paging back reaches it (taken before this answer's
            # events are kept, or the first page would look like enough).
            known = max([s for s in member.seen] or [0])
            keep(member, timeline["events"])
            if timeline.get("limited"):
                # A gap: page back until the page reaches what was already seen.
                token = timeline.get("prev_batch")
                while token:
                    status, page = await call(session, "GET", member.base + "/rooms/%s/messages" % room, member,
                                              retry_until=time.monotonic() + 30, params={"dir": "b", "from": token, "limit": "50"})
                    assert status == 200, page
                    keep(member, page["chunk"])
                    sequences = [e["unsigned"]["postduif.seq"] for e in page["chunk"] if "unsigned" in e]
                    if not page.get("end") or not sequences or min(sequences) <= known:
                        break
                    token = page["end"]
        since = body["next_batch"]


async def scenario(broker, gateways, broker_signal=signal.SIGTERM):
    # One connection per long-polling member, plus the sender's: no pool limit.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        members = [Member("member%03d" % i, gateways[i % 3]) for i in range(MEMBERS)]

        async def register(member):
            status, body = await call(session, "POST", member.base + "/register", json={"username": member.name, "password": "pw-" + member.name})
            assert status == 200, body
            member.token = body["access_token"]
        await asyncio.gather(*(register(m) for m in members))

        owner = members[0]
        status, body = await call(session, "POST", owner.base + "/createRoom", owner, json={"name": "Crisis"})
        assert status == 200, body
        room = body["room_id"]
        for member in members[1:]:
            status, body = await call(session, "POST", owner.base + "/rooms/%s/invite" % room, owner, json={"user_id": "@%s:gov.test" % member.name})
            assert status == 200, body

        async def join(member):
            status, body = await call(session, "POST", member.base + "/join/%s" % room, member)
            assert status == 200, body
        await asyncio.gather(*(join(m) for m in members[1:]))

        print("room made and joined at", time.strftime("%H:%M:%S"), flush=True)
        stop = asyncio.Event()
        loops = [asyncio.create_task(follow(session, m, room, stop)) for m in members]
        await asyncio.sleep(2)

        sender = members[1]
        acknowledged = []
        loop = asyncio.get_running_loop()
        for i in range(MESSAGES):
            if i % 40 == 0:
                print("sending", i, time.strftime("%H:%M:%S"), flush=True)
            if i == 80:
                # A gateway dies without warning and comes back.
                gateways[2].stop(signal.SIGKILL)
                await asyncio.sleep(1)
                await loop.run_in_executor(None, gateways[2].start)
            if i == 160:
                # The broker restarts; the gateways find it again.
                await loop.run_in_executor(None, broker.stop, broker_signal)
                await asyncio.sleep(0.5)
                await loop.run_in_executor(None, broker.start)
            # Retried with the same transaction id through any outage: one event.
            status, body = await call(session, "PUT", sender.base + "/rooms/%s/send/m.room.message/txn-%d" % (room, i), sender,
                                      retry_until=time.monotonic() + 60, json={"msgtype": "m.text", "body": "msg-%04d" % i})
            assert status == 200, body
            acknowledged.append("msg-%04d" % i)
            await asyncio.sleep(0.02)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(set(acknowledged) <= set(m.seen.values()) for m in members):
                break
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait(loops, timeout=10)
        for task in loops:
            task.cancel()

        for member in members:
            missing = sorted(set(acknowledged) - set(member.seen.values()))
            assert not missing, "%s (on %s) never saw %d messages, e.g. %s" % (member.name, member.gateway.url, len(missing), missing[:5])
            bodies = [member.seen[s] for s in sorted(member.seen)]
            assert len(bodies) == len(set(bodies)), "%s: a message was stored twice" % member.name
            assert bodies == sorted(bodies), "%s: out of order" % member.name
        return sum(m.duplicates for m in members), sum(m.errors for m in members)


def test_every_member_sees_every_message_once_in_order_through_faults():
    broker = BrokerProcess().start()
    gateways = []
    try:
        gateways = [GatewayProcess(broker).start() for _ in range(3)]
        duplicates, errors = asyncio.run(asyncio.wait_for(scenario(broker, gateways), 300))
        print("duplicates dropped by sequence: %d, sync errors retried: %d" % (duplicates, errors))
    finally:
        for gateway in gateways:
            gateway.stop()
        broker.stop()


def test_killing_the_broker_with_its_gateway_inside_loses_nothing():
    broker = EmbeddedGateway().start()
    gateways = []
    try:
        gateways = [broker] + [GatewayProcess(broker).start() for _ in range(2)]
        duplicates, errors = asyncio.run(asyncio.wait_for(scenario(broker, gateways, broker_signal=signal.SIGKILL), 300))
        print("duplicates dropped by sequence: %d, sync errors retried: %d" % (duplicates, errors))
    finally:
        for gateway in gateways[1:]:
            gateway.stop()
        broker.stop()
