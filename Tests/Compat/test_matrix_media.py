"""Attachments through the gateway: a file uploaded is stored in the
cluster's topics (chat-media, chat-media-index), not on the gateway's
disk, so a gateway started afresh serves it; only the uploader and those
who share a room with them may read it; the size limit and a media type
that lies are refused; thumbnails of JPEG, PNG and GIF are made in a
child process to Synapse's sizes, and an image no larger, or one that
does not decode, is its own thumbnail."""
import hashlib
import http.client as httpclient
import json
import os
import shutil
import struct
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import BrokerProcess
from test_chat import EmbeddedGateway, GatewayProcess
from test_matrix_clients import account, http, join, room_with

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def raw(server, method, path, data=None, token=None, content_type=None):
    request = urllib.request.Request(server.url + path, data=data, method=method)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def upload(server, token, data, content_type, name="file.bin"):
    status, _, body = raw(server, "POST", "/_matrix/media/v3/upload?filename=" + urllib.parse.quote(name), data, token, content_type)
    return status, json.loads(body)


@pytest.fixture(scope="module", params=["processes", "embedded"])
def chat(request):
    """Each test runs against a gateway process beside a broker process,
    whose files travel in Produce and Fetch requests, and against the
    gateway inside the broker's process, which appends and reads a file's
    chunks without either (ADR 0035)."""
    if request.param == "embedded":
        embedded = EmbeddedGateway(extra_args=["--durability", "none", "--media-bytes-max", str(12 << 20)]).start()
        yield embedded, embedded
        embedded.stop()
        return
    broker = BrokerProcess(extra_args=["--durability", "none"]).start()
    gateway = GatewayProcess(broker, extra_args=["--media-bytes-max", str(12 << 20)]).start()
    yield broker, gateway
    gateway.stop()
    broker.stop()


def test_files_are_stored_in_the_cluster_and_read_by_members_only(chat):
    broker, gateway = chat
    alice, bob, mallory = account(gateway, "media-alice"), account(gateway, "media-bob"), account(gateway, "media-mallory")
    room = room_with(gateway, alice, "media-bob")
    join(gateway, bob, room)
    status, _, config = raw(gateway, "GET", "/_matrix/client/v1/media/config", token=alice)
    assert status == 200 and json.loads(config)["m.upload.size"] == 12 << 20
    document = os.urandom(10 << 20)
    status, answer = upload(gateway, alice, document, "application/pdf", "nota.pdf")
    assert status == 200, answer
    uri = answer["content_uri"]
    assert uri.startswith("mxc://gov.test/")
    media_id = uri.rsplit("/", 1)[1]
    path = "/_matrix/client/v1/media/download/gov.test/" + media_id
    # The gateway is restarted: the file comes back from the broker.
    assert gateway.stop() == 0
    gateway.start()
    status, headers, body = raw(gateway, "GET", path, token=bob)
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(document).digest()
    assert headers["Content-Type"] == "application/pdf" and headers["Content-Disposition"].startswith("attachment")
    assert headers["X-Content-Type-Options"] == "nosniff"
    # The older path asks for a token too; a stranger and no token get nothing.
    assert raw(gateway, "GET", "/_matrix/media/v3/download/gov.test/" + media_id, token=alice)[0] == 200
    status, _, body = raw(gateway, "GET", path, token=mallory)
    assert status == 404 and json.loads(body)["errcode"] == "M_NOT_FOUND"
    assert raw(gateway, "GET", path)[0] == 401
    assert raw(gateway, "GET", "/_matrix/client/v1/media/download/other.example/" + media_id, token=bob)[0] == 404
    # Images: the type must be true; the image is its own thumbnail.
    status, answer = upload(gateway, alice, PNG, "image/png", "dot.png")
    assert status == 200, answer
    image = answer["content_uri"].rsplit("/", 1)[1]
    status, headers, body = raw(gateway, "GET", "/_matrix/client/v1/media/thumbnail/gov.test/%s?width=32&height=32&method=scale" % image, token=bob)
    assert status == 200 and body == PNG and headers["Content-Type"] == "image/png"
    assert raw(gateway, "GET", "/_matrix/client/v1/media/thumbnail/gov.test/%s?width=32&height=32" % media_id, token=bob)[0] == 400
    status, answer = upload(gateway, alice, b"<html><script>alert(1)</script></html>", "image/png")
    assert status == 400 and answer["errcode"] == "M_INVALID_PARAM"
    status, answer = upload(gateway, alice, PNG, "image/jpeg")
    assert status == 400 and answer["errcode"] == "M_INVALID_PARAM"
    # Over the limit: refused, nothing stored.
    status, answer = upload(gateway, alice, b"x" * ((12 << 20) + 1), "application/octet-stream")
    assert status == 413 and answer["errcode"] == "M_TOO_LARGE"
    assert raw(gateway, "POST", "/_matrix/media/v3/upload", PNG, None, "image/png")[0] == 401


