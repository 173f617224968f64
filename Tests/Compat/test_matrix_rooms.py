"""Rooms beyond messages, through the gateway: state events with power
levels enforced (names, topics, power levels, join rules, history
visibility), members, kick and ban, redactions (content gone from history,
single events, context and later syncs), edits, reactions and threads
found through /relations, and an event's context."""
import json
import urllib.parse

import pytest

from test_chat import EmbeddedGateway
from test_matrix_clients import account, http, join, room_with, sync, wait_for


@pytest.fixture(scope="module")
def gateway():
    embedded = EmbeddedGateway(extra_args=["--durability", "none"]).start()
    yield embedded
    assert embedded.stop() == 0, "broker with gateway did not stop cleanly: " + embedded.read_log()


def q(room):
    return urllib.parse.quote(room)


def send(gateway, token, room, txn, content, event_type="m.room.message"):
    status, _, answer = http(gateway, "PUT", "/rooms/%s/send/%s/%s" % (q(room), event_type, txn), content, token)
    assert status == 200, answer
    return answer["event_id"]


def test_state_events_follow_the_power_levels(gateway):
    owner, member = account(gateway, "state-owner"), account(gateway, "state-member")
    room = room_with(gateway, owner, "state-member")
    join(gateway, member, room)
    # The creator (100) names the room and sets its topic; a member (0) may not.
    status, _, named = http(gateway, "PUT", "/rooms/%s/state/m.room.name" % q(room), {"name": "Ministerraad"}, owner)
    assert status == 200 and named["event_id"].startswith("$")
    assert http(gateway, "PUT", "/rooms/%s/state/m.room.topic/" % q(room), {"topic": "agenda"}, owner)[0] == 200
    assert http(gateway, "GET", "/rooms/%s/state/m.room.name" % q(room), token=member)[2] == {"name": "Ministerraad"}
    assert http(gateway, "GET", "/rooms/%s/state/m.room.topic/" % q(room), token=member)[2] == {"topic": "agenda"}
    for event_type, content in [("m.room.name", {"name": "mine"}), ("m.room.power_levels", {"users": {"@state-member:gov.test": 100}}),
                                ("m.room.join_rules", {"join_rule": "public"}), ("m.room.history_visibility", {"history_visibility": "world_readable"})]:
        status, _, refused = http(gateway, "PUT", "/rooms/%s/state/%s" % (q(room), event_type), content, member)
        assert status == 403 and refused["errcode"] == "M_FORBIDDEN", (event_type, refused)
    # Raised to 50, the member may name the room, but not set history
    # visibility (100), nor raise anyone past 50.
    levels = http(gateway, "GET", "/rooms/%s/state/m.room.power_levels" % q(room), token=owner)[2]
    levels["users"]["@state-member:gov.test"] = 50
    assert http(gateway, "PUT", "/rooms/%s/state/m.room.power_levels" % q(room), levels, owner)[0] == 200
    assert http(gateway, "PUT", "/rooms/%s/state/m.room.name" % q(room), {"name": "Raad"}, member)[0] == 200
    assert http(gateway, "PUT", "/rooms/%s/state/m.room.history_visibility" % q(room), {"history_visibility": "joined"}, member)[0] == 403
    greedy = dict(levels, users=dict(levels["users"], **{"@state-member:gov.test": 100}))
    assert http(gateway, "PUT", "/rooms/%s/state/m.room.power_levels" % q(room), greedy, member)[0] == 403
    demote_owner = dict(levels, users=dict(levels["users"], **{"@state-owner:gov.test": 0}))
    assert http(gateway, "PUT", "/rooms/%s/state/m.room.power_levels" % q(room), demote_owner, member)[0] == 403
    # Membership and creation are not set through state; a stranger sees nothing.
    assert http(gateway, "PUT", "/rooms/%s/state/m.room.member/@state-member:gov.test" % q(room), {"membership": "leave"}, owner)[0] == 403
    assert http(gateway, "PUT", "/rooms/%s/state/m.room.create" % q(room), {"room_version": "11"}, owner)[0] == 403
    stranger = account(gateway, "state-stranger")
    assert http(gateway, "GET", "/rooms/%s/state" % q(room), token=stranger)[0] == 403
    state = http(gateway, "GET", "/rooms/%s/state" % q(room), token=member)[2]
    assert {"m.room.create", "m.room.power_levels", "m.room.name", "m.room.topic", "m.room.member"} <= {e["type"] for e in state}
    members = http(gateway, "GET", "/rooms/%s/members" % q(room), token=member)[2]["chunk"]
    assert sorted(e["state_key"] for e in members) == ["@state-member:gov.test", "@state-owner:gov.test"]
    # Sends follow events_default and per-type levels too.
    quiet = dict(levels, events=dict(levels["events"], **{"m.room.message": 75}))
    assert http(gateway, "PUT", "/rooms/%s/state/m.room.power_levels" % q(room), quiet, owner)[0] == 200
    status, _, refused = http(gateway, "PUT", "/rooms/%s/send/m.room.message/quiet" % q(room), {"msgtype": "m.text", "body": "x"}, member)
    assert status == 403 and refused["errcode"] == "M_FORBIDDEN"


