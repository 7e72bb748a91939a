"""`logkey popwrap` end to end: a real `logkey watch` listening on its popwrap socket, a real
tcpserver (ucspi-tcp) on 127.0.0.1 running the wrapper (after a stand-in for checkpassword's
qmail-pop3d) or the filter (in front of tiny fake POP3/IMAP servers), clients connecting from
other loopback addresses, and the gates read from the dir store (file mtime = expiry)."""
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from conftest import ROOT, stop_process, wait_for

TIMEOUT = 10.0
WINDOW = 60

STANDIN = """\
#!/bin/sh
# qmail-pop3d's stand-in: greets, waits for one line, exits with the status given
printf '+OK standin USER=%s\\r\\n' "$USER"
read line
printf '+OK bye\\r\\n'
exit "${1:-0}"
"""

FAKE_POP3 = """\
import sys
out = sys.stdout.buffer
def say(s):
    out.write(s.encode() + b"\\r\\n"); out.flush()
say("+OK fake pop3 ready")
for raw in sys.stdin.buffer:
    words = raw.decode().split()
    cmd = words[0].upper() if words else ""
    if cmd == "CAPA":
        say("+OK"); say("USER"); say("+OK not a reply"); say("STLS"); say(".")
    elif cmd == "USER":
        say("+OK send PASS")
    elif cmd == "PASS":
        say("+OK welcome" if words[1:] == ["secret"] else "-ERR wrong")
    elif cmd == "STLS":
        say("+OK begin TLS")            # (a real server would now do TLS; we stay plain)
    elif cmd == "QUIT":
        say("+OK bye"); break
    else:
        say("-ERR what")
"""

FAKE_IMAP = """\
import base64, sys
out = sys.stdout.buffer
def say(s):
    out.write(s.encode() + b"\\r\\n"); out.flush()
say("* OK fake imap ready")
lines = iter(sys.stdin.buffer)
for raw in lines:
    words = raw.decode().split()
    if len(words) < 2:
        continue
    tag, cmd = words[0], words[1].upper()
    if cmd == "CAPABILITY":
        say("* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN"); say(tag + " OK done")
    elif cmd == "LOGIN":
        say(tag + (" OK logged in" if words[3:] == ['"secret"'] else " NO wrong"))
    elif cmd == "AUTHENTICATE":
        say("+ ")
        resp = base64.b64decode(next(lines).strip()).split(b"\\0")
        say(tag + (" OK authenticated" if resp[2:] == [b"secret"] else " NO wrong"))
    elif cmd == "STARTTLS":
        say(tag + " OK begin TLS")
    elif cmd == "LOGOUT":
        say("* BYE"); say(tag + " OK bye"); break
    else:
        say(tag + " BAD what")
"""


def logkey_cmd():
    exe = os.environ.get("LOGKEY_EXE")
    return [exe] if exe else [sys.executable, "-m", "logkey.entry"]


class TcpServer:
    def __init__(self, workdir, cmd, env):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = os.path.join(workdir, f"tcpserver.{self.port}.log")
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                ["tcpserver", "-v", "-HR", "-l0", "-c", "20", "127.0.0.1", str(self.port)]
                + cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=env, cwd=ROOT)
        wait_for(lambda: "status: 0/" in self.text() or self.proc.poll() is not None,
                 "tcpserver to listen")
        assert self.proc.poll() is None, self.text()

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def connect(self, source):
        s = socket.socket()
        s.settimeout(TIMEOUT)
        s.bind((source, 0))
        s.connect(("127.0.0.1", self.port))
        return Client(s)

    def stop(self):
        stop_process(self.proc)


class Client:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def line(self) -> str:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"connection closed; had {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().rstrip("\r")

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def close_when_done(self) -> float:
        """Read to EOF (the server side has exited); the time of the end."""
        while self.sock.recv(4096):
            pass
        self.sock.close()
        return time.time()


