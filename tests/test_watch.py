"""`logkey watch` as a real process on real files, with the dir store and a real redis-server:
gates open from fresh login lines, stale ones open nothing, kill -9 and restart, SIGHUP with a
bad file, Redis stopped and restarted under the watcher. Every wait is bounded."""
import json
import os
import signal
import subprocess
import sys
import time


from conftest import ROOT, run_logkey, wait_for

LOGIN = ("{stamp} mail dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, rip={ip}, "
         "lip=192.0.2.1, mpid=1, session=<{session}>\n")


def stamp(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t if t is not None else time.time()))


def login(ip, user="alice", t=None, session=None):
    return LOGIN.format(stamp=stamp(t), user=user, ip=ip, session=session or f"s{ip}")


def write_config(tmp_path, extra="", store=None, window="10m"):
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs:\n  - path: {tmp_path}/mail.log\n"
                   f"store: {store or '{type: dir, path: ' + str(tmp_path / 'gates') + '}'}\n"
                   f"state_dir: {tmp_path}/state\nwindow: {window}\n" + extra)
    return cfg


def append(path, text):
    with open(path, "a") as f:
        f.write(text)


def logkey_cmd():
    exe = os.environ.get("LOGKEY_EXE")
    return [exe] if exe else [sys.executable, "-m", "logkey"]


def Watch(cfg, *args):
    """A `logkey watch` process, not waited for (servers.Logkey, shared with the e2e suite)."""
    from servers import Logkey
    return Logkey("watch", cfg, *args).spawn()


def is_open(cfg, ip):
    return run_logkey("check", "--config", str(cfg), ip).returncode == 0


def gate_file(tmp_path, ip):
    return tmp_path / "gates" / ip


def test_live_login_opens_a_gate_and_sigterm_stops_cleanly(tmp_path, watch):
    cfg = write_config(tmp_path)
    log = tmp_path / "mail.log"
    log.write_text("")
    w = watch(cfg)
    append(log, login("198.51.100.7"))
    wait_for(lambda: gate_file(tmp_path, "198.51.100.7").exists(), what="gate file")
    assert is_open(cfg, "198.51.100.7") and not is_open(cfg, "198.51.100.8")
    mtime = gate_file(tmp_path, "198.51.100.7").stat().st_mtime
    assert time.time() + 500 < mtime <= time.time() + 601
    record = json.loads(gate_file(tmp_path, "198.51.100.7").read_text())
    assert record["user"] == "alice" and record["source"].endswith("mail.log:1")
    assert w.stop() == 0
    state = [json.loads(p.read_text()) for p in (tmp_path / "state").iterdir()
             if p.suffix == ".json" or p.is_file()]
    assert any(s.get("offset") == log.stat().st_size for s in state), state


def test_stale_and_refused_logins_open_nothing(tmp_path):
    cfg = write_config(tmp_path)
    (tmp_path / "mail.log").write_text(
        login("198.51.100.1", t=time.time() - 700)          # older than the window
        + login("127.0.0.1")                                # never_gate
        + login("198.51.100.2"))
    assert run_logkey("watch", "--config", str(cfg), "--once").returncode == 0
    assert sorted(p.name for p in (tmp_path / "gates").iterdir()) == ["198.51.100.2"]


def saved_offset(tmp_path):
    offsets = []
    for p in (tmp_path / "state").glob("*.json"):          # not the temp files
        try:
            offsets.append(json.loads(p.read_text()).get("offset"))
        except (ValueError, OSError):
            pass
    return max(offsets, default=None)


def test_kill_9_then_restart_loses_nothing_and_reopens_nothing_stale(tmp_path, watch):
    cfg = write_config(tmp_path)
    log = tmp_path / "mail.log"
    log.write_text("")
    w = watch(cfg)
    append(log, login("198.51.100.10"))
    wait_for(lambda: gate_file(tmp_path, "198.51.100.10").exists(), what="first gate")
    wait_for(lambda: saved_offset(tmp_path) == log.stat().st_size, what="offset saved")
    w.stop(signal.SIGKILL)
    append(log, login("198.51.100.11"))                     # written while logkey is down
    gate_file(tmp_path, "198.51.100.10").unlink()           # closed by hand meanwhile
    w = watch(cfg)
    wait_for(lambda: gate_file(tmp_path, "198.51.100.11").exists(), what="gate after restart")
    time.sleep(0.5)
    assert not gate_file(tmp_path, "198.51.100.10").exists()   # its line is not read again
    assert w.stop() == 0


