"""The systemd journal as a log source: entries whose trusted fields say which process wrote them.
This module is the pure part (configuration, expectations, the trust check, counting);
journalread.py runs journalctl and keeps the cursor.

Trust: journald itself sets the fields that begin with one underscore (_SYSTEMD_UNIT from the
  sender's cgroup, _COMM/_EXE from /proc, _UID from the socket credentials); the sender chooses
  everything else, SYSLOG_IDENTIFIER included (`logger -t dovecot` sets it). An entry reaches a
  pack only when its trusted fields match an Expectation (a pack's `journal:` key or the
  source's `match:`), fed as that expectation's program with its MESSAGE: a MESSAGE with a line
  break, CR or NUL is never an event (a user name could start a "line"), nor one over line_max.
  Journal files read through `directory:`/`files:` are only as trustworthy as what wrote them
  (systemd-journal-remote stores the fields a remote host sent).
Config: logs[N].journal: {match, program, packs, directory, files}; pack key `journal:`.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ..parse.headers import Header
from ..parse.journalmatch import TRUSTED_FIELDS, parse_match

log = logging.getLogger("logkey.journal")

SOURCE_KEYS = ("match", "program", "packs", "directory", "files")
EXAMPLES_KEEP = 20
_PROGRAM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./@+-]{0,63}")
CURSOR = re.compile(r"[a-z]=[0-9a-f]{1,64}(?:;[a-z]=[0-9a-f]{1,64}){0,15}")
_HOST = re.compile(r"[A-Za-z0-9._-]{1,255}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# --- configuration: expectations -------------------------------------------------------------
def parse_source(value, where: str) -> dict:
    """A `logs:` entry's `journal:` mapping, checked; ValueError "WHERE.KEY: problem"."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be a mapping (match, program, packs, directory, "
                         "files), or {} for the system journal and the packs' own expectations")
    bad = set(value) - set(SOURCE_KEYS)
    if bad:
        raise ValueError(f"{where}.{sorted(map(str, bad))[0]}: unknown key "
                         f"(known: {', '.join(SOURCE_KEYS)})")
    out = {"match": None, "program": None, "packs": None, "directory": None, "files": None}
    if value.get("match") is not None:
        out["match"] = parse_match(value["match"], f"{where}.match")
    program = value.get("program")
    if program is not None:
        if not isinstance(program, str) or not _PROGRAM.fullmatch(program):
            raise ValueError(f"{where}.program: must be a program tag such as dovecot")
        if out["match"] is None:
            raise ValueError(f"{where}.program: only with match: (the packs' own journal: "
                             "keys name their programs)")
        out["program"] = program
    packs = value.get("packs")
    if packs is not None:
        if not isinstance(packs, list) or not packs or not all(isinstance(p, str) for p in packs):
            raise ValueError(f"{where}.packs: must be a list of pack names")
        out["packs"] = list(packs)
    directory, files = value.get("directory"), value.get("files")
    if directory is not None and files is not None:
        raise ValueError(f"{where}.files: give directory: or files:, not both")
    if directory is not None:
        if not isinstance(directory, str) or not directory or "\0" in directory:
            raise ValueError(f"{where}.directory: must be a directory path")
        out["directory"] = directory
    if files is not None:
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not files or not all(
                isinstance(f, str) and f and "\0" not in f for f in files):
            raise ValueError(f"{where}.files: must be a list of journal file paths (globs allowed)")
        out["files"] = list(files)
    return out


@dataclass(frozen=True)
class Expectation:
    """Entries whose trusted fields all match are `program`'s own lines."""
    program: str
    match: tuple                            # ((field, frozenset of accepted values), ...)
    origin: str                             # "pack dovecot" / "logs[0].journal.match"

    def fields(self) -> dict:
        return dict(self.match)


def expectations(source: dict, packs, where: str) -> list[Expectation]:
    """The expectations a source checks entries against (its match:, else the journal: keys of
    its packs); ValueError naming WHERE when there are none or the program has no rules."""
    chosen = [packs.packs[n] for n in source["packs"]] if source["packs"] else \
        list(packs.packs.values())
    own = [(p, prog, m) for p in chosen for prog, m in (p.journal or {}).items()]
    if source["match"] is not None:
        program = source["program"]
        if program is None:
            names = sorted({prog for _, prog, _ in own})
            if len(names) != 1:
                raise ValueError(f"{where}.program: needed with match: (which program the "
                                 f"entries are: {', '.join(names) or 'a program tag a pack covers'})")
            program = names[0]
        if not packs.rules_for(program):
            raise ValueError(f"{where}.program: no loaded pack covers program {program!r}")
        return [Expectation(program, tuple(sorted(source["match"].items())),
                            f"{where}.match")]
    if not own:
        raise ValueError(f"{where}: none of the packs ({', '.join(p.name for p in chosen)}) "
                         "says what journald records for its server (a journal: key); give "
                         "match: and program:")
    return [Expectation(prog, tuple(sorted(m.items())), f"pack {p.name}") for p, prog, m in own]


# --- the trust check and the entry -> header step (pure) --------------------------------------
def trusted(entry: dict, exp: Expectation) -> bool:
    """Every field of the expectation is present once, with an accepted value."""
    for name, values in exp.match:
        value = entry.get(name)
        if not isinstance(value, str) or value not in values:
            return False
    return True


def printable(value, limit=80) -> str:
    if isinstance(value, list):
        value = "<binary>" if all(isinstance(x, int) for x in value) else "<several values>"
    text = "<none>" if value is None else str(value)
    text = "".join(c if c.isprintable() else f"\\x{ord(c) & 0xff:02x}" for c in text[:limit])
    return text + ("..." if len(str(value)) > limit else "")


