"""The layout a Debian administrator expects, and every part of it overridable.

Defaults: /etc/logkey/config.yaml, /etc/logkey/patterns.d/ (local packs, overriding shipped
ones by name), /var/lib/logkey/ (state and the dir store), /run/logkey/ (sockets, relayclient's
cache). A temp dir stands for / here: a configuration in <root>/etc/logkey/ found through
$LOGKEY_CONFIG puts everything under <root>, and the commands really write there."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT, run_logkey, stop_process
from logkey import config
from logkey.smtp import relayclient

LAYOUT = {
    "config": "/etc/logkey/config.yaml",
    "patterns_dir": "/etc/logkey/patterns.d",
    "state_dir": "/var/lib/logkey/state",
    "store": "/var/lib/logkey/gates",
    "policy": "unix:/run/logkey/policy.sock",
    "run_dir": "/run/logkey",
}


def test_the_defaults_are_the_debian_layout():
    d = config.defaults()
    assert config.DEFAULT_PATH == relayclient.DEFAULT_CONFIG == LAYOUT["config"]
    assert d.patterns_dir == LAYOUT["patterns_dir"]
    assert d.state_dir == LAYOUT["state_dir"]
    assert d.store == {"type": "dir", "path": LAYOUT["store"]}
    assert d.policy["listen"] == [LAYOUT["policy"]]
    assert relayclient.DEFAULT_RUN_DIR == LAYOUT["run_dir"]
    example = config.load(str(ROOT / "config.example.yaml"))
    assert example.store["path"] == LAYOUT["store"] and example.state_dir == LAYOUT["state_dir"]
    assert example.patterns_dir == LAYOUT["patterns_dir"]


@pytest.fixture
def root():
    """A short temp dir standing for / (unix socket paths are limited to 107 bytes)."""
    d = tempfile.mkdtemp(prefix="lk-root-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def rooted(root, path):
    return os.path.join(root, path.lstrip("/"))


def write_site(root):
    """<root>/etc/logkey/config.yaml naming the default layout under <root>, relative to the
    configuration file as an administrator may write it; a local dovecot pack overriding the
    shipped one (its login rule renamed, so that its use shows)."""
    etc = rooted(root, "/etc/logkey")
    os.makedirs(etc + "/patterns.d")
    text = (ROOT / "patterns" / "dovecot.yaml").read_text()
    assert text.count("  - id: login\n") == 1
    with open(etc + "/patterns.d/dovecot.yaml", "w") as f:
        f.write(text.replace("  - id: login\n", "  - id: site-login\n"))
    os.makedirs(rooted(root, "/var/log"))
    with open(rooted(root, "/var/log/mail.log"), "w") as f:
        f.write("2026-11-28T00:20:00+00:00 mail dovecot: pop3-login: Login: user=<bob>, "
                "method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=1, session=<abc>\n")
    cfg = etc + "/config.yaml"
    with open(cfg, "w") as f:
        f.write("logs: [../../var/log/mail.log]\n"
                "patterns_dir: patterns.d\n"
                "state_dir: ../../var/lib/logkey/state\n"
                "store: {type: dir, path: ../../var/lib/logkey/gates}\n"
                "policy: {listen: [unix:../../run/logkey/policy.sock]}\n"
                "popwrap: {socket: ../../run/logkey/popwrap.sock}\n")
    return {"LOGKEY_CONFIG": cfg, "LOGKEY_RUN_DIR": rooted(root, "/run/logkey")}


def test_local_pack_in_patterns_d_overrides_the_shipped_one(root):
    env = write_site(root)
    out = run_logkey("packs", "list", "--pack", "dovecot", env=env, check=0).stdout.decode()
    assert f"from:     local, overrides the shipped pack: {root}/etc/logkey/patterns.d/" in out
    out = run_logkey("dry-run", "--now", "2026-11-28T00:25:00+00:00",
                     rooted(root, "/var/log/mail.log"), env=env, check=0).stdout.decode()
    assert "site-login" in out and "192.0.2.7" in out, out


def test_watch_policy_and_popwrap_use_the_configured_layout(root):
    env = write_site(root)
    run_logkey("watch", "--once", "--as-of", "2026-11-28T00:21:00+00:00", env=env, check=0)
    gates = rooted(root, "/var/lib/logkey/gates")
    assert os.listdir(gates) == ["192.0.2.7"]
    assert os.stat(gates).st_mode & 0o777 == 0o750
    assert os.listdir(rooted(root, "/var/lib/logkey/state")), "read offsets are kept there"
    run_logkey("check", "192.0.2.7", env=env, check=0)

    exe = os.environ.get("LOGKEY_EXE")
    cmd = [exe] if exe else [sys.executable, "-m", "logkey"]
    full_env = {**os.environ, **env}
    procs = [subprocess.Popen(cmd + [name], env=full_env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for name in ("policy", "watch")]
    try:
        run = rooted(root, "/run/logkey")
        deadline = time.monotonic() + 30
        while not all(os.path.exists(f"{run}/{n}.sock") for n in ("policy", "popwrap")):
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(f"{run}/policy.sock")
            s.sendall(b"request=smtpd_access_policy\nclient_address=192.0.2.7\n\n")
            assert s.recv(100) == b"action=OK\n\n"
    finally:
        for p in procs:
            stop_process(p)
    assert [p.returncode for p in procs] == [0, 0]

