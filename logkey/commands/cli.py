"""The `logkey` command: argument parsing and one-line errors. main(argv) -> exit status.

Exit 0: ran; 1: a check failed (packs test); 2: bad usage, config, pack or unreadable input.
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from datetime import datetime, timezone

from .. import __version__
from .. import config as config_mod
from ..errors import LogkeyError
from ..ownlog import configure as configure_log, to_stderr


class UsageError(Exception):
    pass


def _parse_now(text: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--now: {text!r} is not an ISO 8601 time "
                         "(e.g. 2026-11-27T23:42:17+00:00)") from None
    return dt if dt.tzinfo else dt.astimezone()


def _load_config(args):
    return config_mod.load(args.config, optional=True)


def _packs(args, cfg):
    from ..parse.packfiles import load_packs    # (regex, the packs: not for gates, check ...)
    names = args.pack or cfg.packs
    return load_packs(names, cfg.patterns_dir, services=cfg.services, proxies=cfg.trusted_proxies)


def cmd_dry_run(args) -> int:
    from .dryrun import run
    from ..parse.headers import Clock
    from ..parse.match import own_file_rules
    cfg = _load_config(args)
    packs = _packs(args, cfg)
    # the aliases of the configuration's logs: entries (a site's own tags, e.g. instance_name)
    packs = packs.with_aliases({tag: program for entry in cfg.logs
                                for tag, program in (entry.get("aliases") or {}).items()})
    now = _parse_now(args.now) if args.now else None
    own_rules = None
    if args.own_file:
        pack = packs.packs.get(args.own_file)
        if pack is None or not pack.untagged:
            raise UsageError(f"--own-file: pack {args.own_file!r} is not loaded or has no "
                             "untagged rules")
        own_rules = own_file_rules(pack)
    if not args.files and not args.journal:
        raise UsageError("dry-run: give FILEs to read, or --journal")
    journals = _journal_sources(cfg, packs) if args.journal else []
    # "now" is read once, so every worker infers RFC 3164 years from the same instant.
    clock = Clock(now or datetime.now(timezone.utc), cfg.timezone)
    from ..sources.logtrust import LogWarnings
    from ..parse.timelimit import cpu_limit
    with cpu_limit(), _bulk_gc():
        run(args.files, packs, clock, at=now, window=cfg.window,
            join_window=cfg.join_window, logout_hold=cfg.logout_hold, json_out=args.json,
            out=sys.stdout, line_max=cfg.line_max, own_rules=own_rules, journals=journals,
            warnings=LogWarnings(cfg.logs, own_file=own_rules is not None))
    return 0


# dry-run's collector: gen0 collected every 50,000 new containers instead of 700. A dense log
# keeps hundreds of thousands of events, tuples and gates alive at once (correlation, the
# window, the workers' results), all refcounted and without cycles; the default thresholds had
# the collector walk them again and again: about a quarter of the parent's CPU on a
# login-dense log (issue 17). Cycles are still collected, only less often.
BULK_GC_THRESHOLD = 50_000


@contextmanager
def _bulk_gc():
    """During a bulk run: what is loaded now (modules, packs, compiled rules) is never garbage,
    so the collector stops walking it (gc.freeze; forked workers inherit that), and young
    objects are collected less often. Both undone after."""
    import gc
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(BULK_GC_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _journal_sources(cfg, packs):
    """dry-run --journal: the configuration's journal entries, else the system journal checked
    against the loaded packs' own expectations."""
    from ..sources import journal, journalread
    from ..parse.match import PackSet
    entries = [(f"logs[{i}].journal", e["journal"]) for i, e in enumerate(cfg.logs)
               if e["journal"] is not None]
    if not entries:
        entries = [("--journal", journal.parse_source({}, "--journal"))]
    out = []
    for where, source in entries:
        missing = [n for n in source["packs"] or () if n not in packs.packs]
        if missing:
            raise UsageError(f"{where}.packs: pack {missing[0]!r} is not loaded")
        try:
            exps = journal.expectations(source, packs, where)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        subset = packs if not source["packs"] else PackSet(
            [packs.packs[n] for n in source["packs"]])
        out.append((source, exps, subset))
    journalread.journalctl()
    return out


def _load_required(args):
    return config_mod.load(args.config)


