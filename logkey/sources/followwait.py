"""Waiting for a followed log to grow (follow.py's waiting): inotify watches on the followed
files' directories, or polling every poll_interval seconds when inotify is not available.

Takes: the follower's path patterns (paths or globs) and its followed paths (a live
collection: the Follower's dict of streams, read by key). Gives: wait() returning when one of
them (or a rotated sibling, or a new match of a glob) changes, a timeout passes, or a caller's
file descriptor becomes readable; and rescan_due(), when the globs should be listed again (a
file was created or moved in, the inotify queue overflowed, or RESCAN seconds passed).
Reads: inotify events (inotify.py, the stdlib's ctypes; no file content). A directory that does
not exist yet is polled until it does, then watched.
"""
from __future__ import annotations

import fnmatch
import glob
import logging
import os
import select
import time
from collections.abc import Collection

log = logging.getLogger("logkey.follow")

RESCAN = 5.0               # seconds between glob rescans with no inotify event
_WATCH_FLAGS = ("MODIFY", "CREATE", "MOVED_TO", "MOVED_FROM", "DELETE", "CLOSE_WRITE", "ATTRIB")


class ChangeWatch:
    """The watches of one Follower (or, without inotify, its polling)."""

    def __init__(self, patterns: list[str], followed: Collection[str], poll_interval: float):
        self.patterns = patterns
        self.followed = followed
        self.poll_interval = poll_interval
        self._rescan_at = 0.0
        self._ino = None
        self._wds: dict[int, str] = {}
        try:
            from .. import inotify as inotify_simple  # its interface, from the stdlib (logkey/inotify.py)
            self._ino = inotify_simple.INotify(nonblocking=True)
            self._fl = inotify_simple.flags
            self._mask = 0
            for name in _WATCH_FLAGS:
                self._mask |= getattr(self._fl, name)
        except (ImportError, OSError) as e:
            log.warning("inotify unavailable (%s); polling every %gs", e, poll_interval)

    def rescan_due(self) -> bool:
        """Time to list the globs again (always, when polling)."""
        return self._ino is None or time.monotonic() >= self._rescan_at

    def scanning(self) -> None:
        """The globs are being listed: the next listing is due in RESCAN seconds, or at an
        event that may mean a new file."""
        self._rescan_at = time.monotonic() + RESCAN

    def wait(self, timeout: float, wake: int | list[int] | None = None) -> None:
        """Block until a followed file or directory changes, or `timeout` seconds pass, or
        (when given) a file descriptor in `wake` becomes readable."""
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
                if self.events(max(1, int(left * 1000))):
                    return
                continue
            ino = self._ino.fileno()
            ready = select.select(wakes + [ino], [], [], left)[0]
            if any(fd != ino for fd in ready) or (ready and self.events(0)):
                return

    def fileno(self) -> int | None:
        return self._ino.fileno() if self._ino is not None else None

    def close(self) -> None:
        if self._ino is not None:
            self._ino.close()
            self._ino = None

    def _dirs(self) -> set[str]:
        dirs = {os.path.dirname(os.path.abspath(p)) for p in self.followed}
        for pattern in self.patterns:
            d = os.path.dirname(os.path.abspath(pattern))
            if not glob.has_magic(d):
                dirs.add(d)
        return dirs

    def watch(self) -> None:
        """Watch the directory of every followed path and pattern not watched yet."""
        if self._ino is None:
            return
        for d in self._dirs() - set(self._wds.values()):
            try:
                self._wds[self._ino.add_watch(d, self._mask)] = d
            except OSError:
                pass                    # not there yet: wait() polls until it is

    def _unwatched(self) -> bool:
        self.watch()
        return bool(self._dirs() - set(self._wds.values()))

    def events(self, timeout_ms: int) -> bool:
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
            for path in self.followed:
                if full.startswith(os.path.abspath(path)):
                    relevant = True     # the file itself or a rotated sibling
                    break
            else:
                if any(fnmatch.fnmatch(full, os.path.abspath(p)) for p in self.patterns):
                    relevant = True
        return relevant
