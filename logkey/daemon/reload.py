"""SIGHUP: the watcher takes a new configuration and packs, or refuses them and keeps serving
with the running ones.

Takes: the running Watcher (watch.py) and a loaded configuration, or the function that loads
one (config.load of the file the watcher started with).
Gives: the new packs, engines, gate policy settings and exports installed (the open gates,
the counts and the store stay); when the logs or state_dir changed, the read offsets saved
(only when every gate is stored, as always: else the lines since are read again, and judged
by their own time) and the logs attached again; the sockets bound again when their settings changed. A file that
does not load, a pack that does not compile or a check of build.py that fails refuses the
reload with one error line; nothing of the running configuration changes then. metrics.watch
takes effect only at the next start (warned).
"""
from __future__ import annotations

import logging

from .build import build

log = logging.getLogger("logkey")


def reload(watcher, cfg) -> bool:
    """Take `cfg` and its packs, or keep the running ones (logged); whether it was taken."""
    try:
        packs, pconf = build(cfg)
    except Exception as exc:                # noqa: BLE001 — any reason refuses the reload
        log.error("reload refused, keeping the running configuration: %s", exc)
        return False
    old = watcher.cfg
    if cfg.metrics != old.metrics:
        log.warning("metrics: the new addresses take effect at the next start")
    old_exps = watcher.engines.journal_expectations()
    watcher.install(cfg, packs, pconf)
    watcher.feeder.drift.reset()
    watcher.policy.config = pconf
    if cfg.logs != old.logs or cfg.state_dir != old.state_dir or \
            old_exps != watcher.engines.journal_expectations():
        watcher.applier.commit_read(watcher.sources)    # not past a gate not stored yet
        watcher.sources.close_files()
        watcher.attach_logs()
    watcher.sources.rebind(cfg)
    log.info("configuration reloaded: %d log(s), %d pack(s)", len(cfg.logs), len(packs.packs))
    return True


def reload_from(watcher, load_config) -> bool:
    """A reload asked for by SIGHUP: `load_config()` reads the file again; a file that does not
    load is refused as a bad one is."""
    try:
        return reload(watcher, load_config())
    except Exception as exc:                # noqa: BLE001 — a bad file keeps the old one
        log.error("reload refused, keeping the running configuration: %s", exc)
        return False
