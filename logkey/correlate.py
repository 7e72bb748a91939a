"""Joins for servers that split one login over several lines. Pure; bounded memory.

- pid join: a `connect` (an IP seen before authentication, e.g. tcpserver's "pid 42 from IP" or
  popa3d's "Session from IP") gives its IP to a later `login` of the same pid that has none.
  Either may be read first (two files read one after the other): the login is emitted when the
  pair is complete, if connect and login are at most `join_window` seconds apart and the connect
  is not after the login (one second of skew allowed), and come from the same host when both
  lines name one (a multilog file names none).
- session join: a login that names a session lends its IP to the logout of that session
  (dovecot logs logouts with the session id but without the IP).
"""
from __future__ import annotations

from datetime import timedelta

from .events import CONNECT, LOGIN, LOGOUT, Event

SKEW = timedelta(seconds=1)


class _Bounded(dict):
    """A dict that forgets its oldest entries past `limit`."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def put(self, key, value):
        self.pop(key, None)
        self[key] = value
        while len(self) > self.limit:
            del self[next(iter(self))]


class Correlator:
    def __init__(self, join_window: float = 600.0, limit: int = 65536):
        self.window = timedelta(seconds=join_window)
        self.connects = _Bounded(limit)      # pid -> connect Event
        self.pending = _Bounded(limit)       # pid -> login Event waiting for its connect
        self.sessions = _Bounded(limit)      # session -> login Event
        self.pid_logins = _Bounded(limit)    # pid -> login Event (logout joins by pid)

    def _pair_ok(self, connect: Event, login: Event) -> bool:
        if connect.time is None or login.time is None:
            return False
        if connect.host and login.host and connect.host != login.host:
            return False                        # same pid, different machines
        return login.time - self.window <= connect.time <= login.time + SKEW

    def feed(self, event: Event) -> list[Event]:
        """Events that are complete now (zero, one, or a login completed by this connect)."""
        if event.kind == CONNECT:
            if event.pid is None:
                return []
            login = self.pending.pop(event.pid, None)
            if login is not None and self._pair_ok(event, login):
                login.ip = event.ip
                self._remember(login)
                return [login]
            self.connects.put(event.pid, event)
            return []
        if event.kind == LOGIN:
            if event.ip is None:
                if event.pid is None:
                    return []
                connect = self.connects.pop(event.pid, None)
                if connect is None or not self._pair_ok(connect, event):
                    self.pending.put(event.pid, event)
                    return []
                event.ip = connect.ip
            self._remember(event)
            return [event]
        if event.kind == LOGOUT and event.ip is None:
            login = None
            if event.session is not None:
                login = self.sessions.pop(event.session, None)
            if login is None and event.pid is not None and event.join == "pid":
                login = self.pid_logins.pop(event.pid, None)
            if login is not None:
                event.ip = login.ip
                event.user = event.user or login.user
                event.protocol = event.protocol or login.protocol
        return [event]

    def _remember(self, login: Event) -> None:
        if login.session:
            self.sessions.put(login.session, login)
        if login.pid:
            self.pid_logins.put(login.pid, login)
