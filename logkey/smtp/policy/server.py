"""`logkey policy`: the Postfix SMTP access policy service (asyncio I/O around the codec in
protocol.py and the decision in decide.py).

Reads: the gate store (one `is_open` per request: one open/fstat for the dir store, run on
the event loop; other stores run in a small thread pool so a slow Redis never stalls the loop).
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
asked again, less often each time, for up to this long before DUNNO; see wait_open).

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
import os
import resource
import signal
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from ...errors import LogkeyError
from ...unixsock import SocketSetupError, bind_unix, group_id
from ...events import canonical_ip
from .decide import DUNNO, OK, decide
from .protocol import Decoder, ProtocolError, reply

log = logging.getLogger("logkey.policy")

MAX_CONNECTIONS = 4096        # ~100 per Postfix instance by default (default_process_limit)
FD_RESERVE = 64               # descriptors kept for listeners, the store and logging
THREADS = 16                  # store lookups in flight at once (non-dir stores)
WARNINGS_PER_SECOND = 10      # client-error log lines; the rest are counted
# The listen backlog, which is also how many connections asyncio accepts in one go per
# listener, before any of them is set up (and before the cap below can close an idle one):
# the connection cap leaves that many descriptors free per listener, so a flood of connects
# never runs the process out of descriptors.
BACKLOG = 128
REPLIES = {OK: reply(OK), DUNNO: reply(DUNNO)}
MISS_POLL_FIRST = 0.005       # a miss is asked again after 5 ms, then 10, 20, ... 100 ms apart
MISS_POLL_MAX = 0.1
KEEP = ("request", "client_address")        # all decide() looks at


class PolicyError(LogkeyError):
    """A listener cannot be set up; str() is one line."""


def parse_listen(spec: str) -> tuple:
    """("unix", path) or ("inet", host, port) from unix:PATH, inet:HOST:PORT, inet:[V6]:PORT."""
    if spec.startswith("unix:") and len(spec) > 5:
        return ("unix", spec[5:])
    if spec.startswith("inet:"):
        rest = spec[5:]
        if rest.startswith("["):
            host, sep, port = rest[1:].partition("]:")
        else:
            host, sep, port = rest.rpartition(":")
            sep = sep if ":" not in host else ""        # bare IPv6 needs brackets
        if sep and host and port.isdigit() and int(port) <= 65535:
            return ("inet", host, int(port))
    raise PolicyError(f"listen {spec!r}: expected unix:PATH, inet:HOST:PORT or inet:[IPV6]:PORT")


def _raise_fd_limit() -> int:
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


class _Connection(asyncio.Protocol):
    """One client connection: bytes -> Decoder -> decision -> reply, in order."""

    def __init__(self, server: "PolicyServer", listener: str):
        self.server, self.listener = server, listener
        self.decoder = Decoder(server.max_request, KEEP)
        self.transport = None
        self.since = time.monotonic()   # last completed request, or start of a partial one
        self.busy = False               # a threaded lookup or a miss wait is in flight
        self.queue = deque()            # requests waiting for it
        self.task = None
        self.write_paused = False
        self.reading = True
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        self.server._add(self)

    def connection_lost(self, exc):
        self.closed = True
        self.server.conns.discard(self)

    def peer(self) -> str:
        name = self.transport.get_extra_info("peername") if self.transport else None
        if isinstance(name, tuple):
            host = f"[{name[0]}]" if ":" in name[0] else name[0]
            return f"{host}:{name[1]}"
        return self.listener

    def data_received(self, data: bytes):
        had_partial = self.decoder.pending
        try:
            requests = self.decoder.feed(data)
        except ProtocolError as exc:
            self.server.client_error(self, str(exc))
            return
        if requests or not had_partial:
            self.since = time.monotonic()
        if not requests:
            return
        if self.busy:                                 # a lookup or a miss wait is under way
            self.queue.extend(requests)
            return
        if not self.server.inline:
            self.queue.extend(requests)
            self._serve_queue(None, time.perf_counter())
            return
        answer, replies, metrics = self.server.answer, [], self.server.metrics
        for i, request in enumerate(requests):
            started = time.perf_counter() if metrics is not None else 0.0
            action, wait_for = answer(request)
            if wait_for is not None:                  # a miss: the rest waits its turn
                self.queue.append(request)
                self.queue.extend(requests[i + 1:])
                self._serve_queue(wait_for, started)
                break
            if metrics is not None:
                metrics.answer(action, time.perf_counter() - started)
            replies.append(REPLIES[action])
        if replies:
            self.transport.write(replies[0] if len(replies) == 1 else b"".join(replies))

    # -- the slow path: threaded stores, and misses waited on; replies stay in order, reading
    #    is paused meanwhile ------------------------------------------------------------------

    def _serve_queue(self, first_miss: str | None, started: float):
        self.busy = True
        self._update_reading()
        self.task = self.server.loop.create_task(self._serve(first_miss, started))

    async def _serve(self, first_miss: str | None, started: float):
        server = self.server
        try:
            while self.queue and not self.closed:
                request = self.queue.popleft()
                if first_miss is not None:            # looked up already, inline
                    action, wait_for, first_miss = DUNNO, first_miss, None
                else:
                    started = time.perf_counter()
                    action, wait_for = await server.answer_async(request)
                if wait_for is not None:
                    action = await server.wait_open(wait_for)
                if self.closed:
                    break
                if server.metrics is not None:
                    server.metrics.answer(action, time.perf_counter() - started)
                self.transport.write(REPLIES[action])
                self.since = time.monotonic()
        except asyncio.CancelledError:                # shutting down: no reply
            self.closed = True
        finally:
            self.busy, self.task = False, None
            self._update_reading()

    # -- flow control: a client that does not read its replies is not read either ----------

    def pause_writing(self):
        self.write_paused = True
        self._update_reading()

    def resume_writing(self):
        self.write_paused = False
        self._update_reading()

    def _update_reading(self):
        want = not (self.write_paused or self.busy)
        if want != self.reading and not self.closed:
            self.reading = want
            (self.transport.resume_reading if want else self.transport.pause_reading)()

    def close(self):
        self.closed = True
        self.server.conns.discard(self)
        self.transport.abort()


class PolicyServer:
    def __init__(self, store, *, listen, ipv6_prefix=None, socket_mode="0660",
                 socket_group=None, max_request=65536, idle_timeout=300.0,
                 max_connections=None, threaded=None, miss_wait=0.0):
        from ...stores.dirstore import DirStore
        self.store, self.ipv6_prefix = store, ipv6_prefix
        self.listen = [(spec, parse_listen(spec)) for spec in listen]
        self.socket_mode = int(socket_mode, 8)
        try:
            self.gid = group_id(socket_group)
        except SocketSetupError as exc:
            raise PolicyError(f"socket_group: {exc}") from None
        self.max_request, self.idle_timeout = max_request, float(idle_timeout)
        self.max_connections = max_connections
        self.miss_wait, self.stopping = float(miss_wait), False
        self.inline = not threaded if threaded is not None else isinstance(store, DirStore)
        self.is_open = lambda ip: store.is_open(ip, ipv6_prefix)
        self._error, self._consulted = None, False
        self.pool = None if self.inline else ThreadPoolExecutor(THREADS, "logkey-policy")
        self.conns: set[_Connection] = set()
        self.servers, self.sockets = [], []       # asyncio servers; (path, inode) of ours
        self.outage, self.outage_answers = False, 0
        self._warn_window, self._warned, self._unlogged = 0.0, 0, 0
        self._accept_warned = -1.0
        self.loop = None
        self._sweeper = None
        self.metrics = None

    def measure(self, metrics) -> None:
        """Count every answer, its latency and the errors in `metrics` (a PolicyMetrics)."""
        self.metrics = metrics

    # -- decisions -----------------------------------------------------------------------

    def lookup(self, request: dict) -> tuple[str, BaseException | None, bool]:
        """(action, error, whether the store was asked); thread-safe (the threaded path)."""
        state = [None, False]

        def is_open(ip):
            state[1] = True
            return self.is_open(ip)

        action = decide(request, is_open, lambda exc: state.__setitem__(0, exc))
        return action, state[0], state[1]

    def _miss(self, request: dict) -> str | None:
        """The address to wait for when the store said closed (not failed) and miss_wait is on."""
        if self.miss_wait <= 0 or self.stopping:
            return None
        return canonical_ip(request.get("client_address"))

    # The in-loop path: one request at a time, so the state lives on the server.
    def _probe(self, ip: str) -> bool:
        self._consulted = True
        return self.is_open(ip)

    def _failed(self, exc: BaseException) -> None:
        self._error = exc

    def answer(self, request: dict) -> tuple[str, str | None]:
        """(action, address to wait for on a miss or None), inline."""
        self._error, self._consulted = None, False
        action = decide(request, self._probe, self._failed)
        if self._error is not None or self.outage:
            self.account(self._error, self._consulted)
        if action == DUNNO and self._consulted and self._error is None:
            return action, self._miss(request)
        return action, None

    async def answer_async(self, request: dict) -> tuple[str, str | None]:
        if self.inline:
            return self.answer(request)
        try:
            action, error, consulted = await self.loop.run_in_executor(self.pool, self.lookup,
                                                                       request)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:                  # a bug: DUNNO, logged once
            action, error, consulted = DUNNO, exc, False
        self.account(error, consulted)
        if action == DUNNO and consulted and error is None:
            return action, self._miss(request)
        return action, None

    async def wait_open(self, ip: str) -> str:
        """A miss: the login may be in the log but not yet in the store (the watcher follows the
        log a few milliseconds behind, and a client may start SMTP at once after its POP QUIT).
        Ask again, a little less often each time, for up to miss_wait seconds: OK as soon as the
        gate is there, DUNNO when the time is up, the store fails or logkey is stopping."""
        deadline = self.loop.time() + self.miss_wait
        pause = MISS_POLL_FIRST
        while not self.stopping:
            pause = min(pause, deadline - self.loop.time())
            if pause <= 0:
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, MISS_POLL_MAX)
            try:
                if self.inline:
                    is_open = self.is_open(ip)
                else:
                    is_open = await self.loop.run_in_executor(self.pool, self.is_open, ip)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.account(exc, True)
                return DUNNO
            if is_open is True:
                return OK
        return DUNNO

    def account(self, error, consulted) -> None:
        """One warning when lookups start failing, one line when the store answers again."""
        if error is not None:
            if self.metrics is not None:
                self.metrics.store_errors.inc()
            self.outage_answers += 1
            if not self.outage:
                self.outage = True
                log.warning("store unreachable, answering DUNNO until it is back: %s",
                            " ".join(str(error).split()) or type(error).__name__)
        elif consulted and self.outage:
            log.warning("store reachable again; %d requests were answered DUNNO meanwhile",
                        self.outage_answers)
            self.outage, self.outage_answers = False, 0

    # -- connections -----------------------------------------------------------------------

    def _add(self, conn: _Connection) -> None:
        if len(self.conns) >= self.max_connections:
            idle = [c for c in self.conns if not c.busy]
            if idle:
                victim = min(idle, key=lambda c: c.since)
                self.client_error(victim, f"closed to make room: {self.max_connections} "
                                          "connections open")
        self.conns.add(conn)

    def client_error(self, conn: _Connection, reason: str) -> None:
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

    def _loop_error(self, loop, context) -> None:
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

    async def _sweep(self):
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

    # -- listeners -------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.max_connections is None:
            self.max_connections = max(16, min(MAX_CONNECTIONS, _raise_fd_limit() - FD_RESERVE
                                               - BACKLOG * len(self.listen)))
        self.loop.set_exception_handler(self._loop_error)
        try:
            for spec, where in self.listen:
                factory = lambda spec=spec: _Connection(self, spec)  # noqa: E731
                if where[0] == "unix":
                    self.servers.append(await self._unix(spec, where[1], factory))
                else:
                    try:
                        self.servers.append(await self.loop.create_server(
                            factory, where[1], where[2], backlog=BACKLOG, reuse_address=True))
                    except OSError as exc:
                        raise PolicyError(f"listen {spec}: {exc.strerror or exc}") from None
        except BaseException:
            await self.close()
            raise
        self._sweeper = self.loop.create_task(self._sweep())

    async def _unix(self, spec: str, path: str, factory):
        try:
            sock = bind_unix(path, socket.SOCK_STREAM, self.socket_mode, self.gid)
        except SocketSetupError as exc:
            raise PolicyError(f"listen {spec}: {exc}") from None
        server = await self.loop.create_unix_server(factory, sock=sock, backlog=BACKLOG)
        self.sockets.append((path, os.stat(path).st_ino))
        return server

    def addresses(self) -> list[str]:
        out = []
        for server in self.servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append(f"unix:{name}" if isinstance(name, str) else
                           f"inet:[{name[0]}]:{name[1]}" if ":" in name[0] else
                           f"inet:{name[0]}:{name[1]}")
        return out

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        await self.start()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, stop.set)
        self.loop.add_signal_handler(signal.SIGHUP, lambda: log.info(
            "SIGHUP: nothing to reload; restart logkey policy to apply a new configuration"))
        log.info("listening on %s (%s lookups, at most %d connections)",
                 ", ".join(self.addresses()), "in-loop" if self.inline else "threaded",
                 self.max_connections)
        await stop.wait()
        log.info("stopping")
        await self.close()

    async def close(self, grace: float = 5.0) -> None:
        self.stopping = True                          # misses waited on answer DUNNO now
        for server in self.servers:
            server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = time.monotonic() + grace           # answer the lookups in flight
        while any(c.busy for c in self.conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.conns):
            conn.transport.close()                    # flushes replies already written
        for path, inode in self.sockets:              # only if it is still our socket
            try:
                if os.lstat(path).st_ino == inode:
                    os.unlink(path)
            except OSError:
                pass
        self.sockets = []
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.sleep(0)
