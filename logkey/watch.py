"""`logkey watch`: follow the mail logs into the gate store.

Reads: the configured logs (follow.py), the store at start (to adopt its open gates).
Writes: gates to the store, read offsets to state_dir, its own log to stderr, and the
configured `exports:` (exports.py): brought to the open gates after every flush that changed
gates and on every tick where a gate expired or was closed, so an expired gate leaves them
within a tick (a second), with no log line.
Trust: events come from the engine (packs linted, IPs canonical); the policy decides; the
store is written only with validated keys. Offsets are saved only once every gate the lines
opened is in the store, so a crash or a store outage loses no login, and a line read again
after a crash is judged by its own time (a stale login opens nothing).
popwrap: when `popwrap.socket` is set, the watcher takes login/logout datagrams from
`logkey popwrap` (popsocket.py); each is an event of the pack "popwrap", which reports logouts
(the gate stays open during the session, up to max_session).
Config: logs, packs, store, state_dir, window, max_session, never_gate*, only_gate,
max_ips_per_user, ipv6_prefix, join_window, timezone, line_max, exports, popwrap.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import time
from datetime import timedelta

from .engine import Engine
from .errors import LogkeyError
from .follow import Follower
from .gates import Delete, GatePolicy, PolicyConfig, Put, Warn
from .headers import Clock, parse
from .match import PackSet, own_file_rules
from .packs import load_packs
from .stores import Store, StoreError, open_store
from .popsocket import POPWRAP_PACK, PopwrapListener
from .unixsock import SocketSetupError

log = logging.getLogger("logkey")

TICK = 1.0                      # seconds between timer runs (expiry, session extension)
PURGE_EVERY = 60.0              # seconds between removals of expired gates from the store
RETRY_MAX = 30.0                # longest wait between store retries during an outage
RECONCILE_EVERY = 5.0           # seconds between checks for gates closed by hand
TIMEOUT_WARN_EVERY = 60.0       # at most one warning a minute about lines over the match limit


class WatchError(LogkeyError):
    """Cannot start: one line naming what is wrong."""


def mynetworks() -> list:
    """Postfix's mynetworks, read with `postconf -h mynetworks`."""
    postconf = shutil.which("postconf")
    if postconf is None:
        raise WatchError("never_gate_mynetworks: postconf not found (is Postfix installed?)")
    out = subprocess.run([postconf, "-h", "mynetworks"], capture_output=True, text=True,
                         timeout=10)
    if out.returncode != 0:
        raise WatchError(f"never_gate_mynetworks: postconf failed: {out.stderr.strip()[:200]}")
    nets = []
    for item in out.stdout.replace(",", " ").split():
        item = item.replace("[", "").replace("]", "")
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            log.warning("never_gate_mynetworks: %r is not a network; ignored", item)
    return nets


def policy_config(cfg, packs: PackSet) -> PolicyConfig:
    never = list(cfg.never_gate or [])
    if cfg.never_gate_mynetworks:
        never += mynetworks()
    return PolicyConfig(
        window=cfg.window, max_session=cfg.max_session, never_gate=never,
        never_gate_users=frozenset(cfg.never_gate_users or ()), only_gate=cfg.only_gate,
        max_ips_per_user=cfg.max_ips_per_user, ipv6_prefix=cfg.ipv6_prefix,
        logout_packs=frozenset([POPWRAP_PACK] + [
            p.name for p in packs.packs.values()
            if any(r.kind == "logout" for r in p.rules + p.untagged)]))


def build(cfg):
    """Everything that comes from the configuration and the packs, checked: (packs, engines
    by log entry index, policy config). Raises PackError/WatchError."""
    packs = load_packs(cfg.packs, cfg.patterns_dir)
    for i, entry in enumerate(cfg.logs):
        for name in (entry["packs"] or []) + ([entry["own_file"]] if entry["own_file"] else []):
            if name not in packs.packs:
                raise WatchError(f"{cfg.path}: logs[{i}].packs: no pack named {name!r}")
    return packs, policy_config(cfg, packs)


