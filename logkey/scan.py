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

from .packs import PackSet

_TAG_CHARS = rb"[A-Za-z0-9_./@+-]"
_HOST = rb"[^\s:\[\]]{1,255}"
_TAG = rb"[A-Za-z0-9_]" + _TAG_CHARS + rb"{0,63}"
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


def build_pattern(packs: PackSet) -> re.Pattern:
    tags = []
    for pack in packs.packs.values():
        for prog in pack.programs:
            tags.append(_glob_regex(prog))
    covered = b"|".join(sorted(set(tags), key=len, reverse=True)) or rb"(?!)"
    return re.compile(
        rb"(?m)^(?:<\d{1,3}>)?"
        rb"(?:(\d)\d{3}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?"
        rb"|([A-Z])[a-z]{2} [ \d]?\d \d\d:\d\d:\d\d) " + _HOST +
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