def test_kick_and_ban_need_their_levels(gateway):
    owner, member, other = account(gateway, "mod-owner"), account(gateway, "mod-member"), account(gateway, "mod-other")
    room = room_with(gateway, owner, "mod-member", "mod-other")
    join(gateway, member, room)
    join(gateway, other, room)
    assert http(gateway, "POST", "/rooms/%s/kick" % q(room), {"user_id": "@mod-other:gov.test"}, member)[0] == 403
    assert http(gateway, "POST", "/rooms/%s/kick" % q(room), {"user_id": "@mod-other:gov.test", "reason": "off topic"}, owner)[0] == 200
    assert http(gateway, "GET", "/rooms/%s/state" % q(room), token=other)[0] == 403
    assert http(gateway, "POST", "/rooms/%s/ban" % q(room), {"user_id": "@mod-member:gov.test"}, owner)[0] == 200
    status, _, refused = http(gateway, "POST", "/join/%s" % q(room), {}, member)
    assert status == 403
    assert http(gateway, "POST", "/rooms/%s/unban" % q(room), {"user_id": "@mod-member:gov.test"}, owner)[0] == 200
    members = {e["state_key"]: e["content"]["membership"] for e in http(gateway, "GET", "/rooms/%s/members" % q(room), token=owner)[2]["chunk"]}
    assert members == {"@mod-owner:gov.test": "join", "@mod-member:gov.test": "leave", "@mod-other:gov.test": "leave"}


def test_redactions_remove_content_everywhere_and_need_the_level(gateway):
    owner, member = account(gateway, "redact-owner"), account(gateway, "redact-member")
    room = room_with(gateway, owner, "redact-member")
    join(gateway, member, room)
    since = sync(gateway, member)["next_batch"]
    secret = send(gateway, owner, room, "s1", {"msgtype": "m.text", "body": "staatsgeheim"})
    own = send(gateway, member, room, "m1", {"msgtype": "m.text", "body": "typo"})
    # A member may redact their own event, not another's (redact is 50).
    status, _, refused = http(gateway, "PUT", "/rooms/%s/redact/%s/r1" % (q(room), q(secret)), {"reason": "no"}, member)
    assert status == 403 and refused["errcode"] == "M_FORBIDDEN"
    assert http(gateway, "PUT", "/rooms/%s/redact/%s/r2" % (q(room), q(own)), {}, member)[0] == 200
    status, _, redaction = http(gateway, "PUT", "/rooms/%s/redact/%s/r3" % (q(room), q(secret)), {"reason": "classified"}, owner)
    assert status == 200
    # Gone from history, the event itself, its context and later syncs.
    page = http(gateway, "GET", "/rooms/%s/messages?dir=b&limit=50" % q(room), token=member)[2]
    redacted = [e for e in page["chunk"] if e["event_id"] == secret][0]
    assert redacted["content"] == {} and redacted["unsigned"]["redacted_because"]["event_id"] == redaction["event_id"]
    assert "staatsgeheim" not in str(page) and "typo" not in str(page)
    assert http(gateway, "GET", "/rooms/%s/event/%s" % (q(room), q(secret)), token=member)[2]["content"] == {}
    context = http(gateway, "GET", "/rooms/%s/context/%s?limit=4" % (q(room), q(own)), token=member)[2]
    assert context["event"]["content"] == {} and [e["event_id"] for e in context["events_before"]][:1] == [secret]
    assert "staatsgeheim" not in str(context)
    later = sync(gateway, member, since)
    timeline = later["rooms"]["join"][room]["timeline"]["events"]
    assert "staatsgeheim" not in str(later)
    assert [e["redacts"] for e in timeline if e["type"] == "m.room.redaction"] == [own, secret]
    assert "staatsgeheim" not in str(sync(gateway, owner))
    # Unknown events cannot be redacted.
    assert http(gateway, "PUT", "/rooms/%s/redact/%s/r4" % (q(room), q("$0_999999")), {}, owner)[0] == 404


