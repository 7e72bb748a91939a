"""Matching a message against the rules of its program tag.

Pure. The packs are indexed by program tag (a dict lookup, so the cost per line does not grow
with the number of packs loaded); the rules of one tag are one combined regex, run with a time
limit; key=value fields are read here; the result is a Match, before IP canonicalisation.
"""
from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import TYPE_CHECKING

import regex

from ..events import normalise_protocol

if TYPE_CHECKING:
    from .packs import Fields, Pack, Rule

MATCH_TIMEOUT = 0.05          # seconds of CPU per regex match; a line that hits it gives no event
# What the matches pass to regex as its timeout: MATCH_TIMEOUT, or None while timelimit.py's
# CPU timer keeps that limit instead (cpu_limit(); it reads each match's `ticket`).
regex_timeout = MATCH_TIMEOUT
_tickets = itertools.count()


@dataclass(slots=True)
class Match:
    """What a rule took from a message, before IP canonicalisation and correlation."""
    rule: "Rule"
    ip: str | None
    user: str | None
    protocol: str | None
    session: str | None
    pid: str | None
    rejected: str | None = None   # why the line was refused (duplicate field ...)
    proxy: str | None = None      # who vouched for `ip` (a rule's proxy group), unchecked


_INLINE_FLAGS = regex.compile(r"\(\?[aiLmsux]+\)")
_BACKREFERENCE = regex.compile(r"\\[1-9]|\\g<|\(\?P=|\(\?P>|\(\?&|\(\?R|\(\?[0-9]")


IGNORED = object()       # Dispatch.match_or_ignored: no rule, a known non-event


class Dispatch:
    """The rules and known non-events for one program tag. Each set is compiled into one
    regex (a branch per rule, marked by an empty group), so a line costs one match under one
    time limit however many rules apply; first branch that matches the whole message wins,
    exactly as trying the rules in order would."""
    __slots__ = ("rules", "pattern", "markers", "ignore", "cut_at", "packs", "_names",
                 "_marker_at", "_rule_names", "folds_ignore", "_ignore_src")

    def __init__(self, rules: list[Rule], ignore: list[regex.Pattern], cut_at: int | None = None,
                 packs: tuple[str, ...] = ()):
        self.rules = rules
        self.packs = packs          # names of the packs these rules come from (format drift)
        # A logger that cuts long messages (courierlogger: 511 bytes) makes the rest of a long
        # line the next message of the same tag; its text is the client's, so it must never
        # be an event (see Engine.sequence).
        self.cut_at = cut_at
        self.pattern = None
        self.markers = [(f"_r{i}", rule) for i, rule in enumerate(rules)]
        sources = [r.pattern.pattern for r in rules]
        # The known non-events: for a line no rule matched that looks like a login
        # (Engine._no_match). Each pattern was compiled when its pack was loaded, so a bad one
        # was refused there. They ride in the rules' regex, after every rule, when they can: a
        # line no rule matches is then told ignored or not by the same match, under the same
        # time limit, not by a second one. An ignore pattern matches a prefix (re.match), hence
        # the "(?s:.*)" after it; one with inline flags or a back-reference stays on its own,
        # compiled at the first line that needs it (ignored()).
        self.ignore = None
        self._ignore_src = ("(?:" + "|".join(f"(?:{p.pattern})" for p in ignore) + ")"
                            if ignore else None)
        foldable = bool(ignore) and not any(
            _INLINE_FLAGS.search(p.pattern) or _BACKREFERENCE.search(p.pattern) for p in ignore)
        self.folds_ignore = False
        if rules and not any(_INLINE_FLAGS.search(src) for src in sources):
            branches = [f"(?P<_r{i}>)(?:{src[1:-1]})" for i, src in enumerate(sources)]
            folded = branches + [f"(?P<_i{i}>)(?:{p.pattern})(?s:.*)" for i, p in enumerate(ignore)]
            for candidate, folds in ([(folded, True)] if foldable else []) + [(branches, False)]:
                try:
                    self.pattern = regex.compile("(?:" + "|".join(candidate) + ")")
                except regex.error:
                    continue
                self.folds_ignore = folds
                break
        # Where each pattern's groups are in m.groups(): one call per line reads them all (a
        # group looked up by name costs more than all of them by position).
        self._names = _present(self.pattern) if self.pattern is not None else None
        self._marker_at = ([(self.pattern.groupindex[name] - 1, rule) for name, rule in self.markers]
                           if self.pattern is not None else None)
        self._rule_names = [_present(r.pattern) for r in rules]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def group_positions(self) -> tuple[tuple[int, ...], list]:
        """Of the combined regex (not None): where each of _WANTED's groups is in m.groups()
        (-1: none), and [(position of a rule's marker group, the rule)] in rule order."""
        index = self.pattern.groupindex
        return tuple(index[k] - 1 if k in index else -1 for k in _WANTED), list(self._marker_at)

    def match(self, message: str, program: str | None, header_pid: str | None):
        """The first rule matching the whole message, as a Match; None when none matches.
        Raises TimeoutError when the match hits its time limit."""
        m = self.match_or_ignored(message, program, header_pid)
        return None if m is IGNORED else m

    def match_or_ignored(self, message: str, program: str | None, header_pid: str | None):
        """match(), or IGNORED when no rule matches and `folds_ignore` and a known non-event
        does (when not `folds_ignore`, ignored() answers that)."""
        # The time limit is passed by position (string, pos, endpos, concurrent, partial,
        # timeout): as a keyword, regex's argument parsing costs more than most matches.
        # concurrent=False: the GIL is kept (releasing and taking it back costs ~0.3 us).
        ticket = next(_tickets)             # tells this match from the next (timelimit.py)
        timeout = regex_timeout
        if self.pattern is not None:
            m = self.pattern.fullmatch(message, None, None, False, False, timeout)
            if m is None:
                return None
            groups = m.groups()
            for at, rule in self._marker_at:
                if groups[at] is not None:      # the branch that matched
                    return _to_match(rule, groups, self._names, program, header_pid)
            return IGNORED                      # an ignore branch (only they are left)
        for rule, names in zip(self.rules, self._rule_names):
            m = rule.pattern.fullmatch(message, None, None, False, False, timeout)
            if m is not None:
                return _to_match(rule, m.groups(), names, program, header_pid)
        return None

    def ignored(self, message: str) -> bool:
        ignore = self.ignore
        if ignore is None:
            if self._ignore_src is None:
                return False
            ignore = self.ignore = regex.compile(self._ignore_src)
        ticket = next(_tickets)             # (timelimit.py)
        return ignore.match(message, None, None, False, False, regex_timeout) is not None


