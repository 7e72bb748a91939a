"""The dovecot pack on the logs the end-to-end suite's real servers wrote (dovecot's own log
file, through rsyslog in both file formats, across rotations and restarts), kept in
tests/fixtures/e2e/ by tools/capture/e2e.sh with each run's ledger: the clients' own account
of every login they tried (address, protocol, user, accepted or not).

Every accepted login by a plain user name must come out as a login event with that address,
protocol and user; nothing else may (refused logins, unknown users, and user names built to
look like another address, which dovecot's pack refuses whole when they repeat `rip=`)."""
import json
import re
from pathlib import Path

import pytest

from conftest import ROOT, run_logkey

FIXTURES = ROOT / "tests" / "fixtures" / "e2e"
LOGS = sorted(FIXTURES.glob("*.log"))


def test_the_fixtures_are_there():
    assert len(LOGS) >= 10, "tools/capture/e2e.sh writes them"


@pytest.mark.parametrize("log", LOGS, ids=[p.stem for p in LOGS])
def test_dovecot_pack_on_what_real_servers_wrote(log: Path):
    ledger = json.loads(log.with_suffix(".ledger.json").read_text())
    proc = run_logkey("dry-run", "--pack", "dovecot", "--json", "--now",
                      "2026-12-31T00:00:00+00:00", str(log), check=0)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    logins = {(r["ip"], r["protocol"], r["user"]) for r in records
              if r.get("type") == "event" and r["event"] == "login"}
    expected = {(e["ip"], e["protocol"], e["user"]) for e in ledger
                if e["ok"] and re.fullmatch(r"[A-Za-z0-9._-]+", e["user"])}
    assert logins == expected
    tried = {e["ip"] for e in ledger}
    for r in records:            # no address the clients did not use (a logout whose login
        if r.get("type") == "event":                 # line was refused has none at all)
            assert r["ip"] in tried or (r["event"] == "logout" and r["ip"] is None), r
