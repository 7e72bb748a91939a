"""Property tests over every pack: whatever a client puts into the text it controls (the user
name, a password, its reverse-DNS name), a failed login opens nothing, a successful one yields
its real address or nothing, and every address logkey emits is written in the line after the
program tag.

The lines are the servers' real formats: tests/fixtures/login_templates.yaml holds, per pack,
real lines with the client's text and address as placeholders (checked against the pack's
samples and the captured lines). The client's text is drawn from every delimiter the formats
use, CR, LF, NUL, invalid UTF-8, field names and addresses, and whole success lines of every
pack with another address. For a pack whose logger cuts long messages (`cut:`), the line is cut
as the logger does, and the text is padded so that a cut falls near the injected part.
"""
from __future__ import annotations

import os
import re
from datetime import timezone

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ROOT
from logkey.parse import headers
from logkey.parse.engine import Engine
from logkey.events import canonical_ip
from logkey.parse.headers import Clock
from logkey.parse.packfiles import load_packs
from logkey.parse.packtest import SAMPLE_NOW

PACKS = load_packs()
TEMPLATES = yaml.safe_load((ROOT / "tests" / "fixtures" / "login_templates.yaml").read_text())
REAL = {4: b"198.51.100.7", 6: b"2001:db8::7"}          # the client, by the template's family
EVIL = [b"127.0.0.9", b"203.0.113.66", b"::ffff:203.0.113.66", b"2001:db8::666", b"::1",
        b"10.0.0.1"]
PLACEHOLDER = re.compile(rb"\{(user|text|ip)\}")
# per pack and property (12 packs x 2 x 120: about 15 s); LOGKEY_PROPERTY_EXAMPLES=5000 for a
# deep run by hand
EXAMPLES = int(os.environ.get("LOGKEY_PROPERTY_EXAMPLES", "120"))


def lines_of(template: dict) -> list[str]:
    return template["lines"] if "lines" in template else [template["line"]]


def fill(text: str, values: dict[str, bytes]) -> bytes:
    """One pass, so a placeholder inside a value stays text."""
    return PLACEHOLDER.sub(lambda m: values[m.group(1).decode()], text.encode())


def family(ip: str) -> int:
    return 6 if ":" in ip and canonical_ip(ip) and ":" in canonical_ip(ip) else 4


def cut(line: bytes, cut_at: int | None) -> list[bytes]:
    """The line as a logger that cuts messages at `cut_at` bytes writes it."""
    header = headers.parse(line)
    if not cut_at or header is None or len(header.message) <= cut_at:
        return [line]
    prefix, msg = line[:len(line) - len(header.message)], header.message
    return [prefix + msg[i:i + cut_at] for i in range(0, len(msg), cut_at)]


def feed(lines: list[bytes]):
    engine = Engine(PACKS, Clock(SAMPLE_NOW, timezone.utc))
    events = []
    for line in lines:
        events += engine.feed_line(line)
    return events, engine.stats


_ADDRESS_RUN = re.compile(rb"[0-9A-Fa-f.:]{2,}")


def written_addresses(lines: list[bytes]) -> set[str]:
    """The canonical form of every address literal written after a line's program tag."""
    found = set()
    for line in lines:
        header = headers.parse(line)
        if header is None:
            continue
        for run in _ADDRESS_RUN.findall(header.message):
            for i in range(len(run)):
                for j in range(i + 2, min(len(run), i + 45) + 1):
                    ip = canonical_ip(run[i:j].decode())
                    if ip is not None:
                        found.add(ip)
    return found


def assert_emitted_addresses_are_written(events, lines):
    emitted = {e.ip for e in events if e.ip is not None}
    if emitted:
        written = written_addresses(lines)
        assert emitted <= written, (emitted - written, lines)


# -- what a client types --------------------------------------------------------------------

def _fragments(packs, words: bool = False) -> list[bytes]:
    """The success lines of these packs, their messages and the messages' tails (or, with
    `words`, the messages' words), each carrying another address."""
    out, pieces = set(), set()
    for name in packs:
        for template in TEMPLATES[name]["success"]:
            for text in lines_of(template):
                line = fill(text, {"user": b"x", "text": b"h", "ip": EVIL[1]})
                header = headers.parse(line)
                out.add(line)
                if header is not None:
                    split = header.message.split(b" ")
                    out.add(header.message)
                    out.update(b" ".join(split[i:]) for i in range(1, len(split)))   # tails
                    pieces.update(word + b" " for word in split)
    return sorted(pieces if words else out)


TOKENS = ([bytes([c]) for c in b"<>,=[]()\"' :;`@.-_/\\{}|"] +
          [b"\r", b"\n", b"\x00", b"\t", b"\x7f", b"\xff", b"\xc3", b"\xe9", b"\x80", b"#012"] +
          [b"rip=", b"lip=", b"ip=[", b"ip=[::ffff:", b"user=", b"user=<", b"auth=", b"host=",
           b"host=[", b"port=[", b"Login: ", b"LOGIN, ", b"login success ", b" from ",
           b" at (", b") ", b'status="ok"', b"authenticated - ", b" -- [",
           b"Authentication passed for ", b" logged in", b"->", b"User logged in", b":110",
           b"session=<", b"Info: ", b"pid 4242 from "] +
          EVIL + [b"a", b"b", b"z", b"0", b"1", b"9", b"alice"])
ALL_FRAGMENTS = _fragments(TEMPLATES)


def client_text(pack: str):
    """Token soup (delimiters, field names, addresses and the words of this pack's success
    lines), or soup around a success line or its tail (this pack's, more often than another
    pack's): the injection an attacker would try first."""
    soup = st.lists(st.sampled_from(TOKENS + _fragments([pack], words=True)),
                    max_size=12).map(b"".join)
    own = st.sampled_from(_fragments([pack]))
    other = st.sampled_from(ALL_FRAGMENTS)
    inject = st.tuples(soup, st.one_of(own, own, other), soup).map(b"".join)
    return st.one_of(soup, inject, inject)