class Watcher:
    def __init__(self, cfg, *, observe: bool = False, store: Store | None = None,
                 shift: float = 0.0, now=time.time):
        self.observe = observe
        self.shift = shift                      # seconds added to line times (--as-of)
        self.now = now
        self.stop = False
        self.reload_requested = False
        self.store = None if observe else (store or open_store(cfg.store))
        self._install(cfg, *build(cfg))
        self.policy = GatePolicy(self.policy_config)
        self.pending: dict[str, object] = {}    # key -> GateRecord to write, or None to delete
        self.new_keys: set[str] = set()         # pending keys that are new gates
        self.outage_since: float | None = None
        self.next_retry = 0.0
        self.retry_wait = 1.0
        self.next_purge = 0.0
        self.next_reconcile = 0.0
        self.timeouts_seen = 0                  # match time-outs warned about or pending
        self.timeouts_pending = 0
        self.next_timeout_warning = 0.0
        self.follower = self._follower()
        self.popwrap = PopwrapListener()
        try:
            self.popwrap.bind(cfg.popwrap)
        except SocketSetupError as exc:
            raise WatchError(str(exc)) from None
        if self.store is not None:
            try:
                self.policy.adopt(self.store.scan(self.now()), self.now())
            except StoreError as exc:
                self._outage(exc)

    # --- configuration ----------------------------------------------------------------------
    def _install(self, cfg, packs: PackSet, pconf: PolicyConfig) -> None:
        self.cfg, self.packs, self.policy_config = cfg, packs, pconf
        self.clock = Clock(None, cfg.timezone)
        base = Engine(packs, self.clock, cfg.join_window)
        self.engines = []                       # (glob, engine, own rules) per log entry
        for entry in cfg.logs:
            subset = packs if not entry["packs"] else PackSet(
                [packs.packs[n] for n in entry["packs"]])
            own = own_file_rules(packs.packs[entry["own_file"]]) if entry["own_file"] else None
            self.engines.append((entry["path"], Engine(subset, self.clock, cfg.join_window,
                                                       shared=base), own))
        self.base = base
        self._engine_of: dict[str, tuple] = {}
        # Exports: rebuilt with the configuration; the first tick writes them all.
        self.exporter = None
        if cfg.exports and not self.observe:
            from .exports import Exporter
            self.exporter = Exporter(cfg.exports)
        self.exports_dirty = True

    def _follower(self) -> Follower:
        attach = max(self.cfg.window, self.cfg.max_session)
        try:
            os.makedirs(self.cfg.state_dir, mode=0o750, exist_ok=True)
            return Follower([e["path"] for e in self.cfg.logs], self.cfg.state_dir,
                            line_max=self.cfg.line_max, attach_window=attach,
                            line_time=self._line_time, now=lambda: self.now() - self.shift)
        except OSError as exc:
            raise WatchError(f"state_dir: {self.cfg.state_dir}: "
                             f"{exc.strerror or exc}") from None

    def _line_time(self, line: bytes):
        header = parse(line)
        t = self.clock.time(header) if header is not None else None
        return t.timestamp() if t is not None else None

    def reload(self, cfg) -> bool:
        """Take a new configuration and packs, or keep the running ones (logged)."""
        try:
            packs, pconf = build(cfg)
        except Exception as exc:                # noqa: BLE001 — any reason refuses the reload
            log.error("reload refused, keeping the running configuration: %s", exc)
            return False
        old_logs, old_state = self.cfg.logs, self.cfg.state_dir
        self._install(cfg, packs, pconf)
        self.policy.config = pconf
        if cfg.logs != old_logs or cfg.state_dir != old_state:
            self.follower.commit()
            self.follower.close()
            self.follower = self._follower()
        if self.popwrap.settings != cfg.popwrap:
            try:
                self.popwrap.bind(cfg.popwrap)
            except SocketSetupError as exc:
                log.error("%s", exc)
        log.info("configuration reloaded: %d log(s), %d pack(s)", len(cfg.logs), len(packs.packs))
        return True

    # --- the work -------------------------------------------------------------------------
    def _engine_for(self, path: str):
        found = self._engine_of.get(path)
        if found is None:
            found = next(((e, own) for pattern, e, own in self.engines
                          if path == pattern or fnmatch.fnmatchcase(path, pattern)),
                         (self.base, None))
            self._engine_of[path] = found
        return found

    def step(self) -> int:
        """Read what is new, apply it; the number of lines read."""
        lines = self.follower.read()
        now = self.now()
        for line in lines:
            if line.data is None:
                self.base.stats.too_long += 1
                continue
            engine, own = self._engine_for(line.path)
            self.base.stats.lines += 1
            for event in engine.feed_line(line.data, (line.path, line.lineno), own):
                if self.shift and event.time is not None:
                    event.time += timedelta(seconds=self.shift)
                source = f"{line.path}:{line.lineno}" if line.lineno else line.path
                self._apply(self.policy.on_event(event, now, source))
            if self.base.stats.timeouts != self.timeouts_seen:
                self._timed_out(line)
        datagrams = 0
        for event in self.popwrap.receive(now):
            datagrams += 1
            if event is not None:
                self._apply(self.policy.on_event(event, now, POPWRAP_PACK))
        self.tick(now)
        if lines and not self.pending:
            self.follower.commit()
        return len(lines) + datagrams

    def _timed_out(self, line) -> None:
        """A line hit the matcher's time limit (no event from it): warn, at most once a
        minute, naming the line and how many there were."""
        total = self.base.stats.timeouts
        if total < self.timeouts_seen:          # a reload started new counts
            self.timeouts_seen = 0
        self.timeouts_pending += total - self.timeouts_seen
        self.timeouts_seen = total
        now = time.monotonic()
        if now >= self.next_timeout_warning:
            where = f"{line.path}:{line.lineno}" if line.lineno else line.path
            log.warning("%s: pattern match over its time limit, line skipped (no event); "
                        "%d such line(s) since the last warning, %d since start",
                        where, self.timeouts_pending, total)
            self.timeouts_pending = 0
            self.next_timeout_warning = now + TIMEOUT_WARN_EVERY

    def _still_stored(self, key: str) -> bool:
        """Whether the store still holds a gate (False: closed by hand); True when unsure."""
        try:
            return key in self.pending or self.store.is_open(key)
        except (StoreError, ValueError):
            return True

    def tick(self, now: float) -> None:
        still = None
        if self.store is not None and self.outage_since is None:
            still = self._still_stored
        check_all = still is not None and now >= self.next_reconcile
        if check_all:                           # gates closed by hand leave the exports too
            self.next_reconcile = now + RECONCILE_EVERY
        self._apply(self.policy.on_tick(now, still, check_all))
        self._flush(now)
        self._export(now)
        if self.store is not None and now >= self.next_purge and self.outage_since is None:
            self.next_purge = now + PURGE_EVERY
            try:
                self.store.purge(now)
            except StoreError as exc:
                self._outage(exc)

    def _apply(self, actions) -> None:
        for action in actions:
            if isinstance(action, Put):
                g = action.gate
                if action.new:
                    self.new_keys.add(g.key)
                if self.observe and action.new:
                    log.info("would open %s for %s (%s, %s) until %s", g.key, g.user, g.pack,
                             g.protocol, time.strftime("%H:%M:%S", time.localtime(g.expires)))
                self.pending[g.key] = action.gate
            elif isinstance(action, Delete):
                self.pending[action.key] = None
                self.exports_dirty = True       # a closed gate leaves the exports at once
            elif isinstance(action, Warn):
                log.warning("%s", action.message)

    def _flush(self, now: float) -> None:
        if self.observe:
            self.pending.clear()
            return
        if self.outage_since is not None:
            if now < self.next_retry:
                return
            # The store may have lost what it had (a Redis restarted without persistence):
            # write back every gate that is still valid, not only those opened meanwhile.
            for key, gate in self.policy.gates.items():
                if gate.record.expires > now and key not in self.pending:
                    self.pending[key] = gate.record
        if not self.pending:
            return
        try:
            for key in list(self.pending):
                gate = self.pending[key]
                if gate is None:
                    self.store.delete(key)
                elif gate.expires > now:
                    self.store.put(gate)
                    log.log(logging.INFO if key in self.new_keys else logging.DEBUG,
                            "gate %s for %s (%s) until %s", key, gate.user, gate.pack,
                            time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(gate.expires)))
                self.new_keys.discard(key)
                del self.pending[key]
        except StoreError as exc:
            self._outage(exc)
            return
        self.exports_dirty = True
        if self.outage_since is not None:
            log.warning("store reachable again after %.0f s; pending gates written",
                        now - self.outage_since)
            self.outage_since = None
            self.retry_wait = 1.0

    def _export(self, now: float) -> None:
        """Bring the exports to the open gates when they changed; else retry a failed one."""
        if self.exporter is None:
            return
        if self.exports_dirty:
            self.exports_dirty = False
            self.exporter.update([g.record for g in self.policy.gates.values()], now)
        elif self.exporter.failing:
            self.exporter.retry()

    def _outage(self, exc) -> None:
        now = self.now()
        if self.outage_since is None:
            self.outage_since = now
            log.error("store unavailable, will retry (gates kept in memory): %s", exc)
        self.next_retry = now + self.retry_wait
        self.retry_wait = min(RETRY_MAX, self.retry_wait * 2)

    # --- the loop -------------------------------------------------------------------------
    def run(self, once: bool = False, load_config=None) -> int:
        if once:
            while self.step():
                pass
            self._flush(self.now())
            if not self.pending:
                self.follower.commit()
            self.close()
            return 0 if not self.pending else 1
        handlers = {signal.SIGTERM: self._on_stop, signal.SIGINT: self._on_stop,
                    signal.SIGHUP: self._on_hup}
        old = {s: signal.signal(s, h) for s, h in handlers.items()}
        log.info("watching %d log(s) into the %s store", len(self.cfg.logs),
                 "no (observe)" if self.observe else self.cfg.store["type"])
        try:
            while not self.stop:
                if self.reload_requested and load_config is not None:
                    self.reload_requested = False
                    try:
                        self.reload(load_config())
                    except Exception as exc:    # noqa: BLE001 — a bad file keeps the old one
                        log.error("reload refused, keeping the running configuration: %s", exc)
                if not self.step():
                    self.follower.wait(TICK, self.popwrap.fileno())
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self._flush(self.now())
            if not self.pending:
                self.follower.commit()
            self.close()
        log.info("stopped")
        return 0

    def _on_stop(self, signum, frame):
        self.stop = True

    def _on_hup(self, signum, frame):
        self.reload_requested = True

    def close(self) -> None:
        if self.timeouts_pending:
            log.warning("%d more line(s) skipped over the pattern match time limit since the "
                        "last warning, %d since start", self.timeouts_pending, self.timeouts_seen)
            self.timeouts_pending = 0
        self.popwrap.close()
        self.follower.close()
        if self.store is not None:
            self.store.close()
