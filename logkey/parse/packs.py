"""Pattern packs: load, validate, lint and compile them (matching is in match.py).

Reads: patterns/*.yaml (shipped) and a local patterns directory (same name overrides).
Trust: a pack is refused whole, with "FILE: entry: reason", when any rule fails the safety lint
(docs/packs.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import regex
import yaml

from . import lint
from .packyaml import Loader
from ..errors import LogkeyError
from ..events import CONNECT, KINDS, LOGIN, LOGOUT

GROUPS = frozenset(("ip", "user", "protocol", "session", "pid", "fields", "proxy"))
FIELD_TARGETS = frozenset(("ip", "user", "session", "protocol", "pid"))
PACK_KEYS = frozenset(("description", "covers", "programs", "events", "untagged", "ignore",
                       "protocols", "cut", "journal", "samples"))
RULE_KEYS = frozenset(("id", "kind", "regex", "protocol", "fields", "join", "programs"))


class PackError(LogkeyError):
    """A pack that cannot be used; str() is one line naming file, entry and reason."""


@dataclass(slots=True)
class Fields:
    separator: str
    keys: dict[str, str]
    strip: tuple[str, str] | None
    # findall of (key, value) for every listed key after a separator, or None where that could
    # differ from reading by one find per key (match._read_fields uses it when it is set)
    finder: Callable | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self):
        self.finder = fields_finder(self.separator, self.keys)


def fields_finder(sep: str, keys) -> Callable | None:
    """The findall sees every "<sep>key=" one find per key sees when no separator can start
    inside another "<sep>key=": the first character of the separator appears neither later in
    it nor in a key, and no key holds "=". A value is everything up to the next separator: runs
    of any character but the separator's first, each such character taken only where the rest
    of the separator does not follow (linear: no two ways to match a value)."""
    if not keys or not all(sep[0] not in sep[1:] + key and "=" not in key for key in keys):
        return None
    first, rest = re.escape(sep[0]), re.escape(sep[1:])
    other = "[^" + first + "]*"
    value = other + ("(?:" + first + "(?!" + rest + ")" + other + ")*" if sep[1:] else "")
    return re.compile("(?s)" + re.escape(sep) + "(" + "|".join(re.escape(k) for k in keys)
                      + ")=(" + value + ")").findall


@dataclass(slots=True)
class Rule:
    pack: str
    id: str
    kind: str
    pattern: regex.Pattern
    protocol: str | None          # "pop3" | "imap" | "program" | None (from group)
    fields: Fields | None
    join: str | None
    protocols: dict[str, str]
    programs: tuple[str, ...] | None = None     # only these of the pack's tags (globs too)
    # the `trusted_proxies` setting (shared with the pack): a rule with a `proxy` group (the
    # peer that told the server the client's address, Zimbra's ip= beside oip=) gives an event
    # only when that peer is in one of these networks
    proxies: list = field(default_factory=list)


@dataclass
class Pack:
    name: str
    path: Path
    description: str
    covers: list[str]
    programs: list[str]
    rules: list[Rule]
    untagged: list[Rule]
    ignore: list[regex.Pattern]
    samples: list[dict]
    protocols: dict[str, str] = field(default_factory=dict)
    cut_at: int | None = None     # messages this long may be cut by the logger (see Dispatch)
    journal: dict | None = None   # program -> {trusted journal field: accepted values} (journal.py)
    proxies: list = field(default_factory=list)   # trusted_proxies, shared with its rules


def _fail(path, where, reason):
    raise PackError(f"{path}: {where}: {reason}" if where else f"{path}: {reason}")


def _compile_rule(path, name, where, entry, protocols, proxies) -> Rule:
    if not isinstance(entry, dict):
        _fail(path, where, "must be a mapping")
    unknown = set(entry) - RULE_KEYS
    if unknown:
        _fail(path, where, f"unknown key {sorted(unknown)[0]!r}")
    rid = entry.get("id")
    if not isinstance(rid, str) or not regex.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", rid):
        _fail(path, where, "id must be [a-z0-9-]+")
    where = f"{where} ({rid})"
    kind = entry.get("kind")
    if kind not in KINDS:
        _fail(path, where, f"kind must be one of {', '.join(KINDS)}")
    src = entry.get("regex")
    if not isinstance(src, str):
        _fail(path, where, "regex missing")
    try:
        pattern = regex.compile(src)
    except regex.error as exc:
        _fail(path, where, f"regex does not compile: {exc}")
    groups = set(pattern.groupindex)
    if groups - GROUPS:
        _fail(path, where, f"unknown group {sorted(groups - GROUPS)[0]!r}; allowed: "
                           + ", ".join(sorted(GROUPS)))
    fields = None
    if "fields" in entry:
        spec = entry["fields"]
        if not isinstance(spec, dict) or not isinstance(spec.get("keys"), dict):
            _fail(path, where, "fields needs keys: {logkey: field}")
        bad = set(spec) - {"separator", "keys", "strip"}
        if bad:
            _fail(path, where, f"fields: unknown key {sorted(bad)[0]!r}")
        targets = spec["keys"]
        for k, v in targets.items():
            if v not in FIELD_TARGETS:
                _fail(path, where, f"fields: {k}: target must be one of {sorted(FIELD_TARGETS)}")
        strip = spec.get("strip")
        if strip is not None and (not isinstance(strip, str) or len(strip) != 2):
            _fail(path, where, "fields: strip must be two characters, the opening and closing one")
        sep = spec.get("separator", ", ")
        if not isinstance(sep, str) or not sep:
            _fail(path, where, "fields: separator must be a non-empty string")
        if "fields" not in groups:
            _fail(path, where, "fields given but the regex has no (?P<fields>...) group")
        fields = Fields(sep, dict(targets), (strip[0], strip[1]) if strip else None)
    ip_from_fields = fields is not None and "ip" in fields.keys.values()
    join = entry.get("join")
    if join not in (None, "pid"):
        _fail(path, where, "join must be pid")
    reason = lint.check(src, needs_ip_group=False)
    if reason:
        _fail(path, where, reason)
    has_ip = "ip" in groups or ip_from_fields
    if "proxy" in groups and not has_ip:
        _fail(path, where, "a proxy group names who vouches for the ip: the rule needs an ip")
    if kind == CONNECT and not has_ip:
        _fail(path, where, "a connect rule needs an ip")
    if kind == LOGIN and not has_ip and join != "pid":
        _fail(path, where, "a login rule needs an ip group, an ip field or join: pid")
    protocol = entry.get("protocol")
    if protocol is not None and protocol not in ("pop3", "imap", "program"):
        _fail(path, where, "protocol must be pop3, imap or program")
    if kind == LOGIN and protocol is None and "protocol" not in groups and not (
            fields and "protocol" in fields.keys.values()):
        _fail(path, where, "a login rule needs a protocol (pop3, imap, program or a group)")
    programs = entry.get("programs")
    if programs is not None and (not isinstance(programs, list) or not programs or not all(
            isinstance(p, str) and regex.fullmatch(r"[A-Za-z0-9_*?][A-Za-z0-9_./@+*?-]{0,63}", p)
            for p in programs)):
        _fail(path, where, "programs must be a list of program tags (a subset of the pack's)")
    return Rule(name, rid, kind, pattern, protocol, fields, join, protocols,
                tuple(programs) if programs else None, proxies)


def load_pack(path: Path) -> Pack:
    name = path.stem
    if not regex.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
        _fail(path, "", "pack file name must be [a-z0-9_-]+.yaml")
    try:
        with open(path, "rb") as f:
            data = yaml.load(f, Loader=Loader)
    except OSError as exc:
        _fail(path, "", exc.strerror or str(exc))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        _fail(path, where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}")
    if not isinstance(data, dict):
        _fail(path, "", "a pack must be a YAML mapping")
    unknown = set(data) - PACK_KEYS
    if unknown:
        _fail(path, "", f"unknown key {sorted(unknown)[0]!r}")
    programs = data.get("programs")
    if not isinstance(programs, list) or not all(
            isinstance(p, str) and regex.fullmatch(r"[A-Za-z0-9_*?][A-Za-z0-9_./@+*?-]{0,63}", p)
            for p in programs):
        _fail(path, "programs", "must be a list of program tags (letters, digits, _./@+-, "
                                "and the globs * and ?)")
    protocols = data.get("protocols") or {}
    if not isinstance(protocols, dict) or not all(
            isinstance(k, str) and v in ("pop3", "imap", "none") for k, v in protocols.items()):
        _fail(path, "protocols", "must map names to pop3, imap or none")
    protocols = {k.lower(): v for k, v in protocols.items()}
    rules, untagged, seen, proxies = [], [], set(), []
    for section, out in (("events", rules), ("untagged", untagged)):
        entries = data.get(section) or []
        if not isinstance(entries, list):
            _fail(path, section, "must be a list")
        for i, entry in enumerate(entries):
            rule = _compile_rule(path, name, f"{section}[{i}]", entry, protocols, proxies)
            if rule.id in seen:
                _fail(path, f"{section}[{i}]", f"duplicate id {rule.id!r}")
            seen.add(rule.id)
            out.append(rule)
    if not rules and not untagged:
        _fail(path, "events", "a pack needs at least one event rule")
    ignore = []
    for i, src in enumerate(data.get("ignore") or []):
        if not isinstance(src, str) or not src.startswith("^"):
            _fail(path, f"ignore[{i}]", "must be a regex anchored with ^")
        try:
            ignore.append(regex.compile(src))
        except regex.error as exc:
            _fail(path, f"ignore[{i}]", f"regex does not compile: {exc}")
    samples = data.get("samples") or []
    if not isinstance(samples, list) or not samples:
        _fail(path, "samples", "a pack needs samples (a rule without samples is untested)")
    for i, s in enumerate(samples):
        _check_sample(path, i, s)
    cut = data.get("cut")
    cut_at = None
    if cut is not None:
        if not isinstance(cut, dict) or set(cut) != {"min"} or isinstance(cut["min"], bool) \
                or not isinstance(cut["min"], int) or not 1 <= cut["min"] <= 65536:
            _fail(path, "cut", "must be {min: BYTES}: the length from which a message may be "
                               "the first part of a line the logger cut")
        cut_at = cut["min"]
    journal = None
    if data.get("journal") is not None:
        from .journalmatch import parse_pack_journal
        try:
            journal = parse_pack_journal(data["journal"], list(programs))
        except ValueError as exc:
            _fail(path, "", str(exc))
    covers = data.get("covers") or []
    if not isinstance(covers, list):
        _fail(path, "covers", "must be a list of strings")
    return Pack(name, path, str(data.get("description") or ""), [str(c) for c in covers],
                list(programs), rules, untagged, ignore, samples, protocols, cut_at, journal,
                proxies)


def _check_sample(path, i, s):
    where = f"samples[{i}]"
    if not isinstance(s, dict):
        _fail(path, where, "must be a mapping")
    bad = set(s) - {"line", "lines", "expect", "source", "file", "trusted_proxies"}
    nets = s.get("trusted_proxies", [])
    if not isinstance(nets, list) or not all(isinstance(n, str) for n in nets):
        _fail(path, where, "trusted_proxies must be a list of networks")
    if bad:
        _fail(path, where, f"unknown key {sorted(bad)[0]!r}")
    lines = s.get("lines") if "lines" in s else [s.get("line")]
    if not isinstance(lines, list) or not lines or not all(isinstance(x, str) for x in lines):
        _fail(path, where, "needs line: TEXT or lines: [TEXT, ...]")
    expect = s.get("expect", "missing")
    if expect in ("none", "ignored", None):
        return
    if not isinstance(expect, dict) or expect.get("kind") not in (LOGIN, LOGOUT):
        _fail(path, where, "expect must be none, ignored or {kind: login|logout, ip: ..., user: ...}")
    bad = set(expect) - {"kind", "ip", "user", "protocol", "session"}
    if bad:
        _fail(path, where, f"expect: unknown key {sorted(bad)[0]!r}")


# Services whose logins never open a gate, whatever a site calls them (docs/packs.md, "Services")
NEVER_SERVICES = regex.compile(
    r"(?i)sieve|lmtp|http|nntp|smtp|submission|fud|notify|idled|master|backup|sync|ptloader")


def check_services(value) -> dict[str, dict[str, str]]:
    """The `services:` setting: {PACK: {NAME: pop3|imap|none}}; ValueError naming the entry."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("must map pack names to {service name: pop3|imap|none}")
    out = {}
    for pack, names in value.items():
        if not isinstance(pack, str) or not isinstance(names, dict):
            raise ValueError(f".{pack}: must map service names to pop3, imap or none")
        out[pack] = {}
        for name, proto in names.items():
            name = str(name)
            if not regex.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}", name):
                raise ValueError(f".{pack}.{name}: not a service name (letters, digits, _.+-)")
            if proto not in ("pop3", "imap", "none"):
                raise ValueError(f".{pack}.{name}: must be pop3, imap or none")
            if proto != "none" and NEVER_SERVICES.search(name):
                raise ValueError(f".{pack}.{name}: a {name} login is never a POP3/IMAP login")
            out[pack][name.lower()] = proto
    return out


def apply_services(packs: dict[str, "Pack"], services: dict[str, dict[str, str]]) -> None:
    """Add a site's service names to their packs: each NAME becomes a protocol alias, and for a
    pack that takes the protocol from the program tag, NAME and */NAME become its tags."""
    for name, names in services.items():
        pack = packs.get(name)
        if pack is None:                        # not loaded here (packs:, --pack)
            continue
        pack.protocols.update(names)
        if any(r.protocol == "program" for r in pack.rules):
            for service, proto in names.items():
                for tag in (service, "*/" + service):
                    if proto != "none" and tag not in pack.programs:
                        pack.programs.append(tag)