def test_sighup_with_a_bad_file_keeps_running(tmp_path, watch):
    cfg = write_config(tmp_path)
    log = tmp_path / "mail.log"
    log.write_text("")
    w = watch(cfg)
    good = cfg.read_text()
    cfg.write_text(good + "windw: 5\n")
    w.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in w.log(), what="refusal in the log")
    append(log, login("198.51.100.20"))
    wait_for(lambda: gate_file(tmp_path, "198.51.100.20").exists(), what="gate after refusal")
    cfg.write_text(good.replace("window: 10m", "window: 20m"))
    w.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in w.log(), what="reload")
    append(log, login("198.51.100.21"))
    wait_for(lambda: gate_file(tmp_path, "198.51.100.21").exists(), what="gate after reload")
    assert gate_file(tmp_path, "198.51.100.21").stat().st_mtime > time.time() + 1100
    assert w.stop() == 0


def test_invalid_config_stops_the_start(tmp_path):
    cfg = write_config(tmp_path, extra="max_ips_per_user: many\n")
    proc = run_logkey("watch", "--config", str(cfg))
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == \
        f"logkey: {cfg}: max_ips_per_user: must be a whole number, 0 or more"
    cfg = write_config(tmp_path, extra="")
    cfg.write_text(cfg.read_text().replace("  - path:", "  - packs: [nosuch]\n    path:"))
    proc = run_logkey("config", "check", "--config", str(cfg))
    assert proc.returncode == 2 and "logs[0].packs: no pack named 'nosuch'" in proc.stderr.decode()


def test_observe_writes_no_gate(tmp_path):
    cfg = write_config(tmp_path)
    (tmp_path / "mail.log").write_text(login("198.51.100.30"))
    proc = run_logkey("watch", "--config", str(cfg), "--once", "--observe")
    assert proc.returncode == 0
    assert "would open ip=198.51.100.30 user=alice pack=dovecot " in proc.stderr.decode()
    assert not (tmp_path / "gates").exists() or not list((tmp_path / "gates").iterdir())


def test_admin_commands(tmp_path):
    cfg = write_config(tmp_path)
    run_logkey("open", "--config", str(cfg), "192.0.2.50", "--user", "mallory", "--for", "60",
               check=0)
    run_logkey("open", "--config", str(cfg), "::ffff:192.0.2.51", "--user", "mallory", check=0)
    gates = [json.loads(x) for x in run_logkey("gates", "--config", str(cfg), "--json",
                                               check=0).stdout.decode().splitlines()]
    assert sorted(g["ip"] for g in gates) == ["192.0.2.50", "192.0.2.51"]
    assert run_logkey("check", "--config", str(cfg), "192.0.2.50").returncode == 0
    run_logkey("close", "--config", str(cfg), "--user", "mallory", check=0)
    assert run_logkey("check", "--config", str(cfg), "192.0.2.50").returncode == 1
    bad = run_logkey("check", "--config", str(cfg), "../../etc/passwd")
    assert bad.returncode == 2 and "is not an IP address" in bad.stderr.decode()
    assert run_logkey("purge", "--config", str(cfg)).returncode == 0


def test_redis_outage_under_the_watcher(tmp_path, watch, redis_server):
    cfg = write_config(tmp_path, store="{type: redis, url: '" + redis_server.url + "'}")
    log = tmp_path / "mail.log"
    log.write_text("")
    w = watch(cfg)
    append(log, login("198.51.100.40"))
    wait_for(lambda: is_open(cfg, "198.51.100.40"), what="gate in redis")
    redis_server.stop()
    append(log, login("198.51.100.41"))
    wait_for(lambda: "store unavailable" in w.log(), what="outage logged")
    time.sleep(1.0)
    assert w.proc.poll() is None                            # still running
    redis_server.start()
    wait_for(lambda: is_open(cfg, "198.51.100.41"), timeout=40, what="gate after the outage")
    assert is_open(cfg, "198.51.100.40")        # written back: this redis kept nothing
    assert w.log().count("store unavailable") == 1          # logged once per outage
    assert w.stop() == 0


WRITER = r"""
import os, shutil, sys, time
log, n, gates = sys.argv[1], int(sys.argv[2]), sys.argv[3]
line = ("{stamp} mail dovecot: pop3-login: Login: user=<u{i}>, method=PLAIN, "
        "rip=10.{a}.{b}.{c}, lip=192.0.2.1, mpid={i}, session=<s{i}>\n")


def caught_up(i):
    # Rotations come seconds apart, never two between reads: before each one, wait (bounded)
    # until the watcher has read the last line written, rather than hoping a fixed sleep is
    # enough on a loaded machine.
    path = os.path.join(gates, f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    deadline = time.monotonic() + 20
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


f = open(log, "a", buffering=1)
for i in range(n):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    f.write(line.format(stamp=stamp, i=i, a=i >> 16, b=(i >> 8) & 255, c=i & 255))
    if i in (n // 4, n // 2, 3 * n // 4):
        caught_up(i)
    if i == n // 4:                                    # rename and create
        f.close(); os.rename(log, log + ".1"); f = open(log, "a", buffering=1)
    elif i == n // 2:                                  # copytruncate, as logrotate does it
        shutil.copyfile(log, log + ".2"); os.truncate(log, 0)
    elif i == 3 * n // 4:                              # rename again, the new file a bit later
        f.close(); os.rename(log, log + ".3"); time.sleep(0.2); f = open(log, "a", buffering=1)
    if i % 100 == 0:
        time.sleep(0.05)                               # about 2,000 lines a second
f.close()
"""