def picture(width, height, kind):
    """A photograph-like test image from ImageMagick (Debian's): a
    gradient, red at the top and blue at the bottom."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "picture." + kind)
        subprocess.run(["convert", "-size", "%dx%d" % (width, height), "gradient:red-blue", path], check=True, timeout=60)
        with open(path, "rb") as f:
            return f.read()


def size_of(image):
    """Width and height from a PNG's IHDR or a JPEG's frame header."""
    if image.startswith(b"\x89PNG"):
        return struct.unpack(">II", image[16:24])
    assert image.startswith(b"\xff\xd8"), image[:4]
    at = 2
    while True:
        marker, length = image[at + 1], struct.unpack(">H", image[at + 2:at + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", image[at + 5:at + 9])
            return width, height
        at += 2 + length


def test_thumbnails_are_scaled_or_cropped_to_the_nearest_size(chat):
    broker, gateway = chat
    alice = account(gateway, "thumb-alice")
    photo = picture(1600, 1200, "jpg")
    status, answer = upload(gateway, alice, photo, "image/jpeg", "foto.jpg")
    assert status == 200, answer
    thumbnail = "/_matrix/client/v1/media/thumbnail/gov.test/%s?" % answer["content_uri"].rsplit("/", 1)[1]
    # Scale: the smallest of 320x240, 640x480, 800x600 at least as large as asked.
    status, headers, body = raw(gateway, "GET", thumbnail + "width=300&height=200&method=scale", token=alice)
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and size_of(body) == (320, 240), (status, headers, body[:200])
    assert len(body) < len(photo) / 4
    # Crop: exactly the box; asked again, the same bytes (kept, not made again).
    status, headers, body = raw(gateway, "GET", thumbnail + "width=90&height=90&method=crop", token=alice)
    assert status == 200 and size_of(body) == (96, 96)
    assert raw(gateway, "GET", thumbnail + "width=96&height=96&method=crop", token=alice)[2] == body
    # The older path too; a thumbnail needs its size.
    status, _, body = raw(gateway, "GET", "/_matrix/media/v3/thumbnail/gov.test/%s?width=640&height=480" % answer["content_uri"].rsplit("/", 1)[1], token=alice)
    assert status == 200 and size_of(body) == (640, 480)
    status, _, body = raw(gateway, "GET", thumbnail + "method=crop", token=alice)
    assert status == 400 and json.loads(body)["errcode"] == "M_MISSING_PARAM"

    # A PNG stays a PNG; one no larger than the box is its own thumbnail.
    wide = picture(2000, 500, "png")
    status, answer = upload(gateway, alice, wide, "image/png", "breed.png")
    assert status == 200, answer
    status, headers, body = raw(gateway, "GET", "/_matrix/client/v1/media/thumbnail/gov.test/%s?width=800&height=600" % answer["content_uri"].rsplit("/", 1)[1], token=alice)
    assert status == 200 and headers["Content-Type"] == "image/png" and size_of(body) == (800, 200)
    small = picture(200, 100, "png")
    status, answer = upload(gateway, alice, small, "image/png", "klein.png")
    status, _, body = raw(gateway, "GET", "/_matrix/client/v1/media/thumbnail/gov.test/%s?width=320&height=240" % answer["content_uri"].rsplit("/", 1)[1], token=alice)
    assert status == 200 and body == small

    # A file with a PNG's header and garbage after it: the decoder fails in
    # the child process, the gateway serves the file itself and lives on.
    broken = wide[:33] + os.urandom(50_000)
    status, answer = upload(gateway, alice, broken, "image/png", "stuk.png")
    assert status == 200, answer
    status, _, body = raw(gateway, "GET", "/_matrix/client/v1/media/thumbnail/gov.test/%s?width=96&height=96&method=crop" % answer["content_uri"].rsplit("/", 1)[1], token=alice)
    assert status == 200 and body == broken
    assert raw(gateway, "GET", "/_matrix/client/versions")[0] == 200


def test_an_upload_that_asks_to_continue_is_told_to_at_once(chat):
    """curl and other HTTP clients send `Expect: 100-continue` with large
    bodies and wait (curl a second) for the interim answer before sending."""
    import socket
    import time

    _, gateway = chat
    token = account(gateway, "media-expect")
    body = os.urandom(300 << 10)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as connection:
        connection.sendall(("POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                            "Content-Type: application/octet-stream\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (token, len(body))).encode())
        connection.settimeout(0.5)
        started = time.monotonic()
        interim = connection.recv(64)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        assert time.monotonic() - started < 0.5
        connection.settimeout(30)
        connection.sendall(body)
        answer = b""
        while b"content_uri" not in answer:
            chunk = connection.recv(4096)
            assert chunk, answer
            answer += chunk
        assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 200 OK", answer


def test_a_file_streams_in_and_out_whole_in_any_form(chat):
    """A file goes to chat-media as it arrives and comes back as it is
    read: sizes around the chunk size, a body without a declared length
    (chunked), and one over the limit sent whole by a client that reads
    nothing until it has sent everything."""
    broker, gateway = chat
    alice = account(gateway, "stream-alice")
    chunk = 256 << 10
    for size in (0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 12345):
        document = os.urandom(size)
        status, answer = upload(gateway, alice, document, "application/octet-stream")
        assert status == 200, (size, answer)
        status, _, body = raw(gateway, "GET", "/_matrix/client/v1/media/download/gov.test/" + answer["content_uri"].rsplit("/", 1)[1], token=alice)
        assert status == 200 and body == document, (size, status, len(body))
    # Chunked: no length declared.
    document = os.urandom(2 * chunk + 7)
    connection = httpclient.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    connection.request("POST", "/_matrix/media/v3/upload", body=iter([document[:1000], document[1000:]]),
                       headers={"Authorization": "Bearer " + alice, "Content-Type": "application/octet-stream"}, encode_chunked=True)
    answer = connection.getresponse()
    assert answer.status == 200
    media_id = json.loads(answer.read())["content_uri"].rsplit("/", 1)[1]
    connection.close()
    status, _, body = raw(gateway, "GET", "/_matrix/client/v1/media/download/gov.test/" + media_id, token=alice)
    assert status == 200 and body == document
    # Over the limit by megabytes, declared: refused once the client has sent it all.
    status, answer = upload(gateway, alice, b"y" * (20 << 20), "application/octet-stream")
    assert status == 413 and answer["errcode"] == "M_TOO_LARGE"
    # A lying image is refused before its first chunk is written; like a
    # file sent with a token that is no good, its answer reaches a client
    # that sends all before it reads (urllib asks for the connection to
    # close, and such a request's rest would otherwise go unread).
    status, answer = upload(gateway, alice, b"GIF89a" + os.urandom(10 << 20), "image/png")
    assert status == 400 and answer["errcode"] == "M_INVALID_PARAM"
    status, answer = upload(gateway, "no-such-token", os.urandom(10 << 20), "application/octet-stream")
    assert status == 401 and answer["errcode"] == "M_UNKNOWN_TOKEN"


def segment_holding(data_dir, marker):
    """The path and position of `marker` in the data folder's files."""
    for folder, _, names in os.walk(data_dir):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                at = f.read().find(marker)
            if at >= 0:
                return path, at
    raise AssertionError("the marker is in no file of " + data_dir)


