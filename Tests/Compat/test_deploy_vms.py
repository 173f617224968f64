"""Docs/deploy-vms.md, run: its blocks in order, the `admin` ones on this
machine, the `vm` ones in three network namespaces standing in for the
VMs, each VM with its own /etc/postduif, /etc/systemd/system,
/usr/local/bin, /var/lib/postduif* and /run/credentials (bind mounts in a
mount namespace of its own). `apt-get install` lines are skipped (the
packages are here), `systemctl enable --now UNIT` starts the unit's
ExecStart with its Environment=, EnvironmentFile=, drop-ins and
LoadCredential= as systemd would (as root, not a dynamic user), other
`systemctl` lines do nothing, and the copy of step 3 is done here. The
page's addresses 10.0.0.11-13 become the test's own. The page's last
block checks the cluster: three brokers and a controller, a record
through kcat over SASL_SSL, and each gateway's Matrix versions over HTTPS."""
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import BINARY, ROOT
from test_netcut import build_bridge, namespaces_allowed, remove_bridge, unused_prefix

RUNBOOK = os.path.join(ROOT, "Docs", "deploy-vms.md")
VMS = (1, 2, 3)
BOUND = ["etc/postduif", "etc/systemd/system", "usr/local/bin", "var/lib/postduif", "var/lib/postduif-etcd",
         "var/lib/postduif-backup", "run/credentials"]


def blocks():
    """(role, script) of every runnable block, in order."""
    text = open(RUNBOOK).read()
    return [(match.group(1), match.group(2)) for match in re.finditer(r"```sh (admin|vm)\n(.*?)```", text, re.S)]


