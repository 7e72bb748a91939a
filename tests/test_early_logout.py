"""A logout read before its session's login (issue 11: dovecot 2.4's pop3/imap process and its
login process log separately, and the logout can reach the log first; captured in
tests/fixtures/captured/dovecot-2.4-*.log). The logout is held briefly (`logout_hold`, at most
correlate.HOLD_LIMIT at once) and applied when its login arrives, so the gate ends at logout +
window as when the lines come in order, not at login + max_session. The correlator alone, then
dry-run and a real `logkey watch` on the captured pair of lines, in the order they were captured.
"""
import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import ROOT, run_logkey, wait_for
from logkey.parse.correlate import Correlator
from logkey.events import LOGIN, LOGOUT, Event

CAPTURED = ROOT / "tests" / "fixtures" / "captured"
T0 = datetime(2026, 12, 2, 5, 35, tzinfo=timezone.utc)


def ev(kind, session, t=0, ip=None):
    return Event(kind, ip, "test", "pop3", T0 + timedelta(seconds=t), "dovecot", kind,
                 session=session)


def kinds(events):
    return [(e.kind, e.ip, e.session) for e in events]


def test_an_early_logout_waits_for_its_login_and_takes_its_ip():
    c = Correlator()
    assert c.feed(ev(LOGOUT, "S1")) == []
    out = c.feed(ev(LOGIN, "S1", ip="192.0.2.7"))
    assert kinds(out) == [(LOGIN, "192.0.2.7", "S1"), (LOGOUT, "192.0.2.7", "S1")]
    assert c.flush() == []


def test_a_held_logout_whose_login_does_not_come_is_released_without_an_ip():
    c = Correlator(logout_hold=10)
    assert c.feed(ev(LOGOUT, "S1", t=0)) == []
    assert c.feed(ev(LOGIN, "S2", t=5, ip="192.0.2.8"))[0].session == "S2"      # still held
    out = c.feed(ev(LOGIN, "S3", t=11, ip="192.0.2.9"))
    assert kinds(out) == [(LOGOUT, None, "S1"), (LOGIN, "192.0.2.9", "S3")]
    out = c.feed(ev(LOGIN, "S1", t=12, ip="192.0.2.66"))         # too late: its own login only
    assert kinds(out) == [(LOGIN, "192.0.2.66", "S1")]


def test_the_hold_is_bounded_in_count_and_flushed_at_the_end():
    c = Correlator(logout_hold=60, hold_limit=3)
    released = []
    for i in range(5):
        released += c.feed(ev(LOGOUT, f"S{i}"))
    assert kinds(released) == [(LOGOUT, None, "S0"), (LOGOUT, None, "S1")]   # oldest out first
    assert kinds(c.flush()) == [(LOGOUT, None, "S2"), (LOGOUT, None, "S3"), (LOGOUT, None, "S4")]


def test_no_hold_with_logout_hold_0_and_none_for_a_login_after_the_logout():
    c = Correlator(logout_hold=0)
    assert kinds(c.feed(ev(LOGOUT, "S1"))) == [(LOGOUT, None, "S1")]
    c = Correlator()
    assert c.feed(ev(LOGOUT, "S1", t=0)) == []
    out = c.feed(ev(LOGIN, "S1", t=5, ip="192.0.2.7"))       # a login 5 s after "its" logout
    assert kinds(out) == [(LOGIN, "192.0.2.7", "S1")]
    assert kinds(c.flush()) == [(LOGOUT, None, "S1")]


def captured_pair():
    """The captured logout and its login, in the order rsyslog wrote them (lines 60-61)."""
    lines = (CAPTURED / "dovecot-2.4-syslog-traditional.log").read_text().splitlines()[59:61]
    assert "pop3(test)" in lines[0] and "Logged in" in lines[1]
    return lines


def test_dry_run_joins_the_captured_pair_and_ends_the_gate_at_the_logout():
    log = CAPTURED / "dovecot-2.4-syslog-traditional.log"
    proc = run_logkey("dry-run", "--pack", "dovecot", "--json", "--now",
                      "2026-12-02T05:35:01+00:00", str(log), check=0)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    events = [r for r in records if r.get("type") == "event"]
    assert all(r["ip"] is not None for r in events if r["protocol"] in ("pop3", "imap")
               and r["user"] == "test"), [r for r in events if r["ip"] is None]
    pair = [r for r in events if r["line"] == 61]
    assert [(r["event"], r["ip"]) for r in pair] == [("login", "127.0.0.33"),
                                                     ("logout", "127.0.0.33")]


def test_dry_run_keeps_an_unjoined_logout_and_reports_it_once(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(captured_pair()[0] + "\n")
    proc = run_logkey("dry-run", "--pack", "dovecot", "--json", str(log), check=0)
    events = [json.loads(line) for line in proc.stdout.splitlines()
              if json.loads(line).get("type") == "event"]
    assert [(e["event"], e["ip"]) for e in events] == [("logout", None)]


def fresh(line: str, t: float) -> str:
    """The captured line with its stamp moved to t (the watcher judges gates by line time)."""
    return time.strftime("%b %e %H:%M:%S", time.gmtime(t)) + line[15:]


@pytest.mark.parametrize("hold", ["10s", "0"])
def test_watch_ends_the_gate_at_logout_plus_window(tmp_path, watch, hold):
    """hold 10s: the gate of the captured session ends at logout + window (3 s), although the
    logout came first. hold 0 (the old behaviour): the session looks open, so the watcher keeps
    extending its gate towards login + max_session."""
    log = tmp_path / "mail.log"
    log.write_text("")
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs:\n  - {{path: {log}, sender_verified: true}}\n"
                   f"store: {{type: dir, path: {tmp_path / 'gates'}}}\n"
                   f"state_dir: {tmp_path}/state\nwindow: 3s\nmax_session: 1h\n"
                   f"logout_hold: {hold}\n")
    watch(cfg)
    now = time.time()
    logout, login = captured_pair()
    with open(log, "a") as f:
        f.write(fresh(logout, now) + "\n" + fresh(login, now) + "\n")
    gate = tmp_path / "gates" / "127.0.0.33"
    wait_for(gate.exists, what="the gate of the captured login")
    if hold != "0":
        assert gate.stat().st_mtime <= int(now) + 3 + 1
    time.sleep(4.5)                     # past logout + window (the watcher ticks each second)
    still_open = run_logkey("check", "--config", str(cfg), "127.0.0.33", check=None).returncode == 0
    assert still_open == (hold == "0")
    if hold == "0":
        assert gate.stat().st_mtime > now + 4         # extended as an open session
