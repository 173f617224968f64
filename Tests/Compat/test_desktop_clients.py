"""The Matrix desktop clients Debian ships, Quaternion 0.0.95 (libQuotient
0.6, the r0 API) and nheko 0.11.3, driven under Xvfb with xdotool as a
user would: each logs in, joins or opens a room, sends a message (stored
once) and shows one it receives (read off the screen with tesseract); nheko
and matrix-nio then talk in an encrypted room, each reading the other.
Every request a client makes passes a logging proxy (logging_proxy.py);
none may be answered 5xx or 404 but the few 404s the specification asks
for (no key backup yet). A screenshot of every step is kept in
.test-output/desktop/ (its path is printed)."""
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse

import pytest

from conftest import free_port
from logging_proxy import LoggingProxy
from test_chat import EmbeddedGateway
from test_matrix_clients import account, http, join, room_with

SCREENSHOTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".test-output", "desktop")

# 404s the specification asks for: a client asks for its key backup before
# it made one, or for account data it has not stored yet.
EXPECTED_NOT_FOUND = [("GET", "/room_keys/version"), ("GET", "/account_data/")]


@pytest.fixture(scope="module")
def desktop():
    """The gateway behind a logging proxy, and an X display of our own."""
    gateway = EmbeddedGateway(extra_args=["--durability", "none"]).start()
    proxy = LoggingProxy(gateway.port, free_port()).start()
    display = ":%d" % (90 + os.getpid() % 100)
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Up once a client of it can ask its geometry.
    deadline = time.monotonic() + 20
    while subprocess.run(["xdotool", "getdisplaygeometry"], env=dict(os.environ, DISPLAY=display), capture_output=True).returncode != 0:
        assert xvfb.poll() is None and time.monotonic() < deadline, "Xvfb did not start on " + display
        time.sleep(0.1)
    os.makedirs(SCREENSHOTS, exist_ok=True)
    print("desktop screenshots in", os.path.abspath(SCREENSHOTS))
    yield gateway, proxy, display
    xvfb.terminate()
    xvfb.wait(timeout=10)
    proxy.stop()
    assert gateway.stop() == 0, "broker with gateway did not stop cleanly: " + gateway.read_log()


