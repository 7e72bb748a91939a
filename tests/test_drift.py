"""The format drift alarm (logkey/daemon/drift.py): lines of a pack's programs that look like logins
while the pack reads none. Pure rules first; then real Dovecot 2.4 captures replayed into a
real `logkey watch` against the 2.3-only rules (tests/fixtures/packs-dovecot-2.3-only, a local
pack overriding the shipped one): the watcher's warning, the metric, `logkey status` and
`--json`; the same captures against the shipped pack: no alarm; and lines of a login shape no
pack knows: the alarm on the shipped pack too. Every wait is bounded."""
import json
import logging
import re
import time

import pytest

from conftest import ROOT, free_port, run_logkey, wait_for
from logkey.daemon import drift
from logkey.daemon.drift import DriftAlarm
from logkey.parse.engine import Engine
from logkey.parse.headers import Clock
from logkey.parse.packfiles import load_packs
from test_journal import DOVECOT, Journal, config
from test_metrics import scrape
from test_status import status, watch_status

CAPTURED = ROOT / "tests" / "fixtures" / "captured"
OLD_PACK = ROOT / "tests" / "fixtures" / "packs-dovecot-2.3-only"
WARNING = re.compile(r"^<4>pack dovecot: (\d+) line\(s\) of its programs since .* look like "
                     r"logins but match no rule", re.M)


# --- the rules, pure ----------------------------------------------------------------------------
def test_a_near_miss_with_no_login_raises_the_alarm_and_the_next_login_ends_it():
    d = DriftAlarm()
    d.near_miss(("dovecot",), ("mail.log", 3), "dovecot: imap-login: Logged in: x", 1000.0)
    d.near_miss(("dovecot",), ("mail.log", 4), "dovecot: pop3-login: Logged in: y", 1001.0)
    assert d.snapshot() == {"dovecot": {"lines": 2, "since": 1000.0, "total": 2,
                                        "example": "mail.log:3: dovecot: imap-login: Logged in: x"}}
    d.login("dovecot", 1002.0)
    assert d.snapshot()["dovecot"] == {"lines": 0, "since": None, "example": None, "total": 2}


def test_an_odd_line_among_logins_raises_nothing_an_hour_without_logins_does():
    d = DriftAlarm()
    d.login("dovecot", 1000.0)
    d.near_miss(("dovecot",), None, "dovecot: imap-login: odd login line", 1000.0 + 3599)
    assert d.snapshot() == {}
    d.near_miss(("dovecot",), None, "dovecot: imap-login: odd login line", 1000.0 + 3600)
    assert d.snapshot()["dovecot"]["lines"] == 1


def test_the_warning_is_rate_limited_per_pack(caplog):
    d = DriftAlarm()
    caplog.set_level(logging.WARNING, "logkey")
    for t in (0.0, 10.0):
        d.near_miss(("dovecot", "site"), None, "dovecot: x login", t)
    d.tick(20.0)
    d.tick(20.0 + drift.WARN_EVERY - 1)
    d.near_miss(("dovecot",), None, "dovecot: x login", 30.0)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["pack dovecot", "pack site"]
    d.tick(20.0 + drift.WARN_EVERY)
    assert len(caplog.records) == 4
    assert "pack dovecot: 3 line(s)" in caplog.records[2].getMessage()


def test_the_example_is_escaped_and_cut():
    d = DriftAlarm()
    d.near_miss(("dovecot",), ("f", 1), "dovecot: login \x1b[2J\udcff " + "x" * 400, 0.0)
    example = d.snapshot()["dovecot"]["example"]
    assert "\x1b" not in example and "\\x1b[2J\\xff" in example
    assert example.endswith("x...") and "x" * 400 not in example    # cut at EXAMPLE_MAX


@pytest.mark.parametrize("line, near_miss", [
    ("Dec  2 05:37:01 mail dovecot: pop3-login: Logged in: user=<a>, method=PLAIN, "
     "rip=198.51.100.2, lip=127.0.0.1, mpid=1, session=<AAAAAAAAAAAAAAAA>", True),
    ("Dec  2 05:37:01 mail dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 "
     "secs): user=<a>, method=PLAIN, rip=198.51.100.4, lip=127.0.0.1", False),    # a failure
    ("Dec  2 05:37:01 mail dovecot: auth: passwd-file(a,198.51.100.4): Password mismatch", False),
    ("Dec  2 05:37:01 mail dovecot: pop3-login: Login: user=<a>, method=PLAIN, "
     "rip=198.51.100.2, lip=127.0.0.1, mpid=1, session=<AAAAAAAAAAAAAAAA>", False),  # a login
    ("Dec  2 05:37:01 mail postfix/smtpd[1]: Logged in: user=<a>", False),     # no pack's tag
])
def test_only_near_misses_of_a_covered_program_count(line, near_miss):
    engine = Engine(load_packs(local_dir=str(OLD_PACK)), Clock(None))
    engine.match_line(line.encode(), ("mail.log", 1))
    assert (engine.near_miss is not None) == near_miss
    if near_miss:
        assert engine.near_miss[0] == ("dovecot",)


# --- real 2.4 captures in a real watcher -----------------------------------------------------
def journald_capture() -> str:
    """tests/fixtures/captured/dovecot-2.4-journald-257.jsonl as syslog lines: the entries of
    dovecot.service (not the forgery), with journald's receive time."""
    out = []
    for rec in map(json.loads, (CAPTURED / "dovecot-2.4-journald-257.jsonl").read_text()
                   .splitlines()):
        if rec.get("_SYSTEMD_UNIT") == "dovecot.service":
            t = int(rec["__REALTIME_TIMESTAMP"]) / 1e6
            out.append(time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))
                       + f" mail dovecot: {rec['MESSAGE']}\n")
    return "".join(out)


