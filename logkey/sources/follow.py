"""Follow log files: every complete new line once, in order, across rotation, restarts and crashes.

Takes: the paths or globs to follow and the state directory. Gives: Follower, whose read()
returns Line records (followread.py) and whose commit() saves the position after them. This
module ties the parts: followread.py reads one generation's bytes into lines, followstate.py
keeps the saved positions, followwait.py waits for growth (inotify or polling), rotated.py
finds where rotated generations went and seek.py where a first attach begins.

Reads: the followed logs (paths or globs) and their rotated siblings (PATH.N, PATH.N.gz,
  PATH-DATE...; .gz, .bz2 and .xz read, .zst with a zstd module: rotated.py); the state files
  in `state_dir`.
Writes: one small JSON state file per followed log in `state_dir` (followstate.py: temp file,
  fsync, rename, fsync of the directory, so a crash leaves the old state or the new one).
Trust: log content is hostile and stays bytes (followread.py); a partial last line is held
  back until it is completed (or its generation is left); the committed offset never passes it.
Config: line_max (bytes), attach_window (seconds that can still matter: max(window,
  max_session)), rotate_wait (seconds a renamed file is still read after it last grew),
  poll_interval (seconds, when inotify is not available).

Rotation. rename-and-create: the renamed file stays open and is read beside the new one (each
in its own order) until it has not grown for rotate_wait. Whenever the live path is another
generation (renamed and created, or copytruncated: shorter than what was read, or its first
bytes changed), and at a restart, rotated.resolve finds every generation not read yet, oldest
first: the rest of the one logkey was in (same inode, or a copy with the same first bytes,
compressed or not), the later ones from 0, the live file last. Rotated files last written
before now - attach_window are skipped, their lines counted and logged. A missing log is
waited for. First attach without a saved offset: binary search on byte offsets for the first
line whose time is >= now - attach_window, in the rotated files written since then too; a file
that appears later is read from its start.
"""
from __future__ import annotations

import glob
import logging
import os
import time

from .followread import Line, flush_last_line, read_generation
from .followstate import CHAIN_MAX, StateFiles, position, state_key
from .followwait import ChangeWatch
from .rotated import COMPRESSED, Generation, count_rest, open_candidate, resolve
from .seek import first_generations, header_time

log = logging.getLogger("logkey.follow")

READ_MAX = 16 << 20        # bytes per file per read() call; wait() returns at once if more is left
ROTATE_WAIT = 5.0          # seconds a renamed-away file is still read after it last grew


class _Stream:
    """One followed path: its open generations (oldest first; the last one the live file
    unless it is renamed away and not created again yet), the finished ones it remembers, its
    saved state, how to start when it appears."""

    def __init__(self, path: str, seek: bool):
        self.path = path
        self.key = state_key(path)
        self.gens: list[Generation] = []
        self.done: list[dict] = []  # records of finished generations (resolve skips them)
        self.saved: list[dict] | None = None   # state from the last run, used at the first read
        self.started = False        # looked at the file once (seek or resume done)
        self.seek = seek            # no saved state: seek by time (True) or read from 0 (False)
        self.created = time.time()  # (wall clock, as mtimes) when logkey began to follow it
        self.last: dict | None = None       # the position after everything read() returned
        self.committed: dict | None = None
        self.warned = False


