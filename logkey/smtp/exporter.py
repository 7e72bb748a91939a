"""The Exporter: every configured export, brought to the open gates when the caller says the
gates changed, retried after a failure, and noticed when another writer changed a file.

Takes the `exports:` entries and, at each update, the gate records and `now`; gives export
files holding exactly the keys of the gates open at `now`, sorted (IPv4, then IPv6). A file is
rewritten only when its content changes (exporttargets.py), then its optional `command` runs
(/bin/sh -c, COMMAND_TIMEOUT, failure logged once). Any failure (tool missing, unwritable
directory, base file unreadable) is logged once per export and retried on the next update; it
never stops the caller (the watcher). Successful writes log at debug only, so gates expiring
cause no log traffic.

Reads and writes: what its targets do (exporttargets.py). Trust: `command` comes from the
root-owned configuration.
"""
from __future__ import annotations

import logging

from .exportio import COMMAND_TIMEOUT, ExportError, run_command
from .exporttargets import Target, make_target
from .mapformats import sorted_keys

log = logging.getLogger("logkey")


class Exporter:
    """Every configured export, brought to the open gates by update(gates, now)."""

    def __init__(self, exports: list[dict], *, command_timeout: float = COMMAND_TIMEOUT):
        self.targets = [make_target(spec) for spec in exports]
        self.command_timeout = command_timeout
        self.keys: list[str] | None = None      # the keys of the last update

    @property
    def failing(self) -> bool:
        return any(t.failing for t in self.targets)

    def update(self, gates, now: float) -> None:
        """Bring every export to exactly the gates open at `now`. Never raises."""
        self.keys = sorted_keys(g.key for g in gates if g.expires > now)
        for target in self.targets:
            self._sync(target)

    def changed_elsewhere(self) -> bool:
        """True when an export's file was changed by another writer since our last sync."""
        return any(t.seen is not None and t.signature() != t.seen for t in self.targets)

    def forget(self) -> None:
        for target in self.targets:
            target.forget()

    def retry(self) -> None:
        """Try again the exports whose last update failed (with the last update's keys)."""
        if self.keys is None:
            return
        for target in self.targets:
            if target.failing:
                self._sync(target)

    def _sync(self, target: Target) -> None:
        try:
            changed = target.sync(self.keys)
        except ExportError as exc:
            if not target.failing:
                target.failing = True
                log.error("%s: %s (will retry)", target.describe(), exc)
            return
        except Exception as exc:        # noqa: BLE001 — an export never stops the watcher
            if not target.failing:
                target.failing = True
                log.error("%s: internal error: %s: %s (will retry)", target.describe(),
                          type(exc).__name__, exc)
            return
        if target.failing:
            target.failing = False
            log.info("%s: up to date again", target.describe())
        if changed and target.command:
            self._command(target)
        target.seen = target.signature()

    def _command(self, target: Target) -> None:
        try:
            problem = run_command(target.command, self.command_timeout)
        except ExportError as exc:
            problem = str(exc)
        if problem is not None:
            if not target.command_failing:
                target.command_failing = True
                log.warning("%s: command %r failed: %s", target.describe(), target.command,
                            problem)
        elif target.command_failing:
            target.command_failing = False
            log.info("%s: command %r works again", target.describe(), target.command)
