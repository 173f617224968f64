"""End-to-end encryption through the gateway, with matrix-nio's own
encryption (matrix-nio[e2e], vodozemac): the server stores and relays
keys and to-device messages and never sees a message in the clear. Two
users talk in an encrypted room, a third device of one of them is found
and verified by key query, a to-device message arrives once, a user who
is not a member gets nothing readable; one-time and fallback keys are
claimed once each, key backups keep the best key per session, and bad
key uploads are refused."""
import asyncio
import json
import tempfile
import urllib.parse

import pytest
from nio import (AsyncClient, AsyncClientConfig, LoginResponse, MegolmEvent, RegisterResponse, RoomMessageText,
                 RoomSendResponse, ToDeviceMessage)

from test_chat import EmbeddedGateway, run
from test_matrix_clients import account, http, join, room_with, sync, wait_for


@pytest.fixture(scope="module")
def gateway():
    embedded = EmbeddedGateway(extra_args=["--durability", "none"]).start()
    yield embedded
    assert embedded.stop() == 0, "broker with gateway did not stop cleanly: " + embedded.read_log()


async def encrypting(url, name, register=True, device=None):
    """A matrix-nio client with encryption on, its keys uploaded."""
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
    client = AsyncClient(url, "@%s:gov.test" % name, device_id=device or "", store_path=tempfile.mkdtemp(prefix="nio-store-"), config=config)
    if register:
        response = await client.register(name, "pw " + name, device_name=device or name)
        assert isinstance(response, RegisterResponse), response
    else:
        response = await client.login("pw " + name, device_name=device)
        assert isinstance(response, LoginResponse), response
    assert client.olm is not None, "matrix-nio's encryption is not available"
    if client.should_upload_keys:
        await client.keys_upload()
    await client.sync(timeout=0, full_state=True)
    return client


async def until(client, found, rounds=20):
    """Syncs `client` until `found()` is true."""
    for _ in range(rounds):
        await client.sync(timeout=1000)
        if found():
            return
    raise AssertionError("not seen after %d syncs" % rounds)


def timeline(client, room_id):
    return client.rooms[room_id].timeline if hasattr(client.rooms[room_id], "timeline") else []


