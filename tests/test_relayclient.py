"""`logkey relayclient` under a real tcpserver (ucspi-tcp) on loopback, with a stand-in for
qmail-smtpd that tells the client what environment it was given; plus the address, store-error
and cache cases run directly (the wrapper only reads its environment, so that is the same code).

Debian's ucspi-tcp is IPv4-only ("tcpserver: fatal: no IP address for ::1"); the IPv6 tcpserver
test skips with that reason there, and the IPv6 addresses are covered by the direct runs.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_logkey, stop_process

OPEN, NONE, EXPIRED = "127.0.0.2", "127.0.0.3", "127.0.0.4"
TIMEOUT = 10.0

STANDIN = """#!/bin/sh
# a stand-in for qmail-smtpd: report the environment it was given, then exit
if [ "${RELAYCLIENT+set}" = set ]; then echo "RELAYCLIENT=[$RELAYCLIENT]"; else echo "RELAYCLIENT unset"; fi
echo "TCPREMOTEIP=$TCPREMOTEIP"
echo "MARK=${LOGKEY_TEST_MARK-unset}"
echo "ARGS=$*"
grep '^SigIgn' /proc/$$/status
"""


def relayclient_cmd():
    """The installed console script when LOGKEY_EXE is set (what tcpserver runs), else the
    same entry point from the source tree."""
    exe = os.environ.get("LOGKEY_EXE")
    return ([exe] if exe else [sys.executable, "-m", "logkey.entry"]) + ["relayclient"]


def base_env(config, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RELAYCLIENT", "TCPREMOTEIP", "LOGKEY_RUN_DIR")}
    env.update(LOGKEY_CONFIG=str(config), LOGKEY_TEST_MARK="kept")
    if not os.environ.get("LOGKEY_EXE"):       # the source tree; else what is installed
        env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def report(text):
    """The stand-in's lines as a dict."""
    out = {}
    for line in text.splitlines():
        if line.startswith("RELAYCLIENT"):
            out["relay"] = line
        elif "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
        elif line.startswith("SigIgn:"):
            out["SigIgn"] = line.split()[1]
    return out


RELAY, NO_RELAY = "RELAYCLIENT=[]", "RELAYCLIENT unset"


def touch(path, offset):
    """A gate file as the dir store writes it: its record (naming its key), mtime = expiry."""
    with open(path, "w") as f:
        f.write(json.dumps({"key": os.path.basename(path).replace("_", "/")}) + "\n")
    t = time.time() + offset
    os.utime(path, (t, t))


@pytest.fixture
def site(tmp_path):
    """A config with a dir store: 127.0.0.2 open, 127.0.0.4 expired, IPv6 gates too."""
    gates = tmp_path / "gates"
    gates.mkdir(mode=0o750)
    touch(gates / OPEN, 3600)
    touch(gates / EXPIRED, -3600)
    touch(gates / "2001:db8::1", 3600)
    touch(gates / "2001:db8:1:2::_64", 3600)
    touch(gates / "::1", 3600)
    config = tmp_path / "config.yaml"
    config.write_text("store: {type: dir, path: gates}\nipv6_prefix: 64\n")
    standin = tmp_path / "smtpd"
    standin.write_text(STANDIN)
    standin.chmod(0o755)
    return tmp_path


def cache_of(config):
    return config.parent / f".{config.name}.relayclient.json"


def run_direct(site, remote_ip, *, prog=None, config=None, **env):
    config = config or site / "config.yaml"
    e = base_env(config, **env)
    if remote_ip is not None:
        e["TCPREMOTEIP"] = remote_ip
    proc = subprocess.run(relayclient_cmd() + [str(prog or site / "smtpd"), "a1"],
                          capture_output=True, text=True, env=e, cwd=ROOT, timeout=60)
    return proc


# -- tcpserver ----------------------------------------------------------------------------------

class TcpServer:
    def __init__(self, workdir, host, cmd, env, wrap=()):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = os.path.join(workdir, f"tcpserver.{self.port}.log")
        self.host = host
        with open(self.log, "wb") as err:
            # -v: say when listening; -H -R -l0: no DNS/ident lookups; -c: a few at once.
            self.proc = subprocess.Popen(
                list(wrap) + ["tcpserver", "-v", "-HR", "-l0", "-c", "20", host, str(self.port)]
                + cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=env, cwd=ROOT)
        deadline = time.monotonic() + TIMEOUT
        while "status: 0/" not in self.text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"tcpserver exited {self.proc.returncode}: {self.text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tcpserver not listening: {self.text()}")
            time.sleep(0.01)

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def talk(self, source):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(TIMEOUT)
            s.bind((source, 0))
            s.connect((self.host, self.port))
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.decode()

    def ends(self, n):
        """Wait until tcpserver has reaped `n` children (so their stderr is in the log)."""
        deadline = time.monotonic() + TIMEOUT
        while self.text().count(" end ") < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.text()

    def stop(self):
        stop_process(self.proc)


