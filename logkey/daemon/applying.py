"""Applying the gate policy's decisions to the store, and committing the read offsets only
after them.

Takes: the actions of GatePolicy (gates/policy.py: Put, Delete), the store (None in observe),
"now".
Gives: one audit line per action (gates/audit.py); writes and deletes in the store, kept in
`pending` until the store took them, so a store outage loses nothing: the gates stay in
memory and are written when the store answers again (retried 1, 2, 4 ... RETRY_MAX seconds
apart, every still valid gate written back, as the store may have lost what it had).
`commit_read` saves the read offsets only while nothing is pending: a crash or an outage
never leaves an offset past a login whose gate is not stored. `gates_changed` says that the
open gates changed since the exports last saw them (reconciling.py reads it).
Trust: the store is written only with the gate records the policy made (validated keys).
"""
from __future__ import annotations

import logging
import time

from ..gates import audit
from ..gates.policy import EXPIRED, Delete, Put
from ..stores import StoreError

log = logging.getLogger("logkey")

RETRY_MAX = 30.0                # longest wait between store retries during an outage


class Applier:
    """The store side of the watcher: what the policy decided, written, or pending."""

    def __init__(self, store, policy, *, observe: bool = False, now=time.time):
        self.store, self.policy, self.observe, self.now = store, policy, observe, now
        self.pending: dict[str, object] = {}    # key -> GateRecord to write, or None to delete
        self.outage_since: float | None = None
        self.next_retry = 0.0
        self.retry_wait = 1.0
        self.store_errors = self.store_retries = 0
        self.gates_changed = True               # the exports have not seen the gates yet

    @property
    def store_up(self) -> bool:
        """A store is there and answered last time."""
        return self.store is not None and self.outage_since is None

    def adopt(self, now: float) -> None:
        """At start: the gates open in the store taken over by the policy."""
        if self.store is None:
            return
        try:
            self.policy.adopt(self.store.scan(now), now)
        except StoreError as exc:
            self.outage(exc)
        if self.policy.gates:
            log.info("%d open gate(s) taken over from the store", len(self.policy.gates))

    def apply(self, actions) -> None:
        for action in actions:
            log.log(audit.level(action), "%s", audit.line(action, self.observe))
            if isinstance(action, Put):
                self.pending[action.gate.key] = action.gate
            elif isinstance(action, Delete):
                if action.why != EXPIRED:       # an expired gate is closed in the store by its
                    self.pending[action.key] = None     # own time (and may have been extended
                self.gates_changed = True       # there since); it leaves the exports at once

    def still_stored(self, key: str) -> bool:
        """Whether the store still holds a gate (False: closed by hand); True when unsure."""
        try:
            return key in self.pending or self.store.is_open(key)
        except (StoreError, ValueError):
            return True

    def flush(self, now: float) -> None:
        """Write what is pending; during an outage, only when the next retry is due."""
        if self.observe:
            self.pending.clear()
            return
        if self.outage_since is not None:
            if now < self.next_retry:
                return
            self.store_retries += 1
            # The store may have lost what it had (a Redis restarted without persistence):
            # write back every gate that is still valid, not only those opened meanwhile,
            # to the server that answers now (the one writes_lost() compares with from here).
            try:
                self.store.writes_lost()
            except StoreError:
                pass                            # still out: the writes below say so
            self.write_back(now)
        if not self.pending:
            return
        try:
            puts = []
            for key, gate in list(self.pending.items()):
                if gate is None:
                    self.store.delete(key)
                    del self.pending[key]
                elif gate.expires > now:
                    puts.append(gate)
                else:
                    del self.pending[key]
            # Together (a catch-up's many gates: one sync for all in a dir store); they stay
            # pending, so that no read offset is saved past them, until the store took them.
            self.store.put_batch(puts)
            for gate in puts:
                log.debug("stored %s until %s", gate.key,
                          time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(gate.expires)))
                if self.pending.get(gate.key) is gate:
                    del self.pending[gate.key]
        except StoreError as exc:
            self.outage(exc)
            return
        self.gates_changed = True
        if self.outage_since is not None:
            log.warning("store reachable again after %.0f s; pending gates written",
                        now - self.outage_since)
            self.outage_since = None
            self.retry_wait = 1.0

    def write_back(self, now: float) -> int:
        """Every gate still valid into pending (the store may have lost it); how many."""
        n = 0
        for key, gate in self.policy.gates.items():
            if gate.record.expires > now and key not in self.pending:
                self.pending[key] = gate.record
                n += 1
        return n

    def outage(self, exc) -> None:
        """The store failed: keep the gates in memory, retry later (each time later)."""
        self.store_errors += 1
        now = self.now()
        if self.outage_since is None:
            self.outage_since = now
            log.error("store unavailable, will retry (gates kept in memory): %s", exc)
        self.next_retry = now + self.retry_wait
        self.retry_wait = min(RETRY_MAX, self.retry_wait * 2)

    def commit_read(self, sources) -> bool:
        """Save the read offsets of `sources` (reading.py) when every gate is stored; whether
        they were saved."""
        if self.pending:
            return False
        sources.commit()
        return True

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
