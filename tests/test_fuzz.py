"""Fuzzing the header parser, the pack engine and the bulk pre-filter (hypothesis, bounded in
examples): no exception escapes, every address that comes out is canonical and written in the
lines, the pre-filter never drops a line that has an event, and a line that hits the matcher's
time limit gives no event and is counted (match.regex_timeout set to 0: every match hits it).

Inputs: random bytes; header-shaped prefixes with random messages; and mutations of every real
line logkey knows (the packs' samples and the captured logs): bytes inserted, deleted,
replaced, repeated, with delimiters, addresses, CR, LF, NUL and invalid UTF-8.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from logkey.parse import headers, match
from logkey.parse.engine import Engine
from logkey.events import GATE_PROTOCOLS, canonical_ip
from logkey.parse.headers import Clock
from logkey.parse.match import own_file_rules
from logkey.parse.packfiles import load_packs
from logkey.parse.packtest import SAMPLE_NOW
from logkey.parse.scan import Scanner
from test_properties import real_lines, written_addresses

PACKS = load_packs()
SCANNER = Scanner(PACKS)
REGEX_SCANNER = Scanner(PACKS, use_c=False)
EXAMPLES = int(os.environ.get("LOGKEY_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


REAL_LINES = sorted(real_lines())
BITS = [b"<", b">", b",", b"=", b"[", b"]", b"(", b")", b'"', b"'", b" ", b":", b"\r", b"\n",
        b"\x00", b"\xff", b"\xc3", b"\t", b"rip=", b"ip=[", b"user=<", b"203.0.113.66",
        b"::ffff:", b"2001:db8::", b"999.1.1.1", b"%eth0", b"Login: ", b" from ", b"-- ["]


@st.composite
def mutated(draw, lines=REAL_LINES):
    """A real line with a few byte-level mutations."""
    line = bytearray(draw(st.sampled_from(lines)))
    for _ in range(draw(st.integers(0, 5))):
        pos = draw(st.integers(0, len(line)))
        op = draw(st.sampled_from(("insert", "delete", "replace", "repeat", "byte")))
        if op == "insert":
            line[pos:pos] = draw(st.sampled_from(BITS))
        elif op == "delete":
            del line[pos:pos + draw(st.integers(1, 12))]
        elif op == "replace":
            line[pos:pos + draw(st.integers(1, 6))] = draw(st.sampled_from(BITS))
        elif op == "repeat":
            line[pos:pos] = line[pos:pos + draw(st.integers(1, 20))] * draw(st.integers(1, 30))
        else:
            line[pos:pos] = bytes([draw(st.integers(0, 255))])
    return bytes(line)


PREFIXES = st.sampled_from([
    b"", b"Nov 27 10:00:00 mail dovecot: ", b"Nov 27 10:00:00 imap-login: Info: ",
    b"2026-11-27T10:00:00+00:00 mail vpopmail[1]: vchkpw-pop3: ", b"@4000000063b5c2d10a1b2c3d ",
    b"<22>Nov 27 10:00:00 h popper[1]: ", b"Mon Nov 27 10:00:00 2006 [42] ",
    b"dovecot: 2008-10-02 23:34:07 Info: ", b"Feb 30 25:61:61 h x: ", b"@ffffffffffffffffffffffff ",
    b"9999-99-99T99:99:99+99:99 h x: ", b"Nov 27 10:00:00.999999 9999 [1] ",
    b"Jun 23 15:04:06 Info: IMAP(", b"Nov 27 10:00:00 sun imapd[1]: [ID 1 mail.info] "])
LINES = st.one_of(st.binary(max_size=300), st.tuples(PREFIXES, st.binary(max_size=200)).map(
    b"".join), mutated())
CLOCKS = [Clock(SAMPLE_NOW, timezone.utc), Clock(SAMPLE_NOW, None),
          Clock(datetime(1, 1, 2, tzinfo=timezone.utc), timezone.utc),
          Clock(datetime(9999, 12, 30, tzinfo=timezone.utc), timezone.utc)]


# Every format headers.py names (its docstring); docker+FMT wraps any of them.
HEADER_FORMATS = ("rfc3339", "rfc3164", "dovecot-file", "log4j-file", "tai64n", "qpopper-file",
                  "bsd-verbose")


@FUZZ
@given(LINES)
def test_header_parser_never_raises(line):
    header = headers.parse(line)
    if header is None:
        return
    assert header.format.removeprefix("docker+") in HEADER_FORMATS
    assert isinstance(header.message, bytes) and isinstance(header.stamp, bytes)
    assert header.program is None or header.program.isascii()
    for clock in CLOCKS:
        t = clock.time(header)
        assert t is None or t.tzinfo is not None


def check_events(events, lines):
    for e in events:
        assert e.kind in ("login", "logout")
        assert e.ip is None or canonical_ip(e.ip) == e.ip
        if e.kind == "login":
            assert e.protocol in GATE_PROTOCOLS and e.ip is not None
    emitted = {e.ip for e in events if e.ip is not None}
    assert emitted <= written_addresses(lines), (emitted, lines)


@FUZZ
@given(st.lists(LINES, min_size=1, max_size=6))
def test_engine_never_raises_and_emits_only_written_canonical_addresses(lines):
    engine = Engine(PACKS, Clock(SAMPLE_NOW, timezone.utc))
    events = []
    for line in lines:
        events += engine.feed_line(line, ("fuzz", 1))
    check_events(events, lines)


OWN = [p for p in PACKS.packs.values() if p.untagged]


@FUZZ
@given(st.sampled_from(OWN), st.lists(LINES, min_size=1, max_size=4))
def test_engine_on_a_packs_own_file_never_raises(pack, lines):
    engine = Engine(PACKS, Clock(SAMPLE_NOW, timezone.utc))
    own = own_file_rules(pack)
    events = []
    for line in lines:
        events += engine.feed_line(line, ("fuzz", 1), own)
    for e in events:
        assert e.ip is None or canonical_ip(e.ip) == e.ip


@FUZZ
@given(st.lists(st.one_of(mutated(), st.binary(max_size=80)), min_size=1, max_size=8))
def test_bulk_prefilter_never_drops_a_line_with_an_event(lines):
    lines = [line.replace(b"\n", b" ") for line in lines]
    block = b"\n".join(lines)
    scanned = SCANNER.scan(block)
    assert scanned == REGEX_SCANNER.scan(block)     # _fastscan (when built) and the regex
    picked = {i for i, _, _ in scanned[2]}
    engine = Engine(PACKS, Clock(SAMPLE_NOW, timezone.utc))
    for i, line in enumerate(lines):
        if engine.match_line(line) is not None or engine.cut_mark is not None:
            assert i in picked, line


@pytest.fixture
def no_time(monkeypatch):
    """Every regex match that runs hits its time limit (the matcher reads regex_timeout at each
    call; a pattern that fails on its literal prefix returns before any check, so the time-outs
    raised are recorded here to compare with what the engine counted)."""
    raised = []

    def recording(method):
        def wrapper(self, *args):
            try:
                return method(self, *args)
            except TimeoutError:
                raised.append(args[0])
                raise
        return wrapper

    monkeypatch.setattr(match, "regex_timeout", 0)
    monkeypatch.setattr(match.Dispatch, "match_or_ignored",      # (what the engine calls)
                        recording(match.Dispatch.match_or_ignored))
    monkeypatch.setattr(match.Dispatch, "ignored", recording(match.Dispatch.ignored))
    return raised


@settings(max_examples=EXAMPLES // 3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(st.sampled_from(REAL_LINES), mutated()), min_size=1,
                      max_size=6))
def test_a_line_that_hits_the_time_limit_gives_no_event_and_is_counted(no_time, lines):
    no_time.clear()
    engine = Engine(PACKS, Clock(SAMPLE_NOW, timezone.utc))
    events = []
    for line in lines:
        events += engine.feed_line(line, ("fuzz", 1))
    assert events == []
    assert engine.stats.timeouts == len(no_time)


def test_every_real_line_times_out_cleanly(no_time):
    """Every sample line of every pack, with every match timing out: no event, each time-out
    counted, and every sample that gives a login is among the lines that timed out."""
    engine = Engine(PACKS, Clock(SAMPLE_NOW, timezone.utc))
    logins = 0
    for pack in PACKS.packs.values():
        for sample in pack.samples:
            lines = [x.encode("utf-8", "surrogateescape")
                     for x in sample.get("lines") or [sample["line"]]]
            before = len(no_time)
            for line in lines:
                assert engine.feed_line(line) == []
            if isinstance(sample.get("expect"), dict):
                logins += 1
                assert len(no_time) > before, lines
    assert engine.stats.timeouts == len(no_time) and logins > 100
