"""The covered lines of a block read in C where they are ordinary: bulk reading's matcher.

Pure, like engine.py, whose stateless matching (Engine.match_picked) it does for the lines the
bulk pre-filter picked: the same events, in the same order and packed the same way
(bulk.py), the same counts. _fastscan.match_picks reads an ordinary line (a standard syslog
header, a tag with a plan, no proxy, a canonical or accepted address) in C: the header, the
message's decoding, the rule match (the pack's compiled regex, called from C with the same
time limit), the groups, the login check, the packed event. What it does not read itself it
hands to the callbacks below: a whole unusual line to the per-line path (slow), a line no
rule matched to Engine._no_match, a key=value list to match.py's reader, a protocol name or a
stamp not seen before, an address not in canonical form to events.canonical_ip. So a pack
rule is read by the same regex either way: no second regex engine, no second time limit.
tests/test_fastpath.py holds the two paths to the same answers.
"""
from __future__ import annotations

from operator import itemgetter

from ..events import LOGIN, canonical_ip, normalise_protocol, packed_event, packed_time
from .engine import Engine
from .match import _to_match
from .scan import _fastscan

PROTOCOL_MEMO_MAX = 256     # protocol names remembered per rule (a group's text is the log's)
PLANS_MAX = 65536           # as PackSet's own cache of tags


def available() -> bool:
    return _fastscan is not None and hasattr(_fastscan, "match_picks")


def running_ticket():
    """The ticket of the match the C part is running, or None (timelimit.py)."""
    return _fastscan.ticket() if _fastscan is not None else None


class FastPath:
    """For one Engine (its packs, clock and stats), for the lines of one file."""

    def __init__(self, matcher: Engine):
        self.matcher = matcher
        self.plans: dict[str, tuple | None] = {}
        self.path = None
        self.cap = 65536
        self.context = (self.plans, self._plan_for, self._slow, self._no_match, _fields,
                        _protocol_of, self._stamp_time, canonical_ip)

    def match(self, picks: list, path, cap: int) -> list:
        """[(index, packed event, packed cut mark)] of the picked lines, counting into the
        matcher's stats as match_picked does."""
        from . import match
        self.path, self.cap = path, cap
        stats = self.matcher.stats
        entries, hits, timeouts, not_pop_imap = _fastscan.match_picks(
            picks, self.context, match.regex_timeout, cap)
        stats.hits.update(hits)
        stats.timeouts += timeouts
        stats.not_pop_imap += not_pop_imap
        return entries

    def _plan_for(self, program: str):
        """What match_picks needs for the lines of a tag, or None: they take the per-line path
        (a site's alias, rules that could not be combined into one regex, or no rules)."""
        packs = self.matcher.packs
        plan = None
        if program not in packs.aliases:
            dispatch = packs.rules_for(program)
            if dispatch.rules and dispatch.pattern is not None:
                positions, markers = dispatch.group_positions()
                plan = (dispatch.pattern.fullmatch, dispatch, dispatch.folds_ignore, positions,
                        tuple((at, _rule_plan(rule, program)) for at, rule in markers),
                        dispatch.cut_at)
        if len(self.plans) < PLANS_MAX:
            self.plans[program] = plan
        return plan

    def _slow(self, index: int, line: bytes, counted: bool):
        matcher = self.matcher
        event = matcher.match_picked(line, (self.path, index), counted, self.cap)
        if event is None and matcher.cut_mark is None:
            return None
        return packed_entry(index, event, matcher.cut_mark)

    def _no_match(self, dispatch, program, message, index, known):
        self.matcher._no_match(dispatch, program, message, (self.path, index), known)

    def _stamp_time(self, fmt: str, stamp: bytes):
        return packed_time(self.matcher.clock.stamp_time(fmt, stamp))


def _rule_plan(rule, program: str) -> tuple:
    fixed = rule.protocol is not None
    value = None
    if fixed:
        value = _mapped(program if rule.protocol == "program" else rule.protocol, rule)
    return (rule, (rule.pack, rule.id), rule.kind, rule.kind == LOGIN, rule.pack, rule.id,
            rule.join, rule.fields is not None, fixed, value, {})


def _mapped(raw: str | None, rule) -> str | None:
    """match._to_match's protocol, for a rule whose protocol is not from a key=value list."""
    if raw is None:
        return None
    mapped = normalise_protocol(raw, rule.protocols)
    return None if mapped in (None, "none") else mapped


def _protocol_of(rule, raw: str, memo: dict) -> str | None:
    value = _mapped(raw, rule)
    if len(memo) < PROTOCOL_MEMO_MAX:
        memo[raw] = value
    return value


def _fields(rule, groups: tuple, positions: tuple, program: str, header_pid):
    """(ip, user, protocol, session, pid) of a rule with a key=value list, read by match.py;
    None when the line is refused or a proxy vouches for the address (the per-line path
    then reads it and says why)."""
    m = _to_match(rule, groups, _picker(positions), program, header_pid)
    if m.rejected is not None or m.proxy is not None:
        return None
    return m.ip, m.user, m.protocol, m.session, m.pid


_pickers: dict = {}


def _picker(positions: tuple) -> itemgetter:
    pick = _pickers.get(positions)
    if pick is None:
        pick = _pickers[positions] = itemgetter(*positions)
    return pick


def packed_entry(index: int, event, cut) -> tuple:
    """One (index, event, cut mark) as the workers send it (bulk.py)."""
    if event is not None:
        event = packed_event(event)
    if cut is not None:
        cut = (cut[0], cut[1], packed_time(cut[2]))
    return (index, event, cut)
