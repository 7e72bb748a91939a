"""Gate policy on a fake clock: every rule of the issue, no files, no sleeping."""
import ipaddress
from datetime import datetime, timezone

from logkey.events import Event
from logkey.gates.policy import Delete, GatePolicy, PolicyConfig, Put, Refuse

T0 = 1_800_000_000.0


def ev(kind, ip, t, user="bob", pack="dovecot", protocol="pop3", session=None):
    return Event(kind, ip, user, protocol, datetime.fromtimestamp(t, timezone.utc), pack, kind,
                 session)


def policy(**kw):
    return GatePolicy(PolicyConfig(**kw))


def expiry(p, key):
    return p.gates[key].record.expires


def test_login_opens_for_the_window_from_the_line_time():
    p = policy(window=600)
    [put] = p.on_event(ev("login", "192.0.2.7", T0), now=T0 + 5)
    assert isinstance(put, Put) and put.gate.key == "192.0.2.7"
    assert put.gate.expires == T0 + 600 and put.gate.opened == T0


def test_old_login_opens_nothing_and_future_time_is_clamped():
    p = policy(window=600)
    assert p.on_event(ev("login", "192.0.2.7", T0), now=T0 + 600) == []
    [put] = p.on_event(ev("login", "192.0.2.8", T0 + 3600), now=T0)     # skewed clock
    assert put.gate.expires == T0 + 600


def test_expiry_on_a_timer_without_log_traffic():
    p = policy(window=600)
    p.on_event(ev("login", "192.0.2.7", T0), now=T0)
    assert p.on_tick(T0 + 599) == []
    assert p.on_tick(T0 + 600) == [Delete("192.0.2.7")]
    assert p.gates == {}


def test_login_extends_and_logout_refreshes():
    p = policy(window=600)
    p.on_event(ev("login", "192.0.2.7", T0), now=T0)
    p.on_event(ev("login", "192.0.2.7", T0 + 100), now=T0 + 100)
    assert expiry(p, "192.0.2.7") == T0 + 700
    [put] = p.on_event(ev("logout", "192.0.2.7", T0 + 300), now=T0 + 300)
    assert put.gate.expires == T0 + 900


def test_logout_without_a_gate_opens_nothing():
    assert policy().on_event(ev("logout", "192.0.2.7", T0), now=T0) == []


def test_open_session_is_extended_up_to_max_session_then_logout_sets_expiry():
    p = policy(window=600, max_session=3600, logout_packs=frozenset({"dovecot"}))
    p.on_event(ev("login", "192.0.2.7", T0, protocol="imap", session="S1"), now=T0)
    for minute in range(1, 50):
        p.on_tick(T0 + minute * 60)
        now = T0 + minute * 60
        assert now + 300 <= expiry(p, "192.0.2.7") <= now + 600     # never lapses
    p3 = policy(window=600, max_session=86400, logout_packs=frozenset({"dovecot"}))
    p3.on_event(ev("login", "192.0.2.7", T0, session="S"), now=T0)
    writes = sum(isinstance(a, Put) for second in range(1, 3601)
                 for a in p3.on_tick(T0 + second))
    assert writes <= 12                 # one store write per half window, not one per tick
    for minute in range(50, 60):
        p.on_tick(T0 + minute * 60)
    assert expiry(p, "192.0.2.7") == T0 + 3600                   # capped: login + max_session
    assert p.on_tick(T0 + 3600) == [Delete("192.0.2.7")]
    p2 = policy(window=600, max_session=3600, logout_packs=frozenset({"dovecot"}))
    p2.on_event(ev("login", "192.0.2.7", T0, session="S1"), now=T0)
    for minute in range(1, 21):
        p2.on_tick(T0 + minute * 60)
    [put] = p2.on_event(ev("logout", "192.0.2.7", T0 + 1300, session="S1"), now=T0 + 1300)
    assert put.gate.expires == T0 + 1900
    p2.on_tick(T0 + 1800)
    assert expiry(p2, "192.0.2.7") == T0 + 1900                  # no more extension


def test_packs_without_logouts_get_no_session_extension():
    p = policy(window=600, logout_packs=frozenset({"dovecot"}))
    p.on_event(ev("login", "192.0.2.7", T0, pack="qpopper"), now=T0)
    p.on_tick(T0 + 500)
    assert expiry(p, "192.0.2.7") == T0 + 600


