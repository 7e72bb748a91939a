"""The watcher's parts, built from the configuration and checked before anything runs.

Takes: a loaded configuration (config.py) and the packs it names.
Gives: `build(cfg)`, the packs and the gate policy's configuration, checked (every pack a log
entry names exists, every alias is read by a pack, journalctl is there for `journal:` logs),
which `logkey config check` and a SIGHUP reload use too; `Engines`, the parse engines (one per
log file entry and journal entry, sharing the log-order state and the counts of a base
engine); `make_follower` and `make_journal_readers`, what reads the logs; `make_exporter`, the
configured exports; `mynetworks`, Postfix's networks for never_gate_mynetworks.
Reads: the pack files, `postconf -h mynetworks` when never_gate_mynetworks is set, state_dir
(created 0750 when missing). Writes nothing else; the store is opened by open_store
(stores/__init__.py), called by the watcher.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import logging
import os
import shutil
import subprocess

from ..errors import LogkeyError
from ..gates.policy import PolicyConfig
from ..parse.engine import Engine
from ..parse.headers import Clock, parse
from ..parse.match import PackSet, own_file_rules
from ..parse.packfiles import load_packs
from ..sources import journal, journalread
from ..sources.follow import Follower
from ..sources.popsocket import POPWRAP_PACK

log = logging.getLogger("logkey")


class WatchError(LogkeyError):
    """Cannot start: one line naming what is wrong."""


def mynetworks() -> list:
    """Postfix's mynetworks, read with `postconf -h mynetworks`."""
    postconf = shutil.which("postconf")
    if postconf is None:
        raise WatchError("never_gate_mynetworks: postconf not found (is Postfix installed?)")
    out = subprocess.run([postconf, "-h", "mynetworks"], capture_output=True, text=True,
                         timeout=10)
    if out.returncode != 0:
        raise WatchError(f"never_gate_mynetworks: postconf failed: {out.stderr.strip()[:200]}")
    nets = []
    for item in out.stdout.replace(",", " ").split():
        item = item.replace("[", "").replace("]", "")
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            log.warning("never_gate_mynetworks: %r is not a network; ignored", item)
    return nets


def policy_config(cfg, packs: PackSet) -> PolicyConfig:
    never = list(cfg.never_gate or [])
    if cfg.never_gate_mynetworks:
        never += mynetworks()
    return PolicyConfig(
        window=cfg.window, max_session=cfg.max_session, never_gate=never,
        never_gate_users=frozenset(cfg.never_gate_users or ()), only_gate=cfg.only_gate,
        max_ips_per_user=cfg.max_ips_per_user, ipv6_prefix=cfg.ipv6_prefix,
        logout_packs=frozenset([POPWRAP_PACK] + [
            p.name for p in packs.packs.values()
            if any(r.kind == "logout" for r in p.rules + p.untagged)]))


def build(cfg):
    """Everything that comes from the configuration and the packs, checked: (packs, policy
    config). Raises PackError/WatchError."""
    packs = load_packs(cfg.packs, cfg.patterns_dir, services=cfg.services, proxies=cfg.trusted_proxies)
    for i, entry in enumerate(cfg.logs):
        source = entry["journal"]
        names = (source["packs"] if source else entry["packs"]) or []
        where = f"logs[{i}].journal.packs" if source else f"logs[{i}].packs"
        for name in names + ([entry["own_file"]] if entry["own_file"] else []):
            if name not in packs.packs:
                raise WatchError(f"{cfg.path}: {where}: no pack named {name!r}")
        bad = unread_alias(entry, packs)
        if bad:
            raise WatchError(f"{cfg.path}: logs[{i}].aliases.{bad[0]}: no loaded pack reads "
                             f"program {bad[1]!r}")
    if journal_sources(cfg, packs):
        try:
            journalread.journalctl()
        except journalread.JournalError as exc:
            raise WatchError(f"{cfg.path}: logs: {exc}") from None
    return packs, policy_config(cfg, packs)


def unread_alias(entry, packs: PackSet):
    """(tag, program) of the entry's first alias whose program no pack it uses reads, or None."""
    subset = packs if not entry["packs"] else PackSet([packs.packs[n] for n in entry["packs"]
                                                       if n in packs.packs])
    for tag, program in (entry.get("aliases") or {}).items():
        if not subset.rules_for(program):
            return tag, program
    return None


