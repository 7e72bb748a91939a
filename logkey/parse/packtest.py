"""Run the samples a pack carries (fail2ban-regex's job for logkey packs). Pure.

Each sample is run through a fresh Engine over the whole PackSet, so a line that some other
pack would wrongly claim fails the sample too. The expectation holds for the last line. A rule
that no sample exercises is reported as untested (fail2ban's "Regex has no samples").
"""
from __future__ import annotations

import ipaddress

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .engine import Engine
from .headers import Clock
from .match import PackSet
from .packs import Pack

SAMPLE_NOW = datetime(2026, 11, 28, tzinfo=timezone.utc)


@dataclass
class Failure:
    pack: str
    index: int
    line: str
    problem: str


@dataclass
class PackResult:
    pack: str
    samples: int
    failures: list[Failure] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)     # ids of rules no sample matched


def run_sample(packs: PackSet, sample: dict, pack_name: str,
               hits: Counter | None = None) -> str | None:
    """None when the sample holds, else what went wrong. `hits` counts the pack's rules that
    matched any line of the sample."""
    lines = sample["lines"] if "lines" in sample else [sample["line"]]
    engine = Engine(packs, Clock(SAMPLE_NOW, timezone.utc))
    events = []
    pack = packs.packs.get(pack_name)
    saved = list(pack.proxies) if pack is not None else []
    if pack is not None and "trusted_proxies" in sample:    # the sample's own setting
        pack.proxies[:] = [ipaddress.ip_network(n, strict=False) for n in sample["trusted_proxies"]]
    try:
        for text in lines:
            events = engine.feed_line(text.encode("utf-8", "surrogateescape"))
        events = events + engine.flush()        # a logout held for a login that never came
    finally:
        if pack is not None:
            pack.proxies[:] = saved
    if hits is not None:
        hits.update(rule for (p, rule) in engine.stats.hits if p == pack_name)
    expect = sample.get("expect")
    if expect in (None, "none", "ignored"):
        if events:
            e = events[0]
            return f"expected no event, got {e.kind} ip={e.ip} user={e.user} ({e.pack}/{e.rule})"
        if expect == "ignored" and not engine.stats.ignored:
            return ("expected a known non-event (an ignore: regex), got "
                    + ("a near-miss" if engine.stats.near_misses else "a line no rule looked at"))
        return None
    if not events:
        why = ""
        if engine.stats.rejected_examples:
            why = f" ({engine.stats.rejected_examples[-1][1]})"
        elif engine.stats.unparsed:
            why = " (header not recognised)"
        elif engine.stats.not_pop_imap:
            why = " (protocol is not pop3/imap)"
        elif engine.stats.timeouts:
            why = " (match timed out)"
        return f"expected {expect.get('kind')} ip={expect.get('ip')}, got no event{why}"
    e = events[0]
    if e.pack != pack_name:
        return f"the event came from pack {e.pack!r} ({e.rule}), not {pack_name!r}"
    for key in ("kind", "ip", "user", "protocol", "session"):
        if key in expect and getattr(e, key) != (None if expect[key] is None else str(expect[key])):
            return f"{key}: expected {expect[key]!r}, got {getattr(e, key)!r} ({e.pack}/{e.rule})"
    return None


def check_pack(packs: PackSet, pack: Pack) -> PackResult:
    """Every sample of `pack`, and every rule of it matched by at least one sample."""
    result = PackResult(pack.name, len(pack.samples))
    hits: Counter = Counter()
    for i, sample in enumerate(pack.samples):
        problem = run_sample(packs, sample, pack.name, hits)
        if problem:
            line = sample["lines"][-1] if "lines" in sample else sample["line"]
            result.failures.append(Failure(pack.name, i, line, problem))
    result.untested = [r.id for r in pack.rules + pack.untagged if not hits[r.id]]
    return result