def test_a_gate_closed_by_hand_is_not_re_extended():
    p = policy(window=600, logout_packs=frozenset({"dovecot"}))
    p.on_event(ev("login", "192.0.2.7", T0, session="S"), now=T0)
    assert p.on_tick(T0 + 60, still_stored=lambda key: False) == [Delete("192.0.2.7")]
    assert p.gates == {}
    p.on_event(ev("login", "192.0.2.8", T0, pack="qpopper"), now=T0)     # no session
    assert p.on_tick(T0 + 60, still_stored=lambda key: False) == []      # not asked ...
    assert p.on_tick(T0 + 61, still_stored=lambda key: False, check_all=True) == \
        [Delete("192.0.2.8")]                                           # ... unless all are


def refusal(actions):
    """(reason, detail) of the one Refuse in `actions`."""
    [refuse] = actions
    assert isinstance(refuse, Refuse)
    return refuse.reason, refuse.detail


def test_never_gate_only_gate_and_users():
    p = policy()
    assert refusal(p.on_event(ev("login", "127.0.0.1", T0), now=T0)) == \
        ("never_gate", "127.0.0.1/32")
    assert refusal(p.on_event(ev("login", "::1", T0), now=T0)) == ("never_gate", "::1/128")
    assert isinstance(p.on_event(ev("login", "127.0.0.2", T0), now=T0)[0], Put)
    p = policy(never_gate=[ipaddress.ip_network("10.0.0.0/8")],
               only_gate=[ipaddress.ip_network("192.0.2.0/24")],
               never_gate_users=frozenset({"webmail"}))
    assert refusal(p.on_event(ev("login", "10.1.2.3", T0), now=T0)) == ("never_gate", "10.0.0.0/8")
    assert refusal(p.on_event(ev("login", "198.51.100.1", T0), now=T0)) == ("only_gate", None)
    assert refusal(p.on_event(ev("login", "192.0.2.9", T0, user="webmail"), now=T0)) == \
        ("never_gate_users", None)
    assert isinstance(p.on_event(ev("login", "192.0.2.9", T0), now=T0)[0], Put)
    assert p.gates.keys() == {"192.0.2.9"}


def test_max_ips_per_user():
    p = policy(max_ips_per_user=2)
    assert p.on_event(ev("login", "192.0.2.1", T0), now=T0)
    assert p.on_event(ev("login", "192.0.2.2", T0), now=T0)
    assert refusal(p.on_event(ev("login", "192.0.2.3", T0), now=T0)) == \
        ("max_ips_per_user", "2 open, limit 2")
    assert "192.0.2.3" not in p.gates
    assert p.on_event(ev("login", "192.0.2.1", T0 + 10), now=T0 + 10)   # an open one extends
    assert p.on_event(ev("login", "192.0.2.3", T0, user="alice"), now=T0)  # other users fine
    p.on_tick(T0 + 600)
    assert p.on_event(ev("login", "192.0.2.3", T0 + 605), now=T0 + 605)  # after expiry


def test_ipv6_exact_and_prefix():
    p = policy()
    [put] = p.on_event(ev("login", "2001:db8:1:2:a:b:c:d", T0), now=T0)
    assert put.gate.key == "2001:db8:1:2:a:b:c:d"
    p = policy(ipv6_prefix=64)
    [put] = p.on_event(ev("login", "2001:db8:1:2:a:b:c:d", T0), now=T0)
    assert put.gate.key == "2001:db8:1:2::/64"
    [put] = p.on_event(ev("login", "192.0.2.1", T0), now=T0)
    assert put.gate.key == "192.0.2.1"


def test_other_protocols_and_missing_ips_open_nothing():
    p = policy()
    assert p.on_event(ev("login", "192.0.2.1", T0, protocol=None), now=T0) == []
    assert p.on_event(ev("login", None, T0), now=T0) == []


def test_counts_name_every_decision():
    """The tallies the metrics and `logkey status` read: one per decision, by its reason."""
    net = ipaddress.ip_network
    p = policy(window=600, max_session=3600, max_ips_per_user=1, only_gate=[net("192.0.2.0/24")],
               never_gate=[net("192.0.2.99/32")], never_gate_users=frozenset({"webmaster"}),
               logout_packs=frozenset({"dovecot"}))
    p.on_event(ev("login", "192.0.2.1", T0, session="a"), now=T0)                 # opened
    p.on_event(ev("login", "192.0.2.1", T0 + 10, session="b"), now=T0 + 10)       # refreshed
    p.on_event(ev("login", "192.0.2.2", T0 + 10), now=T0 + 10)                    # max_ips
    p.on_event(ev("login", "192.0.2.99", T0, user="x"), now=T0)                   # never_gate
    p.on_event(ev("login", "198.51.100.1", T0, user="y"), now=T0)                 # only_gate
    p.on_event(ev("login", "192.0.2.3", T0, user="webmaster"), now=T0)            # users
    p.on_event(ev("login", "192.0.2.4", T0 - 700, user="z"), now=T0)              # stale
    p.on_tick(T0 + 400)                                                           # extended
    p.on_event(ev("login", "192.0.2.5", T0, user="u5", pack="qpopper"), now=T0)   # no sessions
    p.on_event(ev("login", "192.0.2.6", T0, user="u6", pack="qpopper"), now=T0)
    p.on_tick(T0 + 401, still_stored=lambda key: key != "192.0.2.6", check_all=True)  # hand
    p.on_tick(T0 + 600)                                                           # expired .5
    p.on_event(ev("logout", "192.0.2.1", T0 + 50, session="a"), now=T0 + 700)
    p.on_event(ev("logout", "192.0.2.1", T0 + 50, session="b"), now=T0 + 700)     # logout
    assert dict(p.counts) == {
        "opened": 3, "refreshed": 1, "refused:max_ips_per_user": 1, "refused:never_gate": 1,
        "refused:only_gate": 1, "refused:never_gate_users": 1, "stale": 1, "extended": 1,
        "closed:hand": 1, "expired": 1, "closed:logout": 1}


