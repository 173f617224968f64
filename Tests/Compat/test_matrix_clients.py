"""What Matrix clients ask of a homeserver as they start, against the
gateway inside the broker (`postduif serve --with-gateway`): both API
prefixes (r0 for libQuotient's Quaternion), CORS for browser clients,
capabilities, push rules, filters, profiles, account data, devices,
typing, TURN and .well-known; the sending device seeing its transaction
id; and a send retried across a gateway restart stored once. matrix-nio
drives what it covers; raw HTTP the rest."""
import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
from nio import AsyncClient, LoginResponse, RoomSendResponse, SyncResponse

from conftest import BrokerProcess
from test_chat import EmbeddedGateway, GatewayProcess, registered, run


@pytest.fixture(scope="module")
def gateway():
    embedded = EmbeddedGateway(extra_args=["--durability", "none"]).start()
    yield embedded
    assert embedded.stop() == 0, "broker with gateway did not stop cleanly: " + embedded.read_log()


def http(server, method, path, body=None, token=None, headers=None, prefix="/_matrix/client/v3"):
    """(status, headers, JSON or None) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + prefix + path, data=data, method=method)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, response.headers, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, error.headers, json.loads(text) if text else None


def account(server, name, device=None):
    """Registers `name` (or logs in again, with `device`); returns its token."""
    body = {"username": name, "password": "pw " + name}
    status, _, answer = http(server, "POST", "/register", body)
    if status != 200:
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "pw " + name}
        if device:
            login["device_id"] = device
        status, _, answer = http(server, "POST", "/login", login)
    assert status == 200, answer
    return answer["access_token"]


def room_with(server, token, *invited):
    status, _, answer = http(server, "POST", "/createRoom", {"invite": ["@%s:gov.test" % name for name in invited]}, token)
    assert status == 200, answer
    return answer["room_id"]


def join(server, token, room):
    status, _, answer = http(server, "POST", "/join/" + urllib.request.quote(room), {}, token)
    assert status == 200, answer


def sync(server, token, since=None, timeout=0, **query):
    params = dict(query)
    if since:
        params["since"] = since
    params["timeout"] = str(timeout)
    status, _, answer = http(server, "GET", "/sync?" + urllib.parse.urlencode(params), token=token)
    assert status == 200, answer
    return answer


def wait_for(server, token, since, found, seconds=10):
    """Long-polls from `since` until `found(answer)` is true; returns that answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = sync(server, token, since, timeout=1000)
        if found(answer):
            return answer
        since = answer["next_batch"]
    raise AssertionError("not seen within %d s" % seconds)


def test_both_prefixes_serve_every_route_and_versions_says_so(gateway):
    status, _, versions = http(gateway, "GET", "", prefix="/_matrix/client/versions")
    assert status == 200 and "r0.6.1" in versions["versions"] and "v1.11" in versions["versions"]
    # Quaternion's first request (libQuotient 0.6), then a whole session over r0.
    status, _, flows = http(gateway, "GET", "/login", prefix="/_matrix/client/r0")
    assert status == 200 and flows["flows"] == [{"type": "m.login.password"}]
    status, _, registered_r0 = http(gateway, "POST", "/register", {"username": "quaternion", "password": "pw"}, prefix="/_matrix/client/r0")
    assert status == 200, registered_r0
    token = registered_r0["access_token"]
    status, _, created = http(gateway, "POST", "/createRoom", {"name": "r0"}, token, prefix="/_matrix/client/r0")
    assert status == 200
    room = urllib.request.quote(created["room_id"])
    status, _, sent = http(gateway, "PUT", "/rooms/%s/send/m.room.message/r0-1" % room, {"msgtype": "m.text", "body": "over r0"}, token, prefix="/_matrix/client/r0")
    assert status == 200, sent
    status, _, synced = http(gateway, "GET", "/sync", token=token, prefix="/_matrix/client/r0")
    assert status == 200
    bodies = [e["content"].get("body") for e in synced["rooms"]["join"][created["room_id"]]["timeline"]["events"]]
    assert "over r0" in bodies
    # An unknown route under either prefix is a Matrix 404, not an HTML page.
    for prefix in ["/_matrix/client/r0", "/_matrix/client/v3"]:
        status, _, answer = http(gateway, "GET", "/no/such/route", token=token, prefix=prefix)
        assert status == 404 and answer["errcode"] == "M_UNRECOGNIZED"


