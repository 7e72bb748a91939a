"""The bulk pre-filter may pass over a line only when the per-line path would find no rules
for it: checked against PackSet.rules_for on every shipped tag and on random ones."""
import random

import pytest

from logkey.parse.headers import parse
from logkey.parse.packfiles import load_packs
from logkey.parse.scan import Scanner, _fastscan

PACKS = load_packs()
SCANNER = Scanner(PACKS)
SHIPPED = sorted({p.replace("*", "x").replace("?", "y") for pack in PACKS.packs.values()
                  for p in pack.programs})


def tags():
    rnd = random.Random(7)
    out = list(SHIPPED)
    for tag in SHIPPED:
        out += [tag + "x", "x" + tag, tag[:-1], tag + "/imap", "a/" + tag, tag.upper()]
    pieces = ["imap", "pop3", "imaps", "pop3s", "/", ".", "-", "d", "cyrus", "sloti", "perdition",
              "qpopper", "x", "ssl", "login", "dovecot", "postfix", "smtpd", "9", "_"]
    for _ in range(3000):
        out.append("".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 5))))
    return [t for t in out if t and (t[0].isalnum() or t[0] == "_") and len(t) <= 64]


@pytest.mark.parametrize("stamp", [b"2026-11-27T10:00:00.1+00:00 mail", b"Nov  7 10:00:00 mail",
                                   b"<22>Nov 17 10:00:00 mail"])
def test_pre_filter_agrees_with_dispatch(stamp):
    lines = []
    for tag in tags():
        for pid in (b"", b"[42]"):
            lines.append(stamp + b" " + tag.encode() + pid + b": hello")
    block = b"\n".join(lines)
    n, formats, picks = SCANNER.scan(block)
    assert n == len(lines)
    picked = {i for i, _, _ in picks}
    for i, line in enumerate(lines):
        header = parse(line)
        assert header is not None
        covered = bool(PACKS.rules_for(header.program))
        assert covered == (i in picked), line


def test_odd_lines_are_always_picked():
    lines = [b"", b"garbage", b"Nov 27 10:00:00 imap-login: Info: Login: x",
             b"@4000000063b5c2d10a1b2c3d tcpserver: pid 1 from 1.2.3.4",
             b"2026-11-28T00:28:55 imap(x dovecot: pop3-login: Login: rip=1.2.3.4)<1><s>: Info: x",
             b"Mon Nov 27 10:00:00 2006 [42] POP login", b"Nov 27 10:00:00 mail postfix/smtpd[1]: x"]
    n, formats, picks = SCANNER.scan(b"\n".join(lines))
    assert sorted(i for i, _, _ in picks) == [0, 1, 2, 3, 4, 5]
    assert formats == {"rfc3164": 1}


def test_picked_lines_keep_log_order():
    # an exact tag (dovecot) and a "*SUFFIX" glob (x/pop3) are separate tag tests: their lines
    # must still come back in log order (connect/login joins and logouts depend on it)
    lines = [b"Nov 27 10:00:0%d mail %s[1]: m" % (i, tag) for i, tag in
             enumerate([b"x/pop3", b"dovecot", b"x/pop3", b"dovecot", b"postfix/smtpd"])]
    n, formats, picks = SCANNER.scan(b"\n".join(lines))
    assert [i for i, _, _ in picks] == [0, 1, 2, 3]


# -- the pre-filter in C (_fastscan.c) against the regex -----------------------------------
REGEX_SCANNER = Scanner(PACKS, use_c=False)
needs_c = pytest.mark.skipif(SCANNER.scan == REGEX_SCANNER.scan or _fastscan is None,
                             reason="logkey.parse._fastscan is not built (no C compiler)")


