"""Finding and loading the pack files: the shipped packs, a site's local directory overriding
them by name, a file named on the command line; into one PackSet (match.py).

Reads: the pack files (YAML; packs.py checks each). Writes nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

from .match import PackSet
from .packs import PackError, apply_services, load_pack


def shipped_dir() -> Path:
    package = Path(__file__).resolve().parent.parent        # logkey/
    for candidate in (package / "patterns", package.parent / "patterns"):   # installed; a checkout
        if candidate.is_dir():
            return candidate
    return package / "patterns"


def pack_files(local_dir: str | os.PathLike | None = None, extra=()) -> dict[str, Path]:
    """name -> file: shipped packs, overridden by name by packs in `local_dir`, then by the
    `extra` files (a pack file named on the command line)."""
    paths: dict[str, Path] = {}
    for directory in (shipped_dir(), Path(local_dir) if local_dir else None):
        if directory is None or not directory.is_dir():
            continue
        for p in sorted(directory.glob("*.yaml")):
            paths[p.stem] = p
    for p in extra:
        paths[Path(p).stem] = Path(p)
    return paths


def load_packs(names: list[str] | None = None, local_dir: str | os.PathLike | None = None,
               extra=(), services: dict | None = None, proxies=None) -> PackSet:
    """Shipped packs, overridden by name by packs in `local_dir` and by the `extra` files;
    only `names` if given; `services` (the setting) adds a site's service names; `proxies`
    (trusted_proxies, ip_network objects) are the peers whose word on a client's address
    (a rule's `proxy` group) is believed."""
    paths = pack_files(local_dir, extra)
    unknown = sorted(set(services or ()) - set(paths))
    if unknown:
        raise PackError(f"services: no pack named {unknown[0]!r} (have: {', '.join(sorted(paths))})")
    if names:
        missing = [n for n in names if n not in paths]
        if missing:
            raise PackError(f"no pack named {missing[0]!r} (have: {', '.join(sorted(paths))})")
        paths = {n: paths[n] for n in names}
    loaded = {name: load_pack(p) for name, p in paths.items()}
    if services:
        apply_services(loaded, services)
    for pack in loaded.values():
        pack.proxies[:] = proxies or []
    return PackSet(list(loaded.values()))
