"""Bulk pre-filter for large inputs: one regex pass over a block of lines, in C, finds the lines
any pack could care about; the rest are only counted.

A line is passed over only when it has a standard syslog header (RFC 3339 or RFC 3164, the
same shape headers.py's fast path reads) whose program tag no loaded pack covers; every other
line (a covered tag, any other header, no header) is handed back for the full per-line path.
So the pre-filter can only save work, never lose a login: when in doubt, a line is picked.

The same pre-filter is written in C (_fastscan.c, built when a compiler is there; setup.py):
Scanner uses it when it is built and every covered tag is a plain word, a "PREFIX*" or a
"*SUFFIX" glob of tag characters, and the regex below otherwise. tests/test_scan.py holds
the two to the same answers.
"""
from __future__ import annotations

import re
from collections import Counter
from itertools import compress, count
from operator import itemgetter

from .headers import HOST as _HOST, PRI, STAMP_3164, STAMP_3339, TAG as _TAG, TAG_CHARS as _TAG_CHARS
from .match import PackSet

try:
    from . import _fastscan
except ImportError:             # built without a C compiler: the regex below does the same
    _fastscan = None

_g0, _g1 = itemgetter(0), itemgetter(1)


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


def _tag_tests(packs: PackSet) -> tuple[bytes, list[bytes]]:
    """(a regex, tried at the start of the tag, matching a whole covered tag; lookbehinds,
    tried at its end, for globs "*SUFFIX"). Exact tags and "PREFIX*" globs share one trie;
    "*SUFFIX" globs become fixed-width lookbehinds after the tag, so no glob makes the engine
    backtrack through every tag of the log."""
    exact, prefixes, suffixes, others = set(), set(), set(), set()
    exact.update(tag.encode() for tag in packs.aliases)     # a site's own tags (instance_name)
    for pack in packs.packs.values():
        for prog in pack.programs:
            head, tail = prog[:-1], prog[1:]
            if not any(c in prog for c in "*?"):
                exact.add(prog.encode())
            elif prog.endswith("*") and not any(c in head for c in "*?"):
                prefixes.add(head.encode())
            elif prog.startswith("*") and not any(c in tail for c in "*?"):
                suffixes.add(tail.encode())
            else:
                others.add(_glob_regex(prog))
    heads = []
    if exact:
        heads.append(_trie(sorted(exact)) + rb"(?=[\[:])")
    if prefixes:
        heads.append(_trie(sorted(prefixes)) + _TAG_CHARS + rb"*+(?=[\[:])")
    heads += [g + rb"(?=[\[:])" for g in sorted(others)]
    by_length: dict[int, list[bytes]] = {}
    for suffix in suffixes:
        by_length.setdefault(len(suffix), []).append(re.escape(suffix))
    behinds = [rb"(?<=(" + b"|".join(sorted(alts)) + rb"))" for _, alts in sorted(by_length.items())]
    return b"|".join(heads), behinds


def build_pattern(packs: PackSet) -> tuple[re.Pattern, int]:
    """The pattern, and how many line-capturing groups it ends with."""
    heads, behinds = _tag_tests(packs)
    tests = ([rb"(?:(?=(?:" + heads + rb"))()|)"] if heads else []) + \
        [rb"(?:" + b + rb"()|)" for b in behinds]
    # A lookahead reads the header: groups 1 and 2 capture the first character of the stamp
    # (which format), then each tag test ends in an empty capture, set when the tag is covered
    # (seen from its start, or a "*SUFFIX" glob seen from its end; the lookbehinds capture too,
    # hence the counting). Then the line is consumed, and captured (the last groups) only when
    # one of those flags is set: lines no pack covers are not copied.
    flag_groups, extra = [], 0
    for t in tests:
        g = re.compile(t).groups
        flag_groups.append(2 + extra + g)           # the empty "()" is each test's last group
        extra += g
    consume = rb"[^\n]*"
    for flag in reversed(flag_groups):
        consume = rb"(?(" + str(flag).encode() + rb")([^\n]*)|" + consume + rb")"
    regex = re.compile(
        rb"(?m)^(?=" + PRI + rb"(?:(\d)\d{3}" + STAMP_3339[5:] + rb"|([A-Z])" + STAMP_3164[5:]
        + rb") " + _HOST + rb" " + b"".join(tests[:1] if heads else []) + _TAG + rb"+"
        + b"".join(tests[1:] if heads else tests) + rb"(?:\[\d{1,10}\])?: )" + consume
        + rb"|^[^\n]*")
    return regex, len(flag_groups)


def _plain_tag_words(packs: PackSet) -> tuple[tuple, tuple, tuple] | None:
    """(exact tags, "PREFIX*" prefixes, "*SUFFIX" suffixes) when every covered tag is one of
    those shapes made of tag characters (what _fastscan reads); None otherwise."""
    plain = re.compile(_TAG_CHARS + rb"*")
    exact, prefixes, suffixes = set(packs.aliases), set(), set()
    for pack in packs.packs.values():
        for prog in pack.programs:
            head, tail = prog[:-1], prog[1:]
            if not any(c in prog for c in "*?"):
                exact.add(prog)
            elif prog.endswith("*") and not any(c in head for c in "*?"):
                prefixes.add(head)
            elif prog.startswith("*") and not any(c in tail for c in "*?"):
                suffixes.add(tail)
            else:
                return None
    words = [sorted(w.encode() for w in group) for group in (exact, prefixes, suffixes)]
    if not all(plain.fullmatch(w) for group in words for w in group):
        return None
    # A tag is at most 64 characters (headers.TAG): a longer word matches none
    exact, prefixes, suffixes = (tuple(w for w in group if len(w) <= 64) for group in words)
    return exact, prefixes, suffixes


class Scanner:
    def __init__(self, packs: PackSet, use_c: bool = True):
        """`use_c`: take _fastscan where it can answer (False: always the regex; the tests
        compare the two)."""
        self.pattern, lines = build_pattern(packs)
        total = self.pattern.groups
        self.covered_groups = [itemgetter(k) for k in range(total - lines, total)]
        self._words = _plain_tag_words(packs) if use_c and _fastscan is not None else None
        if self._words is not None:
            self.scan = self._scan_c

    def _scan_c(self, block: bytes) -> tuple[int, Counter, list[tuple[int, bytes, bool]]]:
        n, n3339, n3164, picked = _fastscan.scan(block, *self._words)
        formats = Counter()
        if n3339:
            formats["rfc3339"] = n3339
        if n3164:
            formats["rfc3164"] = n3164
        return n, formats, picked

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
        picked = []
        for getter in self.covered_groups:
            picked += compress(count(), map(getter, res))
        odd = n - n3339 - n3164
        if odd:
            picked_odd = [i for i, t in enumerate(res) if not t[0] and not t[1]]
        else:
            picked_odd = []
        if not picked and not picked_odd:
            return n, formats, []
        out = [(i, b"".join(res[i][-len(self.covered_groups):]), True) for i in picked]
        if picked_odd:
            lines = block.split(b"\n")
            out += [(i, lines[i], False) for i in picked_odd]
        if picked_odd or len(self.covered_groups) > 1:
            out.sort()                          # log order: one list per tag test above
        return n, formats, out
