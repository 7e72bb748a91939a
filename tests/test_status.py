"""`logkey status` against real processes: a running `logkey watch` on temp files, a dir
store and a real redis-server (stopped for the broken case), exports, and the warnings that
apply. Every wait is bounded."""
import json
import os
import signal
import time

from conftest import free_port, run_logkey
from test_metrics import scrape
from test_watch import append, login, wait_for, write_config

STATUS_SECONDS = 15         # the watcher writes its status every 5 s; bounded waits use this


def status(cfg):
    """(exit status, the JSON report, the screen)."""
    proc = run_logkey("status", "--config", str(cfg), "--json")
    screen = run_logkey("status", "--config", str(cfg))
    assert screen.returncode == proc.returncode, (screen.stdout, proc.stdout)
    assert proc.stderr == b"", proc.stderr
    return proc.returncode, json.loads(proc.stdout), screen.stdout.decode()


def watch_status(tmp_path):
    try:
        return json.loads((tmp_path / "state" / "watch.status").read_text())
    except (OSError, ValueError):
        return {}


def test_status_all_well_then_warnings_then_the_watcher_stopped(tmp_path, watch):
    cfg = write_config(tmp_path, extra=f"exports: [{{format: text, path: {tmp_path}/gates.txt}}]\n")
    log = tmp_path / "mail.log"
    log.write_text(login("198.51.100.7"))
    w = watch(cfg)
    wait_for(lambda: "dovecot" in watch_status(tmp_path).get("last_event", {}),
             timeout=STATUS_SECONDS, what="the login in the watcher's status")
    wait_for(lambda: status(cfg)[0] == 0, timeout=STATUS_SECONDS, what="status OK")
    code, report, screen = status(cfg)
    assert report["ok"] and report["problems"] == [] and report["warnings"] == []
    assert report["watcher"]["state"] == "running" and report["watcher"]["pid"] == w.proc.pid
    [f] = report["files"]
    assert f["path"] == str(log) and f["state"] == "ok"
    assert f["offset"] == f["size"] == log.stat().st_size and f["behind"] == 0
    assert f["lines"] == 1
    assert report["last_event"]["dovecot"]["kind"] == "login"
    assert report["store"] == {"type": "dir", "where": str(tmp_path / "gates"),
                               "reachable": True, "open_gates": 1}
    assert [(e["format"], e["state"]) for e in report["exports"]] == [("text", "ok")]
    assert screen.startswith("logkey status: OK")
    assert "dovecot    last login" in screen and "1 open gate(s)" in screen

    os.chmod(log, 0o666)                    # SECURITY.md: anyone can forge login lines now
    code, report, screen = status(cfg)
    assert code == 0 and report["ok"]
    assert [w_ for w_ in report["warnings"] if str(log) in w_ and "every local user" in w_]
    assert f"warning   {log} is writable by every local user" in screen

    assert w.stop() == 0
    code, report, screen = status(cfg)
    assert code == 1 and report["watcher"]["state"] == "stopped"
    assert any(p.startswith("watcher: stopped") for p in report["problems"])
    assert screen.startswith("logkey status: BROKEN (1 problem)")

    w = watch(cfg)
    wait_for(lambda: watch_status(tmp_path).get("pid") == w.proc.pid
             and not watch_status(tmp_path).get("stopped"), timeout=STATUS_SECONDS,
             what="the new watcher's status")
    w.stop(signal.SIGKILL)
    code, report, _ = status(cfg)
    assert code == 1 and report["watcher"]["state"] == "dead"
    assert f"pid {w.proc.pid} is gone" in report["problems"][0]


