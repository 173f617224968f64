"""The chat's state topics through compaction. chat-accounts: what each
account is (a registration's first-wins, an operator's password, a
removal that keeps the name taken) survives compaction and a gateway's
restart, including accounts written before the topic was compacted,
which the gateway repairs before it switches compaction on.
conversation-members: keyed by room and member, so compaction keeps each
member's latest membership and the fan-out still routes every room."""
import json
import shutil
import time
from urllib.parse import quote

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from conftest import BrokerProcess, unique
from test_chat import GatewayProcess, call, login, postduif_user

ACCOUNTS = "chat-accounts"


@pytest.fixture(scope="module")
def broker():
    process = BrokerProcess(extra_args=["--durability", "none", "--log-retention-check-interval-ms", "100"]).start()
    yield process
    assert process.stop() == 0
    shutil.rmtree(process.data_dir, ignore_errors=True)


def records(address, topic, partition=0, timeout=30):
    """[(offset, key, value)] of a partition from its start to its end."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": unique("reader"), "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, low)])
        found, offset = [], low
        deadline = time.monotonic() + timeout
        while offset < high and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            found.append((message.offset(), message.key(), message.value()))
            offset = message.offset() + 1
        assert offset >= high, "read to %d of %d" % (offset, high)
        return found
    finally:
        consumer.close()


def topic_config(address, topic, name):
    admin = AdminClient({"bootstrap.servers": address})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    return configs[name].value


def set_topic_configs(address, topic, **configs):
    admin = AdminClient({"bootstrap.servers": address})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry(name.replace("_", "."), value, incremental_operation=AlterConfigOpType.SET) for name, value in configs.items()])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def wait(condition, what, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)  # poll pacing


def register(gateway, name, password):
    status, answer = call(gateway, "POST", "/register", {"username": name, "password": password})
    assert status == 200, answer
    return answer


def test_accounts_keep_their_meaning_through_compaction_and_a_restart(broker):
    gateway = GatewayProcess(broker).start()
    try:
        # Two password hashes as the gateway makes them, to write accounts
        # the way gateways of before this change did.
        register(gateway, "hash-first", "first")
        register(gateway, "hash-second", "second")
        hashes = {}
        for _, key, value in records(broker.address, ACCOUNTS):
            if value and key.startswith(b"@hash-"):
                hashes[key.split(b"\0")[0]] = json.loads(value)["password_hash"]
        first, second = hashes[b"@hash-first:gov.test"], hashes[b"@hash-second:gov.test"]
    finally:
        assert gateway.stop() == 0
    # The old layout: registrations under the user id (the first wins), a
    # null for a removal. A compaction of these would keep the losing
    # registration and, later, drop the removal.
    # As a deployment of before had it (this gateway compacted it at start).
    set_topic_configs(broker.address, ACCOUNTS, cleanup_policy="delete")
    producer = Producer({"bootstrap.servers": broker.address})
    for key, value in [(b"@race:gov.test", {"password_hash": first, "created_ts": 1}), (b"@race:gov.test", {"password_hash": second, "created_ts": 2}),
                       (b"@gone:gov.test", {"password_hash": first, "created_ts": 3}), (b"@gone:gov.test", None),
                       (b"@old:gov.test", {"password_hash": second, "created_ts": 4})]:
        producer.produce(ACCOUNTS, key=key, value=json.dumps(value).encode() if value else None)
    producer.flush(30)
    assert topic_config(broker.address, ACCOUNTS, "cleanup.policy") == "delete"
    set_topic_configs(broker.address, ACCOUNTS, segment_ms="300", min_cleanable_dirty_ratio="0.01", delete_retention_ms="500")

    gateway = GatewayProcess(broker).start()
    try:
        # Repaired, then compacted.
        wait(lambda: topic_config(broker.address, ACCOUNTS, "cleanup.policy") == "compact", "the gateway did not switch chat-accounts to compaction")
        postduif_user(gateway, "add", "operated", password="one")
        postduif_user(gateway, "add", "operated", password="two")
        postduif_user(gateway, "remove", "hash-second")
        rolls = iter(range(1000))

        def compacted():
            # A record more closes the segment before it for the cleaner.
            postduif_user(gateway, "add", "roll-%d" % next(rolls), password="r")
            keys = [key for _, key, _ in records(broker.address, ACCOUNTS)]
            return all(keys.count(user) == 1 for user in [b"@race:gov.test", b"@gone:gov.test", b"@operated:gov.test", b"@hash-second:gov.test"])
        wait(compacted, "chat-accounts was not compacted", seconds=90)
    finally:
        assert gateway.stop() == 0

    gateway = GatewayProcess(broker).start()
    try:
        def logs_in(name, password):
            return login(gateway, name, password)[0] == 200
        wait(lambda: logs_in("operated", "two"), "an operator's account is gone after compaction")
        assert logs_in("race", "first") and not logs_in("race", "second"), "compaction changed the winner of a registration race"
        assert logs_in("old", "second") and logs_in("hash-first", "first")
        assert not logs_in("operated", "one")
        for removed, password in [("gone", "first"), ("hash-second", "second")]:
            assert not logs_in(removed, password), removed + " came back"
            assert call(gateway, "POST", "/register", {"username": removed, "password": "x"})[1]["errcode"] == "M_USER_IN_USE"
        # A registration now races on its own key: a second one for a name is refused.
        register(gateway, "fresh", "pw")
        assert call(gateway, "POST", "/register", {"username": "fresh", "password": "other"})[1]["errcode"] == "M_USER_IN_USE"
        assert "@gone:gov.test" not in postduif_user(gateway, "list").split()
    finally:
        assert gateway.stop() == 0


def test_every_member_keeps_its_membership_through_compaction(broker):
    from test_matrix_clients import room_with, join, sync, wait_for
    members_topic = "conversation-members"
    gateway = GatewayProcess(broker).start()
    try:
        wait(lambda: topic_config(broker.address, members_topic, "cleanup.policy") == "compact",
             "the gateway did not switch conversation-members to compaction")
        set_topic_configs(broker.address, members_topic, segment_ms="300", min_cleanable_dirty_ratio="0.01", delete_retention_ms="500")
        owner = register(gateway, "members-owner", "pw")["access_token"]
        member = register(gateway, "members-member", "pw")["access_token"]
        churn = register(gateway, "members-churn", "pw")["access_token"]
        room = room_with(gateway, owner, "members-member", "members-churn")
        join(gateway, member, room)

        def room_records():
            found = []
            for partition in (0, 1):
                found += [(partition, key) for _, key, _ in records(broker.address, members_topic, partition) if key.startswith(room.encode())]
            return found

        # A member coming and going: many records under one key.
        for _ in range(10):
            assert call(gateway, "POST", "/rooms/%s/invite" % quote(room), {"user_id": "@members-churn:gov.test"}, owner)[0] == 200
            join(gateway, churn, room)
            assert call(gateway, "POST", "/rooms/%s/leave" % quote(room), {}, churn)[0] == 200
        partition = room_records()[0][0]
        roller = Producer({"bootstrap.servers": broker.address})

        def keys_of_room():
            return [key for _, key in room_records()]

        def compacted():
            # A record more (no membership: the fan-out skips it) closes the
            # segment before it for the cleaner.
            roller.produce(members_topic, key=b"roll", value=b"{}", partition=partition)
            roller.flush(30)
            keys = keys_of_room()
            return len(keys) == len(set(keys)) == 3
        wait(compacted, "conversation-members was not compacted to one record per member", seconds=90)
        assert sorted(set(keys_of_room())) == sorted(room.encode() + b"\0" + name for name in
                                                      [b"@members-owner:gov.test", b"@members-member:gov.test", b"@members-churn:gov.test"])
    finally:
        assert gateway.stop() == 0
    # The fan-out's membership index is rebuilt from the compacted topic
    # when the broker restarts: the member still gets the room's messages.
    assert broker.stop() == 0
    broker.start()
    gateway = GatewayProcess(broker).start()
    try:
        since = sync(gateway, member)["next_batch"]
        status, _ = call(gateway, "PUT", "/rooms/%s/send/m.room.message/after-compaction" % quote(room), {"msgtype": "m.text", "body": "still here?"}, owner)
        assert status == 200
        found = wait_for(gateway, member, since, lambda answer: any(
            event["content"].get("body") == "still here?" for event in answer["rooms"]["join"].get(room, {}).get("timeline", {}).get("events", [])))
        assert found
    finally:
        assert gateway.stop() == 0
