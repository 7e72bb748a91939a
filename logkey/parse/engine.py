"""Line -> events: header, dispatch by program tag, rule match, IP check, correlation.

Pure: no files, no clock of its own (time comes from the line, "now" from the Clock the
caller passes), no threads. Shared by `dry-run` and the watcher. Everything it refuses is
counted in `Stats`, never raised.
"""
from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import regex

from . import headers
from .correlate import LOGOUT_HOLD, Correlator
from ..events import CONNECT, GATE_PROTOCOLS, LOGIN, Event, canonical_ip
from .match import IGNORED, PackSet
from .scan import _fastscan, _plain_tag_words

NEAR_MISS_WORDS = regex.compile(r"(?i)log(?:ged |\s?)in|logout|auth|user|pass|session")
NEAR_MISS_KEEP = 20
REJECTED_KEEP = 20
_NONE: list = []
CUT_FOLLOWS_WITHIN = timedelta(seconds=2)


@dataclass
class Stats:
    lines: int = 0
    bytes: int = 0                   # bytes read (progress only; 0 where unknown)
    too_long: int = 0
    unparsed: int = 0
    timeouts: int = 0
    rejected_ips: int = 0
    refused_lines: int = 0           # duplicate / missing key=value fields
    not_pop_imap: int = 0            # logins of other protocols (managesieve, smtp ...)
    near_misses: int = 0
    ignored: int = 0
    cut_fragments: int = 0           # rests of lines a logger cut, dropped
    last_time: object = None                                # time of the last line read
    formats: Counter = field(default_factory=Counter)
    hits: Counter = field(default_factory=Counter)          # (pack, rule id) -> count
    events: Counter = field(default_factory=Counter)        # (pack, kind) -> count
    near_miss_lines: list = field(default_factory=list)     # (where, text)
    rejected_examples: list = field(default_factory=list)   # (where, reason)

    def merge(self, other: "Stats", where=lambda w: w) -> None:
        """Add another Stats' counts (a worker's); `where` re-bases its line references."""
        for name in ("lines", "bytes", "too_long", "unparsed", "timeouts", "rejected_ips",
                     "refused_lines", "not_pop_imap", "near_misses", "ignored", "cut_fragments"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.last_time is not None and (self.last_time is None
                                            or other.last_time > self.last_time):
            self.last_time = other.last_time
        self.formats.update(other.formats)
        self.hits.update(other.hits)
        self.events.update(other.events)
        room = NEAR_MISS_KEEP - len(self.near_miss_lines)
        self.near_miss_lines += [(where(w), t) for w, t in other.near_miss_lines[:max(0, room)]]
        room = REJECTED_KEEP - len(self.rejected_examples)
        self.rejected_examples += [(where(w), t) for w, t in other.rejected_examples[:max(0, room)]]


def _trusted(proxy: str, networks) -> bool:
    """The peer that gave the client's address is one the configuration trusts."""
    ip = canonical_ip(proxy)
    if ip is None or not networks:
        return False
    address = ipaddress.ip_address(ip)
    return any(address in net for net in networks)


class Engine:
    def __init__(self, packs: PackSet, clock: headers.Clock, join_window: float = 600.0,
                 shared: "Engine | None" = None, logout_hold: float = LOGOUT_HOLD):
        """`shared`: another Engine whose log-order state (correlation, cut messages) and
        counts this one uses too: one per set of packs, one state for all the logs.
        `logout_hold`: seconds a logout read before its login waits for it (correlate.py)."""
        self.packs = packs
        self.clock = clock
        self.correlator = shared.correlator if shared else Correlator(
            join_window, logout_hold=logout_hold)
        self.stats = shared.stats if shared else Stats()
        self._by_tag: dict[bytes, list] = {}
        # The covered tags as _fastscan reads them (scan.py), or None: then the regex alone
        self._tag_words = _plain_tag_words(packs) if _fastscan is not None else None
        self.cut_mark = None            # set by match_*: (key, long, time) for cut-prone tags
        self.near_miss = None           # set by match_*: (pack names, where, text) of a near-miss
        self._pending_cut: dict = shared._pending_cut if shared else {}
        # (host, program) -> time of a long message

    def feed_line(self, line: bytes, where=None, own_rules=None) -> list[Event]:
        """One line without its newline (the caller counts lines): the events it completes.
        `own_rules`: untagged rules of the pack whose own file this is, tried on every line's
        text after the time stamp."""
        event = self.match_line(line, where, own_rules)
        return self.sequence(event, self.cut_mark)

    def feed_header(self, header: headers.Header, where=None) -> list[Event]:
        """A header built by the caller (a journal entry: program from its trusted fields,
        time from journald): the events it completes. The caller counts lines."""
        self.cut_mark = self.near_miss = None
        self.stats.formats[header.format] += 1
        event = self.match_header(header, where)
        return self.sequence(event, self.cut_mark)

    def sequence(self, event: Event | None, cut_mark) -> list[Event]:
        """The order-dependent part, in log order: cut fragments, then correlation."""
        if cut_mark is not None:
            key, long, when = cut_mark
            cut_time = self._pending_cut.pop(key, None)
            if long:
                self._pending_cut[key] = when
            if cut_time is not None and (when is None or cut_time is None
                                         or when - cut_time <= CUT_FOLLOWS_WITHIN):
                self.stats.cut_fragments += 1
                return _NONE
        return self._counted(self.correlator.feed(event)) if event is not None else _NONE

    def complete(self, event: Event) -> list[Event]:
        """Correlation, in log order: the events that are complete now (connects never)."""
        return self._counted(self.correlator.feed(event))

    def flush(self) -> list[Event]:
        """At the end of the input: the logouts still held for a login that never came."""
        return self._counted(self.correlator.flush())

    def _counted(self, out: list[Event]) -> list[Event]:
        events = self.stats.events
        connects = False
        for e in out:
            events[(e.pack, e.kind)] += 1
            connects = connects or e.kind == CONNECT
        return [e for e in out if e.kind != CONNECT] if connects else out

    def match_line(self, line: bytes, where=None, own_rules=None) -> Event | None:
        """The event one line says happened, before correlation (stateless but for counts)."""
        stats = self.stats
        self.cut_mark = self.near_miss = None
        # Fast path: most lines are syslog lines of programs no pack covers (Postfix ...);
        # they cost one call in C (the bulk pre-filter's header check, scan.py), or, without
        # it, one regex match and one dict lookup, and no Header object.
        if self._tag_words is not None and own_rules is None:
            code = _fastscan.classify(line, *self._tag_words)
            kind = code & 3                 # 0 a tag no pack covers, 1 a covered one, 2 other
            if kind != 2:
                stats.formats["rfc3339" if code >> 2 == 1 else "rfc3164"] += 1
                return None if kind == 0 else self.match_header(headers.parse(line), where)
            m = None
        else:
            m = headers.SYSLOG_3339.match(line) or headers.SYSLOG_3164.match(line)
        if m is not None and own_rules is None:
            stats.formats["rfc3164" if m.re is headers.SYSLOG_3164 else "rfc3339"] += 1
            tag = m.group(3)                # the tag (headers checks the group numbers)
            rules = self._by_tag.get(tag)
            if rules is None:
                rules = self.packs.rules_for(tag.decode("ascii"))
                if len(self._by_tag) < 65536:
                    self._by_tag[tag] = rules
            if not rules.rules:             # (its list: no __bool__ call per line)
                return None
            return self.match_header(headers.from_fast_match(m, line), where)
        header = headers.parse(line)
        if header is None:
            self.stats.unparsed += 1
            return None
        self.stats.formats[header.format] += 1
        return self.match_header(header, where, own_rules)

    def line_time(self, line: bytes):
        """The time stamp of a line, or None."""
        header = headers.parse(line)
        return self.clock.time(header) if header is not None else None

    def match_picked(self, line: bytes, where, header_counted: bool, cap: int) -> Event | None:
        """A line the bulk scanner picked; it already counted the line (and, when
        `header_counted`, its header format)."""
        stats = self.stats
        self.cut_mark = self.near_miss = None
        if line[-1:] == b"\r":
            line = line[:-1]
        if len(line) > cap:
            stats.too_long += 1
            if header_counted:                  # the scanner counted its format: take it back
                header = headers.parse(line[:1024])
                if header is not None:
                    stats.formats[header.format] -= 1
            return None
        header = headers.parse(line)
        if not header_counted:
            if header is None:
                stats.unparsed += 1
                return None
            stats.formats[header.format] += 1
        elif header is None:
            return None
        return self.match_header(header, where)

    def match_header(self, header: headers.Header, where=None, own_rules=None) -> Event | None:
        program = header.program
        if program is not None and self.packs.aliases:
            program = self.packs.aliases.get(program, program)     # a site's own tag
        if own_rules:
            rules, text = own_rules, header.rest
        elif program is None:
            rules, text = self.packs.untagged, header.message
        else:
            rules, text = self.packs.rules_for(program), header.message
        if not rules.rules:             # (its list: no __bool__ call per line)
            return None
        if rules.cut_at is not None:
            self.cut_mark = ((header.host, program), len(text) >= rules.cut_at,
                             self.clock.time(header))
        message = text.decode("utf-8", "surrogateescape")
        try:
            m = rules.match_or_ignored(message, program, header.pid)
        except TimeoutError:
            self.stats.timeouts += 1
            return None
        if m is None or m is IGNORED:
            self._no_match(rules, program, message, where,
                           (m is IGNORED) if rules.folds_ignore else None)
            return None
        stats = self.stats
        rule = m.rule
        stats.hits[(rule.pack, rule.id)] += 1
        if m.rejected:
            stats.refused_lines += 1
            self._reject(where, m.rejected)
            return None
        ip = None
        if m.ip is not None:
            ip = canonical_ip(m.ip)
            if ip is None:
                stats.rejected_ips += 1
                self._reject(where, f"not an IP address: {m.ip!r}")
                return None
        if m.proxy is not None and not _trusted(m.proxy, rule.proxies):
            stats.refused_lines += 1
            self._reject(where, f"{m.ip} is vouched for by {m.proxy!r}, not in trusted_proxies")
            return None
        if rule.kind == LOGIN and m.protocol not in GATE_PROTOCOLS:
            stats.not_pop_imap += 1
            return None
        return Event(rule.kind, ip, m.user, m.protocol, self.clock.time(header), rule.pack,
                     rule.id, m.session, m.pid, rule.join,
                     header.host.decode("ascii") if header.host else None, header.format)

    def _no_match(self, rules, program, message, where, known=None):
        """`known`: whether a known non-event matched, when the rules' match already told
        (Dispatch.folds_ignore); None: ask rules.ignored."""
        if not NEAR_MISS_WORDS.search(message):
            return
        if known is None:
            try:
                known = rules.ignored(message)
            except TimeoutError:
                self.stats.timeouts += 1
                return
        if known:
            self.stats.ignored += 1             # a known non-event (a failure, a statistic)
            return
        self.stats.near_misses += 1
        text = f"{program or '-'}: {message[:300]}"
        self.near_miss = (rules.packs, where, text)     # for the watcher's drift alarm
        if len(self.stats.near_miss_lines) < NEAR_MISS_KEEP:
            self.stats.near_miss_lines.append((where, text))

    def _reject(self, where, reason):
        if len(self.stats.rejected_examples) < REJECTED_KEEP:
            self.stats.rejected_examples.append((where, reason))
