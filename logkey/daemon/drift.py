"""Format drift: a pack whose server changed its log lines (an upgrade: Dovecot 2.4 reworded
its login line) opens no gate and logs no error. The watcher hears about it here, on the day.

Reads: the engine's near-misses (engine.py `_no_match`: a line of a program the pack covers,
with a login-like word, that matched no rule and no known non-event; the same lines
`logkey dry-run` lists as near-misses) and the logins of each pack, with the watcher's time.
Writes: one warning per pack at most once an hour (DriftAlarm.tick, to the watcher's log;
docs/log-lines.md), and the alarms in the watcher's status (statusfile.py: `drift`), which
`logkey status` shows as a warning and the metrics count (metrics.py).
Trust: advisory: nothing here opens or closes a gate. The example line is a log line, which
holds a user name and an address (the status file is the watcher's own, 0640): it is kept
to EXAMPLE_MAX characters, non-printable characters escaped, and logged as a JSON string.

The rule, per pack: a near-miss read when no login of the pack was read in the QUIET seconds
before it starts an alarm (or adds to it); the next login of the pack ends it. Failures and
other known non-events are not near-misses and never count. A healthy server's odd line
among its logins raises nothing; a server whose every login line changed raises it with the
first such line after an hour without logins, or at once on a watcher just started.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..gates.audit import value
from ..sources.journal import printable

log = logging.getLogger("logkey")

QUIET = 3600.0              # seconds without a login of the pack before a near-miss counts
WARN_EVERY = 3600.0         # seconds: at most one warning per pack
EXAMPLE_MAX = 300           # characters of the example line kept


@dataclass
class PackDrift:
    lines: int = 0                  # near-misses of the alarm now on (0: no alarm)
    since: float | None = None      # when its first one was read (Unix time)
    example: str | None = None      # its first one, "FILE:LINE: program: message"
    total: int = 0                  # near-misses that counted, since the watcher started
    last_login: float | None = None
    warned: float | None = None     # when the last warning was logged


class DriftAlarm:
    def __init__(self):
        self.packs: dict[str, PackDrift] = {}

    def _pack(self, name: str) -> PackDrift:
        return self.packs.setdefault(name, PackDrift())

    def near_miss(self, packs, where, text: str, now: float) -> None:
        """A near-miss of the packs covering its program (engine.near_miss)."""
        for name in packs:
            p = self._pack(name)
            if p.last_login is not None and now - p.last_login < QUIET:
                continue                # logins of the pack are being read: an odd line
            p.total += 1
            p.lines += 1
            if p.since is None:
                p.since = now
                p.example = printable(f"{_where(where)}{text}", EXAMPLE_MAX)

    def login(self, pack: str, now: float) -> None:
        """A login event of the pack: its lines are understood; any alarm ends."""
        p = self._pack(pack)
        p.last_login = now
        p.lines, p.since, p.example = 0, None, None

    def reset(self) -> None:
        """New rules (a reload): the alarms now on were raised by the old ones."""
        for p in self.packs.values():
            p.lines, p.since, p.example = 0, None, None

    def tick(self, now: float) -> None:
        """Log the alarms that have not been logged in the last WARN_EVERY seconds."""
        for name, p in sorted(self.packs.items()):
            if p.lines and (p.warned is None or now - p.warned >= WARN_EVERY):
                p.warned = now
                log.warning("pack %s: %d line(s) of its programs since %s look like logins but "
                            "match no rule, and no %s login was read for an hour before them "
                            "nor since: has the log format changed (a server upgrade)? "
                            "Example: %s. Run logkey dry-run on the log; see "
                            "docs/troubleshooting.md (Format drift)",
                            name, p.lines, _stamp(p.since), name, value(p.example))

    def snapshot(self) -> dict:
        """Per pack: the alarm now on (lines, since, example; lines 0 when none) and the
        total of lines that counted, for the status file and the metrics."""
        return {name: {"lines": p.lines, "since": p.since, "example": p.example,
                       "total": p.total} for name, p in list(self.packs.items()) if p.total}


def _where(where) -> str:
    if not where:
        return ""
    if isinstance(where, tuple):
        return f"{where[0]}:{where[1]}: " if where[1] else f"{where[0]}: "
    return f"{where}: "


def _stamp(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t is not None else "-"