def hostile_headers():
    """Lines around every edge of the standard header: each piece cut, doubled, widened past
    its limit or replaced by a near miss, on covered and other tags, with random mutations."""
    stamps = [b"2026-11-27T10:00:00", b"2026-11-27T10:00:00Z", b"2026-11-27T10:00:00.1+00:00",
              b"2026-11-27T10:00:00.123456789-0530", b"2026-11-27T10:00:00.1234567890+00:00",
              b"2026-11-27T10:00:00.+00:00", b"2026-11-27T10:00:00+00:0", b"2026-11-27T10:00:00+0:00",
              b"2026-11-27T10:00:00+00:000", b"2026-11-27T10:00:00Zx", b"2026-11-27 10:00:00",
              b"Nov  7 10:00:00", b"Nov 17 10:00:00", b"Nov 7 10:00:00", b"Nov 7  10:00:00",
              b"Nov 177 10:00:00", b"nov 17 10:00:00", b"NOV 17 10:00:00", b"Nov 17 10:00:0",
              b"Nov x7 10:00:00", b"<13>Nov 17 10:00:00", b"<1234>Nov 17 10:00:00", b"<>Nov 17 10:00:00",
              b"<13>2026-11-27T10:00:00Z", b"<13 >Nov 17 10:00:00", b"<13>"]
    hosts = [b"mail", b"(none)", b"(none)x", b"a" * 255, b"a" * 256, b"", b"m_x.example-1",
             b"host:1", b"h(x)", b"192.0.2.1"]
    tags = [b"dovecot", b"dovecotx", b"dovecot" + b"x" * 60, b"x" * 64, b"x" * 65, b"postfix/smtpd",
            b"cyrus/imap", b"a/imap", b"/imap", b"x/pop3s", b"perdition.imaps", b"perdition",
            b"qpopper", b"qpopperd", b"in.qpopper", b"_x", b".dovecot", b"-imapd", b"imapd",
            b"imap d", b"dove@cot", b"pop3+", b""]
    pids = [b"", b"[1]", b"[1234567890]", b"[12345678901]", b"[]", b"[x]", b"[1", b"[1]x"]
    tails = [b": m", b":", b": ", b":m", b" : m", b"", b": Login: user=<u>, rip=192.0.2.9"]
    rnd = random.Random(17)
    lines = []
    for _ in range(6000):
        line = (rnd.choice(stamps) + rnd.choice([b" ", b"  ", b""]) + rnd.choice(hosts) + b" "
                + rnd.choice(tags) + rnd.choice(pids) + rnd.choice(tails))
        if rnd.random() < 0.3:
            i = rnd.randrange(len(line) + 1)
            line = line[:i] + bytes([rnd.randrange(256)]) + line[i + 1:]
        lines.append(line.replace(b"\n", b" "))
    return lines


@needs_c
@pytest.mark.parametrize("cut", [1, 7, 100, 6000])
def test_c_pre_filter_agrees_with_the_regex(cut):
    lines = hostile_headers()
    for start in range(0, len(lines), cut):
        block = b"\n".join(lines[start:start + cut])
        assert SCANNER.scan(block) == REGEX_SCANNER.scan(block)


@needs_c
@pytest.mark.parametrize("block", [b"", b"\n", b"\n\n", b"x\n", b"\nx", b"\r", b"a\r\nb"])
def test_c_pre_filter_agrees_on_empty_and_edge_blocks(block):
    assert SCANNER.scan(block) == REGEX_SCANNER.scan(block)


@needs_c
def test_c_pre_filter_agrees_on_every_tag_test_and_odd_line():
    lines = [b"Nov 27 10:00:0%d mail %s[1]: m" % (i % 10, tag.encode())
             for i, tag in enumerate(tags())]
    lines += [b"2026-11-27T10:00:00.1+00:00 mail " + tag.encode() + b": m" for tag in tags()]
    block = b"\n".join(lines)
    assert SCANNER.scan(block) == REGEX_SCANNER.scan(block)


def test_tag_shapes_the_c_pre_filter_cannot_read_go_to_the_regex():
    from logkey.parse.scan import _plain_tag_words
    assert _plain_tag_words(PACKS) is not None                 # the shipped packs: all plain
    assert _plain_tag_words(PACKS.with_aliases({"mx?": "dovecot"})) is None
    assert _plain_tag_words(PACKS.with_aliases({"mx 2": "dovecot"})) is None


