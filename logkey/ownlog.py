"""logkey's own log (`logkey watch`, `logkey policy`): stderr or syslog.

stderr (the default): one line per message, prefixed with the `<N>` syslog priority that
journald reads from a service's stderr (sd-daemon(3)); no time stamp: journald, multilog and
svlogd add their own.
syslog: one datagram per message to a local syslog socket (default /dev/log), formatted as
syslog(3) sends them, `<PRI>TAG[PID]: message`, PRI = facility * 8 + severity (RFC 3164
4.1.1); the severities are debug 7, info 6, warning 4, err 3, crit 2. The stdlib's
SysLogHandler does the sending and reconnects after a syslog restart; a message it cannot send
goes to stderr instead (one note per outage), so nothing is lost silently.

Config: `log: {to: stderr|syslog, facility: mail, address: /dev/log, tag: logkey}`; `--log
stderr|syslog` on the command line overrides `to`. Read at start only (SIGHUP does not change
where logkey logs). Trust: logkey's messages carry user names and addresses from the logs;
they go out with the tag `logkey`, which no shipped pack reads.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from logging.handlers import SysLogHandler

from .errors import LogkeyError

TARGETS = ("stderr", "syslog")
FACILITIES = sorted(set(SysLogHandler.facility_names) - {"console", "ntp", "security",
                                                        "solaris-cron"})
DEFAULTS = {"to": "stderr", "facility": "mail", "address": "/dev/log", "tag": "logkey"}
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
            logging.CRITICAL: 2}


class Journald(logging.Formatter):
    """`<N>message`: the priority prefix journald reads from a service's stderr."""

    def format(self, record):
        return f"<{PRIORITY.get(record.levelno, 6)}>{record.getMessage()}"


class Syslog(SysLogHandler):
    """SysLogHandler with syslog(3)'s `TAG[PID]: ` and no trailing NUL; a message that cannot
    be sent is written to stderr."""

    append_nul = False

    def __init__(self, address: str, facility: str, tag: str):
        super().__init__(address=address, facility=SysLogHandler.facility_names[facility])
        self.ident = f"{tag}[{os.getpid()}]: "
        self.failing = False                    # in an outage: messages go to stderr
        self.fallback = Journald()

    def emit(self, record):
        self._sent = True
        super().emit(record)                    # calls handleError when it cannot send
        if self._sent and self.failing:
            self.failing = False
            self._stderr(f"<5>syslog at {self.address} answers again")

    def handleError(self, record):
        self._sent = False
        if not self.failing:
            self.failing = True
            exc = sys.exc_info()[1]
            self._stderr(f"<4>syslog at {self.address} unreachable "
                         f"({getattr(exc, 'strerror', None) or exc}): logging to stderr "
                         "until it answers")
        self._stderr(self.fallback.format(record))

    @staticmethod
    def _stderr(line: str) -> None:
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:                       # stderr gone too: nothing left to tell
            pass


def check_settings(value) -> dict:
    """The `log:` configuration value, validated; ValueError names the key inside it."""
    if not isinstance(value, dict):
        raise ValueError("must be a mapping: {to: stderr|syslog, facility: NAME, "
                         "address: /dev/log, tag: logkey}")
    bad = set(value) - set(DEFAULTS)
    if bad:
        raise ValueError(f".{sorted(bad)[0]}: unknown key (known: {', '.join(DEFAULTS)})")
    out = dict(DEFAULTS, **value)
    if out["to"] not in TARGETS:
        raise ValueError(".to: must be stderr or syslog")
    if out["facility"] not in FACILITIES:
        raise ValueError(f".facility: {out['facility']!r} is not a syslog facility "
                         f"({', '.join(FACILITIES)})")
    if not isinstance(out["address"], str) or not out["address"] or "\0" in out["address"]:
        raise ValueError(".address: must be the path of the syslog socket (e.g. /dev/log)")
    tag = out["tag"]
    if not isinstance(tag, str) or not tag or len(tag) > 32 or \
            not all(c.isalnum() or c in "._-" for c in tag) or not tag.isascii():
        raise ValueError(".tag: must be 1 to 32 letters, digits, '.', '_' or '-'")
    return out


def _install(handler: logging.Handler, verbose: bool) -> None:
    # The lines name neither caller, thread nor process: records need not look them up (the
    # logging HOWTO's "Optimization"; a catch-up logs an audit line for each gate it changes)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger("logkey")
    for old in root.handlers:
        if old is not handler:
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def to_stderr(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Journald())
    _install(handler, verbose)


def _probe(address: str) -> None:
    """Raise LogkeyError unless a syslog daemon can be reached at `address` now."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as s:
            try:
                s.connect(address)
                return
            except OSError as exc:
                if exc.errno == errno.EPROTOTYPE and kind == socket.SOCK_DGRAM:
                    continue                    # a stream socket (some syslog daemons)
                raise LogkeyError(f"log.address: {address}: cannot reach syslog: "
                                  f"{exc.strerror or exc}") from None


def configure(settings: dict | None, verbose: bool = False, target: str | None = None) -> None:
    """Send logkey's log where `settings` (the `log:` value) and `--log TARGET` say."""
    settings = dict(DEFAULTS, **(settings or {}))
    to = target or settings["to"]
    if to == "stderr":
        to_stderr(verbose)
        return
    _probe(settings["address"])
    _install(Syslog(settings["address"], settings["facility"], settings["tag"]), verbose)
