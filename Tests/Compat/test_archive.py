"""The archive consumer (`postduif archive`, Docs/services.md): a chat
through the gateway while the archive is SIGKILLed and started again twice;
then the archive holds every message exactly once and the files they
carry, verifies, shows a changed byte, exports a conversation equal to its
history, and destroys by the selection list with a log."""
import hashlib
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


def all_files(folder):
    return sorted(os.path.join(root, name) for root, _, names in os.walk(os.path.join(folder, "rooms")) for name in names)


def archived_files(folder):
    """The conversations' month files."""
    return [p for p in all_files(folder) if os.path.basename(p).startswith("messages-")]


def archived_lines(folder):
    for path in archived_files(folder):
        with open(path) as f:
            for line in f:
                yield json.loads(line)


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
        # Files: a report of three chunks in the permanent room, a photo in a one-year room.
        report = os.urandom(600 * 1024)
        photo = os.urandom(10 * 1024)
        files = {}
        for room, name, data, msgtype in ((rooms[0], "report.pdf", report, "m.file"), (rooms[1], "photo.jpg", photo, "m.image")):
            request = urllib.request.Request(gateway.url + "/_matrix/media/v3/upload?filename=" + name, data=data, method="POST",
                                             headers={"Content-Type": "application/octet-stream", "Authorization": "Bearer " + users["minister"]})
            with urllib.request.urlopen(request, timeout=30) as answer:
                uri = json.loads(answer.read())["content_uri"]
            event = matrix(gateway.url, "PUT", "/rooms/%s/send/m.room.message/file-%s" % (room, name),
                           {"msgtype": msgtype, "body": name, "url": uri, "info": {"size": len(data)}}, users["minister"])
            sent.append((room, event["event_id"], name))
            files[event["event_id"]] = (room, uri.rsplit("/", 1)[1], data)
        # Every line visible is not yet every batch committed: a batch's
        # state and manifests are written after its lines. On a loaded
        # machine the first two archivers can be killed before their first
        # batch, and the third then writes everything in one; killed between
        # its lines and its manifests, it leaves an archive that only its
        # next start repairs. So wait for the archive to verify as well.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(archived_messages(folder)) >= len(sent) and archive("verify", "--dir", folder).returncode == 0:
                break
            time.sleep(0.2)
        archiver.send_signal(signal.SIGKILL)
        archiver.wait(timeout=30)
        archiver = None

        found = archived_messages(folder)
        assert sorted(found) == sorted(sent), "missing %s, extra %s" % (sorted(set(sent) - set(found))[:5], len(found) - len(set(found)))
        assert len(found) == len(set(found)), "archived twice: %s" % [m for m in set(found) if found.count(m) > 1][:5]

        verified = archive("verify", "--dir", folder)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # Each file is kept beside its conversation, byte for byte, named in
        # its event and in the conversation's manifest.
        for event_id, (room, media_id, data) in files.items():
            line = next(e for e in archived_lines(folder) if e["event_id"] == event_id)
            kept = line["postduif"]["attachments"][media_id]
            room_folder = os.path.dirname(next(p for p in archived_files(folder) if json.loads(open(p).readline())["room_id"] == room))
            with open(os.path.join(room_folder, kept["file"]), "rb") as f:
                assert f.read() == data
            assert kept["sha256"] == hashlib.sha256(data).hexdigest() and kept["length"] == len(data)
            with open(os.path.join(room_folder, "manifest.json")) as f:
                assert json.load(f)["files"][kept["file"]]["sha256"] == kept["sha256"]

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
        # The photo went with its room's month; the permanent room's report stays.
        assert [e["file"].split("/attachments/")[1].split("/")[1] for e in log if "/attachments/" in e["file"]] == [
            media for _, (room, media, _) in files.items() if room == rooms[1]]
        kept = [p for p in all_files(folder) if "/attachments/" in p]
        assert len(kept) == 1 and open(kept[0], "rb").read() == report
        assert archive("verify", "--dir", folder).returncode == 0
    finally:
        if archiver is not None:
            archiver.kill()
            archiver.wait()
        gateway.stop()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(gateway.data_dir, ignore_errors=True)
