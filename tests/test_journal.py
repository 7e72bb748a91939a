"""The `journal` log source on real journal files: entries written in the Journal Export Format,
stored by Debian's systemd-journal-remote, read by the real journalctl under `logkey dry-run`
and `logkey watch`. Genuine dovecot entries carry the trusted fields journald records for
dovecot's log process (tests/fixtures/captured/dovecot-2.3-syslog-senders.jsonl); forged ones
those of `logger -t dovecot` run from a user's session. The trust check itself is tested pure."""
import json
import os
import re
import signal
import struct
import subprocess
import time
import uuid

import pytest

from conftest import ROOT, run_logkey
from logkey.sources import journal, journalread
from logkey.parse.match import PackSet
from logkey.parse.packfiles import load_packs
from test_watch import gate_file, wait_for

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
CAPTURED = ROOT / "tests" / "fixtures" / "captured" / "dovecot-2.3-syslog-senders.jsonl"
LOGIN = ("pop3-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=4711, "
         "session=<{session}>")


def captured_sender() -> dict:
    """The trusted fields of the process that wrote dovecot's real Login lines."""
    for line in CAPTURED.read_text().splitlines():
        rec = json.loads(line)
        if "pop3-login: Login: " in rec["MESSAGE"]:
            return {k: rec[k] for k in ("_UID", "_GID", "_COMM", "_EXE")}
    raise AssertionError("no Login line in the capture")


DOVECOT = {**captured_sender(), "_SYSTEMD_UNIT": "dovecot.service", "_SYSTEMD_SLICE": "system.slice",
           "_SYSTEMD_CGROUP": "/system.slice/dovecot.service", "_CMDLINE": "dovecot/log",
           "_TRANSPORT": "syslog", "SYSLOG_IDENTIFIER": "dovecot", "SYSLOG_FACILITY": "2"}
LOGGER = {"_UID": "1000", "_GID": "1000", "_COMM": "logger", "_EXE": "/usr/bin/logger",
          "_SYSTEMD_UNIT": "session-1.scope", "_SYSTEMD_SLICE": "user-1000.slice",
          "_SYSTEMD_CGROUP": "/user.slice/user-1000.slice/session-1.scope",
          "_CMDLINE": "logger -t dovecot", "_TRANSPORT": "syslog",
          "SYSLOG_IDENTIFIER": "dovecot", "SYSLOG_FACILITY": "1"}
IMAP_AS_USER = {**DOVECOT, "_UID": "65534", "_COMM": "imap", "_EXE": "/usr/lib/dovecot/imap"}
RENAMED = {**LOGGER, "_COMM": "log", "_UID": "0"}       # root in a session: not the unit


def login(ip, user="alice"):
    return LOGIN.format(ip=ip, user=user, session="S" + ip.replace(".", "x").replace(":", "y"))


# --- writing journal files -------------------------------------------------------------------
def export_field(name: str, value) -> bytes:
    """One field in the Journal Export Format: NAME=text, or NAME, a little-endian 64-bit
    length and the raw bytes for values with a newline or other control bytes."""
    data = value if isinstance(value, bytes) else str(value).encode()
    if any(b < 32 and b != 9 for b in data):
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


class Journal:
    """Journal files in a directory, written by systemd-journal-remote from export input."""

    def __init__(self, directory):
        if not os.access(JOURNAL_REMOTE, os.X_OK):
            pytest.fail(f"{JOURNAL_REMOTE} not found: .ci/run installs it "
                        "(apt-get install systemd-journal-remote)")
        self.dir = directory
        self.dir.mkdir(exist_ok=True)
        self.boot = uuid.uuid4().hex
        self.machine = uuid.uuid4().hex
        self.mono = 10_000_000

    def entry(self, sender: dict, message, t=None, extra=()) -> bytes:
        self.mono += 1000
        usec = int((time.time() if t is None else t) * 1_000_000)
        fields = [("__REALTIME_TIMESTAMP", usec), ("__MONOTONIC_TIMESTAMP", self.mono),
                  ("_BOOT_ID", self.boot), ("_MACHINE_ID", self.machine), ("_HOSTNAME", "mail"),
                  ("PRIORITY", 6), ("_PID", 4242), *sender.items(), ("MESSAGE", message),
                  *extra]
        return b"".join(export_field(k, v) for k, v in fields) + b"\n"

    def write(self, *entries: bytes, name="system.journal"):
        proc = subprocess.run([JOURNAL_REMOTE, f"--output={self.dir / name}", "-"],
                              input=b"".join(entries), capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stderr


def config(tmp_path, entry="{directory: journal}", extra=""):
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs:\n  - journal: {entry}\n"
                   f"store: {{type: dir, path: {tmp_path / 'gates'}}}\n"
                   f"state_dir: {tmp_path / 'state'}\nwindow: 10m\n" + extra)
    return cfg


