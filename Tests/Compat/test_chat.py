"""The chat gateway with a real Matrix client: matrix-nio drives
`postduif gateway` over a broker started by the test. Two users register
and log in, one creates a room and invites, the other joins, both send and
receive through long-poll /sync, page back through history, list joined
rooms and members; a third user, not a member, is refused. Then bad input:
malformed JSON, oversized bodies, unknown rooms, wrong tokens and replayed
transaction ids get Matrix errors, and nothing is stored twice.

Every test that takes the `chat` fixture runs twice: against a gateway
process beside a broker process, and against the gateway run inside the
broker's process (`postduif serve --with-gateway`, ADR 0016)."""
import asyncio
import email.utils
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest
from nio import (AsyncClient, JoinedMembersResponse, JoinedRoomsResponse, JoinResponse, LoginResponse,
                 RegisterResponse, RoomCreateResponse, RoomInviteResponse, RoomMessagesResponse,
                 RoomSendResponse, SyncResponse)

from conftest import BINARY, BrokerProcess, ServerProcess, free_port


class GatewayProcess(ServerProcess):
    def __init__(self, broker, extra_args=(), env=None):
        self.broker = broker
        self.extra_args = list(extra_args)
        self.env = env
        self.port = free_port()
        self.http_port = free_port()
        self.log_path = tempfile.mktemp(prefix="postduif-gateway-", suffix=".log")
        self.process = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [BINARY, "gateway", "--port", str(self.port), "--http-port", str(self.http_port), "--broker", self.broker.address, "--server-name", "gov.test",
             "--conversation-partitions", "2"] + self.extra_args,
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        return wait_for_matrix(self)


