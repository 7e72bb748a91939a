"""Reading the systemd journal: journalctl run as a child, its JSON entries, the cursor.

Reads: `journalctl --output=json` (the system journal, or the journal files of a `directory:`
  or `files:`), with `--follow` for `logkey watch`; the saved cursor in state_dir.
Writes: one small JSON file per journal source in state_dir holding the cursor of the last
  entry whose gates are stored (temp file, fsync, rename: the old cursor or the new, never none).
What an entry may do is decided by journal.py (the pure part): this module only reads.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time

from ..atomic import write_atomic
from ..errors import LogkeyError
from ..parse.journalmatch import REQUIRED_FIELD
from .journal import CURSOR, label

log = logging.getLogger("logkey.journal")

JSON_LINE_MAX = 1 << 20                # bytes of one journalctl JSON line; longer: skipped
READ_MAX = 4 << 20                     # bytes read from journalctl per read() call


def journalctl_args(source: dict, exps, *, follow: bool, cursor: str | None = None,
                    since: float | None = None) -> list[str]:
    """The arguments after `journalctl`. The match terms only narrow what journalctl sends (the
    expected units, or entries claiming a program, so forgeries are seen and counted); every
    entry is still judged here."""
    args = ["--output=json", "--no-pager"]     # no --quiet: its permission hint is logged
    if source["directory"]:
        args.append(f"--directory={source['directory']}")
    for f in source["files"] or ():
        args.append(f"--file={f}")
    if follow:
        args += ["--follow", "--no-tail"]
    if cursor:
        args.append(f"--after-cursor={cursor}")
    elif since is not None:
        args.append(f"--since=@{max(0, int(since))}")
    terms = []
    for exp in exps:
        for value in sorted(exp.fields()[REQUIRED_FIELD]):
            terms.append(f"{REQUIRED_FIELD}={value}")
        terms.append(f"SYSLOG_IDENTIFIER={exp.program}")
    seen: list[str] = []
    for t in terms:
        if t not in seen:
            seen += ["+", t] if seen else [t]
    return args + seen


# --- I/O: the journalctl process ----------------------------------------------------------------
class JournalError(LogkeyError):
    """journalctl is missing or failed (dry-run: one line, exit 2)."""


def journalctl() -> str:
    path = shutil.which("journalctl") or ("/bin/journalctl" if os.access(
        "/bin/journalctl", os.X_OK) else None)
    if path is None:
        raise JournalError("journalctl not found (Debian package systemd)")
    return path


def _split(buf: bytes, chunk: bytes, skipping: bool, cap: int):
    """(complete lines (None for one over cap), rest, skipping) after adding chunk to buf."""
    out = []
    data = buf + chunk
    start = 0
    while (i := data.find(b"\n", start)) >= 0:
        if skipping:
            out.append(None)
            skipping = False
        else:
            out.append(data[start:i] if i - start <= cap else None)
        start = i + 1
    rest = data[start:]
    if len(rest) > cap:
        rest, skipping = b"", True
    return out, rest, skipping


def _dies_with_parent():
    """A preexec_fn asking the kernel to end journalctl when logkey dies (even by SIGKILL),
    so no orphan keeps following; None where prctl is not available."""
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)     # 1: PR_SET_PDEATHSIG


class JournalReader:
    """One journal source read through journalctl: JSON entries in journal order, the cursor of
    the last one read, and that cursor saved (commit) once the caller has stored its gates.
    follow=True (watch): journalctl --follow, read without blocking, restarted after the last
    cursor read if it exits. follow=False (dry-run, watch --once): read to the end."""

    def __init__(self, source: dict, exps, *, state_dir: str | None = None, follow: bool = True,
                 attach_window: float | None = 600.0, now=time.time):
        self.source, self.exps, self.follow = source, exps, follow
        self.label = label(source)
        self.attach_window, self.now = attach_window, now
        self.state_path = None
        if state_dir is not None:
            # The state file is named by the entry's settings: a changed entry attaches anew,
            # by time, as a newly named log file does.
            match = {k: sorted(v) for k, v in (source["match"] or {}).items()}
            ident = json.dumps([match, source["program"], source["packs"], source["directory"],
                                source["files"]], sort_keys=True)
            self.state_path = os.path.join(
                state_dir, "journal-" + hashlib.sha256(ident.encode()).hexdigest()[:32] + ".json")
        self.cursor = self.committed = self._load()
        self.proc = None
        self.buf, self.skipping, self.err_buf = b"", False, b""
        self.read_this_run = 0
        self.restart_at, self.retry = 0.0, 1.0
        self.done = False                     # follow=False: journalctl reached the end
        self.last_error, self.messages = None, []

    # --- the cursor ---------------------------------------------------------------------------
    def _load(self) -> str | None:
        if self.state_path is None:
            return None
        try:
            with open(self.state_path, "rb") as f:
                rec = json.loads(f.read(1 << 16))
            cursor = rec["cursor"]
            if not isinstance(cursor, str) or not CURSOR.fullmatch(cursor):
                raise ValueError("not a journal cursor")
            return cursor
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: saved cursor %s unreadable (%s): attaching by time", self.label,
                        self.state_path, exc)
            return None

    def commit(self) -> None:
        """Save the cursor of the last entry read (atomically), if it moved."""
        if self.state_path is None or self.cursor == self.committed or self.cursor is None:
            return
        data = json.dumps({"source": self.label, "cursor": self.cursor}).encode()
        write_atomic(self.state_path, data, mode=0o640)
        self.committed = self.cursor

    # --- the process --------------------------------------------------------------------------
    def start(self) -> None:
        """Start journalctl (OSError when it cannot be run)."""
        since = None
        if self.cursor is None and self.attach_window is not None:
            since = self.now() - self.attach_window     # first attach: by time, as for files
        argv = [journalctl()] + journalctl_args(self.source, self.exps, follow=self.follow,
                                                cursor=self.cursor, since=since)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, close_fds=True,
                                     env={**os.environ, "SYSTEMD_COLORS": "0", "LC_ALL": "C"},
                                     preexec_fn=_dies_with_parent())
        for f in (self.proc.stdout, self.proc.stderr):
            if self.follow or f is self.proc.stderr:
                fl = fcntl.fcntl(f.fileno(), fcntl.F_GETFL)
                fcntl.fcntl(f.fileno(), fcntl.F_SETFL, fl | os.O_NONBLOCK)
        self.buf, self.skipping, self.read_this_run, self.used_cursor = b"", False, 0, self.cursor
        self.last_error, self.messages = None, []
        log.info("%s: reading %s", self.label, "after the saved cursor" if self.cursor else
                 "from %s" % time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since))
                 if since is not None else "from the start")

    def fileno(self) -> int | None:
        return self.proc.stdout.fileno() if self.proc is not None else None

    def read(self) -> list:
        """Entries read since the last call: dicts (JSON objects) or None (an unreadable or
        over-long line, counted by the caller). Never raises for journalctl trouble when
        following: it is logged and journalctl restarted later."""
        if self.proc is None:
            if self.done or (self.follow and time.monotonic() < self.restart_at):
                return []
            try:
                self.start()
            except (OSError, JournalError) as exc:
                why = getattr(exc, "strerror", None) or str(exc)
                if not self.follow:
                    raise JournalError(f"{self.label}: cannot run journalctl: {why}") from None
                log.warning("%s: cannot run journalctl (%s); retrying in %.0f s", self.label,
                            why, self.retry)
                self._retry_later(False)
                return []
        out, used = [], 0
        fd = self.proc.stdout.fileno()
        eof = False
        while used < READ_MAX:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            used += len(chunk)
            lines, self.buf, self.skipping = _split(self.buf, chunk, self.skipping, JSON_LINE_MAX)
            for line in lines:
                out.append(self._entry(line))
            if not self.follow and out:
                break
        self._stderr()
        if eof:
            self._ended()
        return out

    def _entry(self, line: bytes | None):
        if line is None:
            return None
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if isinstance(entry, dict):
            cursor = entry.get("__CURSOR")
            if isinstance(cursor, str) and CURSOR.fullmatch(cursor):
                self.cursor = cursor
                self.read_this_run += 1
        return entry

    def _stderr(self, final: bool = False) -> None:
        try:
            data = self.proc.stderr.read(65536) or b""
        except (BlockingIOError, ValueError):
            data = b""
        self.err_buf += data
        *lines, self.err_buf = self.err_buf.split(b"\n")
        if final and self.err_buf:
            lines.append(self.err_buf)
            self.err_buf = b""
        for line in lines:
            if line.strip():
                self.last_error = line.decode("utf-8", "replace")[:300]
                if self.follow:
                    log.warning("%s: journalctl: %s", self.label, self.last_error)
                else:                       # reported at the end: a failure is one line
                    self.messages.append(self.last_error)

    def _ended(self) -> None:
        self._stderr(final=True)
        rc = self.proc.wait()
        error = self.last_error
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.proc = None
        if not self.follow:
            self.done = True
            if rc != 0:
                raise JournalError(f"{self.label}: journalctl failed (exit {rc})"
                                   + (f": {error}" if error else ""))
            for message in self.messages:   # e.g. the hint that permissions hid entries
                log.warning("%s: journalctl: %s", self.label, message)
            return
        if rc != 0 and self.read_this_run == 0 and self.used_cursor and error and \
                "cursor" in error:
            log.warning("%s: the saved cursor is not usable: attaching by time", self.label)
            self.cursor = None
        log.warning("%s: journalctl exited (status %s); restarting in %.0f s", self.label, rc,
                    self.retry)
        self._retry_later(self.read_this_run > 0)

    def _retry_later(self, progressed: bool) -> None:
        """The next start in `retry` seconds; the wait doubles (to 30 s) while nothing is read."""
        self.restart_at = time.monotonic() + self.retry
        self.retry = 1.0 if progressed else min(30.0, self.retry * 2)

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.proc = None
