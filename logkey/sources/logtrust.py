"""Who can put lines into a followed log: the warnings `logkey watch` and `logkey dry-run`
give, at most once per file and check (SECURITY.md, "Who writes the logs").

Reads: the stat of each file and of its directory, the user and group databases.
Writes: nothing; the caller logs or prints the one-line messages.
Trust: advisory: a warning changes nothing in what logkey reads or opens.

Two checks:
- writable: the file, or the directory that holds it, can be written by an ordinary account:
  it is writable by every user, or group-writable by a group (other than root) that has an
  ordinary account among its members, or owned by an ordinary account. Ordinary means a uid
  from 1000 up (Debian's UID_MIN), nobody (65534) included; root and the system accounts
  below 1000 (syslog, a multilog log user) count as the log daemon.
- forgeable: a login was read from a line with a syslog header (an RFC 3164 or RFC 3339 stamp
  followed by host and program tag, or by a tag alone), in a file the configuration does not
  declare to be a daemon's own (`own_file: PACK`) or filtered by its sender (`sender_verified:
  true`). Such a line came through the syslog socket, where any local user chooses the program
  tag (`logger -t dovecot`). A daemon's own file (dovecot's log_path, qpopper's trace file, a
  multilog file) has another header and is not reported; nor are popwrap's socket and other
  sources whose events carry no header format.
  A login read from a container's output (`docker compose logs`, header format docker+...)
  is reported too: no log daemon stands between a container's processes and its output, and
  a newline in text any of them prints (a user name, a request) starts a whole line of the
  sender's choosing; read only the mail server's own container (`docker compose logs imap`).
"""
from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import stat

from ..events import LOGIN

ORDINARY_UID = 1000                     # first uid of an account a person logs in with
SYSLOG_FORMATS = frozenset(("rfc3164", "rfc3339", "bsd-verbose"))
CONTAINER_PREFIX = "docker+"
SEE = "see SECURITY.md"


def _ordinary(uid: int) -> bool:
    return uid >= ORDINARY_UID


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _ordinary_member(gid: int) -> str | None:
    """An ordinary account in group `gid` (a listed member, or one whose primary group it
    is), or None."""
    try:
        members = grp.getgrgid(gid).gr_mem
    except KeyError:
        members = []
    for name in members:
        try:
            if _ordinary(pwd.getpwnam(name).pw_uid):
                return name
        except KeyError:
            continue
    for entry in pwd.getpwall():
        if entry.pw_gid == gid and _ordinary(entry.pw_uid):
            return entry.pw_name
    return None


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def who_else_writes(st: os.stat_result) -> str | None:
    """Why an ordinary account can write what `st` describes, or None."""
    mode = st.st_mode
    if mode & stat.S_IWOTH:
        return "writable by every user"
    if mode & stat.S_IWGRP and st.st_gid != 0:
        member = _ordinary_member(st.st_gid)
        if member is not None:
            return f"writable by group {_group(st.st_gid)}, which has the member {member}"
    if _ordinary(st.st_uid):
        return f"owned by {_user(st.st_uid)} (uid {st.st_uid})"
    return None


def writable_problem(path: str) -> str | None:
    """The file's or its directory's problem (see who_else_writes), or None. OSError when the
    file cannot be looked at."""
    problem = who_else_writes(os.stat(path))
    if problem is not None:
        return problem
    directory = os.path.dirname(os.path.abspath(path))
    problem = who_else_writes(os.stat(directory))
    return None if problem is None else f"its directory {directory} is {problem}"


def forgeable(event) -> bool:
    """A login read from a syslog line (see the module docstring)."""
    header = getattr(event, "header", None)
    return event.kind == LOGIN and header is not None and (
        header in SYSLOG_FORMATS or header.startswith(CONTAINER_PREFIX))


class LogWarnings:
    """The warnings of one run: `file(path)` and `event(path, event)` give a message the first
    time a file has the problem, then None. `entries` are the configuration's `logs:` (for
    own_file and sender_verified); `own_file` says every file is a daemon's own (dry-run's
    --own-file)."""

    def __init__(self, entries=(), own_file: bool = False):
        self.entries = list(entries)
        self.own_file = own_file
        self.seen: set[tuple[str, str]] = set()
        # (path, kind, header format) already asked about: the answer for one of them is
        # given once at most (a login's forgeability depends on its kind and format only),
        # so later events of it are passed over with one set lookup (dry-run asks per event)
        self._asked: set[tuple] = set()

    def _once(self, path: str, check: str) -> bool:
        if (path, check) in self.seen:
            return False
        self.seen.add((path, check))
        return True

    def _declared(self, path: str) -> bool:
        if self.own_file:
            return True
        full = os.path.abspath(path)
        for entry in self.entries:
            pattern = entry["path"]
            if pattern is None:                 # a journal source (journal.py checks its own)
                continue
            if full == pattern or path == pattern or fnmatch.fnmatchcase(full, pattern):
                return bool(entry.get("own_file") or entry.get("sender_verified"))
        return False

    def file(self, path: str) -> str | None:
        """Checked once the file exists (the follower reports a missing or unreadable one)."""
        if path == "-" or (path, "writable") in self.seen:
            return None
        try:
            problem = writable_problem(path)
        except OSError:
            return None
        self.seen.add((path, "writable"))
        if problem is None:
            return None
        return (f"{path}: {problem}: whoever can write this log can open gates; {SEE} "
                "(Who writes the logs)")

    def event(self, path: str, event) -> str | None:
        key = (path, event.kind, getattr(event, "header", None))
        if key in self._asked:
            return None
        self._asked.add(key)
        if not forgeable(event):
            return None
        container = event.header.startswith(CONTAINER_PREFIX)
        if not self._once(path, "container" if container else "forgeable"):
            return None
        if self._declared(path):
            return None
        if container:
            return (f"{path}: {event.pack} logins are read from a container's output, where "
                    "any process in the container (or a newline in text it prints) writes "
                    "whole lines; read only the mail server's container, and set "
                    f"sender_verified when it runs nothing else; {SEE} (Container logs)")
        return (f"{path}: {event.pack} logins are read from syslog lines, whose program tag "
                "any local user can choose (logger -t); follow the daemon's own log file, or a "
                f"file the log daemon filters by sender, and set sender_verified; {SEE} "
                "(Forged syslog lines)")