class Follower:
    def __init__(self, patterns: list[str], state_dir: str, *, line_max: int = 65536,
                 attach_window: float = 600.0, line_time=None, now=time.time,
                 poll_interval: float = 0.5, rotate_wait: float = ROTATE_WAIT):
        self.patterns = list(patterns)
        self.state_dir = state_dir
        self.line_max = line_max
        self.attach_window = attach_window
        self.line_time = line_time
        self.now = now
        self.poll_interval = poll_interval
        self.rotate_wait = rotate_wait
        self._states = StateFiles(state_dir)
        self._streams: dict[str, _Stream] = {}
        self._more = False
        self._changes = ChangeWatch(self.patterns, self._streams, poll_interval)
        self._scan(first=True)

    # --- the public API ------------------------------------------------------------------
    def read(self) -> list[Line]:
        """Every complete new line of every followed file, in file order (at most READ_MAX
        bytes per file per call). Never raises for missing files."""
        self._changes.events(0)
        if self._changes.rescan_due():
            self._scan()
        self._more = False
        out: list[Line] = []
        for s in list(self._streams.values()):
            try:
                self._read_stream(s, out)
                s.warned = False
            except OSError as e:        # unreadable for now (permissions, I/O): retried next time
                if not s.warned:
                    log.warning("%s: %s", s.path, e)
                    s.warned = True
            if s.gens or s.done:
                s.last = position(self._recs(s))
        return out

    def commit(self) -> None:
        """Save, atomically, the position after everything read() returned. An OSError (disk
        full) leaves the previous state files as they were."""
        changed = False
        for s in self._streams.values():
            if s.last is not None and s.last != s.committed:
                self._states.save(s.path, s.key, s.last)
                s.committed = s.last
                changed = True
        if changed:
            self._states.sync()

    def wait(self, timeout: float, wake: int | list[int] | None = None) -> None:
        """Block until a followed file or directory changes, or `timeout` seconds pass, or
        (when given) a file descriptor in `wake` becomes readable."""
        if self._more or timeout <= 0:
            return
        self._changes.wait(timeout, wake)

    def positions(self) -> dict[str, dict | None]:
        """Each followed path and its position after everything read() returned (the record a
        state file holds: dev, ino, offset, lineno...), None before it was first opened. Safe to
        call from another thread (metrics): it copies, never iterates a live dict."""
        return {s.path: s.last for s in list(self._streams.values())}

    def fileno(self) -> int | None:
        return self._changes.fileno()

    def close(self) -> None:
        for s in self._streams.values():
            for g in s.gens:
                g.close()
            s.gens = []
        self._changes.close()

    # --- files -----------------------------------------------------------------------------
    def _scan(self, first: bool = False) -> None:
        """Add a stream for each path named or matched by a glob (new matches read from 0)."""
        self._changes.scanning()
        for pattern in self.patterns:
            paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for path in paths:
                if path not in self._streams and not path.endswith(COMPRESSED):
                    s = _Stream(path, seek=first and os.path.exists(path))
                    s.saved = self._states.load(s.path, s.key)
                    if s.saved:
                        s.last = s.committed = position(s.saved)
                    self._streams[path] = s
        self._changes.watch()

    # --- reading ---------------------------------------------------------------------------
    def _read_stream(self, s: _Stream, out: list[Line]) -> None:
        budget = READ_MAX
        if s.saved is not None or (not s.gens and not s.started):
            self._open(s)
        for _ in range(8):              # a few generation switches per call at most
            if self._first_bytes(s):
                continue
            for g in list(s.gens):
                if not g.rotated and self._truncated(g):    # before reading the new content
                    break
                budget -= read_generation(g, s.path, self.line_max, out, budget)
                if budget <= 0:
                    self._more = True
                    return
            self._drained(s, out)
            if not self._rotation(s):
                return

    def _finish(self, s: _Stream, g: Generation, out: list[Line]) -> None:
        """Leave a generation for good: its unterminated last line, if any, is a line too."""
        flush_last_line(g, s.path, out)
        s.done.append(g.record("done"))
        del s.done[:-CHAIN_MAX]
        g.close()
        s.gens.remove(g)

    def _drained(self, s: _Stream, out: list[Line]) -> None:
        """Leave the rotated generations whose writer is done: a compressed one at its end, a
        renamed one once it has not grown for rotate_wait seconds."""
        now = time.monotonic()
        for g in [g for g in s.gens if g.rotated]:
            if g.stream is not None:
                if g.eof:
                    self._finish(s, g, out)
            elif now - g.grew >= self.rotate_wait and g.size() <= g.scan:
                self._finish(s, g, out)

    def _rotation(self, s: _Stream) -> bool:
        """After reading: True if the live file is another generation now (renamed and
        created, or copytruncated), with every generation between added to s.gens."""
        live = s.gens[-1] if s.gens and not s.gens[-1].rotated else None
        try:
            st = os.stat(s.path)
        except FileNotFoundError:
            st = None                   # renamed away, the new one not created yet: wait
        truncated = live is not None and self._truncated(live)
        if not truncated:
            if st is None:
                return False
            if live is not None and (st.st_dev, st.st_ino) == (live.dev, live.ino):
                return False
            if live is None and s.gens and not self._unknown(s, st):
                return False
        extra = []
        if truncated:                   # its content now starts again: the rest is in a copy
            extra = [dict(live.record("resume"), head=live.head)]   # (head: never saved)
            live.close()
            s.gens.remove(live)
        elif live is not None:
            live.rotated, live.grew = True, time.monotonic()
        added = self._catch_up(s, extra)
        if truncated and not added[1]:
            log.warning("%s was truncated and no rotated copy starts as it did: lines written "
                        "after offset %d before the truncation may be lost", s.path,
                        extra[0]["offset"])
        return bool(added[0]) or truncated

    def _first_bytes(self, s: _Stream) -> bool:
        """The live file was empty when opened and has content now: if it was copytruncated
        meanwhile, what was in it before is in a copy no fingerprint can name (an empty file
        has none), so look for generations not read yet before reading it. True if some were
        added."""
        live = s.gens[-1] if s.gens and not s.gens[-1].rotated else None
        if live is None or live.fp_len != 0 or live.scan != 0 or os.fstat(live.fd).st_size == 0:
            return False
        added, _ = self._catch_up(s, [])
        live.same_start()               # its fingerprint from now on
        return bool(added)

    def _unknown(self, s: _Stream, st) -> bool:
        """The live path names a file none of the open generations is."""
        return all((st.st_dev, st.st_ino) != (g.dev, g.ino) for g in s.gens)

    def _recs(self, s: _Stream) -> list[dict]:
        return s.done + [g.record("open") for g in s.gens]

    def _catch_up(self, s: _Stream, extra: list[dict], each=False):
        """Open every generation not read yet (rotated.resolve), oldest first, the live file
        last: (how many, whether the `extra` generations were all found in some file; with
        `each`, a list saying it for each)."""
        recs = self._recs(s) + extra
        todo, skipped, found = resolve(s.path, recs, self.now() - self.attach_window)
        for c, offset in skipped:
            log.warning("%s: %s skipped from byte %d: last written before the %gs that can "
                        "still matter (%d line(s))", s.path, c.name, offset,
                        self.attach_window, count_rest(c, offset))
        n = 0
        for c, rec in todo:
            g = open_candidate(c, rec, rec.get("since") if rec else None)
            if g is None:
                continue
            if g.rotated:
                g.grew = time.monotonic()
                if rec is None or rec.get("offset"):
                    log.info("%s: reading rotated %s from offset %d", s.path, c.name, g.pos)
            live = s.gens and not s.gens[-1].rotated
            s.gens.insert(len(s.gens) - 1 if live and g.rotated else len(s.gens), g)
            n += 1
        mine = found[len(recs) - len(extra):]
        return n, (mine if each else all(mine))

    @staticmethod
    def _truncated(g: Generation) -> bool:
        """The file got shorter than what was read, or its first bytes changed: copytruncate."""
        return os.fstat(g.fd).st_size < g.scan or not g.same_start()

    def _open(self, s: _Stream) -> None:
        """First look at a stream: resume every saved generation, or seek by time, or from 0."""
        saved, s.saved = s.saved, None
        if saved is not None:
            s.done = [r for r in saved if r["state"] == "done"]
            resume = [r for r in saved if r["state"] != "done"]
            n, found = self._catch_up(s, resume, each=True)
            s.started = True
            if resume and not any(found) and n and os.path.exists(s.path):
                log.warning("%s: the saved position is in no file found: reading the current "
                            "one from 0", s.path)
            return
        try:
            fd = os.open(s.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        s.started = True
        st = os.fstat(fd)
        now = self.now()
        first_generations(s.gens, s.path, fd, st, seek=s.seek, created=s.created,
                          line_time=self.line_time or header_time(now),
                          cutoff=now - self.attach_window, line_max=self.line_max)
        s.seek = False