async def encrypted_room(url):
    alice = await encrypting(url, "e2e-alice")
    bob = await encrypting(url, "e2e-bob")
    created = await alice.room_create(name="Kabinet", invite=["@e2e-bob:gov.test"],
                                      initial_state=[{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
    room = created.room_id
    await until(bob, lambda: room in bob.invited_rooms)
    await bob.join(room)
    await until(alice, lambda: "@e2e-bob:gov.test" in alice.rooms[room].users)
    await until(bob, lambda: room in bob.rooms and bob.rooms[room].encrypted)
    assert alice.rooms[room].encrypted

    received = {"bob": [], "alice": [], "undecrypted": []}

    async def on_text(room_, event):
        received["bob" if room_.own_user_id == "@e2e-bob:gov.test" else "alice"].append(event.body)

    async def on_megolm(room_, event):
        received["undecrypted"].append(event)

    bob.add_event_callback(on_text, RoomMessageText)
    alice.add_event_callback(on_text, RoomMessageText)
    bob.add_event_callback(on_megolm, MegolmEvent)

    # Alice's first message: nio queries Bob's devices, claims a one-time
    # key, shares the room key to Bob's device over to-device, then sends
    # the encrypted event.
    sent = await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "geheim overleg"}, ignore_unverified_devices=True)
    assert isinstance(sent, RoomSendResponse), sent
    await until(bob, lambda: "geheim overleg" in received["bob"])
    assert not received["undecrypted"], "Bob got an event he could not decrypt"
    sent = await bob.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "akkoord"}, ignore_unverified_devices=True)
    assert isinstance(sent, RoomSendResponse), sent
    await until(alice, lambda: "akkoord" in received["alice"])

    # What the server stored is ciphertext.
    status, _, page = http(type("S", (), {"url": url})(), "GET", "/rooms/%s/messages?dir=b&limit=50" % urllib.parse.quote(room), token=alice.access_token)
    assert status == 200
    stored = [e for e in page["chunk"] if e["type"] in ("m.room.message", "m.room.encrypted")]
    assert stored and all(e["type"] == "m.room.encrypted" for e in stored), stored
    assert "geheim" not in json.dumps(page) and "akkoord" not in json.dumps(page)

    # A third device of Alice's: Bob finds it by key query, with the very
    # identity key the device holds, and verifies it.
    third = await encrypting(url, "e2e-alice", register=False, device="TABLET")
    await until(bob, lambda: True, rounds=1)
    await bob.keys_query()
    devices = bob.device_store["@e2e-alice:gov.test"]
    assert "TABLET" in devices, list(devices)
    assert devices["TABLET"].ed25519 == third.olm.account.identity_keys["ed25519"]
    assert devices["TABLET"].curve25519 == third.olm.account.identity_keys["curve25519"]
    bob.verify_device(devices["TABLET"])
    assert bob.device_store["@e2e-alice:gov.test"]["TABLET"].verified
    # Bob's next message reaches the new device too, readable there.
    third_seen = []
    third.add_event_callback(lambda room_, event: third_seen.append(event.body), RoomMessageText)
    await third.sync(timeout=0)
    sent = await bob.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "ook voor de tablet"}, ignore_unverified_devices=True)
    assert isinstance(sent, RoomSendResponse), sent
    await until(third, lambda: "ook voor de tablet" in third_seen)

    # A to-device message arrives once: in one sync, not in the next.
    message = ToDeviceMessage("org.gov.test.ping", "@e2e-bob:gov.test", bob.device_id, {"n": 1})
    await alice.to_device(message)
    server = type("S", (), {"url": url})()
    first = sync(server, bob.access_token, since=bob.next_batch, timeout=5000)
    pings = [e for e in first["to_device"]["events"] if e["type"] == "org.gov.test.ping"]
    assert pings == [{"type": "org.gov.test.ping", "sender": "@e2e-alice:gov.test", "content": {"n": 1}}]
    second = sync(server, bob.access_token, since=first["next_batch"], timeout=0)
    assert not [e for e in second["to_device"]["events"] if e["type"] == "org.gov.test.ping"]

    # Someone who is not a member gets nothing readable: no room, no key,
    # no history.
    carol = await encrypting(url, "e2e-carol")
    await carol.sync(timeout=0, full_state=True)
    assert room not in carol.rooms
    status, _, _ = http(server, "GET", "/rooms/%s/messages?dir=b" % urllib.parse.quote(room), token=carol.access_token)
    assert status == 403
    answer = sync(server, carol.access_token)
    assert answer["to_device"]["events"] == [] and room not in answer["rooms"]["join"]

    # Bob leaves: Alice shares no room with him any more, and her next syncs
    # say so (device_lists.left), as his say of her; keys/changes agrees.
    alice_since = sync(server, alice.access_token, timeout=0)["next_batch"]
    bob_since = sync(server, bob.access_token, timeout=0)["next_batch"]
    await bob.room_leave(room)

    def left_seen(token, since, who):
        for _ in range(10):
            answer = sync(server, token, since=since, timeout=3000)
            if who in answer["device_lists"]["left"]:
                return answer
            since = answer["next_batch"]
        raise AssertionError("%s never in device_lists.left" % who)

    answer = left_seen(alice.access_token, alice_since, "@e2e-bob:gov.test")
    assert "@e2e-bob:gov.test" not in answer["device_lists"]["changed"]
    left_seen(bob.access_token, bob_since, "@e2e-alice:gov.test")
    status, _, changes = http(server, "GET", "/keys/changes?from=%s&to=%s" % (urllib.parse.quote(alice_since), urllib.parse.quote(answer["next_batch"])), token=alice.access_token)
    assert status == 200 and changes["left"] == ["@e2e-bob:gov.test"], changes
    # Carol shared no room with either: nothing left for her.
    assert sync(server, carol.access_token, since=answer["next_batch"], timeout=0)["device_lists"]["left"] == []
    for client in (alice, bob, third, carol):
        await client.close()


def test_two_users_talk_in_an_encrypted_room(gateway):
    run(encrypted_room(gateway.url))