def test_every_decision_says_why():
    """The audit log (audit.py) names each decision: open, refresh by login/logout/session,
    close by expiry/logout/removal; closes carry the record that was closed."""
    p = policy(window=600, logout_packs=frozenset({"dovecot"}))
    [a] = p.on_event(ev("login", "192.0.2.7", T0, session="S"), now=T0)
    assert (a.new, a.why) == (True, "open")
    [a] = p.on_event(ev("login", "192.0.2.7", T0 + 10, session="S2"), now=T0 + 10)
    assert (a.new, a.why) == (False, "login")
    [a] = p.on_tick(T0 + 400)
    assert (type(a), a.why) == (Put, "session")
    [a] = p.on_event(ev("logout", "192.0.2.7", T0 + 420, session="S"), now=T0 + 420)
    assert (type(a), a.why) == (Put, "logout")
    for second in range(430, 1500, 10):         # S2 stays open: extended past its window
        p.on_tick(T0 + second)
    [a] = p.on_event(ev("logout", "192.0.2.7", T0 + 800, session="S2"), now=T0 + 1500)
    assert (type(a), a.why, a.gate.user) == (Delete, "logout", "bob")     # read late
    p.on_event(ev("login", "192.0.2.8", T0, pack="qpopper"), now=T0)
    [a] = p.on_tick(T0 + 600)
    assert (a.key, a.why, a.gate.pack) == ("192.0.2.8", "expired", "qpopper")
    p.on_event(ev("login", "192.0.2.9", T0 + 700, pack="qpopper"), now=T0 + 700)
    [a] = p.on_tick(T0 + 710, still_stored=lambda key: False, check_all=True)
    assert (a.key, a.why) == ("192.0.2.9", "removed")


def test_max_ips_per_user_counts_by_its_index_as_a_scan_of_every_gate_would():
    """The per-user index (GatePolicy._keys_of) against the rule it replaces, a count over
    every gate, on a random stream of logins (a gate's user changing with its latest login),
    logouts, ticks and adopted records."""
    import random
    from logkey.stores.base import GateRecord
    rnd = random.Random(17)
    p = policy(window=600, max_ips_per_user=3, logout_packs=frozenset({"dovecot"}))
    users = ["u1", "u2", "u3", None]
    now = T0
    refused = 0
    for i in range(4000):
        now += rnd.choice((0, 1, 5, 30))
        ip = f"192.0.2.{rnd.randrange(1, 40)}"
        user = rnd.choice(users)
        op = rnd.random()
        if op < 0.6:
            key = p.key_for(ip)
            gate = p.gates.get(key)
            is_new = gate is None or gate.record.expires <= now
            held = sum(1 for g in p.gates.values()
                       if g.record.user == user and g.record.expires > now)
            out = p.on_event(ev("login", ip, now, user=user, session=f"s{i % 7}"), now=now)
            expect_refused = user is not None and is_new and held >= 3
            assert any(isinstance(a, Refuse) for a in out) == expect_refused, (i, held)
            refused += expect_refused
        elif op < 0.8:
            p.on_event(ev("logout", ip, now, user=user, session=f"s{i % 7}"), now=now)
        elif op < 0.95:
            p.on_tick(now, still_stored=lambda k: rnd.random() < 0.9)
        else:
            p.adopt([GateRecord(ip, user, "manual", None, now, now + 300, "logkey open")], now)
        index = {u: set(keys) for u, keys in p._keys_of.items()}
        scan: dict = {}
        for key, g in p.gates.items():
            if g.record.user is not None:
                scan.setdefault(g.record.user, set()).add(key)
        assert index == scan, i
    assert refused > 50                 # the limit was met often enough to be tested
