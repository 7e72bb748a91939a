"""A followed file's generations (inodes) and where a rotated one went (follow.py's helpers).

Reads: the rotated siblings of a followed path (PATH.N, PATH-*; compressed ones are not read),
  to find the one holding the lines after a saved position: the same inode (renamed) or the same
  first bytes (copied), and a generation truncated and renamed before logkey looked.
Trust: file content is bytes and is only compared by its fingerprint (blake2b of the first
  FP_LEN bytes); nothing here decides what a line means.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os

log = logging.getLogger("logkey.follow")

FP_LEN = 512               # bytes of a file's start that identify it (its fingerprint)
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z")


def _fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class Generation:
    """One open generation (inode) of a followed file and the read position in it."""
    __slots__ = ("fd", "dev", "ino", "pos", "lineno", "fp", "fp_len", "buf", "skipping", "scan",
                 "rotated", "numbered")

    def __init__(self, fd, st, pos, lineno, fp=None, fp_len=0, rotated=False, numbered=True):
        self.fd, self.dev, self.ino = fd, st.st_dev, st.st_ino
        self.pos = self.scan = pos      # pos: start of the first unreturned line; scan: bytes seen
        self.lineno = lineno            # lines returned so far in this generation
        self.numbered = numbered        # False: lineno counts from a first attach, not line 1
        self.buf, self.skipping = b"", False   # the partial line after pos (or skipping a long one)
        self.rotated = rotated          # a renamed-away or copied generation: read to its end, then leave
        self.fp, self.fp_len = fp, fp_len
        if fp is None:
            self.fp_len = -1
            self.same_start()

    def same_start(self) -> bool:
        """False if the file's first bytes are no longer those seen (copytruncate); extends the
        fingerprint while the file is shorter than FP_LEN."""
        if self.fp_len > 0:
            head = os.pread(self.fd, self.fp_len, 0)
            if len(head) < self.fp_len or _fingerprint(head) != self.fp:
                return False
        if self.fp_len < FP_LEN:
            head = os.pread(self.fd, FP_LEN, 0)
            if len(head) > self.fp_len:
                self.fp, self.fp_len = _fingerprint(head), len(head)
        return True

    def number(self, n: int) -> int:
        """The line number to report: 0 when this generation's count is unknown (a first
        attach far into a large file does not count the lines it skipped)."""
        return n if self.numbered else 0

    def record(self) -> dict:
        return {"dev": self.dev, "ino": self.ino, "offset": self.pos, "lineno": self.lineno,
                "fp": self.fp, "fp_len": max(self.fp_len, 0), "numbered": self.numbered}


def find_rest(path: str, saved: dict, exclude=None):
    """(the rotated file holding the lines after `saved`, a generation to read after it):
    the first is the same inode (renamed) or a file with the same first bytes, long enough
    (copied), or None. The second is not None when the same inode was renamed but no longer
    starts as it did (copytruncated, written to, then renamed while logkey was not looking):
    its new lines, from 0, come after the copy's rest; alone when no copy matches."""
    names = set(glob.glob(glob.escape(path) + ".*") + glob.glob(glob.escape(path) + "-*"))
    found, truncated = [], None
    for name in names:
        if name.endswith(COMPRESSED):
            continue
        try:
            st = os.stat(name)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == exclude:
            continue
        same = (st.st_dev, st.st_ino) == (saved["dev"], saved["ino"])
        if same:
            truncated = name
        if st.st_size < saved["offset"]:
            continue
        if same or saved["fp_len"] > 0:
            found.append((not same, -st.st_mtime, name))
    chosen = None
    for _, _, name in sorted(found):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        g = Generation(fd, os.fstat(fd), saved["offset"], saved["lineno"], saved["fp"],
                       saved["fp_len"], rotated=True, numbered=saved["numbered"])
        if saved["fp_len"] == 0 or g.same_start():
            log.info("%s: reading the rest of rotated %s from offset %d", path, name, g.pos)
            chosen = g
            break
        os.close(fd)
    if truncated is not None and (chosen is None or (chosen.dev, chosen.ino) !=
                                  (saved["dev"], saved["ino"])):
        try:
            fd = os.open(truncated, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return chosen, None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (saved["dev"], saved["ino"]):
            os.close(fd)
            return chosen, None
        log.info("%s: %s was truncated before it was renamed: reading it from 0%s", path,
                 truncated, " after the copy" if chosen is not None else "")
        return chosen, Generation(fd, st, 0, 0, rotated=True)
    return chosen, None
