"""gates/replay.py's WindowGates, which dry-run uses, gives the gates GatePolicy gives with
dry-run's settings (the window alone; each event judged at its own time), for any events."""
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from logkey.events import CONNECT, LOGIN, LOGOUT, Event
from logkey.gates.policy import GatePolicy, PolicyConfig
from logkey.gates.replay import WindowGates

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)

events = st.builds(
    lambda kind, ip, user, protocol, seconds, pack: Event(
        kind, ip, user, protocol, None if seconds is None else T0 + timedelta(seconds=seconds),
        pack, "r"),
    st.sampled_from([LOGIN, LOGIN, LOGOUT, CONNECT]),
    st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1", None]),
    st.sampled_from(["u1", "u2", None]),
    st.sampled_from(["pop3", "imap", "smtp", None]),
    st.one_of(st.none(), st.floats(0, 3000, allow_nan=False)),
    st.sampled_from(["dovecot", "courier"]))


@settings(max_examples=1500, deadline=None)
@given(st.lists(events, max_size=30), st.sampled_from([600.0, 30.0, 0.0, 1e-9]))
def test_window_gates_are_gate_policys(stream, window):
    policy = GatePolicy(PolicyConfig(window=window, never_gate=[], max_ips_per_user=0))
    replay = WindowGates(window)
    for e in stream:
        if e.time is not None:
            policy.on_event(e, e.time.timestamp())
        replay.on_event(e)
    assert {k: g.record for k, g in policy.gates.items()} == {
        r.key: r for r in replay.open_at(float("-inf"))}       # every gate kept, as records
    for seconds in (0, 500, 1500, 3000, 4000):
        at = (T0 + timedelta(seconds=seconds)).timestamp()
        want = sorted((g.record for g in policy.gates.values() if g.record.expires > at),
                      key=lambda r: (r.expires, r.key))
        assert replay.open_at(at) == want
