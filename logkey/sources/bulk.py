"""Reading a log in matched blocks, on every core for a large plain file.

Reads: the file (or stdin / gzip stream, then in this process only). Yields, in file order,
one (line count, [(index in block, Event or None, cut mark)], Stats) per block: the stateless
part of the work (pre-filter, header, rules, IP check; parse/fastpath.py in C where it can) is
done here; correlation, which needs log order, is left to the caller. A large plain file is cut at line boundaries into chunks handled by worker
processes; results come back in order, so line numbers and correlation stay exact. Line
references in the Stats are (path, index in block).
"""
from __future__ import annotations

import os

from ..events import unpacked_event, unpacked_time
from ..parse import fastpath, headers, timelimit
from ..parse.engine import Engine, Stats
from ..parse.fastpath import FastPath, packed_entry
from .lines import BLOCK, open_log, read_blocks
from ..parse.scan import Scanner

PARALLEL_MIN_BYTES = 32 << 20
CHUNK_MIN_BYTES = 8 << 20

_worker: tuple[Scanner, Engine] | None = None


def _match_blocks(scanner: Scanner, matcher: Engine, f, cap: int, path: str):
    """(line count, [(index, packed event, packed cut mark)], Stats) per block."""
    fast = FastPath(matcher) if fastpath.available() else None
    for block in read_blocks(f, cap):
        stats = matcher.stats = Stats()
        if block is None:
            stats.lines = stats.too_long = 1
            yield 1, [], stats
            continue
        n, formats, picks = scanner.scan(block)
        stats.lines = n
        stats.bytes = len(block) + 1
        stats.last_time = matcher.line_time(block[block.rfind(b"\n") + 1:].rstrip(b"\r"))
        stats.formats.update(formats)
        if fast is not None:
            yield n, fast.match(picks, path, cap), stats
            continue
        events = []
        for index, line, counted in picks:
            event = matcher.match_picked(line, (path, index), counted, cap)
            if event is not None or matcher.cut_mark is not None:
                events.append(packed_entry(index, event, matcher.cut_mark))
        yield n, events, stats


def _line_start_at(f, pos: int, size: int) -> int:
    """The offset of the first line that starts at or after `pos`."""
    if pos <= 0:
        return 0
    f.seek(pos - 1)
    while True:
        data = f.read(65536)
        if not data:
            return size
        i = data.find(b"\n")
        if i >= 0:
            return f.tell() - len(data) + i + 1


class _Range:
    """A read-only view of bytes [start, end) of an open file."""

    def __init__(self, f, start: int, end: int):
        self.f, self.left = f, end - start
        f.seek(start)

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.f.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        return data


def _unpacked(blocks):
    for n, packed, stats in blocks:
        events = []
        for index, fields, cut in packed:
            if cut is not None:
                cut = (cut[0], cut[1], unpacked_time(cut[2]))
            events.append((index, None if fields is None else unpacked_event(fields), cut))
        yield n, events, stats


def _worker_init(scanner: Scanner, matcher: Engine):
    global _worker
    _worker = (scanner, matcher)
    timelimit.forked_child()


def _match_chunk(args):
    path, start, end, cap = args
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        s0 = _line_start_at(f, start, size)
        e0 = _line_start_at(f, end, size)
        if e0 <= s0:
            return []
        return list(_match_blocks(*_worker, _Range(f, s0, e0), cap, path))


def _is_plain_file(path: str) -> int:
    if path == "-":
        return 0
    try:
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":
                return 0
            return os.fstat(f.fileno()).st_size
    except OSError:
        return 0


def _compile_first_tags(path: str, scanner: Scanner, matcher: Engine) -> None:
    """Compile, before the fork, the rules of the covered tags the file's first block shows:
    once here instead of once in each worker. Tags seen only later are compiled where they
    are met; tags never met (most of the 46 the packs name, on most logs) never are."""
    with open(path, "rb") as f:
        head = f.read(BLOCK)
    _, _, picks = scanner.scan(head[:max(0, head.rfind(b"\n"))])
    for _, line, _ in picks:
        header = headers.parse(line)
        if header is not None and header.program is not None:
            matcher.packs.rules_for(header.program)


def matched_blocks(path: str, scanner: Scanner, matcher: Engine, cap: int,
                   workers: int | None = None):
    """`matcher` is an Engine used for its stateless matching only."""
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    size = _is_plain_file(path)
    if workers < 2 or size < PARALLEL_MIN_BYTES:
        f = open_log(path)
        try:
            yield from _unpacked(_match_blocks(scanner, matcher, f, cap, path))
        finally:
            if path != "-":
                f.close()
        return
    chunk = max(CHUNK_MIN_BYTES, size // (workers * 4), BLOCK)
    jobs = [(path, start, min(size, start + chunk), cap) for start in range(0, size, chunk)]
    import multiprocessing                   # only for large files
    _compile_first_tags(path, scanner, matcher)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_worker_init, initargs=(scanner, matcher)) as pool:
        for blocks in pool.imap(_match_chunk, jobs):
            yield from _unpacked(blocks)