def test_a_browser_preflight_and_its_requests_get_cors_headers(gateway):
    token = account(gateway, "browser")
    origin = {"Origin": "https://chat.gov.example"}
    preflight = dict(origin, **{"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "authorization, content-type"})
    for path in ["/sync", "/rooms/!x:gov.test/send/m.room.message/1", "/login", "/no/such/route"]:
        status, headers, _ = http(gateway, "OPTIONS", path, headers=preflight)
        assert status in (200, 204), path
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "PUT" in headers["Access-Control-Allow-Methods"] and "DELETE" in headers["Access-Control-Allow-Methods"]
        assert "authorization" in headers["Access-Control-Allow-Headers"].lower()
    # The answers themselves: a sync (answered on the event loop) and a router route.
    for path in ["/sync?timeout=0", "/capabilities"]:
        status, headers, _ = http(gateway, "GET", path, token=token, headers=origin)
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "*", path
    status, headers, _ = http(gateway, "GET", "/sync", token="wrong", headers=origin)
    assert status == 401 and headers["Access-Control-Allow-Origin"] == "*"


def test_what_clients_ask_at_start(gateway):
    token = account(gateway, "starter")
    status, _, capabilities = http(gateway, "GET", "/capabilities", token=token)
    assert status == 200 and capabilities["capabilities"]["m.room_versions"]["default"] == "10"
    status, _, turn = http(gateway, "GET", "/voip/turnServer", token=token)
    assert status == 200 and turn == {}
    status, _, well_known = http(gateway, "GET", "", prefix="/.well-known/matrix/client")
    assert status == 200 and well_known["m.homeserver"]["base_url"] == gateway.url
    # Push rules: the specification's defaults, in sync's account data too.
    status, _, rules = http(gateway, "GET", "/pushrules/", token=token)
    assert status == 200
    override = [rule["rule_id"] for rule in rules["global"]["override"]]
    assert override[0] == ".m.rule.master" and ".m.rule.invite_for_me" in override
    assert rules["global"]["content"][0]["pattern"] == "starter"
    first = sync(gateway, token)
    assert [e["content"] for e in first["account_data"]["events"] if e["type"] == "m.push_rules"] == [rules]
    # Edited: a user rule goes before the defaults, a default is switched
    # off, and the next sync carries the new set.
    status, _, _ = http(gateway, "PUT", "/pushrules/global/override/mute-bots", {"conditions": [{"kind": "event_match", "key": "sender", "pattern": "@bot*"}], "actions": []}, token)
    assert status == 200
    status, _, _ = http(gateway, "PUT", "/pushrules/global/underride/.m.rule.message/enabled", {"enabled": False}, token)
    assert status == 200
    status, _, enabled = http(gateway, "GET", "/pushrules/global/underride/.m.rule.message/enabled", token=token)
    assert status == 200 and enabled == {"enabled": False}
    changed = wait_for(gateway, token, first["next_batch"], lambda a: any(e["type"] == "m.push_rules" for e in a["account_data"]["events"]))
    pushed = [e["content"] for e in changed["account_data"]["events"] if e["type"] == "m.push_rules"][-1]
    assert [rule["rule_id"] for rule in pushed["global"]["override"]][:2] == [".m.rule.master", "mute-bots"]
    # Bad edits: a server rule cannot be deleted or made; unknown rules are 404.
    assert http(gateway, "DELETE", "/pushrules/global/override/.m.rule.master", token=token)[0] == 400
    assert http(gateway, "PUT", "/pushrules/global/room/.m.rule.mine", {"actions": []}, token)[0] == 400
    assert http(gateway, "GET", "/pushrules/global/override/nothing", token=token)[0] == 404
    assert http(gateway, "DELETE", "/pushrules/global/override/mute-bots", token=token)[0] == 200
    # Account data cannot carry push rules past /pushrules.
    assert http(gateway, "PUT", "/user/@starter:gov.test/account_data/m.push_rules", {"global": {}}, token)[0] == 400


def test_filters_limit_the_timeline_and_lazy_load_members(gateway):
    alice, bob, carol = account(gateway, "filter-a"), account(gateway, "filter-b"), account(gateway, "filter-c")
    room = room_with(gateway, alice, "filter-b", "filter-c")
    join(gateway, bob, room)
    join(gateway, carol, room)
    for number in range(5):
        assert http(gateway, "PUT", "/rooms/%s/send/m.room.message/f%d" % (urllib.request.quote(room), number), {"msgtype": "m.text", "body": "m%d" % number}, alice)[0] == 200
    status, _, made = http(gateway, "POST", "/user/@filter-b:gov.test/filter", {"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": True}}}, bob)
    assert status == 200
    status, _, stored = http(gateway, "GET", "/user/@filter-b:gov.test/filter/" + made["filter_id"], token=bob)
    assert status == 200 and stored["room"]["timeline"]["limit"] == 2
    # Another user's filters are not theirs to read or write.
    assert http(gateway, "GET", "/user/@filter-b:gov.test/filter/" + made["filter_id"], token=alice)[0] == 403
    joined = sync(gateway, bob, filter=made["filter_id"])["rooms"]["join"][room]
    assert [e["content"]["body"] for e in joined["timeline"]["events"]] == ["m3", "m4"] and joined["timeline"]["limited"]
    members = sorted(e["state_key"] for e in joined["state"]["events"] if e["type"] == "m.room.member")
    # Alice spoke, Bob is the user; Carol is left to /members.
    assert members == ["@filter-a:gov.test", "@filter-b:gov.test"]
    everyone = sync(gateway, carol)["rooms"]["join"][room]
    assert len(everyone["timeline"]["events"]) > 2
    assert sorted(e["state_key"] for e in everyone["state"]["events"] if e["type"] == "m.room.member") == ["@filter-a:gov.test", "@filter-b:gov.test", "@filter-c:gov.test"]
    # An inline filter works the same; an unknown id is refused.
    inline = sync(gateway, bob, filter=json.dumps({"room": {"timeline": {"limit": 1}}}))["rooms"]["join"][room]
    assert [e["content"]["body"] for e in inline["timeline"]["events"]] == ["m4"]
    status, _, answer = http(gateway, "GET", "/sync?filter=nope", token=bob)
    assert status == 400 and answer["errcode"] == "M_INVALID_PARAM"


