"""One client connection of the policy service: bytes -> Decoder -> lookup -> reply, in order.

Takes: the bytes a client sends (an asyncio.Protocol), the Lookups that answer a request and
the Limits the client is held to.
Gives: one reply per request, in the order of the requests (SMTPD_POLICY_README: persistent
connections, a client may pipeline). In-loop lookups (the dir store) are answered in
data_received itself; threaded lookups and misses waited on run in a task, reading paused
meanwhile, so replies stay in order and at most one request's worth is buffered.
Writes: replies only; a client that breaks the protocol is disconnected without one.
Trust: every byte comes from the client; the codec (protocol.py) bounds what is buffered.
Flow control: a client that does not read its replies is not read either.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque

from .decide import DUNNO, OK
from .protocol import Decoder, ProtocolError, reply, whole_request

REPLIES = {OK: reply(OK), DUNNO: reply(DUNNO)}
KEEP = ("request", "client_address")        # all decide() looks at


class Connection(asyncio.Protocol):
    def __init__(self, lookups, limits, listener: str):
        self.lookups, self.limits, self.listener = lookups, limits, listener
        self.decoder = Decoder(limits.max_request, KEEP)
        self.max_request = limits.max_request
        self.partial = False            # the decoder holds part of a request (decoder.pending)
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
        self.limits.admit(self)

    def connection_lost(self, exc):
        self.closed = True
        self.limits.forget(self)

    def peer(self) -> str:
        name = self.transport.get_extra_info("peername") if self.transport else None
        if isinstance(name, tuple):
            host = f"[{name[0]}]" if ":" in name[0] else name[0]
            return f"{host}:{name[1]}"
        return self.listener

    def data_received(self, data: bytes):
        lookups = self.lookups
        if not (self.busy or self.partial) and lookups.inline:
            fields = whole_request(data, self.max_request)
            if fields is not None:                    # one whole request: the usual case
                self.since = time.monotonic()
                metrics = lookups.metrics
                started = time.perf_counter() if metrics is not None else 0.0
                action, wait_for = lookups.answer_raw(*fields)
                if wait_for is not None:              # a miss: wait for it in a task
                    self.queue.append(None)           # (answered already: nothing to keep)
                    self._serve_queue(wait_for, started)
                    return
                if metrics is not None:
                    metrics.answer(action, time.perf_counter() - started)
                self.transport.write(REPLIES[action])
                return
        had_partial = self.partial
        try:
            requests = self.decoder.feed(data)
        except ProtocolError as exc:
            self.partial = False                      # a spent decoder holds nothing
            self.limits.client_error(self, str(exc))
            return
        self.partial = self.decoder.pending
        if requests or not had_partial:
            self.since = time.monotonic()
        if not requests:
            return
        if self.busy:                                 # a lookup or a miss wait is under way
            self.queue.extend(requests)
            return
        if not lookups.inline:
            self.queue.extend(requests)
            self._serve_queue(None, time.perf_counter())
            return
        answer, replies, metrics = lookups.answer, [], lookups.metrics
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
        self.task = asyncio.get_running_loop().create_task(self._serve(first_miss, started))

    async def _serve(self, first_miss: str | None, started: float):
        lookups = self.lookups
        try:
            while self.queue and not self.closed:
                request = self.queue.popleft()
                if first_miss is not None:            # looked up already, inline
                    action, wait_for, first_miss = DUNNO, first_miss, None
                else:
                    started = time.perf_counter()
                    action, wait_for = await lookups.answer_async(request)
                if wait_for is not None:
                    action = await lookups.wait_open(wait_for)
                if self.closed:
                    break
                if lookups.metrics is not None:
                    lookups.metrics.answer(action, time.perf_counter() - started)
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
        self.limits.forget(self)
        self.transport.abort()
