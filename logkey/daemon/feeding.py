"""Feeding what the watcher read to the parse engines: lines and journal entries in, events
out, each with the source its audit line names (PATH:LINENO, LABEL:CURSOR, the pack).

Takes: the Engines of the running configuration (build.py), the lines, journal batches and
datagram events Sources gives (reading.py), "now".
Gives: (event, source) pairs, lazily, so each event is decided and applied before the next
line is fed (the order of the log lines is the order of the log); the last event of each pack
(`last_events`, for `logkey status` and the metrics); the format drift alarm (drift.py) fed
with each near-miss and each login; one warning per followed file that others can write and
per forgeable login (sources/logtrust.py); at most one warning a minute about lines over the
match time limit.
Trust: events come from the engine (packs linted, IPs canonical). `shift` (watch --as-of)
moves each event's time by that many seconds; nothing else changes an event.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from ..events import LOGIN
from ..sources.logtrust import LogWarnings
from .drift import DriftAlarm

log = logging.getLogger("logkey")

TIMEOUT_WARN_EVERY = 60.0       # at most one warning a minute about lines over the match limit


class Feeder:
    """Lines to events with the engines `install` gave it (again after each reload)."""

    def __init__(self, shift: float = 0.0, now=time.time):
        self.shift = shift                      # seconds added to line times (--as-of)
        self.now = now
        self.engines = None
        self.last_events: dict = {}             # pack -> {kind, time (the line's), seen}
        self.trust = LogWarnings()
        self.trust_checked: set[str] = set()    # paths whose permissions were looked at
        self.drift = DriftAlarm()               # near-misses while a pack reads no login
        self.timeouts_seen = 0                  # match time-outs warned about or pending
        self.timeouts_pending = 0
        self.next_timeout_warning = 0.0

    def install(self, cfg, engines) -> None:
        self.engines = engines
        self.trust.entries = list(cfg.logs)

    def check_file(self, path: str) -> None:
        """Warn once when others can write a followed file."""
        self.trust_checked.add(path)
        warn(self.trust.file(path))

    def lines(self, lines, now: float):
        """(event, source) of each followed line, in order."""
        stats = self.engines.base.stats
        for line in lines:
            if line.data is None:
                stats.too_long += 1
                continue
            engine, own = self.engines.for_path(line.path)
            stats.lines += 1
            if line.path not in self.trust_checked:
                self.check_file(line.path)
            raw = engine.match_line(line.data, (line.path, line.lineno), own)
            if engine.near_miss is not None:
                self.drift.near_miss(*engine.near_miss, now)
            if raw is not None or engine.cut_mark is not None:     # (most lines: neither)
                if raw is not None:             # a login from a forgeable syslog line?
                    warn(self.trust.event(line.path, raw))
                for event in engine.sequence(raw, engine.cut_mark):
                    self._shift(event)
                    source = f"{line.path}:{line.lineno}" if line.lineno else line.path
                    self.seen(event)
                    yield event, source
            if stats.timeouts != self.timeouts_seen:
                self.timed_out(line)

    def journal(self, batches, now: float):
        """(event, source) of each accepted journal entry of Sources.journal_batches."""
        for index, label, read, accepted in batches:
            self.engines.base.stats.lines += read
            engine = self.engines.journals[index][2]
            for where, header, cursor in accepted:
                events = engine.feed_header(header, where)
                if engine.near_miss is not None:
                    self.drift.near_miss(*engine.near_miss, now)
                for event in events:
                    self._shift(event)
                    self.seen(event)
                    yield event, f"{label}:{cursor}"

    def datagrams(self, received):
        """(event, source) of each good datagram event of Sources.datagrams (counted as the
        engine counts events)."""
        for event, source in received:
            if event is None:
                continue
            self.engines.base.stats.events[(event.pack, event.kind)] += 1
            self.seen(event)
            yield event, source

    def _shift(self, event) -> None:
        if self.shift and event.time is not None:
            try:
                event.time += timedelta(seconds=self.shift)
            except OverflowError:   # a stamp near year 1 or 9999: as read (the policy clamps
                pass                # a future time to now and refuses a stale one)

    def seen(self, event) -> None:
        """The last event of each pack, for `logkey status` and the metrics."""
        if event.kind == LOGIN:
            self.drift.login(event.pack, self.now())
        self.last_events[event.pack] = {
            "kind": event.kind, "seen": time.time(),
            "time": event.time.timestamp() if event.time is not None else None}

    def timed_out(self, line) -> None:
        """A line hit the matcher's time limit (no event from it): warn, at most once a
        minute, naming the line and how many there were."""
        total = self.engines.base.stats.timeouts
        if total < self.timeouts_seen:          # a reload started new counts
            self.timeouts_seen = 0
        self.timeouts_pending += total - self.timeouts_seen
        self.timeouts_seen = total
        now = time.monotonic()
        if now >= self.next_timeout_warning:
            where = f"{line.path}:{line.lineno}" if line.lineno else line.path
            log.warning("%s: pattern match over its time limit, line skipped (no event); "
                        "%d such line(s) since the last warning, %d since start",
                        where, self.timeouts_pending, total)
            self.timeouts_pending = 0
            self.next_timeout_warning = now + TIMEOUT_WARN_EVERY

    def close(self) -> None:
        """The time-outs not warned about yet, in one last warning."""
        if self.timeouts_pending:
            log.warning("%d more line(s) skipped over the pattern match time limit since the "
                        "last warning, %d since start", self.timeouts_pending, self.timeouts_seen)
            self.timeouts_pending = 0


def warn(message: str | None) -> None:
    if message:
        log.warning("%s", message)
