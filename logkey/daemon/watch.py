"""`logkey watch`: follow the mail logs into the gate store.

Reads: the configured logs (follow.py), the systemd journal for `journal:` entries of logs
(journal.py: one journalctl each; only entries whose trusted fields match reach the packs,
the others are counted and logged), the store at start (to adopt its open gates).
Writes: gates to the store, read offsets and journal cursors to state_dir, its own log to
stderr, and the configured `exports:` (exports.py): brought to the open gates after every
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

The Watcher is the loop; each job is a part of its own, testable alone: build.py (the parts
from the configuration), reading.py (Sources: lines, journal entries, datagrams), feeding.py
(Feeder: what was read to events), applying.py (Applier: the policy's decisions to the store,
offsets committed after them), reconciling.py (Reconciler: exports and the periodic checks)
and reload.py (SIGHUP).
"""
from __future__ import annotations

import glob
import logging
import signal
import time

from ..gates.policy import GatePolicy, PolicyConfig
from ..parse import timelimit
from ..parse.match import PackSet
from ..stores import Store, open_store
from . import reload as reloading
from .applying import Applier
from .build import (Engines, WatchError, build, make_exporter, make_follower,
                    make_journal_readers)
from .feeding import Feeder
from .reading import Sources
from .reconciling import Reconciler
from .statusfile import StatusWriter

log = logging.getLogger("logkey")

TICK = 1.0                      # seconds between timer runs (expiry, session extension)


class Watcher:
    """Sources -> Feeder -> GatePolicy -> Applier, with the Reconciler, the status file and
    the metrics, from `cfg`. `observe`: decide but write no gate; `shift` (--as-of): seconds
    added to the lines' times; `now`: the clock (tests)."""

    def __init__(self, cfg, *, observe: bool = False, store: Store | None = None,
                 shift: float = 0.0, now=time.time):
        self.observe = observe
        self.shift = shift
        self.now = now
        self.stop = False
        self.reload_requested = False
        self.started = time.time()
        self.status = self.metrics = None
        self.engines = None
        self.feeder = Feeder(shift, now)
        self.sources = Sources()
        store = None if observe else (store or open_store(cfg.store))
        try:
            packs, pconf = build(cfg)
            self.policy = GatePolicy(pconf)
            self.applier = Applier(store, self.policy, observe=observe, now=now)
            self.reconciler = Reconciler(self.applier, self.policy)
            self.install(cfg, packs, pconf)
            self.attach_logs()
            self.sources.bind(cfg)
        except BaseException:
            self.sources.close()                # the logs attached and sockets bound so far
            if store is not None:               # the watcher's store, as close() says
                store.close()
            raise
        self.applier.adopt(now())
        for entry in cfg.logs:                  # files there now; later ones when first read
            for path in sorted(glob.glob(entry["path"])) if entry["journal"] is None else ():
                self.feeder.check_file(path)
        self.status = StatusWriter(self)
        if cfg.metrics["watch"]:
            from .metrics import MetricsError, serve_watch
            try:
                self.metrics = serve_watch(self, cfg.metrics["watch"])
            except MetricsError as exc:
                self.close()
                raise WatchError(str(exc)) from None

    def install(self, cfg, packs: PackSet, pconf: PolicyConfig) -> None:
        """A configuration's engines and exports (at start and on each reload)."""
        self.cfg, self.packs, self.policy_config = cfg, packs, pconf
        self.engines = Engines(cfg, packs, previous=self.engines)
        self.feeder.install(cfg, self.engines)
        self.reconciler.install(make_exporter(cfg, self.observe))

    def attach_logs(self) -> None:
        """The follower and journal readers of the configuration (at start and when a reload
        changed the logs)."""
        now = lambda: self.now() - self.shift   # noqa: E731 — the lines' own clock
        follower = make_follower(self.cfg, lambda line: self.engines.line_time(line), now)
        self.sources.attach(follower, make_journal_readers(self.cfg, self.engines.journals, now))

    def reload(self, cfg) -> bool:
        """Take a new configuration and packs, or keep the running ones (reload.py)."""
        return reloading.reload(self, cfg)

    # --- the work -------------------------------------------------------------------------
    def step(self) -> int:
        """Read what is new, apply it; the number of lines, journal entries and datagrams
        read."""
        entries, datagrams = self.sources.entries_read, self.sources.datagrams_read
        lines = self.sources.lines()
        now = self.now()
        for event, source in self.feeder.lines(lines, now):
            self.decide(event, now, source)
        batches = self.sources.journal_batches(self.cfg.line_max)
        for event, source in self.feeder.journal(batches, now):
            self.decide(event, now, source)
        for event, source in self.feeder.datagrams(self.sources.datagrams(now)):
            self.decide(event, now, source)
        entries = self.sources.entries_read - entries
        datagrams = self.sources.datagrams_read - datagrams
        self.tick(now)
        if lines or entries:
            self.applier.commit_read(self.sources)
        return len(lines) + entries + datagrams

    def decide(self, event, now: float, source: str) -> None:
        """One event through the gate policy, its actions applied."""
        self.applier.apply(self.policy.on_event(event, now, source))

    def tick(self, now: float) -> None:
        """The timers: expiry and session extension, reconciling, store writes, exports,
        purge, the status file."""
        self.feeder.drift.tick(now)             # format drift: at most one warning an hour a pack
        still = self.applier.still_stored if self.applier.store_up else None
        check_all = self.reconciler.reconcile(now, still is not None)
        self.applier.apply(self.policy.on_tick(now, still, check_all))
        self.reconciler.check_server(now)
        self.applier.flush(now)
        self.reconciler.export(now)
        self.reconciler.purge(now)
        if self.status is not None:
            self.status.tick()

    # --- the loop -------------------------------------------------------------------------
    def run(self, once: bool = False, load_config=None) -> int:
        with timelimit.cpu_limit():         # the rule matches' time limit, by a CPU timer
            return self._run(once, load_config)

    def _run(self, once: bool, load_config) -> int:
        if once:
            self.sources.stop_at_end()
            while self.step():
                pass
            self._finish()
            return 0 if not self.applier.pending else 1
        handlers = {signal.SIGTERM: self._on_stop, signal.SIGINT: self._on_stop,
                    signal.SIGHUP: self._on_hup}
        old = {s: signal.signal(s, h) for s, h in handlers.items()}
        log.info("watching %d log(s) into the %s store", len(self.cfg.logs),
                 "no (observe)" if self.observe else self.cfg.store["type"])
        try:
            while not self.stop:
                if self.reload_requested and load_config is not None:
                    self.reload_requested = False
                    reloading.reload_from(self, load_config)
                if not self.step():
                    self.sources.wait(TICK)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self._finish()
        log.info("stopped")
        return 0

    def _finish(self) -> None:
        """Last writes, offsets saved when every gate is stored, everything closed."""
        self.applier.flush(self.now())
        self.applier.commit_read(self.sources)
        self.close()

    def _on_stop(self, signum, frame):
        self.stop = True

    def _on_hup(self, signum, frame):
        self.reload_requested = True

    def close(self) -> None:
        self.feeder.close()
        if self.status is not None:
            self.status.write(stopped=True)
            self.status = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        self.sources.close()
        self.applier.close()
