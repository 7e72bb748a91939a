"""The audit lines (logkey/gates/audit.py, docs/log-lines.md): one line per gate decision, with ip,
user, pack and source file:line, in a key=value form no user name can break; and a real
`logkey watch` writing them for every kind of decision: open, refresh, refuse (never_gate,
only_gate, max_ips_per_user), close (expired, removed by `logkey close`)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

from conftest import ROOT, run_logkey, stop_process, wait_for
from logkey.gates import audit
from logkey.events import Event
from logkey.gates.policy import Delete, Put, Refuse
from logkey.stores.base import GateRecord

LINE = re.compile(r"<(?P<pri>\d)>(?P<word>gate|would) (?P<what>open|refresh|refuse|close)"
                  r"(?P<fields>(?: [a-z]+=(?:\"(?:[^\"\\]|\\.)*\"|[^ \"]+))*)")
FIELD = re.compile(r" ([a-z]+)=(\"(?:[^\"\\]|\\.)*\"|[^ \"]+)")


def parse(text: str) -> dict | None:
    """An audit line as a dict (what, pri, and its fields), or None if it is not one."""
    m = LINE.fullmatch(text)
    if m is None:
        return None
    out = {"pri": int(m["pri"]), "what": f"{m['word']} {m['what']}"}
    for key, value in FIELD.findall(m["fields"]):
        assert key not in out, f"key {key} twice in {text!r}"
        out[key] = json.loads(value) if value.startswith('"') else value
    return out


def record(key="192.0.2.7", user="alice", expires=1_800_000_600.0):
    return GateRecord(key, user, "dovecot", "pop3", 1_800_000_000.0, expires,
                      "/var/log/mail.log:42")


def test_lines_of_each_decision():
    expires = datetime.fromtimestamp(1_800_000_600).astimezone().isoformat(timespec="seconds")
    assert audit.line(Put(record(), True, "open")) == (
        "gate open ip=192.0.2.7 user=alice pack=dovecot protocol=pop3 "
        f"source=/var/log/mail.log:42 expires={expires}")
    assert audit.line(Put(record(), False, "session")).endswith(f"expires={expires} by=session")
    assert audit.line(Delete("192.0.2.7", "expired", record())) == (
        "gate close ip=192.0.2.7 user=alice pack=dovecot protocol=pop3 "
        "source=/var/log/mail.log:42 reason=expired")
    assert audit.line(Delete("192.0.2.7", "removed")) == (
        "gate close ip=192.0.2.7 user=- pack=- protocol=- source=- reason=removed")
    event = Event("login", "127.0.0.1", "webmail", "imap",
                  datetime.fromtimestamp(1_800_000_000, timezone.utc), "dovecot", "login")
    assert audit.line(Refuse(event, "127.0.0.1", "/var/log/mail.log:7", "never_gate",
                             "127.0.0.1/32"), observe=True) == (
        "would refuse ip=127.0.0.1 user=webmail pack=dovecot protocol=imap "
        "source=/var/log/mail.log:7 reason=never_gate detail=127.0.0.1/32")
    assert audit.level(Refuse(event, "127.0.0.1", None, "max_ips_per_user", "5 open")) == 30
    assert audit.level(Refuse(event, "127.0.0.1", None, "never_gate")) == 20


def test_hostile_user_names_and_paths_stay_one_value():
    hostile = ['a b', 'x reason=never_gate ip=203.0.113.9', 'q"uote', 'back\\slash',
               'new\nline gate open ip=203.0.113.9', 'nul\x00', 'caf\u00e9', 'bad\udcff',
               '', '-', 'tab\there', '=', '"']
    for user in hostile:
        rec = record(user=user)
        rec.source = f"/var/log/{user}.log:1"
        text = audit.line(Put(rec, True, "open"))
        assert "\n" not in text and text.isascii()
        got = parse("<6>" + text)
        assert got is not None, text
        assert got["ip"] == "192.0.2.7"
        assert got["user"] == user, text
        assert got["source"] == f"/var/log/{user}.log:1"
    assert ' user="-" ' in audit.line(Put(record(user="-"), True, "open"))   # not "no user"
    assert " user=- " in audit.line(Put(record(user=None), True, "open"))


# --- a real watcher ----------------------------------------------------------------------------

def stamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


def session(ip):
    return "sess" + ip.replace(".", "").rjust(12, "0")


def login(ip, user, t):
    return (f"{stamp(t)} mail dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, "
            f"rip={ip}, lip=192.0.2.1, mpid=1, session=<{session(ip)}>\n")


def logout(ip, user, t):
    return (f"{stamp(t)} mail dovecot: pop3({user})<2><{session(ip)}>: Disconnected: "
            "Logged out top=0/0, retr=0/0, del=0/0, size=0\n")


def test_watch_logs_every_decision(tmp_path):
    log = tmp_path / "mail.log"
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs: [{log}]\nstore: {{type: dir, path: {tmp_path}/gates}}\n"
                   f"state_dir: {tmp_path}/state\nwindow: 4\nmax_ips_per_user: 2\nmax_session: 1\n"
                   "only_gate: [198.51.100.0/24, 127.0.0.0/8]\n")
    log.write_text("")
    exe = os.environ.get("LOGKEY_EXE")
    err = tmp_path / "watch.err"
    with open(err, "wb") as f:
        proc = subprocess.Popen(([exe] if exe else [sys.executable, "-m", "logkey"])
                                + ["watch", "--config", str(cfg)], stderr=f,
                                stdout=subprocess.DEVNULL, cwd=ROOT)
    try:
        def lines():
            return [p for p in map(parse, err.read_text().splitlines()) if p is not None]
        wait_for(lambda: "watching" in err.read_text(), "the watcher to start", 10)
        now = time.time()
        hostile = 'eve" reason=never_gate'
        with open(log, "a") as f:
            f.write(login("198.51.100.1", "alice", now)          # 1: open
                    + login("198.51.100.1", "alice", now)        # 2: refresh by login
                    + login("127.0.0.1", "webmail", now)         # 3: never_gate
                    + login("203.0.113.5", "bob", now)           # 4: not in only_gate
                    + login("198.51.100.2", "alice", now)        # 5: open (alice's second)
                    + login("198.51.100.3", "alice", now)        # 6: max_ips_per_user
                    + login("198.51.100.4", hostile, now)        # 7: open, user quoted
                    + logout("198.51.100.2", "alice", now))      # 8: refresh by logout
        wait_for(lambda: len(lines()) >= 8, "eight audit lines", 10)
        assert run_logkey("close", "--config", str(cfg), "198.51.100.4").returncode == 0
        # removal is noticed within RECONCILE_EVERY (5 s); the others expire after 4 s
        wait_for(lambda: len(lines()) >= 11, "three close lines", 15)
    finally:
        proc.send_signal(signal.SIGTERM)
        stop_process(proc)
    got = lines()
    src = f"{log}:"
    for entry in got:
        entry.pop("expires", None)
    assert got[:8] == [
        {"pri": 6, "what": "gate open", "ip": "198.51.100.1", "user": "alice", "pack": "dovecot",
         "protocol": "pop3", "source": src + "1"},
        {"pri": 6, "what": "gate refresh", "ip": "198.51.100.1", "user": "alice",
         "pack": "dovecot", "protocol": "pop3", "source": src + "2", "by": "login"},
        {"pri": 6, "what": "gate refuse", "ip": "127.0.0.1", "user": "webmail", "pack": "dovecot",
         "protocol": "pop3", "source": src + "3", "reason": "never_gate",
         "detail": "127.0.0.1/32"},
        {"pri": 6, "what": "gate refuse", "ip": "203.0.113.5", "user": "bob", "pack": "dovecot",
         "protocol": "pop3", "source": src + "4", "reason": "only_gate"},
        {"pri": 6, "what": "gate open", "ip": "198.51.100.2", "user": "alice", "pack": "dovecot",
         "protocol": "pop3", "source": src + "5"},
        {"pri": 4, "what": "gate refuse", "ip": "198.51.100.3", "user": "alice",
         "pack": "dovecot", "protocol": "pop3", "source": src + "6",
         "reason": "max_ips_per_user", "detail": "2 open, limit 2"},
        {"pri": 6, "what": "gate open", "ip": "198.51.100.4", "user": hostile, "pack": "dovecot",
         "protocol": "pop3", "source": src + "7"},
        {"pri": 6, "what": "gate refresh", "ip": "198.51.100.2", "user": "alice",
         "pack": "dovecot", "protocol": "pop3", "source": src + "8", "by": "logout"},
    ]
    closes = sorted((e["what"], e["ip"], e["reason"], e["user"], e["source"]) for e in got[8:])
    assert closes == [("gate close", "198.51.100.1", "expired", "alice", src + "2"),
                      ("gate close", "198.51.100.2", "expired", "alice", src + "8"),
                      ("gate close", "198.51.100.4", "removed", hostile, src + "7")]
    assert len(got) == 11
