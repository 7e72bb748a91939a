"""Gate policy: which client IPs may relay, and until when. Pure: events and "now" in,
actions out; the caller owns the clock, the store and the log.

- A POP3/IMAP login opens (or extends) the gate of its IP: expiry = time of the last login or
  logout of that IP + `window`, from the log line's own time (a future time is clamped to
  now; a login already older than the window opens nothing).
- Where the pack reports logouts, a session still open is re-extended on every tick so the
  gate does not lapse during a long IMAP session, up to login + `max_session`; its logout sets
  expiry to logout + `window`.
- Never: `never_gate` networks (default loopback: webmail logging in from 127.0.0.1 must not
  open relay for localhost), `never_gate_users`; only `only_gate` networks when set.
- `max_ips_per_user`: a user with that many distinct open gates gets no new one (a stolen
  password used from a botnet must not open the relay for the botnet).
- `ipv6_prefix`: gate the client's IPv6 network (privacy addresses change between the POP and
  the SMTP connection) instead of the exact address.

Every decision is an action, so the caller can log each one (docs/log-lines.md): Put (a gate
opened, or refreshed by a login, a logout or an open session), Delete (closed: expired, by a
logout, or removed from the store by hand), Refuse (a login that opens nothing, and why).
A login too old to matter (read again after a restart) is no decision and gives nothing.

`counts` tallies the decisions (metrics and `logkey status` read it): opened, refreshed (a
login on an open gate), extended (an open session's gate pushed on), stale (a login older than
the window), refused:<never_gate|only_gate|never_gate_users|max_ips_per_user>, expired,
closed:logout, closed:hand (gone from the store: `logkey close`).
"""
from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from ..events import GATE_PROTOCOLS, LOGIN, LOGOUT, Event
from ..stores.base import GateRecord


@dataclass
class PolicyConfig:
    window: float = 600.0
    max_session: float = 3600.0
    never_gate: list = field(default_factory=lambda: [ipaddress.ip_network("127.0.0.1/32"),
                                                      ipaddress.ip_network("::1/128")])
    never_gate_users: frozenset = frozenset()
    only_gate: list | None = None
    max_ips_per_user: int = 5                 # 0: no limit
    ipv6_prefix: int | None = None
    logout_packs: frozenset = frozenset()     # packs that report logouts (sessions tracked)


# Why a gate was written, closed or refused: the words of the audit lines (docs/log-lines.md).
OPEN, LOGIN_REFRESH, LOGOUT_REFRESH, SESSION = "open", "login", "logout", "session"
EXPIRED, LOGGED_OUT, REMOVED = "expired", "logout", "removed"
NEVER_GATE, ONLY_GATE, NEVER_GATE_USERS, MAX_IPS = (
    "never_gate", "only_gate", "never_gate_users", "max_ips_per_user")


@dataclass
class Put:
    gate: GateRecord
    new: bool = False            # a gate that was not open before
    why: str = field(default=OPEN, compare=False)       # OPEN, LOGIN_REFRESH, LOGOUT_REFRESH, SESSION
    event: Event | None = field(default=None, compare=False)    # the login or logout, if any
    source: str | None = field(default=None, compare=False)     # ... and its line


@dataclass
class Delete:
    key: str
    why: str = field(default=EXPIRED, compare=False)    # EXPIRED, LOGGED_OUT, REMOVED
    gate: GateRecord | None = field(default=None, compare=False)   # what was closed


@dataclass
class Refuse:
    """A login that opens no gate: `reason` is the setting that refused it, `detail` the
    matching network or the count."""
    event: Event
    key: str
    source: str | None
    reason: str                  # NEVER_GATE, ONLY_GATE, NEVER_GATE_USERS, MAX_IPS
    detail: str | None = None


@dataclass
class _Gate:
    record: GateRecord
    sessions: dict = field(default_factory=dict)    # session id or user -> login time
    last: float = 0.0                               # time of the last login or logout


NETWORK_ANSWERS_KEPT = 65536    # IPs whose never_gate / only_gate answer is remembered

PUT_TALLY = {OPEN: "opened", LOGIN_REFRESH: "refreshed", SESSION: "extended"}
DELETE_TALLY = {EXPIRED: "expired", LOGGED_OUT: "closed:logout", REMOVED: "closed:hand"}


