"""The policy service's store lookups: one request in, its action out, the store asked through
decide.py; a miss waited on (miss_wait), and a store outage logged once.

Takes: the gate store, ipv6_prefix, miss_wait (seconds) and whether lookups run in threads
(default: in the event loop for the dir store, answered from its memo while the kernel reports
no change in the gate directory, else one lstat (DirStore.recent_is_open); in a small
thread pool for the others, so a slow Redis never stalls the loop).
Gives: `answer(request)` (in-loop) and `answer_async(request)` -> (action, the address to wait
for on a miss, or None); `wait_open(ip)` -> the action after the miss wait.
Writes: log lines (logger logkey.policy): one warning when the store starts failing, one when
it answers again; metrics.store_errors when metrics are on.
Trust: the store is logkey's own; a store error or a bug is DUNNO, never OK (decide.py).
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from ...events import canonical_ip
from .decide import DUNNO, OK, REQUEST_TYPE, decide

log = logging.getLogger("logkey.policy")

THREADS = 16                  # store lookups in flight at once (non-dir stores)
MISS_POLL_FIRST = 0.005       # a miss is asked again after 5 ms, then 10, 20, ... 100 ms apart
MISS_POLL_MAX = 0.1
ADDRESSES_MAX = 4096          # client_address values whose canonical form is remembered
_REQUEST_TYPE = REQUEST_TYPE.encode()


class Lookups:
    def __init__(self, store, *, ipv6_prefix=None, miss_wait=0.0, threaded=None):
        from ...stores.dirstore import DirStore
        self.store, self.ipv6_prefix = store, ipv6_prefix
        self.miss_wait, self.stopping = float(miss_wait), False
        self.inline = not threaded if threaded is not None else isinstance(store, DirStore)
        self.is_open = (store.is_open if ipv6_prefix is None else    # one call less per lookup
                        lambda ip: store.is_open(ip, ipv6_prefix))
        # In-loop answers of the dir store come from its memo while the directory is unchanged
        # (DirStore.remember_answers); the miss wait always asks the store itself.
        self.probe_open = self.is_open
        if self.inline and isinstance(store, DirStore) and store.remember_answers():
            self.probe_open = (store.recent_is_open if ipv6_prefix is None else
                               lambda ip: store.recent_is_open(ip, ipv6_prefix))
        self._error, self._consulted = None, False
        self.pool = None if self.inline else ThreadPoolExecutor(THREADS, "logkey-policy")
        self.outage, self.outage_answers = False, 0
        self.metrics = None
        self._addresses: dict[bytes, str | None] = {}

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

    # The in-loop path: one request at a time, so the state lives on the object.
    def _probe(self, ip: str) -> bool:
        self._consulted = True
        return self.probe_open(ip)

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

    def answer_raw(self, request_type: bytes, address: bytes | None) -> tuple[str, str | None]:
        """answer() for the raw values protocol.whole_request gives (in-loop): decide()'s
        rules on bytes, without a dict; the same actions, misses, outage lines and counts."""
        if request_type != _REQUEST_TYPE or address is None:
            return DUNNO, None
        consulted = False
        try:
            ip = self._addresses.get(address, False)
            if ip is False:
                ip = canonical_ip(address.decode("utf-8", "surrogateescape"))
                if len(self._addresses) >= ADDRESSES_MAX:
                    self._addresses.clear()
                self._addresses[address] = ip
            if ip is None:
                return DUNNO, None
            consulted = True
            is_open = self.probe_open(ip) is True
        except Exception as exc:                      # never OK on error (decide.py)
            self.account(exc, consulted)
            return DUNNO, None
        if self.outage:
            self.account(None, True)
        if is_open:
            return OK, None
        return DUNNO, (None if self.miss_wait <= 0 or self.stopping else ip)

    async def answer_async(self, request: dict) -> tuple[str, str | None]:
        if self.inline:
            return self.answer(request)
        try:
            action, error, consulted = await asyncio.get_running_loop().run_in_executor(
                self.pool, self.lookup, request)
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.miss_wait
        pause = MISS_POLL_FIRST
        while not self.stopping:
            pause = min(pause, deadline - loop.time())
            if pause <= 0:
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, MISS_POLL_MAX)
            try:
                if self.inline:
                    is_open = self.is_open(ip)
                else:
                    is_open = await loop.run_in_executor(self.pool, self.is_open, ip)
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

    def close(self) -> None:
        """Lookups queued in threads are dropped (set `stopping` first: misses waited on
        answer DUNNO from then on)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
