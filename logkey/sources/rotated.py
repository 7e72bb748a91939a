"""A followed file's generations and where the rotated ones went (follow.py's helpers).

One module because a generation and the search for it are one model: Generation, Candidate and
resolve() share the fingerprint, the decompressors and the rotated names, and the follower uses
them together.

Reads: the rotated siblings of a followed path, in the names logrotate and savelog give them
  (PATH.N, PATH.N.gz, PATH-DATE, PATH-DATE.gz, PATH.0 ...), compressed ones decompressed with
  the standard library (.gz, .bz2, .xz; .zst when a zstd module is importable: Python 3.14's
  compression.zstd or Debian's python3-zstandard), to find every generation between a saved
  position and now.
Trust: file content is bytes and is only compared by its fingerprint (blake2b of the first
  FP_LEN bytes, of the decompressed content for a compressed file); nothing here decides what
  a line means.

A generation is one file content from its first byte: an inode (renamed away by `create`
rotation, it keeps its inode) or a copy (copytruncate, or a compressed copy). A generation is
known by its fingerprint, and a plain file also by its inode. `resolve()` is given what the
follower knows (the generations it has open, the ones it still has to finish, the ones it has
finished, each with the time it first saw the file, `since`) and returns, oldest first, the
files to read and from where: a known unfinished generation from its offset (in whichever
file holds it now: same inode, or same first bytes), an unknown one modified since the
oldest known one was first seen from 0, and the live file last. The order is the files'
mtimes (logrotate, savelog and gzip keep a file's mtime when they rename or compress it).
"""
from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import logging
import lzma
import os
import re
import stat

log = logging.getLogger("logkey.follow")

FP_LEN = 512               # bytes of a file's start that identify it (its fingerprint)
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z")
LISTING_TRIES = 5          # listings of the siblings until two in a row agree (a rotation running)
_NUMBERED = re.compile(r"[.-](\d{1,6})(?:\.[a-zA-Z0-9]{1,4})?$")


def _zstd_open():
    try:
        from compression import zstd          # Python 3.14
        return zstd.open
    except ImportError:
        pass
    try:
        import zstandard                      # Debian: python3-zstandard
    except ImportError:
        return None
    return lambda f: zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)


_OPENERS = {".gz": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
            ".bz2": lambda f: bz2.BZ2File(f, "rb"),
            ".xz": lambda f: lzma.LZMAFile(f, "rb")}
_zstd = _zstd_open()
if _zstd is not None:
    _OPENERS[".zst"] = _zstd


def _fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def compression(name: str) -> str | None:
    """The compressed suffix of a name ('.gz'...), or None for a plain file."""
    return next((ext for ext in COMPRESSED if name.endswith(ext)), None)


class Generation:
    """One open generation of a followed file and the read position in it. A compressed one
    is read through its decompressor, in order only."""
    __slots__ = ("fd", "dev", "ino", "pos", "lineno", "fp", "fp_len", "buf", "skipping", "scan",
                 "rotated", "numbered", "since", "stream", "name", "grew", "eof", "head")

    def __init__(self, fd, st, pos, lineno, fp=None, fp_len=0, rotated=False, numbered=True,
                 since=None, stream=None, name=None):
        self.fd, self.dev, self.ino = fd, st.st_dev, st.st_ino
        self.pos = self.scan = pos      # pos: start of the first unreturned line; scan: bytes seen
        self.lineno = lineno            # lines returned so far in this generation
        self.numbered = numbered        # False: lineno counts from a first attach, not line 1
        self.buf, self.skipping = b"", False   # the partial line after pos (or skipping a long one)
        self.rotated = rotated          # renamed away or a copy: read until its writer is done
        self.since = st.st_mtime if since is None else since   # mtime when first seen
        self.stream, self.name = stream, name
        self.grew = None                # monotonic time it last grew (while rotated)
        self.eof = False                # a compressed one read to its end
        self.head = b""                 # its first bytes, as far as seen (up to FP_LEN)
        self.fp, self.fp_len = fp, fp_len
        if fp is None:
            self.fp_len = -1
            self.same_start()

    def chunk(self, n: int) -> bytes:
        """Up to n bytes at `scan` (b"" at the end for now)."""
        if self.stream is None:
            return os.pread(self.fd, n, self.scan)
        if self.eof:
            return b""
        data = self.stream.read(n)
        if not data:
            self.eof = True
        return data

    def same_start(self) -> bool:
        """False if the file's first bytes are no longer those seen (copytruncate); extends the
        fingerprint while the file is shorter than FP_LEN."""
        if self.stream is not None:
            return True                 # a compressed copy never changes
        if self.fp_len > 0:
            head = os.pread(self.fd, self.fp_len, 0)
            if len(head) < self.fp_len or _fingerprint(head) != self.fp:
                return False
        if self.fp_len < FP_LEN:
            head = os.pread(self.fd, FP_LEN, 0)
            if len(head) > self.fp_len:
                self.fp, self.fp_len, self.head = _fingerprint(head), len(head), head
        return True

    def number(self, n: int) -> int:
        """The line number to report: 0 when this generation's count is unknown (a first
        attach far into a large file does not count the lines it skipped)."""
        return n if self.numbered else 0

    def size(self) -> int:
        return os.fstat(self.fd).st_size if self.stream is None else self.scan

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.close()
            except (OSError, EOFError, ValueError):
                pass
        os.close(self.fd)

    def record(self, state: str = "open") -> dict:
        return {"dev": self.dev, "ino": self.ino, "offset": self.pos, "lineno": self.lineno,
                "fp": self.fp, "fp_len": max(self.fp_len, 0), "numbered": self.numbered,
                "since": self.since, "state": state}


