"""Lines an attacker writes: none of them may open a gate, none may stop logkey."""
import json
from datetime import timezone

import pytest

from conftest import NOW, run_logkey
from logkey.parse.engine import Engine
from logkey.parse.headers import Clock
from logkey.parse.packfiles import load_packs
from logkey.parse.packtest import SAMPLE_NOW

PACKS = load_packs()


def events_of(*lines: bytes):
    engine = Engine(PACKS, Clock(SAMPLE_NOW, timezone.utc))
    out = []
    for line in lines:
        out += engine.feed_line(line)
    return out, engine.stats


HOSTILE = [
    # CVE-2001-1075: poprelayd took "POP login by user ... at (...) IP" from anywhere in a line
    b'Nov 27 10:00:00 mail postfix/smtpd[4242]: NOQUEUE: reject: RCPT from unknown[66.66.66.66]: '
    b'554 5.7.1 <v@x>: Relay access denied; from=<"POP login by user "admin" at (66.66.66.66) '
    b'66.66.66.66"@x> to=<v@x> proto=ESMTP helo=<x>',
    b'Nov 27 10:00:00 mail postfix/smtpd[4242]: warning: "popper[1]: POP login by user "a" at '
    b'(h) 66.66.66.66"',
    b'Nov 27 10:00:00 mail postfix/smtpd[4242]: reject: from=<"dovecot: pop3-login: Login: '
    b'user=<bob>, method=PLAIN, rip=203.0.113.66, lip=192.0.2.1"@evil.example>',
    # another program whose message *starts* like a success line of a covered one
    b'Nov 27 10:00:00 mail sshd[1]: pop3-login: Login: user=<a>, method=PLAIN, rip=203.0.113.9, lip=1.1.1.1',
    b'Nov 27 10:00:00 mail sshd[1]: vchkpw-pop3: (PLAIN) login success a@b:203.0.113.9',
    # failed logins with crafted user names
    b'Nov 27 10:00:00 mail dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): '
    b'user=<x>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1>, method=PLAIN, rip=203.0.113.9, lip=1.1.1.1',
    b'Nov 27 10:00:00 mail dovecot: pop3-login: Disconnected (auth failed, 1 attempts): user=<Login: '
    b'user=<a>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1>, method=PLAIN, rip=203.0.113.9',
    b'Nov 27 10:00:00 mail vpopmail[1]: vchkpw-pop3: password fail x login success a@b:127.0.0.9:203.0.113.9',
    b'Nov 27 10:00:00 mail popper[1]: -ERR [AUTH] Password supplied for "POP login by user "a" at (h) 127.0.0.9" is incorrect.',
    # host names, zone ids and junk where the address should be
    b'Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=evil.example, lip=1.1.1.1',
    b'Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=fe80::1%eth0, lip=1.1.1.1',
    b'Nov 27 10:00:00 mail vpopmail[1]: vchkpw-pop3: (PLAIN) login success a@b:999.1.1.1',
    # two rip= (a user name carrying one) on a success-looking line
    b'Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<x>, method=PLAIN, rip=127.0.0.9, '
    b'lip=127.0.0.1>, method=PLAIN, rip=203.0.113.9, lip=1.1.1.1',
    # CR, LF, NUL and invalid UTF-8 inside lines
    b'Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<a\r\n>, method=PLAIN, rip=203.0.113.9\x00, lip=1.1.1.1',
    b'Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=203.0.113.9\xff, lip=1.1.1.1',
    b'Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=\xef\xbc\x91.1.1.1, lip=1.1.1.1',
    b'Nov 27 10:00:00 mail \xff\xfe: pop3-login: Login: user=<a>, method=PLAIN, rip=203.0.113.9, lip=1.1.1.1',
    # managesieve / submission / smtp logins never open a gate
    b'Nov 27 10:00:00 mail dovecot: managesieve-login: Login: user=<a>, method=PLAIN, rip=203.0.113.9, lip=1.1.1.1',
    b'Nov 27 10:00:00 mail dovecot: submission-login: Login: user=<a>, method=PLAIN, rip=203.0.113.9, lip=1.1.1.1',
    b'Nov 27 10:00:00 mail vpopmail[1]: vchkpw-smtp: (PLAIN) login success a@b:203.0.113.9',
    b'Nov 27 10:00:00 mail vpopmail[1]: vchkpw-submission: (PLAIN) login success a@b:203.0.113.9',
]


