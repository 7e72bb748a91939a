"""Reading a log in scanned blocks, on every core for a large plain file.

Reads: the file (or stdin / gzip stream, then in this process only). Yields, in file order,
(line count, {format: n}, [(index, line, header_counted)], too_long) per block; see scan.py.
A large plain file is cut at line boundaries into chunks scanned by worker processes; the
results come back in order, so line numbers and correlation stay exact.
"""
from __future__ import annotations

import multiprocessing
import os
from collections import Counter

from .lines import BLOCK, open_log, read_blocks
from .scan import Scanner

PARALLEL_MIN_BYTES = 32 << 20
CHUNK_MIN_BYTES = 8 << 20

_worker_scanner: Scanner | None = None


def _scan_blocks(scanner: Scanner, f, cap: int):
    for block in read_blocks(f, cap):
        if block is None:
            yield 1, Counter(), [], 1
        else:
            n, formats, picks = scanner.scan(block)
            yield n, formats, picks, 0


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


def _worker_init(scanner: Scanner):
    global _worker_scanner
    _worker_scanner = scanner


def _scan_chunk(args):
    path, start, end, cap = args
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        s0 = _line_start_at(f, start, size)
        e0 = _line_start_at(f, end, size)
        if e0 <= s0:
            return []
        return list(_scan_blocks(_worker_scanner, _Range(f, s0, e0), cap))


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


def scanned_blocks(path: str, scanner: Scanner, cap: int, workers: int | None = None):
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    size = _is_plain_file(path)
    if workers < 2 or size < PARALLEL_MIN_BYTES:
        f = open_log(path)
        try:
            yield from _scan_blocks(scanner, f, cap)
        finally:
            if path != "-":
                f.close()
        return
    chunk = max(CHUNK_MIN_BYTES, size // (workers * 4), BLOCK)
    jobs = [(path, start, min(size, start + chunk), cap) for start in range(0, size, chunk)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_worker_init, initargs=(scanner,)) as pool:
        for blocks in pool.imap(_scan_chunk, jobs):
            yield from blocks
