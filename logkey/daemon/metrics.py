"""Prometheus metrics for `logkey watch` and `logkey policy` (the prometheus-client library).

Served over HTTP (text format, any path) on `metrics.watch` / `metrics.policy` (IP:PORT; off
by default) from a daemon thread of the library's own server. Imported only when one is
configured, so no other command (relayclient least of all) pays for prometheus_client.

Reads: the watcher's snapshot (statusfile.snapshot), computed at each scrape from the counts
the watcher keeps anyway (engine Stats, GatePolicy.counts, lines per file, store errors): no
second set of counters in the reading loop. The policy service has no counts of its own, so it
updates the library's Counter and Histogram objects (thread-safe) on each request.
Trust: the metrics carry no user names and no client addresses: only counts, times, pack
names, export and log file paths. Anyone who can reach the port can read them and open
connections to it: keep it on loopback (status.py warns otherwise). Every metric is listed,
with its meaning, in docs/metrics.md.
"""
from __future__ import annotations

import ipaddress
import logging

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.process_collector import ProcessCollector

from .. import __version__
from ..hostport import parse_hostport
from ..errors import LogkeyError
from .statusfile import STATS_FIELDS, snapshot

log = logging.getLogger("logkey")

# No `_created` series beside every counter (prometheus-client 0.18+; 0.16 has no switch).
getattr(prometheus_client, "disable_created_metrics", lambda: None)()

# seconds; a dir-store answer takes tens of microseconds, a slow Redis up to its 1 s timeout
LATENCY_BUCKETS = (0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)

# Engine Stats field -> (metric name without logkey_watch_ and _total, help)
STATS_METRICS = {
    "too_long": ("lines_too_long", "lines over line_max, skipped whole"),
    "unparsed": ("lines_unparsed", "lines whose header (time, host, program) was not understood"),
    "timeouts": ("regex_timeouts", "rule matches stopped by the time limit"),
    "rejected_ips": ("rejected_ips", "matching lines whose address is not a literal IP address"),
    "refused_lines": ("refused_lines", "key=value lines refused for a missing or repeated key"),
    "near_misses": ("near_misses", "lines of a covered program that look like a login but "
                                   "match no rule (see logkey dry-run)"),
    "not_pop_imap": ("logins_not_pop_imap", "logins of other protocols (managesieve, smtp ...), "
                                            "which never open a gate"),
    "cut_fragments": ("cut_fragments", "rests of lines a logger cut, dropped"),
    "ignored": ("lines_ignored", "known non-events of covered programs (failures, statistics)"),
}
assert set(STATS_METRICS) == set(STATS_FIELDS)

GATE_COUNTS = {          # GatePolicy.counts key -> (metric, help)
    "opened": ("gates_opened", "gates opened (no open gate for the address before)"),
    "refreshed": ("gates_refreshed", "logins that extended a gate already open"),
    "extended": ("gates_extended", "open sessions' gates pushed on (up to max_session)"),
    "expired": ("gates_expired", "gates that reached their expiry"),
    "stale": ("logins_stale", "logins older than the window when read: no gate"),
}
REFUSALS = ("never_gate", "only_gate", "never_gate_users", "max_ips_per_user")
CLOSES = ("logout", "hand")


class MetricsError(LogkeyError):
    """The metrics address cannot be served; str() is one line."""


class MetricsServer:
    def __init__(self, httpd):
        self.httpd = httpd

    def close(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def serve(registry: CollectorRegistry, listen: str, what: str) -> MetricsServer:
    host, port = parse_hostport(listen)
    registry.register(InfoCollector())
    ProcessCollector(registry=registry)
    try:
        started = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsError(f"metrics.{what}: cannot listen on {listen}: "
                           f"{exc.strerror or exc}") from None
    if not ipaddress.ip_address(host).is_loopback:
        log.warning("metrics.%s: serving on %s, not a loopback address: anyone who can reach "
                    "it reads the metrics", what, listen)
    log.info("metrics on http://%s/metrics", listen)
    # prometheus-client 0.17 and later return (server, thread); 0.16 (Debian 12) returns None
    return MetricsServer(started[0] if isinstance(started, tuple) else None)


class InfoCollector:
    def collect(self):
        info = InfoMetricFamily("logkey_build", "the running logkey's version")
        info.add_metric([], {"version": __version__})
        yield info


# --- logkey watch -------------------------------------------------------------------------

def serve_watch(watcher, listen: str) -> MetricsServer:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WatchCollector(watcher))
    return serve(registry, listen, "watch")


def _counter(name, help_, labels=()):
    return CounterMetricFamily("logkey_watch_" + name, help_, labels=list(labels))


def _gauge(name, help_, labels=()):
    return GaugeMetricFamily("logkey_watch_" + name, help_, labels=list(labels))


