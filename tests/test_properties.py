"""Property tests: whatever a user name holds, a failed login opens nothing and a successful
one yields its real address or nothing, never another."""
from datetime import timezone

from hypothesis import HealthCheck, given, settings, strategies as st

from logkey.engine import Engine
from logkey.headers import Clock
from logkey.packs import load_packs
from logkey.packtest import SAMPLE_NOW

PACKS = load_packs()
REAL_IP = "198.51.100.7"
EVIL = ["127.0.0.9", "203.0.113.66", "::ffff:127.0.0.9"]
ALPHABET = st.sampled_from(list("<>,=[]()\"' :\r\n\x00\t@.-_/") + ["rip=", "ip=[", "user=",
                           "Login: ", "LOGIN, ", "login success ", " from ", "at (", ") ",
                           "status=\"ok\"", "\udcff", "\udce9"] + EVIL + list("abcxyz019"))
USERS = st.lists(ALPHABET, max_size=30).map("".join)

FAILURES = [
    "Nov 27 10:00:00 mail dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): "
    "user=<{u}>, method=PLAIN, rip=" + REAL_IP + ", lip=192.0.2.1, session=<AbCd>",
    "Nov 27 10:00:00 mail dovecot: imap-login: Disconnected: Connection closed (auth failed, "
    "1 attempts in 2 secs): user=<{u}>, method=PLAIN, rip=" + REAL_IP + ", lip=192.0.2.1",
    "Nov 27 10:00:00 mail vpopmail[42]: vchkpw-pop3: password fail {u}:" + REAL_IP,
    "Nov 27 10:00:00 mail vpopmail[42]: vchkpw-pop3: vpopmail user not found {u}:" + REAL_IP,
    "Nov 27 10:00:00 mail popper[42]: -ERR [AUTH] Password supplied for \"{u}\" is incorrect.",
    "Nov 27 10:00:00 mail imapd[42]: Login failed user={u} auth={u} host=h [" + REAL_IP + "]",
    "Nov 27 10:00:00 mail solid-pop3d[42]: authentication failed for user {u} - " + REAL_IP,
    "Nov 27 10:00:00 mail perdition.imaps[42]: Auth: " + REAL_IP + ":2274->193.48.191.9:993 "
    "client-secure=ssl authorisation_id=NONE authentication_id=\"{u}\" server=\"imap:993\" "
    "protocol=IMAP4S server-secure=ssl status=\"failed: Re-Authentication Failure\"",
]
SUCCESSES = [
    "Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<{u}>, method=PLAIN, rip=" + REAL_IP
    + ", lip=192.0.2.1, mpid=4711, TLS, session=<PeYcgjjOGOisEQAB>",
    "Nov 27 10:00:00 mail vpopmail[42]: vchkpw-pop3: (PLAIN) login success {u}@example.net:" + REAL_IP,
    "Nov 27 10:00:00 mail popper[42]: POP login by user \"{u}\" at (host.example) " + REAL_IP,
    "Nov 27 10:00:00 mail imapd[42]: Login user={u} host=host.example [" + REAL_IP + "]",
    "Nov 27 10:00:00 mail perdition.imaps[42]: Auth: " + REAL_IP + ":2274->193.48.191.9:993 "
    "client-secure=ssl authorisation_id=NONE authentication_id=\"{u}\" server=\"imap:993\" "
    "protocol=IMAP4S server-secure=ssl status=\"ok\"",
]


def events(line: str):
    engine = Engine(PACKS, Clock(SAMPLE_NOW, timezone.utc))
    return engine.feed_line(line.encode("utf-8", "surrogateescape"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FAILURES), USERS)
def test_failed_login_never_opens(template, user):
    assert [e for e in events(template.format(u=user)) if e.kind == "login"] == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SUCCESSES), USERS)
def test_success_gives_the_real_ip_or_nothing(template, user):
    for e in events(template.format(u=user)):
        assert e.ip == REAL_IP, (e, user)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_never_raise(data):
    engine = Engine(PACKS, Clock(SAMPLE_NOW, timezone.utc))
    for line in data.split(b"\n"):
        for e in engine.feed_line(line):
            assert e.ip is None or e.ip.isascii()


PREFIXES = st.sampled_from([b"", b"Nov 27 10:00:00 mail dovecot: ", b"Nov 27 10:00:00 imap-login: Info: ",
                            b"2026-11-27T10:00:00+00:00 mail vpopmail[1]: vchkpw-pop3: ",
                            b"@4000000063b5c2d10a1b2c3d ", b"<22>Nov 27 10:00:00 h popper[1]: ",
                            b"Mon Nov 27 10:00:00 2006 [42] ", b"dovecot: 2008-10-02 23:34:07 Info: "])


@settings(max_examples=500, deadline=None)
@given(PREFIXES, st.binary(max_size=200))
def test_header_shaped_garbage_never_raises(prefix, data):
    engine = Engine(PACKS, Clock(SAMPLE_NOW, timezone.utc))
    for e in engine.feed_line(prefix + data.replace(b"\n", b" ")):
        assert e.kind in ("login", "logout")