class GatePolicy:
    def __init__(self, config: PolicyConfig):
        self.config = config
        self.gates: dict[str, _Gate] = {}
        # user -> the keys of the gates that name that user (max_ips_per_user counts them
        # there, not over every gate: a catch-up opening thousands paid a scan of all each)
        self._keys_of: dict[str, set[str]] = {}
        self.counts: Counter = Counter()            # decisions, see the module docstring
        # never_gate / only_gate answers per canonical IP, for the config they were found with
        self._networks_of: PolicyConfig | None = None
        self._by_ip: dict = {}

    def _tally(self, actions: list) -> list:
        for action in actions:
            if isinstance(action, Refuse):
                self.counts["refused:" + action.reason] += 1
            else:
                name = (PUT_TALLY if isinstance(action, Put) else DELETE_TALLY).get(action.why)
                if name:
                    self.counts[name] += 1
        return actions

    # --- the key of a gate ----------------------------------------------------------------
    def key_for(self, ip: str) -> str:
        prefix = self.config.ipv6_prefix
        if prefix and ":" in ip:
            return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
        return ip

    def refused(self, ip: str, user: str | None) -> tuple[str, str | None] | None:
        """(setting, detail) when this IP/user never gets a gate, else None."""
        config = self.config
        if config.never_gate or config.only_gate is not None:
            if config is not self._networks_of:     # a reload brings a new config: new answers
                self._networks_of, self._by_ip = config, {}
            try:
                found = self._by_ip[ip]
            except KeyError:
                found = self._networks_refusal(ip)
                if len(self._by_ip) >= NETWORK_ANSWERS_KEPT:
                    self._by_ip.clear()
                self._by_ip[ip] = found
            if found is not None:
                return found
        if user is not None and user in config.never_gate_users:
            return NEVER_GATE_USERS, None
        return None

    def _networks_refusal(self, ip: str) -> tuple[str, str | None] | None:
        addr = ipaddress.ip_address(ip)
        for net in self.config.never_gate:
            if addr.version == net.version and addr in net:
                return NEVER_GATE, str(net)
        if self.config.only_gate is not None and not any(
                addr.version == net.version and addr in net for net in self.config.only_gate):
            return ONLY_GATE, None
        return None

    # --- events ---------------------------------------------------------------------------
    def on_event(self, event: Event, now: float, source: str | None = None) -> list:
        return self._tally(self._on_event(event, now, source))

    def _on_event(self, event: Event, now: float, source: str | None) -> list:
        if event.ip is None or event.time is None:
            return []
        t = min(event.time.timestamp(), now)            # clock skew: never in the future
        window = self.config.window
        key = self.key_for(event.ip)
        gate = self.gates.get(key)
        if event.kind == LOGIN and event.protocol in GATE_PROTOCOLS:
            if t + window <= now:
                self.counts["stale"] += 1
                return []                               # too old to matter
            refused = self.refused(event.ip, event.user)
            if refused:
                return [Refuse(event, key, source, *refused)]
            new = gate is None or gate.record.expires <= now
            if new:
                limit = self.config.max_ips_per_user
                if limit and event.user is not None:
                    held = sum(1 for k in self._keys_of.get(event.user, ())
                               if (g := self.gates.get(k)) is not None
                               and g.record.user == event.user and g.record.expires > now)
                    if held >= limit:
                        return [Refuse(event, key, source, MAX_IPS, f"{held} open, limit {limit}")]
                if gate is not None:
                    self._forget(key)                   # an expired gate, not yet ticked away
                gate = _Gate(GateRecord(key, event.user, event.pack, event.protocol, t,
                                        t + window, source), last=t)
                self._remember(key, gate)
            rec = gate.record
            before = None if new else (rec.expires, rec.user, rec.source, rec.pack, rec.protocol)
            if t >= gate.last:                          # the latest login names the gate
                if event.user and event.user != rec.user:
                    self._renamed(key, rec, event.user)
                rec.pack, rec.protocol, rec.source = event.pack, event.protocol, source or rec.source
            gate.last = max(gate.last, t)
            rec.expires = max(rec.expires, gate.last + window)
            if event.pack in self.config.logout_packs:
                gate.sessions[event.session or event.user or ""] = t
                self._extend(gate, now)
            if before == (rec.expires, rec.user, rec.source, rec.pack, rec.protocol):
                return []               # a line read again (after a crash): the gate is as it was
            return [Put(rec, new, OPEN if new else LOGIN_REFRESH, event, source)]
        if event.kind == LOGOUT and gate is not None and gate.record.expires > now:
            for sid in (event.session, event.user):
                if sid and sid in gate.sessions:
                    del gate.sessions[sid]
                    break
            else:
                if len(gate.sessions) == 1:
                    gate.sessions.clear()
            gate.last = max(gate.last, t)
            rec = gate.record
            rec.source = source or rec.source           # the line that last set the expiry
            rec.expires = gate.last + window            # the logout sets the expiry ...
            self._extend(gate, now)                     # ... unless other sessions stay open
            if rec.expires <= now:
                self._forget(key)
                return [Delete(key, LOGGED_OUT, rec)]
            return [Put(rec, why=LOGOUT_REFRESH, event=event, source=source)]
        return []

    def _extend(self, gate: _Gate, now: float) -> bool:
        """Keep an open session's gate from lapsing, up to login + max_session: once less than
        half a window is left, it is pushed to now + window (one store write per half window,
        not one per tick)."""
        if not gate.sessions:
            return False
        rec = gate.record
        if rec.expires - now > self.config.window / 2:
            return False
        cap = min(gate.sessions.values()) + self.config.max_session
        target = min(now + self.config.window, max(cap, rec.expires))
        if target > rec.expires:
            rec.expires = target
            return True
        return False

    # --- the gates and their users' index ---------------------------------------------
    def _remember(self, key: str, gate: "_Gate") -> None:
        self.gates[key] = gate
        if gate.record.user is not None:
            self._keys_of.setdefault(gate.record.user, set()).add(key)

    def _forget(self, key: str) -> None:
        gate = self.gates.pop(key)
        self._unindex(key, gate.record.user)

    def _renamed(self, key: str, rec: GateRecord, user: str) -> None:
        """The gate's record names `user` now (its latest login's)."""
        self._unindex(key, rec.user)
        rec.user = user
        self._keys_of.setdefault(user, set()).add(key)

    def _unindex(self, key: str, user: str | None) -> None:
        keys = self._keys_of.get(user) if user is not None else None
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_of[user]

    # --- the timer ------------------------------------------------------------------------
    def on_tick(self, now: float, still_stored=None, check_all: bool = False) -> list:
        """Extensions of open sessions, and forgetting expired gates. `still_stored(key)`,
        when given, says whether the store still holds a gate: one closed by hand
        (`logkey close`) is forgotten (a Delete, so the exports drop it), not re-extended.
        It is asked for gates with open sessions, and for every gate when `check_all`."""
        actions = []
        for key, gate in list(self.gates.items()):
            if gate.record.expires <= now:
                self._forget(key)
                actions.append(Delete(key, EXPIRED, gate.record))
                continue
            if still_stored is not None and (gate.sessions or check_all) \
                    and not still_stored(key):
                self._forget(key)
                actions.append(Delete(key, REMOVED, gate.record))
                continue
            if gate.sessions:
                if self._extend(gate, now):
                    actions.append(Put(gate.record, why=SESSION))
        return self._tally(actions)

    def adopt(self, records, now: float) -> int:
        """Take over the gates a store holds (at start, and on each reconcile): gates opened or
        extended elsewhere (`logkey open`, another watcher on the same Redis) count for
        max_ips_per_user and reach this watcher's exports. A gate known here takes the later
        expiry. The number of gates added or extended."""
        changed = 0
        for rec in records:
            if rec.expires <= now:
                continue
            gate = self.gates.get(rec.key)
            if gate is None:
                self._remember(rec.key, _Gate(rec, last=rec.expires - self.config.window))
                changed += 1
            elif rec.expires > gate.record.expires:
                gate.record.expires = rec.expires
                gate.last = max(gate.last, rec.expires - self.config.window)
                changed += 1
        return changed