class Candidate:
    """A file that may hold a generation: its name, stat, first bytes (decompressed)."""
    __slots__ = ("name", "st", "head", "ext", "live")

    def __init__(self, name, st, head, ext, live=False):
        self.name, self.st, self.head, self.ext, self.live = name, st, head, ext, live

    def matches(self, rec: dict) -> bool:
        same_inode = self.ext is None and (self.st.st_dev, self.st.st_ino) == (rec["dev"], rec["ino"])
        if rec["fp_len"] == 0:
            return same_inode
        if rec.get("head") and len(self.head) < rec["fp_len"]:    # a short copy: the bytes
            return bool(self.head) and rec["head"].startswith(self.head)   # themselves
        return len(self.head) >= rec["fp_len"] and _fingerprint(self.head[:rec["fp_len"]]) == rec["fp"]

    def rank(self) -> tuple:
        """Tie-break for equal mtimes: an older name first (a higher number, an earlier date)."""
        tail = os.path.basename(self.name)
        m = _NUMBERED.search(tail)
        return (0, -int(m.group(1)), tail) if m else (1, 0, tail)


def _head(name: str, ext: str | None) -> bytes | None:
    try:
        if ext is None:
            with open(name, "rb") as f:
                return f.read(FP_LEN)
        opener = _OPENERS.get(ext)
        if opener is None:
            return None
        with open(name, "rb") as raw, opener(raw) as f:
            return f.read(FP_LEN)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as e:
        log.debug("%s: cannot read its start: %s", name, e)
        return None


def _listing(path: str) -> dict[str, tuple]:
    names = set(glob.glob(glob.escape(path) + ".*") + glob.glob(glob.escape(path) + "-*"))
    names.add(path)
    out = {}
    for name in names:
        try:
            st = os.stat(name)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out[name] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def candidates(path: str) -> list[Candidate]:
    """The live file and its rotated siblings, oldest first (the live one last), from a listing
    that two looks in a row agree on (a rotation may be renaming them right now)."""
    before = _listing(path)
    for _ in range(LISTING_TRIES):
        found = []
        for name in before:
            ext = compression(name)
            try:
                st = os.stat(name)
            except OSError:
                continue
            head = _head(name, ext)
            if head is None:
                if ext is not None and ext not in _OPENERS:
                    log.debug("%s: no module reads %s files here", name, ext)
                continue
            found.append(Candidate(name, st, head, ext, live=name == path))
        after = _listing(path)
        if {n: v[:2] for n, v in after.items()} == {n: v[:2] for n, v in before.items()}:
            break
        before = after
    rotated = sorted((c for c in found if not c.live), key=lambda c: (c.st.st_mtime_ns, c.rank()))
    return rotated + [c for c in found if c.live]


