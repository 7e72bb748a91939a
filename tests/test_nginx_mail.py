"""A real nginx mail proxy (Debian 12's nginx + libnginx-mod-mail, unpacked by .ci/nginx-mail.sh)
in front of a private dovecot: its syslog lines give exactly the logins that succeeded, with the
client's address, never the upstream's or an address in a login name; its own error_log file
gives none (a newline in a login name writes a line of the client's choosing there)."""
import json
import os
import sys

import pytest

from conftest import ROOT, run_logkey

sys.path.insert(0, str(ROOT / "tools" / "capture"))
import nginx_mail  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the servers run as root (as in CI)")


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    root = nginx_mail.nginx_root()
    if root is None:
        pytest.fail("nginx with the mail module is missing: run .ci/nginx-mail.sh")
    return nginx_mail.capture(tmp_path_factory.mktemp("nginx"), root)


def events(*args):
    out = run_logkey("dry-run", "--json", *args, check=0, env={"TZ": "UTC"})
    rows = [json.loads(x) for x in out.stdout.decode().splitlines()]
    return [r for r in rows if r["type"] == "event"], rows[-1]


def test_logins_through_the_proxy(captured, tmp_path):
    ledger = captured["ledger"]
    assert [r["ok"] for r in ledger] == [r["expected"] for r in ledger[:-1]] + [False], ledger
    got, summary = events("--pack", "nginx-mail", str(captured["syslog"]))
    logins = sorted((e["ip"], e["protocol"]) for e in got if e["event"] == "login")
    want = sorted((r["ip"], r["protocol"].split("-")[0]) for r in ledger
                  if r["ok"] and r["protocol"] in ("pop3", "imap", "imap-literal"))
    assert logins == want
    assert all(e["ip"] not in ("6.6.6.6", "127.0.0.1", "127.0.0.77") for e in got)
    assert summary["near_misses"] == 0


def test_a_site_port_is_named_in_services(captured, tmp_path):
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f'services: {{nginx-mail: {{"{captured["port"]}": pop3}}}}\n')
    got, _ = events("--config", str(cfg), "--pack", "nginx-mail", str(captured["syslog"]))
    assert ("127.0.0.27", "pop3") in {(e["ip"], e["protocol"]) for e in got}


def test_the_own_error_log_is_not_read(captured):
    text = captured["error_log"].read_text(errors="replace")
    assert "\n2026/" in text or "client: 6.6.6.6" in text      # the newline login split a line
    got, _ = events("--pack", "nginx-mail", str(captured["error_log"]))
    assert got == []