def test_rotation_while_logins_stream_in_every_login_opens_its_gate(tmp_path, watch):
    cfg = write_config(tmp_path, extra="max_ips_per_user: 0\n")
    log = tmp_path / "mail.log"
    log.write_text("")
    w = watch(cfg)
    n = 2000
    gates = tmp_path / "gates"
    subprocess.run([sys.executable, "-c", WRITER, str(log), str(n), str(gates)], check=True,
                   timeout=120)
    expected = {f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(n)}
    wait_for(lambda: {p.name for p in gates.iterdir()} >= expected, timeout=30,
             what=f"{n} gates")
    assert {p.name for p in gates.iterdir() if not p.name.startswith(".")} == expected
    assert w.stop() == 0
    assert "Traceback" not in w.log()


def test_check_json_and_exit_codes(tmp_path):
    cfg = write_config(tmp_path)
    run_logkey("open", "--config", str(cfg), "192.0.2.60", "--user", "u", check=0)
    out = run_logkey("check", "--config", str(cfg), "--json", "192.0.2.60", check=0)
    record = json.loads(out.stdout)
    assert record["open"] is True and record["gate"]["user"] == "u"
    out = run_logkey("check", "--config", str(cfg), "--json", "192.0.2.61")
    assert out.returncode == 1 and json.loads(out.stdout) == {"ip": "192.0.2.61", "open": False,
                                                              "gate": None}
    broken = write_config(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path,
                          store="{type: redis, url: 'redis://127.0.0.1:1/0'}")
    out = run_logkey("check", "--config", str(broken), "192.0.2.60")
    assert out.returncode == 2 and out.stderr.decode().count("\n") == 1


def test_reading_commands_do_not_make_a_missing_store(tmp_path):
    """check, gates and an export only read: a missing gate directory is a store without
    gates, left for the watcher to make (root's `logkey check` must not leave a root-owned
    directory the watcher's user cannot write); a store others may write is still refused."""
    cfg = write_config(tmp_path)
    gates = tmp_path / "gates"
    assert not gates.exists()
    proc = run_logkey("check", "--config", str(cfg), "192.0.2.70")
    assert proc.returncode == 1 and proc.stdout.decode() == "192.0.2.70: closed\n"
    assert run_logkey("gates", "--config", str(cfg), check=0).stderr == b""
    out = run_logkey("export", "--config", str(cfg), "--format", "text", check=0)
    assert out.stdout == b""
    assert not gates.exists()
    run_logkey("open", "--config", str(cfg), "192.0.2.70", "--user", "u", check=0)
    assert gates.is_dir()
    assert run_logkey("check", "--config", str(cfg), "192.0.2.70").returncode == 0
    gates.chmod(0o777)
    proc = run_logkey("check", "--config", str(cfg), "192.0.2.70")
    assert proc.returncode == 2 and b"writable by others" in proc.stderr
    assert proc.stderr.count(b"\n") == 1


def test_never_gate_mynetworks_asks_the_real_postconf(tmp_path):
    """postconf (Debian's postfix, installed by .ci/run) reads main.cf from $MAIL_CONFIG."""
    import shutil
    assert shutil.which("postconf"), "postfix is installed by .ci/run"
    (tmp_path / "pf").mkdir()
    (tmp_path / "pf" / "main.cf").write_text("mynetworks = 192.0.2.0/24, [2001:db8::]/32\n"
                                             "compatibility_level = 3.6\n")
    cfg = write_config(tmp_path, extra="never_gate_mynetworks: true\n")
    (tmp_path / "mail.log").write_text(login("192.0.2.9") + login("2001:db8::9")
                                       + login("198.51.100.9"))
    proc = run_logkey("watch", "--config", str(cfg), "--once",
                      env={"MAIL_CONFIG": str(tmp_path / "pf")})
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "gates").iterdir()) == ["198.51.100.9"]