NO_RULES = Dispatch([], [])


class PackSet:
    """The loaded packs, indexed by program tag. `aliases` maps a site's own tag to the program
    whose rules read it (a Dovecot with `instance_name = mx2` logs as `mx2:`, not `dovecot:`;
    the `aliases:` of a `logs:` entry, docs/packs/dovecot.md)."""

    def __init__(self, packs: list[Pack], aliases: dict[str, str] | None = None):
        self.packs = {p.name: p for p in packs}
        self._loaded = list(packs)
        self.aliases = dict(aliases or {})
        exact: dict[str, list[Pack]] = {}
        self._globs: list[tuple[str, Pack]] = []
        for pack in packs:
            for prog in pack.programs:
                if any(c in prog for c in "*?"):
                    self._globs.append((prog, pack))
                else:
                    exact.setdefault(prog, []).append(pack)
        self._exact = exact
        self._cache: dict[str, Dispatch] = {}

    @cached_property
    def untagged(self) -> Dispatch:
        """The rules for messages without a program tag, compiled at the first such message
        (then a plain attribute: cached_property keeps it in the instance's __dict__)."""
        packs = self._loaded
        cuts = [p.cut_at for p in packs if p.untagged and p.cut_at is not None]
        return Dispatch([r for p in packs for r in p.untagged],
                        [i for p in packs if p.untagged for i in p.ignore],
                        min(cuts) if cuts else None,
                        tuple(p.name for p in packs if p.untagged))

    def rules_for(self, program: str) -> Dispatch:
        """The rules for a tag (empty for programs no pack covers). O(1) after the first call."""
        dispatch = self._cache.get(program)
        if dispatch is None:
            if program in self.aliases:
                dispatch = self.rules_for(self.aliases[program])
                self._cache[program] = dispatch
                return dispatch
            chosen = list(self._exact.get(program, ()))
            for glob, pack in self._globs:
                if pack not in chosen and fnmatch.fnmatchcase(program, glob):
                    chosen.append(pack)
            cuts = [p.cut_at for p in chosen if p.cut_at is not None]
            rules = [r for p in chosen for r in p.rules if _applies(r, program)]
            dispatch = Dispatch(rules, [i for p in chosen for i in p.ignore],
                                min(cuts) if cuts else None,
                                tuple(p.name for p in chosen)) if chosen else NO_RULES
            if len(self._cache) < 65536:
                self._cache[program] = dispatch
        return dispatch

    def with_aliases(self, aliases: dict[str, str]) -> "PackSet":
        """The same packs, also reading the tags in `aliases` as the programs they name."""
        return PackSet(list(self.packs.values()), {**self.aliases, **aliases}) if aliases else self

    def ignored(self, program: str | None, message: str) -> bool:
        dispatch = self.rules_for(program) if program is not None else self.untagged
        return dispatch.ignored(message)


