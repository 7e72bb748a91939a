"""The `redis` gate store: one Redis key per open gate, for sites with several POP/IMAP and
SMTP hosts.

Reads/Writes: keys `<prefix><gate key>` (default prefix "logkey:gate:"), e.g.
"logkey:gate:192.0.2.7" or "logkey:gate:2001:db8:1:2::/64"; the value is
`GateRecord.to_json()`. Nothing else in the database is touched.
Trust: key names come only from `check_key`-validated keys; values read back are parsed
defensively (a key under the prefix that is not a canonical gate key is ignored).
Config (`store:`): `url`, `prefix`, `sentinel`.

Expiry: every gate is written with `SET key value PX <remaining lifetime in ms>`, so Redis
expires it on time even while logkey is down; `purge()` has nothing to do and returns 0. The
TTL is computed on the real clock: a gate already expired when `put()` runs is deleted, never
written. `get()`/`scan()` also require the record's `expires` to be later than `now`. A value
that is not a record for its key (garbage, another address's record: `base.record_data`) is
closed, reported once with one warning line naming the key, and counted in `bad_records`; a
record for its key whose fields are unusable counts as open while its key has a TTL (expiry =
now + PTTL; a key without a TTL is never open), with the unknown fields None, so `logkey
gates` shows it and `logkey close` removes it.

Connections: `redis://[user:password@]host:port/db`, `rediss://...` (TLS) and
`unix:///path/to/redis.sock?db=N`, through `redis.Redis.from_url`. Sentinel: give
    sentinel: {hosts: ["10.0.0.1:26379", "[2001:db8::5]:26379"], service: mymaster,
               password: <optional, for the sentinels themselves>}
and the master is found through `redis.sentinel.Sentinel(...).master_for(service)`; `url` then
supplies only the master's username/password/db and TLS (`rediss://`), its host is ignored
(e.g. `url: "redis://:secret@/0"`).

Errors: sockets time out after 1 s, one immediate retry (a connection gone stale across a
Redis restart); every redis error then becomes StoreError with one line (passwords are never
in it). Retrying with backoff is the watcher's job. The `redis` package is imported only by
this module, which `open_store` imports only when this backend is chosen.
"""
from __future__ import annotations

import re
import time
from typing import Iterator
from urllib.parse import urlsplit

from .base import GateRecord, Store, StoreError, check_key, now_or, record_data

try:
    import redis
    import redis.sentinel
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:                        # reported by RedisStore(), not at import
    redis = None

# What a redis store lacks without the client (an extra): RedisStore() and config check say it.
MISSING_CLIENT = "needs the 'redis' package (pip install 'logkey[redis]', or Debian's python3-redis)"
TIMEOUT = 1.0             # seconds, connect and each command
SCAN_COUNT = 500          # SCAN's COUNT hint, and keys per MGET
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def _unix_takes_connect_timeout() -> bool:
    """redis-py before 4.4 (Debian 12 has 4.3.4) refuses socket_connect_timeout for a unix
    socket (a TypeError at the first command); its connect there is bounded by socket_timeout."""
    import inspect
    params = inspect.signature(redis.connection.UnixDomainSocketConnection.__init__).parameters
    return "socket_connect_timeout" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            netloc = parts.netloc.rsplit("@", 1)[1]
            user = f"{parts.username}:***@" if parts.username else ":***@"
            return parts._replace(netloc=user + netloc).geturl()
    except ValueError:
        return "<redis url>"
    return url


