"""Exported maps (logkey/smtp/exports.py, exporter.py, exporttargets.py, exportio.py): every
format's exact content, atomic replacement, the real postmap for lmdb, the real tcprules +
tcpserver -x for the cdb, a running `logkey watch` dropping an expired gate from every export
on time with no log traffic, and `logkey export` on demand. Every wait is bounded; every server
started here is killed at the end."""
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, free_port, wait_for
from logkey.smtp.exporter import Exporter
from logkey.smtp.mapformats import render, sorted_keys
from logkey.stores.base import GateRecord
from logkey.stores.dirstore import DirStore

NOW = 1_800_000_000.0
BASE_RULES = '127.:allow,RELAYCLIENT=""\n192.0.2.66:deny\n:allow\n'


def gate(key, expires_in=600.0, now=NOW):
    return GateRecord(key, "alice", "dovecot", "pop3", now - 10, now + expires_in, "t:1")


GATES = [gate("198.51.100.7"), gate("2001:db8::1"), gate("192.0.2.5"),
         gate("2001:db8:1:2::/64"), gate("192.0.2.66"),
         gate("203.0.113.9", expires_in=0.0),          # expires exactly now: closed
         gate("203.0.113.10", expires_in=-5.0)]        # expired


def postfix_env(tmp_path):
    """postmap wants a main.cf; Debian's postfix package ships none until configured, so the
    tests give it an empty one of their own (meta_directory, with dynamicmaps.cf for lmdb,
    stays /etc/postfix)."""
    conf = tmp_path / "postfix-conf"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text("")
    return {**os.environ, "MAIL_CONFIG": str(conf)}


@pytest.fixture
def mail_config(tmp_path, monkeypatch):
    env = postfix_env(tmp_path)
    monkeypatch.setenv("MAIL_CONFIG", env["MAIL_CONFIG"])
    return env


def postmap_q(key, mapname, env):
    out = subprocess.run(["postmap", "-q", key, f"lmdb:{mapname}"], capture_output=True,
                         text=True, env=env, timeout=30)
    assert out.returncode in (0, 1), out.stderr
    return out.stdout.strip() if out.returncode == 0 else None


def tcprulescheck(cdb, ip):
    out = subprocess.run(["tcprulescheck", str(cdb)], capture_output=True, text=True,
                         env={**os.environ, "TCPREMOTEIP": ip}, timeout=30)
    return out.stdout


def specs(tmp_path, formats=("sendmail", "exim", "opensmtpd", "text", "tcprules", "lmdb"),
          command=None):
    (tmp_path / "base.rules").write_text(BASE_RULES)
    return [{"format": f, "path": str(tmp_path / ("gatemap" if f == "lmdb" else f"out.{f}")),
             "command": command,
             "base": str(tmp_path / "base.rules") if f == "tcprules" else None}
            for f in formats]


# --- content ------------------------------------------------------------------------------

def test_every_file_format_has_exactly_the_open_gates(tmp_path, mail_config):
    Exporter(specs(tmp_path)).update(GATES, NOW)
    read = lambda f: (tmp_path / f"out.{f}").read_text()        # noqa: E731
    assert read("text") == "192.0.2.5\n192.0.2.66\n198.51.100.7\n2001:db8::1\n" \
                           "2001:db8:1:2::/64\n"
    assert read("opensmtpd") == "# @list\n" + read("text")
    assert read("exim") == '192.0.2.5\n192.0.2.66\n198.51.100.7\n"2001:db8::1"\n' \
                           '"2001:db8:1:2::/64"\n'
    assert read("sendmail") == ("Connect:192.0.2.5 RELAY\nConnect:192.0.2.66 RELAY\n"
                                "Connect:198.51.100.7 RELAY\nConnect:IPv6:2001:db8:0:0:0:0:0:1 RELAY\n"
                                "Connect:IPv6:2001:db8::1 RELAY\n"
                                "Connect:IPv6:2001:db8:1:2 RELAY\n")
    # tcprules: gates first (IPv4 only; the base's deny of 192.0.2.66 stands), then the base.
    assert render("tcprules", sorted_keys(g.key for g in GATES if g.expires > NOW),
                  BASE_RULES) == ('192.0.2.5:allow,RELAYCLIENT=""\n'
                                  '198.51.100.7:allow,RELAYCLIENT=""\n' + BASE_RULES)
    cdb = tmp_path / "out.tcprules"
    assert "RELAYCLIENT" in tcprulescheck(cdb, "198.51.100.7")
    assert "RELAYCLIENT" in tcprulescheck(cdb, "127.0.0.9")              # the base's own
    assert "deny" in tcprulescheck(cdb, "192.0.2.66")
    assert "RELAYCLIENT" not in tcprulescheck(cdb, "203.0.113.9")       # expired at NOW
    assert "allow" in tcprulescheck(cdb, "203.0.113.9")
    assert not list(tmp_path.glob(".out.*"))                            # no temp file left
    assert oct((tmp_path / "out.text").stat().st_mode & 0o777) == "0o644"
    # lmdb: the real postmap, value OK, the IPv6 network in Postfix's truncation form.
    m = str(tmp_path / "gatemap")
    assert postmap_q("198.51.100.7", m, mail_config) == "OK"
    assert postmap_q("2001:db8::1", m, mail_config) == "OK"
    assert postmap_q("2001:db8:1:2", m, mail_config) == "OK"
    assert postmap_q("203.0.113.9", m, mail_config) is None
    assert postmap_q("203.0.113.10", m, mail_config) is None


