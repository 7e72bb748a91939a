"""`logkey policy`: the Postfix SMTP access policy service, its parts tied together: the
listeners (listeners.py) accept connections (connection.py: the codec in protocol.py, the
lookups in lookups.py and decide.py), held to the limits in limits.py.

Reads: the gate store (one lookup per request: for the dir store its memo while inotify
reports no change in the directory, else one lstat, run on the event loop; other stores run in a small thread pool so a slow Redis never stalls the loop).
Writes: nothing but replies, the unix sockets it listens on (removed on exit) and log lines.
Trust: anyone who can connect is a client; a client that breaks the protocol, sends more than
`max_request` bytes in one request, or stays idle or half-way through a request for longer
than `idle_timeout` is logged and disconnected, without a reply (SMTPD_POLICY_README: "in case
of trouble the policy server must not send a reply"). Per connection at most `max_request`
bytes are buffered, reading pauses while replies are not being read, and the number of
connections is capped (the longest-idle connection is closed to make room), so memory stays
bounded whatever clients do.
Config (`policy:`): listen (unix:PATH, inet:HOST:PORT, inet:[V6]:PORT), socket_mode,
socket_group, max_request (bytes), idle_timeout (seconds), miss_wait (seconds: a miss is
asked again, less often each time, for up to this long before DUNNO; see lookups.wait_open).

Metrics (`metrics.policy`, optional): `measure(metrics)` counts each answer by action with its
latency (a waited-on miss included), store errors and client errors (metrics.PolicyMetrics);
off, nothing is timed.

The store unreachable (or any internal error) means DUNNO, never OK, with one warning when the
outage starts and one line when the store answers again. SIGTERM/SIGINT: stop accepting,
answer what is in flight, close every connection, remove the unix sockets, exit 0.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time

from ...unixsock import SocketSetupError, group_id
from .connection import Connection
from .limits import Limits, connection_cap
from .listeners import (BACKLOG, PolicyError, addresses, open_listener, parse_listen,
                        remove_sockets)
from .lookups import Lookups

log = logging.getLogger("logkey.policy")

__all__ = ["PolicyError", "PolicyServer", "event_loop_factory", "parse_listen"]

EVENT_LOOPS = ("auto", "asyncio", "uvloop")


def event_loop_factory(kind: str = "auto"):
    """The event loop `logkey policy` runs on: uvloop (the optional extra `fast`), asyncio's
    own, or auto: uvloop when it is installed. PolicyError when uvloop is asked for and
    missing."""
    if kind not in EVENT_LOOPS:
        raise PolicyError(f"event loop {kind!r}: expected one of {', '.join(EVENT_LOOPS)}")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise PolicyError("event loop uvloop: uvloop is not installed "
                                  "(pip install 'logkey[fast]', or apt install "
                                  "python3-uvloop)") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


class PolicyServer:
    def __init__(self, store, *, listen, ipv6_prefix=None, socket_mode="0660",
                 socket_group=None, max_request=65536, idle_timeout=300.0,
                 max_connections=None, threaded=None, miss_wait=0.0):
        self.listen = [(spec, parse_listen(spec)) for spec in listen]
        self.socket_mode = int(socket_mode, 8)
        try:
            self.gid = group_id(socket_group)
        except SocketSetupError as exc:
            raise PolicyError(f"socket_group: {exc}") from None
        self.conns: set[Connection] = set()
        self.lookups = Lookups(store, ipv6_prefix=ipv6_prefix, miss_wait=miss_wait,
                               threaded=threaded)
        self.limits = Limits(self.conns, max_request=max_request, idle_timeout=idle_timeout,
                             max_connections=max_connections)
        self.servers, self.sockets = [], []       # asyncio servers; (path, inode) of ours
        self.loop = None
        self._sweeper = None
        self.metrics = None

    @property
    def max_connections(self) -> int | None:
        return self.limits.max_connections

    def measure(self, metrics) -> None:
        """Count every answer, its latency and the errors in `metrics` (a PolicyMetrics)."""
        self.metrics = self.lookups.metrics = self.limits.metrics = metrics

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.limits.max_connections is None:
            self.limits.max_connections = connection_cap(BACKLOG * len(self.listen))
        self.loop.set_exception_handler(self.limits.loop_error)
        try:
            for spec, where in self.listen:
                factory = lambda spec=spec: Connection(self.lookups, self.limits,  # noqa: E731
                                                       spec)
                server, unix_socket = await open_listener(self.loop, spec, where, factory,
                                                          self.socket_mode, self.gid)
                self.servers.append(server)
                if unix_socket is not None:
                    self.sockets.append(unix_socket)
        except BaseException:
            await self.close()
            raise
        self._sweeper = self.loop.create_task(self.limits.sweep())

    def addresses(self) -> list[str]:
        return addresses(self.servers)

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        await self.start()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, stop.set)
        self.loop.add_signal_handler(signal.SIGHUP, lambda: log.info(
            "SIGHUP: nothing to reload; restart logkey policy to apply a new configuration"))
        log.info("listening on %s (%s lookups, at most %d connections)",
                 ", ".join(self.addresses()), "in-loop" if self.lookups.inline else "threaded",
                 self.max_connections)
        await stop.wait()
        log.info("stopping")
        await self.close()

    async def close(self, grace: float = 5.0) -> None:
        self.lookups.stopping = True                  # misses waited on answer DUNNO now
        for server in self.servers:
            server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = time.monotonic() + grace           # answer the lookups in flight
        while any(c.busy for c in self.conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.conns):
            conn.transport.close()                    # flushes replies already written
        remove_sockets(self.sockets)                  # only if it is still our socket
        self.sockets = []
        self.lookups.close()
        await asyncio.sleep(0)
