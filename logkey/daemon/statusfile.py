"""What a running `logkey watch` says about itself: one snapshot for the status file and the
metrics.

Writes: `state_dir/watch.status`, JSON (logkey/atomic.py: temp file, fsync, rename), every
STATUS_EVERY seconds from the watcher's tick, right after the read offsets are committed, and
once more with `stopped` set when the watcher stops. `logkey status` (status.py) reads it
beside the offsets to tell whether the watcher runs and what it last saw.
Reads: the watcher's counters (engine Stats, GatePolicy.counts, its own), the follower's
positions and the followed files' sizes (one stat per file), the exporter's state.
Trust: the file is written by the watcher's user into its own state_dir (0750), mode 0640. It
holds counts, times, pack names and the configured paths, and under `drift` one example log
line per pack whose format may have changed (drift.py: a log line, so a user name and an
address, non-printable characters escaped); the metrics never carry that example.

`snapshot(watcher)` is also what the metrics collector (metrics.py) reads, from the HTTP
server's thread: it copies every container it reads (a copy of a dict is one C call, so the
watcher's thread cannot change it half-way) and never calls into the store.
"""
from __future__ import annotations

import json
import logging
import os
import time

from ..atomic import write_atomic

log = logging.getLogger("logkey")

STATUS_NAME = "watch.status"      # JSON; not *.json, which are the offsets
STATUS_EVERY = 5.0          # seconds between writes of the status file
VERSION = 1

# Engine Stats fields worth watching, and the name they have in the snapshot.
STATS_FIELDS = ("too_long", "unparsed", "timeouts", "rejected_ips", "refused_lines",
                "near_misses", "not_pop_imap", "cut_fragments", "ignored")


def lag(path: str, record: dict | None) -> dict:
    """Size of the followed file, where the reader is in it, and the bytes not read yet.
    `record`: a follower position (dev, ino, offset); when it names another inode (a rotation
    not followed yet) the whole current file is behind. Raises OSError (missing file)."""
    st = os.stat(path)
    out = {"size": st.st_size, "offset": None, "behind": st.st_size}
    if record is not None and (st.st_dev, st.st_ino) == (record.get("dev"), record.get("ino")):
        out["offset"] = record.get("offset", 0)
        out["behind"] = max(0, st.st_size - out["offset"])
    return out


def export_file(target) -> str:
    """The file an export really changes (an lmdb map's data file is PATH.lmdb)."""
    return getattr(target, "file", None) or target.path


def snapshot(w, wall: float | None = None) -> dict:
    """The state of Watcher `w` as plain JSON-able data."""
    wall = time.time() if wall is None else wall
    stats = w.engines.base.stats
    events: dict = {}
    for (pack, kind), n in dict(stats.events).items():
        events.setdefault(pack, {})[kind] = n
    now = w.now()
    gates = list(w.policy.gates.values())
    files = {}
    lines = dict(w.sources.lines_read)
    for path, record in w.sources.follower.positions().items():
        entry = {"lines": lines.get(path, 0), "readable": os.access(path, os.R_OK)}
        try:
            entry.update(lag(path, record))
        except OSError:
            entry.update(size=None, offset=None, behind=None, readable=False)
        files[path] = entry
    exporter = w.reconciler.exporter
    applier = w.applier
    return {
        "version": VERSION, "pid": os.getpid(), "started": w.started, "updated": wall,
        "stopped": None, "observe": w.observe,
        "store": {"type": w.cfg.store["type"], "up": applier.outage_since is None,
                  "outage_since": applier.outage_since, "errors": applier.store_errors,
                  "retries": applier.store_retries, "pending": len(applier.pending)},
        "gates_open": sum(1 for g in gates if g.record.expires > now),
        "gates": dict(w.policy.counts),
        "lines": stats.lines,
        "counts": {name: getattr(stats, name) for name in STATS_FIELDS},
        "events": events,
        "last_event": dict(w.feeder.last_events),
        "drift": w.feeder.drift.snapshot(),
        "files": files,
        "exports": [{"format": t.format, "path": t.path, "file": export_file(t),
                     "failing": t.failing} for t in (exporter.targets if exporter else [])],
        "exports_changed": w.status.keys_changed if w.status else None,
        "dovecot_policy": dict(w.sources.authpolicy.counts) if w.sources.authpolicy.settings
        and w.sources.authpolicy.settings["listen"] else None,
    }


class StatusWriter:
    """The watcher's status file, rewritten every STATUS_EVERY seconds."""

    def __init__(self, watcher):
        self.w = watcher
        self.next_write = self.last_write = 0.0     # time.monotonic()
        self.keys = None                # the exported keys last seen
        self.keys_changed = None        # wall time the exported gate set last changed
        self.warned = False

    @property
    def path(self) -> str:
        return os.path.join(self.w.cfg.state_dir, STATUS_NAME)

    def tick(self) -> None:
        """From every watcher tick: note export changes; write the file every STATUS_EVERY
        seconds, and within a second when the exported gates changed."""
        exporter = self.w.reconciler.exporter
        mono = time.monotonic()
        if exporter is not None and exporter.keys is not self.keys:
            if self.keys is not None and exporter.keys != self.keys:
                self.keys_changed = time.time()
                # soon, so that status sees the change (at most one write a second)
                self.next_write = min(self.next_write, self.last_write + 1.0)
            self.keys = exporter.keys
        if mono >= self.next_write:
            self.last_write, self.next_write = mono, mono + STATUS_EVERY
            if not self.w.applier.pending:      # offsets first (never past a gate not yet stored)
                try:                            # (the files' offsets and the journal cursors)
                    self.w.sources.commit()
                except OSError as exc:
                    log.warning("state_dir %s: %s", self.w.cfg.state_dir, exc.strerror or exc)
            self.write()

    def write(self, stopped: bool = False) -> None:
        data = snapshot(self.w)
        if stopped:
            data["stopped"] = data["updated"]
        try:
            write_atomic(self.path, json.dumps(data, sort_keys=True).encode() + b"\n",
                         mode=0o640, sync_dir=False)
            self.warned = False
        except OSError as exc:          # a full disk must not stop the watcher: logged once
            if not self.warned:
                self.warned = True
                log.warning("status file %s: %s", self.path, exc.strerror or exc)


def read_status(state_dir: str) -> dict | None:
    """The watcher's last status, None when there is none. Raises ValueError when the file is
    not a status this version understands, OSError when it cannot be read."""
    try:
        with open(os.path.join(state_dir, STATUS_NAME), "rb") as f:
            data = json.loads(f.read(1 << 20))
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError("not a logkey status file (version %r)" % (
            data.get("version") if isinstance(data, dict) else None))
    return data
