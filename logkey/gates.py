"""Gate policy: which client IPs may relay, and until when. Pure.

A login over POP3/IMAP opens (or extends) the gate of its IP for `window` seconds from the
line's own time; a logout of an IP with an open gate refreshes it (a long IMAP session ends
with the client about to send). Expiry comes from log time, never from the wall clock.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .events import GATE_PROTOCOLS, LOGIN, LOGOUT, Event


@dataclass(slots=True)
class Gate:
    ip: str
    expires: datetime
    user: str | None
    protocol: str | None


class GateTable:
    def __init__(self, window: float = 600.0):
        self.window = timedelta(seconds=window)
        self.gates: dict[str, Gate] = {}

    def apply(self, event: Event) -> Gate | None:
        """The gate this event opened or refreshed, or None."""
        if event.ip is None or event.time is None:
            return None
        expires = event.time + self.window
        gate = self.gates.get(event.ip)
        if event.kind == LOGIN and event.protocol in GATE_PROTOCOLS:
            if gate is None or gate.expires < expires:
                gate = Gate(event.ip, expires, event.user, event.protocol)
                self.gates[event.ip] = gate
            return gate
        if event.kind == LOGOUT and gate is not None and gate.expires >= event.time:
            if gate.expires < expires:
                gate.expires = expires
            return gate
        return None

    def open_at(self, now: datetime) -> list[Gate]:
        return sorted((g for g in self.gates.values() if g.expires > now),
                      key=lambda g: (g.expires, g.ip))
