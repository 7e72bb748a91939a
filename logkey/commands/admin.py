"""Administrator commands on the gate store: gates, open, close, check, purge, config check.

Reads/writes: the store named by the configuration. Trust: an IP given on the command line
passes `ipaddress` (canonical form) before it becomes a key; a user name is only compared.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime

from ..errors import LogkeyError
from ..events import canonical_ip
from ..gates.policy import GatePolicy, PolicyConfig
from ..stores import GateRecord, StoreError, open_store
from ..stores.base import keys_for


class AdminError(LogkeyError):
    """One line for the user (exit 2)."""


def _ip(text: str) -> str:
    ip = canonical_ip(text)
    if ip is None:
        raise AdminError(f"{text!r} is not an IP address")
    return ip


def _store(cfg, create: bool = True):
    try:
        return open_store(cfg.store, create)
    except StoreError as exc:
        raise AdminError(f"store: {exc}") from None


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def cmd_gates(cfg, as_json: bool, out=sys.stdout) -> int:
    now = time.time()
    store = _store(cfg, create=False)
    try:
        gates = sorted(store.scan(now), key=lambda g: (g.expires, g.key))
    except StoreError as exc:
        raise AdminError(f"store: {exc}") from None
    for g in gates:
        if as_json:
            out.write(json.dumps({"ip": g.key, "user": g.user, "pack": g.pack,
                                  "protocol": g.protocol, "opened": _when(g.opened),
                                  "expires": _when(g.expires),
                                  "expires_in": round(g.expires - now), "source": g.source})
                      + "\n")
        else:
            out.write(f"{g.key:<40} {g.user or '-':<24} {g.pack or '-':<10} "
                      f"opened {_when(g.opened)}  expires in {g.expires - now:.0f} s\n")
    if not as_json:
        bad = getattr(store, "bad_records", 0)
        out.write(f"{len(gates)} open gate(s)" + (
            f"; {bad} entr{'y' if bad == 1 else 'ies'} under a gate name held no gate record "
            "(treated as closed, named in the warnings above)" if bad else "") + "\n")
    return 0


def cmd_open(cfg, ip_text: str, user: str | None, seconds: float | None) -> int:
    ip = _ip(ip_text)
    now = time.time()
    key = GatePolicy(PolicyConfig(ipv6_prefix=cfg.ipv6_prefix)).key_for(ip)
    lifetime = cfg.window if seconds is None else seconds
    if lifetime <= 0:
        raise AdminError("--for must be more than 0 seconds")
    try:
        _store(cfg).put(GateRecord(key, user, "manual", None, now, now + lifetime, "logkey open"))
    except StoreError as exc:
        raise AdminError(f"store: {exc}") from None
    print(f"opened {key} until {_when(now + lifetime)}")
    return _exports_now(cfg)


def cmd_close(cfg, ip_text: str | None, user: str | None) -> int:
    store = _store(cfg)
    closed = []
    try:
        if ip_text is not None:
            for key in keys_for(_ip(ip_text), cfg.ipv6_prefix):
                if store.delete(key):
                    closed.append(key)
        else:
            for g in list(store.scan()):
                if g.user == user and store.delete(g.key):
                    closed.append(g.key)
    except StoreError as exc:
        raise AdminError(f"store: {exc}") from None
    print(f"closed {len(closed)} gate(s)" + (": " + " ".join(closed) if closed else ""))
    return _exports_now(cfg)


def _exports_now(cfg) -> int:
    """open/close take effect in the configured exports at once (the watcher would only at its
    next pass, and not at all when it is not running): 0, or 2 when an export failed (the
    store change stands; the error is logged)."""
    if not cfg.exports:
        return 0
    from ..smtp.exports import sync_configured
    store = _store(cfg)
    try:
        return 0 if sync_configured(cfg, store) else 2
    except StoreError as exc:
        raise AdminError(f"store: {exc}") from None
    finally:
        store.close()


def cmd_check(cfg, ip_text: str, as_json: bool = False) -> int:
    """Exit 0 when a gate for the IP is open, 1 when not (2 on error, by the caller)."""
    ip = _ip(ip_text)
    store = _store(cfg, create=False)
    try:
        gate = next((g for g in (store.get(k) for k in keys_for(ip, cfg.ipv6_prefix))
                     if g is not None), None)
    except StoreError as exc:
        raise AdminError(f"store: {exc}") from None
    if as_json:
        print(json.dumps({"ip": ip, "open": gate is not None,
                          "gate": None if gate is None else {
                              "key": gate.key, "user": gate.user, "pack": gate.pack,
                              "protocol": gate.protocol, "opened": _when(gate.opened),
                              "expires": _when(gate.expires), "source": gate.source}}))
    else:
        print(f"{ip}: {'open' if gate is not None else 'closed'}")
    return 0 if gate is not None else 1


def cmd_purge(cfg) -> int:
    store = _store(cfg)
    try:
        n = store.purge()
    except StoreError as exc:
        raise AdminError(f"store: {exc}") from None
    temps = getattr(store, "temps_removed", 0)
    print(f"removed {n} expired gate(s)" + (f" and {temps} stale temp file(s)" if temps else ""))
    return 0


def cmd_config_check(cfg) -> int:
    from ..daemon.build import build
    packs, _ = build(cfg)
    if cfg.store["type"] == "redis":
        from ..stores import redisstore
        if redisstore.redis is None:        # what `watch` would stop at (an extra: logkey[redis])
            raise AdminError(f"{cfg.path}: store.type: redis {redisstore.MISSING_CLIENT}")
    print(f"{cfg.path}: ok ({len(cfg.logs)} log(s), {len(packs.packs)} pack(s), "
          f"{cfg.store['type']} store)")
    return 0
