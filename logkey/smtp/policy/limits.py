"""What every client of the policy service is held to, and the count of those that broke it.

Takes: max_request (bytes per request; the codec enforces it), idle_timeout (seconds idle, or
stuck half-way through a request, before a connection is closed), max_connections (None: from
the descriptor limit), and the set of open connections (connection.py adds and removes itself).
Gives: `admit` (the connection cap: the longest-idle connection is closed to make room),
`client_error` (log, rate-limited, and disconnect without a reply: SMTPD_POLICY_README's "in
case of trouble the policy server must not send a reply"), `sweep` (the idle timer) and
`loop_error` (asyncio's reports, an accept that ran out of descriptors as one line).
Writes: log lines (logger logkey.policy), and metrics.client_errors when metrics are on.
Trust: a client is anyone who can connect; nothing it sends is logged, only its address.
"""
from __future__ import annotations

import asyncio
import logging
import resource
import time

log = logging.getLogger("logkey.policy")

MAX_CONNECTIONS = 4096        # ~100 per Postfix instance by default (default_process_limit)
FD_RESERVE = 64               # descriptors kept for listeners, the store and logging
WARNINGS_PER_SECOND = 10      # client-error log lines; the rest are counted


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one (a daemon's usual first step)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(backlog_descriptors: int) -> int:
    """The connection cap from the descriptor limit (raised first), leaving room for what
    the listeners may accept in one go and for the process's own descriptors."""
    return max(16, min(MAX_CONNECTIONS, raise_fd_limit() - FD_RESERVE - backlog_descriptors))


class Limits:
    def __init__(self, conns: set, *, max_request: int, idle_timeout: float,
                 max_connections: int | None):
        self.conns = conns
        self.max_request, self.idle_timeout = max_request, float(idle_timeout)
        self.max_connections = max_connections
        self.metrics = None
        self._warn_window, self._warned, self._unlogged = 0.0, 0, 0
        self._accept_warned = -1.0

    def admit(self, conn) -> None:
        """A new connection; at the cap, the longest-idle one not waiting on a lookup goes."""
        if len(self.conns) >= self.max_connections:
            idle = [c for c in self.conns if not c.busy]
            if idle:
                victim = min(idle, key=lambda c: c.since)
                self.client_error(victim, f"closed to make room: {self.max_connections} "
                                          "connections open")
        self.conns.add(conn)

    def forget(self, conn) -> None:
        self.conns.discard(conn)

    def client_error(self, conn, reason: str) -> None:
        """Log (rate-limited) and disconnect, without a reply."""
        if self.metrics is not None:
            self.metrics.client_errors.inc()
        now = time.monotonic()
        if now - self._warn_window >= 1.0:
            self._flush_warnings()
            self._warn_window, self._warned = now, 0
        if self._warned < WARNINGS_PER_SECOND:
            self._warned += 1
            log.warning("client %s: %s; disconnected", conn.peer(), reason)
        else:
            self._unlogged += 1
        conn.close()

    def _flush_warnings(self):
        if self._unlogged:
            log.warning("%d more client errors in the last second, not logged one by one",
                        self._unlogged)
            self._unlogged = 0

    def loop_error(self, loop, context) -> None:
        """asyncio's reports: running out of descriptors on accept (it then pauses that
        listener for a second) is one rate-limited line, not a traceback per connection."""
        exc = context.get("exception")
        if context.get("message", "").startswith("socket.accept() out of system resource"):
            now = time.monotonic()
            if now - self._accept_warned >= 1.0:
                self._accept_warned = now
                log.warning("cannot accept connections: %s; listener paused for a second",
                            getattr(exc, "strerror", None) or exc)
            return
        loop.default_exception_handler(context)

    async def sweep(self):
        """Close connections idle, or stuck half-way through a request, past idle_timeout."""
        interval = min(1.0, max(0.05, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            limit = time.monotonic() - self.idle_timeout
            for conn in [c for c in self.conns if c.since < limit and not c.busy]:
                if conn.decoder.pending:
                    self.client_error(conn, f"request not complete after "
                                            f"{self.idle_timeout:g}s (slow or stuck client)")
                else:
                    log.debug("client %s: idle for %gs; disconnected", conn.peer(),
                              self.idle_timeout)
                    conn.close()
            if time.monotonic() - self._warn_window >= 1.0:
                self._flush_warnings()
