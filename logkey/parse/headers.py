"""Log-line headers: one line (bytes) -> format, time stamp, host, program tag, pid, message.

Reads: nothing (pure). Trust: the header is the only part of a syslog line the log daemon
writes itself; packs see only the message after the tag, so no rule can take an address from
another program's line.

Formats, recognised per line without being told:
  rfc3339       2026-11-27T23:42:17.185890+00:00 host prog[pid]: msg   (rsyslog file format)
  rfc3164       Nov  7 10:00:00 host prog[pid]: msg   (<PRI> and host optional)
  dovecot-file  dovecot's own log_path: "Nov 27 10:00:00 imap-login: Info: msg",
                "2026-11-27 10:00:00 imap-login: Info: msg", 1.x "dovecot: 2008-10-02
                23:34:07 Info: pop3-login: msg", "Jun 23 15:04:06 Info: IMAP(u): msg"
  log4j-file    log4j's "2015-03-26 21:51:36,505 INFO  [thread] ..." (Zimbra's audit.log):
                untagged, the comma before the milliseconds is ISO 8601's other decimal sign
  tai64n        daemontools/multilog "@4000000063b5c2d1... prog: msg"
  qpopper-file  full-date stamps: qpopper's trace file "Mon Nov 27 10:00:00 2006 [4242] msg"
                (2.x/3.x), "Nov 27 10:00:00.123 2006 [4242] msg" (4.x); untagged, pid kept.
  bsd-verbose   FreeBSD/NetBSD syslogd -v / -vv: "Jan 21 19:06:28 <mail.info> host prog: msg",
                "<2.6>" numeric; the facility.level is dropped, the rest read as rfc3164/rfc3339.
  docker+FMT    `docker compose logs` / `docker-compose logs`: "NAME  | <line>", the line
                optionally after docker's own --timestamps stamp ("NAME  | 2024-01-21T19:06:28.1Z
                <line>"; `docker logs -t` writes that stamp without the NAME part); the inner
                line is parsed as above (FMT is its format) and the container NAME becomes the
                host. A container's output has no log daemon between the process and the
                line: any process in the container writes whole lines (logtrust.py warns).
  Solaris syslog's "[ID 702911 mail.notice] " msgid after the tag is dropped.
Dovecot's own-file lines are handed to packs as program "dovecot" with the message dovecot's
syslog lines carry ("imap-login: Login: ..."), so one rule set covers both.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo

try:                            # the standard header read in C (scan.py's pre-filter, setup.py)
    from ._fastscan import header as _c_header
except ImportError:
    _c_header = None

# --- the fast path: "<stamp> host tag[pid]: " covers nearly every line of a mail log -------
# The host is a host name, an IPv4 address or "(none)": nothing with "(" or "<", so a dovecot
# own-file line such as "<stamp> imap(user name with spaces)<pid><session>: ..." can never be
# read as "host tag: message". scan.py builds its pre-filter from these same pieces.
HOST = rb"(?:[A-Za-z0-9._-]{1,255}|\(none\))"
TAG_CHARS = rb"[A-Za-z0-9_./@+-]"
TAG = rb"[A-Za-z0-9_]" + TAG_CHARS + rb"{0,63}"
STAMP_3339 = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?"
STAMP_3164 = rb"[A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d"
PRI = rb"(?:<\d{1,3}>)?"
_TAG = rb"(?P<tag>" + TAG + rb")(?:\[(?P<pid>\d{1,10})\])?: "
SYSLOG_3339 = re.compile(PRI + rb"(?P<stamp>" + STAMP_3339 + rb") (?P<host>" + HOST + rb") " + _TAG)
SYSLOG_3164 = re.compile(PRI + rb"(?P<stamp>" + STAMP_3164 + rb") (?P<host>" + HOST + rb") " + _TAG)
assert all(p.groupindex == {"stamp": 1, "host": 2, "tag": 3, "pid": 4} and p.groups == 4
           for p in (SYSLOG_3339, SYSLOG_3164))      # from_fast_match reads them by position

# --- the slow path --------------------------------------------------------------------------
_STAMPS = (
    ("qpopper-file", re.compile(
        rb"(?:<\d{1,3}>)?((?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) )?[A-Z][a-z]{2} [ \d]?\d "
        rb"(?:\d\d:\d\d:\d\d(?:\.\d{1,6})? \d{4}|\d{4} \d\d:\d\d:\d\d)) ")),
    ("rfc3339", re.compile(rb"(?:<\d{1,3}>)?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?"
                           rb"(?:Z|[+-]\d\d:?\d\d)?) ")),
    ("rfc3164", re.compile(rb"(?:<\d{1,3}>)?([A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d) ")),
    ("tai64n", re.compile(rb"@([0-9a-f]{24}) ")),
    ("iso-space", re.compile(rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:[.,]\d{1,9})?) ")),
)
_DOVECOT1 = re.compile(
    rb"dovecot: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (Info|Warning|Error|Fatal|Panic|Debug): ")
_LEVELS = rb"(?P<level>Info|Warning|Error|Fatal|Panic|Debug): "
_DOVECOT_SERVICE = re.compile(
    rb"(?P<svc>[A-Za-z][A-Za-z0-9_-]{0,39}(?:\([^()\n]{0,256}\))?(?:<[^<>\s]{0,64}>){0,3}): "
    + _LEVELS)
_LEVEL_FIRST = re.compile(_LEVELS)
_HOSTLESS = re.compile(_TAG)
_HOSTED = re.compile(rb"(?P<host>[A-Za-z0-9._:-]{1,255}|\(none\)) " + _TAG)
_QPOPPER_PID = re.compile(rb"\[(\d{1,10})\] {1,2}")
_SOLARIS_MSGID = re.compile(rb"\[ID \d{1,10} [a-z0-9]{1,16}\.[a-z]{1,10}\] ")
# FreeBSD syslogd -v writes "<facility.level>" numerically, -vv by name (syslogd.c, fprintlog)
_BSD_PRIORITY = re.compile(rb"<(?:[a-z]{2,8}[0-7]?|\d{1,2})\.(?:[a-z]{3,7}|[0-7])> ")
# docker compose: "NAME  | " (names padded to one width; compose v1 "NAME_1", v2 "NAME-1"),
# colour codes around it when the output is a terminal; an empty line is "NAME  |".
_CONTAINER = re.compile(rb"(?:\x1b\[[0-9;]{1,12}m)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
                        rb" *\|(?:\x1b\[0m)?(?: |$)")
_DOCKER_STAMP = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) ")

MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
TAI64_EPOCH = 4611686018427387914      # 2**62 + 10: daemontools' label of the Unix epoch


class Header:
    """A parsed header. `message` is bytes; `stamp` is parsed into a datetime on demand."""
    __slots__ = ("format", "stamp", "host", "program", "pid", "message", "rest")

    def __init__(self, fmt, stamp, host, program, pid, message, rest=None):
        self.format = fmt           # one of the format names above
        self.stamp = stamp          # raw stamp bytes
        self.host = host            # bytes or None
        self.program = program      # str or None (untagged)
        self.pid = pid              # str or None
        self.message = message      # bytes
        self.rest = rest if rest is not None else message   # everything after the stamp


def parse(line: bytes) -> Header | None:
    """Parse one line (without its newline). None when no known header is found."""
    if _c_header is not None:
        fields = _c_header(line)
        if fields is not None:
            return from_fast_fields(fields)
        return parse_slow(line)
    return parse_by_regex(line)


def parse_by_regex(line: bytes) -> Header | None:
    """parse() without _fastscan (tests/test_scan.py holds the two to the same headers)."""
    m = SYSLOG_3339.match(line) or SYSLOG_3164.match(line)
    if m is not None:
        return from_fast_match(m, line)
    return parse_slow(line)


def from_fast_fields(fields: tuple) -> Header:
    """The Header of _fastscan.header's fields: SYSLOG_3339 / SYSLOG_3164 read in C."""
    fmt, stamp, host, program, pid, message, rest = fields
    if message[:4] == b"[ID ":
        message = _SOLARIS_MSGID.sub(b"", message, count=1)
    return Header(fmt, stamp, host, program, pid, message, rest)


