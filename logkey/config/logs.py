"""The `logs:` section (what to follow and which packs read it) and `services:` (a site's own
service names per pack).

Takes: the YAML values of those keys. Gives: `logs` as a list of entries, each
{path, packs, own_file, sender_verified, aliases, journal} (journal: the checked `journal:`
source of sources/journal.py, or None for a file); `services` as parse/packs.py checks it.
A wrong value is a ValueError naming the entry and key inside the section ("[0].path: ...").
"""
from __future__ import annotations

import re

_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")


def aliases(v, i) -> dict:
    """aliases: {TAG: PROGRAM}: lines tagged TAG are read by the rules for PROGRAM."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"[{i}].aliases: must be a mapping {{TAG: PROGRAM}}, e.g. {{mx2: dovecot}}")
    for tag, program in v.items():
        for what in (tag, program):
            if not isinstance(what, str) or not _TAG.fullmatch(what):
                raise ValueError(f"[{i}].aliases.{tag}: {what!r} is not a program tag "
                                 "(letters, digits, . _ / -, at most 64)")
    return dict(v)


def logs(v):
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError("must be a list of {path: FILE-OR-GLOB, packs: [NAME...], "
                         "own_file: PACK, sender_verified: BOOL}")
    out = []
    for i, entry in enumerate(v):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict):
            raise ValueError(f"[{i}]: must be a mapping with path: or journal:")
        if "journal" in entry:              # the systemd journal (journal.py)
            if set(entry) != {"journal"}:
                raise ValueError(f"[{i}].{sorted(set(entry) - {'journal'})[0]}: a journal "
                                 "entry has its keys inside journal: (match, program, packs, "
                                 "directory, files)")
            from ..sources.journal import parse_source
            out.append({"path": None, "packs": None, "own_file": None, "sender_verified": True,
                        "aliases": {},
                        "journal": parse_source(entry["journal"], f"[{i}].journal")})
            continue
        bad = set(entry) - {"path", "packs", "own_file", "sender_verified", "aliases"}
        if bad:
            raise ValueError(f"[{i}].{sorted(bad)[0]}: unknown key (known: path, packs, "
                             "own_file, sender_verified, aliases; or journal:)")
        path = entry.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError(f"[{i}].path: must be a path or glob")
        packs = entry.get("packs")
        if packs is not None and (not isinstance(packs, list) or
                                  not all(isinstance(x, str) for x in packs)):
            raise ValueError(f"[{i}].packs: must be a list of pack names")
        own = entry.get("own_file")
        if own is not None and not isinstance(own, str):
            raise ValueError(f"[{i}].own_file: must be a pack name")
        verified = entry.get("sender_verified", False)
        if not isinstance(verified, bool):
            raise ValueError(f"[{i}].sender_verified: must be true or false")
        out.append({"path": path, "packs": packs, "own_file": own,
                    "sender_verified": verified, "aliases": aliases(entry.get("aliases"), i),
                    "journal": None})
    return out


def services(v):
    if v is None or v == {}:        # nothing to check (check_services' answer): no regex import
        return {}
    from ..parse.packs import check_services
    return check_services(v)