def test_one_time_keys_are_claimed_once_then_the_fallback_key(gateway):
    owner = account(gateway, "otk-owner")
    claimer = account(gateway, "otk-claimer")
    device = http(gateway, "GET", "/account/whoami", token=owner)[2]["device_id"]
    keys = {"device_keys": {"user_id": "@otk-owner:gov.test", "device_id": device, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                            "keys": {"curve25519:" + device: "c" * 43, "ed25519:" + device: "e" * 43}, "signatures": {}},
            "one_time_keys": {"signed_curve25519:A": {"key": "a" * 43}, "signed_curve25519:B": {"key": "b" * 43}},
            "fallback_keys": {"signed_curve25519:F": {"key": "f" * 43, "fallback": True}}}
    status, _, counts = http(gateway, "POST", "/keys/upload", keys, owner)
    assert status == 200 and counts == {"one_time_key_counts": {"signed_curve25519": 2}}
    # The same upload again changes nothing; another key under a used id is refused.
    assert http(gateway, "POST", "/keys/upload", keys, owner)[2] == {"one_time_key_counts": {"signed_curve25519": 2}}
    status, _, refused = http(gateway, "POST", "/keys/upload", {"one_time_keys": {"signed_curve25519:A": {"key": "z" * 43}}}, owner)
    assert status == 400 and refused["errcode"] == "M_INVALID_PARAM"
    # Keys for another user's device are refused.
    status, _, refused = http(gateway, "POST", "/keys/upload", {"device_keys": dict(keys["device_keys"], user_id="@otk-claimer:gov.test")}, owner)
    assert status == 400 and refused["errcode"] == "M_INVALID_PARAM"
    first = sync(gateway, owner)
    assert first["device_one_time_keys_count"] == {"signed_curve25519": 2} and first["device_unused_fallback_key_types"] == ["signed_curve25519"]
    claim = {"one_time_keys": {"@otk-owner:gov.test": {device: "signed_curve25519"}}}
    handed = []
    for _ in range(3):
        status, _, claimed = http(gateway, "POST", "/keys/claim", claim, claimer)
        assert status == 200
        handed.append(claimed["one_time_keys"]["@otk-owner:gov.test"][device])
    assert handed == [{"signed_curve25519:A": {"key": "a" * 43}}, {"signed_curve25519:B": {"key": "b" * 43}},
                      {"signed_curve25519:F": {"key": "f" * 43, "fallback": True}}]
    after = sync(gateway, owner)
    assert after["device_one_time_keys_count"] == {} and after["device_unused_fallback_key_types"] == []
    # The claimer's key query sees the device.
    status, _, queried = http(gateway, "POST", "/keys/query", {"device_keys": {"@otk-owner:gov.test": []}}, claimer)
    assert status == 200 and list(queried["device_keys"]["@otk-owner:gov.test"]) == [device]


def test_key_backups_keep_the_best_key_and_refuse_an_old_version(gateway):
    token = account(gateway, "backup")
    assert http(gateway, "GET", "/room_keys/version", token=token)[2]["errcode"] == "M_NOT_FOUND"
    auth = {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "p" * 43, "signatures": {}}}
    status, _, made = http(gateway, "POST", "/room_keys/version", auth, token)
    assert status == 200 and made == {"version": "1"}
    key = {"first_message_index": 5, "forwarded_count": 0, "is_verified": False, "session_data": {"ciphertext": "x"}}
    better = dict(key, first_message_index=1, session_data={"ciphertext": "y"})
    assert http(gateway, "PUT", "/room_keys/keys/!r:gov.test/s1?version=1", key, token)[2]["count"] == 1
    assert http(gateway, "PUT", "/room_keys/keys/!r:gov.test/s1?version=1", better, token)[0] == 200
    assert http(gateway, "PUT", "/room_keys/keys/!r:gov.test/s1?version=1", key, token)[0] == 200
    status, _, kept = http(gateway, "GET", "/room_keys/keys/!r:gov.test/s1?version=1", token=token)
    assert status == 200 and kept["session_data"] == {"ciphertext": "y"}
    status, _, everything = http(gateway, "GET", "/room_keys/keys?version=1", token=token)
    assert everything == {"rooms": {"!r:gov.test": {"sessions": {"s1": better}}}}
    status, _, version = http(gateway, "GET", "/room_keys/version", token=token)
    assert version["version"] == "1" and version["count"] == 1 and version["algorithm"] == auth["algorithm"]
    # A new version: writes to the old one are refused with the current version.
    assert http(gateway, "POST", "/room_keys/version", auth, token)[2] == {"version": "2"}
    status, _, refused = http(gateway, "PUT", "/room_keys/keys/!r:gov.test/s1?version=1", better, token)
    assert status == 403 and refused["errcode"] == "M_WRONG_ROOM_KEYS_VERSION" and refused["current_version"] == "2"
    assert http(gateway, "DELETE", "/room_keys/version/1", token=token)[0] == 200
    assert http(gateway, "GET", "/room_keys/version/1", token=token)[0] == 404
    # Another user sees none of it.
    other = account(gateway, "backup-other")
    assert http(gateway, "GET", "/room_keys/version", token=other)[0] == 404


