"""The follower's saved positions: one small JSON state file per followed log (follow.py's
state).

Reads: `state_dir/KEY.json` (KEY: a hash of the followed path), at most STATE_MAX bytes; a file
  that is not one of ours, or names another path, is logged and treated as no saved offset.
Writes: the same file, temp then fsync then rename (atomic.py), the directory synced once per
  commit (sync()), so a crash leaves the old state or the new one, never none. A record is the
  newest generation's position (dev, inode, offset, line number, fingerprint of the first
  bytes, first-seen mtime) and, in "chain", every generation still being read and the last
  CHAIN_MAX finished ones. Stale temp files of a writer killed mid-write are removed at start.
Trust: the state directory is logkey's own (0750); its content is still checked field by field
  (checked()), since a damaged file must not send the follower to a wrong offset.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re

from ..atomic import fsync_path, write_atomic

log = logging.getLogger("logkey.follow")

CHAIN_MAX = 48             # finished generations remembered (so none is read twice)
STATE_MAX = 1 << 17        # bytes of a state file read at most
_STATE_TEMP = re.compile(r"\.[0-9a-f]{32}\.json\.[0-9a-f]{12}\.tmp")   # write_atomic's


def state_key(path: str) -> str:
    """The name (without .json) of a followed path's state file."""
    return hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def position(chain: list[dict]) -> dict:
    """A stream's position: the newest generation's record, with every known one in "chain"."""
    return {**chain[-1], "chain": chain}


class StateFiles:
    """The state directory: created if missing (0750), stale temp files removed."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        self._remove_stale_temps()

    def load(self, path: str, key: str) -> list[dict] | None:
        """The saved generations of a followed path (oldest first), None when there is no
        state."""
        name = os.path.join(self.state_dir, key + ".json")
        try:
            with open(name, "rb") as f:
                rec = json.loads(f.read(STATE_MAX))
            if not isinstance(rec, dict) or rec.get("path") != os.path.abspath(path):
                raise ValueError("another file's state")
            chain = rec.get("chain", [rec])
            if not isinstance(chain, list) or not chain or len(chain) > CHAIN_MAX * 2:
                raise ValueError("bad chain")
            return [checked(r) for r in chain]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            log.warning("state file %s for %s unreadable (%s): treated as no saved offset",
                        name, path, e)
            return None

    def save(self, path: str, key: str, pos: dict) -> None:
        """Replace a path's state file with its position `pos`; the directory is not synced
        (sync() does it once for all the files a commit wrote). An OSError (disk full) leaves
        the previous file as it was."""
        rec = {"path": os.path.abspath(path), **pos}
        write_atomic(os.path.join(self.state_dir, key + ".json"),
                     json.dumps(rec, sort_keys=True).encode(), mode=0o640, sync_dir=False)

    def sync(self) -> None:
        """fsync the state directory: the renames of save() are on disk."""
        fsync_path(self.state_dir, directory=True)

    def _remove_stale_temps(self) -> None:
        """State temp files of a follower killed while writing one (.KEY.json.HEX.tmp): only
        that name pattern, the name itself (a symlink is never followed)."""
        try:
            names = [n for n in os.listdir(self.state_dir) if _STATE_TEMP.fullmatch(n)]
        except OSError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(self.state_dir, name))
            except OSError:
                pass
        if names:
            log.info("%s: %d stale temp file(s) of a state write that died removed",
                     self.state_dir, len(names))


def checked(r) -> dict:
    """One saved generation record, checked (ValueError if not one of ours)."""
    state = {k: r[k] for k in ("dev", "ino", "offset", "lineno", "fp_len")}
    if not all(type(v) is int and v >= 0 for v in state.values()):
        raise ValueError("a field is not a non-negative integer")
    if not isinstance(r["fp"], (str, type(None))) or (r["fp"] is None and r["fp_len"]):
        raise ValueError("bad fingerprint")
    since = r.get("since")
    if since is not None and not isinstance(since, (int, float)):
        raise ValueError("bad since")
    return {**state, "fp": r["fp"], "numbered": r.get("numbered", True) is not False,
            "since": since, "state": "done" if r.get("state") == "done" else "resume"}