def _user_offset(template: dict) -> int:
    """Where {user} (or {text}) starts in the message of the line that carries it."""
    for text in lines_of(template):
        line = fill(text, {"user": b"\x01", "text": b"\x01", "ip": b"192.0.2.1"})
        if b"\x01" in line:
            header = headers.parse(line)
            message = header.message if header is not None else line
            return message.index(b"\x01") if b"\x01" in message else 0
    return 0


@st.composite
def client_values(draw, pack: str, template: dict, cut_at: int | None):
    """{user}, {text}: hostile text; for about half the examples the user name is padded so
    that it reaches past the logger's cut (or 505 bytes) by a few bytes either way."""
    user, text = draw(client_text(pack)), draw(client_text(pack))
    user = user.translate(None, template.get("user_refused", "").encode())
    shift = draw(st.one_of(st.none(), st.integers(-24, 24)))
    if shift is not None:
        user = b"b" * max(0, (cut_at or 505) - _user_offset(template) + shift) + user
    return {"user": user, "text": text}


def build(template: dict, values: dict[str, bytes], cut_at: int | None) -> list[bytes]:
    out = []
    for text in lines_of(template):
        out += cut(fill(text, values), cut_at)
    return out


PROPERTY = settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def draw_case(data, pack: str, kind: str):
    """(address the client has, lines, events) for one drawn template of `kind`."""
    template = data.draw(st.sampled_from(TEMPLATES[pack][kind]))
    cut_at = PACKS.packs[pack].cut_at
    values = data.draw(client_values(pack, template, cut_at))
    values["ip"] = REAL[family(str(template["real"].get("ip", "192.0.2.1")))]
    lines = build(template, values, cut_at)
    events, _ = feed(lines)
    assert_emitted_addresses_are_written(events, lines)
    return canonical_ip(values["ip"].decode()), lines, events


@pytest.mark.parametrize("pack", sorted(TEMPLATES))
@PROPERTY
@given(data=st.data())
def test_failed_login_never_opens(pack, data):
    _, lines, events = draw_case(data, pack, "failure")
    assert [e for e in events if e.kind == "login"] == [], lines


@pytest.mark.parametrize("pack", sorted(TEMPLATES))
@PROPERTY
@given(data=st.data())
def test_success_gives_the_real_ip_or_nothing(pack, data):
    real, lines, events = draw_case(data, pack, "success")
    for e in events:
        assert e.ip in (None, real), (e, lines)


# -- the templates themselves ---------------------------------------------------------------

def real_lines() -> set[bytes]:
    """Every line of every pack's samples and of the captured logs."""
    pool = set()
    for pack in PACKS.packs.values():
        for sample in pack.samples:
            for line in sample.get("lines") or [sample["line"]]:
                pool.add(line.encode("utf-8", "surrogateescape"))
    for path in (ROOT / "tests" / "fixtures" / "captured").glob("*.log"):
        pool.update(path.read_bytes().splitlines())
    return pool


def test_every_pack_has_templates_of_both_kinds():
    assert sorted(TEMPLATES) == sorted(PACKS.packs), \
        "add the new pack's real lines to tests/fixtures/login_templates.yaml"
    for name, entry in TEMPLATES.items():
        assert set(entry) == {"failure", "success"} and entry["failure"] and entry["success"], name
        for template in entry["failure"] + entry["success"]:
            assert set(template) <= {"line", "lines", "real", "user_refused", "why"}, template
            assert ("user_refused" in template) == ("why" in template), template


@pytest.mark.parametrize("pack", sorted(TEMPLATES))
def test_templates_are_real_lines_and_behave_with_their_real_values(pack):
    pool = real_lines()
    for kind in ("failure", "success"):
        for template in TEMPLATES[pack][kind]:
            real = {k: str(v).encode() for k, v in template["real"].items()}
            lines = [fill(text, real) for text in lines_of(template)]
            for line in lines:
                assert line in pool, f"{pack} {kind}: not a sample or captured line: {line!r}"
            assert set(PLACEHOLDER.findall("".join(lines_of(template)).encode())) == \
                {k.encode() for k in real}, f"{pack}: `real` must give every placeholder"
            logins = [e for e in feed(lines)[0] if e.kind == "login"]
            if kind == "failure":
                assert logins == [], (pack, lines)
            else:
                assert [e.ip for e in logins] == [canonical_ip(real["ip"].decode())], lines
                assert logins[0].pack in (pack, "popa3d")     # tcpserver joins popa3d's login
            # with the property's address instead of the real one, the same outcome
            values = {**real, "ip": REAL[family(real.get("ip", b"192.0.2.1").decode())]}
            again = [e.ip for e in feed([fill(t, values) for t in lines_of(template)])[0]
                     if e.kind == "login"]
            assert again == ([] if kind == "failure" else
                             [canonical_ip(values["ip"].decode())]), (pack, template)


def test_cut_simulation_matches_the_captured_courier_cut():
    """The captured courier log holds a 505-byte cut: the template's cut gives the same lines."""
    captured = (ROOT / "tests" / "fixtures" / "captured" / "courier-5.0.13.log").read_bytes()
    lines = captured.splitlines()
    i = next(n for n, line in enumerate(lines) if b"user=bbbbbbbb" in line)
    whole = lines[i] + lines[i + 1][len(b"Nov 28 00:35:38 capture pop3d: "):]
    assert cut(whole, PACKS.packs["courier"].cut_at) == lines[i:i + 2]
