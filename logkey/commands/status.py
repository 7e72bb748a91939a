"""`logkey status`: one screen telling an administrator whether logkey works.

One module, as each command in commands/ is one: the checks of `logkey status` and the screen
they print are read together (each check adds its problems and warnings to the Report that
render() prints); SECURITY.md's warnings are security.py's.

Reads: the configuration; in `state_dir` the follower's offsets (one JSON file per followed
log) and the watcher's watch.status (daemon/statusfile.py); the followed logs' sizes; the gate store
(one scan: is it reachable, how many gates are open); the exports' files' times.
Writes: nothing (a dir store that does not exist is reported, not created).
Trust: everything read is the site's own; nothing here opens or closes a gate.

A problem (exit 1) is something that stops gates from working as configured: the store
unreachable, a followed log missing or unreadable, the watcher not running or its status
stale, a stopped or stale export. A warning (exit status unchanged) is something to look at:
a log far behind, a glob matching nothing, SECURITY.md's warnings that apply (security.py),
a pack whose server's log format may have changed (the watcher's drift alarm, drift.py: shown
from its last status even when it has stopped, since what it read stays true).
Exit 0 when nothing is broken, 1 when something is, 2 for a bad configuration.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time

from . import security
from ..daemon.statusfile import STATUS_EVERY, STATUS_NAME, lag, read_status

STALE_AFTER = 4 * STATUS_EVERY      # seconds: a watcher's status older than this is stale
LAG_WARN = 1 << 20                  # bytes behind a log's end worth a warning
EXPORT_GRACE = 5.0                  # seconds an export may lag the gate set it exports


def followed_paths(cfg) -> tuple[list[str], list[str]]:
    """(paths, patterns that match nothing): the logs as the follower finds them."""
    paths, empty = [], []
    for entry in cfg.logs:
        pattern = entry["path"]
        if pattern is None:                     # a journal source: no file to check
            continue
        if glob.has_magic(pattern):
            found = sorted(glob.glob(pattern))
            if not found:
                empty.append(pattern)
            paths += [p for p in found if p not in paths]
        elif pattern not in paths:
            paths.append(pattern)
    return paths, empty


def saved_offsets(state_dir: str) -> dict[str, dict]:
    """The follower's saved positions by absolute path (its state files name their file)."""
    out = {}
    try:
        names = os.listdir(state_dir)
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json") or name.startswith(".") or name == STATUS_NAME:
            continue
        try:
            with open(os.path.join(state_dir, name), "rb") as f:
                rec = json.loads(f.read(1 << 16))
            out[rec["path"]] = rec
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


class Report:
    def __init__(self, cfg, now: float):
        self.data = {"config": cfg.path, "time": now, "ok": True, "problems": [],
                     "warnings": [], "watcher": None, "store": None, "files": [],
                     "last_event": {}, "exports": [], "drift": {}}
        self.status = None              # the watcher's last status, whatever its state

    def problem(self, text: str) -> None:
        self.data["problems"].append(text)
        self.data["ok"] = False

    def warn(self, text: str) -> None:
        self.data["warnings"].append(text)