def describe(entry: dict, exps) -> str:
    """What a refused entry says about itself: its tag, the trusted fields checked, its text."""
    names = sorted({name for e in exps for name, _ in e.match}, key=TRUSTED_FIELDS.index)
    parts = [f"SYSLOG_IDENTIFIER={printable(entry.get('SYSLOG_IDENTIFIER'))}"]
    parts += [f"{n}={printable(entry.get(n))}" for n in names]
    return " ".join(parts) + f' MESSAGE="{printable(entry.get("MESSAGE"))}"'


def _bytes(value) -> bytes | None:
    """A field's value as bytes: journalctl gives a string, or an array of byte values for
    data that is not printable UTF-8; None when it is neither (several values, or null: a
    field over 4096 bytes)."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:          # a lone surrogate from a \\ud800 escape
            return None
    if isinstance(value, list) and value and all(
            type(b) is int and 0 <= b <= 255 for b in value):
        return bytes(value)
    return None


ACCEPTED, REFUSED, UNSAFE, TOO_LONG, MALFORMED = "accepted", "refused", "unsafe", "too_long", \
    "malformed"


def judge(entry, exps, line_max: int):
    """(verdict, Header or reason). Only ACCEPTED entries go to a pack: as the expectation's
    program, with MESSAGE (one trailing newline dropped) and the time journald received it."""
    if not isinstance(entry, dict):
        return MALFORMED, "not a journal entry"
    usec, cursor = entry.get("__REALTIME_TIMESTAMP"), entry.get("__CURSOR")
    if not isinstance(usec, str) or not usec.isdigit() or len(usec) > 16 or \
            not isinstance(cursor, str) or not CURSOR.fullmatch(cursor):
        return MALFORMED, "no time stamp or cursor"
    exp = next((e for e in exps if trusted(entry, e)), None)
    if exp is None:
        return REFUSED, describe(entry, exps)
    raw = entry.get("MESSAGE")
    if raw is None:
        return TOO_LONG, "MESSAGE over 4096 bytes (journalctl gives null)"
    message = _bytes(raw)
    if message is None:
        return UNSAFE, "MESSAGE given more than once, or not text"
    if message.endswith(b"\n"):
        message = message[:-1]
    if b"\n" in message or b"\r" in message or b"\0" in message:
        return UNSAFE, "MESSAGE with a line break, CR or NUL"
    if len(message) > line_max:
        return TOO_LONG, f"MESSAGE over line_max ({line_max} bytes)"
    when = _EPOCH + timedelta(microseconds=int(usec))
    host = entry.get("_HOSTNAME")
    pid = entry.get("_PID")
    return ACCEPTED, Header(
        "journal", when.isoformat().encode("ascii"),
        host.encode("ascii") if isinstance(host, str) and _HOST.fullmatch(host) else None,
        exp.program, pid if isinstance(pid, str) and pid.isdigit() and len(pid) <= 10 else None,
        message)


@dataclass
class JournalStats:
    entries: int = 0
    accepted: int = 0
    refused: int = 0              # trusted fields match no expectation: forged or another process
    unsafe: int = 0               # multi-line, NUL, binary or repeated MESSAGE
    too_long: int = 0
    malformed: int = 0
    refused_examples: list = field(default_factory=list)     # (where, text)

    def count(self, verdict: str, where, reason) -> None:
        self.entries += 1
        setattr(self, verdict, getattr(self, verdict) + 1)
        if verdict == REFUSED and len(self.refused_examples) < EXAMPLES_KEEP:
            self.refused_examples.append((where, reason))

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in (
            "entries", "accepted", "refused", "unsafe", "too_long", "malformed")}

    def line(self) -> str:
        return ("{entries} entries read: {accepted} accepted, {refused} refused (trusted fields "
                "match no expectation), {unsafe} unsafe, {too_long} too long, {malformed} "
                "malformed").format(**self.summary())


def accepted(entries, exps, stats: JournalStats, name: str, line_max: int, refused=None):
    """(where, header, cursor) of each entry a pack may see; every entry is counted in `stats`
    and each refused one passed to `refused(name, description)`. `where` is (name, the entry's
    number in this run)."""
    for entry in entries:
        if entry is None:
            verdict, got = MALFORMED, "not a JSON object, or a line over 1 MiB"
        else:
            verdict, got = judge(entry, exps, line_max)
        where = (name, stats.entries + 1)
        stats.count(verdict, where, got)
        if verdict == ACCEPTED:
            yield where, got, entry["__CURSOR"]
        elif verdict == REFUSED and refused is not None:
            refused(name, got)


class RefusalLog:
    """Refused entries in logkey's own log: the first few of each minute in full, then how many
    more (a local user can send forgeries as fast as journald takes them)."""
    PER_MINUTE = 10

    def __init__(self, logger):
        self.log, self.until, self.shown, self.hidden = logger, 0.0, 0, 0

    def refused(self, source_label: str, text: str) -> None:
        now = time.monotonic()
        if now >= self.until:
            if self.hidden:
                self.log.warning("journal: %d more entries refused in the last minute",
                                 self.hidden)
            self.until, self.shown, self.hidden = now + 60.0, 0, 0
        if self.shown < self.PER_MINUTE:
            self.shown += 1
            self.log.warning("%s: refused an entry whose trusted fields match no expectation "
                             "(forged, or another process; see SECURITY.md): %s",
                             source_label, text)
        else:
            self.hidden += 1


def label(source: dict) -> str:
    """How a source is named in reports and gate records."""
    if source["directory"]:
        return f"journal:{source['directory']}"
    if source["files"]:
        return f"journal:{','.join(source['files'])}"
    return "journal"
