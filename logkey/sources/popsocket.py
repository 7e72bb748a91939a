"""The watcher's end of `logkey popwrap`: a unix datagram socket on which popwrap reports
logins and logouts (one datagram each: `login|logout IP USER PROTOCOL [SESSION]`), and
`logkey popwrap --dovecot` reports Dovecot post-login logins (`postlogin IP USER PROTOCOL
[PID]`: no logout follows, the script execs on; the event's pack is "dovecot-postlogin", whose
gate lasts `window` from the login).

Reads: datagrams. Trust: whoever can write to the socket can claim any address, so the
socket's mode and group decide who may (SECURITY.md); every datagram is checked whole (the
address through canonical_ip, printable fields, a known protocol) and a bad one is counted
and dropped, never fatal.
"""
from __future__ import annotations

import logging
import socket
from datetime import datetime, timezone

from ..events import GATE_PROTOCOLS, LOGIN, LOGOUT, Event, canonical_ip
from ..unixsock import SocketSetupError, bind_unix, group_id, identity, remove_if_ours

log = logging.getLogger("logkey")

POPWRAP_PACK = "popwrap"        # the pack name of events from `logkey popwrap`
POSTLOGIN_PACK = "dovecot-postlogin"    # ... and from `logkey popwrap --dovecot` (no logouts)
POSTLOGIN = "postlogin"         # its datagram's first word
POPWRAP_MAX = 512               # bytes in one datagram
POPWRAP_BATCH = 1000            # datagrams taken per step (the rest wait for the next one)


class PopwrapListener:
    def __init__(self):
        self.sock = None
        self.path = None
        self.ident = None
        self.settings = None
        self.bad = self.events = 0

    def bind(self, settings) -> None:
        """Listen on settings["socket"] (closing a previous socket); nothing when it is null.
        Raises SocketSetupError naming the key."""
        self.close()
        self.settings = dict(settings)
        path = settings["socket"]
        if not path:
            return
        try:
            sock = bind_unix(path, socket.SOCK_DGRAM, int(settings["socket_mode"], 8),
                             group_id(settings["socket_group"]))
        except SocketSetupError as exc:
            raise SocketSetupError(f"popwrap.socket: {path}: {exc}") from None
        sock.setblocking(False)
        self.sock, self.path, self.ident = sock, path, identity(path)
        log.info("popwrap: listening on %s", path)

    def fileno(self) -> int | None:
        return self.sock.fileno() if self.sock is not None else None

    def receive(self, now: float):
        """Each waiting datagram's event, or None for a bad one (at most POPWRAP_BATCH)."""
        if self.sock is None:
            return
        for _ in range(POPWRAP_BATCH):
            try:
                data = self.sock.recv(POPWRAP_MAX + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("popwrap socket: %s", exc)
                return
            event = popwrap_event(data, now)
            if event is None:
                self.bad += 1
                log.debug("popwrap: bad datagram ignored (%d so far): %r", self.bad, data[:80])
            else:
                self.events += 1
            yield event

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            remove_if_ours(self.path, self.ident)
        self.sock = self.path = self.ident = None


def popwrap_event(data: bytes, now: float) -> Event | None:
    """The event of one popwrap datagram, `login|logout|postlogin IP USER PROTOCOL [SESSION]`
    (USER "-": unknown), or None when it is not exactly that."""
    if len(data) > POPWRAP_MAX:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.endswith("\n"):
        text = text[:-1]
    fields = text.split(" ")
    if len(fields) not in (4, 5) or not all(f and f.isprintable() and f == "".join(f.split())
                                            for f in fields):
        return None
    kind, ip, user, protocol = fields[:4]
    ip = canonical_ip(ip)
    if kind not in (LOGIN, LOGOUT, POSTLOGIN) or ip is None or protocol not in GATE_PROTOCOLS:
        return None
    user = None if user == "-" else user
    if kind == POSTLOGIN:                       # a login with no session to follow
        return Event(LOGIN, ip, user, protocol, datetime.fromtimestamp(now, timezone.utc),
                     POSTLOGIN_PACK, "socket")
    session = f"popwrap:{fields[4]}" if len(fields) == 5 else None
    return Event(kind, ip, user, protocol, datetime.fromtimestamp(now, timezone.utc),
                 POPWRAP_PACK, "socket", session=session)
