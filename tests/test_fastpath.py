"""Bulk reading's covered lines in C (parse/fastpath.py) against the per-line path it stands in
for (Engine.match_picked, then the packing of bulk.py): the same entries, in the same order,
the same counts, on every real line logkey knows, on mutations of them (hypothesis), on
hostile addresses and fields, with a site's aliases, under the match time limit."""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from logkey.parse import fastpath, match, timelimit
from logkey.parse.engine import Engine, Stats
from logkey.parse.fastpath import FastPath, packed_entry
from logkey.parse.headers import Clock
from logkey.parse.match import PackSet
from logkey.parse.packfiles import load_packs
from logkey.parse.packs import load_pack
from logkey.parse.packtest import SAMPLE_NOW
from logkey.parse.scan import Scanner
from test_fuzz import mutated
from test_hostile import SLOW_PACK
from test_properties import real_lines

pytestmark = pytest.mark.skipif(not fastpath.available(),
                                reason="logkey.parse._fastscan is not built (no C compiler)")

PACKS = load_packs()
REAL = sorted(real_lines())
EXAMPLES = int(os.environ.get("LOGKEY_FUZZ_EXAMPLES", "300"))
CAP = 65536


def _stats(stats: Stats) -> dict:
    return {k: (dict(v) if hasattr(v, "items") else v) for k, v in vars(stats).items()
            if k != "last_time"}


def both(lines: list[bytes], packs: PackSet = PACKS, tz=timezone.utc, cap: int = CAP):
    """(what the per-line path gives, what FastPath gives) for the lines of one block."""
    lines = [line.replace(b"\n", b" ") for line in lines]
    picks = Scanner(packs).scan(b"\n".join(lines))[2]
    slow = Engine(packs, Clock(SAMPLE_NOW, tz))
    slow.stats = Stats()
    expected = []
    for index, line, counted in picks:
        event = slow.match_picked(line, ("f", index), counted, cap)
        if event is not None or slow.cut_mark is not None:
            expected.append(packed_entry(index, event, slow.cut_mark))
    fast = Engine(packs, Clock(SAMPLE_NOW, tz))
    fast.stats = Stats()
    got = FastPath(fast).match(picks, "f", cap)
    return (expected, _stats(slow.stats)), (got, _stats(fast.stats))


@pytest.mark.parametrize("tz", [timezone.utc, None], ids=["utc", "local"])
def test_every_real_line_reads_the_same(tz):
    expected, got = both(REAL, tz=tz)
    assert got == expected
    assert len(expected[0]) > 500          # (logins, logouts and cut marks of every pack)


def test_every_real_line_on_its_own_and_with_a_syslog_header():
    """Each line alone (no stamp shared with the line before), and the messages of the
    captured RFC 3164 lines behind an RFC 3339 header with an offset."""
    for line in REAL:
        expected, got = both([line])
        assert got == expected, line
    reheaded = [b"2026-11-27T10:00:00.123456+01:00 mail " + line.split(b" ", 4)[4]
                for line in REAL if line[:3].isalpha() and line.count(b" ") >= 5]
    expected, got = both(reheaded)
    assert got == expected and len(reheaded) > 100