class Desktop:
    """One client on the display: its process group, keys, screenshots."""

    def __init__(self, display, name, command, proxy):
        self.display = display
        self.name = name
        self.proxy = proxy
        self.home = tempfile.mkdtemp(prefix="postduif-%s-" % name)
        os.makedirs(os.path.join(self.home, "run"), mode=0o700)
        os.makedirs(os.path.join(self.home, "tmp"), mode=0o700)
        # Its own TMPDIR too: Qt keeps a single-instance guard's key files
        # and local sockets there (nheko's), which must not meet another
        # client's.
        self.env = dict(os.environ, HOME=self.home, DISPLAY=display, QT_QPA_PLATFORM="xcb", XDG_CONFIG_HOME=self.home + "/.config",
                        XDG_DATA_HOME=self.home + "/.local/share", XDG_CACHE_HOME=self.home + "/.cache", XDG_RUNTIME_DIR=self.home + "/run",
                        TMPDIR=self.home + "/tmp")
        self.log_path = os.path.join(self.home, "client.log")
        self.log = open(self.log_path, "wb")
        # A process group of its own: the client and whatever it starts
        # (a session bus, a keyring) are stopped together, and nothing else.
        self.process = subprocess.Popen(command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.step = 0

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def xdotool(self, *args):
        subprocess.run(["xdotool"] + [str(a) for a in args], env=self.env, check=True, timeout=60)

    def click(self, x, y, button=1):
        self.xdotool("mousemove", x, y, "click", button)
        time.sleep(0.3)

    def type(self, text):
        self.xdotool("type", "--delay", 25, text)

    def key(self, *keys):
        self.xdotool("key", *keys)

    def screenshot(self, what):
        self.step += 1
        path = os.path.join(SCREENSHOTS, "%s-%02d-%s.png" % (self.name, self.step, what))
        subprocess.run(["import", "-window", "root", path], env=self.env, check=True, timeout=60)
        return path

    def screen_text(self, what):
        """The screen's text as tesseract reads it (enlarged: the clients' fonts are small)."""
        path = self.screenshot(what)
        enlarged = path.replace(".png", "-ocr.png")
        subprocess.run(["convert", path, "-resize", "300%", "-colorspace", "Gray", enlarged], check=True, timeout=60)
        text = subprocess.run(["tesseract", enlarged, "-"], capture_output=True, text=True, timeout=120).stdout
        os.remove(enlarged)
        return text

    def client_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def wait_for_request(self, method, fragment, status=200, seconds=60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "%s exited: %s" % (self.name, self.client_log())
            if any(m == method and fragment in urllib.parse.unquote(p) and s == status for m, p, s in self.proxy.seen()):
                return
            time.sleep(0.2)
        raise AssertionError("%s made no %s %s answered %d within %d s; it made %s" % (self.name, method, fragment, status, seconds, self.proxy.seen()[-20:]))

    def wait_for_text(self, text, what, seconds=30, gone=False):
        """Until `text` shows on the screen (or, with `gone`, no longer does)."""
        deadline = time.monotonic() + seconds
        seen = ""
        while time.monotonic() < deadline:
            seen = self.screen_text(what)
            if (text in seen) != gone:
                return seen
            time.sleep(1)
        raise AssertionError("%r %s on %s's screen; it read: %s" % (text, "stayed" if gone else "never showed", self.name, seen))

    def wait_for_log(self, text, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if text in self.client_log():
                return
            time.sleep(0.2)
        raise AssertionError("%s never logged %r: %s" % (self.name, text, self.client_log()))


# nheko guards against a second instance with System V shared memory and
# a semaphore, keyed (ftok) by the inode of a file in TMPDIR; an nheko
# stopped before it cleans up leaves them on the machine. Once, on a
# machine that had run the suite many times, nheko printed "Sending
# Matrix URL to main application" (it took itself for a second instance)
# and never started; a key colliding with one left behind is the likely
# cause. As root, each runs in an IPC namespace of its own (`unshare
# --ipc`): nothing another process left meets it, and what it leaves goes
# with the namespace.
NHEKO = (["unshare", "--ipc"] if os.geteuid() == 0 else []) + ["dbus-run-session", "--", "sh", "-c",
         # nheko keeps its secrets in a Secret Service: a session bus of its
         # own with an unlocked keyring.
         "eval \"$(printf 'postduif\\n' | gnome-keyring-daemon --unlock --components=secrets)\"; export GNOME_KEYRING_CONTROL; exec nheko"]


def nheko_logs_in(client, name, proxy):
    """nheko's login as a user does it, then its encryption set-up
    (cross-signing, secret storage, key backup) accepted."""
    client.wait_for_log("starting nheko")
    client.wait_for_text("LOGIN", "started")
    client.click(614, 432)
    client.wait_for_text("Matrix ID", "login-form")
    client.click(532, 275)
    client.type("@%s:gov.test" % name)
    # Leaving the field looks the server up (.well-known of gov.test,
    # which does not resolve here); then it asks for the address.
    client.click(532, 332)
    client.wait_for_log("Autodiscovery failed")
    client.wait_for_text("Homeserver", "homeserver-asked")
    client.click(532, 282)
    client.type("pw " + name)
    client.click(532, 340)
    client.type("nheko")
    client.click(532, 397)
    client.key("ctrl+a")
    client.type(proxy.url)
    # It checks the address (versions, login flows) before it logs in; the
    # button takes the answer a moment later.
    client.wait_for_request("GET", "/_matrix/client/v3/login")
    time.sleep(1)
    client.screenshot("login-filled")
    client.click(533, 526)
    client.wait_for_request("POST", "/_matrix/client/v3/login")
    client.wait_for_request("POST", "/_matrix/client/v3/keys/upload")
    client.wait_for_text("Setup Encryption", "encryption-setup")
    client.click(913, 561)
    client.wait_for_request("POST", "/_matrix/client/v3/keys/device_signing/upload")
    client.wait_for_request("POST", "/_matrix/client/v3/room_keys/version")
    client.wait_for_text("recovery key", "recovery-key")
    client.click(1011, 333)


def unexpected(requests):
    """Requests answered 5xx, or 404 where the specification does not ask for one."""
    bad = []
    for method, path, status in requests:
        if status >= 500 or (status == 404 and not any(method == m and fragment in path for m, fragment in EXPECTED_NOT_FOUND)):
            bad.append((method, path, status))
    return bad


def messages(gateway, token, room):
    status, _, page = http(gateway, "GET", "/rooms/%s/messages?dir=b&limit=50" % urllib.parse.quote(room), token=token)
    assert status == 200, page
    return [e["content"].get("body") for e in reversed(page["chunk"]) if e["type"] == "m.room.message"]


def test_quaternion_logs_in_over_r0_joins_sends_and_receives(desktop):
    gateway, proxy, display = desktop
    user = account(gateway, "quaternion-user")
    host = account(gateway, "quaternion-host")
    room = room_with(gateway, host, "quaternion-user")
    assert http(gateway, "PUT", "/rooms/%s/send/m.room.message/h1" % urllib.parse.quote(room), {"msgtype": "m.text", "body": "welcome"}, host)[0] == 200
    before = len(proxy.seen())
    client = Desktop(display, "quaternion", ["quaternion"], proxy)
    try:
        client.wait_for_log("Show time!")
        client.wait_for_text("Matrix ID", "started")
        # The login dialog: the server first (a bare user name then needs no
        # discovery), then name, password and device.
        client.click(477, 117)
        client.key("ctrl+a")
        client.type(proxy.url)
        client.key("Tab")
        client.wait_for_request("GET", "/_matrix/client/r0/login")
        client.click(477, 24)
        client.type("quaternion-user")
        client.click(477, 55)
        client.type("pw quaternion-user")
        client.click(477, 86)
        client.type("desk")
        client.screenshot("login-filled")
        client.click(508, 177)
        client.wait_for_request("POST", "/_matrix/client/r0/login")
        client.wait_for_request("GET", "/_matrix/client/r0/sync")
        client.wait_for_text("Invited", "logged-in")
        # Accept the invitation from the room list's menu.
        client.click(60, 50)
        client.key("Right")
        time.sleep(0.5)
        client.click(100, 67, button=3)
        client.wait_for_text("Join room", "invite-menu")
        client.click(158, 183)
        client.wait_for_request("POST", "/_matrix/client/r0/join/")
        # The room leaves the invitations for another group.
        client.wait_for_text("Invited", "joined-group", gone=True)
        # The joined room is under another group now: open it there.
        client.click(60, 50)
        client.key("Right")
        time.sleep(0.5)
        client.click(90, 67)
        client.wait_for_text("welcome", "joined")
        client.click(440, 260)
        client.type("hello from quaternion")
        client.key("Return")
        client.wait_for_request("PUT", "/send/m.room.message/")
        client.wait_for_text("hello from quaternion", "sent")
        assert messages(gateway, host, room).count("hello from quaternion") == 1
        assert http(gateway, "PUT", "/rooms/%s/send/m.room.message/h2" % urllib.parse.quote(room), {"msgtype": "m.text", "body": "reply from the host"}, host)[0] == 200
        client.wait_for_text("reply from the host", "received")
    finally:
        client.stop()
    requests = proxy.seen()[before:]
    assert all(path.startswith("/_matrix/client/r0/") or path == "/_matrix/client/versions" for _, path, _ in requests), requests
    assert not unexpected(requests), unexpected(requests)


def test_nheko_logs_in_sets_up_encryption_sends_once_and_receives(desktop):
    gateway, proxy, display = desktop
    host = account(gateway, "nheko-host")
    user = account(gateway, "nheko-user")
    room = room_with(gateway, host, "nheko-user")
    join(gateway, user, room)
    assert http(gateway, "PUT", "/rooms/%s/send/m.room.message/h1" % urllib.parse.quote(room), {"msgtype": "m.text", "body": "welcome to nheko"}, host)[0] == 200
    before = len(proxy.seen())
    client = Desktop(display, "nheko", NHEKO, proxy)
    try:
        nheko_logs_in(client, "nheko-user", proxy)
        client.click(130, 75)
        client.wait_for_text("welcome to nheko", "room")
        client.click(600, 580)
        client.type("hello from nheko")
        client.key("Return")
        client.wait_for_request("PUT", "/send/m.room.message/")
        # Its own message comes back with its transaction id: shown once,
        # not once sent and once pending.
        text = client.wait_for_text("hello from nheko", "sent")
        assert text.count("hello from nheko") == 1, text
        assert messages(gateway, host, room).count("hello from nheko") == 1
        assert http(gateway, "PUT", "/rooms/%s/send/m.room.message/h2" % urllib.parse.quote(room), {"msgtype": "m.text", "body": "reply from the host"}, host)[0] == 200
        client.wait_for_text("reply from the host", "received")
    finally:
        client.stop()
    requests = proxy.seen()[before:]
    assert not unexpected(requests), unexpected(requests)
    # What nheko asked for as it started is served.
    asked = {(method, path.split("/_matrix/client/v3/")[-1].split("/")[0]) for method, path, _ in requests}
    for route in [("GET", "devices"), ("POST", "keys"), ("GET", "voip"), ("GET", "sync")]:
        assert route in asked, (route, sorted(asked))


def test_nheko_and_matrix_nio_read_each_other_in_an_encrypted_room(desktop):
    """Encryption between two clients we did not write: nheko encrypts a
    message to a matrix-nio device (vodozemac) that decrypts it, and reads
    nio's encrypted answer; the server holds only ciphertext."""
    import asyncio

    from nio import MegolmEvent, RoomMessageText, RoomSendResponse

    from test_matrix_e2ee import encrypting, until

    gateway, proxy, display = desktop
    loop = asyncio.new_event_loop()
    nio = loop.run_until_complete(encrypting(gateway.url, "e2e-desk-nio"))
    user = account(gateway, "e2e-desk-nheko")
    created = loop.run_until_complete(nio.room_create(name="Versleuteld", invite=["@e2e-desk-nheko:gov.test"], initial_state=[
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]))
    room = created.room_id
    join(gateway, user, room)
    received = []
    undecrypted = []
    nio.add_event_callback(lambda room_, event: received.append(event.body), RoomMessageText)
    nio.add_event_callback(lambda room_, event: undecrypted.append(event), MegolmEvent)

    def read_by_nio(text):
        # An event that came before its room key is decrypted once the key
        # has come (nio does not go back to it by itself).
        for event in list(undecrypted):
            try:
                decrypted = nio.decrypt_event(event)
            except Exception:
                continue
            undecrypted.remove(event)
            received.append(getattr(decrypted, "body", None))
        return text in received
    before = len(proxy.seen())
    client = Desktop(display, "nheko-e2e", NHEKO, proxy)
    try:
        nheko_logs_in(client, "e2e-desk-nheko", proxy)
        client.click(130, 75)
        client.wait_for_text("Versleuteld", "encrypted-room")
        client.click(600, 580)
        client.type("versleuteld van nheko")
        client.key("Return")
        client.wait_for_request("PUT", "/send/m.room.encrypted/")
        try:
            loop.run_until_complete(until(nio, lambda: read_by_nio("versleuteld van nheko"), rounds=30))
        except AssertionError:
            raise AssertionError("nio never read nheko's message (%d undecrypted); nheko asked: %s"
                                 % (len(undecrypted), [r for r in proxy.seen()[before:] if "/sync" not in r[1]]))
        # nio learns nheko's device from the keys nheko uploaded, and shares
        # its room key with it.
        if nio.should_query_keys:
            loop.run_until_complete(nio.keys_query())
        sent = loop.run_until_complete(nio.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "antwoord van nio"}, ignore_unverified_devices=True))
        assert isinstance(sent, RoomSendResponse), sent
        client.wait_for_text("antwoord van nio", "decrypted", seconds=45)
    finally:
        client.stop()
        loop.run_until_complete(nio.close())
        loop.close()
    status, _, page = http(gateway, "GET", "/rooms/%s/messages?dir=b&limit=50" % urllib.parse.quote(room), token=user)
    assert status == 200 and "versleuteld van nheko" not in str(page) and "antwoord van nio" not in str(page)
    assert [e for e in page["chunk"] if e["type"] == "m.room.encrypted"], page
    assert not unexpected(proxy.seen()[before:]), unexpected(proxy.seen()[before:])