def test_a_damaged_chunk_is_never_served(chat):
    """Each chunk's batch CRC-32C is checked before its bytes go out: a
    file damaged on disk in its first chunk is a 500, and in a later one
    ends the download before its declared length; the gateway serves on."""
    broker, gateway = chat
    alice = account(gateway, "damage-alice")
    chunk = 256 << 10
    files = []
    for _ in range(2):
        document = os.urandom(6 * chunk)
        status, answer = upload(gateway, alice, document, "application/octet-stream")
        assert status == 200, answer
        files.append((document, "/_matrix/client/v1/media/download/gov.test/" + answer["content_uri"].rsplit("/", 1)[1]))
    # One byte flipped in the first file's first chunk, the second's last
    # (beyond what the first read of a file brings).
    for (document, _), place in zip(files, (1000, 5 * chunk + 1000)):
        path, at = segment_holding(broker.data_dir, document[place:place + 64])
        with open(path, "r+b") as f:
            f.seek(at + 10)
            byte = f.read(1)
            f.seek(at + 10)
            f.write(bytes([byte[0] ^ 0xFF]))
    status, _, body = raw(gateway, "GET", files[0][1], token=alice)
    assert status == 500 and json.loads(body)["errcode"] == "M_UNKNOWN", (status, body[:200])
    connection = httpclient.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    connection.request("GET", files[1][1], headers={"Authorization": "Bearer " + alice})
    answer = connection.getresponse()
    assert answer.status == 200 and int(answer.headers["Content-Length"]) == 6 * chunk
    with pytest.raises(httpclient.IncompleteRead) as cut:
        answer.read()
    # What went out is the file's start, and never the damaged chunk.
    assert cut.value.partial == files[1][0][:len(cut.value.partial)] and chunk <= len(cut.value.partial) <= 5 * chunk
    connection.close()
    assert "a file's download ended early" in gateway.read_log()
    assert raw(gateway, "GET", "/_matrix/client/versions")[0] == 200