def check(cfg, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    report = Report(cfg, now)
    status = _watcher(cfg, report, now)
    paths, empty = followed_paths(cfg)
    _files(cfg, paths, status, report)
    for pattern in empty:
        report.warn(f"logs: {pattern} matches no file")
    _drift(report.status, report, now)
    _store(cfg, report, now)
    _exports(cfg, status, report, now)
    for text in security.followed_file_warnings(p for p in paths if os.path.exists(p)) + \
            security.config_warnings(cfg):
        report.warn(text)
    return report.data


def _watcher(cfg, report: Report, now: float) -> dict | None:
    """The watcher's status if it is running and current; problems otherwise."""
    needed = bool(cfg.logs or cfg.popwrap["socket"] or cfg.dovecot_policy["listen"]
                  or cfg.exports)
    try:
        status = read_status(cfg.state_dir)
    except (OSError, ValueError) as exc:
        report.data["watcher"] = {"state": "unreadable"}
        report.problem(f"watcher: {os.path.join(cfg.state_dir, STATUS_NAME)}: "
                       f"{getattr(exc, 'strerror', None) or exc}")
        return None
    if status is None:
        report.data["watcher"] = {"state": "never ran" if needed else "not needed"}
        if needed:
            report.problem(f"watcher: no status in {cfg.state_dir}: logkey watch has not run "
                           "with this configuration")
        return None
    report.status = status
    info = {k: status.get(k) for k in ("pid", "started", "updated", "stopped", "observe")}
    info["last_event"] = status.get("last_event") or {}
    report.data["watcher"] = info
    report.data["last_event"] = info.pop("last_event")
    if status.get("stopped"):
        info["state"] = "stopped"
        report.problem(f"watcher: stopped {_ago(now - status['stopped'])} ago")
    elif not _alive(status.get("pid")):
        info["state"] = "dead"
        report.problem(f"watcher: not running (pid {status.get('pid')} is gone; its last "
                       f"status is {_ago(now - status.get('updated', 0))} old)")
    elif now - status.get("updated", 0) > STALE_AFTER:
        info["state"] = "stale"
        report.problem(f"watcher: pid {status.get('pid')} has not written its status for "
                       f"{_ago(now - status.get('updated', 0))} (hung?)")
    else:
        info["state"] = "running"
        store = status.get("store") or {}
        if not store.get("up", True):
            report.problem(f"watcher: cannot write to the store since "
                           f"{_ago(now - (store.get('outage_since') or now))} ago "
                           f"({store.get('pending', 0)} gate changes waiting)")
        if status.get("observe"):
            report.warn("watcher: runs with --observe: it writes no gates")
        policy = status.get("dovecot_policy")
        if policy:
            info["dovecot_policy"] = policy
            if policy.get("bad"):
                report.warn(f"dovecot_policy: {policy['bad']} bad request(s) refused since "
                            "the watcher started (its log names each)")
        return status
    return None


def _drift(status: dict | None, report: Report, now: float) -> None:
    """A warning for each pack whose lines look like logins while it reads none."""
    from ..sources.journal import printable     # (not at import: every command builds the parser)
    for pack, d in sorted(((status or {}).get("drift") or {}).items()):
        if not isinstance(d, dict) or not d.get("lines"):
            continue
        report.data["drift"][pack] = {k: d.get(k) for k in ("lines", "since", "example")}
        since = d.get("since") or now
        report.warn(f"pack {pack}: format drift? {d['lines']} line(s) of its programs since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))} "
                    f"({_ago(now - since)} ago) look like logins but match no rule, and no "
                    f"{pack} login was read: has the server been upgraded? Example: "
                    f"{printable(d.get('example'), 400)}. Run `logkey dry-run` on that log and see "
                    f"docs/troubleshooting.md (Format drift): fix the pack (a local copy in "
                    f"patterns_dir) or the server's log settings")


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:             # alive, another user's
        return True
    return True


def _files(cfg, paths: list[str], status: dict | None, report: Report) -> None:
    offsets = saved_offsets(cfg.state_dir)
    lines = {p: f.get("lines") for p, f in ((status or {}).get("files") or {}).items()}
    for path in paths:
        entry = {"path": path, "state": "ok", "size": None, "offset": None, "behind": None,
                 "lines": lines.get(path)}
        report.data["files"].append(entry)
        try:
            with open(path, "rb"):
                pass
            entry.update(lag(path, offsets.get(os.path.abspath(path))))
        except FileNotFoundError:
            entry["state"] = "missing"
            report.problem(f"log {path}: missing")
            continue
        except OSError as exc:
            entry["state"] = "unreadable"
            report.problem(f"log {path}: unreadable: {exc.strerror or exc}")
            continue
        if entry["offset"] is None:
            entry["state"] = "no offset"
        elif entry["behind"] > LAG_WARN:
            entry["state"] = "behind"
            report.warn(f"log {path}: {entry['behind']} bytes not read yet")


def _store(cfg, report: Report, now: float) -> None:
    from ..stores import StoreError, open_store
    spec = cfg.store
    info = {"type": spec["type"], "where": spec.get("path", ""), "reachable": False,
            "open_gates": None}
    report.data["store"] = info
    if spec["type"] == "dir" and not os.path.isdir(spec["path"]):
        report.problem(f"store: {spec['path']} does not exist (logkey watch creates it)")
        return
    try:
        store = open_store(spec)
        info["where"] = getattr(store, "where", info["where"])     # a URL without password
        try:
            info["open_gates"] = sum(1 for _ in store.scan(now))
        finally:
            store.close()
        info["reachable"] = True
    except StoreError as exc:
        report.problem(f"store unreachable: {exc}")


def _exports(cfg, status: dict | None, report: Report, now: float) -> None:
    known = {e["path"]: e for e in (status or {}).get("exports") or []}
    changed = (status or {}).get("exports_changed")
    for spec in cfg.exports:
        seen = known.get(spec["path"], {})
        path = seen.get("file") or spec["path"]
        entry = {"format": spec["format"], "path": spec["path"], "file": path,
                 "state": "ok", "mtime": None}
        report.data["exports"].append(entry)
        name = f"export {spec['format']} {spec['path']}"
        failing = "its last update failed (see the watcher's log)" if seen.get("failing") \
            else None
        try:
            entry["mtime"] = os.stat(path).st_mtime
        except OSError as exc:
            entry["state"] = "missing"
            report.problem(f"{name}: {path}: {exc.strerror or exc}"
                           + (f"; {failing}" if failing else ""))
            continue
        if failing:
            entry["state"] = "failing"
            report.problem(f"{name}: {failing}")
        elif changed is not None and entry["mtime"] < changed - EXPORT_GRACE:
            entry["state"] = "stale"
            report.problem(f"{name}: written {_ago(now - entry['mtime'])} ago, but the gates "
                           f"changed {_ago(now - changed)} ago")


def render(data: dict) -> str:
    """The one screen."""
    out = []
    verdict = "OK" if data["ok"] else f"BROKEN ({len(data['problems'])} problem" + \
        ("s)" if len(data["problems"]) != 1 else ")")
    out.append(f"logkey status: {verdict}    config {data['config']}")
    now = data["time"]
    w = data["watcher"] or {}
    state = w.get("state", "?")
    if state in ("running", "stale", "dead", "stopped"):
        extra = f"pid {w['pid']}, started {_ago(now - (w.get('started') or now))} ago, " \
                f"status {_ago(now - (w.get('updated') or now))} old"
    else:
        extra = ""
    out.append(f"watcher   {state:<10} {extra}".rstrip())
    s = data["store"] or {}
    gates = f"{s['open_gates']} open gate(s)" if s.get("reachable") else "UNREACHABLE"
    out.append(f"store     {s.get('type', '?'):<10} {s.get('where', '')}: {gates}")
    for f in data["files"]:
        detail = []
        if f["size"] is not None and f["offset"] is None:
            detail.append(f"{f['size']} bytes, no offset saved yet")
        elif f["size"] is not None:
            detail.append(f"offset {f['offset']} of {f['size']} ({f['behind']} bytes behind)")
        if f.get("lines") is not None:
            detail.append(f"{f['lines']} lines read since start")
        out.append(f"log       {f['state']:<10} {f['path']}  {', '.join(detail)}".rstrip())
    for pack, e in sorted(data["last_event"].items()):
        line = f" (line time {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e['time']))})" \
            if e.get("time") else ""
        out.append(f"event     {pack:<10} last {e['kind']} {_ago(now - e['seen'])} ago{line}")
    for e in data["exports"]:
        when = f"written {_ago(now - e['mtime'])} ago" if e["mtime"] else ""
        out.append(f"export    {e['state']:<10} {e['format']} {e['file']}  {when}".rstrip())
    out += [f"PROBLEM   {p}" for p in data["problems"]]
    out += [f"warning   {w}" for w in data["warnings"]]
    return "\n".join(out) + "\n"


def main(args) -> int:
    from .. import config as config_mod
    cfg = config_mod.load(args.config)
    data = check(cfg)
    if args.json:
        sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render(data))
    return 0 if data["ok"] else 1


def add_parser(sub):
    """Register `logkey status` on an argparse subparsers object."""
    p = sub.add_parser(
        "status", help="is everything working? (exit 1 when something is broken)",
        description="One screen: the watcher, the followed logs and how far they are read, "
                    "the last event per pack, the store and its open gates, the exports, and "
                    "the security warnings that apply. Exit 0 when nothing is broken, 1 when "
                    "something is, 2 for a bad configuration.")
    p.add_argument("--config", metavar="FILE",
                   help="configuration file (default: $LOGKEY_CONFIG, else "
                        "/etc/logkey/config.yaml)")
    p.add_argument("--json", action="store_true", help="the same as one JSON object")
    p.set_defaults(func=main)
    return p