def from_fast_match(m, line: bytes) -> Header:
    """The Header of `line`, from the match of SYSLOG_3339 or SYSLOG_3164 the caller already
    has (so a line is not read twice)."""
    stamp, host, tag, pid = m.groups()              # (by position: cheaper than by name)
    message = line[m.end():]
    if message[:4] == b"[ID ":
        message = _SOLARIS_MSGID.sub(b"", message, count=1)
    return Header("rfc3164" if m.re is SYSLOG_3164 else "rfc3339", stamp, host,
                  tag.decode("ascii"), pid.decode("ascii") if pid else None, message,
                  line[m.end(1) + 1:])


def parse_slow(line: bytes) -> Header | None:
    if line[:1].isdigit():
        d = _DOCKER_STAMP.match(line)
        if d is not None:                       # docker logs -t: "<docker stamp> <line>"
            h = _docker_inner(d.group(1), line[d.end():], alone=False)
            if h is not None:
                return h
    h = _parse_slow(line)
    if h is not None:
        return h
    c = _CONTAINER.match(line)
    if c is None:
        return None
    inner = line[c.end():]
    h = _docker_inner(None, inner)              # the line itself, with its own header
    if h is None or h.program is None:
        d = _DOCKER_STAMP.match(inner)          # --timestamps: docker's stamp first
        if d is not None:
            behind = _docker_inner(d.group(1), inner[d.end():])
            if behind is not None and (h is None or behind.program is not None):
                h = behind
    if h is not None:
        h.host = c.group("name")                # the container's name, from docker
    return h


