"""`logkey watch`: follow the mail logs into the gate store.

Reads: the configured logs (follow.py), the systemd journal for `journal:` entries of logs
(journal.py: one journalctl each; only entries whose trusted fields match reach the packs,
the others are counted and logged), the store at start (to adopt its open gates).
Writes: gates to the store, read offsets and journal cursors to state_dir, its own log to
stderr, and the configured `exports:` (smtp/exporter.py): brought to the open gates after every
flush that changed gates and on every tick where a gate expired or was closed, so an expired
gate leaves them within a tick (a second), with no log line.
Trust: events come from the engine (packs linted, IPs canonical); the policy decides; the
store is written only with validated keys. Offsets are saved only once every gate the lines
opened is in the store, so a crash or a store outage loses no login, and a line read again
after a crash is judged by its own time (a stale login opens nothing).
popwrap: when `popwrap.socket` is set, the watcher takes login/logout datagrams from
`logkey popwrap` (popsocket.py); each is an event of the pack "popwrap", which reports logouts
(the gate stays open during the session, up to max_session); `logkey popwrap --dovecot`'s
postlogin datagrams are logins of the pack "dovecot-postlogin" (no logout: the gate lasts
window). dovecot_policy: with `dovecot_policy.listen` set, the watcher is Dovecot's auth
policy server (authpolicyserver.py, its own thread): reported successful POP3/IMAP
authentications are logins of the pack "dovecot-policy" (gate: window).
Status and metrics: every few seconds the offsets are committed and `state_dir/watch.status`
(JSON) written (statusfile.py; `logkey status` reads both); with `metrics.watch` set,
Prometheus metrics are served over HTTP on that address (metrics.py, imported only then).
Audit: every gate decision (opened, refreshed, refused, closed) is one line of its own log
(audit.py; all lines in docs/log-lines.md); a followed file that others can write, or logins
read from forgeable syslog lines, give one warning per file (logtrust.py); lines that look
like logins of a pack that reads no login (its server changed its format) give one warning an
hour per pack (drift.py).
Config: logs, packs, store, state_dir, window, max_session, never_gate*, only_gate,
max_ips_per_user, ipv6_prefix, join_window, logout_hold, timezone, line_max, rotate_wait,
exports, popwrap, dovecot_policy, metrics.
"""
from __future__ import annotations

import fnmatch
import glob
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from datetime import timedelta

from ..gates import audit
from ..sources import journal, journalread
from .drift import DriftAlarm
from ..parse.engine import Engine
from ..errors import LogkeyError
from ..events import LOGIN
from ..sources.follow import Follower
from ..gates.policy import EXPIRED, Delete, GatePolicy, PolicyConfig, Put
from ..parse.headers import Clock, parse
from ..sources.logtrust import LogWarnings
from ..parse.match import PackSet, own_file_rules
from ..parse.packfiles import load_packs
from ..stores import Store, StoreError, open_store
from ..sources.authpolicyserver import AuthPolicyListener, PolicyListenError
from ..sources.popsocket import POPWRAP_PACK, PopwrapListener
from ..unixsock import SocketSetupError
from .statusfile import StatusWriter

log = logging.getLogger("logkey")

TICK = 1.0                      # seconds between timer runs (expiry, session extension)
PURGE_EVERY = 60.0              # seconds between removals of expired gates from the store
RETRY_MAX = 30.0                # longest wait between store retries during an outage
RECONCILE_EVERY = 5.0           # seconds between checks for gates closed by hand
SERVER_CHECK_EVERY = 1.0        # seconds between asks whether the store is another server
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
    """Everything that comes from the configuration and the packs, checked: (packs, policy
    config). Raises PackError/WatchError."""
    packs = load_packs(cfg.packs, cfg.patterns_dir, services=cfg.services, proxies=cfg.trusted_proxies)
    for i, entry in enumerate(cfg.logs):
        source = entry["journal"]
        names = (source["packs"] if source else entry["packs"]) or []
        where = f"logs[{i}].journal.packs" if source else f"logs[{i}].packs"
        for name in names + ([entry["own_file"]] if entry["own_file"] else []):
            if name not in packs.packs:
                raise WatchError(f"{cfg.path}: {where}: no pack named {name!r}")
        bad = unread_alias(entry, packs)
        if bad:
            raise WatchError(f"{cfg.path}: logs[{i}].aliases.{bad[0]}: no loaded pack reads "
                             f"program {bad[1]!r}")
    if journal_sources(cfg, packs):
        try:
            journalread.journalctl()
        except journalread.JournalError as exc:
            raise WatchError(f"{cfg.path}: logs: {exc}") from None
    return packs, policy_config(cfg, packs)