# --- the trust check, pure -------------------------------------------------------------------
PACKS = load_packs()
SOURCE = journal.parse_source({}, "t")
EXPS = journal.expectations(SOURCE, PACKS, "t")


def as_json(sender, message, t=1_800_000_000.0, **more):
    return {"__REALTIME_TIMESTAMP": str(int(t * 1e6)), "__CURSOR": "s=ab;i=1;b=cd;m=1;t=2;x=3",
            "_HOSTNAME": "mail", "_PID": "4242", **sender, "MESSAGE": message, **more}


def test_trusted_fields_decide_not_the_tag():
    verdict, header = journal.judge(as_json(DOVECOT, login("198.51.100.1")), EXPS, 65536)
    assert verdict == journal.ACCEPTED and header.program == "dovecot"
    assert header.message == login("198.51.100.1").encode() and header.host == b"mail"
    assert header.stamp == b"2027-01-15T08:00:00+00:00" and header.pid == "4242"
    for forged in (LOGGER, IMAP_AS_USER, RENAMED, {**DOVECOT, "_UID": ["0", "1000"]},
                   {k: v for k, v in DOVECOT.items() if k != "_COMM"},
                   {**DOVECOT, "_SYSTEMD_UNIT": ["dovecot.service", "session-1.scope"]}):
        verdict, why = journal.judge(as_json(forged, login("198.51.100.2")), EXPS, 65536)
        assert verdict == journal.REFUSED, forged
        assert why.startswith("SYSLOG_IDENTIFIER=dovecot ") and "_SYSTEMD_UNIT=" in why


def test_the_program_comes_from_the_expectation_not_the_sender():
    entry = as_json({**DOVECOT, "SYSLOG_IDENTIFIER": "popa3d"}, login("198.51.100.3"))
    verdict, header = journal.judge(entry, EXPS, 65536)
    assert verdict == journal.ACCEPTED and header.program == "dovecot"


@pytest.mark.parametrize("message, verdict", [
    (login("198.51.100.4") + "\n", journal.ACCEPTED),          # one trailing newline: dropped
    ("pop3-login: x\n" + login("198.51.100.4"), journal.UNSAFE),   # a "line" of its own
    (login("198.51.100.4") + "\r", journal.UNSAFE),
    (list(b"pop3-login: Login: user=<a\x00>, rip=198.51.100.4"), journal.UNSAFE),
    ([login("198.51.100.4"), login("198.51.100.5")], journal.UNSAFE),   # MESSAGE twice
    ([256, 1], journal.UNSAFE),
    (None, journal.TOO_LONG),                                   # over 4096 bytes: null
    ("x" * 70000, journal.TOO_LONG),
])
def test_messages_that_are_never_an_event(message, verdict):
    assert journal.judge(as_json(DOVECOT, message), EXPS, 65536)[0] == verdict


def test_binary_message_is_read_as_bytes():
    raw = login("198.51.100.6", user="b\xe4r").encode("latin-1")
    verdict, header = journal.judge(as_json(DOVECOT, list(raw)), EXPS, 65536)
    assert verdict == journal.ACCEPTED and header.message == raw


def test_malformed_entries():
    assert journal.judge([], EXPS, 100)[0] == journal.MALFORMED
    assert journal.judge(as_json(DOVECOT, "x", __CURSOR=5), EXPS, 100)[0] == journal.MALFORMED
    for stamp in ("-1", "9" * 17, "1e9"):                # negative, past year 9999, not digits
        entry = as_json(DOVECOT, "x")
        entry["__REALTIME_TIMESTAMP"] = stamp
        assert journal.judge(entry, EXPS, 100)[0] == journal.MALFORMED


def test_journalctl_lines_are_capped_and_split_in_any_chunks():
    data = b'{"a": 1}\n' + b"x" * 50 + b"\n" + b'{"b": 2}\n' + b"y" * 70 + b"\n" + b"{}\n"
    for size in (1, 7, 64, len(data)):
        buf, skipping, out = b"", False, []
        for i in range(0, len(data), size):
            lines, buf, skipping = journalread._split(buf, data[i:i + size], skipping, 60)
            out += lines
        assert out == [b'{"a": 1}', b"x" * 50, b'{"b": 2}', None, b"{}"], size
        assert buf == b"" and not skipping