def wait_for_matrix(server):
    """Waits until `server` answers Matrix clients at its `url`; fails if
    its process exits or 60 s pass."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.process.poll() is None, "the gateway's process exited: " + server.read_log()
        try:
            with urllib.request.urlopen(server.url + "/_matrix/client/versions", timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the gateway did not answer within 60 s: " + server.read_log())


class EmbeddedGateway(BrokerProcess):
    """`postduif serve --with-gateway`: broker and gateway in one process.
    It stands in for a GatewayProcess: `port` and `url` are the gateway's,
    `http_port` the process's operations port (both sides' metrics), and
    `broker` the process itself, for tools that speak Kafka to it."""

    def __init__(self, extra_args=()):
        self.gateway_port = free_port()
        super().__init__(extra_args=["--with-gateway", "true", "--gateway-port", str(self.gateway_port), "--server-name", "gov.test",
                                     "--conversation-partitions", "2"] + list(extra_args))
        self.kafka_port = self.port

    @property
    def broker(self):
        return self

    @property
    def address(self):
        return "127.0.0.1:%d" % self.kafka_port

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.gateway_port

    def start(self):
        # BrokerProcess starts the broker on `port`; from then on `port` is
        # the gateway's, as a GatewayProcess's is (again at every restart).
        self.port = self.kafka_port
        super().start()
        self.port = self.gateway_port
        return wait_for_matrix(self)


@pytest.fixture(scope="module", params=["processes", "embedded"])
def chat(request):
    if request.param == "embedded":
        embedded = EmbeddedGateway(extra_args=["--durability", "none"]).start()
        yield embedded
        code = embedded.stop()
        assert code == 0, "broker with gateway did not stop cleanly on SIGTERM: " + embedded.read_log()
        return
    broker = BrokerProcess(extra_args=["--durability", "none"]).start()
    gateway = GatewayProcess(broker).start()
    yield gateway
    code = gateway.stop()
    broker.stop()
    assert code == 0, "gateway did not stop cleanly on SIGTERM: " + gateway.read_log()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 120))


async def registered(url, name):
    client = AsyncClient(url, "@%s:gov.test" % name)
    response = await client.register(name, "correct horse " + name)
    assert isinstance(response, RegisterResponse), response
    assert response.user_id == "@%s:gov.test" % name
    return client


def texts(events):
    return [getattr(e, "body", None) for e in events if getattr(e, "body", None) is not None]


def test_two_ministers_talk_and_a_stranger_is_refused(chat):
    run(ministers(chat.url))


async def ministers(url):
    """The matrix-nio scenario against the gateway at `url`."""
    alice = await registered(url, "alice")
    await alice.close()
    # Log in again with the password, as a person would on a new device.
    alice = AsyncClient(url, "@alice:gov.test")
    login = await alice.login("correct horse alice", device_name="laptop")
    assert isinstance(login, LoginResponse), login
    bob = await registered(url, "bob")
    eve = await registered(url, "eve")

    created = await alice.room_create(name="Ministerraad", topic="agenda")
    assert isinstance(created, RoomCreateResponse), created
    room = created.room_id
    assert room.startswith("!") and room.endswith(":gov.test")
    invited = await alice.room_invite(room, "@bob:gov.test")
    assert isinstance(invited, RoomInviteResponse), invited

    await bob.sync(timeout=0)
    assert room in bob.invited_rooms
    joined = await bob.join(room)
    assert isinstance(joined, JoinResponse), joined

    first = await alice.sync(timeout=0)
    assert isinstance(first, SyncResponse)
    assert room in alice.rooms
    assert alice.rooms[room].name == "Ministerraad"
    bob_first = await bob.sync(timeout=0)
    assert isinstance(bob_first, SyncResponse)

    # Bob long-polls; Alice's message wakes him.
    waiting = asyncio.create_task(bob.sync(timeout=30000, since=bob.next_batch))
    await asyncio.sleep(0.5)
    started = time.monotonic()
    sent = await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "Goedemorgen"})
    assert isinstance(sent, RoomSendResponse), sent
    woke = await waiting
    assert time.monotonic() - started < 10, "the long poll was not woken by the message"
    assert isinstance(woke, SyncResponse), woke
    assert "Goedemorgen" in texts(woke.rooms.join[room].timeline.events)

    reply = await bob.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "Dag Alice"})
    assert isinstance(reply, RoomSendResponse), reply
    # Alice's token is from before her own message: her next sync may answer
    # with that alone, and Bob's reply come with the one after.
    seen, deadline = [], time.monotonic() + 30
    while "Dag Alice" not in seen and time.monotonic() < deadline:
        got = await alice.sync(timeout=30000, since=alice.next_batch)
        if room in got.rooms.join:
            seen += texts(got.rooms.join[room].timeline.events)
    assert "Dag Alice" in seen, seen

    for i in range(30):
        sent = await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "punt %d" % i})
        assert isinstance(sent, RoomSendResponse), sent

    # Back through the history, page by page, from the newest.
    seen = []
    token = None
    for _ in range(20):
        page = await bob.room_messages(room, start=token or "", limit=7)
        assert isinstance(page, RoomMessagesResponse), page
        seen += texts(page.chunk)
        if not page.end:
            break
        token = page.end
    expected = ["punt %d" % i for i in reversed(range(30))] + ["Dag Alice", "Goedemorgen"]
    assert seen == expected

    rooms = await bob.joined_rooms()
    assert isinstance(rooms, JoinedRoomsResponse) and rooms.rooms == [room]
    members = await alice.joined_members(room)
    assert isinstance(members, JoinedMembersResponse)
    assert sorted(m.user_id for m in members.members) == ["@alice:gov.test", "@bob:gov.test"]

    # Eve is no member: refused everywhere, and told nothing about the room.
    refused = await eve.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "mag ik?"})
    assert getattr(refused, "status_code", None) == "M_FORBIDDEN", refused
    refused = await eve.room_messages(room, start="", limit=5)
    assert getattr(refused, "status_code", None) == "M_FORBIDDEN", refused
    refused = await eve.joined_members(room)
    assert getattr(refused, "status_code", None) == "M_FORBIDDEN", refused
    refused = await eve.join(room)
    assert getattr(refused, "status_code", None) == "M_FORBIDDEN", refused
    unknown = await eve.room_messages("!nosuchroom:gov.test", start="", limit=5)
    assert getattr(unknown, "status_code", None) == "M_FORBIDDEN", unknown
    eve_sync = await eve.sync(timeout=0)
    assert room not in eve_sync.rooms.join and room not in eve_sync.rooms.invite

    # A first sync on a new device carries the room's current state: a
    # member who joined after the earlier first syncs is in it (the gateway
    # serialises a room's state once per change and shares it).
    dora = await registered(url, "dora")
    assert isinstance(await alice.room_invite(room, "@dora:gov.test"), RoomInviteResponse)
    await dora.sync(timeout=0)
    assert isinstance(await dora.join(room), JoinResponse)
    # More messages than a first sync's timeline holds: Dora's join is then
    # only in the state part.
    for i in range(25):
        assert isinstance(await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "punt %d" % i}), RoomSendResponse)
    laptop = AsyncClient(url, "@bob:gov.test")
    assert isinstance(await laptop.login("correct horse bob", device_name="laptop"), LoginResponse)
    fresh = await laptop.sync(timeout=0)
    assert isinstance(fresh, SyncResponse), fresh
    assert set(laptop.rooms[room].users) == {"@alice:gov.test", "@bob:gov.test", "@dora:gov.test"}
    assert laptop.rooms[room].name == "Ministerraad"

    for client in (alice, bob, eve, dora, laptop):
        await client.close()


def call(chat, method, path, body=None, token=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(chat.url + "/_matrix/client/v3" + path, data=data, method=method)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_bad_input_gets_matrix_errors_and_nothing_is_stored_twice(chat):
    status, carol = call(chat, "POST", "/register", {"username": "carol", "password": "pw-carol"})
    assert status == 200, carol
    token = carol["access_token"]
    assert call(chat, "POST", "/register", {"username": "carol", "password": "other"})[1]["errcode"] == "M_USER_IN_USE"
    assert call(chat, "POST", "/register", {"username": "Not Valid!", "password": "x"})[1]["errcode"] == "M_INVALID_USERNAME"
    status, answer = call(chat, "POST", "/login", {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "carol"}, "password": "wrong"})
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")

    status, answer = call(chat, "POST", "/createRoom", raw=b"{not json", token=token)
    assert (status, answer["errcode"]) == (400, "M_NOT_JSON")
    status, answer = call(chat, "POST", "/createRoom", raw=b"[1, 2]", token=token)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    status, answer = call(chat, "POST", "/createRoom", {"room_version": "12"}, token=token)
    assert (status, answer["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION")
    status, answer = call(chat, "GET", "/joined_rooms", token="pdt_forged")
    assert (status, answer["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, answer = call(chat, "GET", "/joined_rooms")
    assert (status, answer["errcode"]) == (401, "M_MISSING_TOKEN")
    status, answer = call(chat, "GET", "/no/such/endpoint", token=token)
    assert (status, answer["errcode"]) == (404, "M_UNRECOGNIZED")

    status, created = call(chat, "POST", "/createRoom", {"name": "Begroting"}, token=token)
    assert status == 200, created
    room = created["room_id"]
    path = "/rooms/%s/send/m.room.message/" % urllib.request.quote(room)
    status, answer = call(chat, "PUT", path + "big", raw=json.dumps({"msgtype": "m.text", "body": "x" * 70000}).encode(), token=token)
    assert (status, answer["errcode"]) == (413, "M_TOO_LARGE")
    status, first = call(chat, "PUT", path + "txn-1", {"msgtype": "m.text", "body": "een keer"}, token=token)
    assert status == 200, first
    status, again = call(chat, "PUT", path + "txn-1", {"msgtype": "m.text", "body": "een keer"}, token=token)
    assert status == 200 and again["event_id"] == first["event_id"]
    # Path parameters are percent-decoded: "txn%2D1" is the transaction "txn-1".
    status, encoded = call(chat, "PUT", path + "txn%2D1", {"msgtype": "m.text", "body": "een keer"}, token=token)
    assert status == 200 and encoded["event_id"] == first["event_id"]
    status, answer = call(chat, "PUT", "/rooms/%ZZ/send/m.room.message/t", {"msgtype": "m.text", "body": "?"}, token=token)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    status, answer = call(chat, "PUT", "/rooms/%s/send/m.room.message/t" % urllib.request.quote("!unknown:gov.test"), {"msgtype": "m.text", "body": "?"}, token=token)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")

    status, page = call(chat, "GET", "/rooms/%s/messages?dir=b&limit=50" % urllib.request.quote(room), token=token)
    assert status == 200
    bodies = [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]
    assert bodies == ["een keer"], bodies


def postduif_user(chat, *args, password=None):
    result = subprocess.run([BINARY, "user", *args, "--chat", "--broker", chat.broker.address, "--server-name", "gov.test"]
                            + (["--password-stdin"] if password else []),
                            input=(password + "\n") if password else None, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def login(chat, user, password):
    return call(chat, "POST", "/login", {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})


def test_operators_manage_chat_accounts_with_postduif_user(chat):
    postduif_user(chat, "add", "secretaris", password="eerste")
    # Every gateway reads the accounts topic; this one has it within moments.
    deadline = time.monotonic() + 10
    while login(chat, "secretaris", "eerste")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    status, session = login(chat, "secretaris", "eerste")
    assert status == 200, session
    assert "@secretaris:gov.test" in postduif_user(chat, "list").split()

    postduif_user(chat, "add", "secretaris", password="tweede")
    deadline = time.monotonic() + 10
    while login(chat, "secretaris", "tweede")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert login(chat, "secretaris", "tweede")[0] == 200
    assert login(chat, "secretaris", "eerste")[1]["errcode"] == "M_FORBIDDEN"

    postduif_user(chat, "remove", "secretaris")
    deadline = time.monotonic() + 10
    while call(chat, "GET", "/account/whoami", token=session["access_token"])[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    status, answer = call(chat, "GET", "/account/whoami", token=session["access_token"])
    assert (status, answer["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert login(chat, "secretaris", "tweede")[1]["errcode"] == "M_FORBIDDEN"
    # The name stays taken: nobody registers as the removed account.
    assert call(chat, "POST", "/register", {"username": "secretaris", "password": "x"})[1]["errcode"] == "M_USER_IN_USE"
    assert "@secretaris:gov.test" not in postduif_user(chat, "list").split()


def test_read_markers_come_back_as_receipts_and_fully_read(chat):
    tokens = {}
    for name in ("reader", "writer"):
        status, body = call(chat, "POST", "/register", {"username": name, "password": "pw-" + name})
        assert status == 200, body
        tokens[name] = body["access_token"]
    status, created = call(chat, "POST", "/createRoom", {"name": "Notulen", "invite": ["@reader:gov.test"]}, token=tokens["writer"])
    room = created["room_id"]
    quoted = urllib.request.quote(room)
    assert call(chat, "POST", "/join/" + quoted, {}, token=tokens["reader"])[0] == 200
    status, sent = call(chat, "PUT", "/rooms/%s/send/m.room.message/r1" % quoted, {"msgtype": "m.text", "body": "lees mij"}, token=tokens["writer"])
    event = sent["event_id"]
    status, first = call(chat, "GET", "/sync?timeout=0", token=tokens["writer"])
    since = first["next_batch"]

    status, _ = call(chat, "POST", "/rooms/%s/read_markers" % quoted, {"m.fully_read": event, "m.read": event}, token=tokens["reader"])
    assert status == 200
    # The writer's long poll wakes with the reader's receipt.
    status, delta = call(chat, "GET", "/sync?timeout=10000&since=" + since, token=tokens["writer"])
    assert status == 200
    ephemeral = delta["rooms"]["join"][room]["ephemeral"]["events"]
    assert ephemeral and ephemeral[0]["type"] == "m.receipt", delta["rooms"]["join"][room]
    assert "@reader:gov.test" in ephemeral[0]["content"][event]["m.read"]
    # The reader's own fully-read marker comes back as room account data.
    status, own = call(chat, "GET", "/sync?timeout=0", token=tokens["reader"])
    account = own["rooms"]["join"][room]["account_data"]["events"]
    assert {"type": "m.fully_read", "content": {"event_id": event}} in account
    status, answer = call(chat, "POST", "/rooms/%s/receipt/m.bogus/%s" % (quoted, urllib.request.quote(event)), {}, token=tokens["reader"])
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")


def test_concurrent_sends_share_produce_requests_and_each_gets_its_own_event(chat):
    """While earlier Produce requests are unanswered the gateway sends the
    records that arrive in one request (as a Kafka producer batches); each
    send must still get the event id of its own record, and every record
    must be stored once."""
    import concurrent.futures
    status, owner = call(chat, "POST", "/register", {"username": "batcher", "password": "pw-batcher"})
    assert status == 200, owner
    token = owner["access_token"]
    rooms = []
    for name in ("Batch A", "Batch B"):
        status, created = call(chat, "POST", "/createRoom", {"name": name}, token=token)
        assert status == 200, created
        rooms.append(created["room_id"])
    requests_before = metric(chat, "postduif_gateway_produce_requests_total")
    records_before = metric(chat, "postduif_gateway_produced_records_total")

    def send(number):
        room = rooms[number % 2]
        body = "bericht %d" % number
        path = "/rooms/%s/send/m.room.message/batch-%d" % (urllib.request.quote(room), number)
        status, answer = call(chat, "PUT", path, {"msgtype": "m.text", "body": body}, token=token)
        assert status == 200, answer
        return room, answer["event_id"], body

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        sent = list(pool.map(send, range(640)))
    assert len({event_id for _, event_id, _ in sent}) == 640

    # Large messages at once (near the 64 KiB event limit): shared requests
    # stay inside a topic's 1 MiB batch limit, and each is stored once.
    def send_large(number):
        room = rooms[0]
        body = ("groot %d " % number) + "x" * 60000
        path = "/rooms/%s/send/m.room.message/large-%d" % (urllib.request.quote(room), number)
        status, answer = call(chat, "PUT", path, {"msgtype": "m.text", "body": body}, token=token)
        assert status == 200, answer
        return room, answer["event_id"], body

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        sent += list(pool.map(send_large, range(96)))

    requests = metric(chat, "postduif_gateway_produce_requests_total") - requests_before
    records = metric(chat, "postduif_gateway_produced_records_total") - records_before
    assert records == 736, (records, requests)
    # (urllib closes each connection, so these sends take the router's way
    # in both set-ups; inside the broker's process its Produce frames are
    # handed over as calls.)
    assert requests < records, "no request carried more than one send: %d requests for %d records" % (requests, records)

    for room in rooms:
        stored = {}
        start = ""
        while True:
            status, page = call(chat, "GET", "/rooms/%s/messages?dir=f&limit=100%s" % (urllib.request.quote(room), start), token=token)
            assert status == 200, page
            for event in page["chunk"]:
                if event["type"] == "m.room.message":
                    assert event["event_id"] not in stored, "stored twice: " + event["event_id"]
                    stored[event["event_id"]] = event["content"]["body"]
            if "end" not in page or not page["chunk"]:
                break
            start = "&from=" + urllib.request.quote(page["end"])
        expected = {event_id: body for sent_room, event_id, body in sent if sent_room == room}
        assert stored == expected


def test_the_gateway_reports_metrics_and_readiness(chat):
    with urllib.request.urlopen("http://127.0.0.1:%d/ready" % chat.http_port, timeout=5) as response:
        assert response.status == 200
    # Some traffic first, so the request counters exist.
    call(chat, "GET", "/joined_rooms")
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % chat.http_port, timeout=5) as response:
        text = response.read().decode()
    for name in ("postduif_gateway_deliveries_total", "postduif_gateway_local_users", "hb_requests_total"):
        assert name in text, name


def test_closed_registration_leaves_accounts_to_operators(chat):
    closed = GatewayProcess(chat.broker, ["--registration", "closed"]).start()
    try:
        status, answer = call(closed, "POST", "/register", {"username": "indringer", "password": "x"})
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
        postduif_user(chat, "add", "ambtenaar", password="geheim")
        deadline = time.monotonic() + 10
        while login(closed, "ambtenaar", "geheim")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert login(closed, "ambtenaar", "geheim")[0] == 200
    finally:
        assert closed.stop() == 0


def test_the_gateway_authenticates_to_a_sasl_broker():
    broker = BrokerProcess(extra_args=["--sasl", "true", "--durability", "none"])
    added = subprocess.run([BINARY, "user", "add", "chat-gateway", "--password-stdin", "--data", broker.data_dir],
                           input="gateway-secret\n", capture_output=True, text=True, timeout=30)
    assert added.returncode == 0, added.stderr
    broker.start()
    env = dict(os.environ, POSTDUIF_GATEWAY_BROKER_USER="chat-gateway", POSTDUIF_GATEWAY_BROKER_PASSWORD="gateway-secret")
    gateway = GatewayProcess(broker, env=env)
    try:
        gateway.start()
        status, body = call(gateway, "POST", "/register", {"username": "beveiligd", "password": "pw"})
        assert status == 200, body
        token = body["access_token"]
        status, room = call(gateway, "POST", "/createRoom", {"name": "Vertrouwelijk"}, token=token)
        assert status == 200, room
        status, sent = call(gateway, "PUT", "/rooms/%s/send/m.room.message/s1" % urllib.request.quote(room["room_id"]),
                            {"msgtype": "m.text", "body": "achter SASL"}, token=token)
        assert status == 200, sent
        status, page = call(gateway, "GET", "/rooms/%s/messages?dir=b&limit=5" % urllib.request.quote(room["room_id"]), token=token)
        assert "achter SASL" in [e["content"].get("body") for e in page["chunk"]]
    finally:
        gateway.stop()
    # Wrong credentials: the gateway does not start, and says why.
    wrong = GatewayProcess(broker, env=dict(env, POSTDUIF_GATEWAY_BROKER_PASSWORD="wrong"))
    with pytest.raises(AssertionError):
        wrong.start()
    assert "refused the credentials of" in wrong.read_log()
    wrong.stop()
    broker.stop()


def test_the_matrix_load_tool_counts_every_copy(chat):
    """`postduif-bench matrix` (its own long-poll client, which reads the
    bench messages out of /sync answers without decoding the JSON) counts
    each message once for each member, open and closed loop, and in
    encrypted rooms every key share once for each other member's device."""
    bench = os.path.join(os.path.dirname(BINARY), "postduif-bench")
    for extra in (["--rate", "20"], [], ["--encrypted", "--rotation-messages", "5"]):
        out = tempfile.mktemp(prefix="postduif-matrix-", suffix=".json")
        result = subprocess.run([bench, "matrix", "--url", chat.url, "--server-name", "gov.test", "--members", "4", "--seconds", "2",
                                 "--json", out] + extra, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr[-2000:]
        with open(out) as f:
            report = json.load(f)
        os.unlink(out)
        assert report["sent"] > 0 and report["sendErrors"] == 0, report
        assert report["deliveries"] == report["expectedDeliveries"] == report["sent"] * 4, report
        if "--encrypted" in extra:
            # A share before the first message and one every five: the three others' devices each get one.
            assert report["keyShares"] == (report["sent"] + 4) // 5, report
            assert report["toDeviceMessages"] == report["keyShares"] * 3, report
            assert report["toDeviceDelivered"] == report["toDeviceMessages"], report
        else:
            assert "keyShares" not in report, report


class RawConnection:
    """One keep-alive HTTP/1.1 connection, written to as bytes, so that a
    test controls what arrives together (requests pipelined in one write)."""

    def __init__(self, chat):
        self.socket = socket.create_connection(("127.0.0.1", chat.port), timeout=30)
        self.reader = self.socket.makefile("rb")

    def request(self, method, path, token=None, body=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        head = "%s /_matrix/client/v3%s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
        if token:
            head += "Authorization: Bearer %s\r\n" % token
        if body is not None or raw is not None:
            head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
        return head.encode() + b"\r\n" + data

    def send(self, *requests):
        self.socket.sendall(b"".join(requests))

    def response(self):
        status = self.reader.readline()
        assert status.startswith(b"HTTP/1.1 "), status
        length = None
        self.headers = {}
        while True:
            line = self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            self.headers[name.lower()] = value.strip()
            if name.lower() == "content-length":
                length = int(value)
        assert length is not None, "no content-length"
        return int(status.split()[1]), json.loads(self.reader.read(length))

    def close(self):
        self.reader.close()
        self.socket.close()


def metric(chat, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % chat.http_port, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
    return 0.0


def long_polls(chat):
    return metric(chat, "postduif_gateway_long_polls")


def test_sends_on_a_keep_alive_connection_get_the_same_answers_in_order(chat):
    """Inside the broker's process a keep-alive message send is answered on
    the event loop and appended without a Produce frame (ADR 0017); in
    separate processes the router answers it. Pipelined on one connection,
    good and bad sends get the same answers either way, in order, each
    message is stored once, and the connection stays usable."""
    status, body = call(chat, "POST", "/register", {"username": "bode", "password": "pw-bode"})
    assert status == 200, body
    token = body["access_token"]
    status, created = call(chat, "POST", "/createRoom", {"name": "Post"}, token=token)
    assert status == 200, created
    room = urllib.request.quote(created["room_id"])
    path = "/rooms/%s/send/m.room.message/" % room
    fast_before = metric(chat, "postduif_gateway_fast_sends_total")
    # The position to sync from comes over another connection: a request
    # the router answers first on this one would make its first sends
    # timing-dependent (the router's response can reach the client before
    # its end passes the fast path, and sends behind an unfinished answer
    # go to the router too; on a loaded machine they all did).
    status, first = call(chat, "GET", "/sync?timeout=0", token=token)
    assert status == 200, first
    since = first["next_batch"]
    connection = RawConnection(chat)
    try:
        message = {"msgtype": "m.text", "body": "eenmaal"}
        connection.send(
            connection.request("PUT", path + "k1", token, message),
            connection.request("PUT", path + "k1", token, message),
            connection.request("PUT", path + "k%31", token, message),
            connection.request("PUT", path + "k2", token, raw=b"{not json"),
            connection.request("PUT", path + "k3", token, raw=b"[1, 2]"),
            connection.request("PUT", path + "k4", token, raw=json.dumps({"msgtype": "m.text", "body": "x" * 70000}).encode()),
            connection.request("PUT", "/rooms/%s/send/m.room.message/k5" % urllib.request.quote("!elders:gov.test"), token, message),
            connection.request("PUT", path + "k6", "pdt_forged", message),
            connection.request("PUT", path + "k7", None, message),
            connection.request("GET", "/joined_rooms", token),
            connection.request("GET", "/sync?timeout=10000&since=" + since, token))
        status, sent = connection.response()
        assert status == 200 and sent["event_id"].startswith("$"), sent
        assert connection.response() == (200, sent)
        assert connection.response() == (200, sent)
        assert [(status, answer["errcode"]) for status, answer in (connection.response() for _ in range(6))] == [
            (400, "M_NOT_JSON"), (400, "M_BAD_JSON"), (413, "M_TOO_LARGE"), (403, "M_FORBIDDEN"), (401, "M_UNKNOWN_TOKEN"), (401, "M_MISSING_TOKEN")]
        assert connection.response() == (200, {"joined_rooms": [created["room_id"]]})
        status, seen = connection.response()
        events = seen["rooms"]["join"][created["room_id"]]["timeline"]["events"]
        assert status == 200 and [e["event_id"] for e in events] == [sent["event_id"]], seen
    finally:
        connection.close()
    status, page = call(chat, "GET", "/rooms/%s/messages?dir=b&limit=50" % room, token=token)
    assert status == 200 and [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"] == ["eenmaal"], page
    if isinstance(chat, EmbeddedGateway):
        assert metric(chat, "postduif_gateway_fast_sends_total") - fast_before == 9
    else:
        assert metric(chat, "postduif_gateway_fast_sends_total") == 0


def test_one_connection_keeps_its_order_and_a_closed_long_poll_leaves_nothing(chat):
    """A plain keep-alive /sync is answered on the gateway's event loop,
    other requests by the router: answers on one connection still come in
    the order of the requests, whichever path each takes, errors are Matrix
    JSON, and a long poll whose connection closes is dropped at once."""
    status, body = call(chat, "POST", "/register", {"username": "griffier", "password": "pw-griffier"})
    assert status == 200, body
    token = body["access_token"]
    status, created = call(chat, "POST", "/createRoom", {"name": "Agenda"}, token=token)
    room = urllib.request.quote(created["room_id"])
    fast_before = metric(chat, "postduif_gateway_fast_syncs_total")
    connection = RawConnection(chat)
    try:
        connection.send(connection.request("GET", "/sync?timeout=0", token))
        status, first = connection.response()
        assert status == 200 and created["room_id"] in first["rooms"]["join"], first
        since = first["next_batch"]

        # A parked sync, a request behind it, then the message that wakes it.
        polls_before = long_polls(chat)
        connection.send(connection.request("GET", "/sync?timeout=20000&since=" + since, token),
                        connection.request("GET", "/joined_rooms", token))
        # Parked once the gauge counts it: then the send must wake it.
        deadline = time.monotonic() + 5
        while long_polls(chat) <= polls_before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert long_polls(chat) > polls_before, "the sync never parked"
        started = time.monotonic()
        status, sent = call(chat, "PUT", "/rooms/%s/send/m.room.message/o1" % room, {"msgtype": "m.text", "body": "punt een"}, token=token)
        assert status == 200, sent
        status, woken = connection.response()
        assert status == 200 and time.monotonic() - started < 10, woken
        assert connection.headers["content-type"] == "application/json", connection.headers
        assert abs(email.utils.parsedate_to_datetime(connection.headers["date"]).timestamp() - time.time()) < 60, connection.headers
        events = woken["rooms"]["join"][created["room_id"]]["timeline"]["events"]
        assert [e["event_id"] for e in events] == [sent["event_id"]], events
        status, joined = connection.response()
        assert status == 200 and joined == {"joined_rooms": [created["room_id"]]}, joined
        since = woken["next_batch"]

        # A send and, in the same write, the sync that should see it.
        connection.send(connection.request("PUT", "/rooms/%s/send/m.room.message/o2" % room, token, {"msgtype": "m.text", "body": "punt twee"}),
                        connection.request("GET", "/sync?timeout=20000&since=" + since, token))
        status, second = connection.response()
        assert status == 200 and "event_id" in second, second
        status, seen = connection.response()
        events = seen["rooms"]["join"][created["room_id"]]["timeline"]["events"]
        assert status == 200 and [e["event_id"] for e in events] == [second["event_id"]], seen
        since = seen["next_batch"]

        # Errors on the fast path are Matrix JSON and keep the connection.
        connection.send(connection.request("GET", "/sync?timeout=0", "pdt_forged"),
                        connection.request("GET", "/sync?since=bogus", token))
        assert connection.response() == (401, {"errcode": "M_UNKNOWN_TOKEN", "error": "unknown or revoked access token"})
        status, answer = connection.response()
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
        for bogus in ("s1__0_0", "s1_0_0", "s1_0_0_0_0", "s99999999999999999999_0_0_0", "t1_0_0_0", "s1_0_0_0_"):
            connection.send(connection.request("GET", "/sync?timeout=0&since=" + bogus, token))
            status, answer = connection.response()
            assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM"), bogus
        connection.send(connection.request("GET", "/sync?timeout=0&since=" + since, token))
        status, quiet = connection.response()
        assert status == 200 and quiet["rooms"]["join"] == {}, quiet
        # The event loop answered some of these (the first sync of a user new
        # here and a sync behind an open request go through the router).
        assert metric(chat, "postduif_gateway_fast_syncs_total") >= fast_before + 3

        # A token logged out elsewhere stops working on this connection too.
        status, second_login = login(chat, "griffier", "pw-griffier")
        assert status == 200, second_login
        connection.send(connection.request("GET", "/sync?timeout=0&since=" + since, token))
        assert connection.response()[0] == 200
        assert call(chat, "POST", "/logout", {}, token=token)[0] == 200
        connection.send(connection.request("GET", "/sync?timeout=0&since=" + since, token))
        assert connection.response() == (401, {"errcode": "M_UNKNOWN_TOKEN", "error": "unknown or revoked access token"})
        token = second_login["access_token"]

        connection.send(connection.request("GET", "/sync?timeout=30000&since=" + since, token))
        deadline = time.monotonic() + 5
        while long_polls(chat) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert long_polls(chat) >= 1
    finally:
        connection.close()
    deadline = time.monotonic() + 5
    while long_polls(chat) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert long_polls(chat) == 0
