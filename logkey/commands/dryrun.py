"""`logkey dry-run`: read logs, report what logkey would see, change nothing.

One module, as each command in commands/ is one: reading the files through the engine and the
summary it prints (human, or JSON Lines) are one report, and the engine it drives is parse/'s.

Reads: the files named (plain, .gz, or '-' for stdin). Writes: the report on `out` (human or
JSON Lines), a progress line on a terminal's stderr, and on stderr one warning per file that
others can write or whose logins come from forgeable syslog lines (logtrust.py). Trust: events
are what the lines say, before any gate policy; the gates shown use only the window.
"""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime

from ..sources import journal, journalread
from ..parse.correlate import LOGOUT_HOLD
from ..parse.engine import Engine, Stats
from ..errors import LogkeyError
from ..events import LOGIN, LOGOUT
from ..gates.replay import WindowGates
from ..parse.headers import Clock
from ..sources.bulk import matched_blocks
from ..sources.lines import open_log, read_lines
from ..parse.scan import Scanner
from ..parse.match import PackSet

PROGRESS_MIN_BYTES = 16 << 20


class DryRunError(LogkeyError):
    """One line for the user: a file that cannot be read."""


class _Progress:
    """A progress bar on a terminal's stderr, for large inputs only (a line count where the
    size is unknown: stdin, .gz)."""

    def __init__(self, paths, stream):
        self.stream = stream
        self.total = 0
        for p in paths:
            try:
                with open(p, "rb") as f:
                    if f.read(2) == b"\x1f\x8b":
                        self.total = None
                        break
                self.total += os.path.getsize(p)
            except (OSError, TypeError):
                self.total = None
                break
        size = self.total if self.total is not None else PROGRESS_MIN_BYTES
        self.enabled = stream.isatty() and size >= PROGRESS_MIN_BYTES
        self.next_at = 0.0

    def update(self, path, lines, done_bytes):
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + 0.25
        if self.total:
            pct = min(100, done_bytes * 100 // self.total)
            self.stream.write(f"\r[{'#' * (pct // 4):<25}] {pct:3d}%  {lines:,} lines  "
                              f"{path[-30:]}")
        else:
            self.stream.write(f"\r{path[-50:]}: {lines:,} lines")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()


def _why_unreadable(path) -> str:
    try:
        open(path, "rb").close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return "cannot be read"


def _own_file_blocks(path, matcher, own_rules, line_max):
    """--own-file: every line goes through the pack's untagged rules; same shape as
    bulk.matched_blocks."""
    f = open_log(path)
    try:
        lines = read_lines(f, line_max)
        while True:
            stats = matcher.stats = Stats()
            events, n, last = [], 0, None
            for line in lines:
                stats.lines += 1
                if line is None:
                    stats.too_long += 1
                else:
                    stats.bytes += len(line) + 1
                    last = line
                    event = matcher.match_line(line, (path, n), own_rules)
                    if event is not None or matcher.cut_mark is not None:
                        events.append((n, event, matcher.cut_mark))
                n += 1
                if n >= 4096:
                    break
            if last is not None:
                stats.last_time = matcher.line_time(last)
            if n:
                yield n, events, stats
            if n < 4096:
                return
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _warn(err, message) -> None:
    if message:
        err.write(f"logkey: warning: {message}\n")


def _later(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _event_json(path, lineno, e) -> str:
    return json.dumps({
        "type": "event", "file": path, "line": lineno, "event": e.kind, "pack": e.pack,
        "protocol": e.protocol, "user": e.user, "ip": e.ip,
        "time": e.time.isoformat() if e.time else None})


def run(paths: list[str], packs: PackSet, clock: Clock, *, at: datetime | None = None,
        window: float, join_window: float, logout_hold: float = LOGOUT_HOLD,
        json_out: bool, out, err=sys.stderr, line_max: int = 65536, own_rules=None,
        journals=(), warnings=None) -> dict:
    """Read `paths`, then each journal source ((source, expectations, packs), journal.py), write
    the report to `out`, return the summary. The gates shown are those open at `at` (--now),
    else at the time of the last line read. `warnings`: a logtrust.LogWarnings, whose messages
    go to `err`."""
    engine = Engine(packs, clock, join_window, logout_hold=logout_hold)
    stats = engine.stats
    # Replayed history: each event is judged at its own time; only the window applies.
    gates = WindowGates(window)
    on_event = gates.on_event
    progress = _Progress(paths, err)
    lineno = 0
    last_time: datetime | None = None
    write = out.write
    scanner = Scanner(packs) if own_rules is None else None
    matcher = Engine(packs, clock, join_window)
    for path in paths:
        if os.path.isdir(path) or (path != "-" and not os.access(path, os.R_OK)):
            raise DryRunError(f"{path}: " + ("is a directory" if os.path.isdir(path)
                                              else _why_unreadable(path)))
        lineno = 0
        if warnings is not None:
            _warn(err, warnings.file(path))
        try:
            if scanner is None:
                blocks = _own_file_blocks(path, matcher, own_rules, line_max)
            else:
                blocks = matched_blocks(path, scanner, matcher, line_max)
            for n, events, block_stats in blocks:
                base = lineno
                stats.merge(block_stats, lambda w: (w[0], base + w[1] + 1))
                last_time = _later(last_time, block_stats.last_time)
                for index, event, cut_mark in events:
                    if warnings is not None and event is not None:
                        message = warnings.event(path, event)
                        if message:
                            _warn(err, message)
                    for e in engine.sequence(event, cut_mark):
                        on_event(e)
                        t = e.time
                        if t is not None and (last_time is None or t > last_time):
                            last_time = t
                        if json_out:
                            write(_event_json(path, base + index + 1, e) + "\n")
                lineno += n
                progress.update(path, lineno, stats.bytes)
        except BrokenPipeError:
            raise
        except (OSError, EOFError) as exc:        # unreadable, or a truncated .gz
            raise DryRunError(f"{path}: line {lineno + 1}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    progress.close()
    journal_stats = []
    for source, exps, subset in journals:
        jstats, jlast = _journal(source, exps, Engine(subset, clock, join_window, shared=engine),
                                 gates, line_max, write if json_out else None)
        journal_stats.append((journal.label(source), jstats))
        last_time = _later(last_time, jlast)
    for e in engine.flush():        # logouts held for a login that never came: no IP
        if json_out:                # (reported at the last line read)
            write(_event_json(paths[-1] if paths else "journal", lineno, e) + "\n")
    at = at or last_time            # gates open at --now, else at the last line's time
    open_gates = [] if at is None else gates.open_at(at.timestamp())
    summary = _summary(stats, paths, at, open_gates)
    if journals:
        summary["journal"] = {name: j.summary() for name, j in journal_stats}
    if json_out:
        write(json.dumps(summary) + "\n")
    else:
        _human(summary, stats, out)
        for name, j in journal_stats:
            _human_journal(name, j, out)
    return summary


def _journal(source, exps, engine, gates, line_max, write):
    """Every entry of one journal source (journalctl without --follow): trusted ones through
    the engine, the others counted. (JournalStats, time of the last event)."""
    reader = journalread.JournalReader(source, exps, follow=False, attach_window=None)
    jstats, last, name = journal.JournalStats(), None, reader.label
    try:
        while True:
            entries = reader.read()
            if not entries:
                break
            engine.stats.lines += len(entries)
            for where, header, _ in journal.accepted(entries, exps, jstats, name, line_max):
                for e in engine.feed_header(header, where):
                    gates.on_event(e)
                    last = _later(last, e.time)
                    if write is not None:
                        write(_event_json(name, where[1], e) + "\n")
    finally:
        reader.close()
    return jstats, last


def _summary(stats, paths, at, open_gates) -> dict:
    hits: dict[str, dict[str, int]] = {}
    for (pack, rule), n in sorted(stats.hits.items()):
        hits.setdefault(pack, {})[rule] = n
    events = {LOGIN: 0, LOGOUT: 0}
    per_pack: dict[str, dict[str, int]] = {}
    for (pack, kind), n in sorted(stats.events.items()):
        if kind in events:
            events[kind] += n
            per_pack.setdefault(pack, {})[kind] = n
    return {
        "type": "summary", "files": len(paths), "lines": stats.lines,
        "events": events, "events_by_pack": per_pack, "rule_hits": hits,
        "formats": dict(sorted(stats.formats.items())),
        "unparsed": stats.unparsed, "too_long": stats.too_long, "timeouts": stats.timeouts,
        "rejected_ips": stats.rejected_ips, "refused_lines": stats.refused_lines,
        "not_pop_imap": stats.not_pop_imap, "ignored": stats.ignored,
        "cut_fragments": stats.cut_fragments,
        "near_misses": stats.near_misses,
        "at": at.isoformat() if at else None,
        "open_gates": [{"ip": g.key, "until": _until(g.expires, at.tzinfo), "user": g.user,
                        "protocol": g.protocol} for g in open_gates],
    }


def _until(expires: float, tz) -> str:
    try:
        return datetime.fromtimestamp(expires, tz).isoformat()
    except (OverflowError, ValueError, OSError):    # a login stamped in year 9999
        return datetime.max.replace(tzinfo=tz).isoformat()


def _human_journal(name, j, out) -> None:
    s = j.summary()
    out.write(f"Journal {name}: {s['entries']} entries read, {s['accepted']} accepted\n"
              f"  refused: {s['refused']} (trusted fields match no expectation: forged, or "
              f"another process)\n"
              f"  unsafe: {s['unsafe']} (MESSAGE with a line break, CR, NUL or several values)   "
              f"too long: {s['too_long']}   malformed: {s['malformed']}\n")
    for where, text in j.refused_examples:
        out.write(f"  {_where(where)}: {text}\n")
    if s["refused"] > len(j.refused_examples):
        out.write(f"  ... {s['refused'] - len(j.refused_examples)} more\n")


def _where(w):
    return f"{w[0]}:{w[1]}" if w else "-"


def _human(s: dict, stats, out) -> None:
    p = out.write
    p(f"Lines read: {s['lines']} in {s['files']} file(s)\n")
    p("Header formats:\n")
    for fmt, n in s["formats"].items():
        p(f"  {fmt:<14} {n}\n")
    p(f"  {'unparsed':<14} {s['unparsed']}\n")
    p(f"Events: {s['events'][LOGIN]} login, {s['events'][LOGOUT]} logout\n")
    for pack, rules in s["rule_hits"].items():
        p(f"  {pack}:\n")
        for rule, n in rules.items():
            p(f"    {rule:<28} {n}\n")
    p(f"Too long lines: {s['too_long']}   match time-outs: {s['timeouts']}   "
      f"known non-events: {s['ignored']}   not POP3/IMAP: {s['not_pop_imap']}\n")
    if s["cut_fragments"]:
        p(f"Cut fragments: {s['cut_fragments']} (the rest of a long line the logger cut; "
          "never an event)\n")
    p(f"Rejected: {s['rejected_ips']} IP(s) not a literal address, "
      f"{s['refused_lines']} line(s) with a repeated or missing field\n")
    for where, reason in stats.rejected_examples:
        p(f"  {_where(where)}: {reason}\n")
    p(f"Near-misses: {s['near_misses']} (lines of a covered program that look like a login "
      f"but matched no rule)\n")
    for where, text in stats.near_miss_lines:
        p(f"  {_where(where)}: {text}\n")
    if s["near_misses"] > len(stats.near_miss_lines):
        p(f"  ... {s['near_misses'] - len(stats.near_miss_lines)} more\n")
    p(f"Gates open at {s['at'] or '-'}: {len(s['open_gates'])}\n")
    for g in s["open_gates"]:
        p(f"  {g['ip']:<40} until {g['until']}  {g['protocol'] or '-'} {g['user'] or '-'}\n")