@pytest.mark.parametrize("match, needle", [
    ({"SYSLOG_IDENTIFIER": "dovecot"}, "t.SYSLOG_IDENTIFIER: the sender chooses it"),
    ({"_SYSTEMD_UNIT": "d.service", "_UID": "root"}, "t._UID: 'root' is not a valid value (a number)"),
    ({"_COMM": "log"}, "t: must name _SYSTEMD_UNIT"),
    ({"_SYSTEMD_UNIT": []}, "t._SYSTEMD_UNIT: must name at least one value"),
    ({"_SYSTEMD_UNIT": "a\nb"}, "t._SYSTEMD_UNIT: 'a\\nb' is not a valid value"),
    ({"_SYSTEMD_UNIT": True}, "t._SYSTEMD_UNIT: must be a value or a list of values"),
    ("dovecot.service", "t: must be a mapping of trusted journal fields"),
])
def test_match_errors(match, needle):
    with pytest.raises(ValueError) as e:
        journal.parse_match(match, "t")
    assert str(e.value).startswith(needle), str(e.value)


def test_journalctl_is_asked_for_the_unit_and_the_claimed_tag_only():
    args = journalread.journalctl_args({**SOURCE, "directory": "/j"}, EXPS, follow=True,
                                   since=100.7)
    assert args == ["--output=json", "--no-pager", "--directory=/j", "--follow",
                    "--no-tail", "--since=@100", "_SYSTEMD_UNIT=dovecot.service", "+",
                    "SYSLOG_IDENTIFIER=dovecot"]
    args = journalread.journalctl_args({**SOURCE, "files": ["/a.journal"]}, EXPS, follow=False,
                                   cursor="s=1;i=2", since=100)
    assert "--after-cursor=s=1;i=2" in args and "--file=/a.journal" in args
    assert not any(a.startswith("--since") or a == "--follow" for a in args)


def test_expectations_from_the_config_entry():
    only = PackSet([PACKS.packs["dovecot"]])
    source = journal.parse_source({"match": {"_SYSTEMD_UNIT": "dovecot-ext.service"}}, "x")
    (exp,) = journal.expectations(source, only, "x")       # program: the one pack's
    assert exp.program == "dovecot" and exp.fields() == {
        "_SYSTEMD_UNIT": frozenset({"dovecot-ext.service"})}
    source = journal.parse_source({"match": {"_SYSTEMD_UNIT": "p.service"}, "program": "nope"},
                                  "x")
    with pytest.raises(ValueError, match=r"x.program: no loaded pack covers program 'nope'"):
        journal.expectations(source, PACKS, "x")
    with pytest.raises(ValueError, match=r"x: none of the packs \(popa3d\) says"):
        journal.expectations(journal.parse_source({"packs": ["popa3d"]}, "x"), PACKS, "x")


# --- configuration errors: one line naming the key, exit 2 -----------------------------------
@pytest.mark.parametrize("entry, needle", [
    ("{match: {SYSLOG_IDENTIFIER: dovecot}}",
     "logs[0].journal.match.SYSLOG_IDENTIFIER: the sender chooses it"),
    ("{match: {_COMM: log}}", "logs[0].journal.match: must name _SYSTEMD_UNIT"),
    ("{directory: j, files: [a.journal]}", "logs[0].journal.files: give directory: or files:"),
    ("{dir: j}", "logs[0].journal.dir: unknown key (known: match, program, packs, directory"),
    ("{program: dovecot}", "logs[0].journal.program: only with match:"),
    ("{packs: [nosuch]}", "logs[0].journal.packs: no pack named 'nosuch'"),
    ("{packs: [popa3d]}", "logs[0].journal: none of the packs (popa3d) says"),
    ("[dovecot]", "logs[0].journal: must be a mapping"),
])
def test_bad_journal_entries_stop_the_start(tmp_path, entry, needle):
    cfg = config(tmp_path, entry)
    for args in (("config", "check"), ("watch", "--once")):
        proc = run_logkey(*args, "--config", str(cfg))
        err = proc.stderr.decode()
        assert proc.returncode == 2 and err.startswith(f"logkey: {cfg}: {needle}"), err
        assert err.count("\n") == 1


