from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from logkey.headers import Clock, parse

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