@pytest.mark.parametrize("line", HOSTILE)
def test_hostile_line_gives_no_login(line):
    events, _ = events_of(line)
    assert [e for e in events if e.kind == "login"] == []


def test_a_real_login_still_counts_after_hostile_lines():
    real = (b"Nov 27 10:00:01 mail dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
            b"rip=198.51.100.7, lip=192.0.2.1, mpid=4711, TLS, session=<PeYcgjjOGOisEQAB>")
    events, stats = events_of(*HOSTILE, real)
    assert [(e.kind, e.ip) for e in events if e.kind == "login"] == [("login", "198.51.100.7")]
    assert stats.rejected_ips + stats.refused_lines >= 3


def test_huge_and_binary_lines_through_the_cli(tmp_path):
    log = tmp_path / "hostile.log"
    real = (b"Nov 27 10:00:01 mail dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
            b"rip=198.51.100.7, lip=192.0.2.1, mpid=4711, TLS, session=<PeYcgjjOGOisEQAB>\n")
    with open(log, "wb") as f:
        f.write(b"Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<" + b"A" * (1 << 20)
                + b">, method=PLAIN, rip=203.0.113.9, lip=1.1.1.1\n")
        f.write(b"\x00" * 5000 + b"\n" + bytes(b for b in range(256) if b != 10) * 40 + b"\n")
        f.write(b"Nov 27 10:00:00 mail dovecot: " + b"pop3-login: Login: " * 30000 + b"\n")
        f.write(b"\xff" * 100 + b" dovecot: pop3-login: Login: rip=203.0.113.9\n")
        f.write(real)
        f.write(b"x" * (3 << 20))                       # a last line with no newline at all
    out = run_logkey("dry-run", "--json", "--now", NOW, str(log), check=0)
    lines = [json.loads(x) for x in out.stdout.decode().splitlines()]
    assert [(e["line"], e["ip"]) for e in lines[:-1]] == [(6, "198.51.100.7")]
    s = lines[-1]
    assert s["lines"] == 7 and s["too_long"] == 3


SLOW_PACK = ("programs: [slowd]\n"
             "events:\n"
             "  - id: login\n"
             "    kind: login\n"
             "    protocol: pop3\n"
             "    regex: '^(?:(?:a|aa|aaa){1,40}){1,40}b (?P<ip>[0-9.]{7,15})$'\n"
             "samples:\n"
             "  - line: 'Nov 27 10:00:00 h slowd: ab 192.0.2.1'\n"
             "    expect: {kind: login, ip: 192.0.2.1}\n"
             "    source: test\n")


def slow_site(tmp_path, slow_lines=1):
    """A local pack whose (lint-clean) regex backtracks badly on a crafted line, and a log
    with `slow_lines` such lines, then a good login."""
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "slow.yaml").write_text(SLOW_PACK)
    log = tmp_path / "m.log"
    log.write_text("".join(f"Nov 27 10:00:00 h slowd: {'a' * 60}c 192.0.2.{i + 10}\n"
                           for i in range(slow_lines)) + "Nov 27 10:00:01 h slowd: ab 192.0.2.2\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"patterns_dir: {tmp_path / 'packs'}\nlogs: [{{path: {log}}}]\n"
                   f"store: {{type: dir, path: {tmp_path / 'gates'}}}\n"
                   f"state_dir: {tmp_path / 'state'}\ntimezone: UTC\n")
    return cfg, log