def _docker_inner(stamp, inner: bytes, alone: bool = True) -> Header | None:
    """The line a container wrote, behind docker's prefix (and its stamp when given);
    `alone`: a line without a header of its own is taken with docker's stamp."""
    m = SYSLOG_3339.match(inner) or SYSLOG_3164.match(inner)
    if m is not None:
        h = from_fast_match(m, inner)
    else:
        h = _parse_slow(inner) if inner[:1] not in (b"", b" ") else None
    if h is None:
        if stamp is None or not alone:
            return None
        t = _HOSTLESS.match(inner)              # "prog: msg" after docker's stamp alone
        if t is not None:
            h = _tagged("rfc3339", stamp, None, t.group("tag"), t.group("pid"),
                        inner[t.end():], inner)
        else:
            h = Header("rfc3339", stamp, None, None, None, inner, inner)
    h.format = "docker+" + h.format
    return h


def _tagged(fmt, stamp, host, tag, pid, message, rest):
    message = _SOLARIS_MSGID.sub(b"", message, count=1) if message[:4] == b"[ID " else message
    return Header(fmt, stamp, host, tag.decode("ascii"), pid.decode("ascii") if pid else None,
                  message, rest)


def _parse_slow(line: bytes) -> Header | None:
    m = _DOVECOT1.match(line)
    if m is not None:
        return _dovecot_file(m.group(1), b"", m.group(2), line[m.end():], line[m.end(1) + 1:])
    for fmt, stamp_re in _STAMPS:
        m = stamp_re.match(line)
        if m is None:
            continue
        stamp, rest = m.group(1), line[m.end():]
        if fmt in ("rfc3164", "rfc3339") and rest[:1] == b"<":
            v = _BSD_PRIORITY.match(rest)
            if v is not None:                   # "<mail.info> host prog: msg"
                rest = rest[v.end():]
                t = _HOSTED.match(rest) or _HOSTLESS.match(rest)
                if t is None:
                    return None
                host = t.group("host") if "host" in t.re.groupindex else None
                return _tagged("bsd-verbose", stamp, host, t.group("tag"), t.group("pid"),
                               rest[t.end():], rest)
        if fmt == "iso-space":                  # RFC 3339 allows a space for the "T"
            fmt = "log4j-file" if b"," in stamp else "rfc3339"
        elif fmt == "qpopper-file":
            q = _QPOPPER_PID.match(rest)
            if q is not None:                   # qpopper's trace file: "<date> [pid] msg"
                return Header(fmt, stamp, None, None, q.group(1).decode("ascii"),
                              rest[q.end():], rest)
        d = _LEVEL_FIRST.match(rest)
        if d is not None:                       # "Jun 23 15:04:06 Info: IMAP(u): ..."
            return _dovecot_file(stamp, b"", d.group("level"), rest[d.end():], rest,
                                 fmt="tai64n" if fmt == "tai64n" else "dovecot-file")
        d = _DOVECOT_SERVICE.match(rest)
        if d is not None:                       # "imap-login: Info: Login: ..."
            return _dovecot_file(stamp, d.group("svc") + b": ", d.group("level"),
                                 rest[d.end():], rest,
                                 fmt="tai64n" if fmt == "tai64n" else "dovecot-file")
        t = _HOSTLESS.match(rest)
        if t is None and fmt != "tai64n":
            t = _HOSTED.match(rest)
        if t is not None:
            host = t.group("host") if "host" in t.re.groupindex else None
            return _tagged(fmt, stamp, host, t.group("tag"), t.group("pid"), rest[t.end():], rest)
        return Header(fmt, stamp, None, None, None, rest, rest)
    return None