def cmd_watch(args) -> int:
    from ..daemon.watch import Watcher
    to_stderr(args.verbose)
    cfg = _load_required(args)
    configure_log(cfg.log, args.verbose, args.log)
    shift = 0.0
    if args.as_of:
        shift = datetime.now(timezone.utc).timestamp() - _parse_now(args.as_of).timestamp()
    watcher = Watcher(cfg, observe=args.observe, shift=shift)
    return watcher.run(once=args.once, load_config=lambda: config_mod.load(cfg.path))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logkey",
        description="POP-before-SMTP from mail logs: a successful POP3/IMAP login opens "
                    "relay for the client's IP for a while.")
    parser.add_argument("--version", action="version", version=f"logkey {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add_config(p, optional=False):
        p.add_argument("--config", metavar="FILE",
                       help="configuration file (default: $LOGKEY_CONFIG, else "
                            f"{config_mod.DEFAULT_PATH}"
                            + ("; optional for this command)" if optional else ")"))

    p = sub.add_parser("dry-run", help="read logs and report the logins logkey would see",
                       description="Read mail logs (plain, .gz, or - for stdin) and report "
                                   "events, header formats, near-misses, rejected IPs and the "
                                   "gates that would be open. Changes nothing.")
    add_config(p, optional=True)
    p.add_argument("--pack", action="append", metavar="NAME",
                   help="use only this pack (repeatable); default: all")
    p.add_argument("--json", action="store_true",
                   help="JSON Lines: one object per event, then a summary object")
    p.add_argument("--now", metavar="ISO8601",
                   help="pin 'now' (year of RFC 3164 stamps, gates open at the end)")
    p.add_argument("--own-file", metavar="PACK",
                   help="the files are PACK's own log: try its untagged rules on every line")
    p.add_argument("--journal", action="store_true",
                   help="read the systemd journal (the configuration's journal: entries, else "
                        "the system journal); only entries whose trusted fields match count")
    p.add_argument("files", nargs="*", metavar="FILE")
    p.set_defaults(func=cmd_dry_run)

    from .packs import add_parser as add_packs_parser
    add_packs_parser(sub, add_config, _load_config, UsageError)

    p = sub.add_parser("watch", help="follow the mail logs into the gate store",
                       description="Follow the configured logs and open a gate for every "
                                   "successful POP3/IMAP login. Runs in the foreground; "
                                   "SIGTERM stops it, SIGHUP reloads configuration and packs.")
    add_config(p)
    p.add_argument("--observe", action="store_true",
                   help="do everything but write gates; log what would be done")
    p.add_argument("--once", action="store_true", help="read what is there, apply it, exit")
    p.add_argument("--as-of", metavar="ISO8601",
                   help="read the logs as if it were this time now (a demo or a replay)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    p.add_argument("--log", choices=("stderr", "syslog"),
                   help="where logkey's own log goes (default: log.to, else stderr)")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("config", help="check the configuration",
                       description="Validate the configuration and the packs it names.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    pc = csub.add_parser("check", help="validate without running (exit 2 when invalid)",
                         description="Validate the configuration file and every pack.")
    add_config(pc)
    pc.set_defaults(func=lambda a: _admin().cmd_config_check(_load_required(a)))
    p.set_defaults(func=lambda a, p=p: (p.print_help(), 2)[1])

    p = sub.add_parser("gates", help="list the open gates",
                       description="List the open gates: ip, user, pack, opened, expires in.")
    add_config(p)
    p.add_argument("--json", action="store_true", help="JSON Lines, one gate per line")
    p.set_defaults(func=lambda a: _admin().cmd_gates(_load_required(a), a.json))

    p = sub.add_parser("open", help="open a gate by hand", description="Open a gate for IP.")
    add_config(p)
    p.add_argument("ip", metavar="IP")
    p.add_argument("--user", metavar="U", help="the user it is for (shown by gates)")
    p.add_argument("--for", dest="seconds", metavar="SECONDS", type=float,
                   help="lifetime (default: window)")
    p.set_defaults(func=lambda a: _admin().cmd_open(_load_required(a), a.ip, a.user, a.seconds))

    p = sub.add_parser("close", help="close gates now",
                       description="Close the gate of IP, or every gate of --user U "
                                   "(revoke a stolen account at once).")
    add_config(p)
    p.add_argument("ip", metavar="IP", nargs="?")
    p.add_argument("--user", metavar="U")
    p.set_defaults(func=cmd_close)

    p = sub.add_parser("check", help="is a gate open for IP? (exit 0 open, 1 closed, 2 error)",
                       description="Exit 0 when a gate for IP is open, 1 when not, 2 on error "
                                   "(for Exim ${run} and scripts).")
    add_config(p)
    p.add_argument("ip", metavar="IP")
    p.add_argument("--json", action="store_true", help="print the gate record as JSON")
    p.set_defaults(func=lambda a: _admin().cmd_check(_load_required(a), a.ip, a.json))

    from ..smtp import exports  # argparse only at import; tools load lazily
    exports.add_parser(sub)
    from .policy import add_parser as add_policy_parser
    add_policy_parser(sub)
    from ..pop.popwrap import add_parser as add_popwrap_parser
    add_popwrap_parser(sub)
    from .status import add_parser as add_status_parser
    add_status_parser(sub)

    p = sub.add_parser("purge", help="remove expired gates from the store",
                       description="Remove expired gates from the store.")
    add_config(p)
    p.set_defaults(func=lambda a: _admin().cmd_purge(_load_required(a)))
    return parser


def cmd_close(args) -> int:
    if (args.ip is None) == (args.user is None):
        raise UsageError("close: give an IP or --user U (one of them)")
    return _admin().cmd_close(_load_required(args), args.ip, args.user)


def _admin():
    from . import admin  # store code only for the commands that use it
    return admin


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (LogkeyError, UsageError) as exc:
        print(f"logkey: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:                     # `logkey dry-run ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:                    # a bug: one line unless asked for more
        if os.environ.get("LOGKEY_DEBUG"):
            raise
        print(f"logkey: internal error: {type(exc).__name__}: {exc} "
              "(LOGKEY_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