CAPTURES = {           # the real Dovecot 2.4.1 captures (Debian 13), by how they were logged
    "syslog": lambda: (CAPTURED / "dovecot-2.4-syslog-traditional.log").read_text(),
    "rfc3339": lambda: (CAPTURED / "dovecot-2.4-syslog-rfc3339.log").read_text(),
    "log_path": lambda: (CAPTURED / "dovecot-2.4-logpath.log").read_text(),
    "journald": journald_capture,
}


def replay(tmp_path, watch, text, local_pack: bool):
    """A running watcher (metrics on) that read `text` appended to its log: (watcher, port,
    config, log)."""
    port = free_port()
    log = tmp_path / "mail.log"
    log.write_text("")
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs: [{log}]\nstore: {{type: dir, path: {tmp_path}/gates}}\n"
                   f"state_dir: {tmp_path}/state\nmetrics: {{watch: '127.0.0.1:{port}'}}\n"
                   + (f"patterns_dir: {OLD_PACK}\n" if local_pack else ""))
    w = watch(cfg)
    log.write_text(text)
    lines = text.count("\n")
    wait_for(lambda: watch_status(tmp_path).get("lines") == lines, timeout=20,
             what=f"the watcher's status after {lines} lines")
    return w, port, cfg, log


@pytest.mark.parametrize("capture", ["syslog", "journald"])
def test_2_4_capture_against_2_3_only_rules_raises_the_alarm(tmp_path, watch, capture):
    text = CAPTURES[capture]()
    w, port, cfg, log = replay(tmp_path, watch, text, local_pack=True)
    dry = run_logkey("dry-run", "--json", "--config", str(cfg), str(log), check=0)
    summary = json.loads(dry.stdout.decode().splitlines()[-1])
    assert summary["events"]["login"] == 0 and summary["near_misses"] > 0    # 2.3 rules: blind
    n = summary["near_misses"]

    samples = scrape(port)
    assert samples["logkey_watch_format_drift_lines_total"][(("pack", "dovecot"),)] == n
    assert samples["logkey_watch_format_drift"][(("pack", "dovecot"),)] == 1

    code, report, screen = status(cfg)
    [warning] = [x for x in report["warnings"] if "format drift" in x]
    assert warning.startswith(f"pack dovecot: format drift? {n} line(s) of its programs since ")
    assert "docs/troubleshooting.md" in warning and "logkey dry-run" in warning
    assert report["drift"]["dovecot"]["lines"] == n
    example = report["drift"]["dovecot"]["example"]
    assert example.startswith(f"{log}:") and "-login: " in example
    assert f"warning   pack dovecot: format drift? {n} line(s)" in screen     # (the age may
    assert f"{example}. Run `logkey dry-run`" in screen and code == 0  # differ: a 2nd run)

    assert w.stop() == 0
    assert [int(c) for c in WARNING.findall(w.log())] == [n]     # one warning, with the count


@pytest.mark.parametrize("capture", sorted(CAPTURES))
def test_2_4_capture_against_the_shipped_pack_raises_nothing(tmp_path, watch, capture):
    w, port, cfg, log = replay(tmp_path, watch, CAPTURES[capture](), local_pack=False)
    snap = watch_status(tmp_path)
    assert snap["events"]["dovecot"]["login"] >= 2                 # the pack reads 2.4 logins
    assert not any(d["lines"] for d in snap["drift"].values())
    assert scrape(port).get("logkey_watch_format_drift", {}).get((("pack", "dovecot"),), 0) == 0
    code, report, screen = status(cfg)
    assert report["drift"] == {} and not any("format drift" in x for x in report["warnings"])
    assert w.stop() == 0
    assert not WARNING.search(w.log())


def test_an_unknown_login_shape_raises_the_alarm_on_the_shipped_pack(tmp_path, watch):
    """The 2.4 capture with its login lines reworded as no pack knows them: the next upgrade."""
    text = re.sub(r"-login: (?:Login|Logged in): ", "-login: Signed on: ", journald_capture())
    assert text.count("Signed on: ") >= 2
    w, port, cfg, log = replay(tmp_path, watch, text, local_pack=False)
    code, report, screen = status(cfg)
    assert any(x.startswith("pack dovecot: format drift? ") for x in report["warnings"])
    assert "Signed on: " in report["drift"]["dovecot"]["example"]
    assert w.stop() == 0
    assert len(WARNING.findall(w.log())) == 1


def test_the_journal_source_raises_the_alarm_too(tmp_path):
    """The 2.4 capture's messages as journal entries of dovecot.service, read by `watch --once`
    against the 2.3-only rules: the same alarm, its example naming the journal source."""
    j = Journal(tmp_path / "journal")
    now = time.time()
    messages = [line.split(" dovecot: ", 1)[1] for line in journald_capture().splitlines()]
    j.write(*(j.entry(DOVECOT, m, now - 60 + i) for i, m in enumerate(messages)))
    cfg = config(tmp_path, extra=f"patterns_dir: {OLD_PACK}\n")
    proc = run_logkey("watch", "--once", "--config", str(cfg), check=0)
    assert proc.returncode == 0, proc.stderr
    assert len(WARNING.findall(proc.stderr.decode())) == 1
    code, report, screen = status(cfg)
    assert report["drift"]["dovecot"]["lines"] >= 2
    assert report["drift"]["dovecot"]["example"].startswith(f"journal:{tmp_path / 'journal'}")
    assert any(x.startswith("pack dovecot: format drift? ") for x in report["warnings"])