def _applies(rule: "Rule", program: str) -> bool:
    """A rule limited to some of its pack's tags (`programs:`) applies only to those."""
    return rule.programs is None or any(
        p == program or fnmatch.fnmatchcase(program, p) for p in rule.programs)


def own_file_rules(pack: Pack) -> Dispatch:
    """The rules tried on every line of a file the configuration says is PACK's own log."""
    return Dispatch(pack.untagged, pack.ignore, pack.cut_at, (pack.name,))


_WANTED = ("ip", "user", "protocol", "session", "pid", "fields", "proxy")
_ABSENT = (None,)           # appended to m.groups(): where a wanted group's absence is read


def _present(pattern) -> itemgetter:
    """Takes, from m.groups() + _ABSENT, the wanted groups in _WANTED's order (None for a
    group the pattern does not have): one C call for all of them."""
    index = pattern.groupindex
    return itemgetter(*(index[k] - 1 if k in index else -1 for k in _WANTED))


def _to_match(rule: Rule, groups: tuple, pick: itemgetter, program: str | None,
              header_pid: str | None) -> Match:
    ip, user, protocol, session, pid, fields, proxy = pick(groups + _ABSENT)
    rejected = None
    if rule.fields is not None:
        got = {"ip": ip, "user": user, "protocol": protocol, "session": session, "pid": pid}
        rejected = _read_fields(rule.fields, fields or "", got)
        ip, user, protocol, session, pid = (got["ip"], got["user"], got["protocol"],
                                            got["session"], got["pid"])
    if rule.protocol == "program":
        protocol = program
    elif rule.protocol is not None:
        protocol = rule.protocol
    if protocol is not None:
        mapped = normalise_protocol(protocol, rule.protocols)
        protocol = None if mapped in (None, "none") else mapped
    return Match(rule, ip, user, protocol, session, pid or header_pid, rejected, proxy)


def _read_fields(spec: Fields, text: str, got: dict) -> str | None:
    """Take the listed keys from a "k=v<sep>k=v..." list. A key counts where it starts the
    list or follows a separator; the value runs to the next separator. A listed key twice
    (someone put "rip=" in a user name) refuses the line, and so does a missing ip key."""
    finder = spec.finder
    if finder is not None and len(text) <= FAST_FIELDS_MAX:
        found = finder(spec.separator + text)
        values = dict(found)
        if len(values) == len(found):       # no listed key twice: the same answer, faster
            for key, target in spec.keys.items():
                value = values.get(key)
                if value is None:
                    if target == "ip":
                        return f"field {key}= missing"
                    continue
                got[target] = _unwrapped(value, spec.strip, target)
            return None
    return _read_fields_by_find(spec, text, got)


FAST_FIELDS_MAX = 4096      # longer lists are read by find (a list of every hit is not built)


def _unwrapped(value: str, strip: tuple[str, str] | None, target: str) -> str:
    """A field's value without the pack's `strip` pair around it ("<u1>" -> "u1")."""
    if strip and len(value) >= 2 and value[0] == strip[0]:
        if value[-1] == strip[1]:
            return value[1:-1]
        if target != "ip" and strip[1] + " " in value:
            # "<u@d> method=LOGIN": the next key came without the separator (a site's own
            # format); the value ends where it closes. Never for an address.
            return value[1:value.index(strip[1] + " ")]
    return value


def _read_fields_by_find(spec: Fields, text: str, got: dict) -> str | None:
    """_read_fields by one find per key (and one more for a second occurrence)."""
    sep = spec.separator
    padded = sep + text
    find = padded.find
    for key, target in spec.keys.items():
        probe = sep + key + "="
        start = find(probe)
        if start < 0:
            if target == "ip":
                return f"field {key}= missing"
            continue
        start += len(probe)
        if find(probe, start) >= 0:         # (what count() > 1 finds, without a second scan)
            return f"field {key}= appears more than once"
        end = find(sep, start)
        got[target] = _unwrapped(padded[start:end] if end >= 0 else padded[start:],
                                 spec.strip, target)
    return None
