"""Operator files: the systemd unit passes `systemd-analyze verify`, and the
example configuration names only settings the broker has."""
import os
import re
import subprocess

from conftest import BINARY, ROOT

UNIT = os.path.join(ROOT, "Deploy", "systemd", "postduif.service")
ENV = os.path.join(ROOT, "Deploy", "config", "postduif.env")


def verify(unit_text, tmp_path):
    path = tmp_path / "postduif.service"
    # verify checks that ExecStart's binary exists: point it at the fresh build.
    path.write_text(unit_text.replace("/usr/local/bin/postduif", BINARY))
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)


def test_the_unit_verifies(tmp_path):
    with open(UNIT) as f:
        text = f.read()
    result = verify(text, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "KillSignal=SIGTERM" in text and "Restart=on-failure" in text and "StateDirectory=postduif" in text


def test_a_broken_unit_fails_verification(tmp_path):
    # The check above can fail: an unknown setting makes verify complain.
    with open(UNIT) as f:
        broken = f.read().replace("[Service]", "[Service]\nExecStart=relative/path/postduif")
    assert verify(broken, tmp_path).returncode != 0


def test_every_setting_in_the_example_config_is_a_real_option():
    with open(ENV) as f:
        names = set(re.findall(r"^#?(POSTDUIF_[A-Z_]+)=", f.read(), re.M))
    help_text = subprocess.run([BINARY, "serve", "--help"], capture_output=True, text=True).stdout
    help_text += subprocess.run([BINARY, "user", "add", "--help"], capture_output=True, text=True).stdout
    assert names, "no settings found"
    for name in names:
        assert name in help_text, "%s is not documented by postduif serve --help" % name
