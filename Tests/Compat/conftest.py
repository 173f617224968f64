"""Starts a freshly built Postduif broker for the compatibility tests.

Each test module gets its own broker on a free loopback port with a data
directory of its own. The binary is .build/debug/postduif unless
POSTDUIF_BIN names another. Teardown sends SIGTERM and requires a clean
exit (code 0): graceful shutdown is part of what is tested.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("POSTDUIF_BIN", os.path.join(ROOT, ".build", "debug", "postduif"))

# Everything the tests make with tempfile (data folders, logs, client
# stores), and what their processes make through TMPDIR, goes in one
# folder of this run's own: removed when the run passes, kept (and named)
# when it fails, so a failed run's logs stay readable and a passing one
# leaves nothing behind.
RUN_TMP = tempfile.mkdtemp(prefix="postduif-tests-")
os.environ["TMPDIR"] = RUN_TMP
tempfile.tempdir = RUN_TMP


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:
        shutil.rmtree(RUN_TMP, ignore_errors=True)
    else:
        print("\nthe run's files and logs are kept in %s" % RUN_TMP)


# Every broker a test starts serves its HTTP proxy on a free port unless
# the test names one: several brokers run at once, and 8082 (the
# default) may be taken.
os.environ.setdefault("POSTDUIF_HTTP_PROXY_PORT", "0")


_given_ports = set()


def free_port():
    """A free loopback port, never one this run handed out before: a port
    is free again once its probe closes, and a broker given it twice (a
    listener and its HTTP proxy, say) would not start."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def wait_port(port, timeout=30):
    """Until something accepts connections on loopback `port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nothing listens on port %d after %d s" % (port, timeout))


class ServerProcess:
    """A server a test started: SIGTERM (or another signal) to stop it, with
    its exit code, and the tail of its log. Subclasses set `process`,
    `log` and `log_path`."""

    def stop(self, sig=signal.SIGTERM):
        if self.process is None:
            return None
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        self.log.close()
        return code

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def alive(self):
        return self.process is not None and self.process.poll() is None


class BrokerProcess(ServerProcess):
    """`command_prefix` runs the broker through another command first
    (`nsenter` into a mount namespace the test made, for example)."""

    def __init__(self, data_dir=None, extra_args=(), command_prefix=()):
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="postduif-compat-")
        self.port = free_port()
        self.http_port = free_port()
        self.proxy_port = free_port()
        self.extra_args = list(extra_args)
        self.command_prefix = list(command_prefix)
        self.process = None
        self.log_path = os.path.join(self.data_dir + "-log.txt")

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def proxy_url(self):
        return "http://127.0.0.1:%d" % self.proxy_port

    def start(self):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command_prefix + [BINARY, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--http-port", str(self.http_port),
             "--http-proxy-port", str(self.proxy_port), "--data", self.data_dir,
             "--log-level", os.environ.get("POSTDUIF_TEST_LOG_LEVEL", "debug")] + self.extra_args,
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("broker exited with %s; log: %s" % (self.process.returncode, self.read_log()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("broker did not listen within 30 s; log: %s" % self.read_log())



@pytest.fixture(scope="module")
def broker():
    assert os.path.exists(BINARY), "build the broker first (swift build): %s" % BINARY
    process = BrokerProcess().start()
    yield process
    code = process.stop()
    log = process.read_log()
    shutil.rmtree(process.data_dir, ignore_errors=True)
    assert code == 0, "broker did not stop cleanly on SIGTERM (exit %s); log: %s" % (code, log)


@pytest.fixture
def fresh_broker():
    """A broker of the test's own, for tests that restart or stop it."""
    process = BrokerProcess()
    yield process
    if process.alive():
        process.stop()
    shutil.rmtree(process.data_dir, ignore_errors=True)


def kcat(*args, input=None, timeout=60):
    result = subprocess.run(["kcat"] + list(args), input=input, capture_output=True, timeout=timeout)
    return result


def add_users(data_dir, users):
    """SASL users, {name: password}, in a broker's data directory (postduif user add)."""
    for user, password in dict(users).items():
        added = subprocess.run([BINARY, "user", "add", user, "--password-stdin", "--data", data_dir],
                               input=(password + "\n").encode(), capture_output=True)
        assert added.returncode == 0, added.stderr


def unique(name):
    return "%s-%d" % (name, int(time.time() * 1000) % 10_000_000)