HOSTILE = [
    b"Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<u>, method=PLAIN, rip=%s, "
    b"lip=192.0.2.1, mpid=7, session=<abc>" % ip
    for ip in (b"192.0.2.7", b"192.0.2.07", b"::ffff:192.0.2.7", b"::FFFF:192.0.2.7",
               b"2001:DB8::1", b"fe80::1%eth0", b"999.1.1.1", b"1.2.3.4.5", b"\xd9\xa1.2.3.4",
               b"192.0.2.7\x00", b"")
] + [
    b"Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<rip=203.0.113.9>, method=PLAIN, "
    b"rip=192.0.2.7, lip=192.0.2.1, session=<x>",
    b"Nov 27 10:00:00 mail dovecot: imap-login: Login: user=<u>, rip=192.0.2.7, rip=192.0.2.8",
    b"Nov 27 10:00:00 mail dovecot: imap-login: Login: user=<u>, lip=192.0.2.1, session=<x>",
    b"Nov 27 10:00:00 mail dovecot: managesieve-login: Login: user=<u>, method=PLAIN, "
    b"rip=192.0.2.7, lip=192.0.2.1, session=<x>",
    b"Nov 27 10:00:00 mail pop3d: LOGIN, user=u, ip=[::ffff:192.0.2.9], port=[4], "
    + b"x" * 600,
    b"Nov 27 10:00:00 mail pop3d: LOGIN, user=u, ip=[::ffff:192.0.2.9], port=[4]\r",
    b"Nov 27 10:00:00 sun imapd[1]: [ID 702911 mail.info] Login user=u host=h [192.0.2.9]",
    b"Feb 30 10:00:00 mail popper[1]: (v4.1.0) POP login by user \"u\" at (h) 192.0.2.9",
    b"2026-02-30T10:00:00+00:00 mail popper[1]: (v4.1.0) POP login by user \"u\" at (h) 192.0.2.9",
    b"2026-11-27T24:00:00Z mail popper[1]: (v4.1.0) POP login by user \"u\" at (h) 192.0.2.9",
    b"2026-11-27T10:00:00.5-13:30 mail popper[9]: (v4.1.0) POP login by user \"u\" at (h) 192.0.2.9",
]


def test_hostile_addresses_fields_and_stamps_read_the_same():
    expected, got = both(HOSTILE + REAL[:200] + HOSTILE)
    assert got == expected
    assert expected[1]["rejected_ips"] and expected[1]["refused_lines"]


def test_a_line_longer_than_the_cap_reads_the_same():
    expected, got = both(HOSTILE, cap=200)
    assert got == expected and expected[1]["too_long"]


def test_a_sites_aliases_read_the_same():
    packs = PACKS.with_aliases({"mx2": "dovecot"})
    lines = [line.replace(b" dovecot: ", b" mx2: ") for line in REAL if b" dovecot: " in line]
    expected, got = both(lines + REAL[:100], packs=packs)
    assert got == expected and expected[0]


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.one_of(mutated(), st.sampled_from(HOSTILE), st.binary(max_size=80)),
                min_size=1, max_size=8))
def test_mutated_lines_read_the_same(lines):
    expected, got = both(lines)
    assert got == expected


def test_every_match_timing_out_reads_the_same(monkeypatch):
    monkeypatch.setattr(match, "regex_timeout", 0)      # regex's own limit, hit at once
    expected, got = both(REAL)
    assert got == expected and expected[1]["timeouts"] > 100


@pytest.fixture
def slow_packs(tmp_path) -> PackSet:
    (tmp_path / "slow.yaml").write_text(SLOW_PACK)
    return PackSet([load_pack(tmp_path / "slow.yaml")])


def test_the_cpu_timer_stops_a_long_match_run_from_c(slow_packs):
    """The limit timelimit.py keeps by a CPU timer holds for matches the C part runs: the
    handler sees FastPath.match's frame and asks the C part for the running match's ticket."""
    slow = b"Nov 27 10:00:00 h slowd: " + b"a" * 60 + b"c 192.0.2.9"
    good = b"Nov 27 10:00:01 h slowd: ab 192.0.2.2"
    engine = Engine(slow_packs, Clock(datetime(2026, 11, 27, tzinfo=timezone.utc), None))
    picks = Scanner(slow_packs).scan(slow + b"\n" + good)[2]
    with timelimit.cpu_limit():
        assert match.regex_timeout is None
        started = time.process_time()
        entries = FastPath(engine).match(picks, "f", CAP)
        spent = time.process_time() - started
    assert engine.stats.timeouts == 1 and [e[1][1] for e in entries] == ["192.0.2.2"]
    assert match.MATCH_TIMEOUT <= spent < match.MATCH_TIMEOUT + 10 * timelimit.TICK, spent
    assert fastpath.running_ticket() is None            # no match runs between calls