class WatchCollector:
    """Everything the watcher knows, read at scrape time from its snapshot."""

    def __init__(self, watcher):
        self.watcher = watcher

    def collect(self):
        for _ in range(3):
            try:
                snap = snapshot(self.watcher)
                break
            except RuntimeError:            # a container changed while copied: read again
                continue
        else:
            return
        yield from self._files(snap)
        yield from self._events(snap)
        yield from self._gates(snap)
        yield from self._store(snap)
        yield from self._exports(snap)

    def _files(self, snap):
        lines = _counter("lines_read", "lines read per followed file since start", ["file"])
        behind = _gauge("bytes_behind", "bytes of a followed file not read yet", ["file"])
        readable = _gauge("file_readable", "1 when the followed file exists and is readable",
                          ["file"])
        for path, f in sorted(snap["files"].items()):
            lines.add_metric([path], f["lines"])
            if f["behind"] is not None:
                behind.add_metric([path], f["behind"])
            readable.add_metric([path], 1 if f["readable"] else 0)
        yield from (lines, behind, readable)

    def _events(self, snap):
        events = _counter("events", "events per pack and kind (login, logout, connect)",
                          ["pack", "kind"])
        for pack, kinds in sorted(snap["events"].items()):
            for kind, n in sorted(kinds.items()):
                events.add_metric([pack, kind], n)
        yield events
        last = _gauge("last_event_timestamp_seconds",
                      "when the watcher last read an event of the pack (Unix time)", ["pack"])
        for pack, seen in sorted(snap["last_event"].items()):
            last.add_metric([pack], seen["seen"])
        yield last
        for field, (name, help_) in STATS_METRICS.items():
            yield _single_counter(name, help_, snap["counts"][field])
        drift = _counter("format_drift_lines", "lines of a pack's programs that look like "
                         "logins but match no rule, read while the pack read no login "
                         "(its server's log format may have changed; drift.py)", ["pack"])
        alarm = _gauge("format_drift", "1 while such lines keep coming and no login of the "
                       "pack is read (logkey status names it)", ["pack"])
        for pack, d in sorted((snap.get("drift") or {}).items()):
            drift.add_metric([pack], d["total"])
            alarm.add_metric([pack], 1 if d["lines"] else 0)
        yield from (drift, alarm)

    def _gates(self, snap):
        counts = snap["gates"]
        for key, (name, help_) in GATE_COUNTS.items():
            yield _single_counter(name, help_, counts.get(key, 0))
        refused = _counter("gates_refused", "logins that opened no gate, by the setting that "
                                            "refused them", ["reason"])
        for reason in REFUSALS:
            refused.add_metric([reason], counts.get("refused:" + reason, 0))
        yield refused
        closed = _counter("gates_closed", "gates closed before their expiry: by a logout "
                                          "(window after it already over) or by hand "
                                          "(logkey close)", ["by"])
        for by in CLOSES:
            closed.add_metric([by], counts.get("closed:" + by, 0))
        yield closed
        open_ = _gauge("gates_open", "gates open now")
        open_.add_metric([], snap["gates_open"])
        yield open_

    def _store(self, snap):
        store = snap["store"]
        yield _single_counter("store_errors", "store operations that failed", store["errors"])
        yield _single_counter("store_retries", "attempts to write to the store again during "
                                               "an outage", store["retries"])
        up = _gauge("store_up", "1 when the last store operation worked, 0 during an outage",
                    ["type"])
        up.add_metric([store["type"]], 1 if store["up"] else 0)
        yield up
        pending = _gauge("gates_pending", "gate changes waiting to be written to the store")
        pending.add_metric([], store["pending"])
        yield pending

    def _exports(self, snap):
        failing = _gauge("export_failing", "1 while an export's last update failed",
                         ["format", "path"])
        for e in snap["exports"]:
            failing.add_metric([e["format"], e["path"]], 1 if e["failing"] else 0)
        yield failing
        if snap["exports_changed"] is not None:
            changed = _gauge("exports_changed_timestamp_seconds",
                             "when the set of exported gates last changed (Unix time)")
            changed.add_metric([], snap["exports_changed"])
            yield changed


def _single_counter(name, help_, value):
    c = _counter(name, help_)
    c.add_metric([], value)
    return c


# --- logkey policy ------------------------------------------------------------------------

class PolicyMetrics:
    """Counters the policy server updates as it answers (the library's objects: they lock,
    so the HTTP thread reads them safely)."""

    def __init__(self, server):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        requests = Counter("logkey_policy_requests", "requests answered, by action",
                           ["action"], registry=r)
        self.answered = {action: requests.labels(action) for action in ("OK", "DUNNO")}
        self.latency = Histogram("logkey_policy_request_duration_seconds",
                                 "time from a complete request to its answer",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.store_errors = Counter("logkey_policy_store_errors",
                                    "lookups the store could not answer (answered DUNNO)",
                                    registry=r)
        self.client_errors = Counter("logkey_policy_client_errors",
                                     "connections closed for a protocol error, an oversized "
                                     "or a stuck request, or to make room", registry=r)
        connections = Gauge("logkey_policy_connections", "client connections open",
                            registry=r)
        connections.set_function(lambda: len(server.conns))

    def answer(self, action: str, seconds: float) -> None:
        self.answered[action].inc()
        self.latency.observe(seconds)


def serve_policy(metrics: PolicyMetrics, listen: str) -> MetricsServer:
    return serve(metrics.registry, listen, "policy")
