"""The image's root file system (Deploy/image/build-rootfs.sh: mmdebstrap
from Debian's packages, the binaries, a non-root user) runs the broker:
kcat produces and consumes through it.

`podman run` cannot start containers on the machines `make test` runs on
(their sandbox refuses the setrlimit calls crun makes), so the root file
system is run the way a container runtime would run it, by hand: a new
mount and PID namespace (`unshare`), the unpacked tree bind-mounted
read-only as the root (`chroot`), a writable data directory and /tmp
mounted on it, uid 10001. `make image` imports the same tree with podman;
here podman imports it too where podman is installed, and the image's
configuration is checked."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import BINARY, ROOT, free_port, kcat, unique

BUILD = os.path.join(ROOT, "Deploy", "image", "build-rootfs.sh")
USER_ID = 10001


@pytest.fixture(scope="module")
def rootfs():
    if os.getuid() != 0:
        pytest.skip("mounting the root file system read-only needs root (unshare --mount)")
    work = tempfile.mkdtemp(prefix="postduif-image-")
    tar = os.path.join(work, "rootfs.tar")
    built = subprocess.run([BUILD, os.path.dirname(BINARY), tar], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    tree = os.path.join(work, "root")
    os.mkdir(tree)
    subprocess.run(["tar", "-xf", tar, "-C", tree], check=True)
    yield work, tar, tree
    shutil.rmtree(work, ignore_errors=True)


class Contained:
    """`postduif serve` inside the root file system, read-only, as uid 10001."""

    def __init__(self, tree, data):
        self.port = free_port()
        self.http_port = free_port()
        self.log_path = data + "-log.txt"
        script = ("set -e; mount --bind {tree} {tree}; mount -o remount,bind,ro {tree}; "
                  "mount -t proc proc {tree}/proc; mount -t tmpfs -o size=64m tmpfs {tree}/tmp; "
                  "mount --bind {data} {tree}/var/lib/postduif; "
                  "exec chroot --userspec={uid}:{uid} {tree} /usr/local/bin/postduif serve --host 127.0.0.1 "
                  "--port {port} --http-port {http} --data /var/lib/postduif").format(
                      tree=tree, data=data, uid=USER_ID, port=self.port, http=self.http_port)
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(["unshare", "--mount", "--pid", "--fork", "--kill-child=SIGTERM", "sh", "-c", script],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.read_log()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the contained broker did not listen: " + self.read_log())

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def stop(self):
        # The broker is unshare's child (PID 1 of its namespace): it gets
        # the SIGTERM, and unshare exits with its status.
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout.split()
        for child in children:
            os.kill(int(child), signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def test_the_root_file_system_holds_debian_packages_and_postduif_only(rootfs):
    _, _, tree = rootfs
    status = open(os.path.join(tree, "var", "lib", "dpkg", "status")).read()
    for package in ("librocksdb7.8", "liblz4-1", "libssl3", "libgd3", "etcd-server"):
        assert "Package: %s\n" % package in status, package
    assert os.access(os.path.join(tree, "usr", "local", "bin", "postduif"), os.X_OK)
    assert os.access(os.path.join(tree, "usr", "bin", "etcd"), os.X_OK)
    passwd = open(os.path.join(tree, "etc", "passwd")).read()
    assert "postduif:x:%d:%d:" % (USER_ID, USER_ID) in passwd
    data = os.stat(os.path.join(tree, "var", "lib", "postduif"))
    assert (data.st_uid, data.st_gid) == (USER_ID, USER_ID)
    assert not os.listdir(os.path.join(tree, "usr", "share", "doc")), "documentation is left out"


def test_the_broker_runs_read_only_as_its_user_and_kcat_round_trips(rootfs):
    _, _, tree = rootfs
    data = tempfile.mkdtemp(prefix="postduif-image-data-")
    os.chown(data, USER_ID, USER_ID)
    broker = Contained(tree, data)
    try:
        topic = unique("contained")
        address = "127.0.0.1:%d" % broker.port
        produced = kcat("-b", address, "-t", topic, "-P", "-K:", input=b"k1:first\nk2:second\n")
        assert produced.returncode == 0, produced.stderr + broker.read_log().encode()
        consumed = kcat("-b", address, "-t", topic, "-C", "-e", "-q", "-f", "%k=%s\\n")
        assert consumed.stdout.decode().splitlines() == ["k1=first", "k2=second"], consumed.stderr
        # The broker wrote its data as uid 10001, and only there.
        owners = {os.stat(os.path.join(data, name)).st_uid for name in os.listdir(data)}
        assert owners == {USER_ID}
        processes = subprocess.run(["ps", "-o", "user:12=,args=", "-u", str(USER_ID)], capture_output=True, text=True).stdout
        assert "postduif serve" in processes, processes
    finally:
        assert broker.stop() == 0, broker.read_log()
        shutil.rmtree(data, ignore_errors=True)
        os.unlink(broker.log_path)
    assert not os.path.exists(os.path.join(tree, "var", "lib", "postduif", "CURRENT")), "the data went to the mounted directory"


def test_podman_imports_the_root_file_system_as_an_image(rootfs):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    work, tar, _ = rootfs
    name = "localhost/postduif-test:%d" % os.getpid()
    imported = subprocess.run([os.path.join(ROOT, "Deploy", "image", "import.sh"), tar, name], capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr
    try:
        inspected = json.loads(subprocess.run(["podman", "image", "inspect", name], capture_output=True, text=True, check=True).stdout)[0]
        config = inspected["Config"]
        assert config["User"] == "%d:%d" % (USER_ID, USER_ID)
        assert config["Entrypoint"] == ["/usr/local/bin/postduif"] and config["Cmd"] == ["serve"]
        assert "POSTDUIF_DATA=/var/lib/postduif" in config["Env"]
        assert {"9092/tcp", "9644/tcp", "8008/tcp"} <= set(config["ExposedPorts"])
    finally:
        subprocess.run(["podman", "rmi", "-f", name], capture_output=True)