def test_readme_quick_start_works(tmp_path):
    """The README's first command, on a copy of examples/quickstart.yaml writing under tmp."""
    text = (ROOT / "examples" / "quickstart.yaml").read_text()
    text = text.replace("../tests/logs/", f"{ROOT}/tests/logs/").replace(
        "../.quickstart/", f"{tmp_path}/")
    cfg = tmp_path / "quickstart.yaml"
    cfg.write_text(text)
    readme = (ROOT / "README.md").read_text()
    assert "logkey watch --once --config examples/quickstart.yaml --as-of " \
           "2026-11-28T00:30:00+00:00" in readme
    run_logkey("watch", "--once", "--config", str(cfg), "--as-of", "2026-11-28T00:30:00+00:00",
               check=0)
    gates = run_logkey("gates", "--config", str(cfg), check=0).stdout.decode()
    assert "6 open gate(s)" in gates and "popa3d" in gates
    assert run_logkey("check", "--config", str(cfg), "127.0.0.3").returncode == 0
    assert run_logkey("check", "--config", str(cfg), "127.0.0.4").returncode == 1


def test_sighup_with_a_bad_pack_keeps_the_running_packs(tmp_path, watch):
    (tmp_path / "packs").mkdir()
    cfg = write_config(tmp_path, extra=f"patterns_dir: {tmp_path}/packs\n")
    log = tmp_path / "mail.log"
    log.write_text("")
    w = watch(cfg)
    (tmp_path / "packs" / "bad.yaml").write_text(
        "programs: [x]\nevents:\n  - {id: a, kind: login, protocol: pop3, "
        "regex: '^.* (?P<ip>[0-9.]{7,15})$'}\n")
    w.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in w.log() and "unbounded wildcard" in w.log(),
             what="the refusal naming the pack")
    append(log, login("198.51.100.70"))
    wait_for(lambda: gate_file(tmp_path, "198.51.100.70").exists(), what="gate after refusal")
    assert w.stop() == 0


def test_unusable_directories_are_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("")
    for extra, needle in ((f"state_dir: {tmp_path}/file/state\n", "state_dir: "),):
        cfg = write_config(tmp_path)
        cfg.write_text(cfg.read_text().replace(f"state_dir: {tmp_path}/state\n", extra))
        proc = run_logkey("watch", "--once", "--config", str(cfg))
        err = proc.stderr.decode()
        assert proc.returncode == 2 and err.startswith(f"logkey: {needle}"), err
        assert err.count("\n") == 1
    cfg = write_config(tmp_path, store="{type: dir, path: " + f"{tmp_path}/file/gates" + "}")
    proc = run_logkey("watch", "--once", "--config", str(cfg))
    assert proc.returncode == 2 and proc.stderr.decode().count("\n") == 1


def test_gates_opened_elsewhere_reach_the_exports(tmp_path, watch):
    """A gate opened by `logkey open` is taken from the store within a reconcile (5 s) into a
    running watcher's exports, and leaves them at its expiry."""
    cfg = write_config(tmp_path, extra=f"exports:\n  - {{format: text, path: {tmp_path}/gates.txt}}\n")
    (tmp_path / "mail.log").write_text("")
    watch(cfg)
    export = tmp_path / "gates.txt"
    wait_for(export.exists, what="the first export")
    run_logkey("open", "--config", str(cfg), "192.0.2.70", "--user", "u", "--for", "8", check=0)
    wait_for(lambda: export.read_text() == "192.0.2.70\n", timeout=8,
             what="the hand-opened gate in the export")
    wait_for(lambda: export.read_text() == "", timeout=10, what="its expiry")


def test_two_watchers_on_one_redis_share_gates_and_never_close_each_others(tmp_path, watch,
                                                                          redis_server):
    """Watchers A and B write one Redis, each with its own log and text export. A login in A's
    log reaches B's export; when A extends the gate (a later login), B's copy expiring does not
    close it in the store: expiry is the store's own business, never a delete."""
    store = f"{{type: redis, url: '{redis_server.url}'}}"
    cfgs = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        (d / "mail.log").write_text("")
        cfgs.append(write_config(d, store=store, window="8s", extra=(
            "max_session: 8s\n"
            f"exports:\n  - {{format: text, path: {d}/gates.txt}}\n")))
        watch(cfgs[-1])
    a_log, b_export = tmp_path / "a" / "mail.log", tmp_path / "b" / "gates.txt"
    t0 = time.time()
    append(a_log, login("192.0.2.80", t=t0))
    wait_for(lambda: b_export.exists() and b_export.read_text() == "192.0.2.80\n", timeout=10,
             what="A's gate in B's export")
    while time.time() < t0 + 4:
        time.sleep(0.1)
    append(a_log, login("192.0.2.80", t=time.time(), session="later"))   # A: to t0 + 12
    wait_for(lambda: time.time() > t0 + 8.5, timeout=10, what="B's copy of the gate to expire")
    assert is_open(cfgs[1], "192.0.2.80")               # still open in the store
    wait_for(lambda: not is_open(cfgs[1], "192.0.2.80"), timeout=10, what="the real expiry")
