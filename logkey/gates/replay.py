"""The gates a replayed log opens, with the window alone: what `logkey dry-run` shows.

Takes events in log order, each judged at its own time; gives the gates (GateRecords) open at
a moment. The same answer as GatePolicy with `window` and no never_gate, never_gate_users,
only_gate, max_ips_per_user, ipv6_prefix or tracked sessions (tests/test_gates_replay.py
holds the two side by side), without the actions, audit and tallies a watcher needs: dry-run
changes nothing, so per event it only updates the gate of the event's IP. Pure.
"""
from __future__ import annotations

from ..events import GATE_PROTOCOLS, LOGIN, LOGOUT, Event
from ..stores.base import GateRecord


class WindowGates:
    def __init__(self, window: float):
        self.window = window
        self.gates: dict[str, GateRecord] = {}      # IP -> its gate
        self._last: dict[str, float] = {}           # IP -> time of its last login or logout

    def on_event(self, event: Event) -> None:
        """One event, at the time its line gives (an event without a time or IP is none)."""
        if event.ip is None or event.time is None:
            return
        t = event.time.timestamp()
        window = self.window
        key = event.ip
        rec = self.gates.get(key)
        if event.kind == LOGIN and event.protocol in GATE_PROTOCOLS:
            if t + window <= t:
                return                                  # GatePolicy's "stale"
            if rec is None or rec.expires <= t:         # a new gate
                rec = self.gates[key] = GateRecord(key, event.user, event.pack, event.protocol,
                                                   t, t + window, None)
                last = self._last[key] = t
            else:
                last = self._last[key]
                if t >= last:                           # the latest login names the gate
                    rec.user = event.user or rec.user
                    rec.pack, rec.protocol = event.pack, event.protocol
                    last = self._last[key] = t
            if last + window > rec.expires:
                rec.expires = last + window
        elif event.kind == LOGOUT and rec is not None and rec.expires > t:
            last = self._last[key]
            if t > last:
                last = self._last[key] = t
            rec.expires = last + window                 # the logout sets the expiry
            if rec.expires <= t:
                del self.gates[key]
                del self._last[key]

    def open_at(self, when: float) -> list[GateRecord]:
        """The gates open at `when`, soonest to expire first."""
        return sorted((r for r in self.gates.values() if r.expires > when),
                      key=lambda r: (r.expires, r.key))
