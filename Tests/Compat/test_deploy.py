"""Operator files: the systemd unit passes `systemd-analyze verify`, and the
example configuration names only settings the broker has."""
import os
import re
import subprocess

from conftest import BINARY, ROOT

UNIT = os.path.join(ROOT, "Deploy", "systemd", "postduif.service")
ENV = os.path.join(ROOT, "Deploy", "config", "postduif.env")
GATEWAY_UNIT = os.path.join(ROOT, "Deploy", "systemd", "postduif-gateway.service")
GATEWAY_ENV = os.path.join(ROOT, "Deploy", "config", "postduif-gateway.env")


def verify(unit_text, tmp_path):
    path = tmp_path / "postduif.service"
    # verify checks that ExecStart's binary exists: point it at the fresh build.
    path.write_text(unit_text.replace("/usr/local/bin/postduif", BINARY))
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)


def verified(unit, tmp_path):
    """A unit file's text, once it passes `systemd-analyze verify`."""
    with open(unit) as f:
        text = f.read()
    result = verify(text, tmp_path)
    assert result.returncode == 0, result.stderr
    return text


def settings(path, pattern=r"^#?(POSTDUIF_[A-Z_]+)="):
    """The variable names an environment file sets (or shows commented)."""
    with open(path) as f:
        return set(re.findall(pattern, f.read(), re.M))


def help_text(*commands):
    """What `postduif COMMAND --help` prints, for each command given."""
    return "".join(subprocess.run([BINARY, *command.split(), "--help"], capture_output=True, text=True).stdout for command in commands)


def etcd_flags():
    """The flags of Debian's etcd, from `etcd --help`."""
    shown = subprocess.run(["etcd", "--help"], capture_output=True, text=True)
    return set(re.findall(r"--([a-z0-9-]+)", shown.stdout + shown.stderr))


def test_the_unit_verifies(tmp_path):
    text = verified(UNIT, tmp_path)
    assert "KillSignal=SIGTERM" in text and "Restart=on-failure" in text and "StateDirectory=postduif" in text


def test_the_gateway_unit_verifies(tmp_path):
    text = verified(GATEWAY_UNIT, tmp_path)
    assert "ExecStart=/usr/local/bin/postduif gateway" in text and "KillSignal=SIGTERM" in text


def test_every_setting_in_the_gateway_config_is_a_real_option():
    names = settings(GATEWAY_ENV)
    documented = help_text("gateway")
    assert len(names) >= 6
    for name in names:
        assert name in documented, "%s is not documented by postduif gateway --help" % name


def test_a_broken_unit_fails_verification(tmp_path):
    # The check above can fail: an unknown setting makes verify complain.
    with open(UNIT) as f:
        broken = f.read().replace("[Service]", "[Service]\nExecStart=relative/path/postduif")
    assert verify(broken, tmp_path).returncode != 0


def test_every_setting_in_the_example_config_is_a_real_option():
    names = settings(ENV)
    documented = help_text("serve", "user add")
    assert names, "no settings found"
    for name in names:
        assert name in documented, "%s is not documented by postduif serve --help" % name


def test_a_config_file_sets_defaults_and_flags_win(fresh_broker, tmp_path):
    from conftest import kcat
    config = tmp_path / "postduif.env"
    config.write_text("# a node's settings\nPOSTDUIF_DEFAULT_PARTITIONS=3\nPOSTDUIF_AUTO_CREATE_TOPICS=true\n")
    fresh_broker.extra_args = ["--config", str(config)]
    fresh_broker.start()
    listing = kcat("-b", fresh_broker.address, "-L", "-t", "from-config")
    assert b'"from-config" with 3 partitions' in listing.stdout, listing.stdout
    assert fresh_broker.stop() == 0
    fresh_broker.extra_args = ["--config", str(config), "--default-partitions", "2"]
    fresh_broker.start()
    listing = kcat("-b", fresh_broker.address, "-L", "-t", "from-flag")
    assert b'"from-flag" with 2 partitions' in listing.stdout, listing.stdout


CLUSTER_UNIT = os.path.join(ROOT, "Deploy", "systemd", "postduif-cluster.service")
CLUSTER_ENV = os.path.join(ROOT, "Deploy", "config", "postduif-cluster.env")
ETCD_UNIT = os.path.join(ROOT, "Deploy", "systemd", "postduif-etcd.service")
ETCD_ENV = os.path.join(ROOT, "Deploy", "config", "postduif-etcd.env")


def test_the_cluster_member_unit_verifies(tmp_path):
    text = verified(CLUSTER_UNIT, tmp_path)
    assert "ExecStart=/usr/local/bin/postduif serve" in text and "EnvironmentFile=/etc/postduif/postduif-cluster.env" in text
    assert "StateDirectory=postduif postduif-backup" in text and "KillSignal=SIGTERM" in text


def test_the_etcd_unit_verifies(tmp_path):
    text = verified(ETCD_UNIT, tmp_path)
    assert "ExecStart=/usr/bin/etcd" in text and "Conflicts=etcd.service" in text


def test_every_setting_of_a_cluster_member_is_a_real_option():
    names = settings(CLUSTER_ENV)
    documented = help_text("serve")
    assert len(names) >= 15
    for name in names:
        assert name in documented, "%s is not documented by postduif serve --help" % name


def test_every_setting_of_an_etcd_member_is_a_flag_of_debians_etcd():
    names = settings(ETCD_ENV, r"^(ETCD_[A-Z_]+)=")
    flags = etcd_flags()
    assert len(names) >= 15 and len(flags) > 50
    for name in names:
        flag = name[len("ETCD_"):].lower().replace("_", "-")
        assert flag in flags, "%s: etcd has no --%s" % (name, flag)
