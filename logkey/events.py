"""The event record and IP canonicalisation.

Reads: nothing. Writes: nothing. Trust: every IP that leaves this module has passed
`ipaddress`; anything else (host names, zone ids, garbage) is refused here, once, for all packs.
"""
from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter

LOGIN = "login"
LOGOUT = "logout"
CONNECT = "connect"
KINDS = (LOGIN, LOGOUT, CONNECT)

# Protocol names as servers and program tags spell them; anything not here is not POP3/IMAP
# (managesieve, sieve, submission, smtp, lmtp ...) and never opens a gate.
PROTOCOL_ALIASES = {
    **dict.fromkeys(
        ("pop3", "pop", "pop3s", "pops", "pop3d", "pop3d-ssl", "ipop3d", "ipop3sd", "popa3d",
         "spop3d", "solid-pop3d", "courierpop3login", "courierpop3d", "gnu-pop3d", "vm-pop3d",
         "qpopper", "popper", "in.qpopper", "in.popper", "qmail-pop3d", "pop3-login"),
        "pop3"),
    **dict.fromkeys(
        ("imap", "imaps", "imap4", "imap4s", "imapd", "imapd-ssl", "imapsd", "imaplogin",
         "courierimaplogin", "imap-login"),
        "imap"),
}
GATE_PROTOCOLS = frozenset(("pop3", "imap"))

MAX_IP_TEXT = 64
# Dotted quads without leading zeros are already canonical: skip ipaddress for them.
# ([0-9], not \d: \d would take any Unicode digit.)
_CANONICAL_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                             r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")


@dataclass(slots=True)
class Event:
    """What one log line (or a correlated pair of lines) says happened."""
    kind: str                  # login | logout | connect
    ip: str | None             # canonical address, or None (logouts joined by nothing)
    user: str | None
    protocol: str | None       # pop3 | imap | None
    time: datetime | None
    pack: str
    rule: str
    session: str | None = None
    pid: str | None = None
    join: str | None = None    # "pid" when the rule joins by pid
    host: str | None = None    # the syslog host, when the line names one
    header: str | None = None  # the line's header format (headers.py): rfc3164, rfc3339 ...


# An event crossing between processes (dry-run's workers, sources/bulk.py) is a plain tuple of
# its fields, its time a POSIX timestamp and its tzinfo: pickling an Event (a dataclass) and
# its datetime cost ~10 us an event on both sides together, about as much as matching its
# line; the tuple ~1 us. parse/fastpath.py builds the same tuples in C.
_EVENT_FIELDS = attrgetter("kind", "ip", "user", "protocol", "time", "pack", "rule", "session",
                           "pid", "join", "host", "header")


def packed_time(t: datetime | None):
    if t is None:
        return None
    if 1 < t.year < 9999:
        return (t.timestamp(), t.tzinfo)
    return t            # near datetime's ends its UTC time may be out of range: sent as it is


def unpacked_time(packed) -> datetime | None:
    if packed is None:
        return None
    try:
        ts, tz = packed
    except TypeError:   # a datetime near year 1 or 9999 (packed_time)
        return packed
    return datetime.fromtimestamp(ts, tz) if tz is not None else datetime.fromtimestamp(ts)


def packed_event(event: Event) -> tuple:
    fields = list(_EVENT_FIELDS(event))
    fields[4] = packed_time(fields[4])
    return tuple(fields)


def unpacked_event(fields: tuple) -> Event:
    event = Event(*fields)
    event.time = unpacked_time(event.time)
    return event


def canonical_ip(text: str) -> str | None:
    """The canonical form of a literal IPv4/IPv6 address, or None.

    IPv4-mapped IPv6 becomes the IPv4 address, IPv6 is compressed; zone ids, host names,
    leading-zero octets and non-ASCII digits are refused.
    """
    if _CANONICAL_IPV4.fullmatch(text):
        return text
    if text[:7].lower() == "::ffff:" and _CANONICAL_IPV4.fullmatch(text, 7):
        return text[7:]                     # IPv4-mapped, the common IPv6 form in mail logs
    return _canonical_slow(text)


@lru_cache(maxsize=4096)
def _canonical_slow(text: str) -> str | None:
    if not text or len(text) > MAX_IP_TEXT or not text.isascii():
        return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if addr.version == 6:
        if addr.scope_id is not None:
            return None
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return str(mapped)
    return str(addr)


def normalise_protocol(raw: str | None, extra: dict[str, str] | None = None) -> str | None:
    """pop3 / imap / None for a protocol name or a program tag's last component."""
    if not raw:
        return None
    name = raw.lower()
    if extra and name in extra:
        return extra[name]
    if name in PROTOCOL_ALIASES:
        return PROTOCOL_ALIASES[name]
    for sep in "/.":
        if sep in name:
            name = name.rsplit(sep, 1)[1]
            if extra and name in extra:
                return extra[name]
            if name in PROTOCOL_ALIASES:
                return PROTOCOL_ALIASES[name]
    return None