def test_bad_pack_journal_key_is_refused(tmp_path):
    local = tmp_path / "patterns.d"
    local.mkdir()
    text = (ROOT / "patterns" / "dovecot.yaml").read_text()
    (local / "dovecot.yaml").write_text(text.replace(
        "  dovecot: {_SYSTEMD_UNIT", "  pop3d: {_SYSTEMD_UNIT"))
    proc = run_logkey("packs", "list", "--config", str(config(
        tmp_path, extra=f"patterns_dir: {local}\n")))
    assert proc.returncode == 2
    assert "dovecot.yaml: journal.pop3d: not one of the pack's programs (dovecot)" in \
        proc.stderr.decode()


# --- dry-run on real journal files -----------------------------------------------------------
def test_dry_run_counts_forgeries_and_opens_only_genuine_logins(tmp_path):
    j = Journal(tmp_path / "journal")
    now = time.time()
    j.write(j.entry(DOVECOT, login("198.51.100.10"), now - 60),
            j.entry(LOGGER, login("203.0.113.66", user="mallory"), now - 50),
            j.entry(RENAMED, login("203.0.113.67", user="mallory"), now - 45),
            j.entry(IMAP_AS_USER, login("203.0.113.68", user="mallory"), now - 40),
            j.entry(DOVECOT, "pop3-login: Aborted login (auth failed): user=<x\n"
                    + login("203.0.113.69"), now - 30),
            j.entry(DOVECOT, login("198.51.100.11", user="bob"), now - 20))
    cfg = config(tmp_path)
    proc = run_logkey("dry-run", "--json", "--journal", "--config", str(cfg), check=0)
    out = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    events, summary = out[:-1], out[-1]
    assert [(e["ip"], e["user"], e["pack"], e["file"]) for e in events] == [
        ("198.51.100.10", "alice", "dovecot", f"journal:{tmp_path / 'journal'}"),
        ("198.51.100.11", "bob", "dovecot", f"journal:{tmp_path / 'journal'}")]
    assert [e["line"] for e in events] == [1, 6]
    assert summary["journal"] == {f"journal:{tmp_path / 'journal'}": {
        "entries": 6, "accepted": 2, "refused": 3, "unsafe": 1, "too_long": 0, "malformed": 0}}
    assert sorted(g["ip"] for g in summary["open_gates"]) == ["198.51.100.10", "198.51.100.11"]
    human = run_logkey("dry-run", "--journal", "--config", str(cfg), check=0).stdout.decode()
    assert "refused: 3 (trusted fields match no expectation" in human
    assert ("SYSLOG_IDENTIFIER=dovecot _SYSTEMD_UNIT=session-1.scope _COMM=logger _UID=1000 "
            "MESSAGE=\"pop3-login: Login: user=<mallory>") in human


def test_dry_run_reads_the_same_events_as_from_a_syslog_file(tmp_path):
    """Every captured dovecot message, as a journal entry, gives what its syslog line gives."""
    j = Journal(tmp_path / "journal")
    entries, lines = [], []
    t = int(time.time()) - 3000
    for n, rec in enumerate(json.loads(x) for x in CAPTURED.read_text().splitlines()):
        message = rec["MESSAGE"].split(" dovecot: ", 1)[1]
        sender = {**DOVECOT, **{k: rec[k] for k in ("_UID", "_GID", "_COMM", "_EXE")}}
        entries.append(j.entry(sender, message, t + n))
        lines.append(time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t + n))
                     + f" mail dovecot: {message}\n")
    j.write(*entries)
    (tmp_path / "mail.log").write_text("".join(lines))
    from_journal = run_logkey("dry-run", "--json", "--journal", "--config",
                              str(config(tmp_path)), check=0)
    from_file = run_logkey("dry-run", "--json", str(tmp_path / "mail.log"), check=0)

    def events(proc):
        return [(e["event"], e["ip"], e["user"], e["protocol"], e["time"]) for e in map(
            json.loads, proc.stdout.decode().splitlines()) if e["type"] == "event"]
    assert events(from_journal) == events(from_file) and len(events(from_file)) >= 8
    journal_summary = json.loads(from_journal.stdout.decode().splitlines()[-1])
    assert list(journal_summary["journal"].values())[0]["accepted"] == len(entries)


def test_dry_run_errors_are_one_line(tmp_path):
    proc = run_logkey("dry-run", "--journal", "--config",
                      str(config(tmp_path, "{directory: nowhere}")))
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1
    assert err.startswith(f"logkey: journal:{tmp_path / 'nowhere'}: journalctl failed"), err
    proc = run_logkey("dry-run")
    assert proc.returncode == 2 and "give FILEs to read, or --journal" in proc.stderr.decode()


