from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from logkey.parse.headers import Clock, parse

UTC = timezone.utc
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("line, fmt, host, program, pid, message", [
    (b"2026-11-27T23:42:17.185890+00:00 mail dovecot[77]: imap-login: Login: x",
     "rfc3339", b"mail", "dovecot", "77", b"imap-login: Login: x"),
    (b"Nov  7 10:00:00 mail postfix/smtpd[1]: connect from x", "rfc3164", b"mail",
     "postfix/smtpd", "1", b"connect from x"),
    (b"<22>Feb  2 09:47:12 mail dovecot: pop3-login: Login: y", "rfc3164", b"mail", "dovecot",
     None, b"pop3-login: Login: y"),
    (b"Feb 20 17:23:32 cyrus/pop3[4297]: badlogin: z", "rfc3164", None, "cyrus/pop3", "4297",
     b"badlogin: z"),
    (b"Jan 4 21:51:05 hostname sloti30t15/imap[3]: login: a", "rfc3164", b"hostname",
     "sloti30t15/imap", "3", b"login: a"),
    (b"Jul 18 16:07:18 ares perdition.imaps[3194]: Auth: b", "rfc3164", b"ares",
     "perdition.imaps", "3194", b"Auth: b"),
    (b"Nov 27 10:00:00 imap-login: Info: Login: user=<u>", "dovecot-file", None, "dovecot",
     None, b"imap-login: Login: user=<u>"),
    (b"Nov 27 10:00:00 imap-login: Warning: Login: user=<u>", "dovecot-file", None, "dovecot",
     None, b"imap-login: Warning: Login: user=<u>"),
    (b"dovecot: 2008-10-02 23:34:07 Info: pop3-login: Login: u", "dovecot-file", None,
     "dovecot", None, b"pop3-login: Login: u"),
    (b"2026-11-27 10:00:00 imap(bob)<12><ab>: Info: Disconnected: Logged out", "dovecot-file",
     None, "dovecot", None, b"imap(bob)<12><ab>: Disconnected: Logged out"),
    (b"@4000000063b5c2d10a1b2c3d tcpserver: pid 42 from 192.0.2.1", "tai64n", None,
     "tcpserver", None, b"pid 42 from 192.0.2.1"),
    (b"@400000004c91b044077a9e94 imap-login: Info: Aborted login", "tai64n", None, "dovecot",
     None, b"imap-login: Aborted login"),
    (b"Mon Nov 27 10:00:00 2006 [4242]  Stats: u 0 0 0 0 h 192.0.2.1", "qpopper-file", None,
     None, "4242", b"Stats: u 0 0 0 0 h 192.0.2.1"),
    (b"Nov 27 10:00:00.123 2006 [4242] POP login", "qpopper-file", None, None, "4242",
     b"POP login"),
    (b"Nov 27 10:00:00 host popper[12]: [ID 702911 local0.notice] POP login", "rfc3164",
     b"host", "popper", "12", b"POP login"),
    (b"Nov 27 10:00:00 host kernel: [ 1.0] x", "rfc3164", b"host", "kernel", None,
     b"[ 1.0] x"),
])
def test_formats(line, fmt, host, program, pid, message):
    h = parse(line)
    assert (h.format, h.host, h.program, h.pid, h.message) == (fmt, host, program, pid, message)


@pytest.mark.parametrize("line", [b"", b"garbage", b"Foo 99 99:99", b"\xff\xfe\x00",
                                  b"tcpserver: pid 1 from 1.2.3.4"])
def test_unparseable(line):
    assert parse(line) is None


def t(line, now=NOW, tz=UTC):
    return Clock(now, tz).time(parse(line))


def test_rfc3339_keeps_its_offset():
    assert t(b"2026-11-27T23:42:17.185890+01:00 h p: m") == datetime(
        2026, 11, 27, 23, 42, 17, 185890, tzinfo=timezone(timedelta(hours=1)))