class Machines:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="postduif-vms-")
        self.tag = "%04x" % (os.getpid() % 0x10000)
        self.prefix = unused_prefix()
        # Mount points this test makes on the host (and removes): the VMs' folders are bound onto them.
        self.mount_points = []
        self.hub = "pvhub-" + self.tag
        self.spaces = {n: "pvm%d-%s" % (n, self.tag) for n in VMS}
        self.root_link = "pvr-" + self.tag
        self.processes = []
        self.made = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        # Restart=on-failure, as systemd does it: a unit whose program exits
        # with an error starts again after RestartSec.
        self.supervisor = threading.Thread(target=self.supervise, daemon=True)
        self.supervisor.start()

    def address(self, n):
        return self.prefix + str(10 + n)

    def build(self):
        build_bridge(self.made, self.hub, [(space, "pv%da-%s" % (n, self.tag), "pv%dh-%s" % (n, self.tag), self.address(n))
                                           for n, space in self.spaces.items()],
                     self.root_link, "pvrh-" + self.tag, self.prefix)
        for n in VMS:
            for path in BOUND:
                os.makedirs(os.path.join(self.root(n), path), exist_ok=True)
                if not os.path.exists("/" + path):
                    os.makedirs("/" + path)
                    self.mount_points.append("/" + path)
            os.makedirs(self.setup(n), exist_ok=True)
        os.makedirs(self.admin(), exist_ok=True)

    def root(self, n):
        return os.path.join(self.dir, "vm%d" % n)

    def setup(self, n):
        return os.path.join(self.root(n), "root", "postduif-setup")

    def admin(self):
        return os.path.join(self.dir, "admin")

    def localize(self, script):
        return script.replace("10.0.0.1", self.prefix + "1")

    def inside(self, n, command):
        """argv running `command` (a shell script) in VM n: its network, its mounts."""
        binds = "; ".join("mount --bind %s /%s" % (shlex.quote(os.path.join(self.root(n), path)), path) for path in BOUND)
        return ["ip", "netns", "exec", self.spaces[n], "unshare", "--mount", "--propagation", "private", "sh", "-c",
                "set -e; %s; %s" % (binds, command)]

    def run(self, role, script, vm=None):
        tools = os.path.dirname(BINARY)
        environment = dict(os.environ, PATH=tools + ":" + os.environ["PATH"])
        if role == "admin":
            result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", self.localize(script)], cwd=self.admin(),
                                    env=environment, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, "admin block failed:\n%s\n%s%s\n%s" % (script, result.stdout[-3000:], result.stderr[-3000:], self.logs())
            return result.stdout
        lines = []
        for line in self.localize(script).splitlines():
            words = line.split()
            if words[:2] == ["apt-get", "install"]:
                continue
            if words[:1] == ["systemctl"]:
                if words[1:3] == ["enable", "--now"]:
                    for unit in words[3:]:
                        self.start_unit(vm, unit)
                continue
            lines.append(line)
        prelude = "VM=%d IP=%s; cd %s" % (vm, self.address(vm), shlex.quote(self.setup(vm)))
        body = "\n".join(lines)
        script_path = os.path.join(self.dir, "vm%d-block.sh" % vm)
        with open(script_path, "w") as f:
            f.write("set -e\n%s\n%s\n" % (prelude, body))
        result = subprocess.run(self.inside(vm, "bash " + shlex.quote(script_path)), env=environment, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, "vm%d block failed:\n%s\n%s%s" % (vm, body, result.stdout[-3000:], result.stderr[-3000:])

    def unit(self, vm, name):
        """A unit's [Service] settings, its drop-ins' after it."""
        base = os.path.join(self.root(vm), "etc", "systemd", "system")
        texts = [open(os.path.join(base, name)).read()]
        drop_ins = os.path.join(base, name + ".d")
        if os.path.isdir(drop_ins):
            texts += [open(os.path.join(drop_ins, conf)).read() for conf in sorted(os.listdir(drop_ins)) if conf.endswith(".conf")]
        settings = []
        for text in texts:
            section = None
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("["):
                    section = line
                elif section == "[Service]" and "=" in line and not line.startswith("#"):
                    key, value = line.split("=", 1)
                    settings.append((key, value))
        return settings

    def host_path(self, vm, path):
        """Where a VM's path lives on this machine (its bound folders), or the path itself."""
        for bound in BOUND:
            if path == "/" + bound or path.startswith("/" + bound + "/"):
                return os.path.join(self.root(vm), path[1:])
        return path

    def start_unit(self, vm, name):
        name = name if name.endswith(".service") else name + ".service"
        settings = self.unit(vm, name)
        credentials = "/run/credentials/" + name
        commands = ["mkdir -p %s" % credentials]
        environment = {}
        for key, value in settings:
            if key == "LoadCredential":
                label, source = value.split(":", 1)
                commands.append("install -m 0400 %s %s/%s" % (shlex.quote(source), credentials, label))
            elif key == "StateDirectory":
                commands += ["mkdir -p /var/lib/%s" % directory for directory in value.split()]
            elif key == "Environment":
                variable, _, assigned = value.partition("=")
                environment[variable] = assigned
            elif key == "EnvironmentFile":
                path = self.host_path(vm, value.lstrip("-"))
                if value.startswith("-") and not os.path.exists(path):
                    continue
                # systemd's reading: KEY=VALUE lines, comments and blanks skipped, no shell.
                for line in open(path).read().splitlines():
                    line = line.strip()
                    if line and not line.startswith("#") and "=" in line:
                        variable, _, assigned = line.partition("=")
                        environment[variable.strip()] = assigned.strip().strip('"')
        exec_start = next(value for key, value in settings if key == "ExecStart")
        assignments = " ".join(shlex.quote("%s=%s" % pair) for pair in environment.items())
        commands.append("exec env %s %s" % (assignments, exec_start))
        restart = dict(settings).get("Restart") == "on-failure"
        delay = float(dict(settings).get("RestartSec", "0.1").rstrip("s"))
        unit = {"vm": vm, "name": name, "argv": self.inside(vm, "; ".join(commands)), "restart": restart, "delay": delay, "starts": 0}
        self.spawn(unit)
        with self.lock:
            self.processes.append(unit)

    def spawn(self, unit):
        log = open(os.path.join(self.dir, "vm%d-%s.log" % (unit["vm"], unit["name"])), "ab")
        unit["process"] = subprocess.Popen(unit["argv"], stdout=log, stderr=subprocess.STDOUT)
        unit["starts"] += 1
        unit["exited"] = None

    def supervise(self):
        while not self.stopping.wait(0.2):
            with self.lock:
                units = list(self.processes)
            for unit in units:
                code = unit["process"].poll()
                if code is None or code == 0 or not unit["restart"] or unit["starts"] >= 30:
                    continue
                unit["exited"] = unit["exited"] or time.monotonic()
                if time.monotonic() - unit["exited"] >= unit["delay"] and not self.stopping.is_set():
                    self.spawn(unit)

    def logs(self):
        found = []
        for unit in self.processes:
            path = os.path.join(self.dir, "vm%d-%s.log" % (unit["vm"], unit["name"]))
            found.append("--- vm%d %s (exit %s, started %d times)\n%s" % (
                unit["vm"], unit["name"], unit["process"].poll(), unit["starts"], open(path, errors="replace").read()[-2500:]))
        return "\n".join(found)

    def remove(self):
        self.stopping.set()
        self.supervisor.join(5)
        # Gateways first, then brokers, then etcd: the order systemd would stop them in.
        for kind in ("gateway", "cluster", "etcd"):
            units = [unit for unit in self.processes if kind in unit["name"]]
            for unit in units:
                # `ip netns exec`, unshare, sh and env each exec the next: the pid is the program's.
                if unit["process"].poll() is None:
                    unit["process"].send_signal(signal.SIGTERM)
            for unit in units:
                try:
                    unit["process"].wait(timeout=60)
                except subprocess.TimeoutExpired:
                    unit["process"].kill()
                    unit["process"].wait()
        remove_bridge(self.made, self.root_link)
        for path in reversed(self.mount_points):
            try:
                os.rmdir(path)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def machines():
    if not namespaces_allowed():
        pytest.skip("network namespaces need root and iproute2")
    made = Machines()
    try:
        made.build()
        yield made
    finally:
        made.remove()


def test_the_vm_runbook_gives_a_tls_cluster_with_gateways(machines):
    runbook = blocks()
    assert [role for role, _ in runbook].count("vm") >= 4 and [role for role, _ in runbook].count("admin") >= 3
    copied = False
    output = ""
    for position, (role, script) in enumerate(runbook):
        if role == "admin":
            output = machines.run("admin", script)
            continue
        if not copied:
            # Step 3: what the page says to copy, to each VM.
            admin = machines.admin()
            for n in VMS:
                target = machines.setup(n)
                os.link(BINARY, os.path.join(target, "postduif"))
                for name in ["pki/ca.pem", "pki/vm%d.pem" % n, "pki/vm%d.key" % n, "users.json", "broker.password", "postduif-gateway.password"]:
                    shutil.copy(os.path.join(admin, name), target)
                shutil.copytree(os.path.join(ROOT, "Deploy"), os.path.join(target, "Deploy"))
                # The settings name the page's addresses: the test's own instead.
                for config in os.listdir(os.path.join(target, "Deploy", "config")):
                    path = os.path.join(target, "Deploy", "config", config)
                    with open(path) as f:
                        text = f.read()
                    with open(path, "w") as f:
                        f.write(machines.localize(text))
            copied = True
        if script.strip().startswith("VM="):
            continue  # the VM's own number and address: set by the harness for each
        for n in VMS:
            machines.run("vm", script, vm=n)
    # The last admin block's output: the cluster status, the record, the gateways' versions.
    try:
        assert output.count('"versions"') == 3, output
        assert "first record" in output, output
        listed = re.findall(r"^(\d)(?: \(controller\))?\t\S+\t\S+\t(\d+)\t", output, re.M)
        assert sorted(broker for broker, _ in listed) == ["1", "2", "3"], output
        assert all(int(replicas) > 0 for _, replicas in listed), "every broker holds replicas: %s" % output
        assert " 0 under-replicated, 0 offline" in output, output
        assert re.search(r"controller [123]\b", output), output
    except AssertionError as error:
        raise AssertionError("%s\n%s" % (error, machines.logs()))