def test_no_gates_means_empty_exports_not_missing_ones(tmp_path, mail_config):
    Exporter(specs(tmp_path)).update([], NOW)
    for f in ("sendmail", "exim", "text"):
        assert (tmp_path / f"out.{f}").read_text() == ""
    assert (tmp_path / "out.opensmtpd").read_text() == "# @list\n"   # smtpd's empty list table
    assert (tmp_path / "gatemap.lmdb").exists()           # smtpd must find the map
    assert "allow" in tcprulescheck(tmp_path / "out.tcprules", "198.51.100.7")


# --- atomic, only on change -----------------------------------------------------------------

def test_unchanged_content_is_not_rewritten_changed_is_replaced_by_rename(tmp_path):
    path = tmp_path / "out.text"
    ex = Exporter(specs(tmp_path, ("text",), command=f"echo ran >> {tmp_path}/cmd.log"))
    ex.update([gate("192.0.2.1")], NOW)
    first = path.stat()
    ex.update([gate("192.0.2.1"), gate("192.0.2.2", -1)], NOW)     # same open set
    assert path.stat().st_ino == first.st_ino and path.stat().st_mtime_ns == first.st_mtime_ns
    ex.update([gate("192.0.2.1"), gate("192.0.2.3")], NOW)
    assert path.stat().st_ino != first.st_ino                      # a new file, renamed in
    assert path.read_text() == "192.0.2.1\n192.0.2.3\n"
    assert (tmp_path / "cmd.log").read_text() == "ran\nran\n"      # once per change
    # A new Exporter (a restarted watcher) finds the file current and leaves it alone.
    second = path.stat()
    Exporter(specs(tmp_path, ("text",))).update([gate("192.0.2.3"), gate("192.0.2.1")], NOW)
    assert path.stat().st_ino == second.st_ino


