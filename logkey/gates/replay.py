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


# A gate while replaying: [user, pack, protocol, opened, expires, time of its IP's last login or
# logout], a GateRecord only when asked for (open_at). A dataclass per new gate and a second
# dict for the last times were ~2 us an event on a login-dense log, about a third of the
# replay (issue 17).
USER, PACK, PROTOCOL, OPENED, EXPIRES, LAST = range(6)


class WindowGates:
    def __init__(self, window: float):
        self.window = window
        self.gates: dict[str, list] = {}            # IP -> its gate, as above

    def on_event(self, event: Event) -> None:
        """One event, at the time its line gives (an event without a time or IP is none)."""
        key, time = event.ip, event.time
        if key is None or time is None:
            return
        t = time.timestamp()
        window = self.window
        gate = self.gates.get(key)
        if event.kind == LOGIN and event.protocol in GATE_PROTOCOLS:
            if t + window <= t:
                return                                  # GatePolicy's "stale"
            if gate is None or gate[EXPIRES] <= t:      # a new gate
                self.gates[key] = [event.user, event.pack, event.protocol, t, t + window, t]
                return
            last = gate[LAST]
            if t >= last:                               # the latest login names the gate
                gate[USER] = event.user or gate[USER]
                gate[PACK], gate[PROTOCOL] = event.pack, event.protocol
                last = gate[LAST] = t
            if last + window > gate[EXPIRES]:
                gate[EXPIRES] = last + window
        elif event.kind == LOGOUT and gate is not None and gate[EXPIRES] > t:
            last = gate[LAST]
            if t > last:
                last = gate[LAST] = t
            gate[EXPIRES] = last + window               # the logout sets the expiry
            if gate[EXPIRES] <= t:
                del self.gates[key]

    def open_at(self, when: float) -> list[GateRecord]:
        """The gates open at `when`, soonest to expire first."""
        return sorted((GateRecord(key, g[USER], g[PACK], g[PROTOCOL], g[OPENED], g[EXPIRES], None)
                       for key, g in self.gates.items() if g[EXPIRES] > when),
                      key=lambda r: (r.expires, r.key))