def test_members_syncing_from_one_position_each_get_their_own_key_counts_and_to_device_messages(gateway):
    """Members of a room who sync from the same position share one answer
    body in the gateway, encrypting devices too; what is a device's own
    (its one-time key counts, its to-device messages) must still be its
    own in each answer: Bob, synced first, has two keys and a message for
    his device; Carol, from the same position, has one key and no
    message."""
    sender = account(gateway, "share-sender")
    members = {name: account(gateway, name) for name in ("share-bob", "share-carol")}
    room = room_with(gateway, sender, *members)
    devices = {}
    for name, token in members.items():
        join(gateway, token, room)
        device = http(gateway, "GET", "/account/whoami", token=token)[2]["device_id"]
        devices[name] = device
        keys = {"device_keys": {"user_id": "@%s:gov.test" % name, "device_id": device, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                                "keys": {"curve25519:" + device: "c" * 43, "ed25519:" + device: "e" * 43}, "signatures": {}},
                "one_time_keys": {"signed_curve25519:A": {"key": "a" * 43}, "signed_curve25519:B": {"key": "b" * 43}}}
        assert http(gateway, "POST", "/keys/upload", keys, token)[0] == 200
    starts = {name: sync(gateway, token)["next_batch"] for name, token in members.items()}
    # One of Carol's keys claimed; a to-device message for Bob's device.
    claim = {"one_time_keys": {"@share-carol:gov.test": {devices["share-carol"]: "signed_curve25519"}}}
    assert http(gateway, "POST", "/keys/claim", claim, sender)[0] == 200
    message = {"messages": {"@share-bob:gov.test": {devices["share-bob"]: {"secret": "for bob"}}}}
    assert http(gateway, "PUT", "/sendToDevice/org.gov.test.share/one", message, sender)[0] == 200

    def send(text):
        status, _, _ = http(gateway, "PUT", "/rooms/%s/send/m.room.message/%s" % (urllib.parse.quote(room), text), {"msgtype": "m.text", "body": text}, sender)
        assert status == 200

    def seen(text):
        return lambda answer: any(event.get("content", {}).get("body") == text
                                  for event in answer["rooms"]["join"].get(room, {}).get("timeline", {}).get("events", []))

    send("first")
    to_device = {name: [] for name in members}
    tokens = {}
    for name, token in members.items():
        answer = wait_for(gateway, token, starts[name], lambda answer: (to_device[name].extend(answer["to_device"]["events"]), seen("first")(answer))[1])
        tokens[name] = answer["next_batch"]
    assert [event["content"] for event in to_device["share-bob"]] == [{"secret": "for bob"}]
    assert to_device["share-carol"] == []
    # Both now sync from one position: nothing was written between their answers.
    assert tokens["share-bob"] == tokens["share-carol"], tokens
    send("second")
    answers = {name: wait_for(gateway, token, tokens[name], seen("second")) for name, token in members.items()}
    assert answers["share-bob"]["device_one_time_keys_count"] == {"signed_curve25519": 2}, answers["share-bob"]
    assert answers["share-carol"]["device_one_time_keys_count"] == {"signed_curve25519": 1}, answers["share-carol"]
    # Bob's message was acknowledged by the token he synced with: not again.
    assert answers["share-bob"]["to_device"]["events"] == [] and answers["share-carol"]["to_device"]["events"] == []


def test_one_claim_for_many_devices_hands_each_key_out_once(gateway):
    """A client about to share a room key claims a key of every device in
    the room in one request; the gateway claims them all at once, and each
    key still goes out once."""
    claimer = account(gateway, "many-claimer")
    owners = {}
    for index in range(3):
        name = "many-owner-%d" % index
        token = account(gateway, name)
        device = http(gateway, "GET", "/account/whoami", token=token)[2]["device_id"]
        owners["@%s:gov.test" % name] = device
        keys = {"one_time_keys": {"signed_curve25519:%s%d" % (which, index): {"key": which * 43} for which in "AB"}}
        assert http(gateway, "POST", "/keys/upload", keys, token)[2] == {"one_time_key_counts": {"signed_curve25519": 2}}
    claim = {"one_time_keys": {user: {device: "signed_curve25519"} for user, device in owners.items()}}
    handed = []
    for _ in range(2):
        status, _, claimed = http(gateway, "POST", "/keys/claim", claim, claimer)
        assert status == 200 and set(claimed["one_time_keys"]) == set(owners), claimed
        for user, device in owners.items():
            (key_id,) = claimed["one_time_keys"][user][device]
            handed.append((user, key_id))
    assert len(set(handed)) == 6, handed
    # Both keys of every device are gone, and there is no fallback key.
    status, _, claimed = http(gateway, "POST", "/keys/claim", claim, claimer)
    assert status == 200 and claimed["one_time_keys"] == {}, claimed
