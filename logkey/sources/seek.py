"""First attach to a log with no saved offset: find, by the lines' own time stamps, where the
lines that can still matter begin, without reading a large file from the start (a binary
search on byte offsets, then lines in order over the last SEEK_SPAN bytes); and which rotated
generations to read before the live file (first_generations). Reads: the file through pread,
and the rotated siblings' listing and first bytes (rotated.py); pure otherwise.
"""
from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone

from .rotated import FP_LEN, Generation, open_candidate, resolve

log = logging.getLogger("logkey.follow")

BLOCK = 1 << 20            # bytes per read
PROBE_MAX = 1 << 20        # bytes a time probe reads looking for a line with a time
SEEK_SPAN = 64 << 10       # the binary search stops here and reads lines in order
COUNT_MAX = 256 << 20      # first attach further in than this: line numbers are not counted


def header_time(now: float):
    """The default line_time: the time stamp of a line's header (headers.parse), as epoch."""
    from ..parse.headers import Clock, parse
    clock = Clock(datetime.fromtimestamp(now, timezone.utc))

    def line_time(line: bytes) -> float | None:
        header = parse(line)
        stamp = clock.time(header) if header is not None else None
        return stamp.timestamp() if stamp is not None else None
    return line_time



def lines_at(fd: int, start: int, limit: int, line_max: int):
    """(offset, line or None if over line_max) of the complete lines from `start` (a line
    start), reading at most about `limit` bytes."""
    cap, pos, buf, skipping = line_max, start, b"", False
    read_to, stop = start, start + limit
    while read_to < stop:
        chunk = os.pread(fd, SEEK_SPAN, read_to)
        if not chunk:
            return
        read_to += len(chunk)
        if skipping:                # inside a line over the cap: find its end
            i = chunk.find(b"\n")
            if i < 0:
                continue
            yield pos, None
            pos, chunk, skipping = read_to - len(chunk) + i + 1, chunk[i + 1:], False
        buf += chunk
        j = 0
        while (i := buf.find(b"\n", j)) >= 0:
            yield pos + j, (buf[j:i] if i - j <= cap else None)
            j = i + 1
        buf, pos = buf[j:], pos + j
        if len(buf) > cap:
            buf, skipping = b"", True

def _time(fn, line) -> float | None:
    if line is None:
        return None
    try:
        return fn(line)
    except Exception:               # a hostile line must not stop the seek
        return None

def _probe(fd: int, fn, p: int, line_max: int) -> tuple[int, float] | None:
    """The first line with a time starting at or after byte p (within PROBE_MAX bytes)."""
    for off, line in lines_at(fd, line_start(fd, p), PROBE_MAX, line_max):
        t = _time(fn, line)
        if t is not None:
            return off, t
    return None

def attach_point(fd: int, size: int, fn, cutoff: float, line_max: int):
    """(offset, lines before it or None): the first line whose time (`fn`) is >= cutoff, else
    the end; found by a binary search on byte offsets, never reading the file from the start."""
    lo, hi = 0, size
    while hi - lo > SEEK_SPAN:
        mid = (lo + hi) // 2
        r = _probe(fd, fn, mid, line_max)
        if r is not None and r[1] < cutoff:
            lo = max(mid, r[0])     # every line before r[0]'s end is old
        else:
            hi = mid
    start = line_start(fd, lo)
    pos = None
    for off, line in lines_at(fd, start, size - start, line_max):
        t = _time(fn, line)
        if t is not None and t >= cutoff:
            pos = off
            break
    if pos is None:                 # nothing recent: start after the last complete line
        pos = last_line_end(fd, size)
    if pos > COUNT_MAX:             # going live matters more than a line number
        log.info("attached at byte %d of %d (line numbers not counted)", pos, size)
        return pos, None
    lineno = count_lines(fd, pos)
    log.info("attached at byte %d (line %d) of %d", pos, lineno + 1, size)
    return pos, lineno

def line_start(fd: int, p: int) -> int:
    """The start of the first line beginning at or after byte p."""
    while p > 0:
        chunk = os.pread(fd, SEEK_SPAN, p - 1)
        if not chunk:
            return p
        i = chunk.find(b"\n")
        if i >= 0:
            return p + i
        p += len(chunk)
    return 0

def last_line_end(fd: int, size: int) -> int:
    p = size
    while p > 0:
        n = min(BLOCK, p)
        i = os.pread(fd, n, p - n).rfind(b"\n")
        if i >= 0:
            return p - n + i + 1
        p -= n
    return 0

def count_lines(fd: int, end: int) -> int:
    """Newlines before byte `end`, counted in large chunks (about 1 GB/s from the cache)."""
    buf = bytearray(4 * BLOCK)
    view = memoryview(buf)
    count = pos = 0
    while pos < end:
        n = os.preadv(fd, [view[:min(len(buf), end - pos)]], pos)
        if not n:
            break
        count += (buf if n == len(buf) else buf[:n]).count(b"\n")
        pos += n
    return count


def first_generations(gens: list[Generation], path: str, fd: int, st, *, seek: bool,
                      created: float, line_time, cutoff: float, line_max: int) -> None:
    """The first look at a followed path with no saved state: append to `gens`, oldest first,
    the rotated generations that may hold lines not read yet, then the live file (open as `fd`,
    stat `st`). With `seek` (a first attach), those the window covers, each from the first line
    whose time is >= cutoff; else (a file that appeared later) those written since logkey began
    to wait for it (`created`: written, then copied and truncated or renamed, before logkey
    looked), from 0. Never a copy of the live file's start (a copytruncate under way)."""
    head = os.pread(fd, FP_LEN, 0)
    for c, _ in resolve(path, [], cutoff)[0]:
        if c.live or (head and c.head and (head.startswith(c.head) or
                                           c.head.startswith(head))):
            continue
        if not seek and c.st.st_mtime < created:
            continue
        if (g := open_candidate(c, None, None)) is None:
            continue
        if seek and g.stream is None:
            pos, lineno = attach_point(g.fd, c.st.st_size, line_time, cutoff, line_max)
            g.pos = g.scan = pos
            g.lineno, g.numbered = lineno or 0, lineno is not None
        g.grew = time.monotonic()
        gens.append(g)
    if seek and not gens:
        pos, lineno = attach_point(fd, st.st_size, line_time, cutoff, line_max)
        gens.append(Generation(fd, st, pos, lineno or 0, numbered=lineno is not None,
                               name=path))
    else:
        gens.append(Generation(fd, st, 0, 0, name=path))