def test_short_matches_run_from_c_are_never_stopped(slow_packs, monkeypatch):
    monkeypatch.setattr(timelimit, "TICK", 0.001)
    monkeypatch.setattr(match, "MATCH_TIMEOUT", 0.002)
    line = b"Nov 27 10:00:00 h slowd: " + b"a" * 12 + b"b 192.0.2.9"
    engine = Engine(slow_packs, Clock(datetime(2026, 11, 27, tzinfo=timezone.utc), None))
    fast = FastPath(engine)
    picks = Scanner(slow_packs).scan(b"\n".join([line] * 200))[2]
    n = 0
    with timelimit.cpu_limit():
        started = time.process_time()
        while time.process_time() - started < 1.0:
            n += len(fast.match(picks, "f", CAP))
    assert engine.stats.timeouts == 0 and engine.stats.hits[("slow", "login")] == n


STAMPS = [
    "2026-11-27T10:00:00Z", "2026-11-27T10:00:00+00:00", "2026-11-27T10:00:00-00:00",
    "2026-11-27T10:00:00.123+01:00", "2026-11-27T10:00:00.123456-05:30",
    "2026-11-27T10:00:00.999999+23:59", "2026-11-27T23:59:59.000001-23:59",
    "2024-02-29T12:00:00Z", "2000-02-29T00:00:00+02:00", "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59.500-00:01", "1685-01-01T00:00:00+01:00", "2255-12-31T23:59:59.999999-23:59",
    "2256-01-01T00:00:00.000001Z", "0002-01-01T00:00:00+01:00", "9998-12-31T23:59:59-01:00",
    # read by Python (other shapes, or out of range), with the same answers
    "2026-11-27T10:00:00.1+01:00", "2026-11-27T10:00:00.12345+01:00",
    "2026-11-27T10:00:00.123456789+01:00", "2026-11-27T10:00:00+0100", "2026-11-27T10:00:00",
    "2026-11-27T10:00:00.123456", "2026-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z",
    "2026-11-00T00:00:00Z", "2026-11-27T24:00:00Z", "2026-11-27T23:60:00Z",
    "2026-11-27T23:59:60Z", "2026-11-27T10:00:00+24:00", "2026-11-27T10:00:00+00:60",
    "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
]


def _login(stamp: str) -> bytes:
    return (f"{stamp} mail dovecot: pop3-login: Login: user=<u>, method=PLAIN, rip=192.0.2.7, "
            f"lip=192.0.2.1, mpid=7, session=<abc>").encode()


@pytest.mark.parametrize("stamp", STAMPS)
def test_rfc3339_stamps_read_in_c_as_python_reads_them(stamp):
    """The C part reads the common RFC 3339 shapes itself (_fastscan.rfc3339_packed): the same
    POSIX time to the last bit and the same tzinfo (UTC as timezone.utc) as fromisoformat and
    timestamp(), and it leaves every other stamp to Python."""
    for tz in (timezone.utc, None):
        expected, got = both([_login(stamp)], tz=tz)
        assert got == expected
        for e, g in zip(expected[0], got[0]):
            if e[1] is not None and isinstance(e[1][4], tuple):
                assert repr(g[1][4]) == repr(e[1][4])       # float bits and tzinfo as shown
                assert (g[1][4][1] is timezone.utc) == (e[1][4][1] is timezone.utc)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.datetimes(min_value=datetime(1600, 1, 1), max_value=datetime(2300, 12, 31)),
       st.integers(-23 * 60 - 59, 23 * 60 + 59), st.sampled_from([0, 3, 6]))
def test_rfc3339_stamps_of_any_time_and_offset(when, minutes, digits):
    sign = "-" if minutes < 0 else "+"
    zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
    if digits:
        stamp += "." + f"{when.microsecond:06d}"[:digits]
    expected, got = both([_login(stamp + zone)])
    assert got == expected
    assert repr(got[0][0][1][4]) == repr(expected[0][0][1][4])


def test_entries_are_left_out_of_the_collectors_walks():
    """The C part's entries hold only strings, numbers, None, tzinfos and such tuples, and it
    untracks them at once (what CPython does at the first collection that walks them)."""
    import gc
    expected, got = both(REAL)
    entries = got[0]
    assert entries and not any(gc.is_tracked(e) for e in entries)
    assert not any(gc.is_tracked(e[1]) or gc.is_tracked(e[1][4])
                   for e in entries if e[1] is not None and isinstance(e[1][4], tuple))
    assert all(not gc.is_tracked(e[2]) for e in entries if e[2] is not None)
