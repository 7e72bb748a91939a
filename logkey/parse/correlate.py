"""Joins for servers that split one login over several lines. Pure; bounded memory.

- pid join: a `connect` (an IP seen before authentication, e.g. tcpserver's "pid 42 from IP" or
  popa3d's "Session from IP") gives its IP to a later `login` of the same pid that has none.
  Either may be read first (two files read one after the other): the login is emitted when the
  pair is complete, if connect and login are at most `join_window` seconds apart and the connect
  is not after the login (one second of skew allowed), and come from the same host when both
  lines name one (a multilog file names none).
- session join: a login that names a session lends its IP to the logout of that session
  (dovecot logs logouts with the session id but without the IP).
- early logouts: a logout whose session has no login yet is held (up to `logout_hold` seconds
  of log time, at most `hold_limit` of them) and completed when its login arrives: the login is
  emitted, then the logout with the login's IP, as if the lines had come in order (dovecot 2.4's
  login and mail processes log separately, and the logout can reach the log first: captured in
  tests/fixtures/captured/dovecot-2.4-*.log). A held logout whose login does not come within the
  hold, or that is pushed out by newer ones, or still held at the end (`flush`), is emitted as it
  was read, without an IP (which opens and closes nothing).
"""
from __future__ import annotations

from datetime import timedelta

from ..events import CONNECT, LOGIN, LOGOUT, Event

SKEW = timedelta(seconds=1)
LOGOUT_HOLD = 10.0          # seconds of log time an early logout waits for its login
HOLD_LIMIT = 1024           # early logouts held at once


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
    def __init__(self, join_window: float = 600.0, limit: int = 65536,
                 logout_hold: float = LOGOUT_HOLD, hold_limit: int = HOLD_LIMIT):
        self.window = timedelta(seconds=join_window)
        self.hold = timedelta(seconds=logout_hold)
        self.hold_limit = hold_limit if logout_hold > 0 else 0
        self.early: dict = {}                # session -> logout Event waiting for its login
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
        """Events that are complete now (zero, one, a login completed by this connect, a login
        and its early logout, early logouts whose hold is over)."""
        released = self._release(event.time) if self.early else []
        out = self._feed(event)
        if released:
            return released + out
        return out

    def flush(self) -> list[Event]:
        """The early logouts still held (the end of the input): as read, without an IP."""
        out = list(self.early.values())
        self.early.clear()
        return out

    def _release(self, now) -> list[Event]:
        """Held logouts older (in log time) than the hold, oldest first."""
        out = []
        if now is None:
            return out
        early = self.early
        while early:                            # oldest first; stop at the first still held
            session = next(iter(early))
            logout = early[session]
            if logout.time is not None and logout.time + self.hold >= now:
                break
            out.append(early.pop(session))
        return out

    def _feed(self, event: Event) -> list[Event]:
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
            early = self.early.pop(event.session, None) if event.session and self.early else None
            if early is not None and (early.time is None or event.time is None
                                      or event.time <= early.time + SKEW):
                _join(early, event)
                return [event, early]           # the session is over already
            if early is not None:               # a login after its "logout": not its session
                self.early[event.session] = early
            self._remember(event)
            return [event]
        if event.kind == LOGOUT and event.ip is None:
            login = None
            if event.session is not None:
                login = self.sessions.pop(event.session, None)
            if login is None and event.pid is not None and event.join == "pid":
                login = self.pid_logins.pop(event.pid, None)
            if login is not None:
                _join(event, login)
            elif event.session is not None and self.hold_limit:
                released = []
                if event.session in self.early:     # the same session twice: keep the newer
                    released.append(self.early.pop(event.session))
                while len(self.early) >= self.hold_limit:
                    released.append(self.early.pop(next(iter(self.early))))
                self.early[event.session] = event
                return released
        return [event]

    def _remember(self, login: Event) -> None:
        if login.session:
            self.sessions.put(login.session, login)
        if login.pid:
            self.pid_logins.put(login.pid, login)


def _join(logout: Event, login: Event) -> None:
    """The logout of `login`'s session takes its IP (and user and protocol where it has none)."""
    logout.ip = login.ip
    logout.user = logout.user or login.user
    logout.protocol = logout.protocol or login.protocol