def test_edits_reactions_and_threads_are_found_through_relations(gateway):
    alice, bob = account(gateway, "rel-alice"), account(gateway, "rel-bob")
    room = room_with(gateway, alice, "rel-bob")
    join(gateway, bob, room)
    root = send(gateway, alice, room, "root", {"msgtype": "m.text", "body": "voorstel"})
    edit = send(gateway, alice, room, "edit", {"msgtype": "m.text", "body": "* voorstel 2", "m.new_content": {"msgtype": "m.text", "body": "voorstel 2"},
                                               "m.relates_to": {"rel_type": "m.replace", "event_id": root}})
    reaction = send(gateway, bob, room, "react", {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}, "m.reaction")
    reply = send(gateway, bob, room, "thread", {"msgtype": "m.text", "body": "eens", "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    send(gateway, bob, room, "other", {"msgtype": "m.text", "body": "los"})
    everything = http(gateway, "GET", "/rooms/%s/relations/%s" % (q(room), q(root)), token=bob)[2]["chunk"]
    assert [e["event_id"] for e in everything] == [reply, reaction, edit]
    assert [e["event_id"] for e in http(gateway, "GET", "/rooms/%s/relations/%s/m.annotation" % (q(room), q(root)), token=bob)[2]["chunk"]] == [reaction]
    assert [e["event_id"] for e in http(gateway, "GET", "/rooms/%s/relations/%s/m.annotation/m.reaction" % (q(room), q(root)), token=bob)[2]["chunk"]] == [reaction]
    assert http(gateway, "GET", "/rooms/%s/relations/%s/m.annotation/m.room.message" % (q(room), q(root)), token=bob)[2]["chunk"] == []
    assert [e["event_id"] for e in http(gateway, "GET", "/rooms/%s/relations/%s/m.thread" % (q(room), q(root)), token=alice)[2]["chunk"]] == [reply]

    def pages(direction, limit):
        """Every page of the root's relations, following next_batch."""
        seen, token = [], None
        for _ in range(10):
            path = "/rooms/%s/relations/%s?dir=%s&limit=%d" % (q(room), q(root), direction, limit) + ("&from=" + q(token) if token else "")
            status, _, page = http(gateway, "GET", path, token=bob)
            assert status == 200, page
            seen.append([e["event_id"] for e in page["chunk"]])
            token = page.get("next_batch")
            if not token:
                return [chunk for chunk in seen if chunk]
        raise AssertionError("relations never ended: %s" % seen)

    assert pages("b", 1) == [[reply], [reaction], [edit]]
    assert pages("f", 2) == [[edit, reaction], [reply]]
    assert http(gateway, "GET", "/rooms/%s/relations/%s?dir=sideways" % (q(room), q(root)), token=bob)[0] == 400
    assert http(gateway, "GET", "/rooms/%s/relations/%s?from=nonsense" % (q(room), q(root)), token=bob)[0] == 400
    stranger = account(gateway, "rel-stranger")
    assert http(gateway, "GET", "/rooms/%s/relations/%s" % (q(room), q(root)), token=stranger)[0] == 403


def test_edits_threads_and_references_are_bundled_in_unsigned(gateway):
    """unsigned.m.relations as the specification (v1.7 on) bundles it: the
    newest edit of the same sender whole, a thread's summary for the member
    asking, the events referencing it; an edit by someone else is ignored,
    a redacted edit gives way to the one before, and the aggregations come
    back after a restart (every gateway reads chat-relations whole)."""
    alice, bob, carol = account(gateway, "bundle-alice"), account(gateway, "bundle-bob"), account(gateway, "bundle-carol")
    room = room_with(gateway, alice, "bundle-bob", "bundle-carol")
    join(gateway, bob, room)
    join(gateway, carol, room)
    root = send(gateway, alice, room, "root", {"msgtype": "m.text", "body": "nota"})

    def edit(token, txn, body):
        return send(gateway, token, room, txn, {"msgtype": "m.text", "body": "* " + body, "m.new_content": {"msgtype": "m.text", "body": body},
                                                "m.relates_to": {"rel_type": "m.replace", "event_id": root}})

    first = edit(alice, "edit-1", "nota 1")
    second = edit(alice, "edit-2", "nota 2")
    edit(bob, "edit-by-bob", "niet van bob")
    reply = send(gateway, bob, room, "reply", {"msgtype": "m.text", "body": "akkoord", "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    reference = send(gateway, alice, room, "ref", {"msgtype": "m.text", "body": "zie boven", "m.relates_to": {"rel_type": "m.reference", "event_id": root}})
    reaction = send(gateway, carol, room, "react", {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "+1"}}, "m.reaction")

    def bundle(token):
        status, _, event = http(gateway, "GET", "/rooms/%s/event/%s" % (q(room), q(root)), token=token)
        assert status == 200, event
        return event.get("unsigned", {}).get("m.relations")

    seen = bundle(bob)
    assert seen["m.replace"]["event_id"] == second and seen["m.replace"]["content"]["m.new_content"]["body"] == "nota 2", seen
    assert seen["m.thread"]["count"] == 1 and seen["m.thread"]["latest_event"]["event_id"] == reply, seen
    assert seen["m.thread"]["current_user_participated"] is True, seen
    assert seen["m.reference"] == {"chunk": [{"event_id": reference}]}, seen
    assert set(seen) == {"m.replace", "m.thread", "m.reference"}, "annotations are not bundled: %s" % seen
    assert bundle(alice)["m.thread"]["current_user_participated"] is True, "alice sent the root"
    assert bundle(carol)["m.thread"]["current_user_participated"] is False, "carol only reacted (%s)" % reaction
    # The same bundle in /messages, /context and /relations' own events.
    status, _, page = http(gateway, "GET", "/rooms/%s/messages?dir=b&limit=50" % q(room), token=bob)
    assert status == 200
    assert [e for e in page["chunk"] if e["event_id"] == root][0]["unsigned"]["m.relations"] == seen
    status, _, context = http(gateway, "GET", "/rooms/%s/context/%s?limit=2" % (q(room), q(root)), token=bob)
    assert status == 200 and context["event"]["unsigned"]["m.relations"] == seen, context
    assert "m.relations" not in http(gateway, "GET", "/rooms/%s/event/%s" % (q(room), q(reply)), token=bob)[2].get("unsigned", {})
    # A first sync serialises one timeline for every member: edits and
    # references are bundled there, a thread's summary (which differs per
    # member) is not.
    timeline = sync(gateway, carol, filter=json.dumps({"room": {"timeline": {"limit": 50}}}))["rooms"]["join"][room]["timeline"]["events"]
    synced = [e for e in timeline if e["event_id"] == root][0]["unsigned"]["m.relations"]
    assert synced == {"m.replace": seen["m.replace"], "m.reference": seen["m.reference"]}, synced
    # An event of another room naming the root is not bundled with it.
    mallory = account(gateway, "bundle-mallory")
    elsewhere = room_with(gateway, mallory)
    send(gateway, mallory, elsewhere, "inject", {"msgtype": "m.text", "body": "ingevoegd", "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    send(gateway, mallory, elsewhere, "inject-ref", {"msgtype": "m.text", "body": "ingevoegd", "m.relates_to": {"rel_type": "m.reference", "event_id": root}})
    assert bundle(bob) == seen
    # A redacted edit is not the newest any more.
    status, _, _ = http(gateway, "PUT", "/rooms/%s/redact/%s/undo-2" % (q(room), q(second)), {}, alice)
    assert status == 200
    assert bundle(bob)["m.replace"]["event_id"] == first
    # After a restart the gateway has read chat-relations back.
    assert gateway.stop() == 0
    gateway.start()
    after = bundle(bob)
    assert after["m.replace"]["event_id"] == first and after["m.thread"]["count"] == 1 and after["m.reference"] == seen["m.reference"], after


def test_aliases_and_the_public_room_directory(gateway):
    owner, member, other = account(gateway, "dir-owner"), account(gateway, "dir-member"), account(gateway, "dir-other")
    status, _, created = http(gateway, "POST", "/createRoom", {"name": "Open kabinet", "topic": "voor iedereen", "room_alias_name": "kabinet",
                                                              "visibility": "public", "preset": "public_chat"}, owner)
    assert status == 200, created
    room = created["room_id"]
    alias = "#kabinet:gov.test"
    assert http(gateway, "GET", "/directory/room/%s" % q(alias))[2] == {"room_id": room, "servers": ["gov.test"]}
    assert http(gateway, "GET", "/rooms/%s/state/m.room.canonical_alias" % q(room), token=owner)[2] == {"alias": alias}
    # Taken once; another server's alias is refused; a second alias is fine.
    assert http(gateway, "POST", "/createRoom", {"room_alias_name": "kabinet"}, member)[2]["errcode"] == "M_ROOM_IN_USE"
    assert http(gateway, "PUT", "/directory/room/%s" % q("#elders:other.example"), {"room_id": room}, owner)[0] == 400
    assert http(gateway, "PUT", "/directory/room/%s" % q("#raad:gov.test"), {"room_id": room}, owner)[0] == 200
    assert http(gateway, "PUT", "/directory/room/%s" % q("#raad:gov.test"), {"room_id": room}, owner)[0] == 409
    # Joining by alias; the members see the room's aliases.
    status, _, joined = http(gateway, "POST", "/join/%s" % q(alias), {}, member)
    assert status == 200 and joined["room_id"] == room
    assert http(gateway, "GET", "/rooms/%s/aliases" % q(room), token=member)[2] == {"aliases": ["#kabinet:gov.test", "#raad:gov.test"]}
    # Only the creator or a moderator removes an alias.
    assert http(gateway, "DELETE", "/directory/room/%s" % q("#raad:gov.test"), token=member)[0] == 403
    assert http(gateway, "DELETE", "/directory/room/%s" % q("#raad:gov.test"), token=owner)[0] == 200
    assert http(gateway, "GET", "/directory/room/%s" % q("#raad:gov.test"))[0] == 404
    # The public list: name, topic, members; searchable; a private room is not in it.
    private = room_with(gateway, other)
    listed = http(gateway, "GET", "/publicRooms")[2]
    entries = {e["room_id"]: e for e in listed["chunk"]}
    assert room in entries and private not in entries
    assert entries[room]["name"] == "Open kabinet" and entries[room]["num_joined_members"] == 2 and entries[room]["canonical_alias"] == alias
    assert [e["room_id"] for e in http(gateway, "POST", "/publicRooms", {"filter": {"generic_search_term": "IEDEREEN"}}, other)[2]["chunk"]] == [room]
    assert http(gateway, "POST", "/publicRooms", {"filter": {"generic_search_term": "geheim"}}, other)[2]["chunk"] == []
    # Publishing needs the room's level; unpublished, it leaves the list.
    assert http(gateway, "GET", "/directory/list/room/%s" % q(room))[2] == {"visibility": "public"}
    assert http(gateway, "PUT", "/directory/list/room/%s" % q(room), {"visibility": "private"}, member)[0] == 403
    assert http(gateway, "PUT", "/directory/list/room/%s" % q(room), {"visibility": "private"}, owner)[0] == 200
    assert room not in [e["room_id"] for e in http(gateway, "GET", "/publicRooms")[2]["chunk"]]


async def nio_counts(url, name, room):
    """(notifications, highlights) of `room` as matrix-nio keeps them after a sync."""
    from nio import AsyncClient, LoginResponse, SyncResponse
    client = AsyncClient(url, "@%s:gov.test" % name)
    try:
        assert isinstance(await client.login("pw " + name), LoginResponse)
        answer = await client.sync(timeout=0)
        assert isinstance(answer, SyncResponse), answer
        known = client.rooms[room]
        return known.unread_notifications, known.unread_highlights
    finally:
        await client.close()


def test_unread_counts_follow_the_push_rules_receipts_and_own_sends(gateway):
    import asyncio
    minister, clerk = account(gateway, "unread-minister"), account(gateway, "unread-clerk")
    room = room_with(gateway, clerk, "unread-minister")
    join(gateway, minister, room)
    first = send(gateway, clerk, room, "u1", {"msgtype": "m.text", "body": "good morning"})
    send(gateway, clerk, room, "u2", {"msgtype": "m.text", "body": "Unread-minister, the draft is ready"})
    send(gateway, clerk, room, "u3", {"msgtype": "m.notice", "body": "a bot's notice"})
    send(gateway, clerk, room, "u4", {"msgtype": "m.text", "body": "@room please read",
                                      "m.mentions": {"room": True}})
    # The clerk created the room (level 100): the @room highlights. Two
    # messages, a mention and an @room notify; the notice does not.
    found = wait_for(gateway, minister, None,
                     lambda a: a["rooms"]["join"].get(room, {}).get("unread_notifications", {}).get("notification_count") == 3)
    assert found["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 3, "highlight_count": 2}
    assert asyncio.run(nio_counts(gateway.url, "unread-minister", room)) == (3, 2)
    # The sender's own messages are read.
    assert sync(gateway, clerk)["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    # A receipt on the first message leaves what came after it.
    status, _, answer = http(gateway, "POST", "/rooms/%s/receipt/m.read/%s" % (q(room), urllib.parse.quote(first)), {}, minister)
    assert status == 200, answer
    found = wait_for(gateway, minister, found["next_batch"],
                     lambda a: a["rooms"]["join"].get(room, {}).get("unread_notifications", {}).get("notification_count") == 2)
    assert found["rooms"]["join"][room]["unread_notifications"]["highlight_count"] == 2
    # A room muted as clients mute one (an override rule on its id,
    # without actions) counts nothing: the rules in force decide.
    mute = {"conditions": [{"kind": "event_match", "key": "room_id", "pattern": room}], "actions": []}
    assert http(gateway, "PUT", "/pushrules/global/override/mute-unread", mute, minister)[0] == 200
    found = wait_for(gateway, minister, found["next_batch"],
                     lambda a: any(e["type"] == "m.push_rules" for e in a["account_data"]["events"]))
    send(gateway, clerk, room, "u5", {"msgtype": "m.text", "body": "muted?"})
    found = wait_for(gateway, minister, found["next_batch"], lambda a: room in a["rooms"]["join"])
    assert found["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    assert http(gateway, "DELETE", "/pushrules/global/override/mute-unread", None, minister)[0] == 200
    # Answering reads the room; the clerk now has one to read.
    send(gateway, minister, room, "m1", {"msgtype": "m.text", "body": "thanks"})
    assert asyncio.run(nio_counts(gateway.url, "unread-minister", room)) == (0, 0)
    assert asyncio.run(nio_counts(gateway.url, "unread-clerk", room)) == (1, 0)