class Site:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lk-pw-")      # short: unix socket path limits
        self.gates = os.path.join(self.dir, "gates")
        self.socket = os.path.join(self.dir, "popwrap.sock")
        self.config = os.path.join(self.dir, "config.yaml")
        with open(self.config, "w") as f:
            f.write(textwrap.dedent(f"""\
                logs: []
                store: {{type: dir, path: gates}}
                state_dir: state
                window: {WINDOW}
                max_session: 1h
                popwrap: {{socket: popwrap.sock, socket_mode: "0600"}}
                """))
        for name, text, mode in (("standin", STANDIN, 0o755), ("fakepop3.py", FAKE_POP3, 0o644),
                                 ("fakeimap.py", FAKE_IMAP, 0o644)):
            path = os.path.join(self.dir, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, mode)
        self.env = {k: v for k, v in os.environ.items() if k not in ("TCPREMOTEIP", "USER")}
        self.env.update(LOGKEY_CONFIG=self.config, LOGKEY_RUN_DIR=os.path.join(self.dir, "run"))
        if not os.environ.get("LOGKEY_EXE"):
            self.env["PYTHONPATH"] = str(ROOT)
        self.watch_log = open(os.path.join(self.dir, "watch.log"), "wb")
        self.watcher = subprocess.Popen(logkey_cmd() + ["watch", "-v"], env=self.env, cwd=ROOT,
                                        stdin=subprocess.DEVNULL, stdout=self.watch_log,
                                        stderr=self.watch_log)
        wait_for(lambda: os.path.exists(self.socket) or self.watcher.poll() is not None,
                 "the watcher's socket")
        assert self.watcher.poll() is None, self.watch_text()
        self.servers = []

    def watch_text(self):
        with open(os.path.join(self.dir, "watch.log"), errors="replace") as f:
            return f.read()

    def server(self, cmd, **env):
        s = TcpServer(self.dir, logkey_cmd() + ["popwrap"] + cmd, dict(self.env, **env))
        self.servers.append(s)
        return s

    def expires(self, ip):
        try:
            return os.lstat(os.path.join(self.gates, ip)).st_mtime
        except FileNotFoundError:
            return None

    def is_open(self, ip):
        e = self.expires(ip)
        return e is not None and e > time.time()

    def datagram(self, data: bytes):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(data, self.socket)

    def sync(self, ip):
        """Send a login for `ip` and wait until its gate is there: everything sent to the
        socket before it has been handled."""
        self.datagram(f"login {ip} sync pop3\n".encode())
        wait_for(lambda: self.is_open(ip), f"the sync gate {ip}")

    def stop(self):
        for s in self.servers:
            s.stop()
        stop_process(self.watcher, timeout=10)
        self.watch_log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def site():
    if not shutil.which("tcpserver"):
        pytest.fail("tcpserver not found: .ci/run installs it (apt-get install ucspi-tcp)")
    s = Site()
    try:
        yield s
    finally:
        s.stop()


def test_wrapper_opens_during_session_and_refreshes_at_end(site):
    server = site.server([os.path.join(site.dir, "standin"), "7"], USER="alice")
    ip = "127.0.0.2"
    assert not site.is_open(ip)
    c = server.connect(ip)
    assert c.line() == "+OK standin USER=alice"
    wait_for(lambda: site.is_open(ip), "the gate during the session")
    during = site.expires(ip)
    time.sleep(1.5)
    c.send("QUIT")
    assert c.line() == "+OK bye"
    end = c.close_when_done()
    wait_for(lambda: (site.expires(ip) or 0) > during + 1, "the gate refreshed at the end")
    assert end - 1 + WINDOW <= site.expires(ip) <= end + 1 + WINDOW
    wait_for(lambda: " end " in server.text(), "tcpserver to reap the child")
    assert f"status {7 << 8}\n" in server.text(), server.text()     # the raw wait status
    assert site.watcher.poll() is None


def test_wrapper_imap_chain_records_imap(site):
    server = site.server(["--imap", os.path.join(site.dir, "standin"), "0"], USER="bob")
    c = server.connect("127.0.0.6")
    assert c.line() == "+OK standin USER=bob"
    wait_for(lambda: site.is_open("127.0.0.6"), "the gate of an IMAP chain")
    import json
    record = json.loads(open(os.path.join(site.gates, "127.0.0.6")).read())
    assert (record["protocol"], record["user"], record["pack"]) == ("imap", "bob", "popwrap")
    c.send("QUIT")
    c.close_when_done()


