"""Bulk pre-filter for large inputs: one regex pass over a block of lines, in C, finds the lines
any pack could care about; the rest are only counted.

A line is passed over only when it has a standard syslog header (RFC 3339 or RFC 3164, the
same shape headers.py's fast path reads) whose program tag no loaded pack covers; every other
line (a covered tag, any other header, no header) is handed back for the full per-line path.
So the pre-filter can only save work, never lose a login: when in doubt, a line is picked.
"""
from __future__ import annotations

import re
from collections import Counter
from itertools import compress, count
from operator import itemgetter

from .headers import HOST as _HOST, PRI, STAMP_3164, STAMP_3339, TAG as _TAG, TAG_CHARS as _TAG_CHARS
from .packs import PackSet

_g0, _g1, _g2 = itemgetter(0), itemgetter(1), itemgetter(2)


def _glob_regex(glob: str) -> bytes:
    out = []
    for ch in glob:
        if ch == "*":
            out.append(_TAG_CHARS + b"*")
        elif ch == "?":
            out.append(_TAG_CHARS)
        else:
            out.append(re.escape(ch.encode()))
    return b"".join(out)


def _trie(words: list[bytes]) -> bytes:
    """A regex matching exactly `words`, branching on one byte at a time: the engine tries
    one branch per tag character instead of every covered tag in turn."""
    if words == [b""]:
        return b""
    groups: dict[bytes, list[bytes]] = {}
    end = False
    for w in words:
        if w:
            groups.setdefault(w[:1], []).append(w[1:])
        else:
            end = True
    branches = [re.escape(first) + _trie(sorted(set(rest))) for first, rest in sorted(groups.items())]
    body = b"|".join(branches)
    if end:
        return b"(?:" + body + b")?"
    return body if len(branches) == 1 else b"(?:" + body + b")"


def build_pattern(packs: PackSet) -> re.Pattern:
    exact, globs = [], []
    for pack in packs.packs.values():
        for prog in pack.programs:
            if any(c in prog for c in "*?"):
                globs.append(_glob_regex(prog))
            else:
                exact.append(prog.encode())
    alternatives = ([_trie(sorted(set(exact)))] if exact else []) + sorted(set(globs))
    covered = b"|".join(alternatives) or rb"(?!)"
    # Groups 1 and 2 capture the first character of the stamp only to tell which it is.
    assert STAMP_3339.startswith(rb"\d{4}") and STAMP_3164.startswith(rb"[A-Z][a-z]{2}")
    return re.compile(
        rb"(?m)^" + PRI + rb"(?:(\d)\d{3}" + STAMP_3339[5:] + rb"|([A-Z])" + STAMP_3164[5:] + rb") "
        + _HOST +
        rb" (?:((?:" + covered + rb"))(?=[\[:])|" + _TAG + rb")(?:\[\d{1,10}\])?: [^\n]*"
        rb"|^[^\n]*")


class Scanner:
    def __init__(self, packs: PackSet):
        self.pattern = build_pattern(packs)

    def scan(self, block: bytes) -> tuple[int, Counter, list[tuple[int, bytes, bool]]]:
        """(line count, {format: n} of lines passed over or picked with a fast header,
        [(index in block, line, header_counted)]) for the lines the full path must see."""
        res = self.pattern.findall(block)
        n = len(res)
        n3339 = n - list(map(_g0, res)).count(b"")
        n3164 = n - list(map(_g1, res)).count(b"")
        formats = Counter()
        if n3339:
            formats["rfc3339"] = n3339
        if n3164:
            formats["rfc3164"] = n3164
        picked = list(compress(count(), map(_g2, res)))
        odd = n - n3339 - n3164
        if odd:
            picked_odd = [i for i, (a, b, _) in enumerate(res) if not a and not b]
        else:
            picked_odd = []
        if not picked and not picked_odd:
            return n, formats, []
        lines = block.split(b"\n")
        counted = {i: True for i in picked}
        counted.update((i, False) for i in picked_odd)
        return n, formats, [(i, lines[i], counted[i]) for i in sorted(counted)]
