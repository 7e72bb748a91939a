import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-28T00:00:00+00:00"
SHARED_SAMPLES = ROOT.parent / "shared" / "samples"


def run_logkey(*args, stdin=None, env=None, check=None):
    """Run the installed console script if there is one (what users run), else the module."""
    exe = os.environ.get("LOGKEY_EXE")
    cmd = [exe] if exe else [sys.executable, "-m", "logkey"]
    full_env = {**os.environ, "LOGKEY_CONFIG": os.devnull, **(env or {})}
    proc = subprocess.run(cmd + list(args), input=stdin, capture_output=True, env=full_env,
                          cwd=ROOT, timeout=300)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    """A port nothing listens on right now, on a loopback address."""
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc, timeout=5.0) -> None:
    """SIGTERM, then SIGKILL if it does not go within `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def wait_for(predicate, what="condition", timeout=10.0, step=0.02):
    """predicate()'s first true value, asked every `step` seconds; AssertionError naming `what`
    after `timeout` seconds. The one bounded wait of the test suite (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)


@pytest.fixture
def watch():
    """start(cfg, *args): a running `logkey watch`, returned once it is following its logs (it
    logs "watching" after attaching); every one started is killed at the end."""
    from servers import Logkey
    started = []

    def start(cfg, *args):
        w = Logkey("watch", cfg, *args).spawn()
        started.append(w)
        wait_for(lambda: "watching" in w.log() or w.proc.poll() is not None,
                 what="the watcher to start")
        assert w.proc.poll() is None, w.log()
        return w
    yield start
    for w in started:
        w.stop(signal.SIGKILL)


@pytest.fixture
def site(tmp_path):
    """An end-to-end mail site (servers.Site): what a test starts in it is stopped at the end."""
    from servers import Site
    s = Site(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def now():
    return datetime(2026, 11, 28, tzinfo=timezone.utc)


# -- redis_server: a real redis-server on a free loopback port (stores tests) ---------------------

class RedisServer:
    """A throwaway redis-server: no persistence, TCP on 127.0.0.1:`port` and a unix socket.
    `stop()` and `start()` simulate an outage (same port and socket afterwards)."""

    def __init__(self, binary, workdir):
        self.binary, self.dir = binary, workdir
        self.port = free_port()
        self.socket_path = os.path.join(workdir, "redis.sock")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.unix_url = f"unix://{self.socket_path}?db=0"
        self.proc = None

    def start(self, timeout=10.0):
        import socket
        import time
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--unixsocket", self.socket_path, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", self.dir,
             "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                pytest.fail(f"redis-server exited with {self.proc.returncode}: {err}{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server not answering on 127.0.0.1:{self.port}{self.log()}")
            time.sleep(0.02)

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.proc.stderr.close()
        self.proc = None

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
                return "\n" + f.read()[-2000:]
        except OSError:
            return ""


@pytest.fixture
def redis_server():
    """A running redis-server (see RedisServer); killed at the end. Fails, never skips, when the
    binary is missing: .ci/run installs it (Debian package redis-server)."""
    import shutil
    import tempfile
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)
    if binary is None:
        pytest.fail("redis-server not found: .ci/run installs it "
                    "(apt-get install redis-server); the redis store tests need a real server")
    workdir = tempfile.mkdtemp(prefix="logkey-redis-")   # short: unix socket paths are limited
    server = RedisServer(binary, workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def open_tmp():
    """A temp dir other uids can reach (pytest's tmp_path lies under a 0700 directory), for
    tests that run programs as unprivileged users; removed afterwards."""
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="logkey-open-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def pytest_report_header(config):
    """The system and the server versions the end-to-end suite runs against (tests/test_e2e*.py):
    .ci/run runs the suite twice, on Debian 12 and in a Debian 13 root (.ci/debian13)."""
    from servers import release, versions
    from mtas import versions as mta_versions
    return [f"system: {release()}", "servers: " + "; ".join(versions()),
            "MTAs (private roots): " + "; ".join(mta_versions())]


def pytest_sessionstart(session):
    """-q (as .ci/run and .ci/debian13 run pytest) hides the report header: say it anyway, so a
    CI log names the release and versions each of its two runs was made with."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and session.config.get_verbosity() < 0:
        for line in pytest_report_header(session.config):
            reporter.write_line(line)


# -- no silent skips where everything must be there ------------------------------------------------

# Skips that say something about the release, not about a missing program or privilege: the
# only ones a run with LOGKEY_STRICT_SKIPS set (.ci/debian13 sets it) lets through, each still
# listed in the run's summary (-rs).
EXPECTED_SKIPS = (
    "pages are generated with Python",         # argparse's man page layout differs by version
    "Debian's ucspi-tcp is IPv4-only",          # in every Debian release
    "shared samples not beside the project",    # a developer's checkout only
    "no dovecot 2.3: the machine has 2.4",      # Debian 13 ships 2.4 only; 2.3 is Debian 12's run
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With LOGKEY_STRICT_SKIPS=WHERE, a skip for any other reason fails the test, naming it:
    in the Debian 13 run everything the suite needs is installed, so a skip there can only
    mean something is missing or broken."""
    outcome = yield
    report = outcome.get_result()
    where = os.environ.get("LOGKEY_STRICT_SKIPS")
    if not where or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(expected in reason for expected in EXPECTED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped in the {where} run, where nothing may be missing: {reason}"