def journal_sources(cfg, packs: PackSet) -> list:
    """(source, expectations, engine packs) for each `journal:` entry of logs; WatchError
    when one has no expectation to check entries against."""
    out = []
    for i, entry in enumerate(cfg.logs):
        source = entry["journal"]
        if source is None:
            continue
        try:
            exps = journal.expectations(source, packs, f"logs[{i}].journal")
        except ValueError as exc:
            raise WatchError(f"{cfg.path}: {exc}") from None
        subset = packs if not source["packs"] else PackSet(
            [packs.packs[n] for n in source["packs"]])
        out.append((source, exps, subset))
    return out


class Engines:
    """The parse engines of one configuration: `base` (its log-order state and its counts,
    `base.stats`, are shared by all), one per log file entry (`files`: glob, engine, own-file
    rules), one per journal entry (`journals`: source, expectations, engine). `previous`: the
    engines of the configuration this one replaces (a reload), whose counts go on."""

    def __init__(self, cfg, packs: PackSet, previous: "Engines | None" = None):
        self.clock = Clock(None, cfg.timezone)
        base = Engine(packs, self.clock, cfg.join_window, logout_hold=cfg.logout_hold)
        if previous is not None:
            base.stats = previous.base.stats    # counts go on across a reload (metrics)
        self.files = []
        for entry in cfg.logs:
            if entry["journal"] is not None:
                continue
            subset = (packs if not entry["packs"] else PackSet(
                [packs.packs[n] for n in entry["packs"]])).with_aliases(entry["aliases"])
            own = own_file_rules(packs.packs[entry["own_file"]]) if entry["own_file"] else None
            self.files.append((entry["path"], Engine(subset, self.clock, cfg.join_window,
                                                     shared=base), own))
        self.base = base
        self._of_path: dict[str, tuple] = {}
        self.journals = [(source, exps, Engine(subset, self.clock, cfg.join_window, shared=base))
                         for source, exps, subset in journal_sources(cfg, packs)]

    def for_path(self, path: str):
        """(engine, own-file rules) for a followed file: its entry's, else the base engine's."""
        found = self._of_path.get(path)
        if found is None:
            found = next(((e, own) for pattern, e, own in self.files
                          if path == pattern or fnmatch.fnmatchcase(path, pattern)),
                         (self.base, None))
            self._of_path[path] = found
        return found

    def line_time(self, line: bytes):
        """A raw line's own time (Unix seconds), None without a header: for the follower's
        first attach by time (seek.py)."""
        header = parse(line)
        t = self.clock.time(header) if header is not None else None
        return t.timestamp() if t is not None else None

    def journal_expectations(self) -> list:
        return [exps for _, exps, _ in self.journals]


def attach_window(cfg) -> float:
    """How far back a first attach reads (by the lines' own time)."""
    return max(cfg.window, cfg.max_session)


def make_follower(cfg, line_time, now) -> Follower:
    """The follower of every `path:` log; state_dir made when missing. WatchError when it
    cannot be."""
    try:
        os.makedirs(cfg.state_dir, mode=0o750, exist_ok=True)
        return Follower([e["path"] for e in cfg.logs if e["journal"] is None],
                        cfg.state_dir, line_max=cfg.line_max,
                        attach_window=attach_window(cfg), line_time=line_time,
                        rotate_wait=cfg.rotate_wait, now=now)
    except OSError as exc:
        raise WatchError(f"state_dir: {cfg.state_dir}: {exc.strerror or exc}") from None


def make_journal_readers(cfg, journals: list, now) -> list:
    """One journalctl per journal entry, started at the first read; its cursor is saved in
    state_dir with the offsets (commit), under a name made from the entry's settings."""
    return [journalread.JournalReader(source, exps, state_dir=cfg.state_dir,
                                      attach_window=attach_window(cfg), now=now)
            for source, exps, _ in journals]


def make_exporter(cfg, observe: bool):
    """The configured exports (smtp/exports.py), None when there are none or in observe."""
    if cfg.exports and not observe:
        from ..smtp.exporter import Exporter
        return Exporter(cfg.exports)
    return None
