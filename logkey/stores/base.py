"""The gate store interface. One record per open gate, keyed by the gate's name.

A gate's key is the canonical IP address (`ipaddress`-validated, IPv6 compressed), or, when
`ipv6_prefix` is set, the IPv6 network in the form "2001:db8:1:2::/64". Stores never build a
name, key or path from anything else. Time is epoch seconds (float) throughout.

Backends: `dir` (dirstore.py, the default: a file per gate, mtime = expiry) and `redis`
(redisstore.py; the `redis` package is imported only when that backend is chosen).

A stored entry is a gate only when its content is a record for its own key (`record_data`):
anything else under a gate's name (garbage, an empty file, another address's record) is
closed, reported once with one warning line naming it, and counted in `bad_records`.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator

from ..errors import LogkeyError

log = logging.getLogger("logkey.store")
REPORTED_MAX = 4096           # entries remembered as already reported (then forgotten, re-reported)


class StoreError(LogkeyError):
    """The store cannot be read or written now (unreachable Redis, unwritable directory...).
    str() is one line."""


@dataclass
class GateRecord:
    key: str                 # "192.0.2.7", "2001:db8::1" or "2001:db8:1:2::/64"
    user: str | None
    pack: str | None
    protocol: str | None
    opened: float            # epoch seconds: the login line's time
    expires: float           # epoch seconds
    source: str | None       # "path:line" of the line that opened or last extended it

    def to_json(self) -> str:
        # the fields as they are: strings, numbers, None (dataclasses.asdict deep-copies each,
        # ~50 us a record, and a catch-up writes tens of thousands)
        return json.dumps(vars(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "GateRecord":
        data = json.loads(text)
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


def check_key(key: str) -> str:
    """The key itself if it is a canonical address or IPv6 network, else ValueError."""
    if key in _checked_keys:
        return key
    _check_key(key)
    if len(_checked_keys) >= CHECKED_KEYS_KEPT:
        _checked_keys.clear()
    _checked_keys.add(key)
    return key


# Keys `ipaddress` accepted, asked again at each write and read of their gate (a dir store's
# file names): a set of strings, so an accepted key is the same string, never a look-alike.
CHECKED_KEYS_KEPT = 65536
_checked_keys: set[str] = set()


def _check_key(key: str) -> None:
    if "/" in key:
        net = ipaddress.ip_network(key, strict=True)
        if net.version != 6 or str(net) != key:
            raise ValueError(f"not a canonical IPv6 network: {key!r}")
        return
    addr = ipaddress.ip_address(key)
    if str(addr) != key or getattr(addr, "scope_id", None):
        raise ValueError(f"not a canonical address: {key!r}")


def record_data(key: str, raw: bytes | None) -> dict | None:
    """The JSON object in `raw` when it is a gate record for `key` (it names that key), else
    None. This is the whole test of "is this a gate": relayclient applies the same one."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("key") == key else None


def keys_for(ip: str, ipv6_prefix: int | None) -> list[str]:
    """The keys under which a gate for `ip` may be stored: the address, and for IPv6 with a
    prefix configured, its network."""
    keys = [ip]
    if ipv6_prefix and ":" in ip:
        keys.append(str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False)))
    return keys


class Store(ABC):
    bad_records = 0           # entries under a gate name that hold no record for it, reported

    def report_bad(self, what: str, identity, why: str) -> None:
        """One warning per bad entry (per `identity`: it is reported again once changed)."""
        reported = self.__dict__.setdefault("_reported", {})
        if reported.get(what) == identity:
            return
        if len(reported) >= REPORTED_MAX:
            reported.clear()
        reported[what] = identity
        self.bad_records += 1
        log.warning("%s: %s; treated as closed", what, why)

    @abstractmethod
    def put(self, gate: GateRecord) -> None:
        """Create or replace the gate (atomic for readers)."""

    def put_batch(self, gates: list[GateRecord]) -> None:
        """put() each gate; all of them stored (as durably as put) when it returns. A store
        may write a batch faster than one gate at a time (DirStore: one sync for all)."""
        for gate in gates:
            self.put(gate)

    @abstractmethod
    def get(self, key: str, now: float | None = None) -> GateRecord | None:
        """The gate if it exists and has not expired at `now` (default: time.time())."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the gate; True if there was one."""

    @abstractmethod
    def scan(self, now: float | None = None) -> Iterator[GateRecord]:
        """Every gate still open at `now`."""

    @abstractmethod
    def purge(self, now: float | None = None) -> int:
        """Remove expired gates; how many."""

    def is_open(self, ip: str, ipv6_prefix: int | None = None, now: float | None = None) -> bool:
        return any(self.get(k, now) is not None for k in keys_for(ip, ipv6_prefix))

    def writes_lost(self) -> bool:
        """True when gates written before may be gone without any error seen (a Redis master
        replaced by a failover before it replicated them, or restarted without its data): the
        watcher then writes every open gate again. Raises StoreError when unreachable."""
        return False

    def close(self) -> None:
        pass


def now_or(now: float | None) -> float:
    return time.time() if now is None else now
