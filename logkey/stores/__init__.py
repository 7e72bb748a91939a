"""Gate stores: where open gates live, for the SMTP side to read.

Takes a GateRecord (a key, its expiry, who opened it) from the gate policy; gives the
gates back to the policy service, the exports and relayclient.
"""
from .base import GateRecord, Store, StoreError

__all__ = ["GateRecord", "Store", "StoreError", "open_store"]


def open_store(spec: dict, create: bool = True) -> Store:
    """A store from the configuration's `store:` mapping (already validated). `create=False`:
    for a one-off read, a missing gate directory is not made (DirStore)."""
    kind = spec.get("type", "dir")
    if kind == "dir":
        from .dirstore import DirStore
        return DirStore(spec["path"], group=spec.get("group"), create=create)
    if kind == "redis":
        from .redisstore import RedisStore
        return RedisStore(spec["url"], prefix=spec.get("prefix", "logkey:gate:"),
                          sentinel=spec.get("sentinel"))
    raise StoreError(f"unknown store type {kind!r}")
