"""The archive consumer (`postduif archive`, Docs/services.md): a chat
through the gateway while the archive is SIGKILLed and started again twice;
then the archive holds every message exactly once, verifies, shows a
changed byte, exports a conversation equal to its history, and destroys
by the selection list with a log."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from conftest import BINARY
from test_chat import EmbeddedGateway


def matrix(url, method, path, body=None, token=None):
    request = urllib.request.Request(url + "/_matrix/client/v3" + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def archive(*args):
    return subprocess.run([BINARY, "archive", *args], capture_output=True, text=True, timeout=60)


def archived_messages(folder):
    """(room, event id, body) of every archived message line."""
    found = []
    rooms = os.path.join(folder, "rooms")
    for room in sorted(os.listdir(rooms)) if os.path.isdir(rooms) else []:
        for name in sorted(os.listdir(os.path.join(rooms, room))):
            if name.startswith("messages-"):
                with open(os.path.join(rooms, room, name)) as f:
                    for line in f:
                        event = json.loads(line)
                        if event["type"] == "m.room.message":
                            found.append((event["room_id"], event["event_id"], event["content"]["body"]))
    return found


def test_the_archive_keeps_every_message_once_through_two_sigkills_and_verifies():
    gateway = EmbeddedGateway(extra_args=["--durability", "none"]).start()
    folder = tempfile.mkdtemp(prefix="postduif-archive-")
    selection = os.path.join(folder + "-selection.json")
    archiver = None
    try:
        users = {}
        for name in ("minister", "secretary"):
            users[name] = matrix(gateway.url, "POST", "/register", {"username": name, "password": "pw-" + name})["access_token"]
        rooms = [matrix(gateway.url, "POST", "/createRoom", {"name": "cabinet-%d" % i}, users["minister"])["room_id"] for i in range(3)]
        for room in rooms:
            matrix(gateway.url, "POST", "/rooms/%s/invite" % room, {"user_id": "@secretary:gov.test"}, users["minister"])
            matrix(gateway.url, "POST", "/rooms/%s/join" % room, {}, users["secretary"])
        # Room 0 is kept for ever, the rest for a year.
        with open(selection, "w") as f:
            json.dump({"default": "1y", "classes": {"permanent": None, "1y": 365}, "rooms": {rooms[0]: "permanent"}}, f)

        def start_archive():
            return subprocess.Popen([BINARY, "archive", "run", "--broker", gateway.address, "--dir", folder, "--selection-list", selection],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        sent = []
        archiver = start_archive()
        for round_number in range(3):
            for i in range(40):
                room = rooms[i % 3]
                sender = ("minister", "secretary")[i % 2]
                body = "round %d message %d" % (round_number, i)
                event = matrix(gateway.url, "PUT", "/rooms/%s/send/m.room.message/r%d-%d" % (room, round_number, i),
                               {"msgtype": "m.text", "body": body}, users[sender])
                sent.append((room, event["event_id"], body))
            if round_number < 2:
                # Killed mid-stream: whatever it half wrote must not count.
                archiver.send_signal(signal.SIGKILL)
                archiver.wait(timeout=30)
                archiver = start_archive()
        deadline = time.monotonic() + 60
        while len(archived_messages(folder)) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.2)
        archiver.send_signal(signal.SIGKILL)
        archiver.wait(timeout=30)
        archiver = None

        found = archived_messages(folder)
        assert sorted(found) == sorted(sent), "missing %s, extra %s" % (sorted(set(sent) - set(found))[:5], len(found) - len(set(found)))
        assert len(found) == len(set(found)), "archived twice: %s" % [m for m in set(found) if found.count(m) > 1][:5]

        verified = archive("verify", "--dir", folder)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # The export of a conversation is its history, event for event.
        exported = archive("export", "--dir", folder, "--room", rooms[1])
        assert exported.returncode == 0, exported.stderr
        archived = [json.loads(line) for line in exported.stdout.splitlines()]
        history = matrix(gateway.url, "GET", "/rooms/%s/messages?dir=f&limit=1000" % rooms[1], token=users["minister"])["chunk"]
        assert [(e["event_id"], e["type"], e.get("content")) for e in archived] == [(e["event_id"], e["type"], e.get("content")) for e in history]
        assert all(e["postduif"]["retention_class"] == "1y" for e in archived)
        with open(os.path.join(folder, "rooms", os.listdir(os.path.join(folder, "rooms"))[0], "manifest.json")) as f:
            assert "sha256" in json.dumps(json.load(f))

        # A changed byte is seen.
        month_file = next(os.path.join(root, name) for root, _, names in os.walk(os.path.join(folder, "rooms")) for name in names if name.startswith("messages-"))
        with open(month_file, "r+b") as f:
            f.seek(10)
            byte = f.read(1)
            f.seek(10)
            f.write(bytes([byte[0] ^ 0x01]))
        tampered = archive("verify", "--dir", folder)
        assert tampered.returncode == 1 and "NOT INTACT" in tampered.stdout, tampered.stdout
        with open(month_file, "r+b") as f:
            f.seek(10)
            f.write(byte)
        assert archive("verify", "--dir", folder).returncode == 0

        # Two years on, the one-year rooms go, logged; the permanent one stays.
        later = int(time.time() * 1000) + 2 * 366 * 86_400_000
        destroyed = archive("destroy", "--dir", folder, "--selection-list", selection, "--now-ms", str(later))
        assert destroyed.returncode == 0, destroyed.stderr
        left = {room for room, _, _ in archived_messages(folder)}
        assert left == {rooms[0]}
        with open(os.path.join(folder, "destruction-log.jsonl")) as f:
            log = [json.loads(line) for line in f]
        assert {entry["room_id"] for entry in log} == set(rooms[1:]) and all(entry["sha256"] for entry in log)
        assert archive("verify", "--dir", folder).returncode == 0
    finally:
        if archiver is not None:
            archiver.kill()
            archiver.wait()
        gateway.stop()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(gateway.data_dir, ignore_errors=True)