def page_faults(process):
    """Minor page faults the process has taken (/proc/PID/stat, field 10)."""
    with open("/proc/%d/stat" % process.process.pid) as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[7])


@pytest.mark.parametrize("tunables", [None, "glibc.malloc.check=0"])
def test_the_buffers_of_one_file_are_reused_by_the_next(tunables):
    """The server keeps the memory of a file's large buffers for the next
    file (ADR 0036) rather than touching fresh pages for every one: with
    glibc's defaults a 10 MiB upload took about 2,000 page faults, a sixth
    of its server CPU. An operator's own GLIBC_TUNABLES for the allocator
    stand, and then glibc's defaults apply again."""
    server = EmbeddedGateway(extra_args=["--durability", "none", "--media-bytes-max", str(12 << 20)])
    if tunables:
        server.command_prefix = ["env", "GLIBC_TUNABLES=" + tunables]
    server.start()
    try:
        alice = account(server, "buffers-alice")
        document = os.urandom(10 << 20)
        for _ in range(2):
            assert upload(server, alice, document, "application/octet-stream")[0] == 200
        before = page_faults(server)
        uploads = 5
        for _ in range(uploads):
            assert upload(server, alice, document, "application/octet-stream")[0] == 200
        per_upload = (page_faults(server) - before) / uploads
        # 10 MiB is 2,560 pages. Measured on the debug build: 1,270-1,980
        # faults an upload with glibc's defaults, 290-550 with the
        # buffers reused; the line between is drawn in the middle.
        if tunables:
            assert per_upload > 900, per_upload
        else:
            assert per_upload < 900, per_upload
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
