"""Bytes -> lines, with a cap on line length. Reads: an open binary file (plain, gzip, stdin).

Only b"\\n" ends a line (a CR or NUL inside a line stays in it; one CR before the newline is
dropped). A line longer than the cap is skipped whole, however long, and reported as None so
the caller can count it; memory stays bounded by the cap plus one block.
"""
from __future__ import annotations

import gzip
import sys
from typing import BinaryIO, Iterator

BLOCK = 1 << 20
LINE_MAX = 64 * 1024


def read_blocks(f: BinaryIO, cap: int = LINE_MAX) -> Iterator[bytes | None]:
    """Runs of whole lines (joined by b"\\n", without the last newline), about BLOCK bytes
    each; None stands for one line longer than `cap` that was skipped."""
    buf = b""
    skipping = False
    while True:
        block = f.read(BLOCK)
        if not block:
            break
        data = buf + block if buf else block
        end = data.rfind(b"\n")
        if end < 0:
            buf = b""
            if not skipping:
                if len(data) > cap:
                    skipping = True
                else:
                    buf = data
            continue
        buf = data[end + 1:]
        start = 0
        if skipping:
            skipping = False
            yield None
            start = data.find(b"\n") + 1
        if start <= end:
            yield data[start:end] if start < end else b""
        if len(buf) > cap:
            skipping = True
            buf = b""
    if skipping:
        yield None
    elif buf:
        yield buf


def read_lines(f: BinaryIO, cap: int = LINE_MAX) -> Iterator[bytes | None]:
    """Lines without their newline (one CR before it dropped); None for a too-long line."""
    for block in read_blocks(f, cap):
        if block is None:
            yield None
            continue
        for line in block.split(b"\n"):
            if len(line) > cap:
                yield None
            elif line[-1:] == b"\r":
                yield line[:-1]
            else:
                yield line


def open_log(path: str) -> BinaryIO:
    """A binary file object for PATH ('-' is stdin); gzip is recognised by its magic bytes."""
    if path == "-":
        return sys.stdin.buffer
    f = open(path, "rb")
    if f.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f, mode="rb")
    return f
