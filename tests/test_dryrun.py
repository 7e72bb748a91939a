"""`logkey dry-run` as an administrator runs it: files, stdin, .gz, JSON Lines, exit codes."""
import gzip
import json
import re

import pytest

from conftest import NOW, ROOT, SHARED_SAMPLES, run_logkey

DOVECOT_LOGIN = ("Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
                 "rip=198.51.100.7, lip=192.0.2.1, mpid=4711, TLS, session=<PeYcgjjOGOisEQAB>\n")
VCHKPW_LOGIN = "Nov 27 11:00:00 mail vpopmail[42]: vchkpw-pop3: (PLAIN) login success bob@example.net:203.0.113.5\n"
POSTFIX = "Nov 27 10:00:01 mail postfix/smtpd[4242]: connect from unknown[203.0.113.66]\n"
EVENT_KEYS = {"type", "file", "line", "event", "pack", "protocol", "user", "ip", "time"}


def jsonl(proc):
    return [json.loads(x) for x in proc.stdout.decode().splitlines()]


def test_json_lines_exact_keys(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(POSTFIX + DOVECOT_LOGIN + POSTFIX + VCHKPW_LOGIN)
    out = jsonl(run_logkey("dry-run", "--json", "--now", NOW, str(log), check=0,
                           env={"TZ": "UTC"}))
    events, summary = out[:-1], out[-1]
    assert [set(e) for e in events] == [EVENT_KEYS, EVENT_KEYS]
    assert events[0] == {"type": "event", "file": str(log), "line": 2, "event": "login",
                         "pack": "dovecot", "protocol": "pop3", "user": "alice",
                         "ip": "198.51.100.7", "time": "2026-11-27T10:00:00+00:00"}
    assert events[1]["ip"] == "203.0.113.5" and events[1]["line"] == 4
    assert events[1]["pack"] == "qmail" and events[1]["protocol"] == "pop3"
    assert summary["type"] == "summary"
    assert summary["lines"] == 4
    assert summary["events"] == {"login": 2, "logout": 0}
    assert summary["formats"] == {"rfc3164": 4}


def test_stdin_and_gzip(tmp_path):
    gz = tmp_path / "mail.log.1.gz"
    with gzip.open(gz, "wt") as f:
        f.write(POSTFIX * 3 + VCHKPW_LOGIN)
    out = jsonl(run_logkey("dry-run", "--json", "--now", NOW, "-", str(gz),
                           stdin=DOVECOT_LOGIN.encode(), check=0))
    assert [(e["file"], e["line"], e["ip"]) for e in out[:-1]] == [
        ("-", 1, "198.51.100.7"), (str(gz), 4, "203.0.113.5")]
    assert out[-1]["files"] == 2 and out[-1]["lines"] == 5


def test_human_report(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(POSTFIX + DOVECOT_LOGIN + "garbage line\n"
                   + "Nov 27 10:00:02 mail dovecot: pop3-login: Authenticated user bob from 1.2.3.4\n")
    out = run_logkey("dry-run", "--now", "2026-11-27T10:05:00+00:00", str(log), check=0)
    text = out.stdout.decode()
    assert "Lines read: 4" in text
    assert "unparsed       1" in text
    assert "Near-misses: 1" in text and f"{log}:4" in text
    assert "198.51.100.7" in text.split("Gates open at")[1]


def test_gates_open_at_the_end_follow_the_window(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(DOVECOT_LOGIN + VCHKPW_LOGIN)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window: 10m\n")
    s = jsonl(run_logkey("dry-run", "--json", "--config", str(cfg), "--now",
                         "2026-11-27T11:05:00+00:00", str(log), check=0))[-1]
    assert [g["ip"] for g in s["open_gates"]] == ["203.0.113.5"]
    s = jsonl(run_logkey("dry-run", "--json", "--config", str(cfg), str(log),
                         env={"TZ": "UTC"}, check=0))[-1]
    assert re.fullmatch(r"\d{4}-11-27T11:00:00\+00:00", s["at"])     # the last line's time
    assert [g["ip"] for g in s["open_gates"]] == ["203.0.113.5"]


@pytest.mark.parametrize("args, needle", [
    (["dry-run", "/nonexistent/mail.log"], "/nonexistent/mail.log: No such file"),
    (["dry-run", "--pack", "nosuchpack", "x"], "no pack named 'nosuchpack'"),
    (["dry-run", "--now", "yesterday", "x"], "--now: 'yesterday' is not an ISO 8601"),
    (["dry-run", "--config", "/nonexistent.yaml", "x"], "/nonexistent.yaml: no such file"),
    (["dry-run", "/"], "/: is a directory"),
])
def test_errors_are_one_line_and_exit_2(args, needle):
    proc = run_logkey(*args)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert needle in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_config_key_exits_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("windw: 10\n")
    proc = run_logkey("dry-run", "--config", str(cfg), "-", stdin=b"")
    assert proc.returncode == 2
    assert proc.stderr.decode() == f"logkey: {cfg}: windw: unknown key (known: " + \
        proc.stderr.decode().split("(known: ")[1]


def test_config_from_environment(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window: nonsense\n")
    proc = run_logkey("dry-run", "-", stdin=b"", env={"LOGKEY_CONFIG": str(cfg)})
    assert proc.returncode == 2 and "window:" in proc.stderr.decode()


def test_bad_local_pack_exits_2(tmp_path):
    (tmp_path / "bad.yaml").write_text("programs: [x]\nevents:\n  - {id: a, kind: login, "
                                       "protocol: pop3, regex: '^.* (?P<ip>[0-9.]{7,15})$'}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"patterns_dir: {tmp_path}\n")
    proc = run_logkey("dry-run", "--config", str(cfg), "-", stdin=b"")
    assert proc.returncode == 2
    assert f"{tmp_path}/bad.yaml: events[0] (a): unbounded wildcard" in proc.stderr.decode()


def test_packs_test_and_list():
    proc = run_logkey("packs", "test", check=0)
    assert proc.stdout.decode().rstrip().splitlines()[-1].endswith(" 0 failed")
    proc = run_logkey("packs", "list", check=0)
    listed = {line.split(":")[0] for line in proc.stdout.decode().splitlines()
              if line and not line.startswith(" ")}
    assert listed == {p.stem for p in (ROOT / "patterns").glob("*.yaml")}   # all shipped


def test_help_and_version():
    assert run_logkey("--version", check=0).stdout.decode().startswith("logkey ")
    for sub in (["dry-run"], ["packs"], ["packs", "test"], ["packs", "list"], ["watch"],
                ["config"], ["config", "check"], ["gates"], ["open"], ["close"], ["check"],
                ["purge"]):
        assert run_logkey(*sub, "--help", check=0).stdout


@pytest.mark.skipif(not SHARED_SAMPLES.is_dir(), reason="shared samples not beside the project")
def test_shared_samples_injection_opens_only_the_real_login():
    out = jsonl(run_logkey("dry-run", "--json", "--now", NOW,
                           str(SHARED_SAMPLES / "synthetic-injection.log"), check=0))
    assert [(e["event"], e["ip"], e["user"]) for e in out[:-1]] == [
        ("login", "198.51.100.7", "alice")]


def test_bundled_sample_logs():
    logs = sorted((ROOT / "tests" / "logs").glob("*.log"))
    assert logs
    out = jsonl(run_logkey("dry-run", "--json", "--now", NOW, *map(str, logs), check=0))
    s = out[-1]
    assert s["events"]["login"] > 0 and s["unparsed"] == 0


@pytest.mark.parametrize("order", [("popa3d-syslog.log", "tcpserver-multilog.log"),
                                   ("tcpserver-multilog.log", "popa3d-syslog.log")])
def test_pid_join_spans_two_files_in_either_order(order):
    files = [str(ROOT / "tests" / "logs" / name) for name in order]
    out = jsonl(run_logkey("dry-run", "--json", "--now", NOW, *files, check=0))
    logins = sorted((e["ip"], e["user"], e["pack"]) for e in out[:-1] if e["event"] == "login")
    assert logins == [("127.0.0.2", "lktest", "popa3d"), ("127.0.0.9", "lktest", "popa3d")]
    completing = {e["file"] for e in out[:-1]}
    assert completing == {files[1]}          # emitted at the line that completes the pair


def test_parallel_and_serial_reading_agree(tmp_path, monkeypatch):
    """A large file is matched by worker processes; the report must be the same."""
    import io
    from datetime import datetime, timezone

    from logkey.sources import bulk
    from logkey.commands import dryrun
    from logkey.parse.headers import Clock
    from logkey.parse.packfiles import load_packs

    log = tmp_path / "big.log"
    src = (ROOT / "tests" / "logs" / "mail.log").read_bytes() + \
        (ROOT / "tests" / "fixtures" / "captured" / "courier-5.0.13.log").read_bytes()
    with open(log, "wb") as f:
        for _ in range(400):
            f.write(src)
            f.write(b"x" * 70000 + b"\n")           # a too-long line now and then
    packs = load_packs()

    def report(parallel_min):
        monkeypatch.setattr(bulk, "PARALLEL_MIN_BYTES", parallel_min)
        monkeypatch.setattr(bulk, "CHUNK_MIN_BYTES", 1 << 20)
        out = io.StringIO()
        dryrun.run([str(log)], packs, Clock(datetime(2026, 11, 28, tzinfo=timezone.utc)),
                             window=600, join_window=600, json_out=True, out=out)
        return out.getvalue()

    serial = report(1 << 40)
    parallel = report(1)
    assert serial == parallel
    assert serial.count('"type": "event"') == 400 * (13 + 8)
    assert "127.0.0.6" not in serial and '"cut_fragments": 2400' in serial


def test_stamps_at_the_ends_of_the_datetime_range(tmp_path, monkeypatch):
    """Logins stamped at the ends of datetime's range are reported, in one process and through
    the workers alike, not a crash."""
    import io
    from datetime import datetime, timezone

    from logkey.sources import bulk
    from logkey.commands import dryrun
    from logkey.parse.headers import Clock
    from logkey.parse.packfiles import load_packs

    from test_hostile import edge_stamp_log

    log = edge_stamp_log(tmp_path / "edge.log")

    def report(parallel_min):
        monkeypatch.setattr(bulk, "PARALLEL_MIN_BYTES", parallel_min)
        out = io.StringIO()
        summary = dryrun.run([str(log)], load_packs(),
                             Clock(datetime(2026, 11, 28, tzinfo=timezone.utc)),
                             window=600, join_window=600, json_out=True, out=out)
        return out.getvalue(), summary

    serial, summary = report(1 << 40)
    assert report(1)[0] == serial
    assert summary["events"]["login"] == 3
    assert summary["at"] == "9999-12-31T23:59:59-01:00"
    assert summary["open_gates"] == [{"ip": "198.51.100.7", "user": "u", "protocol": "pop3",
                                      "until": "9999-12-31T23:59:59.999999-01:00"}]


def test_own_file_reads_every_line_of_a_large_file(tmp_path):
    """--own-file: qpopper's trace file, untagged lines, beyond one 4096-line batch."""
    log = tmp_path / "popper.trace"
    with open(log, "w") as f:
        for i in range(10000):
            f.write(f"Mon Nov 27 10:{i // 600 % 60:02d}:{i // 10 % 60:02d} 2026 [{1000 + i}] "
                    f"(v4.0.5) POP login by user \"u{i}\" at (h.example) 198.51.{i // 250 % 256}.{i % 250 + 1}\n")
    out = jsonl(run_logkey("dry-run", "--json", "--own-file", "qpopper", "--now", NOW, str(log),
                           check=0))
    assert out[-1]["lines"] == 10000
    assert out[-1]["events"]["login"] == 10000, out[-1]
    assert out[9999]["line"] == 10000 and out[9999]["ip"] == "198.51.39.250"