def test_profiles_and_account_data(gateway):
    alice, bob = account(gateway, "profile-a"), account(gateway, "profile-b")
    room = room_with(gateway, alice, "profile-b")
    join(gateway, bob, room)
    since = sync(gateway, bob)["next_batch"]
    assert http(gateway, "GET", "/profile/@profile-a:gov.test")[2] == {"displayname": "profile-a"}
    assert http(gateway, "PUT", "/profile/@profile-a:gov.test/displayname", {"displayname": "Minister A"}, alice)[0] == 200
    assert http(gateway, "PUT", "/profile/@profile-a:gov.test/avatar_url", {"avatar_url": "mxc://gov.test/abc"}, alice)[0] == 200
    assert http(gateway, "GET", "/profile/@profile-a:gov.test")[2] == {"displayname": "Minister A", "avatar_url": "mxc://gov.test/abc"}
    assert http(gateway, "GET", "/profile/@profile-a:gov.test/displayname")[2] == {"displayname": "Minister A"}
    # The room's members see the new name in Alice's member event.
    seen = wait_for(gateway, bob, since, lambda a: any(e["type"] == "m.room.member" and e["content"].get("displayname") == "Minister A"
                                                         for r in a["rooms"]["join"].values() for e in r["timeline"]["events"]))
    assert seen
    # Nobody sets another's profile; an unknown user has none.
    assert http(gateway, "PUT", "/profile/@profile-a:gov.test/displayname", {"displayname": "mallory"}, bob)[0] == 403
    assert http(gateway, "GET", "/profile/@nobody:gov.test")[0] == 404
    assert http(gateway, "PUT", "/profile/@profile-a:gov.test/displayname", {"displayname": "x" * 300}, alice)[0] == 400
    # Account data: global and per room, read back, in the owner's syncs only.
    since_a = sync(gateway, alice)["next_batch"]
    since_b = sync(gateway, bob)["next_batch"]
    assert http(gateway, "PUT", "/user/@profile-a:gov.test/account_data/m.direct", {"@profile-b:gov.test": [room]}, alice)[0] == 200
    assert http(gateway, "PUT", "/user/@profile-a:gov.test/rooms/%s/account_data/m.tag" % urllib.request.quote(room), {"tags": {"m.favourite": {}}}, alice)[0] == 200
    assert http(gateway, "GET", "/user/@profile-a:gov.test/account_data/m.direct", token=alice)[2] == {"@profile-b:gov.test": [room]}
    assert http(gateway, "GET", "/user/@profile-a:gov.test/rooms/%s/account_data/m.tag" % urllib.request.quote(room), token=alice)[2] == {"tags": {"m.favourite": {}}}
    assert http(gateway, "GET", "/user/@profile-a:gov.test/account_data/m.direct", token=bob)[0] == 403
    assert http(gateway, "GET", "/user/@profile-a:gov.test/account_data/nothing", token=alice)[0] == 404
    answer = wait_for(gateway, alice, since_a, lambda a: any(e["type"] == "m.tag" for r in a["rooms"]["join"].values() for e in r["account_data"]["events"]))
    answer = sync(gateway, alice, since_a)
    assert {"type": "m.direct", "content": {"@profile-b:gov.test": [room]}} in answer["account_data"]["events"]
    assert {"type": "m.tag", "content": {"tags": {"m.favourite": {}}}} in answer["rooms"]["join"][room]["account_data"]["events"]
    # A first sync carries all of it; Bob's syncs none of it.
    assert {"type": "m.direct", "content": {"@profile-b:gov.test": [room]}} in sync(gateway, alice)["account_data"]["events"]
    bobs = sync(gateway, bob, since_b)
    assert not [e for e in bobs["account_data"]["events"] if e["type"] == "m.direct"]
    assert not [e for r in bobs["rooms"]["join"].values() for e in r["account_data"]["events"] if e["type"] == "m.tag"]


