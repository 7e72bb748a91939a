"""logkey's own log: stderr with journald's <N> prefix by default, or syslog with a configured
facility. The syslog path is tested for real: a unix datagram socket bound in a temp dir
stands for /dev/log, and the bytes `logkey watch` and `logkey policy` send to it are read
back: <PRI> = facility * 8 + severity, then the tag `logkey[PID]: `."""
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT, run_logkey, stop_process

FACILITY = {"mail": 2, "daemon": 3, "local3": 19}
SEVERITY = {"crit": 2, "err": 3, "warning": 4, "info": 6, "debug": 7}


@pytest.fixture
def devlog():
    """A syslog stand-in: a unix datagram socket bound in a short temp dir."""
    d = tempfile.mkdtemp(prefix="lk-log-")     # short: unix socket paths are limited
    path = os.path.join(d, "log")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    yield s, path
    s.close()
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


def receive_until(sock, needle: bytes, limit=50) -> list[bytes]:
    """Datagrams up to and including the first that contains `needle` (bounded)."""
    got = []
    for _ in range(limit):
        data = sock.recv(65536)
        got.append(data)
        if needle in data:
            return got
    raise AssertionError(f"no datagram with {needle!r} in {got}")


def logkey_cmd():
    exe = os.environ.get("LOGKEY_EXE")
    return [exe] if exe else [sys.executable, "-m", "logkey"]


def watch_config(tmp_path, log_yaml):
    (tmp_path / "mail.log").write_text("")
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs: [{tmp_path}/mail.log]\nstore: {{type: dir, path: {tmp_path}/gates}}\n"
                   f"state_dir: {tmp_path}/state\nlog: {log_yaml}\n")
    return cfg


class Watch:
    """A running `logkey watch` whose stderr goes to a file."""

    def __init__(self, cfg, *args):
        self.err_path = cfg.parent / "watch.err"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(logkey_cmd() + ["watch", "--config", str(cfg), *args],
                                         stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)

    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_stderr(self, needle, timeout=30):
        deadline = time.monotonic() + timeout
        while needle not in self.stderr():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.stderr()
            time.sleep(0.05)

    def stop(self):
        stop_process(self.proc)
        return self.proc.returncode


def test_watch_logs_to_syslog_with_facility_severity_and_tag(tmp_path, devlog):
    sock, path = devlog
    cfg = watch_config(tmp_path, f"{{to: syslog, facility: local3, address: {path}}}")
    w = Watch(cfg)
    try:
        got = receive_until(sock, b"watching")
    finally:
        assert w.stop() == 0
    pri = FACILITY["local3"] * 8 + SEVERITY["info"]
    assert got[-1] == f"<{pri}>logkey[{w.proc.pid}]: watching 1 log(s) into the dir store".encode()
    assert all(re.match(rb"<%d>logkey\[%d\]: [^\n\0]+$" % (pri, w.proc.pid), d) for d in got), got
    assert receive_until(sock, b"stopped")[-1] == f"<{pri}>logkey[{w.proc.pid}]: stopped".encode()
    assert w.stderr() == "", "with syslog configured nothing goes to stderr"


def test_log_option_overrides_the_configured_target(tmp_path, devlog):
    sock, path = devlog
    cfg = watch_config(tmp_path, f"{{to: syslog, address: {path}}}")
    w = Watch(cfg, "--log", "stderr")
    try:
        w.wait_stderr("<6>watching 1 log(s) into the dir store\n")
    finally:
        w.stop()
    sock.settimeout(0.2)
    with pytest.raises(socket.timeout):
        sock.recv(65536)
    # and the other way round: the default target (stderr) configured, --log syslog given
    cfg = watch_config(tmp_path, f"{{facility: daemon, address: {path}}}")
    w = Watch(cfg, "--log", "syslog")
    sock.settimeout(10)
    try:
        assert receive_until(sock, b"watching")[-1].startswith(b"<30>logkey[")  # daemon.info
    finally:
        w.stop()


def test_policy_logs_warnings_with_their_severity(tmp_path, devlog):
    sock, path = devlog
    listen = os.path.join(os.path.dirname(path), "p.sock")
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"store: {{type: dir, path: {tmp_path}/gates}}\n"
                   f"log: {{to: syslog, facility: mail, address: {path}, tag: lk-policy}}\n")
    proc = subprocess.Popen(logkey_cmd() + ["policy", "--config", str(cfg), "--listen",
                                            f"unix:{listen}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        first = receive_until(sock, b"listening on")[-1]
        assert re.fullmatch(rb"<22>lk-policy\[%d\]: listening on .*" % proc.pid, first), first
        with socket.socket(socket.AF_UNIX) as c:            # a request line without '='
            c.settimeout(10)
            c.connect(listen)
            c.sendall(b"no equals sign here\n\n")
            assert c.recv(100) == b""                       # closed without an answer
        warning = receive_until(sock, b"disconnected")[-1]
        assert warning.startswith(b"<20>lk-policy[%d]: client " % proc.pid), warning  # mail.warning
    finally:
        stop_process(proc)
    assert receive_until(sock, b"stopping")[-1] == b"<22>lk-policy[%d]: stopping" % proc.pid
    assert proc.stderr.read() == b""
    proc.stderr.close()


@pytest.mark.parametrize("log_yaml, message", [
    ("{to: syslog, facility: mial}", "log.facility: 'mial' is not a syslog facility"),
    ("{to: journal}", "log.to: must be stderr or syslog"),
    ("{to: syslog, tag: 'a b'}", "log.tag: must be 1 to 32 letters"),
    ("{to: syslog, level: debug}", "log.level: unknown key"),
    ("syslog", "log: must be a mapping"),
])
def test_bad_log_settings_are_one_line_and_stop_the_start(tmp_path, log_yaml, message):
    cfg = watch_config(tmp_path, log_yaml)
    proc = run_logkey("watch", "--once", "--config", str(cfg), check=2)
    err = proc.stderr.decode()
    assert err.startswith(f"logkey: {cfg}: {message}"), err
    assert len(err.splitlines()) == 1


def test_unreachable_syslog_at_start_is_one_line_exit_2(tmp_path):
    cfg = watch_config(tmp_path, "{to: syslog, address: no-such-socket}")   # relative: to cfg
    proc = run_logkey("watch", "--once", "--config", str(cfg), check=2)
    assert proc.stderr.decode() == (f"logkey: log.address: {tmp_path}/no-such-socket: cannot "
                                    "reach syslog: No such file or directory\n")


def test_messages_go_to_stderr_while_syslog_is_down(devlog, capsys):
    """A syslog restart: what cannot be sent is written to stderr, with one note per outage."""
    from logkey import ownlog
    sock, path = devlog
    log = logging.getLogger("logkey")
    saved = log.handlers[:], log.level, log.propagate
    ownlog.configure({"to": "syslog", "facility": "user", "address": path})
    try:
        log.warning("first")
        assert sock.recv(100) == b"<12>logkey[%d]: first" % os.getpid()
        sock.close()
        os.unlink(path)                                     # syslog stopped
        log.error("while down")
        log.info("still down")
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith(f"<4>syslog at {path} unreachable (")
        assert err[1:] == ["<3>while down", "<6>still down"]
        back = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # syslog restarted
        back.bind(path)
        back.settimeout(10)
        try:
            log.info("back")
            assert back.recv(100) == b"<14>logkey[%d]: back" % os.getpid()
            assert capsys.readouterr().err == f"<5>syslog at {path} answers again\n"
        finally:
            back.close()
    finally:
        for h in log.handlers:
            h.close()
        log.handlers[:], log.level, log.propagate = saved