def _dovecot_file(stamp, service, level, message, rest, fmt="dovecot-file"):
    if level != b"Info":
        message = level + b": " + message
    return Header(fmt, stamp, None, "dovecot", None, service + message, rest)


_fromisoformat = datetime.fromisoformat


class Clock:
    """Turns header stamps into aware datetimes.

    Zone-less stamps are read in `tz` (None: the machine's local zone). RFC 3164 stamps have no
    year: the year chosen puts the time nearest before `now`, allowing one day ahead for skew.
    """

    def __init__(self, now: datetime | None = None, tz: tzinfo | None = None):
        self.now = now
        self.tz = tz
        self._cache_key = None
        self._cache_val = None

    def current(self) -> datetime:
        return self.now if self.now is not None else datetime.now(timezone.utc)

    def time(self, header: Header) -> datetime | None:
        return self.stamp_time(header.format, header.stamp)

    def stamp_time(self, fmt: str, stamp: bytes) -> datetime | None:
        """The time of a stamp of the header format `fmt`, or None."""
        key = (fmt, stamp)
        if key == self._cache_key:
            return self._cache_val
        try:
            if key[0] == "rfc3339":             # nearly every line (rsyslog's file format)
                value = _fromisoformat(key[1].decode("ascii"))     # what _parse does, inline
                if value.tzinfo is None:
                    value = self._local(value)
            else:
                value = self._parse(fmt, stamp)
        except (ValueError, OverflowError):
            value = None
        self._cache_key, self._cache_val = key, value
        return value

    def _local(self, naive: datetime) -> datetime:
        if self.tz is not None:
            return naive.replace(tzinfo=self.tz)
        return naive.astimezone()

    def _parse(self, fmt: str, stamp: bytes) -> datetime | None:
        text = stamp.decode("ascii")
        if fmt.endswith("tai64n"):
            label = int(text[:16], 16)
            nanos = int(text[16:], 16)
            seconds = label - TAI64_EPOCH
            dt = datetime.fromtimestamp(seconds, timezone.utc) + timedelta(microseconds=nanos // 1000)
            return dt.astimezone(self.tz) if self.tz else dt.astimezone()
        if text[:4].isdigit():                  # ISO 8601 / RFC 3339 ("T" or space)
            dt = datetime.fromisoformat(text)
            return dt if dt.tzinfo is not None else self._local(dt)
        parts = text.split()
        if parts[0] in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"):
            parts = parts[1:]
        month = MONTHS.get(parts[0].encode())
        if month is None:                       # "Aaa 1 10:00:00": a stamp's shape, no month
            raise ValueError(f"no month {parts[0]!r}")
        day = int(parts[1])
        if len(parts) == 4:                     # full date: "Nov 27 10:00:00 2006" / "Nov 27 2006 10:00:00"
            year_text, clock = (parts[3], parts[2]) if ":" in parts[2] else (parts[2], parts[3])
            clock, _, frac = clock.partition(".")
            h, mi, s = (int(x) for x in clock.split(":"))
            micro = int((frac + "000000")[:6]) if frac else 0
            return self._local(datetime(int(year_text), month, day, h, mi, s, micro))
        h, mi, s = (int(x) for x in parts[2].split(":"))
        return self._infer_year(month, day, h, mi, s)

    def _infer_year(self, month, day, h, mi, s) -> datetime | None:
        now = self.current()
        limit = now + timedelta(days=1)
        for year in range(now.year + 1, now.year - 9, -1):
            try:
                dt = self._local(datetime(year, month, day, h, mi, s))
            except ValueError:                  # Feb 29 in a common year
                continue
            if dt <= limit:
                return dt
        return None
