"""The dovecot pack on what a real Dovecot 2.4 wrote (Debian 13's dovecot 2.4.1 through its
rsyslog in both file formats, and to its own log_path), kept in tests/fixtures/captured/ by
tools/capture/dovecot24.sh with each run's ledger: the clients' own account of every login
they tried (address, protocol, user, accepted or not; tools/capture/dovecot_drive.py).

Every accepted login comes out as exactly one login event with its address, protocol and user,
and nothing else does: not a refused login, not an unknown user, and not a user name built to
carry another address (a name holding ", " makes dovecot's Login line repeat `rip=`, and the
pack refuses the line whole). Every line that gives no event is a known non-event (a failure,
an auth process line, a pre-auth disconnect), never a near-miss."""
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, run_logkey

CAPTURED = ROOT / "tests" / "fixtures" / "captured"
LOGS = sorted(CAPTURED.glob("dovecot-2.4-*.log"))


def dry_run(log: Path) -> list[dict]:
    proc = run_logkey("dry-run", "--pack", "dovecot", "--json", "--now",
                      "2026-12-31T00:00:00+00:00", str(log), check=0)
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_the_captures_are_there():
    names = {p.name for p in LOGS}
    assert {"dovecot-2.4-syslog-traditional.log", "dovecot-2.4-syslog-rfc3339.log",
            "dovecot-2.4-logpath.log", "dovecot-2.4-logpath-static.log"} <= names
    for log in LOGS:
        assert log.with_suffix(".ledger.json").is_file(), log


@pytest.mark.parametrize("log", LOGS, ids=[p.stem for p in LOGS])
def test_every_real_login_gives_its_event_and_nothing_false(log: Path):
    ledger = json.loads(log.with_suffix(".ledger.json").read_text())
    records = dry_run(log)
    logins = Counter((r["ip"], r["protocol"], r["user"]) for r in records
                     if r.get("type") == "event" and r["event"] == "login")
    # user names with the fields separator ", " make the line ambiguous: refused whole
    expected = Counter((e["ip"], e["protocol"], e["user"]) for e in ledger
                       if e["ok"] and ", " not in e["user"]
                       and not re.search(r"[\x00-\x1f]", e["user"]))
    assert logins == expected
    accepted = {(e["ip"], e["protocol"]) for e in ledger if e["ok"]}
    for r in records:              # a logout has its login's address, or none at all
        if r.get("type") == "event":
            assert (r["ip"], r["protocol"]) in accepted or (
                r["event"] == "logout" and r["ip"] is None), r


@pytest.mark.parametrize("log", LOGS, ids=[p.stem for p in LOGS])
def test_lines_without_an_event_are_known_non_events(log: Path):
    summary = [r for r in dry_run(log) if r.get("type") == "summary"][-1]
    assert summary["near_misses"] == 0
    assert summary["unparsed"] == 0


def test_the_captures_hold_what_the_pack_must_survive():
    """The shapes the samples are about really are in the captures (a re-capture that lost one
    would leave the pack's 2.4 samples unchecked against a real run)."""
    text = {p.name: p.read_text() for p in LOGS}
    trad = text["dovecot-2.4-syslog-traditional.log"]
    assert "pop3-login: Logged in: user=<test>, method=APOP, rip=127.0.0.20" in trad
    assert re.search(r"imap-login: Logged in: user=<test>, method=PLAIN, rip=::1, lip=::1, ", trad)
    assert "imap-login: Logged in: user=<x>, method=PLAIN, rip=127.0.0.9, " in trad
    assert re.search(r"auth\(test,127\.0\.0\.4,sasl:plain\)<[^>]+>: passwd-file: Password mismatch", trad)
    assert "Login aborted: Logged out (auth failed, 1 attempts in 2 secs) (auth_failed)" in trad
    assert "Disconnected: User kicked" in trad and "Disconnected: Server shutting down" in trad