@pytest.fixture
def tcpservers():
    if not shutil.which("tcpserver"):
        pytest.fail("tcpserver not found: .ci/run installs it (apt-get install ucspi-tcp)")
    started = []

    def start(workdir, cmd, env, host="127.0.0.1", wrap=()):
        server = TcpServer(workdir, host, cmd, env, wrap)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def log_lines(text):
    return [line for line in text.splitlines() if line.startswith("logkey relayclient:")]


def test_relayclient_tcpserver_open_none_expired(site, tcpservers):
    env = base_env(site / "config.yaml")
    server = tcpservers(site, relayclient_cmd() + [str(site / "smtpd"), "a1", "a 2"], env)
    plain = tcpservers(site, [str(site / "smtpd")], env)           # no wrapper: the reference
    seen = {ip: report(server.talk(ip)) for ip in (OPEN, NONE, EXPIRED)}
    assert seen[OPEN]["relay"] == RELAY
    assert seen[NONE]["relay"] == NO_RELAY
    assert seen[EXPIRED]["relay"] == NO_RELAY
    reference = report(plain.talk(NONE))
    for ip, got in seen.items():
        assert got["TCPREMOTEIP"] == ip
        assert got["MARK"] == "kept" and got["ARGS"] == "a1 a 2"
        assert got["SigIgn"] == reference["SigIgn"]    # Python's SIGPIPE ignore not passed on
    assert log_lines(server.ends(3)) == []
    # the same verdicts as `logkey check`
    for ip, got in seen.items():
        proc = run_logkey("check", ip, env={"LOGKEY_CONFIG": str(site / "config.yaml")})
        assert proc.returncode == (0 if got["relay"] == RELAY else 1), proc.stderr


def test_relayclient_tcpserver_keeps_relayclient_from_rules(site, tcpservers):
    env = base_env(site / "config.yaml", RELAYCLIENT="@relay.example")
    server = tcpservers(site, relayclient_cmd() + [str(site / "smtpd")], env)
    assert report(server.talk(NONE))["relay"] == "RELAYCLIENT=[@relay.example]"
    assert report(server.talk(OPEN))["relay"] == "RELAYCLIENT=[@relay.example]"


def test_relayclient_tcpserver_ipv6(site, tcpservers):
    env = base_env(site / "config.yaml")
    try:
        server = tcpservers(site, relayclient_cmd() + [str(site / "smtpd")], env, host="::1")
    except RuntimeError as e:
        pytest.skip(f"this tcpserver has no IPv6 (Debian's ucspi-tcp is IPv4-only; "
                    f"ucspi-tcp-ipv6 has it): {e}")
    assert report(server.talk("::1"))["relay"] == RELAY