def test_year_is_the_one_nearest_before_now():
    january = datetime(2027, 1, 2, tzinfo=UTC)
    assert t(b"Dec 31 23:59:59 h p: m", now=january).year == 2026
    assert t(b"Jan  1 00:00:01 h p: m", now=january).year == 2027


def test_year_allows_one_day_of_skew():
    now = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert t(b"Jan  1 00:10:00 h p: m", now=now).year == 2027     # 40 min ahead: skew
    assert t(b"Dec 31 23:50:00 h p: m", now=now).year == 2026
    assert t(b"Nov 29 10:00:00 h p: m", now=NOW).year == 2026     # 22 h ahead: skew
    assert t(b"Nov 30 10:00:00 h p: m", now=NOW).year == 2025     # 46 h ahead: last year


def test_feb_29_goes_to_the_last_leap_year():
    assert t(b"Feb 29 10:00:00 h p: m", now=datetime(2027, 3, 1, tzinfo=UTC)).year == 2024


def test_timezone_for_zoneless_stamps():
    berlin = ZoneInfo("Europe/Berlin")
    dt = t(b"Jul  1 12:00:00 h p: m", tz=berlin)
    assert dt.utcoffset() == timedelta(hours=2)
    assert dt.astimezone(UTC).hour == 10


def test_tai64n_is_absolute():
    dt = t(b"@4000000063b5c2d10a1b2c3d tcpserver: x")
    assert dt == datetime.fromtimestamp(0x63b5c2d1 - 10, UTC) + timedelta(microseconds=0x0a1b2c3d // 1000)


# --- FreeBSD syslogd -v / -vv and container-log prefixes ----------------------------------------
@pytest.mark.parametrize("line, fmt, host, program, pid, message", [
    # FreeBSD syslogd(8) -vv: facility.level by name (syslogd.c fprintlog); -v: numerically
    (b"Jan 21 19:06:28 <mail.info> mx1 dovecot: imap-login: Login: user=<a>", "bsd-verbose",
     b"mx1", "dovecot", None, b"imap-login: Login: user=<a>"),
    (b"Jan 21 19:06:28 <2.6> mx1 dovecot[12]: pop3-login: x", "bsd-verbose", b"mx1", "dovecot",
     "12", b"pop3-login: x"),
    (b"Jan 21 19:06:28 <local0.notice> popper[12]: x", "bsd-verbose", None, "popper", "12",
     b"x"),
    (b"2026-01-21T19:06:28+01:00 <mail.info> mx1 dovecot: x", "bsd-verbose", b"mx1", "dovecot",
     None, b"x"),
    # docker compose logs (v2 "NAME-1", v1 "NAME_1"), colours, --timestamps, docker logs -t
    (b"mailcowdockerized-dovecot-mailcow-1  | Jan 21 19:06:28 3f2a1b5c dovecot: imap-login: x",
     "docker+rfc3164", b"mailcowdockerized-dovecot-mailcow-1", "dovecot", None, b"imap-login: x"),
    (b"dovecot-mailcow_1  | 2024-01-21T19:06:28.123456789Z Jan 21 19:06:28 3f2a dovecot: y",
     "docker+rfc3164", b"dovecot-mailcow_1", "dovecot", None, b"y"),
    (b"\x1b[36mmailu-imap-1  |\x1b[0m Jan 21 19:06:28 imap-login: Info: Login: user=<a>",
     "docker+dovecot-file", b"mailu-imap-1", "dovecot", None, b"imap-login: Login: user=<a>"),
    (b"mailserver  | 2026-11-27T23:42:17.185890+00:00 mail dovecot[7]: z", "docker+rfc3339",
     b"mailserver", "dovecot", "7", b"z"),
    (b"imap_1  | 2024-01-21T19:06:28.1Z stalwart: hi", "docker+rfc3339", b"imap_1", "stalwart",
     None, b"hi"),
    (b"2024-01-21T19:06:28.123456789Z Jan 21 19:06:28 mx dovecot: q", "docker+rfc3164", b"mx",
     "dovecot", None, b"q"),
])
def test_wild_formats(line, fmt, host, program, pid, message):
    h = parse(line)
    assert (h.format, h.host, h.program, h.pid, h.message) == (fmt, host, program, pid, message)


@pytest.mark.parametrize("line", [
    b"imap_1  |", b"imap_1  | garbage", b"imap_1  |  Jan 21 19:06:28 mx dovecot: x",
    b"a | b | Jan 21 19:06:28 h dovecot: x",                  # no prefix inside a prefix
    b"Jan 21 19:06:28 <mail.info> <mail.info> h dovecot: x",
    b"Jan 21 19:06:28 <mail.info>h dovecot: x",
    b"bad name!  | Jan 21 19:06:28 h dovecot: x",
])
def test_wild_formats_refused(line):
    h = parse(line)
    assert h is None or h.program is None


def test_docker_stamp_is_read():
    h = parse(b"imap_1  | 2024-01-21T19:06:28.123456789Z some text")
    assert h.format == "docker+rfc3339" and h.program is None
    assert Clock(NOW, UTC).time(h) == datetime(2024, 1, 21, 19, 6, 28, 123456, tzinfo=UTC)


def test_dry_run_counts_the_wild_formats(tmp_path):
    from conftest import NOW as CLI_NOW, run_logkey
    log = tmp_path / "mixed.log"
    log.write_bytes(
        b"Nov 27 10:00:00 <mail.info> mx1 dovecot: pop3-login: Login: user=<alice>, "
        b"method=PLAIN, rip=198.51.100.7, lip=192.0.2.1, mpid=1, session=<PeYcgjjOGOisEQAB>\n"
        b"mailu-imap-1  | Nov 27 10:00:01 imap-login: Info: Login: user=<bob>, method=PLAIN, "
        b"rip=198.51.100.8, lip=192.0.2.1, mpid=2, session=<PeYcgjjOGOisEQAC>\n"
        b"mailserver  | Nov 27 10:00:02 mail dovecot: imap-login: Login: user=<carol>, "
        b"method=PLAIN, rip=198.51.100.9, lip=192.0.2.1, mpid=3, session=<PeYcgjjOGOisEQAD>\n")
    import json
    out = run_logkey("dry-run", "--json", "--now", CLI_NOW, str(log), check=0,
                     env={"TZ": "UTC"})
    rows = [json.loads(x) for x in out.stdout.decode().splitlines()]
    assert [e["ip"] for e in rows[:-1]] == ["198.51.100.7", "198.51.100.8", "198.51.100.9"]
    assert rows[-1]["formats"] == {"bsd-verbose": 1, "docker+dovecot-file": 1,
                                   "docker+rfc3164": 1}
    assert b"read from a container's output" in out.stderr


def test_log4j_file_stamp():
    h = parse(b"2015-03-26 21:51:36,505 INFO  [Pop3Server-13] [ip=172.16.0.3;] security - x")
    assert (h.format, h.program, h.message[:4]) == ("log4j-file", None, b"INFO")
    assert Clock(NOW, UTC).time(h) == datetime(2015, 3, 26, 21, 51, 36, 505000, tzinfo=UTC)


def test_clock_rfc3339_fast_path_is_parse():
    """Clock.time reads "rfc3339" stamps inline (issue 17): the same answer as _parse."""
    for tz in (None, UTC, ZoneInfo("Europe/Berlin")):
        for stamp in (b"2026-11-27T23:42:17.185890+00:00", b"2026-11-27T23:42:17Z",
                      b"2026-03-29T02:30:00", b"2026-10-25T02:30:00.5", b"2026-02-30T10:00:00Z",
                      b"2026-11-27T23:42:17.123456789-0530", b"9999-12-31T23:59:59",
                      b"0001-01-01T00:00:00"):
            h = parse(stamp + b" host prog: x")
            assert h is not None and h.format == "rfc3339"
            clock = Clock(NOW, tz)
            try:
                want = clock._parse("rfc3339", stamp)
            except (ValueError, OverflowError):
                want = None
            got = clock.time(h)
            assert got == want and (got is None or got.utcoffset() == want.utcoffset()), stamp