def test_status_missing_and_unreadable_logs_and_a_stale_export(tmp_path, watch):
    (tmp_path / "isadir.log").mkdir()                   # open() fails: unreadable
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text("logs:\n" + "".join(f"  - path: {tmp_path}/{name}\n" for name in (
        "mail.log", "missing.log", "isadir.log", "rotated-*.log"))
        + f"store: {{type: dir, path: {tmp_path}/gates}}\nstate_dir: {tmp_path}/state\n"
        f"exports:\n  - {{format: text, path: {tmp_path}/gates.txt}}\n"
        f"  - {{format: exim, path: {tmp_path}/nodir/popgates}}\n")
    log = tmp_path / "mail.log"
    log.write_text("")
    watch(cfg)
    wait_for(lambda: (tmp_path / "gates.txt").exists(), what="the first export")
    append(log, login("198.51.100.9"))
    wait_for(lambda: watch_status(tmp_path).get("exports_changed"), timeout=STATUS_SECONDS,
             what="the export change in the watcher's status")
    old = time.time() - 3600                            # an export that was not brought up
    os.utime(tmp_path / "gates.txt", (old, old))        # to date (as if its write failed)
    code, report, screen = status(cfg)
    assert code == 1 and report["watcher"]["state"] == "running"
    states = {f["path"]: f["state"] for f in report["files"]}
    assert states == {str(log): "ok", f"{tmp_path}/missing.log": "missing",
                      f"{tmp_path}/isadir.log": "unreadable"}
    problems = "\n".join(report["problems"])
    assert f"log {tmp_path}/missing.log: missing" in problems
    assert f"log {tmp_path}/isadir.log: unreadable" in problems
    assert f"export text {tmp_path}/gates.txt: written 60m ago, but the gates changed" \
        in problems
    assert f"export exim {tmp_path}/nodir/popgates: {tmp_path}/nodir/popgates: No such file " \
        "or directory; its last update failed (see the watcher's log)" in problems
    assert f"logs: {tmp_path}/rotated-*.log matches no file" in report["warnings"]
    assert len(report["problems"]) == 4 and "BROKEN (4 problems)" in screen


def test_status_redis_reachable_then_stopped(tmp_path, watch, redis_server):
    port = free_port()
    cfg = write_config(tmp_path, store="{type: redis, url: '" + redis_server.url + "'}",
                       extra=f"metrics: {{watch: '127.0.0.1:{port}'}}\n")
    (tmp_path / "mail.log").write_text(login("198.51.100.40"))
    w = watch(cfg)
    wait_for(lambda: run_logkey("check", "--config", str(cfg), "198.51.100.40").returncode == 0,
             what="the gate in redis")
    wait_for(lambda: status(cfg)[0] == 0, timeout=STATUS_SECONDS, what="status OK")
    code, report, _ = status(cfg)
    assert report["store"]["reachable"] and report["store"]["open_gates"] == 1
    assert report["store"]["where"] == redis_server.url
    redis_server.stop()
    code, report, screen = status(cfg)
    assert code == 1 and not report["store"]["reachable"]
    assert any(p.startswith(f"store unreachable: redis store {redis_server.url}")   # the
               for p in report["problems"])     # watcher may have noticed first (writes_lost)
    assert "UNREACHABLE" in screen
    # the watcher's side of the outage, in its metrics: a login it cannot write yet
    append(tmp_path / "mail.log", login("198.51.100.41"))
    wait_for(lambda: "store unavailable" in w.log(), what="the watcher's outage")
    # the gauges are set at the watcher's pass after the failed write: wait for it (.41; and
    # .40 once a retry has queued every gate again: the watcher may notice the outage before
    # .41's write)
    wait_for(lambda: scrape(port)["logkey_watch_gates_pending"][()] in (1, 2),
             what="the pending gate in the metrics")
    metrics = scrape(port)
    assert metrics["logkey_watch_store_up"][(("type", "redis"),)] == 0
    assert metrics["logkey_watch_store_errors_total"][()] >= 1
    redis_server.start()
    wait_for(lambda: scrape(port)["logkey_watch_store_up"][(("type", "redis"),)] == 1,
             timeout=40, what="the store back in the metrics")
    assert scrape(port)["logkey_watch_store_retries_total"][()] >= 1


def test_status_of_a_policy_only_host_and_a_bad_config(tmp_path):
    (tmp_path / "gates").mkdir(mode=0o750)
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"store: {{type: dir, path: {tmp_path}/gates}}\nstate_dir: {tmp_path}/state\n"
                   "metrics: {policy: '192.0.2.1:9470'}\n")
    code, report, _ = status(cfg)
    assert code == 0 and report["watcher"] == {"state": "not needed"}
    assert report["warnings"] == ["metrics.policy 192.0.2.1:9470 is not a loopback address: "
                                  "whoever reaches it reads the metrics (log file names, counts)"]
    cfg.write_text(f"store: {{type: dir, path: {tmp_path}/nogates}}\nlogs: [{tmp_path}/m.log]\n"
                   f"state_dir: {tmp_path}/state\n")
    code, report, _ = status(cfg)
    assert code == 1 and not (tmp_path / "nogates").exists()       # reported, not created
    assert report["problems"] == [
        f"watcher: no status in {tmp_path}/state: logkey watch has not run with this "
        "configuration",
        f"log {tmp_path}/m.log: missing",
        f"store: {tmp_path}/nogates does not exist (logkey watch creates it)"]
    cfg.write_text("metrics: {watch: nowhere}\n")
    proc = run_logkey("status", "--config", str(cfg))
    assert proc.returncode == 2 and proc.stderr.decode().count("\n") == 1
