"""The watcher's `dovecot_policy` listener: HTTP/1.1 on a loopback address for Dovecot's
auth_policy_server_url (authpolicy.py decides what each request means).

Reads: HTTP requests (asyncio, in a daemon thread of its own, so a slow or hostile client never
holds up the reading of logs). Only POST with a Content-Length body is understood; a request
head over MAX_HEAD bytes, a body over `max_request`, a request that takes over READ_TIMEOUT or
more than MAX_CONNECTIONS at once are refused and the connection closed. Keep-alive as Dovecot's
http client wants it; an idle connection is closed after IDLE_TIMEOUT.
Writes: logins into a queue the watcher drains on its own thread (receive(); a byte on a pipe
wakes its wait); one warning per bad request (at most BAD_LINES a minute, then one count).
Trust: anyone on the host can connect to a loopback port: the API key (a file only logkey and
Dovecot's config can read) is what lets a request in. The address must be loopback: the key
travels in clear.
Config: dovecot_policy: listen, api_key_file, header, max_request.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import threading
import time

from .authpolicy import Answer, bad, decide
from ..hostport import parse_hostport
from ..errors import LogkeyError

log = logging.getLogger("logkey")

MAX_HEAD = 8192                 # bytes of request line and headers
MAX_CONNECTIONS = 256           # Dovecot opens up to 100 (http_client_max_parallel_connections)
READ_TIMEOUT = 10.0             # seconds for the rest of a request once it started
IDLE_TIMEOUT = 60.0             # seconds a kept-alive connection may wait for its next request
BAD_LINES = 10                  # bad-request lines a minute; the rest are counted in one line
OUTCOMES = ("requests", "allow", "login", "failed", "other", "bad")    # counted
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed",
           408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class PolicyListenError(LogkeyError):
    """The listener cannot start: one line naming the key."""


def read_key(path: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read(4097)
    except OSError as exc:
        raise PolicyListenError(f"dovecot_policy.api_key_file: {path}: "
                                f"{exc.strerror or exc}") from None
    try:
        key = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        key = ""
    if len(key) < 16 or len(raw) > 4096 or not key.isprintable() or ":" in key \
            or key != "".join(key.split()):
        raise PolicyListenError(f"dovecot_policy.api_key_file: {path}: must hold one key of "
                                "16 to 4096 printable ASCII characters, no spaces or colons "
                                "(e.g. from `openssl rand -hex 32`)")
    return key


class AuthPolicyListener:
    def __init__(self):
        self.settings = None
        self.key = None
        self.sock = self.loop = self.thread = None
        self.events = collections.deque()
        self.wake_r = self.wake_w = None
        # Every key there from the start: the status writer copies it from another thread.
        self.counts = collections.Counter(dict.fromkeys(OUTCOMES, 0))
        self.active = 0
        self.bad_window, self.bad_lines, self.bad_quiet = 0.0, 0, 0

    def bind(self, settings) -> None:
        """Listen on settings["listen"] (closing a previous listener); nothing when null.
        Raises PolicyListenError naming the key."""
        key = read_key(settings["api_key_file"]) if settings["listen"] else None
        self.close()                            # (a bad key file above keeps the old one)
        self.settings, self.key = dict(settings), key
        if not settings["listen"]:
            return
        host, port = parse_hostport(settings["listen"])
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family, backlog=128)
        except OSError as exc:
            raise PolicyListenError(f"dovecot_policy.listen: {settings['listen']}: "
                                    f"{exc.strerror or exc}") from None
        self.sock = sock
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True,
                                       name="dovecot-policy")
        self.thread.start()
        ready.wait(10)
        log.info("dovecot_policy: listening on %s", settings["listen"])

    def update(self, settings) -> None:
        """On reload: listen anew when the settings changed, else read the key file again."""
        if settings != self.settings or not settings["listen"]:
            self.bind(settings)
            return
        self.key = read_key(settings["api_key_file"])

    def fileno(self) -> int | None:
        return self.wake_r

    def receive(self, now: float):
        """The logins reported since the last call (taken on the watcher's thread)."""
        if self.wake_r is None:
            return
        try:
            while os.read(self.wake_r, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self.events:
            yield self.events.popleft()

    def close(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()
            self.loop = self.thread = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        for fd in (self.wake_r, self.wake_w):
            if fd is not None:
                os.close(fd)
        self.wake_r = self.wake_w = None

    # --- the listener's own thread -------------------------------------------------------
    def _run(self, ready) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(
            self._connection, sock=self.sock, limit=MAX_HEAD))
        ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

    async def _connection(self, reader, writer) -> None:
        if self.active >= MAX_CONNECTIONS:
            self.counts["bad"] += 1
            self._bad(writer, "too many connections at once")
            writer.close()
            return
        self.active += 1
        try:
            keep = True
            while keep:
                keep = await self._request(reader, writer)
                # a client that does not read its answers gets no more of them
                await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        except asyncio.CancelledError:          # the watcher stops: end quietly (Python 3.11's
            pass                                # streams log a cancelled handler's traceback)
        finally:
            self.active -= 1
            writer.close()

    async def _request(self, reader, writer) -> bool:
        """Read and answer one request; whether the connection stays open."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError):
            return False                        # closed or idle: no request was lost
        except asyncio.LimitOverrunError:
            return self._reply(writer, bad(431, f"request head over {MAX_HEAD} bytes"))
        lines = head.decode("latin-1").split("\r\n")
        words = lines[0].split(" ")
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            return self._reply(writer, bad(400, "not an HTTP/1.x request line"))
        method, target, version = words
        headers = {}
        for line in lines[1:]:
            if line:
                name, sep, value = line.partition(":")
                if not sep:
                    return self._reply(writer, bad(400, "a header line without a colon"))
                headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            return self._reply(writer, bad(411, "only a Content-Length body is understood"))
        length = headers.get("content-length", "0")
        if not length.isdigit() or len(length) > 9:
            return self._reply(writer, bad(400, "content-length: not a number"))
        if int(length) > self.settings["max_request"]:
            return self._reply(writer, bad(413, f"body of {length} bytes, over "
                                                f"dovecot_policy.max_request"))
        try:
            body = await asyncio.wait_for(reader.readexactly(int(length)), READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError):
            return self._reply(writer, bad(408, "body incomplete"))
        answer = decide(method, target, headers, body, self.key, self.settings["header"],
                        time.time())
        if answer.event is not None:
            self.events.append(answer.event)
            try:
                os.write(self.wake_w, b".")
            except (BlockingIOError, InterruptedError):
                pass                            # the watcher has a wake-up pending already
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return self._reply(writer, answer, keep)

    def _reply(self, writer, answer: Answer, keep: bool = False) -> bool:
        self.counts["requests"] += 1
        self.counts[answer.outcome] += 1
        if answer.bad is not None:
            keep = False
            self._bad(writer, answer.bad)
        writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: %s\r\n\r\n%s" % (
                         answer.status, REASONS.get(answer.status, "").encode(),
                         len(answer.body), b"keep-alive" if keep else b"close", answer.body))
        return keep

    def _bad(self, writer, why: str) -> None:
        """One line per bad request, at most BAD_LINES a minute (then one count)."""
        now = time.monotonic()
        if now - self.bad_window >= 60:
            if self.bad_quiet:
                log.warning("dovecot_policy: %d more bad request(s) in the last minute",
                            self.bad_quiet)
            self.bad_window, self.bad_lines, self.bad_quiet = now, 0, 0
        if self.bad_lines >= BAD_LINES:
            self.bad_quiet += 1
            return
        self.bad_lines += 1
        peer = writer.get_extra_info("peername")
        who = f"{peer[0]} port {peer[1]}" if isinstance(peer, tuple) else "?"
        log.warning("dovecot_policy: bad request from %s refused: %s (%d so far)", who, why,
                    self.counts["bad"])
