"""The value checkers every section of the configuration shares: durations, time zones,
names, whole numbers, paths, networks, prefix lengths, true/false.

Takes: one value as YAML gave it. Gives: the value as logkey uses it (seconds as a float, a
ZoneInfo, ip_network objects...), or ValueError whose text says what is wrong; load() (in
__init__.py) prefixes the file and the key, so the message stays one line.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any

_DURATION = re.compile(r"(\d+)\s*(s|m|h|d)?")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds from 600, "600", "10m", "1h", "2d"."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    m = _DURATION.fullmatch(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a duration (seconds, or 10m, 1h, 2d)")
    return float(int(m.group(1)) * _UNITS[m.group(2)])


def duration(v):
    return parse_duration(v)


def timezone(v):
    if v is None:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError   # only when a zone is configured
    try:
        return ZoneInfo(str(v))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Berlin)")


def str_list(v):
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of names")
    return v


def positive_int(v):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError("must be a positive whole number")
    return v


def path(v):
    if not isinstance(v, str) or not v:
        raise ValueError("must be a path")
    return v


def networks(v):
    if v is None:
        return None
    if not isinstance(v, list):
        raise ValueError("must be a list of networks (e.g. [192.0.2.0/24, 2001:db8::/32])")
    out = []
    for item in v:
        try:
            out.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (e.g. 192.0.2.0/24)") from None
    return out


def non_negative_int(v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("must be a whole number, 0 or more")
    return v


def ipv6_prefix(v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 128:
        raise ValueError("must be a prefix length from 1 to 128 (e.g. 64), or null")
    return v


def boolean(v):
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v
