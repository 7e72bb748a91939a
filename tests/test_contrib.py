"""The daemontools and runit run scripts in contrib/: valid sh, every logkey command line in
them parses with logkey's own CLI, every setting they read has its env file; and the
daemontools ones really run under svscan/supervise with multilog (Debian's daemontools), in a
temp dir: the watcher opens a gate, restarts under `svc -t`, and its log lands in multilog's
files with TAI64N stamps."""
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT
from conftest import wait_for as _wait_for

wait_for = functools.partial(_wait_for, timeout=30.0)     # supervise and multilog take time
from logkey.commands.cli import build_parser

CONTRIB = ROOT / "contrib"
RUN_SCRIPTS = sorted(CONTRIB.glob("*/*/run")) + sorted(CONTRIB.glob("*/*/log/run"))
SERVICES = sorted(p.parent for p in CONTRIB.glob("*/*/run"))


def test_run_scripts_exist_for_both_supervisors():
    names = {f"{p.parent.name}/{p.name}" for p in SERVICES}
    assert names == {f"{k}/logkey-{s}" for k in ("daemontools", "runit")
                     for s in ("watch", "policy")}
    for service in SERVICES:
        assert (service / "log" / "run").is_file()


@pytest.mark.parametrize("script", RUN_SCRIPTS, ids=lambda p: str(p.relative_to(CONTRIB)))
def test_run_script_is_valid_sh_and_executable(script):
    proc = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(script, os.X_OK) and script.read_text().startswith("#!/bin/sh\n")


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: str(p.relative_to(CONTRIB)))
def test_run_scripts_name_real_commands_and_their_settings(service):
    text = (service / "run").read_text()
    commands = re.findall(r"\blogkey ([a-z][a-z -]*?)\s*$", text, re.M)
    assert commands == [service.name.removeprefix("logkey-")], commands
    for command in commands:
        args = build_parser().parse_args(shlex.split(command))   # exits on an unknown option
        assert args.func
    env = {p.name for p in (service / "env").iterdir()}
    used = set(re.findall(r"\$\{?(LOGKEY_[A-Z_]+)", text + (service / "log" / "run").read_text()))
    # LOGKEY_CONFIG is read by logkey itself, PATH by envdir/chpst to find it
    assert used | {"LOGKEY_CONFIG", "PATH"} == env, f"env files {sorted(env)}, used {sorted(used)}"
    assert (service / "env" / "LOGKEY_CONFIG").read_text() == "/etc/logkey/config.yaml\n"
    assert (service / "env" / "LOGKEY_RUN_DIR").read_text() == "/run/logkey\n"


def read(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def test_watch_runs_under_daemontools_supervise_with_multilog():
    if os.geteuid() != 0:
        pytest.skip("the run scripts chown and setuidgid, which needs root (CI runs as root)")
    for tool in ("svscan", "supervise", "svc", "multilog", "envdir", "setuidgid"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: .ci/run installs daemontools")
    exe = os.environ.get("LOGKEY_EXE") or shutil.which("logkey")
    if not exe:
        pytest.fail("no installed logkey command: run the suite through .ci/run")
    root = Path(tempfile.mkdtemp(prefix="lk-svc-"))
    svscan = None
    try:
        service = root / "service" / "logkey-watch"
        shutil.copytree(CONTRIB / "daemontools" / "logkey-watch", service)
        (root / "mail.log").write_text("")
        cfg = root / "config.yaml"
        cfg.write_text(f"logs: [{root}/mail.log]\nstore: {{type: dir, path: {root}/gates}}\n"
                       f"state_dir: {root}/state\n")
        # Settings for a temp dir. The account is root here: the checkout's interpreter may be
        # under /root (pyenv), which no other account can run.
        env = {"LOGKEY_CONFIG": cfg, "LOGKEY_USER": "root", "LOGKEY_RUN_DIR": root / "run",
               "LOGKEY_LOG_DIR": root / "log", "LOGKEY_LOG_USER": "root",
               "PATH": f"{os.path.dirname(exe)}:/usr/bin:/bin"}
        for name, value in env.items():
            (service / "env" / name).write_text(f"{value}\n")
        svscan = subprocess.Popen(["svscan", str(root / "service")], cwd=root,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True,
                                  env={"PATH": "/usr/bin:/bin"})
        current = root / "log" / "current"
        wait_for(lambda: "watching 1 log(s)" in read(current), "logkey's log in multilog's file")
        assert (root / "run").is_dir(), "the run script creates LOGKEY_RUN_DIR"
        first = [l for l in read(current).splitlines() if "watching" in l][0]
        assert re.fullmatch(r"@4000[0-9a-f]{20} <6>watching 1 log\(s\) into the dir store", first)

        stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        with open(root / "mail.log", "a") as f:
            f.write(f"{stamp} mail dovecot: pop3-login: Login: user=<bob>, method=PLAIN, "
                    "rip=192.0.2.44, lip=192.0.2.1, mpid=1, session=<svc1>\n")
        wait_for(lambda: (root / "gates" / "192.0.2.44").exists(), "the gate")

        status = subprocess.run(["svstat", str(service)], capture_output=True, text=True)
        pid = int(re.search(r"up \(pid (\d+)\)", status.stdout).group(1))
        subprocess.run(["svc", "-t", str(service)], check=True)     # SIGTERM: supervise restarts
        wait_for(lambda: read(current).count("watching 1 log(s)") == 2, "the restart")
        status = subprocess.run(["svstat", str(service)], capture_output=True, text=True)
        assert int(re.search(r"up \(pid (\d+)\)", status.stdout).group(1)) != pid
        assert "<6>stopped" in read(current), "SIGTERM stopped it cleanly before the restart"
        assert oct(current.stat().st_mode & 0o777) == "0o644"
    finally:
        for d in (root / "service" / "logkey-watch", root / "service" / "logkey-watch" / "log"):
            if (d / "supervise" / "control").exists():
                subprocess.run(["svc", "-dx", str(d)], timeout=10)
        if svscan is not None:
            try:
                wait_for(lambda: subprocess.run(
                    ["svok", str(root / "service" / "logkey-watch")]).returncode != 0,
                    "supervise to exit", timeout=10)
            finally:
                os.killpg(svscan.pid, signal.SIGTERM)   # svscan and what it started, if left
                svscan.wait(10)
        shutil.rmtree(root, ignore_errors=True)
