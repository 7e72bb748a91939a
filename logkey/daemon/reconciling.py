"""The exports, and the periodic checks that keep the watcher's gates and the store's alike.

Takes: the gate policy's open gates, the Applier (applying.py: the store, its outage state),
the configured exports (smtp/exports.py's Exporter, or None), "now".
Gives, from each tick:
- `reconcile`: every RECONCILE_EVERY seconds, and at once when `logkey open`/`close` wrote
  the exports, whether the policy should ask the store about every gate (a gate closed by
  hand leaves the exports); with exports, the gates opened or extended elsewhere (`logkey
  open`, another watcher on the same Redis) taken into the policy, so the exports hold every
  open gate, whoever opened it;
- `check_server`: every SERVER_CHECK_EVERY seconds, whether the store is another server now
  (a Redis failover, a restart without persistence): then every open gate is written again;
- `export`: the exports brought to the open gates when they changed, else a failed one
  retried (no log line when gates expire);
- `purge`: every PURGE_EVERY seconds, expired gates (and a dead writer's temp files) removed
  from the store.
Trust: what the store holds is taken only through the policy's `adopt` (valid records).
"""
from __future__ import annotations

import logging

from ..stores import StoreError

log = logging.getLogger("logkey")

RECONCILE_EVERY = 5.0           # seconds between checks for gates closed by hand
SERVER_CHECK_EVERY = 1.0        # seconds between asks whether the store is another server
PURGE_EVERY = 60.0              # seconds between removals of expired gates from the store


class Reconciler:
    """The exports and the store's periodic checks; `install` gives it the exports of a
    configuration (again after each reload: the first tick then writes them all)."""

    def __init__(self, applier, policy):
        self.applier, self.policy = applier, policy
        self.exporter = None
        self.exports_dirty = True
        self.next_reconcile = 0.0
        self.next_server_check = 0.0
        self.next_purge = 0.0

    def install(self, exporter) -> None:
        self.exporter = exporter
        self.exports_dirty = True

    def reconcile(self, now: float, can_check: bool) -> bool:
        """Whether the policy checks every gate against the store this tick (`can_check`:
        the store is up)."""
        check_all = can_check and now >= self.next_reconcile
        if self.exporter is not None and self.exporter.changed_elsewhere():
            # `logkey open`/`close` wrote the exports: check the store now (not at the next
            # pass) and write the exports again from it (a gate opened by hand may have
            # expired since, one closed by hand must not come back from our memory).
            self.exporter.forget()
            self.exports_dirty = True
            check_all = can_check
        if check_all:                           # gates closed by hand leave the exports too
            self.next_reconcile = now + RECONCILE_EVERY
            if self.exporter is not None:       # ... and those opened elsewhere join them
                self.adopt_stored(now)
        return check_all

    def adopt_stored(self, now: float) -> None:
        """Gates in the store that this watcher did not open or knows with an earlier expiry,
        taken into the gate policy."""
        try:
            changed = self.policy.adopt(self.applier.store.scan(now), now)
        except StoreError as exc:
            self.applier.outage(exc)
            return
        if changed:
            log.debug("%d gate(s) opened or extended elsewhere taken from the store", changed)
            self.exports_dirty = True

    def check_server(self, now: float) -> None:
        """A store that may have lost gates without an error gets every open gate again."""
        if not self.applier.store_up or now < self.next_server_check:
            return
        self.next_server_check = now + SERVER_CHECK_EVERY
        try:
            lost = self.applier.store.writes_lost()
        except StoreError as exc:
            self.applier.outage(exc)
            return
        if lost:
            n = self.applier.write_back(now)
            log.warning("store: another server answers now (failover or restart): %d open "
                        "gate(s) written again", n)

    def export(self, now: float) -> None:
        """Bring the exports to the open gates when they changed; else retry a failed one."""
        if self.exporter is None:
            return
        if self.exports_dirty or self.applier.gates_changed:
            self.exports_dirty = self.applier.gates_changed = False
            self.exporter.update([g.record for g in self.policy.gates.values()], now)
        elif self.exporter.failing:
            self.exporter.retry()

    def purge(self, now: float) -> None:
        store = self.applier.store
        if store is None or now < self.next_purge or self.applier.outage_since is not None:
            return
        self.next_purge = now + PURGE_EVERY
        try:
            store.purge(now)
        except StoreError as exc:
            self.applier.outage(exc)
        if getattr(store, "temps_removed", 0):
            log.info("gate store: %d stale temp file(s) of a writer that died removed",
                     store.temps_removed)
