"""The rule matches' time limit kept by a CPU timer (parse/timelimit.py): a match that runs
long is stopped and counted as regex's own limit would; short ones never are; the timer is
armed only where it can be, and leaves everything as it found it."""
from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timezone

import pytest

from test_hostile import SLOW_PACK      # its regex backtracks through every split of a's
from logkey.parse import headers, match, timelimit
from logkey.parse.engine import Engine
from logkey.parse.packs import load_pack


@pytest.fixture
def engine(tmp_path) -> Engine:
    (tmp_path / "slow.yaml").write_text(SLOW_PACK)
    packs = match.PackSet([load_pack(tmp_path / "slow.yaml")])
    return Engine(packs, headers.Clock(datetime(2026, 11, 27, tzinfo=timezone.utc), None))


def test_a_long_match_is_stopped_by_the_timer_and_counted(engine):
    slow = b"Nov 27 10:00:00 h slowd: " + b"a" * 60 + b"c 192.0.2.9"
    good = b"Nov 27 10:00:01 h slowd: ab 192.0.2.2"
    with timelimit.cpu_limit():
        assert match.regex_timeout is None                      # the timer keeps the limit
        started = time.process_time()
        assert engine.feed_line(slow) == []
        spent = time.process_time() - started
        events = engine.feed_line(good)
    assert match.regex_timeout == match.MATCH_TIMEOUT
    assert engine.stats.timeouts == 1 and [e.ip for e in events] == ["192.0.2.2"]
    assert match.MATCH_TIMEOUT <= spent < match.MATCH_TIMEOUT + 10 * timelimit.TICK, spent
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    # Ignored after, not back to the default (which ends the process): a late tick is harmless
    assert signal.getsignal(signal.SIGPROF) == signal.SIG_IGN
    os.kill(os.getpid(), signal.SIGPROF)
    with timelimit.cpu_limit():                                 # and it arms again
        assert match.regex_timeout is None
    assert match.regex_timeout == match.MATCH_TIMEOUT


def test_short_matches_are_never_stopped(engine, monkeypatch):
    """Ticks come far more often than matches end (1 ms against a 2 ms limit): a tick that lands
    in one match and the next in another is never taken for one long match."""
    monkeypatch.setattr(timelimit, "TICK", 0.001)
    monkeypatch.setattr(match, "MATCH_TIMEOUT", 0.002)
    line = b"Nov 27 10:00:00 h slowd: " + b"a" * 12 + b"b 192.0.2.9"
    with timelimit.cpu_limit():
        started = time.process_time()
        n = 0
        while time.process_time() - started < 1.0:
            engine.match_line(line)
            n += 1
    assert engine.stats.timeouts == 0 and engine.stats.hits[("slow", "login")] == n


def test_not_armed_off_the_main_thread_or_when_sigprof_is_taken():
    seen = []

    def other():
        with timelimit.cpu_limit():
            seen.append(match.regex_timeout)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [match.MATCH_TIMEOUT]                     # regex's own limit there
    previous = signal.signal(signal.SIGPROF, lambda s, f: None)   # a profiler's, say
    try:
        with timelimit.cpu_limit():
            assert match.regex_timeout == match.MATCH_TIMEOUT
    finally:
        signal.signal(signal.SIGPROF, previous)


def test_nested_blocks_keep_the_timer_until_the_outer_one_ends():
    with timelimit.cpu_limit():
        with timelimit.cpu_limit():
            assert match.regex_timeout is None
        assert match.regex_timeout is None and signal.getitimer(signal.ITIMER_PROF)[1] > 0
    assert match.regex_timeout == match.MATCH_TIMEOUT
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_an_exception_in_the_block_disarms():
    with pytest.raises(KeyError):
        with timelimit.cpu_limit():
            raise KeyError("x")
    assert match.regex_timeout == match.MATCH_TIMEOUT
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_dry_run_workers_keep_the_limit(tmp_path, monkeypatch):
    """A large file is matched in forked workers: each gets the timer again (fork does not pass
    it on), so a slow line there is stopped and counted too."""
    import io

    from logkey.commands import dryrun
    from logkey.sources import bulk
    (tmp_path / "slow.yaml").write_text(SLOW_PACK)
    packs = match.PackSet([load_pack(tmp_path / "slow.yaml")])
    log = tmp_path / "big.log"
    with open(log, "w") as f:
        for i in range(4):
            f.write("".join(f"Nov 27 10:00:00 h other: filler line {n}\n" for n in range(20000)))
            f.write(f"Nov 27 10:00:00 h slowd: {'a' * 60}c 192.0.2.{i + 10}\n")
            f.write(f"Nov 27 10:00:01 h slowd: ab 192.0.2.{i + 20}\n")
    monkeypatch.setattr(bulk, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(bulk, "CHUNK_MIN_BYTES", 1 << 18)
    out = io.StringIO()
    with timelimit.cpu_limit():
        summary = dryrun.run([str(log)], packs,
                             headers.Clock(datetime(2026, 11, 28, tzinfo=timezone.utc), None),
                             window=600, join_window=600, json_out=False, out=out)
    assert summary["timeouts"] == 4 and summary["events"]["login"] == 4, summary
