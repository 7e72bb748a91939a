"""Which journal entries a pack or a journal source accepts: the `journal:` key of a pack and the
`match:` of a `logs[N].journal` source, checked when they are loaded (journal.py applies them).

Pure. A match names only fields journald sets itself (systemd.journal-fields(7), "Trusted
Journal Fields"), and always the unit, the one field no local user can choose.
"""
from __future__ import annotations

import re

# Fields journald sets itself from the kernel's view of the sender (systemd.journal-fields(7),
# "Trusted Journal Fields"); a match may name only these.
TRUSTED_FIELDS = ("_SYSTEMD_UNIT", "_SYSTEMD_SLICE", "_SYSTEMD_CGROUP", "_COMM", "_EXE",
                  "_CMDLINE", "_UID", "_GID", "_TRANSPORT", "_HOSTNAME", "_MACHINE_ID",
                  "_SELINUX_CONTEXT")
REQUIRED_FIELD = "_SYSTEMD_UNIT"       # the cgroup: a local user cannot put a process in a unit
NUMERIC_FIELDS = ("_UID", "_GID")
_VALUE = re.compile(r"[^\x00-\x1f\x7f]{1,256}")


def parse_match(value, where: str) -> dict[str, frozenset[str]]:
    """{FIELD: value or [values]} -> {FIELD: accepted values}; ValueError "WHERE...: problem"."""
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{where}: must be a mapping of trusted journal fields to values, "
                         "e.g. {_SYSTEMD_UNIT: dovecot.service, _UID: 0}")
    out = {}
    for name, given in value.items():
        here = f"{where}.{name}"
        if name not in TRUSTED_FIELDS:
            why = ("the sender chooses it (logger -t sets it), so it proves nothing"
                   if not str(name).startswith("_") or str(name).startswith("__")
                   else "not a field logkey matches")
            raise ValueError(f"{here}: {why}; match fields journald sets itself: "
                             f"{', '.join(TRUSTED_FIELDS)}")
        items = given if isinstance(given, list) else [given]
        values = set()
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (str, int)) or (
                    isinstance(item, int) and item < 0):
                raise ValueError(f"{here}: must be a value or a list of values")
            text = str(item)
            if not _VALUE.fullmatch(text) or (name in NUMERIC_FIELDS and not text.isdigit()):
                raise ValueError(f"{here}: {text!r} is not a valid value"
                                 + (" (a number)" if name in NUMERIC_FIELDS else ""))
            values.add(text)
        if not values:
            raise ValueError(f"{here}: must name at least one value")
        out[name] = frozenset(values)
    if REQUIRED_FIELD not in out:
        raise ValueError(f"{where}: must name {REQUIRED_FIELD} (the service's unit: the one "
                         "field no local user can choose)")
    return out


def parse_pack_journal(value, programs) -> dict[str, dict[str, frozenset[str]]]:
    """A pack's `journal:` key: {PROGRAM: match}. ValueError "journal.PROGRAM...: problem"."""
    if not isinstance(value, dict) or not value:
        raise ValueError("journal: must map program tags to trusted fields, e.g. "
                         "{dovecot: {_SYSTEMD_UNIT: dovecot.service, _COMM: log, _UID: 0}}")
    out = {}
    for program, match in value.items():
        if not isinstance(program, str) or program not in programs:
            raise ValueError(f"journal.{program}: not one of the pack's programs "
                             f"({', '.join(programs)})")
        out[program] = parse_match(match, f"journal.{program}")
    return out
