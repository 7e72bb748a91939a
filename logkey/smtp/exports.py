"""Exports, as callers use them: `sync_configured` (every configured export brought to the
store's open gates now: `logkey open`/`close`, `logkey export` with no --format) and the
`logkey export` command (one format, to a file or stdout).

Takes the configuration and the gate store; gives the export files (or the map on stdout) and
an exit status. The watcher keeps the exports itself, with an Exporter (exporter.py). The
formats are described in exporttargets.py, their text made by mapformats.py, files written and
tools run by exportio.py.

Reads: the configuration, the gate store. Writes: the export files (through the targets).
Trust: --output is the caller's (root's) choice, as with any file it names.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from ..errors import LogkeyError
from .exporter import Exporter
from .exportio import COMMAND_TIMEOUT, ExportError, run_command
from .exporttargets import make_target
from .mapformats import FORMATS, render, sorted_keys


def sync_configured(cfg, store, now: float | None = None) -> bool:
    """Bring every configured export (cfg.exports) to the gates open in `store` now, running
    each changed export's `command:`, as the watcher does: `logkey open`/`close` call this so
    that they take effect in the exports at once, `logkey export` with no --format too.
    Errors are logged (as the watcher logs them); True when every export is up to date."""
    if not cfg.exports:
        return True
    now = time.time() if now is None else now
    exporter = Exporter(cfg.exports)
    exporter.update(list(store.scan(now)), now)
    return not exporter.failing and not any(t.command_failing for t in exporter.targets)


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `logkey export` on an argparse subparsers object."""
    p = sub.add_parser(
        "export", help="write one export of the open gates now",
        description="Write the gates open now, from the store, in one export format: to "
                    "--output FILE (atomically; lmdb and tcprules need it), else to stdout. "
                    "A tcprules export takes the base rules of the configured tcprules "
                    "export; when --output is a configured export's path, that export's "
                    "command: runs after the write. With no --format, every configured "
                    "export is brought up to date, as the watcher does.")
    p.add_argument("--format", choices=FORMATS,
                   help="the format (default: every configured export)")
    p.add_argument("--output", metavar="FILE",
                   help="the file (for lmdb: the map name, as in lmdb:FILE; for tcprules: "
                        "the cdb)")
    p.add_argument("--config", metavar="FILE",
                   help="configuration file (default: $LOGKEY_CONFIG, else "
                        "/etc/logkey/config.yaml)")
    p.set_defaults(func=main)
    return p


def main(args) -> int:
    """`logkey export`: 0 written, 2 on any error (one line on stderr)."""
    from .. import config as config_mod
    from ..stores import StoreError, open_store

    if args.format is None and args.output:
        print("logkey: export: --output needs --format", file=sys.stderr)
        return 2
    if args.format in ("lmdb", "tcprules") and not args.output:
        print(f"logkey: export: --format {args.format} needs --output FILE", file=sys.stderr)
        return 2
    try:
        cfg = config_mod.load(args.config)
        now = time.time()
        store = open_store(cfg.store, create=False)     # (an export only reads the store)
        try:
            if args.format is None:
                return 0 if sync_configured(cfg, store, now) else 2
            keys = sorted_keys(g.key for g in store.scan(now) if g.expires > now)
        finally:
            store.close()
        if not args.output:
            sys.stdout.write(render(args.format, keys))
            sys.stdout.flush()
            return 0
        base = next((e["base"] for e in cfg.exports if e["format"] == "tcprules"), None)
        same = next((e for e in cfg.exports if e["format"] == args.format and
                     os.path.abspath(e["path"]) == os.path.abspath(args.output)), None)
        target = make_target({"format": args.format, "path": args.output,
                              "command": same.get("command") if same else None, "base": base})
        target.sync(keys)
        if target.command:
            problem = run_command(target.command, COMMAND_TIMEOUT)
            if problem is not None:
                raise ExportError(f"command {target.command!r} failed: {problem}")
        return 0
    except StoreError as exc:
        print(f"logkey: export: store: {exc}", file=sys.stderr)
        return 2
    except LogkeyError as exc:
        print(f"logkey: export: {exc}", file=sys.stderr)
        return 2


def _standalone(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="logkey")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return main(parser.parse_args(["export", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(_standalone())