def test_relayclient_tcpserver_unreadable_store_still_serves(site, tcpservers):
    """A store directory we may not search (root without CAP_DAC_OVERRIDE, mode 000): the
    connection is served, without RELAYCLIENT, and one line says why."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    os.chmod(site / "gates", 0)
    try:
        env = base_env(site / "config.yaml")
        server = tcpservers(site, relayclient_cmd() + [str(site / "smtpd")], env,
                            wrap=["setpriv", "--bounding-set=-dac_override,-dac_read_search"])
        got = report(server.talk(OPEN))
        assert got["relay"] == NO_RELAY and got["TCPREMOTEIP"] == OPEN
        lines = log_lines(server.ends(1))
        assert len(lines) == 1 and "Permission denied" in lines[0] \
            and f"no RELAYCLIENT for {OPEN}" in lines[0], lines
    finally:
        os.chmod(site / "gates", 0o750)


def test_relayclient_tcpserver_prog_missing(site, tcpservers):
    env = base_env(site / "config.yaml")
    server = tcpservers(site, relayclient_cmd() + [str(site / "no-such-smtpd")], env)
    assert server.talk(OPEN) == ""
    text = server.ends(1)
    assert f" status {111 << 8}" in text, text           # tcpserver logs the raw wait status
    lines = log_lines(text)
    assert len(lines) == 1 and "cannot run" in lines[0], text


# -- addresses ----------------------------------------------------------------------------------

@pytest.mark.parametrize("remote, relay", [
    (OPEN, True), (NONE, False), (EXPIRED, False),
    ("::ffff:127.0.0.2", True), ("::FFFF:127.0.0.2", True), ("::ffff:7f00:2", True),
    ("::ffff:127.0.0.3", False),
    ("2001:db8::1", True), ("2001:0db8:0:0::1", True), ("2001:DB8::1", True),
    ("2001:db8:1:2::99", True),                                 # the /64 prefix gate
    ("2001:db8:1:3::1", False), ("::1", True),
    (None, False), ("", False), ("127.0.0.02", False), ("127.0.0.2 ", False),
    (" 127.0.0.2", False), ("127.0.0.2\n", False), ("127.0.0.2.", False),
    ("127.0.0.256", False), ("../gates/127.0.0.2", False), ("gates/127.0.0.2", False),
    ("\u0661\u0662\u0667.0.0.2", False), ("127.0.0.\u0662", False),
    ("2001:db8::1%lo", False), ("fe80::1%1", False), ("2001:db8::1/64", False),
    ("2001:db8:1:2::_64", False), ("x" * 5000, False), ("0x7f.0.0.2", False),
])
def test_relayclient_addresses(site, remote, relay):
    proc = run_direct(site, remote)
    assert proc.returncode == 0, proc.stderr
    assert report(proc.stdout)["relay"] == (RELAY if relay else NO_RELAY)
    assert proc.stderr == ""


# -- store and config errors --------------------------------------------------------------------

def write_config(site, text, name="config.yaml"):
    path = site / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["loop", "file", "missing-config", "bad-yaml", "bad-key",
                                  "redis-down"])
def test_relayclient_store_errors_serve_without_relay(site, case):
    if case == "loop":
        os.symlink("loop", site / "loop")
        config = write_config(site, "store: {type: dir, path: loop}\n", "c.yaml")
    elif case == "file":
        config = write_config(site, "store: {type: dir, path: config.yaml}\n", "c.yaml")
    elif case == "missing-config":
        config = site / "nothing.yaml"
    elif case == "bad-yaml":
        config = write_config(site, "store: {type: dir, path: [\n", "c.yaml")
    elif case == "bad-key":
        config = write_config(site, "store: {type: dir, path: gates}\nwindw: 5\n", "c.yaml")
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]           # nothing listens there once closed
        config = write_config(site, f"store: {{type: redis, url: 'redis://127.0.0.1:{port}/0'}}\n",
                              "c.yaml")
    proc = run_direct(site, OPEN, config=config)
    assert proc.returncode == 0
    got = report(proc.stdout)
    assert got["relay"] == NO_RELAY and got["TCPREMOTEIP"] == OPEN
    lines = proc.stderr.splitlines()
    if case == "file":                              # ENOTDIR: simply no gate there
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("logkey relayclient: ") \
            and lines[0].endswith(f"no RELAYCLIENT for {OPEN}"), lines


@pytest.mark.parametrize("kind", ["symlink-to-gate", "symlink-to-dir", "dangling", "fifo",
                                  "socket", "directory", "empty", "garbage", "other-key",
                                  "huge", "not-utf8", "nesting"])
def test_relayclient_planted_gate_entry_never_relays(site, kind, tmp_path):
    """Whatever sits under the client's gate name, only its own record opens it; anything
    else is closed and named in one line on stderr, and nothing is followed or hangs."""
    gate = site / "gates" / NONE
    outside = tmp_path / "outside"
    outside.mkdir()
    record = json.dumps({"key": NONE}).encode()
    content = {"empty": b"", "garbage": b"\x00{garbage", "other-key": json.dumps(
        {"key": OPEN}).encode(), "huge": record + b" " * 70_000, "not-utf8": b"\xff" + record,
               "nesting": b"[" * 50_000}.get(kind)
    if content is not None:
        gate.write_bytes(content)
    elif kind == "symlink-to-gate":
        touch(outside / NONE, 3600)                # a good gate file, outside the store
        os.symlink(outside / NONE, gate)
    elif kind == "symlink-to-dir":
        os.symlink(outside, gate)
    elif kind == "dangling":
        os.symlink(outside / "nothing", gate)
    elif kind == "fifo":
        os.mkfifo(gate)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(gate))
    else:
        gate.mkdir()
    future = time.time() + 3600
    os.utime(gate, (future, future), follow_symlinks=False)
    proc = run_direct(site, NONE)
    assert proc.returncode == 0
    assert report(proc.stdout)["relay"] == NO_RELAY
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and str(gate) in lines[0] and lines[0].endswith(
        "treated as closed"), lines
    assert report(run_direct(site, OPEN).stdout)["relay"] == RELAY


def test_relayclient_redis_store(site, redis_server):
    config = write_config(site, f"store: {{type: redis, url: '{redis_server.url}', "
                                f"prefix: 'rc:'}}\n", "redis.yaml")
    run_logkey("open", OPEN, env={"LOGKEY_CONFIG": str(config)}, check=0)
    assert report(run_direct(site, OPEN, config=config).stdout)["relay"] == RELAY
    proc = run_direct(site, NONE, config=config)
    assert report(proc.stdout)["relay"] == NO_RELAY and proc.stderr == ""
    assert json.loads(cache_of(config).read_text())["store"]["prefix"] == "rc:"


# -- the cache ----------------------------------------------------------------------------------

def signature(path):
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def test_relayclient_cache_written_then_believed(site):
    config = site / "config.yaml"
    assert report(run_direct(site, OPEN).stdout)["relay"] == RELAY
    cache = cache_of(config)
    data = json.loads(cache.read_text())
    assert data["config"] == str(config) and data["config_stat"] == signature(config)
    assert data["store"] == {"type": "dir", "path": str(site / "gates")}
    assert data["ipv6_prefix"] == 64
    assert cache.stat().st_mode & 0o777 == 0o644
    # A current cache is believed without reading the YAML: point it at another store.
    other = site / "other"
    other.mkdir()
    touch(other / NONE, 3600)
    data["store"]["path"] = str(other)
    cache.write_text(json.dumps(data))
    assert report(run_direct(site, NONE).stdout)["relay"] == RELAY
    assert report(run_direct(site, OPEN).stdout)["relay"] == NO_RELAY


def test_relayclient_fast_path_imports(site):
    """With a current cache and an IPv4 client: no yaml, json package, ipaddress or cli."""
    run_direct(site, OPEN)
    code = ("import os, sys\n"
            "before = set(sys.modules)\n"          # a site .pth may import things: not ours
            "def fake_exec(prog, args):\n"
            "    print(os.environ.get('RELAYCLIENT'), sorted(m for m in set(sys.modules) - "
            "before if m.split('.')[0] in ('yaml', 'json', 'ipaddress', 'argparse', 'regex', "
            "'redis') or m.startswith('logkey.')))\n"
            "    sys.exit(0)\n"
            "os.execvp = fake_exec\n"
            "sys.argv = ['logkey', 'relayclient', 'true']\n"
            "from logkey.entry import main\n"
            "main()\n")
    env = base_env(site / "config.yaml", TCPREMOTEIP=OPEN)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    assert proc.stdout.strip() == "['logkey.entry', 'logkey.smtp', 'logkey.smtp.relayclient']", proc.stderr


def test_relayclient_stale_cache_refreshed(site):
    config = site / "config.yaml"
    assert report(run_direct(site, OPEN).stdout)["relay"] == RELAY
    other = site / "other"
    other.mkdir()
    touch(other / NONE, 3600)
    config.write_text("store: {type: dir, path: other}\n")
    assert report(run_direct(site, OPEN).stdout)["relay"] == NO_RELAY
    assert report(run_direct(site, NONE).stdout)["relay"] == RELAY
    data = json.loads(cache_of(config).read_text())
    assert data["store"]["path"] == str(other) and data["ipv6_prefix"] is None
    assert data["config_stat"] == signature(config)
    # same size, same path: only the mtime tells
    config.write_text("store: {type: dir, path: gatez}\n".replace("gatez", "gates"))
    assert report(run_direct(site, OPEN).stdout)["relay"] == RELAY


def _tampered(site, how):
    cache = cache_of(site / "config.yaml")
    good = json.loads(cache.read_text())
    evil = site / "evil"
    evil.mkdir(exist_ok=True)
    touch(evil / NONE, 3600)
    cache.unlink()
    if how == "garbage":
        cache.write_bytes(b"\x00\xff garbage")
    elif how == "truncated":
        cache.write_text(json.dumps(good)[:40])
    elif how == "empty":
        cache.write_text("")
    elif how == "list":
        cache.write_text("[1, 2, 3]")
    elif how == "nan":
        cache.write_text(json.dumps(good).replace('"ipv6_prefix": 64', '"ipv6_prefix": NaN'))
    elif how == "deep":
        cache.write_text("[" * 100000 + "]" * 100000)
    elif how == "huge":
        cache.write_text(json.dumps(dict(good, pad="x" * 100000)))
    elif how in ("types-path", "types-prefix", "types-stat", "relative", "version",
                 "other-config", "unknown-type"):
        bad = json.loads(json.dumps(good))
        if how == "types-path":
            bad["store"]["path"] = 7
        elif how == "types-prefix":
            bad["ipv6_prefix"] = "64"
        elif how == "types-stat":
            bad["config_stat"] = [str(x) for x in bad["config_stat"]]
        elif how == "relative":
            bad["store"]["path"] = "evil"
        elif how == "version":
            bad["version"] = 1
        elif how == "other-config":
            bad["config"] = str(site / "elsewhere.yaml")
        else:
            bad["store"]["type"] = "cdb"
        cache.write_text(json.dumps(bad))
    elif how in ("group-writable", "symlink"):
        bad = dict(good, store={"type": "dir", "path": str(evil)})
        if how == "group-writable":
            cache.write_text(json.dumps(bad))
            cache.chmod(0o664)
        else:
            target = site / "elsewhere.json"
            target.write_text(json.dumps(bad))
            os.symlink(target, cache)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "list", "nan", "deep", "huge",
                                 "types-path", "types-prefix", "types-stat", "relative",
                                 "version", "other-config", "unknown-type", "group-writable",
                                 "symlink"])
def test_relayclient_tampered_cache_slow_path(site, how):
    assert report(run_direct(site, OPEN).stdout)["relay"] == RELAY
    _tampered(site, how)
    for ip, expected in ((OPEN, RELAY), (NONE, NO_RELAY)):
        proc = run_direct(site, ip)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert report(proc.stdout)["relay"] == expected
    cache = cache_of(site / "config.yaml")
    assert not cache.is_symlink() and cache.stat().st_mode & 0o777 == 0o644
    assert json.loads(cache.read_text())["store"]["path"] == str(site / "gates")


def test_relayclient_cache_in_run_dir_when_beside_fails(site):
    cache_of(site / "config.yaml").mkdir()           # beside the config: cannot be written
    run_dir = site / "run"
    for _ in range(2):
        proc = run_direct(site, OPEN, LOGKEY_RUN_DIR=str(run_dir))
        assert report(proc.stdout)["relay"] == RELAY and proc.stderr == ""
    (cached,) = os.listdir(run_dir)
    assert cached == "relayclient." + str(site / "config.yaml").replace("/", "%2F") + ".json"
    assert json.loads((run_dir / cached).read_text())["config"] == str(site / "config.yaml")


def test_relayclient_no_cache_anywhere_still_serves(site):
    cache_of(site / "config.yaml").mkdir()
    run_dir = site / "run-is-a-file"
    run_dir.write_text("")
    proc = run_direct(site, OPEN, LOGKEY_RUN_DIR=str(run_dir))
    assert report(proc.stdout)["relay"] == RELAY
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "cannot write the cache" in lines[0]


# -- PROG, usage, the other commands -------------------------------------------------------------

def test_relayclient_prog_missing_exit_111(site):
    proc = run_direct(site, OPEN, prog=site / "no-such-smtpd")
    assert proc.returncode == 111 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "cannot run" in lines[0] and "no-such-smtpd" in lines[0]


def test_relayclient_no_prog_exit_111(site):
    proc = subprocess.run(relayclient_cmd(), capture_output=True, text=True,
                          env=base_env(site / "config.yaml", TCPREMOTEIP=OPEN), cwd=ROOT,
                          timeout=60)
    assert proc.returncode == 111 and len(proc.stderr.splitlines()) == 1
    assert "usage" in proc.stderr


def test_relayclient_config_option(site):
    other = write_config(site, "store: {type: dir, path: other}\n", "other.yaml")
    (site / "other").mkdir()
    touch(site / "other" / NONE, 3600)
    e = base_env(site / "config.yaml", TCPREMOTEIP=NONE)
    for opt in (["--config", str(other)], [f"--config={other}"]):
        proc = subprocess.run(relayclient_cmd() + opt + ["--", str(site / "smtpd")],
                              capture_output=True, text=True, env=e, cwd=ROOT, timeout=60)
        assert report(proc.stdout)["relay"] == RELAY, proc.stderr


def test_entry_passes_other_commands_to_cli():
    for cmd in ([sys.executable, "-m", "logkey", "--version"],
                [sys.executable, "-m", "logkey.entry", "--version"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 0 and proc.stdout.startswith("logkey "), proc.stderr