def unread_alias(entry, packs: PackSet):
    """(tag, program) of the entry's first alias whose program no pack it uses reads, or None."""
    subset = packs if not entry["packs"] else PackSet([packs.packs[n] for n in entry["packs"]
                                                       if n in packs.packs])
    for tag, program in (entry.get("aliases") or {}).items():
        if not subset.rules_for(program):
            return tag, program
    return None


def journal_sources(cfg, packs: PackSet) -> list:
    """(source, expectations, engine packs) for each `journal:` entry of logs; WatchError
    when one has no expectation to check entries against."""
    out = []
    for i, entry in enumerate(cfg.logs):
        source = entry["journal"]
        if source is None:
            continue
        try:
            exps = journal.expectations(source, packs, f"logs[{i}].journal")
        except ValueError as exc:
            raise WatchError(f"{cfg.path}: {exc}") from None
        subset = packs if not source["packs"] else PackSet(
            [packs.packs[n] for n in source["packs"]])
        out.append((source, exps, subset))
    return out


class Watcher:
    def __init__(self, cfg, *, observe: bool = False, store: Store | None = None,
                 shift: float = 0.0, now=time.time):
        self.observe = observe
        self.shift = shift                      # seconds added to line times (--as-of)
        self.now = now
        self.stop = False
        self.reload_requested = False
        self.started = time.time()
        self.lines_read: Counter = Counter()    # lines read per followed file since start
        self.last_events: dict = {}             # pack -> {kind, time (the line's), seen}
        self.store_errors = self.store_retries = 0
        self.status = self.metrics = None
        self.store = None if observe else (store or open_store(cfg.store))
        self.trust = LogWarnings()
        self.trust_checked: set[str] = set()    # paths whose permissions were looked at
        self.drift = DriftAlarm()               # near-misses while a pack reads no login
        self._install(cfg, *build(cfg))
        self.policy = GatePolicy(self.policy_config)
        self.pending: dict[str, object] = {}    # key -> GateRecord to write, or None to delete
        self.outage_since: float | None = None
        self.next_retry = 0.0
        self.retry_wait = 1.0
        self.next_purge = 0.0
        self.next_reconcile = 0.0
        self.next_server_check = 0.0
        self.timeouts_seen = 0                  # match time-outs warned about or pending
        self.timeouts_pending = 0
        self.next_timeout_warning = 0.0
        self.follower = self._follower()
        self.popwrap = PopwrapListener()
        try:
            self.popwrap.bind(cfg.popwrap)
        except SocketSetupError as exc:
            raise WatchError(str(exc)) from None
        self.authpolicy = AuthPolicyListener()
        try:
            self.authpolicy.bind(cfg.dovecot_policy)
        except PolicyListenError as exc:
            self.popwrap.close()
            raise WatchError(f"{cfg.path}: {exc}") from None
        if self.store is not None:
            try:
                self.policy.adopt(self.store.scan(self.now()), self.now())
            except StoreError as exc:
                self._outage(exc)
            if self.policy.gates:
                log.info("%d open gate(s) taken over from the store", len(self.policy.gates))
        for entry in cfg.logs:                  # files there now; later ones when first read
            for path in sorted(glob.glob(entry["path"])) if entry["journal"] is None else ():
                self._check_file(path)
        self.status = StatusWriter(self)
        if cfg.metrics["watch"]:
            from .metrics import MetricsError, serve_watch
            try:
                self.metrics = serve_watch(self, cfg.metrics["watch"])
            except MetricsError as exc:
                self.close()
                raise WatchError(str(exc)) from None

    # --- configuration ----------------------------------------------------------------------
    def _install(self, cfg, packs: PackSet, pconf: PolicyConfig) -> None:
        self.cfg, self.packs, self.policy_config = cfg, packs, pconf
        self.trust.entries = list(cfg.logs)
        self.clock = Clock(None, cfg.timezone)
        base = Engine(packs, self.clock, cfg.join_window, logout_hold=cfg.logout_hold)
        if getattr(self, "base", None) is not None:
            base.stats = self.base.stats        # counts go on across a reload (metrics)
        self.engines = []                       # (glob, engine, own rules) per log file entry
        for entry in cfg.logs:
            if entry["journal"] is not None:
                continue
            subset = (packs if not entry["packs"] else PackSet(
                [packs.packs[n] for n in entry["packs"]])).with_aliases(entry["aliases"])
            own = own_file_rules(packs.packs[entry["own_file"]]) if entry["own_file"] else None
            self.engines.append((entry["path"], Engine(subset, self.clock, cfg.join_window,
                                                       shared=base), own))
        self.base = base
        self._engine_of: dict[str, tuple] = {}
        self.journals = [(source, exps, Engine(subset, self.clock, cfg.join_window, shared=base))
                         for source, exps, subset in journal_sources(cfg, packs)]
        # Exports: rebuilt with the configuration; the first tick writes them all.
        self.exporter = None
        if cfg.exports and not self.observe:
            from ..smtp.exporter import Exporter
            self.exporter = Exporter(cfg.exports)
        self.exports_dirty = True

    def _follower(self) -> Follower:
        attach = max(self.cfg.window, self.cfg.max_session)
        try:
            os.makedirs(self.cfg.state_dir, mode=0o750, exist_ok=True)
            follower = Follower([e["path"] for e in self.cfg.logs if e["journal"] is None],
                                self.cfg.state_dir, line_max=self.cfg.line_max,
                                attach_window=attach, line_time=self._line_time,
                                rotate_wait=self.cfg.rotate_wait,
                                now=lambda: self.now() - self.shift)
        except OSError as exc:
            raise WatchError(f"state_dir: {self.cfg.state_dir}: "
                             f"{exc.strerror or exc}") from None
        # One journalctl per journal entry, started at the first read; its cursor is saved in
        # state_dir with the offsets (commit), under a name made from the entry's settings.
        self.readers = [journalread.JournalReader(source, exps, state_dir=self.cfg.state_dir,
                                              attach_window=attach,
                                              now=lambda: self.now() - self.shift)
                        for source, exps, _ in self.journals]
        self.journal_stats = [journal.JournalStats() for _ in self.readers]
        self.refusals = journal.RefusalLog(log)
        return follower

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
        if cfg.metrics != self.cfg.metrics:
            log.warning("metrics: the new addresses take effect at the next start")
        old_exps = [exps for _, exps, _ in self.journals]
        self._install(cfg, packs, pconf)
        self.drift.reset()
        self.policy.config = pconf
        if cfg.logs != old_logs or cfg.state_dir != old_state or \
                old_exps != [exps for _, exps, _ in self.journals]:
            self._commit()
            self.follower.close()
            self._close_readers()
            self.follower = self._follower()
        if self.popwrap.settings != cfg.popwrap:
            try:
                self.popwrap.bind(cfg.popwrap)
            except SocketSetupError as exc:
                log.error("%s", exc)
        try:
            self.authpolicy.update(cfg.dovecot_policy)
        except PolicyListenError as exc:
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
            self.lines_read[line.path] += 1
            if line.data is None:
                self.base.stats.too_long += 1
                continue
            engine, own = self._engine_for(line.path)
            self.base.stats.lines += 1
            if line.path not in self.trust_checked:
                self._check_file(line.path)
            raw = engine.match_line(line.data, (line.path, line.lineno), own)
            if engine.near_miss is not None:
                self.drift.near_miss(*engine.near_miss, now)
            if raw is not None:                 # a login from a forgeable syslog line?
                self._warn(self.trust.event(line.path, raw))
            for event in engine.sequence(raw, engine.cut_mark):
                if self.shift and event.time is not None:
                    event.time += timedelta(seconds=self.shift)
                source = f"{line.path}:{line.lineno}" if line.lineno else line.path
                self._seen(event)
                self._apply(self.policy.on_event(event, now, source))
            if self.base.stats.timeouts != self.timeouts_seen:
                self._timed_out(line)
        entries = 0
        for reader, (_, exps, engine), stats in zip(self.readers, self.journals,
                                                     self.journal_stats):
            got = reader.read()
            entries += len(got)
            self.base.stats.lines += len(got)
            for where, header, cursor in journal.accepted(
                    got, exps, stats, reader.label, self.cfg.line_max, self.refusals.refused):
                events = engine.feed_header(header, where)
                if engine.near_miss is not None:
                    self.drift.near_miss(*engine.near_miss, now)
                for event in events:
                    if self.shift and event.time is not None:
                        event.time += timedelta(seconds=self.shift)
                    self._seen(event)
                    self._apply(self.policy.on_event(event, now, f"{reader.label}:{cursor}"))
        datagrams = 0
        for event in self.popwrap.receive(now):
            datagrams += 1
            if event is not None:
                self.base.stats.events[(event.pack, event.kind)] += 1
                self._seen(event)
                self._apply(self.policy.on_event(event, now, POPWRAP_PACK))
        for event in self.authpolicy.receive(now):
            datagrams += 1
            self.base.stats.events[(event.pack, event.kind)] += 1
            self._seen(event)
            self._apply(self.policy.on_event(event, now, event.pack))
        self.tick(now)
        if (lines or entries) and not self.pending:
            self._commit()
        return len(lines) + entries + datagrams

    def _commit(self) -> None:
        """Save the offsets and journal cursors of everything read (all its gates are stored)."""
        self.follower.commit()
        for reader in self.readers:
            try:
                reader.commit()
            except OSError as exc:
                log.warning("%s: cursor not saved: %s", reader.label, exc)

    def _close_readers(self) -> None:
        for reader, stats in zip(self.readers, self.journal_stats):
            reader.close()
            log.info("%s: %s", reader.label, stats.line())

    def _seen(self, event) -> None:
        """The last event of each pack, for `logkey status` and the metrics."""
        if event.kind == LOGIN:
            self.drift.login(event.pack, self.now())
        self.last_events[event.pack] = {
            "kind": event.kind, "seen": time.time(),
            "time": event.time.timestamp() if event.time is not None else None}

    def _check_file(self, path: str) -> None:
        self.trust_checked.add(path)
        self._warn(self.trust.file(path))

    @staticmethod
    def _warn(message: str | None) -> None:
        if message:
            log.warning("%s", message)

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
        self.drift.tick(now)                    # format drift: at most one warning an hour a pack
        still = None
        if self.store is not None and self.outage_since is None:
            still = self._still_stored
        check_all = still is not None and now >= self.next_reconcile
        if self.exporter is not None and self.exporter.changed_elsewhere():
            # `logkey open`/`close` wrote the exports: check the store now (not at the next
            # pass) and write the exports again from it (a gate opened by hand may have
            # expired since, one closed by hand must not come back from our memory).
            self.exporter.forget()
            self.exports_dirty = True
            check_all = still is not None
        if check_all:                           # gates closed by hand leave the exports too
            self.next_reconcile = now + RECONCILE_EVERY
            if self.exporter is not None:       # ... and those opened elsewhere join them
                self._adopt_stored(now)
        self._apply(self.policy.on_tick(now, still, check_all))
        if self.store is not None and self.outage_since is None and \
                now >= self.next_server_check:
            self.next_server_check = now + SERVER_CHECK_EVERY
            self._check_server(now)
        self._flush(now)
        self._export(now)
        if self.store is not None and now >= self.next_purge and self.outage_since is None:
            self.next_purge = now + PURGE_EVERY
            try:
                self.store.purge(now)
            except StoreError as exc:
                self._outage(exc)
            if getattr(self.store, "temps_removed", 0):
                log.info("gate store: %d stale temp file(s) of a writer that died removed",
                         self.store.temps_removed)
        if self.status is not None:
            self.status.tick()

    def _check_server(self, now: float) -> None:
        """A store that may have lost gates without an error (a Redis failover, a restart
        without persistence) gets every open gate again."""
        try:
            lost = self.store.writes_lost()
        except StoreError as exc:
            self._outage(exc)
            return
        if lost:
            n = self._write_back(now)
            log.warning("store: another server answers now (failover or restart): %d open "
                        "gate(s) written again", n)

    def _write_back(self, now: float) -> int:
        """Every gate still valid into pending (the store may have lost it); how many."""
        n = 0
        for key, gate in self.policy.gates.items():
            if gate.record.expires > now and key not in self.pending:
                self.pending[key] = gate.record
                n += 1
        return n

    def _adopt_stored(self, now: float) -> None:
        """Gates in the store that this watcher did not open or knows with an earlier expiry
        (`logkey open`, another watcher writing the same Redis): taken into the gate policy,
        so the exports hold every open gate, whoever opened it."""
        try:
            changed = self.policy.adopt(self.store.scan(now), now)
        except StoreError as exc:
            self._outage(exc)
            return
        if changed:
            log.debug("%d gate(s) opened or extended elsewhere taken from the store", changed)
            self.exports_dirty = True

    def _apply(self, actions) -> None:
        for action in actions:
            log.log(audit.level(action), "%s", audit.line(action, self.observe))
            if isinstance(action, Put):
                self.pending[action.gate.key] = action.gate
            elif isinstance(action, Delete):
                if action.why != EXPIRED:       # an expired gate is closed in the store by its
                    self.pending[action.key] = None     # own time (and may have been extended
                self.exports_dirty = True       # there since); it leaves the exports at once

    def _flush(self, now: float) -> None:
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
            self._write_back(now)
        if not self.pending:
            return
        try:
            for key in list(self.pending):
                gate = self.pending[key]
                if gate is None:
                    self.store.delete(key)
                elif gate.expires > now:
                    self.store.put(gate)
                    log.debug("stored %s until %s", key,
                              time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(gate.expires)))
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
        self.store_errors += 1
        now = self.now()
        if self.outage_since is None:
            self.outage_since = now
            log.error("store unavailable, will retry (gates kept in memory): %s", exc)
        self.next_retry = now + self.retry_wait
        self.retry_wait = min(RETRY_MAX, self.retry_wait * 2)

    # --- the loop -------------------------------------------------------------------------
    def run(self, once: bool = False, load_config=None) -> int:
        if once:
            for reader in self.readers:
                reader.follow = False           # read the journal to its end, then stop
            while self.step():
                pass
            self._flush(self.now())
            if not self.pending:
                self._commit()
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
                    self.follower.wait(TICK, [fd for fd in [
                        self.popwrap.fileno(), self.authpolicy.fileno()] + [
                        r.fileno() for r in self.readers] if fd is not None])
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self._flush(self.now())
            if not self.pending:
                self._commit()
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
        if self.status is not None:
            self.status.write(stopped=True)
            self.status = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        self.popwrap.close()
        self.authpolicy.close()
        self.follower.close()
        self._close_readers()
        if self.store is not None:
            self.store.close()