def _host_port(text: str) -> tuple[str, int]:
    """ "host:port" or "[v6]:port" -> (host, port); ValueError if malformed."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"sentinel host must be host:port, not {text!r}")
    return host.strip("[]"), int(port)


class RedisStore(Store):
    def __init__(self, url: str, prefix: str = "logkey:gate:", sentinel: dict | None = None,
                 *, timeout: float = TIMEOUT):
        if redis is None:
            raise StoreError(f"the redis store {MISSING_CLIENT}")
        self.prefix = prefix
        self._run_id = None                        # the answering server's (writes_lost)
        self.where = _safe_url(url)
        common = dict(socket_timeout=timeout, socket_connect_timeout=timeout,
                      retry=Retry(NoBackoff(), 1),
                      retry_on_error=[redis.exceptions.ConnectionError])
        try:
            if sentinel:
                self.where = f"sentinel {sentinel.get('service')} ({self.where})"
                self.client = self._sentinel_client(url, sentinel, common)
            else:
                if url.startswith("unix:") and not _unix_takes_connect_timeout():
                    del common["socket_connect_timeout"]    # socket_timeout bounds its connect
                self.client = redis.Redis.from_url(url, **common)
        except (ValueError, TypeError, KeyError) as e:
            raise StoreError(f"redis store {self.where}: bad configuration: {e}") from None

    @staticmethod
    def _sentinel_client(url: str, sentinel: dict, common: dict):
        from redis.connection import SSLConnection, parse_url
        opts = parse_url(url) if url else {}
        master = {k: opts[k] for k in ("username", "password", "db") if opts.get(k) is not None}
        if opts.get("connection_class") is SSLConnection:
            master["ssl"] = True
        hosts = [_host_port(h) for h in sentinel["hosts"]]
        if not hosts:
            raise ValueError("sentinel.hosts is empty")
        sentinel_kwargs = {"socket_timeout": common["socket_timeout"],
                           "socket_connect_timeout": common["socket_connect_timeout"]}
        if sentinel.get("password"):
            sentinel_kwargs["password"] = sentinel["password"]
        manager = redis.sentinel.Sentinel(hosts, sentinel_kwargs=sentinel_kwargs)
        return manager.master_for(sentinel["service"], **common, **master)

    def _fail(self, what: str, e: Exception) -> StoreError:
        text = " ".join(str(e).split()) or type(e).__name__
        return StoreError(f"redis store {self.where}: cannot {what}: {text}")

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    # -- writing ----------------------------------------------------------------------------

    def _write(self, target, gate: GateRecord, now: float) -> None:
        """The gate's command on `target`, the client or a pipeline: SET with its time to
        live, or DEL for a gate already expired (never written)."""
        name = self._name(gate.key)
        ttl_ms = int((gate.expires - now) * 1000)
        if ttl_ms <= 0:
            target.delete(name)
        else:
            target.set(name, gate.to_json(), px=ttl_ms)

    def put(self, gate: GateRecord) -> None:
        try:
            self._write(self.client, gate, time.time())
        except redis.RedisError as e:
            raise self._fail(f"write gate {gate.key}", e) from None

    def put_batch(self, gates: list[GateRecord]) -> None:
        """put() for each, in one pipeline: one round trip for a catch-up's thousands of gates
        instead of one each (a Redis on another host: a millisecond or more apiece)."""
        if len(gates) < 2:
            return super().put_batch(gates)
        now = time.time()
        try:
            pipe = self.client.pipeline(transaction=False)
            for gate in gates:
                self._write(pipe, gate, now)
            pipe.execute()                         # raises the first command's error
        except redis.RedisError as e:
            raise self._fail(f"write {len(gates)} gates", e) from None

    def delete(self, key: str) -> bool:
        name = self._name(key)
        try:
            return bool(self.client.delete(name))
        except redis.RedisError as e:
            raise self._fail(f"remove gate {key}", e) from None

    def purge(self, now: float | None = None) -> int:
        return 0                                   # Redis expires the keys itself (PX)

    def writes_lost(self) -> bool:
        """Whether the server answering is another one (its run_id changed) since the last
        call: after a Sentinel failover the promoted replica lacks what the old master had not
        replicated yet; a restarted Redis without persistence lacks everything."""
        try:
            run_id = self.client.info("server").get("run_id")
        except redis.RedisError as e:
            raise self._fail("ask which server answers", e) from None
        lost = self._run_id is not None and run_id != self._run_id
        self._run_id = run_id
        return lost

    # -- reading ----------------------------------------------------------------------------

    def get(self, key: str, now: float | None = None) -> GateRecord | None:
        name = self._name(key)
        try:
            raw = self.client.get(name)
            gate = self._record(key, name, raw)
        except redis.RedisError as e:
            raise self._fail(f"read gate {key}", e) from None
        return gate if gate is not None and gate.expires > now_or(now) else None

    def scan(self, now: float | None = None) -> Iterator[GateRecord]:
        now = now_or(now)
        match = _GLOB_SPECIAL.sub(r"\\\1", self.prefix) + "*"
        try:
            cursor = 0
            while True:
                cursor, names = self.client.scan(cursor, match=match, count=SCAN_COUNT)
                names = sorted(set(names))
                keys = [self._key_of(n) for n in names]
                pairs = [(n, k) for n, k in zip(names, keys) if k is not None]
                values = self.client.mget([n for n, _ in pairs]) if pairs else []
                for (name, key), raw in zip(pairs, values):
                    gate = self._record(key, name, raw)
                    if gate is not None and gate.expires > now:
                        yield gate
                if cursor == 0:
                    break
        except redis.RedisError as e:
            raise self._fail("scan gates", e) from None

    def _key_of(self, name: bytes) -> str | None:
        try:
            key = name.decode()[len(self.prefix):]
            return check_key(key)
        except (UnicodeDecodeError, ValueError):
            return None

    def _record(self, key: str, name, raw: bytes | None) -> GateRecord | None:
        """The record stored under `name`, or None if it has gone or holds no record for `key`
        (reported). A record for `key` with unusable fields is open for its remaining TTL,
        with the unknown fields None."""
        if raw is None:
            return None
        data = record_data(key, raw)
        if data is None:
            self.report_bad(f"redis store {self.where}: {self.prefix}{key}",
                            hash(raw), "not a gate record for this address")
            return None
        try:
            gate = GateRecord(**{k: data.get(k) for k in GateRecord.__dataclass_fields__})
            gate.opened, gate.expires = float(gate.opened), float(gate.expires)
            if all(getattr(gate, k) is None or isinstance(getattr(gate, k), str)
                   for k in ("user", "pack", "protocol", "source")):
                return gate
        except (TypeError, ValueError, OverflowError):
            pass
        pttl = self.client.pttl(name)
        if pttl is None or pttl <= 0:              # gone meanwhile, or no TTL: never open
            return None
        now = time.time()
        return GateRecord(key=key, user=None, pack=None, protocol=None, opened=now,
                          expires=now + pttl / 1000, source=None)

    def close(self) -> None:
        try:
            self.client.close()
        except redis.RedisError:
            pass
