"""The audit lines of `logkey watch`: one line per gate decision, so an administrator can see
who got relay and why (the list of every line logkey writes is docs/log-lines.md).

Reads: gate actions (gates.py). Writes: nothing itself; `line()` returns the text and `level()`
the logging level, for the watcher's log. Trust: user names and file names come from log
lines and configuration, so every value that is not plain printable ASCII without spaces,
quotes or backslashes is written as a JSON string ("a b", "\\u00e9", "\\n"): a user name can
never add a key, a field or a line of its own.

Format (stable; new keys are only ever added at the end). user, pack, protocol and source are
those of the line that caused the decision (for a refresh by an open session: the gate's):
    gate open    ip=IP user=U pack=P protocol=PR source=FILE:LINE expires=TIME
    gate refresh ip=IP user=U pack=P protocol=PR source=FILE:LINE expires=TIME by=login|logout|session
    gate refuse  ip=IP user=U pack=P protocol=PR source=FILE:LINE reason=SETTING [detail=D]
    gate close   ip=IP user=U pack=P protocol=PR source=FILE:LINE reason=expired|logout|removed
`ip` is the gate's key (an address, or an IPv6 network with ipv6_prefix; for a refusal the
client's address); a missing value is - (a user really named "-" is written "-" in quotes);
TIME is local time with its UTC offset. Under
`logkey watch --observe` the first word is "would" instead of "gate": nothing was written.
"""
from __future__ import annotations

import json
import logging
import re
from datetime import datetime

from .policy import MAX_IPS, Delete, Put, Refuse

_BARE = re.compile(r"[!#-\[\]-~]+")        # printable ASCII but space, '"' and '\'


def value(v) -> str:
    """One value as written in an audit line: bare when safe, else a JSON string."""
    if v is None:
        return "-"
    text = str(v)
    return text if _BARE.fullmatch(text) and text != "-" else json.dumps(text)


def _time(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def line(action, observe: bool = False) -> str | None:
    """The audit line of one gate action (None for anything else)."""
    if isinstance(action, Put):
        g, e = action.gate, action.event
        what = "open" if action.new else "refresh"
        if e is not None:               # the login or logout that did it, not the gate's first
            who = (e.user if e.user is not None else g.user, e.pack,
                   e.protocol or g.protocol, action.source)
        else:                           # an open session kept the gate open
            who = (g.user, g.pack, g.protocol, g.source)
        fields = [("ip", g.key), *zip(("user", "pack", "protocol", "source"), who),
                  ("expires", _time(g.expires))]
        if not action.new:
            fields.append(("by", action.why))
    elif isinstance(action, Delete):
        g = action.gate
        what = "close"
        fields = [("ip", action.key), ("user", g and g.user), ("pack", g and g.pack),
                  ("protocol", g and g.protocol), ("source", g and g.source),
                  ("reason", action.why)]
    elif isinstance(action, Refuse):
        e = action.event
        what = "refuse"
        fields = [("ip", e.ip), ("user", e.user), ("pack", e.pack), ("protocol", e.protocol),
                  ("source", action.source), ("reason", action.reason)]
        if action.detail is not None:
            fields.append(("detail", action.detail))
    else:
        return None
    return " ".join([("would " if observe else "gate ") + what]
                    + [f"{k}={value(v)}" for k, v in fields])


def level(action) -> int:
    """A refusal by max_ips_per_user (a password used from many places) is a warning; every
    other decision is info."""
    if isinstance(action, Refuse) and action.reason == MAX_IPS:
        return logging.WARNING
    return logging.INFO
