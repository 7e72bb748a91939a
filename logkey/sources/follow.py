"""Follow log files: every complete new line once, in order, across rotation, restarts and crashes.

Reads: the followed logs (paths or globs) and their rotated siblings (PATH.N, PATH.N.gz,
  PATH-DATE...; .gz, .bz2 and .xz read, .zst with a zstd module: rotated.py); the state files
  in `state_dir`.
Writes: one small JSON state file per followed log in `state_dir`: the newest generation's
  record (dev, inode, offset, line number, fingerprint of the first bytes, first-seen mtime)
  and, in "chain", every generation still being read and the last ones finished; named by a
  hash of the path; temp file, fsync, rename, fsync of the directory, so a crash leaves the old
  state or the new one, never none.
Trust: log content is hostile and stays bytes (invalid UTF-8, NUL, CR, megabyte lines); only
  b"\\n" ends a line, one CR before it is dropped, a line over `line_max` is skipped whole and
  reported as data=None (the semantics of lines.read_lines). A partial last line is held back
  until it is completed (or its generation is left); the committed offset never passes it.
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

import fnmatch
import glob
import hashlib
import json
import logging
import lzma
import os
import re
import select
import time
from dataclasses import dataclass

from ..atomic import write_atomic
from .rotated import COMPRESSED, FP_LEN, Generation, count_rest, open_candidate, resolve
from .seek import attach_point, header_time

log = logging.getLogger(__name__)

BLOCK = 1 << 20            # bytes per read
READ_MAX = 16 << 20        # bytes per file per read() call; wait() returns at once if more is left
RESCAN = 5.0               # seconds between glob rescans with no inotify event
ROTATE_WAIT = 5.0          # seconds a renamed-away file is still read after it last grew
CHAIN_MAX = 48             # finished generations remembered (so none is read twice)
STATE_MAX = 1 << 17        # bytes of a state file read at most
_STATE_TEMP = re.compile(r"\.[0-9a-f]{32}\.json\.[0-9a-f]{12}\.tmp")   # write_atomic's
_WATCH_FLAGS = ("MODIFY", "CREATE", "MOVED_TO", "MOVED_FROM", "DELETE", "CLOSE_WRITE", "ATTRIB")


@dataclass(slots=True)
class Line:
    path: str               # the path as followed (the live name, even when read from a rotated copy)
    lineno: int             # 1-based line number in that file generation; 0 if unknown
    data: bytes | None      # the line without newline; None for a line over line_max (skipped)


class _Stream:
    """One followed path: its open generations (oldest first; the last one the live file
    unless it is renamed away and not created again yet), the finished ones it remembers, its
    saved state, how to start when it appears."""

    def __init__(self, path: str, seek: bool):
        self.path = path
        self.key = hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        self.gens: list[Generation] = []
        self.done: list[dict] = []  # records of finished generations (resolve skips them)
        self.saved: list[dict] | None = None   # state from the last run, used at the first read
        self.started = False        # looked at the file once (seek or resume done)
        self.seek = seek            # no saved state: seek by time (True) or read from 0 (False)
        self.created = time.time()  # (wall clock, as mtimes) when logkey began to follow it
        self.last: dict | None = None       # the position after everything read() returned
        self.committed: dict | None = None
        self.warned = False


def _position(chain: list[dict]) -> dict:
    """A stream's position: the newest generation's record, with every known one in "chain"."""
    return {**chain[-1], "chain": chain}


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
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        self._remove_stale_temps()
        self._streams: dict[str, _Stream] = {}
        self._more = False
        self._rescan_at = 0.0
        self._ino = None
        self._wds: dict[int, str] = {}
        try:
            from . import inotify as inotify_simple  # its interface, from the stdlib (inotify.py)
            self._ino = inotify_simple.INotify(nonblocking=True)
            self._fl = inotify_simple.flags
            self._mask = 0
            for name in _WATCH_FLAGS:
                self._mask |= getattr(self._fl, name)
        except (ImportError, OSError) as e:
            log.warning("inotify unavailable (%s); polling every %gs", e, poll_interval)
        self._scan(first=True)

    # --- the public API ------------------------------------------------------------------
    def read(self) -> list[Line]:
        """Every complete new line of every followed file, in file order (at most READ_MAX
        bytes per file per call). Never raises for missing files."""
        self._events(0)
        if self._ino is None or time.monotonic() >= self._rescan_at:
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
                s.last = _position(self._recs(s))
        return out

    def commit(self) -> None:
        """Save, atomically, the position after everything read() returned. An OSError (disk
        full) leaves the previous state files as they were."""
        changed = False
        for s in self._streams.values():
            if s.last is not None and s.last != s.committed:
                rec = {"path": os.path.abspath(s.path), **s.last}
                self._write_state(s.key, json.dumps(rec, sort_keys=True).encode())
                s.committed = s.last
                changed = True
        if changed:
            fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def wait(self, timeout: float, wake: int | list[int] | None = None) -> None:
        """Block until a followed file or directory changes, or `timeout` seconds pass, or
        (when given) a file descriptor in `wake` becomes readable."""
        if self._more or timeout <= 0:
            return
        wakes = [] if wake is None else [wake] if isinstance(wake, int) else list(wake)
        if self._ino is None:
            timeout = min(timeout, self.poll_interval)
            if not wakes:
                time.sleep(timeout)
            else:
                select.select(wakes, [], [], timeout)
            return
        if self._unwatched():
            timeout = min(timeout, self.poll_interval)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not wakes:
                if self._events(max(1, int(left * 1000))):
                    return
                continue
            ino = self._ino.fileno()
            ready = select.select(wakes + [ino], [], [], left)[0]
            if any(fd != ino for fd in ready) or (ready and self._events(0)):
                return

    def positions(self) -> dict[str, dict | None]:
        """Each followed path and its position after everything read() returned (the record a
        state file holds: dev, ino, offset, lineno...), None before it was first opened. Safe to
        call from another thread (metrics): it copies, never iterates a live dict."""
        return {s.path: s.last for s in list(self._streams.values())}

    def fileno(self) -> int | None:
        return self._ino.fileno() if self._ino is not None else None

    def close(self) -> None:
        for s in self._streams.values():
            for g in s.gens:
                g.close()
            s.gens = []
        if self._ino is not None:
            self._ino.close()
            self._ino = None

    # --- files and watches -----------------------------------------------------------------
    def _scan(self, first: bool = False) -> None:
        """Add a stream for each path named or matched by a glob (new matches read from 0)."""
        self._rescan_at = time.monotonic() + RESCAN
        for pattern in self.patterns:
            paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for path in paths:
                if path not in self._streams and not path.endswith(COMPRESSED):
                    s = _Stream(path, seek=first and os.path.exists(path))
                    s.saved = self._load_state(s)
                    if s.saved:
                        s.last = s.committed = _position(s.saved)
                    self._streams[path] = s
        self._watch()

    def _dirs(self) -> set[str]:
        dirs = {os.path.dirname(os.path.abspath(p)) for p in self._streams}
        for pattern in self.patterns:
            d = os.path.dirname(os.path.abspath(pattern))
            if not glob.has_magic(d):
                dirs.add(d)
        return dirs

    def _watch(self) -> None:
        if self._ino is None:
            return
        for d in self._dirs() - set(self._wds.values()):
            try:
                self._wds[self._ino.add_watch(d, self._mask)] = d
            except OSError:
                pass                    # not there yet: wait() polls until it is

    def _unwatched(self) -> bool:
        self._watch()
        return bool(self._dirs() - set(self._wds.values()))

    def _events(self, timeout_ms: int) -> bool:
        """Read inotify events; True if one concerns a followed file or a new match."""
        if self._ino is None:
            return False
        fl = self._fl
        relevant = False
        try:
            events = self._ino.read(timeout=timeout_ms)
        except OSError:
            return False
        for ev in events:
            if ev.mask & fl.Q_OVERFLOW:
                relevant = True
                self._rescan_at = 0.0
                continue
            if ev.mask & fl.IGNORED:
                self._wds.pop(ev.wd, None)
                continue
            d = self._wds.get(ev.wd)
            if d is None:
                continue
            full = os.path.join(d, ev.name)
            if ev.mask & (fl.CREATE | fl.MOVED_TO):
                self._rescan_at = 0.0
            for s in self._streams.values():
                if full.startswith(os.path.abspath(s.path)):
                    relevant = True     # the file itself or a rotated sibling
                    break
            else:
                if any(fnmatch.fnmatch(full, os.path.abspath(p)) for p in self.patterns):
                    relevant = True
        return relevant

    # --- state files -------------------------------------------------------------------------
    def _load_state(self, s: _Stream) -> list[dict] | None:
        """The saved generations of a stream (oldest first), None when there is no state."""
        name = os.path.join(self.state_dir, s.key + ".json")
        try:
            with open(name, "rb") as f:
                rec = json.loads(f.read(STATE_MAX))
            if not isinstance(rec, dict) or rec.get("path") != os.path.abspath(s.path):
                raise ValueError("another file's state")
            chain = rec.get("chain", [rec])
            if not isinstance(chain, list) or not chain or len(chain) > CHAIN_MAX * 2:
                raise ValueError("bad chain")
            return [_checked(r) for r in chain]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            log.warning("state file %s for %s unreadable (%s): treated as no saved offset",
                        name, s.path, e)
            return None

    def _remove_stale_temps(self) -> None:
        """State temp files of a follower killed while writing one (.KEY.json.HEX.tmp): only
        that name pattern, the name itself (a symlink is never followed)."""
        try:
            names = [n for n in os.listdir(self.state_dir) if _STATE_TEMP.fullmatch(n)]
        except OSError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(self.state_dir, name))
            except OSError:
                pass
        if names:
            log.info("%s: %d stale temp file(s) of a state write that died removed",
                     self.state_dir, len(names))

    def _write_state(self, key: str, data: bytes) -> None:
        # (commit() syncs the directory once for all the files it wrote)
        write_atomic(os.path.join(self.state_dir, key + ".json"), data, mode=0o640,
                     sync_dir=False)

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
                budget -= self._read_gen(s, g, out, budget)
                if budget <= 0:
                    self._more = True
                    return
            self._drained(s, out)
            if not self._rotation(s):
                return

    def _read_gen(self, s: _Stream, g: Generation, out: list[Line], budget: int) -> int:
        """Complete lines from g.scan to the end of the file (or `budget` bytes) into `out`."""
        cap, path, used = self.line_max, s.path, 0
        while used < budget:
            try:
                chunk = g.chunk(BLOCK)
            except (EOFError, ValueError, lzma.LZMAError) as e:     # a damaged compressed file
                log.warning("%s: %s ends early (%s): read up to there", s.path, g.name, e)
                g.eof = True
                break
            if not chunk:
                break
            g.scan += len(chunk)
            used += len(chunk)
            if g.skipping:              # inside a line over the cap: find its end
                i = chunk.find(b"\n")
                if i < 0:
                    continue
                g.skipping = False
                g.lineno += 1
                out.append(Line(path, g.number(g.lineno), None))
                g.pos = g.scan - len(chunk) + i + 1
                chunk = chunk[i + 1:]
            data = g.buf + chunk if g.buf else chunk
            end = data.rfind(b"\n")
            if end >= 0:
                n = g.lineno
                for line in data[:end].split(b"\n"):
                    n += 1
                    if len(line) > cap:
                        out.append(Line(path, g.number(n), None))
                    else:
                        out.append(Line(path, g.number(n),
                                        line[:-1] if line[-1:] == b"\r" else line))
                g.lineno = n
                g.pos += end + 1
                data = data[end + 1:]
            g.buf = data
            if len(data) > cap:
                g.buf, g.skipping = b"", True
        if used and g.rotated:
            g.grew = time.monotonic()
        return used

    def _finish(self, s: _Stream, g: Generation, out: list[Line]) -> None:
        """Leave a generation for good: its unterminated last line, if any, is a line too."""
        if g.skipping or g.buf:
            g.lineno += 1
            line = None if g.skipping else (g.buf[:-1] if g.buf[-1:] == b"\r" else g.buf)
            out.append(Line(s.path, g.number(g.lineno), line))
            g.pos, g.buf, g.skipping = g.scan, b"", False
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
        fn, cutoff = self.line_time or header_time(now), now - self.attach_window
        # Rotated files may hold lines not read yet: on a first attach, those the window
        # covers; for a file that appeared later, those written since logkey began to wait
        # for it (written, then copied and truncated or renamed, before logkey looked). Oldest
        # first, never a copy of the live file's start (a copytruncate under way).
        head = os.pread(fd, FP_LEN, 0)
        for c, _ in resolve(s.path, [], cutoff)[0]:
            if c.live or (head and c.head and (head.startswith(c.head) or
                                               c.head.startswith(head))):
                continue
            if not s.seek and c.st.st_mtime < s.created:
                continue
            if (g := open_candidate(c, None, None)) is None:
                continue
            if s.seek and g.stream is None:
                pos, lineno = attach_point(g.fd, c.st.st_size, fn, cutoff, self.line_max)
                g.pos = g.scan = pos
                g.lineno, g.numbered = lineno or 0, lineno is not None
            g.grew = time.monotonic()
            s.gens.append(g)
        if s.seek and not s.gens:
            pos, lineno = attach_point(fd, st.st_size, fn, cutoff, self.line_max)
            s.gens.append(Generation(fd, st, pos, lineno or 0, numbered=lineno is not None,
                                     name=s.path))
        else:
            s.gens.append(Generation(fd, st, 0, 0, name=s.path))
        s.seek = False


def _checked(r) -> dict:
    """One saved generation record, checked (ValueError if not one of ours)."""
    state = {k: r[k] for k in ("dev", "ino", "offset", "lineno", "fp_len")}
    if not all(type(v) is int and v >= 0 for v in state.values()):
        raise ValueError("a field is not a non-negative integer")
    if not isinstance(r["fp"], (str, type(None))) or (r["fp"] is None and r["fp_len"]):
        raise ValueError("bad fingerprint")
    since = r.get("since")
    if since is not None and not isinstance(since, (int, float)):
        raise ValueError("bad since")
    return {**state, "fp": r["fp"], "numbered": r.get("numbered", True) is not False,
            "since": since, "state": "done" if r.get("state") == "done" else "resume"}