def open_candidate(c: Candidate, rec: dict | None, since: float | None):
    """A Generation for candidate c: from rec's offset when given (a known generation), else
    from 0. None if it cannot be opened (or is no longer what was listed)."""
    try:
        fd = os.open(c.name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (c.st.st_dev, c.st.st_ino):
        os.close(fd)
        return None
    offset, lineno = (rec["offset"], rec["lineno"]) if rec else (0, 0)
    numbered = rec["numbered"] if rec else True
    stream = None
    if c.ext is not None:
        try:
            stream = _OPENERS[c.ext](os.fdopen(os.dup(fd), "rb"))
            left = offset
            while left > 0:
                got = stream.read(min(left, 1 << 20))
                if not got:
                    break
                left -= len(got)
        except (OSError, EOFError, ValueError, lzma.LZMAError) as e:
            log.warning("%s: compressed file unreadable (%s): skipped", c.name, e)
            os.close(fd)
            return None
    fp, fp_len = (rec["fp"], rec["fp_len"]) if rec and rec["fp_len"] else (None, 0)
    if fp is None and stream is not None:
        fp, fp_len = (_fingerprint(c.head), len(c.head)) if c.head else (None, 0)
    g = Generation(fd, st, offset, lineno, fp, fp_len, rotated=not c.live, numbered=numbered,
                   since=since, stream=stream, name=c.name)
    return g


def count_rest(c: Candidate, offset: int) -> int:
    """Complete lines after `offset` in a candidate (for the skipped-lines message)."""
    n = 0
    try:
        with open(c.name, "rb") as raw:
            f = _OPENERS[c.ext](raw) if c.ext else raw
            with f:
                if c.ext:
                    left = offset
                    while left > 0 and (got := f.read(min(left, 1 << 20))):
                        left -= len(got)
                else:
                    f.seek(offset)
                while chunk := f.read(1 << 20):
                    n += chunk.count(b"\n")
    except (OSError, EOFError, ValueError, lzma.LZMAError):
        pass
    return n


def resolve(path: str, recs: list[dict], cutoff: float) -> tuple[list, list, list]:
    """(what to read, what to skip, whether each rec was found in some file) given the generations the follower knows, `recs` (oldest
    first; state "open": being read, skip; "resume": read from its offset; "done": read past
    its offset only if it grew). Each item to read is (candidate, rec or None); the live file,
    if not known, comes last, from 0. Unknown files last modified before the oldest known one
    was first seen are older generations (already read or never wanted); files, known or not,
    last modified before `cutoff` hold only lines too old to matter: skipped, returned as
    (candidate, offset) so the caller can count and say them."""
    cands = candidates(path)
    sinces = [r["since"] for r in recs if r.get("since") is not None]
    since_min = min(sinces) if sinces else None
    todo, skipped, used = [], [], set()
    # The best file for each known generation: the same inode, then a plain copy, then a
    # compressed copy (a .gz being written is incomplete while its plain original exists).
    best: dict[int, Candidate] = {}
    for i, rec in enumerate(recs):
        hits = [c for c in cands if c.matches(rec)]
        hits.sort(key=lambda c: (c.ext is not None,
                                 (c.st.st_dev, c.st.st_ino) != (rec["dev"], rec["ino"])))
        if hits:
            best[i] = hits[0]
            used.update(id(c) for c in hits)        # the others are copies of it
    owner = {id(c): i for i, c in best.items()}
    for c in cands:
        if id(c) in owner:
            rec = recs[owner[id(c)]]
            if rec["state"] == "open":
                continue
            if rec["state"] == "done" and (c.ext is not None or c.st.st_size <= rec["offset"]):
                continue                # finished; a compressed copy holds nothing more
            if c.live and c.st.st_size < rec["offset"]:
                todo.append((c, None))  # truncated and refilled alike: from 0
                continue
            if c.st.st_mtime < cutoff and not c.live:
                skipped.append((c, rec["offset"]))
                continue
            todo.append((c, rec))
        elif id(c) in used:
            continue
        elif c.live or since_min is None or c.st.st_mtime >= since_min:
            if c.st.st_mtime < cutoff and not c.live:
                skipped.append((c, 0))
                continue
            if not c.live and c.st.st_size == 0:
                continue
            todo.append((c, None))
    return todo, skipped, [i in best for i in range(len(recs))]