def test_match_time_limit_counts_and_carries_on(tmp_path):
    cfg, log = slow_site(tmp_path)
    out = run_logkey("dry-run", "--json", "--config", str(cfg), "--now", NOW, str(log), check=0)
    lines = [json.loads(x) for x in out.stdout.decode().splitlines()]
    assert [e["ip"] for e in lines[:-1]] == ["192.0.2.2"]
    assert lines[-1]["timeouts"] == 1


def test_match_time_limit_in_watch_is_warned_and_counted(tmp_path):
    cfg, log = slow_site(tmp_path, slow_lines=3)
    out = run_logkey("watch", "--once", "--config", str(cfg),
                     "--as-of", "2026-11-27T10:00:05+00:00", check=0)
    assert sorted(p.name for p in (tmp_path / "gates").iterdir()) == ["192.0.2.2"]
    warnings = [x for x in out.stderr.decode().splitlines() if "time limit" in x]
    assert len(warnings) == 2, out.stderr                # the first at once, the rest at exit
    assert f"{log}:1: pattern match over its time limit, line skipped" in warnings[0]
    assert "2 more line(s)" in warnings[1] and "3 since start" in warnings[1]


def edge_stamp_log(log):
    """Dovecot logins stamped at the ends of datetime's range (9999-12-31 -01:00 is in year
    10000 in UTC, 0001-01-01 +01:00 in year 0) and one of 2026, written to `log`."""
    log.write_text("".join(
        f"{stamp} mail dovecot: pop3-login: Login: user=<u>, method=PLAIN, rip={ip}, "
        f"lip=192.0.2.1, mpid=1, session=<s{ip}>\n" for stamp, ip in (
            ("0001-01-01T00:00:00+01:00", "198.51.100.8"),
            ("2026-11-27T10:00:00+00:00", "198.51.100.9"),
            ("9999-12-31T23:59:59-01:00", "198.51.100.7"))))
    return log


def test_stamps_at_the_ends_of_the_datetime_range_in_watch_as_of(tmp_path):
    """--as-of shifts each line's time; a stamp in year 1 or 9999 cannot be shifted and is
    judged as read (a future time is clamped to now, an old one is stale), not a crash."""
    log = edge_stamp_log(tmp_path / "m.log")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"logs: [{{path: {log}, packs: [dovecot]}}]\n"
                   f"store: {{type: dir, path: {tmp_path / 'gates'}}}\n"
                   f"state_dir: {tmp_path / 'state'}\nnever_gate: []\n")
    out = run_logkey("watch", "--once", "--config", str(cfg),
                     "--as-of", "2026-11-27T10:00:05+00:00", check=0)
    assert out.returncode == 0 and b"internal error" not in out.stderr, out.stderr
    assert sorted(p.name for p in (tmp_path / "gates").iterdir()) == [
        "198.51.100.7", "198.51.100.9"]


def test_pid_join_needs_the_same_host_and_the_window():
    login = b"Nov 27 10:00:05 mail popa3d[4242]: Authentication passed for bob"
    other_host = b"Nov 27 10:00:04 other popa3d[4242]: Session from 203.0.113.7"
    same_host = b"Nov 27 10:00:04 mail popa3d[4242]: Session from 203.0.113.8"
    too_old = b"Nov 27 09:40:00 mail popa3d[4242]: Session from 203.0.113.9"
    after = b"Nov 27 10:00:09 mail popa3d[4242]: Session from 203.0.113.10"
    assert events_of(other_host, login)[0] == []
    assert events_of(too_old, login)[0] == []
    assert events_of(login, after)[0] == []
    assert [e.ip for e in events_of(same_host, login)[0]] == ["203.0.113.8"]
    # a multilog line names no host: it joins a syslog line of any host
    multilog = b"@400000006b0a1fc6384f7d3c tcpserver: pid 4242 from 203.0.113.11"
    late_login = b"Nov 28 00:26:37 mail popa3d[4242]: Authentication passed for bob"
    assert [e.ip for e in events_of(multilog, late_login)[0]] == ["203.0.113.11"]