def test_wrapper_direct_status_signal_and_no_watcher(site):
    env = dict(site.env, TCPREMOTEIP="127.0.0.9", USER="bob")
    proc = subprocess.run(logkey_cmd() + ["popwrap", "sh", "-c", "exit 3"], env=env,
                          capture_output=True, timeout=TIMEOUT, cwd=ROOT)
    assert proc.returncode == 3 and proc.stderr == b"", proc.stderr
    site.sync("127.0.0.10")
    assert site.is_open("127.0.0.9")
    # SIGTERM is forwarded to PROG; PROG killed by it -> 128+15
    p = subprocess.Popen(logkey_cmd() + ["popwrap", "sleep", "30"], env=env, cwd=ROOT,
                         stderr=subprocess.PIPE)
    wait_for(lambda: subprocess.run(["pgrep", "-P", str(p.pid), "sleep"],
                                    capture_output=True).returncode == 0, "sleep to start")
    p.send_signal(signal.SIGTERM)
    assert p.wait(TIMEOUT) == 128 + signal.SIGTERM
    p.stderr.close()
    # No watcher at this socket: one line on stderr, PROG runs all the same.
    other = os.path.join(site.dir, "other.yaml")
    with open(other, "w") as f:
        f.write("logs: []\nstore: {type: dir, path: gates}\npopwrap: {socket: nobody.sock}\n")
    proc = subprocess.run(logkey_cmd() + ["popwrap", "sh", "-c", "echo ran; exit 0"],
                          env=dict(env, LOGKEY_CONFIG=other), capture_output=True,
                          timeout=TIMEOUT, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == b"ran\n"
    lines = proc.stderr.decode().splitlines()
    assert lines and all(x.startswith("logkey popwrap: cannot reach the watcher") for x in lines)
    assert lines[0].count("\n") == 0


def pop3_session(server, ip, password, stls=False):
    c = server.connect(ip)
    assert c.line() == "+OK fake pop3 ready"
    c.send("CAPA")
    assert [c.line() for _ in range(5)] == ["+OK", "USER", "+OK not a reply", "STLS", "."]
    if stls:
        c.send("STLS")
        assert c.line() == "+OK begin TLS"
    c.send("USER carol")
    assert c.line() == "+OK send PASS"
    c.send(f"PASS {password}")
    reply = c.line()
    return c, reply


def test_filter_pop3(site):
    server = site.server(["--filter", sys.executable, os.path.join(site.dir, "fakepop3.py")])
    c, reply = pop3_session(server, "127.0.0.3", "secret")
    assert reply == "+OK welcome"
    wait_for(lambda: site.is_open("127.0.0.3"), "the gate after PASS +OK")
    during = site.expires("127.0.0.3")
    time.sleep(1.2)
    c.send("QUIT")
    assert c.line() == "+OK bye"
    end = c.close_when_done()
    wait_for(lambda: site.expires("127.0.0.3") > during + 0.5, "the refresh at the end")
    assert end - 1 + WINDOW <= site.expires("127.0.0.3") <= end + 1 + WINDOW

    c, reply = pop3_session(server, "127.0.0.4", "wrong")          # refused: nothing
    assert reply == "-ERR wrong"
    c.send("QUIT")
    assert c.line() == "+OK bye"
    c.close_when_done()
    c, reply = pop3_session(server, "127.0.0.5", "secret", stls=True)  # blind after STLS
    assert reply == "+OK welcome"
    c.send("QUIT")
    c.close_when_done()
    site.sync("127.0.0.11")
    assert site.expires("127.0.0.4") is None and site.expires("127.0.0.5") is None


def imap_session(server, ip, how, password, starttls=False):
    c = server.connect(ip)
    assert c.line() == "* OK fake imap ready"
    if starttls:
        c.send("s1 STARTTLS")
        assert c.line() == "s1 OK begin TLS"
    if how == "login":
        c.send(f'a1 LOGIN "dave" "{password}"')
    else:
        c.send("a1 AUTHENTICATE PLAIN")
        assert c.line() == "+ "
        c.send(base64.b64encode(b"\0dave\0" + password.encode()).decode())
    reply = c.line()
    c.send("a2 LOGOUT")
    assert c.line() == "* BYE"
    assert c.line() == "a2 OK bye"
    c.close_when_done()
    return reply


def test_filter_imap(site):
    server = site.server(["--filter", sys.executable, os.path.join(site.dir, "fakeimap.py")])
    assert imap_session(server, "127.0.0.6", "login", "secret") == "a1 OK logged in"
    assert imap_session(server, "127.0.0.7", "authenticate", "secret") == "a1 OK authenticated"
    assert imap_session(server, "127.0.0.8", "login", "wrong") == "a1 NO wrong"
    assert imap_session(server, "127.0.0.12", "login", "secret", starttls=True) == \
        "a1 OK logged in"
    site.sync("127.0.0.13")
    assert site.is_open("127.0.0.6") and site.is_open("127.0.0.7")
    assert site.expires("127.0.0.8") is None and site.expires("127.0.0.12") is None
    with open(os.path.join(site.gates, "127.0.0.7")) as f:
        assert '"dave"' in f.read()                 # the user from the SASL PLAIN exchange


def test_bad_datagrams_are_ignored(site):
    for data in (b"", b"garbage", b"login 127.0.0.20 eve pop3 1 extra", b"login 127.0.0.20",
                 b"open 127.0.0.20 eve pop3", b"login 127.0.0.020 eve pop3",
                 b"login example.org eve pop3", b"login 127.0.0.20 eve smtp",
                 b"login 127.0.0.20 e\tve pop3", b"login 127.0.0.20 e\x01ve pop3",
                 b"login 127.0.0.20 \xff pop3", b"login  127.0.0.20 eve pop3",
                 b"login 127.0.0.20 " + b"e" * 600 + b" pop3", b"\0" * 512,
                 b"login 127.0.0.1 root pop3"):                  # valid, but never_gate
        site.datagram(data)
    site.sync("127.0.0.21")
    assert site.expires("127.0.0.20") is None and site.expires("127.0.0.1") is None
    assert site.watcher.poll() is None
    assert "bad datagram" in site.watch_text()