def test_a_concurrent_reader_never_sees_a_partial_file(tmp_path):
    formats = ("sendmail", "exim", "text")
    ex = Exporter(specs(tmp_path, formats))
    big = [gate(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}") for i in range(1, 20001)]
    small = [gate("192.0.2.1")]
    sets = [big, small]
    full = {f: set() for f in formats}
    for s in sets:
        keys = sorted_keys(g.key for g in s)
        for f in formats:
            full[f].add(render(f, keys))
    ex.update(small, NOW)
    stop = threading.Event()
    seen, bad = [0], []

    def reader():
        while not stop.is_set():
            for f in formats:
                text = (tmp_path / f"out.{f}").read_text()
                seen[0] += 1
                if text not in full[f]:
                    bad.append((f, len(text)))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(20):
            ex.update(sets[i % 2], NOW)
    finally:
        stop.set()
        t.join(30)
    assert not bad and seen[0] > 20, (bad[:3], seen)


# --- lmdb in place ------------------------------------------------------------------------

def test_lmdb_is_updated_in_place_and_takes_over_an_existing_map(tmp_path, mail_config):
    m = str(tmp_path / "gatemap")
    subprocess.run(["postmap", "-i", f"lmdb:{m}"], input="192.0.2.99 OK\n", text=True,
                   env=mail_config, check=True, timeout=30)      # left by an earlier run
    inode = os.stat(m + ".lmdb").st_ino
    ex = Exporter(specs(tmp_path, ("lmdb",)))
    ex.update([gate("192.0.2.1"), gate("192.0.2.2")], NOW)
    assert postmap_q("192.0.2.99", m, mail_config) is None      # not an open gate: removed
    assert postmap_q("192.0.2.1", m, mail_config) == "OK"
    ex.update([gate("192.0.2.2"), gate("192.0.2.3")], NOW)
    assert postmap_q("192.0.2.1", m, mail_config) is None
    assert postmap_q("192.0.2.3", m, mail_config) == "OK"
    assert os.stat(m + ".lmdb").st_ino == inode                  # never replaced by rename
    dump = subprocess.run(["postmap", "-s", f"lmdb:{m}"], capture_output=True, text=True,
                          env=mail_config, timeout=30).stdout
    assert sorted(dump.splitlines()) == ["192.0.2.2\tOK", "192.0.2.3\tOK"]


# --- failures -----------------------------------------------------------------------------

def test_errors_are_logged_once_retried_and_never_raised(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="logkey")
    missing = tmp_path / "not-yet"
    ex = Exporter([{"format": "text", "path": str(missing / "gates.txt"), "command": None,
                    "base": None},
                   {"format": "exim", "path": str(tmp_path / "ok.exim"),
                    "command": "echo oops >&2; exit 3", "base": None}])
    for i in range(3):
        ex.update([gate(f"192.0.2.{i + 1}")], NOW)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([r for r in errors if "not-yet" in r.getMessage()]) == 1, errors
    assert len([r for r in errors if "exit 3: oops" in r.getMessage()]) == 1, errors
    assert ex.failing and (tmp_path / "ok.exim").read_text() == "192.0.2.3\n"
    missing.mkdir()
    ex.retry()
    assert not ex.failing and (missing / "gates.txt").read_text() == "192.0.2.3\n"
    assert any("up to date again" in r.getMessage() for r in caplog.records)


def test_a_hanging_command_is_killed_in_bounded_time(tmp_path, caplog):
    ex = Exporter(specs(tmp_path, ("text",), command="sleep 60"), command_timeout=0.5)
    start = time.monotonic()
    ex.update([gate("192.0.2.1")], NOW)
    assert time.monotonic() - start < 5
    assert any("killed" in r.getMessage() for r in caplog.records)


# --- a running watcher --------------------------------------------------------------------

LOGIN = ("{stamp} mail dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, rip={ip}, "
         "lip=192.0.2.1, mpid=1, session=<s{n}>\n")


def login_line(ip, n, user="alice"):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return LOGIN.format(stamp=stamp, user=user, ip=ip, n=n)


def logkey_cmd():
    exe = os.environ.get("LOGKEY_EXE")
    return [exe] if exe else [sys.executable, "-m", "logkey"]


STANDIN = ('if [ "${RELAYCLIENT+set}" = set ]; then echo "relay $TCPREMOTEIP"; '
           'else echo "norelay $TCPREMOTEIP"; fi')


class Servers:
    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait(10)


@pytest.fixture
def servers():
    s = Servers()
    yield s
    s.kill_all()


def ask(port, source):
    """Connect to the tcpserver from `source` and read what the stand-in printed."""
    with socket.socket() as s:
        s.settimeout(5)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        data = b""
        while True:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def test_running_watch_drops_an_expired_gate_from_every_export_on_time(tmp_path, servers):
    if shutil.which("tcpserver") is None or shutil.which("postmap") is None:
        pytest.fail("tcpserver (ucspi-tcp) and postmap (postfix, postfix-lmdb) are needed: "
                    ".ci/run installs them")
    env = postfix_env(tmp_path)
    exports = specs(tmp_path)
    (tmp_path / "base.rules").write_text('127.0.0.1:allow,RELAYCLIENT=""\n:allow\n')
    lines = "".join(f"  - {{format: {e['format']}, path: {e['path']}"
                    + (f", base: {e['base']}" if e["base"] else "") + "}\n" for e in exports)
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs:\n  - path: {tmp_path}/mail.log\n"
                   f"store: {{type: dir, path: {tmp_path}/gates}}\n"
                   f"state_dir: {tmp_path}/state\nwindow: 3\nmax_session: 3\n"
                   f"exports:\n{lines}")
    log = tmp_path / "mail.log"
    log.write_text("")
    errpath = tmp_path / "watch.err"
    with open(errpath, "wb") as err:
        watch = servers.start(logkey_cmd() + ["watch", "--config", str(cfg)], stdout=err,
                              stderr=err, cwd=ROOT, env=env)
    cdb = tmp_path / "out.tcprules"
    wait_for(cdb.exists, what="the first exports")
    port = free_port()
    servers.start(["tcpserver", "-R", "-H", "-l", "localhost", "-x", str(cdb), "127.0.0.1",
                   str(port), "/bin/sh", "-c", STANDIN],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answer(source):
        try:
            return ask(port, source)
        except OSError:
            return None
    wait_for(lambda: answer("127.0.0.3") is not None, what="tcpserver listening")
    assert answer("127.0.0.2") == "norelay 127.0.0.2"

    m = str(tmp_path / "gatemap")
    files = {"text": "{ip}\n", "opensmtpd": "# @list\n{ip}\n", "exim": "{ip}\n",
             "sendmail": "Connect:{ip} RELAY\n"}

    def every_export(ip):
        """True when every export holds exactly `ip` (or nothing, for None)."""
        for f, form in files.items():
            empty = "# @list\n" if f == "opensmtpd" else ""
            if (tmp_path / f"out.{f}").read_text() != (form.format(ip=ip) if ip else empty):
                return False
        if postmap_q("127.0.0.2", m, env) != ("OK" if ip else None):
            return False
        return ("RELAYCLIENT" in tcprulescheck(cdb, "127.0.0.2")) == bool(ip)

    with open(log, "a") as f:
        f.write(login_line("127.0.0.2", 1))
    opened = time.time()
    wait_for(lambda: every_export("127.0.0.2"), what="the gate in every export")
    assert answer("127.0.0.2") == "relay 127.0.0.2"
    assert answer("127.0.0.3") == "norelay 127.0.0.3"
    gate_file = tmp_path / "gates" / "127.0.0.2"
    wait_for(gate_file.exists, what="the gate in the store")
    expires = gate_file.stat().st_mtime                     # the dir store's expiry
    assert opened - 1.5 < expires <= opened + 3.5
    log_before = errpath.read_text()

    # Every export must be empty within a second (plus scheduling slack) of the expiry.
    wait_for(lambda: every_export(None), timeout=expires - time.time() + 3,
             what="the expired gate leaving every export", step=0.01)
    gone_after = time.time() - expires
    assert gone_after < 1.5, gone_after
    assert answer("127.0.0.2") == "norelay 127.0.0.2"
    assert answer("127.0.0.3") == "norelay 127.0.0.3"
    time.sleep(1.2)                                         # a few more ticks: still quiet
    after = errpath.read_text()                             # the expiry's one audit line only
    assert after.startswith(log_before)
    assert after[len(log_before):].startswith("<6>gate close ip=127.0.0.2 user=alice ")
    assert after[len(log_before):].endswith(" reason=expired\n")
    assert after[len(log_before):].count("\n") == 1
    assert watch.poll() is None
    watch.send_signal(signal.SIGTERM)
    assert watch.wait(10) == 0


# --- `logkey export` on demand ------------------------------------------------------------

def run_export(*args, env=None):
    return subprocess.run([sys.executable, "-m", "logkey.smtp.exports", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


def test_logkey_export_on_demand(tmp_path):
    env = postfix_env(tmp_path)
    (tmp_path / "base.rules").write_text(BASE_RULES)
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"store: {{type: dir, path: {tmp_path}/gates}}\n"
                   f"exports:\n  - {{format: tcprules, path: {tmp_path}/x.cdb, "
                   f"base: {tmp_path}/base.rules}}\n")
    store = DirStore(str(tmp_path / "gates"))
    now = time.time()
    store.put(gate("198.51.100.7", now=now))
    store.put(gate("2001:db8::5", now=now))
    store.put(gate("198.51.100.8", expires_in=-10, now=now))
    out = run_export("--format", "text", "--config", str(cfg), env=env)
    assert out.returncode == 0 and out.stdout == "198.51.100.7\n2001:db8::5\n", out.stderr
    out = run_export("--format", "sendmail", "--config", str(cfg), "--output",
                     str(tmp_path / "access"), env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "access").read_text() == \
        "Connect:198.51.100.7 RELAY\nConnect:IPv6:2001:db8:0:0:0:0:0:5 RELAY\n" \
        "Connect:IPv6:2001:db8::5 RELAY\n"
    out = run_export("--format", "lmdb", "--config", str(cfg), env=env)
    assert out.returncode == 2 and "--output" in out.stderr
    out = run_export("--format", "lmdb", "--config", str(cfg), "--output",
                     str(tmp_path / "gates-map"), env=env)
    assert out.returncode == 0, out.stderr
    assert postmap_q("198.51.100.7", str(tmp_path / "gates-map"), env) == "OK"
    assert postmap_q("198.51.100.8", str(tmp_path / "gates-map"), env) is None
    out = run_export("--format", "tcprules", "--config", str(cfg), "--output",
                     str(tmp_path / "rules.cdb"), env=env)
    assert out.returncode == 0, out.stderr
    assert "RELAYCLIENT" in tcprulescheck(tmp_path / "rules.cdb", "198.51.100.7")
    assert "deny" in tcprulescheck(tmp_path / "rules.cdb", "192.0.2.66")   # the base's rule
    out = run_export("--format", "text", "--config", str(cfg), "--output",
                     str(tmp_path / "no" / "such" / "dir"), env=env)
    assert out.returncode == 2 and out.stderr.startswith("logkey: export: ")


def test_watcher_exports_at_start_and_rebuilds_them_on_reload(tmp_path):
    from logkey import config as config_mod
    from logkey.daemon.watch import Watcher
    store = DirStore(str(tmp_path / "gates"))
    store.put(gate("198.51.100.7", now=time.time()))        # adopted at start
    cfg = tmp_path / "logkey.yaml"
    common = (f"store: {{type: dir, path: {tmp_path}/gates}}\nstate_dir: {tmp_path}/state\n"
              "exports:\n  - {format: text, path: %s}\n")
    cfg.write_text(common % (tmp_path / "a.txt"))
    w = Watcher(config_mod.load(str(cfg)))
    try:
        w.tick(time.time())
        assert (tmp_path / "a.txt").read_text() == "198.51.100.7\n"
        cfg.write_text(common % (tmp_path / "b.txt"))
        assert w.reload(config_mod.load(str(cfg)))
        w.tick(time.time())
        assert (tmp_path / "b.txt").read_text() == "198.51.100.7\n"
        w.tick(time.time() + 601)                            # expired: dropped at once
        assert (tmp_path / "b.txt").read_text() == ""
    finally:
        w.close()


def test_a_gate_closed_by_hand_leaves_the_exports(tmp_path):
    from logkey import config as config_mod
    from logkey.daemon.reconciling import RECONCILE_EVERY
    from logkey.daemon.watch import Watcher
    store = DirStore(str(tmp_path / "gates"))
    now = time.time()
    store.put(gate("198.51.100.7", now=now))
    store.put(gate("198.51.100.8", now=now))
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"store: {{type: dir, path: {tmp_path}/gates}}\nstate_dir: {tmp_path}/state\n"
                   f"exports:\n  - {{format: text, path: {tmp_path}/a.txt}}\n")
    w = Watcher(config_mod.load(str(cfg)))
    try:
        w.tick(now)
        assert (tmp_path / "a.txt").read_text() == "198.51.100.7\n198.51.100.8\n"
        assert store.delete("198.51.100.7")                 # logkey close, from outside
        w.tick(now + RECONCILE_EVERY + 0.1)
        assert (tmp_path / "a.txt").read_text() == "198.51.100.8\n"
    finally:
        w.close()


def test_open_close_and_export_bring_the_configured_exports_up_to_date_at_once(tmp_path):
    """No watcher runs: `logkey open`/`close` write the configured exports themselves (and run
    their command:), `logkey export` with no --format brings them all up to date, and with
    --output a configured export's path runs that export's command: too."""
    from conftest import run_logkey
    out, log = tmp_path / "gates.txt", tmp_path / "command.log"
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"store: {{type: dir, path: {tmp_path}/gates}}\nwindow: 10m\n"
                   f"exports:\n  - {{format: text, path: {out}, command: \"echo ran >> {log}\"}}\n")
    run_logkey("open", "192.0.2.7", "--config", str(cfg), check=0)
    assert out.read_text() == "192.0.2.7\n" and log.read_text() == "ran\n"
    run_logkey("close", "192.0.2.7", "--config", str(cfg), check=0)
    assert out.read_text() == "" and log.read_text() == "ran\nran\n"
    DirStore(str(tmp_path / "gates")).put(gate("198.51.100.9"))   # opened behind its back
    run_logkey("export", "--config", str(cfg), check=0)
    assert out.read_text() == "198.51.100.9\n" and log.read_text().count("ran") == 3
    out.unlink()
    run_logkey("export", "--format", "text", "--output", str(out), "--config", str(cfg), check=0)
    assert out.read_text() == "198.51.100.9\n" and log.read_text().count("ran") == 4
    proc = run_logkey("export", "--output", str(out), "--config", str(cfg), check=2)
    assert proc.stderr.decode().strip() == "logkey: export: --output needs --format"
