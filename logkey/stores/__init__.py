"""Gate stores: where open gates live, for the SMTP side to read."""
from .base import GateRecord, Store, StoreError, open_store

__all__ = ["GateRecord", "Store", "StoreError", "open_store"]