def test_worker_events_come_back_as_they_were_made():
    # bulk.py sends a worker's events to the parent as tuples with the time as a timestamp
    # and its tzinfo: the parent must get the same events, times, offsets and folds back
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    from logkey.events import Event
    from logkey.parse.engine import Stats
    from logkey.parse.fastpath import packed_entry
    from logkey.sources.bulk import _unpacked
    berlin = ZoneInfo("Europe/Berlin")
    times = [None, datetime(2026, 11, 27, 10, 0, 0, 185890, tzinfo=timezone.utc),
             datetime(2026, 11, 27, 10, 0, 0, 999999, tzinfo=timezone(timedelta(hours=5, minutes=30))),
             datetime(2026, 10, 25, 2, 30, 0, 1, tzinfo=berlin),
             datetime(2026, 10, 25, 2, 30, 0, 1, tzinfo=berlin, fold=1),
             datetime(2026, 3, 29, 3, 0, 0, tzinfo=berlin), datetime(1999, 12, 31, 23, 59, 59, 500000)]
    events = [(i, Event("login", "192.0.2.1", "u", "imap", t, "dovecot", "login", "S", "1", None,
                        "mail", "rfc3339"), (("mail", "courier"), True, t) if i % 2 else None)
              for i, t in enumerate(times)] + [(99, None, (("h", "p"), False, None))]
    back = list(_unpacked([(7, [packed_entry(*entry) for entry in events], Stats())]))
    assert [(n, e) for n, e, _ in back] == [(7, events)]
    for (_, event, cut), (_, again, cut_again) in zip(events, back[0][1]):
        if event is not None and event.time is not None:
            assert (again.time.tzinfo, again.time.fold, again.time.utcoffset()) == \
                (event.time.tzinfo, event.time.fold, event.time.utcoffset())


@needs_c
def test_the_watchers_per_line_fast_path_agrees_with_the_regex():
    from datetime import timezone

    from logkey.parse.engine import Engine
    from logkey.parse.headers import Clock
    lines = hostile_headers() + [b"2026-11-27T10:00:00.1+00:00 mail " + t.encode() + b"[1]: m"
                                 for t in tags()]
    results = []
    for use_c in (True, False):
        engine = Engine(PACKS, Clock(None, timezone.utc))
        assert engine._tag_words is not None
        if not use_c:
            engine._tag_words = None
        results.append(([engine.match_line(line) for line in lines], engine.stats))
    assert results[0] == results[1]


@needs_c
def test_c_header_reads_what_the_header_regex_reads():
    from logkey.parse.headers import parse as parse_c, parse_by_regex
    lines = hostile_headers() + [b"Nov 27 10:00:00 mail dovecot[1]: [ID 702911 mail.notice] x",
                                 b"<13>Nov 27 10:00:00 (none) popper[9]: y"]
    seen = 0
    for line in lines:
        a, b = parse_c(line), parse_by_regex(line)
        assert (a is None) == (b is None), line
        if a is not None:
            seen += 1
            assert [getattr(a, k) for k in a.__slots__] == [getattr(b, k) for k in b.__slots__], line
    assert seen > 1000


@needs_c
def test_c_pre_filter_reads_every_glob_shape_and_long_words_as_the_regex():
    long = "y" * 70
    packs = PACKS.with_aliases({"mx2": "dovecot", long: "dovecot", "y" * 64: "dovecot"})
    tagged = [b"Nov 27 10:00:00 mail %s: m" % t for t in
              (b"mx2", b"mx", b"mx22", long.encode(), b"y" * 64, b"y" * 63, b"a/imaps", b"imaps",
               b"perdition.imap", b"perdition.", b"perdition", b"qpopperx", b"x/pop3sx")]
    block = b"\n".join(hostile_headers()[:2000] + tagged)
    c, r = Scanner(packs), Scanner(packs, use_c=False)
    assert c.scan != r.scan
    assert c.scan(block) == r.scan(block)
