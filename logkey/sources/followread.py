"""Reading one generation of a followed file into lines (follow.py's reader).

Takes: an open Generation (rotated.py: a plain file read with pread from `scan`, or a
compressed one through its decompressor) and a byte budget. Gives: Line records, appended to
the caller's list in file order, and the generation's position moved past them: `pos` (the
start of the first line not given yet), `scan` (bytes seen), `lineno`, `buf` (the partial last
line, held back until it ends).
Trust: log content is hostile and stays bytes (invalid UTF-8, NUL, CR, megabyte lines); only
  b"\\n" ends a line, one CR before it is dropped, a line over `line_max` is skipped whole and
  given as data=None (the semantics of lines.read_lines), without holding more than line_max
  bytes of it. A damaged compressed file is read up to the damage.
"""
from __future__ import annotations

import logging
import lzma
import time
from dataclasses import dataclass

from .rotated import Generation

log = logging.getLogger("logkey.follow")

BLOCK = 1 << 20            # bytes per read


@dataclass(slots=True)
class Line:
    path: str               # the path as followed (the live name, even when read from a rotated copy)
    lineno: int             # 1-based line number in that file generation; 0 if unknown
    data: bytes | None      # the line without newline; None for a line over line_max (skipped)


def read_generation(g: Generation, path: str, line_max: int, out: list[Line], budget: int) -> int:
    """Complete lines from g.scan to the end of the file (or `budget` bytes) into `out`; the
    bytes read."""
    cap, used = line_max, 0
    while used < budget:
        try:
            chunk = g.chunk(BLOCK)
        except (EOFError, ValueError, lzma.LZMAError) as e:     # a damaged compressed file
            log.warning("%s: %s ends early (%s): read up to there", path, g.name, e)
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


def flush_last_line(g: Generation, path: str, out: list[Line]) -> None:
    """A generation left for good: its unterminated last line, if any, is a line too."""
    if g.skipping or g.buf:
        g.lineno += 1
        line = None if g.skipping else (g.buf[:-1] if g.buf[-1:] == b"\r" else g.buf)
        out.append(Line(path, g.number(g.lineno), line))
        g.pos, g.buf, g.skipping = g.scan, b"", False
