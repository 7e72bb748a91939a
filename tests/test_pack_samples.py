"""Every sample of every shipped pack holds, and every rule is exercised by a sample."""
from collections import Counter
from datetime import timezone

import pytest

from logkey.parse.engine import Engine
from logkey.parse.headers import Clock
from logkey.parse.packfiles import load_packs, shipped_dir
from logkey.parse.packtest import SAMPLE_NOW, run_sample

PACKS = load_packs(local_dir=None)
NAMES = sorted(PACKS.packs)


def test_shipped_packs_exist():
    assert {"dovecot", "qpopper", "qmail"} <= set(NAMES), NAMES
    assert len(list(shipped_dir().glob("*.yaml"))) == len(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_sample_holds(name):
    pack = PACKS.packs[name]
    failures = []
    for i, sample in enumerate(pack.samples):
        problem = run_sample(PACKS, sample, name)
        if problem:
            line = sample["lines"][-1] if "lines" in sample else sample["line"]
            failures.append(f"samples[{i}]: {problem}: {line[:160]!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", NAMES)
def test_every_rule_has_a_sample(name):
    pack = PACKS.packs[name]
    hits = Counter()
    for sample in pack.samples:
        engine = Engine(PACKS, Clock(SAMPLE_NOW, timezone.utc))
        for text in sample["lines"] if "lines" in sample else [sample["line"]]:
            engine.feed_line(text.encode("utf-8", "surrogateescape"))
        hits.update(rule for (p, rule) in engine.stats.hits if p == name)
    untested = [r.id for r in pack.rules + pack.untagged if not hits[r.id]]
    assert not untested, f"rules with no sample: {untested}"


@pytest.mark.parametrize("name", NAMES)
def test_every_pack_has_negative_samples(name):
    pack = PACKS.packs[name]
    assert any(s.get("expect") in (None, "none") for s in pack.samples)
    assert all(s.get("source") for s in pack.samples), "every sample says where it came from"
