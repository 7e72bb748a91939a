"""The bulk pre-filter may pass over a line only when the per-line path would find no rules
for it: checked against PackSet.rules_for on every shipped tag and on random ones."""
import random

import pytest

from logkey.parse.headers import parse
from logkey.parse.packfiles import load_packs
from logkey.parse.scan import Scanner

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