# --- watch on real journal files -------------------------------------------------------------
def children(pid, comm="journalctl"):
    """Pids of `comm` processes whose parent is `pid` (from /proc: no procps needed)."""
    found = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError):          # gone meanwhile
            continue
        fields = tail.split()
        if head.split("(", 1)[1] == comm and fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(d))
    return found


def journal_log_counts(w):
    """The counts the watcher logs for its journal source when it stops."""
    found = re.findall(r"(\d+) entries read: (\d+) accepted, (\d+) refused", w.log())
    assert found, w.log()
    return dict(zip(("entries", "accepted", "refused"), map(int, found[-1])))


def test_watch_follows_resumes_after_the_cursor_and_refuses_forgeries(tmp_path, watch):
    j = Journal(tmp_path / "journal")
    now = time.time()
    j.write(j.entry(DOVECOT, login("198.51.100.20"), now - 7200),     # before the attach point
            j.entry(DOVECOT, login("198.51.100.21"), now - 1200),     # read, older than window
            j.entry(DOVECOT, login("198.51.100.22"), now - 60),
            j.entry(LOGGER, login("203.0.113.70", user="mallory"), now - 50))
    cfg = config(tmp_path)
    w = watch(cfg)
    wait_for(lambda: gate_file(tmp_path, "198.51.100.22").exists(), what="gate from the journal")
    # Appending while the watcher follows: the same file again, then a new file in the directory.
    j.write(j.entry(LOGGER, login("203.0.113.71", user="mallory")),
            j.entry(DOVECOT, login("198.51.100.23")))
    wait_for(lambda: gate_file(tmp_path, "198.51.100.23").exists(), what="gate, same file")
    j.write(j.entry(DOVECOT, login("198.51.100.24")), name="second.journal")
    wait_for(lambda: gate_file(tmp_path, "198.51.100.24").exists(), what="gate, new file")
    wait_for(lambda: "refused an entry" in w.log(), what="the refusal in the log")
    assert w.stop() == 0
    assert journal_log_counts(w) == {"entries": 6, "accepted": 4, "refused": 2}
    assert "_SYSTEMD_UNIT=session-1.scope _COMM=logger _UID=1000" in w.log()
    gates = sorted(p.name for p in (tmp_path / "gates").iterdir())
    assert gates == ["198.51.100.22", "198.51.100.23", "198.51.100.24"]
    record = json.loads(gate_file(tmp_path, "198.51.100.24").read_text())
    assert record["source"].startswith(f"journal:{tmp_path / 'journal'}:s=")

    # Down for a while: what was written meanwhile is read, nothing before the cursor again.
    for p in (tmp_path / "gates").iterdir():
        p.unlink()
    j.write(j.entry(DOVECOT, login("198.51.100.25")))
    w = watch(cfg)
    wait_for(lambda: gate_file(tmp_path, "198.51.100.25").exists(), what="gate after restart")
    assert w.stop() == 0
    assert journal_log_counts(w) == {"entries": 1, "accepted": 1, "refused": 0}
    assert sorted(p.name for p in (tmp_path / "gates").iterdir()) == ["198.51.100.25"]


def test_watch_once_and_a_restarted_journalctl(tmp_path, watch):
    j = Journal(tmp_path / "journal")
    j.write(j.entry(DOVECOT, login("198.51.100.30")))
    cfg = config(tmp_path)
    proc = run_logkey("watch", "--once", "--config", str(cfg), check=0)
    assert gate_file(tmp_path, "198.51.100.30").exists(), proc.stderr.decode()
    # journalctl killed under a running watcher: restarted after the last cursor read.
    w = watch(cfg)
    wait_for(lambda: "reading after the saved cursor" in w.log(), what="journalctl started")
    (child,) = children(w.proc.pid)
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: "journalctl exited" in w.log(), what="the exit noticed")
    j.write(j.entry(DOVECOT, login("198.51.100.31")))
    wait_for(lambda: gate_file(tmp_path, "198.51.100.31").exists(), what="gate after restart")
    assert w.stop() == 0
    assert journal_log_counts(w)["entries"] == 1


def test_a_killed_watcher_leaves_no_journalctl_behind(tmp_path, watch):
    j = Journal(tmp_path / "journal")
    j.write(j.entry(DOVECOT, login("198.51.100.40")))
    w = watch(config(tmp_path))
    wait_for(lambda: gate_file(tmp_path, "198.51.100.40").exists(), what="gate")
    (child,) = children(w.proc.pid)
    w.stop(signal.SIGKILL)

    def gone():
        try:
            with open(f"/proc/{child}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except FileNotFoundError:
            return True
    wait_for(gone, what="journalctl to end with its parent")