def test_devices_are_listed_renamed_and_deleted_with_the_password(gateway):
    laptop = account(gateway, "devices")
    phone = account(gateway, "devices", device="PHONE")
    status, _, listed = http(gateway, "GET", "/devices", token=laptop)
    assert status == 200 and "PHONE" in [d["device_id"] for d in listed["devices"]] and len(listed["devices"]) == 2
    assert http(gateway, "PUT", "/devices/PHONE", {"display_name": "Work phone"}, laptop)[0] == 200
    assert http(gateway, "GET", "/devices/PHONE", token=laptop)[2] == {"device_id": "PHONE", "display_name": "Work phone"}
    assert http(gateway, "GET", "/devices/NOPE", token=laptop)[0] == 404
    # User-interactive authentication: first the stages, then a wrong password, then the right one.
    status, _, stages = http(gateway, "DELETE", "/devices/PHONE", token=laptop)
    assert status == 401 and stages["flows"] == [{"stages": ["m.login.password"]}] and stages["session"]
    wrong = {"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "devices"}, "password": "guess", "session": stages["session"]}}
    status, _, refused = http(gateway, "DELETE", "/devices/PHONE", wrong, laptop)
    assert status == 401 and refused["errcode"] == "M_FORBIDDEN"
    assert http(gateway, "GET", "/account/whoami", token=phone)[0] == 200
    right = {"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "devices"}, "password": "pw devices", "session": stages["session"]}}
    assert http(gateway, "DELETE", "/devices/PHONE", right, laptop)[0] == 200
    status, _, gone = http(gateway, "GET", "/account/whoami", token=phone)
    assert status == 401 and gone["errcode"] == "M_UNKNOWN_TOKEN"
    assert [d["device_id"] for d in http(gateway, "GET", "/devices", token=laptop)[2]["devices"]] != ["PHONE"]
    assert "PHONE" not in [d["device_id"] for d in http(gateway, "GET", "/devices", token=laptop)[2]["devices"]]


def test_typing_reaches_the_room_and_ends(gateway):
    alice, bob, stranger = account(gateway, "typing-a"), account(gateway, "typing-b"), account(gateway, "typing-c")
    room = room_with(gateway, alice, "typing-b")
    join(gateway, bob, room)
    path = "/rooms/%s/typing/%s" % (urllib.request.quote(room), urllib.request.quote("@typing-a:gov.test"))

    def typing_in(answer):
        events = answer["rooms"]["join"].get(room, {}).get("ephemeral", {}).get("events", [])
        return [e["content"]["user_ids"] for e in events if e["type"] == "m.typing"]

    since = sync(gateway, bob)["next_batch"]
    assert http(gateway, "PUT", path, {"typing": True, "timeout": 20000}, alice)[0] == 200
    answer = wait_for(gateway, bob, since, lambda a: typing_in(a) == [["@typing-a:gov.test"]])
    assert http(gateway, "PUT", path, {"typing": False}, alice)[0] == 200
    answer = wait_for(gateway, bob, answer["next_batch"], lambda a: typing_in(a) == [[]])
    # Not renewed: it ends by itself.
    assert http(gateway, "PUT", path, {"typing": True, "timeout": 800}, alice)[0] == 200
    answer = wait_for(gateway, bob, answer["next_batch"], lambda a: typing_in(a) == [["@typing-a:gov.test"]])
    started = time.monotonic()
    wait_for(gateway, bob, answer["next_batch"], lambda a: typing_in(a) == [[]], seconds=5)
    assert time.monotonic() - started < 3
    # Only for oneself, only in one's rooms.
    assert http(gateway, "PUT", path, {"typing": True}, bob)[0] == 403
    assert http(gateway, "PUT", "/rooms/%s/typing/%s" % (urllib.request.quote(room), urllib.request.quote("@typing-c:gov.test")), {"typing": True}, stranger)[0] == 403


async def own_transaction_ids(url):
    alice = await registered(url, "txn-a")
    bob = await registered(url, "txn-b")
    created = await alice.room_create(invite=["@txn-b:gov.test"])
    await bob.join(created.room_id)
    await alice.sync(timeout=0)
    await bob.sync(timeout=0)
    sent = await alice.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": "mine"}, tx_id="nio-1")
    assert isinstance(sent, RoomSendResponse), sent

    async def find(client):
        for _ in range(20):
            response = await client.sync(timeout=1000)
            assert isinstance(response, SyncResponse), response
            for event in response.rooms.join.get(created.room_id).timeline.events if created.room_id in response.rooms.join else []:
                if event.event_id == sent.event_id:
                    return event
        raise AssertionError("the message did not arrive")

    own = await find(alice)
    other = await find(bob)
    assert own.source["unsigned"]["transaction_id"] == "nio-1"
    assert "transaction_id" not in other.source.get("unsigned", {})
    # Alice's other device does not see it as its own.
    second = AsyncClient(url, "@txn-a:gov.test")
    assert isinstance(await second.login("correct horse txn-a", device_name="second"), LoginResponse)
    first = await second.sync(timeout=0)
    events = [e for e in first.rooms.join[created.room_id].timeline.events if e.event_id == sent.event_id]
    assert events and "transaction_id" not in events[0].source.get("unsigned", {})
    for client in (alice, bob, second):
        await client.close()


def test_the_sending_device_sees_its_transaction_id(gateway):
    run(own_transaction_ids(gateway.url))


def test_a_to_device_send_retried_after_a_gateway_restart_arrives_once():
    """sendToDevice's transaction survives a restart: the retry of a send
    whose answer was lost is not delivered a second time, and a new
    transaction is."""
    broker = BrokerProcess(extra_args=["--durability", "none"]).start()
    gateway = GatewayProcess(broker).start()
    try:
        sender = account(gateway, "todevice-sender")
        recipient = account(gateway, "todevice-recipient", device=None)
        status, _, me = http(gateway, "GET", "/account/whoami", token=recipient)
        assert status == 200
        since = sync(gateway, recipient)["next_batch"]
        body = {"messages": {me["user_id"]: {me["device_id"]: {"n": 1}}}}
        status, _, _ = http(gateway, "PUT", "/sendToDevice/org.gov.test.ping/first", body, sender)
        assert status == 200
        assert gateway.stop() == 0
        gateway.start()
        # The retry, as a client whose answer was lost sends it; then a new one.
        status, _, _ = http(gateway, "PUT", "/sendToDevice/org.gov.test.ping/first", body, sender)
        assert status == 200
        status, _, _ = http(gateway, "PUT", "/sendToDevice/org.gov.test.ping/second", {"messages": {me["user_id"]: {me["device_id"]: {"n": 2}}}}, sender)
        assert status == 200
        received = []
        for _ in range(10):
            answer = sync(gateway, recipient, since=since, timeout=2000)
            received += [e["content"]["n"] for e in answer["to_device"]["events"] if e["type"] == "org.gov.test.ping"]
            since = answer["next_batch"]
            if 2 in received:
                break
        # Drained: one more sync brings nothing new.
        answer = sync(gateway, recipient, since=since, timeout=0)
        received += [e["content"]["n"] for e in answer["to_device"]["events"] if e["type"] == "org.gov.test.ping"]
        assert received == [1, 2], received
    finally:
        gateway.stop()
        broker.stop()


def test_typing_reaches_members_syncing_at_another_gateway():
    """Two gateways on one broker: Alice types at the first, Bob syncs at
    the second and sees her typing start and stop (chat-typing)."""
    broker = BrokerProcess(extra_args=["--durability", "none"]).start()
    first = GatewayProcess(broker).start()
    second = GatewayProcess(broker).start()
    try:
        alice = account(first, "typing-alice")
        bob = account(second, "typing-bob")
        room = room_with(first, alice, "typing-bob")
        # The second gateway knows the room once chat-state reaches it.
        deadline = time.monotonic() + 30
        while http(second, "POST", "/join/" + urllib.request.quote(room), {}, bob)[0] != 200:
            assert time.monotonic() < deadline, "the second gateway never saw the invite"
            time.sleep(0.2)
        since = sync(second, bob)["next_batch"]

        def typing_at_second(expected):
            nonlocal since
            for _ in range(10):
                answer = sync(second, bob, since=since, timeout=3000)
                since = answer["next_batch"]
                ephemeral = answer["rooms"]["join"].get(room, {}).get("ephemeral", {}).get("events", [])
                for event in ephemeral:
                    if event["type"] == "m.typing" and event["content"]["user_ids"] == expected:
                        return
            raise AssertionError("Bob never saw typing %s" % expected)

        path = "/rooms/%s/typing/%s" % (urllib.request.quote(room), urllib.request.quote("@typing-alice:gov.test"))
        assert http(first, "PUT", path, {"typing": True, "timeout": 20000}, alice)[0] == 200
        typing_at_second(["@typing-alice:gov.test"])
        assert http(first, "PUT", path, {"typing": False}, alice)[0] == 200
        typing_at_second([])
    finally:
        second.stop()
        first.stop()
        broker.stop()


def test_a_send_retried_after_a_gateway_restart_is_stored_once():
    broker = BrokerProcess(extra_args=["--durability", "none"]).start()
    gateway = GatewayProcess(broker).start()
    try:
        token = account(gateway, "restart")
        room = room_with(gateway, token)
        path = "/rooms/%s/send/m.room.message/before-restart" % urllib.request.quote(room)
        status, _, first = http(gateway, "PUT", path, {"msgtype": "m.text", "body": "once"}, token)
        assert status == 200
        assert gateway.stop() == 0
        gateway.start()
        # The retry, as a client whose answer was lost would send it.
        status, _, again = http(gateway, "PUT", path, {"msgtype": "m.text", "body": "once"}, token)
        assert status == 200 and again["event_id"] == first["event_id"]
        status, _, page = http(gateway, "GET", "/rooms/%s/messages?dir=b&limit=50" % urllib.request.quote(room), token=token)
        assert status == 200
        assert [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"] == ["once"]
        # A new transaction is a new event.
        status, _, other = http(gateway, "PUT", path.replace("before-restart", "after-restart"), {"msgtype": "m.text", "body": "twice"}, token)
        assert status == 200 and other["event_id"] != first["event_id"]
    finally:
        gateway.stop()
        broker.stop()
