"""Real servers for the end-to-end suite (tests/test_e2e_*.py): dovecot, postfix, rsyslog and
logkey's own daemons, each on loopback ports with its configuration in a temp dir of its own.

Nothing outside those temp dirs is changed: dovecot gets its own base_dir and log file, postfix
runs as a separate instance (`postfix -c DIR`, its own queue directory, logging to a file through
postlogd), rsyslog runs with dovecot inside a private mount namespace whose /dev is a tmpfs, so
the machine's /dev/log is never touched. Every start waits (bounded) until the server answers;
every stop kills what was started, also when a test failed half-way.

The servers run as root (the suite runs as root, like CI); the temp dirs are mode 0755 because
dovecot's and postfix's unprivileged processes must reach their sockets and queue there.
"""
from __future__ import annotations

import os
import poplib
import imaplib
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

from conftest import ROOT, free_port, wait_for

sys.path.insert(0, str(ROOT / "tools" / "capture"))
from clients import IMAPFrom, POP3From  # noqa: E402  (shared with the capture scripts)

PASSWORD = "e2e-secret"
OUTSIDE = "someone@outside.example"       # not one of postfix's domains: relaying
DEBIAN_PACKAGES = "dovecot-pop3d dovecot-imapd postfix postfix-lmdb swaks redis-server ucspi-tcp rsyslog"


def server_dir(prefix: str) -> Path:
    """A short temp dir (unix socket paths are limited) the servers' own users can enter."""
    path = Path(tempfile.mkdtemp(prefix=f"lk-{prefix}-"))
    path.chmod(0o755)
    return path


def port_open(port, host="127.0.0.1") -> bool:
    import socket
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def keep_logs(name: str, files: list[Path], ledger: list[dict]) -> None:
    """With LOGKEY_E2E_KEEP=DIR (tools/capture/e2e.sh sets it), copy what a server logged during
    the current test into DIR/<test>-<name>.log (rotated files first, in order) with the
    clients' own account of what they did beside it (<...>.ledger.json): the pack tests read
    these (tests/test_e2e_fixtures.py), so the packs are tested on what the servers wrote."""
    keep = os.environ.get("LOGKEY_E2E_KEEP")
    if not keep or not ledger:
        return
    import json
    import re
    test = os.environ.get("PYTEST_CURRENT_TEST", "e2e").split("::")[-1].split(" ")[0]
    stem = Path(keep) / re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{test}-{name}").strip("-")
    Path(keep).mkdir(parents=True, exist_ok=True)
    with open(f"{stem}.log", "wb") as out:
        for path in files:
            if path.exists():
                out.write(path.read_bytes())
    with open(f"{stem}.ledger.json", "w") as out:
        json.dump(ledger, out, indent=0)
        out.write("\n")


def kill_group(proc):
    """SIGKILL to proc's process group (started with start_new_session=True), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def missing_programs() -> list[str]:
    wanted = ["dovecot", "postfix", "postmap", "swaks", "redis-server", "tcpserver", "tcprules",
              "rsyslogd", "unshare"]
    return [p for p in wanted if not shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")]


def release() -> str:
    """The system and Python the suite runs on, e.g. "Debian 13.8 (trixie), Python 3.13.5"
    (pytest's report header: .ci/run runs the suite on Debian 12, .ci/debian13 on 13)."""
    import platform
    fields = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            fields[key] = value.strip().strip('"')
    except OSError:
        pass
    try:
        number = Path("/etc/debian_version").read_text().strip()
    except OSError:
        number = fields.get("VERSION_ID", "?")
    name = fields.get("NAME", "unknown system").replace(" GNU/Linux", "")
    codename = fields.get("VERSION_CODENAME", "")
    return (f"{name} {number}" + (f" ({codename})" if codename else "")
            + f", Python {platform.python_version()}")


def _first_line(cmd) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0].strip() if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


def deb_version(pkg: str) -> str:
    """The installed Debian package's version (`1:0.88-7`), as dpkg-query says it."""
    return _first_line(["dpkg-query", "-W", "-f=${Version}", pkg])


def versions() -> list[str]:
    """One line per server the suite runs against (pytest's report header)."""
    first, deb = _first_line, deb_version
    return [f"dovecot {first(['dovecot', '--version'])} (Debian {deb('dovecot-core')})",
            f"postfix {first(['postconf', '-d', '-h', 'mail_version'])} (Debian {deb('postfix')})",
            f"{first(['redis-server', '--version'])}",
            f"rsyslog {deb('rsyslog')}",
            f"swaks {deb('swaks')}, ucspi-tcp {deb('ucspi-tcp')}"]


# -- dovecot -------------------------------------------------------------------------------------

@cache
def dovecot_version() -> tuple[int, int]:
    """(major, minor) of the installed dovecot (`dovecot --version`: "2.3.19.1 (9b53102964)",
    "2.4.1-4 (7d8c0e5759)"); AssertionError when there is none."""
    import re
    try:
        out = subprocess.run(["dovecot", "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except OSError as exc:
        raise AssertionError(f"dovecot --version: {exc}; .ci/run installs dovecot-core") from None
    found = re.match(r"(\d+)\.(\d+)", out)
    assert found, f"dovecot --version said {out!r}"
    return int(found[1]), int(found[2])


def dovecot_config(users: Path, settings: str, version: tuple[int, int] | None = None) -> str:
    """A dovecot.conf in the installed version's syntax: `settings` (lines the same in 2.3 and
    2.4: listen, base_dir, log_path, instance_name, services ...), then plaintext logins without
    TLS allowed, user names taken as typed (not lowercased), passdb and userdb from the
    passwd-file `users`, maildir in ~/Maildir. 2.4 (Debian 13) renamed or replaced all of
    these (dovecot_config_version first, auth_allow_cleartext, named passdb/userdb blocks,
    mail_driver/mail_path, %{user}); 2.3 (Debian 12) refuses the 2.4 names, and the reverse.
    `version`: write for that release instead (a dovecot started from another root)."""
    if (version or dovecot_version()) >= (2, 4):
        return f"""# generated by tests/servers.py for dovecot 2.4
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
{settings}auth_allow_cleartext = yes
auth_username_format = %{{user}}
mail_driver = maildir
mail_path = %{{home}}/Maildir
passdb passwd-file {{
  default_password_scheme = PLAIN
  passwd_file_path = {users}
}}
userdb passwd-file {{
  passwd_file_path = {users}
}}
"""
    return f"""# generated by tests/servers.py for dovecot 2.3
{settings}disable_plaintext_auth = no
auth_username_format = %u
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
}}
"""


def dovecot_login_word() -> str:
    """What a successful login line of the installed dovecot says after `pop3-login: `."""
    return "Logged in" if dovecot_version() >= (2, 4) else "Login"


class Dovecot:
    """A private dovecot (POP3 + IMAP on 127.0.0.1, passwd-file users, plaintext auth allowed).
    log is "file" (log_path = DIR/dovecot.log, dovecot's own file) or "syslog" (then it must be
    started by a SyslogNamespace, which runs it beside rsyslogd)."""

    def __init__(self, name="dovecot", log="file", users=None, version=None):
        self.dir = server_dir(name)
        self.name = name
        self.pop_port, self.imap_port = free_port(), free_port()
        self.log_path = self.dir / "dovecot.log"
        self.users = users or {"test": PASSWORD}
        self.proc = None
        self.ledger = []            # what the clients did: {ip, protocol, user, ok}
        (self.dir / "home").mkdir()
        lines = []
        for i, (user, password) in enumerate(self.users.items()):
            home = self.dir / "home" / f"u{i}"
            home.mkdir()
            os.chown(home, 65534, 65534)
            lines.append(f"{user}:{{PLAIN}}{password}:65534:65534::{home}::\n")
        (self.dir / "users").write_text("".join(lines))
        target = "syslog" if log == "syslog" else self.log_path
        self.config = self.dir / "dovecot.conf"
        self.config.write_text(dovecot_config(self.dir / "users", f"""\
protocols = pop3 imap
listen = 127.0.0.1
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {target}
info_log_path = {target}
syslog_facility = mail
instance_name = {name}
ssl = no
auth_mechanisms = plain login
auth_username_chars =
auth_verbose = yes
auth_failure_delay = 0
first_valid_uid = 100
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""", version))

    def command(self) -> list[str]:
        return ["dovecot", "-F", "-c", str(self.config)]

    def start(self):
        self.log_path.touch()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.wait_ready()
        return self

    def wait_ready(self):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"dovecot exited: {self.proc.stderr.read().decode()[-2000:]}"
                                     f"{self.log_path.read_text(errors='replace')[-2000:]}")
            return port_open(self.pop_port) and port_open(self.imap_port)
        wait_for(up, timeout=20, what=f"dovecot {self.name} on ports {self.pop_port}/{self.imap_port}")

    def reopen_log(self):
        """What logrotate's postrotate does: `doveadm log reopen` (SIGUSR1 to the master)."""
        pid = int((self.dir / "run" / "master.pid").read_text())
        os.kill(pid, signal.SIGUSR1)

    def stop(self):
        """SIGKILL to the whole process group (master, login, auth, pop3/imap processes): the
        test is over, and dovecot's own SIGTERM shutdown takes a second."""
        if self.proc is not None:
            kill_group(self.proc)
            self.proc.stderr.close()
        rotated = sorted(self.dir.glob("dovecot.log.*"), key=lambda p: int(p.suffix[1:]))
        keep_logs(self.name, rotated + [self.log_path], self.ledger)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- clients: every session from its own loopback source address --------------------------

    def pop_login(self, src, user="test", password=PASSWORD) -> bool:
        """USER/PASS, STAT, QUIT from src; True when the server accepted the password."""
        p = POP3From(src, self.pop_port)
        ok = False
        try:
            p.user(user)
            p.pass_(password)
            p.stat()
            ok = True
            return True
        except poplib.error_proto:
            return False
        finally:
            self.ledger.append({"ip": src, "protocol": "pop3", "user": user, "ok": ok})
            try:
                p.quit()
            except (poplib.error_proto, OSError):
                p.close()

    def imap_login(self, src, user="test", password=PASSWORD) -> bool:
        m = IMAPFrom(src, self.imap_port)
        ok = False
        try:
            quoted = '"' + user.replace("\\", "\\\\").replace('"', '\\"') + '"'
            m.login(quoted, password)
            m.select("INBOX")
            ok = True
            return True
        except imaplib.IMAP4.error:
            return False
        finally:
            self.ledger.append({"ip": src, "protocol": "imap", "user": user, "ok": ok})
            try:
                m.logout()
            except (imaplib.IMAP4.error, OSError):
                pass

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


# -- rsyslog + dovecot in a private mount namespace ------------------------------------------------

NAMESPACE_SCRIPT = r"""
set -eu
d=$1; shift
mount -t tmpfs -o mode=755,size=1m e2e-dev "$d/dev"
for n in null zero urandom random; do
  touch "$d/dev/$n"; mount --bind "/dev/$n" "$d/dev/$n"
done
mount --rbind "$d/dev" /dev
rsyslogd -n -f "$d/rsyslog.conf" -i "$d/rsyslog.pid" &
for _ in $(seq 200); do [ -S /dev/log ] && break; sleep 0.05; done
[ -S /dev/log ] || { echo "rsyslogd did not create /dev/log" >&2; exit 1; }
chmod 666 /dev/log
exec "$@"
"""


class SyslogNamespace:
    """rsyslogd and a Dovecot(log="syslog") in their own mount namespace (`unshare -m`): a tmpfs
    over /dev holds the /dev/log that rsyslogd's imuxsock creates and dovecot's syslog() writes
    to. rsyslogd writes every message to two files: `traditional` (RSYSLOG_TraditionalFileFormat,
    "Nov 28 02:25:00 host tag: msg") and `rfc3339` (RSYSLOG_FileFormat, high-precision RFC 3339
    stamps)."""

    def __init__(self, dovecot: Dovecot):
        self.dovecot = dovecot
        self.dir = dovecot.dir / "syslog"
        (self.dir / "dev").mkdir(parents=True)
        (self.dir / "work").mkdir()
        self.traditional = self.dir / "traditional.log"
        self.rfc3339 = self.dir / "rfc3339.log"
        (self.dir / "rsyslog.conf").write_text(f"""# generated by tests/servers.py
global(workDirectory="{self.dir}/work")
module(load="imuxsock" SysSock.RateLimit.Interval="0")
mail.* action(type="omfile" file="{self.traditional}" template="RSYSLOG_TraditionalFileFormat")
mail.* action(type="omfile" file="{self.rfc3339}" template="RSYSLOG_FileFormat")
""")
        self.proc = None

    def start(self):
        self.traditional.touch()
        self.rfc3339.touch()
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "bash", "-c", NAMESPACE_SCRIPT,
             "e2e-namespace", str(self.dir), *self.dovecot.command()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        self.dovecot.proc = self.proc
        self.dovecot.wait_ready()
        return self

    def stop(self):
        if self.proc is not None:
            kill_group(self.proc)
            self.proc.stderr.close()
        for path in (self.traditional, self.rfc3339):
            keep_logs(f"rsyslog-{path.stem}", [path], self.dovecot.ledger)
        self.dovecot.ledger = []       # kept with the syslog files, not with an empty log_path
        self.dovecot.proc = None
        self.dovecot.stop()


# -- postfix -------------------------------------------------------------------------------------

MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A separate postfix instance (`postfix -c DIR`): smtpd on 127.0.0.1:port for each entry of
    `listeners` ({name: smtpd_relay_restrictions, or None for main.cf's own}), plus whatever
    `extra_main` and `extra_master` add (their ports in extra_ports), mynetworks = 127.0.0.1/32 only (so the test
    clients 127.0.0.2... are outsiders), no DNS, every relayed message discarded
    (default_transport = discard), log in DIR/maillog through postlogd."""

    def __init__(self, listeners: dict[str, str | None], extra_main: str = "",
                 extra_master: str = "", extra_ports: dict[str, int] | None = None):
        assert all(name.isidentifier() for name in listeners), "postfix parameter names"
        self.dir = server_dir("postfix")
        self.conf = self.dir / "conf"
        for d in ("conf", "queue", "data"):
            (self.dir / d).mkdir()
        shutil.chown(self.dir / "data", "postfix")
        self.maillog = self.dir / "maillog"
        self.ports = {name: free_port() for name in listeners}
        params = "".join(f"e2e_relay_{name} = {rules}\n" for name, rules in listeners.items()
                         if rules is not None)
        services = "".join(
            f"127.0.0.1:{port} inet n - n - - smtpd"
            + (f" -o smtpd_relay_restrictions=$e2e_relay_{name}" if listeners[name] else "")
            + "\n" for name, port in self.ports.items())
        self.ports.update(extra_ports or {})      # listeners the caller's extra_master opens
        (self.conf / "main.cf").write_text(f"""# generated by tests/servers.py
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.logkey.test
mydomain = logkey.test
mydestination = mx.logkey.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
default_transport = discard:relayed by the logkey e2e suite
relay_transport = discard:relayed by the logkey e2e suite
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file = {self.maillog}
maillog_file_prefixes = {self.dir}
smtpd_policy_service_timeout = 20s
{params}{extra_main}""")
        (self.conf / "master.cf").write_text(MASTER_CF + services + extra_master)

    def postfix(self, *args, check=True):
        proc = subprocess.run(["postfix", "-c", str(self.conf), *args], capture_output=True,
                              text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"postfix {' '.join(args)}: {proc.returncode}\n{proc.stderr}"
                                 f"{self.log()}")
        return proc

    def start(self):
        self.postfix("start")
        wait_for(lambda: all(port_open(p) for p in self.ports.values()), timeout=20,
                   what=f"postfix smtpd on {sorted(self.ports.values())}")
        return self

    def stop(self):
        self.postfix("abort", check=False)
        pid_file = self.dir / "queue" / "pid" / "master.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            return "\n" + self.maillog.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def relay(self, src, listener=None, rcpt=OUTSIDE) -> tuple[int, str]:
        """One SMTP transaction from source address src to an outside recipient: (code, text)
        of the RCPT reply; on 250 the message is sent too (DATA) and its reply returned."""
        port = self.ports[listener or next(iter(self.ports))]
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.logkey.test",
                          source_address=(src, 0), timeout=30) as smtp:
            smtp.ehlo()
            code, text = smtp.mail("sender@client.logkey.test")
            assert code == 250, (code, text)
            code, text = smtp.rcpt(rcpt)
            if code == 250:
                code, text = smtp.data(b"Subject: logkey e2e\r\n\r\nrelayed\r\n")
            return code, text.decode(errors="replace")

    def relays(self, src, listener=None) -> bool:
        code, text = self.relay(src, listener)
        if code == 250:
            return True
        assert code == 554 and "Relay access denied" in text, (code, text, self.log())
        return False


# -- tcpserver (ucspi-tcp) with a stand-in for qmail-smtpd ----------------------------------------

STANDIN_SMTPD = ('if [ "${RELAYCLIENT+set}" = set ]; then echo "relay $TCPREMOTEIP"; '
                 'else echo "norelay $TCPREMOTEIP"; fi')


class TcpServer:
    """`tcpserver [-x CDB] 127.0.0.1 PORT [wrapper...] sh -c STANDIN_SMTPD`: the stand-in tells
    the client whether it was given RELAYCLIENT, as qmail-smtpd would act on it."""

    def __init__(self, wrapper=(), rules_cdb=None, env=None, argv=None):
        """argv: a whole tcpserver command line of the caller's (its port is self.port);
        else one built from wrapper and rules_cdb."""
        self.port = free_port()
        if argv is None:
            rules = ["-x", str(rules_cdb)] if rules_cdb else []
            argv = ["tcpserver", "-R", "-H", "-l", "localhost", *rules, "127.0.0.1",
                    str(self.port), *wrapper, "/bin/sh", "-c", STANDIN_SMTPD]
        else:
            argv = [str(self.port) if a == "{port}" else a for a in argv]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True)
        wait_for(lambda: port_open(self.port), what=f"tcpserver on {self.port}")

    def relays(self, src) -> bool:
        import socket
        with socket.socket() as s:
            s.settimeout(10)
            s.bind((src, 0))
            s.connect(("127.0.0.1", self.port))
            data = b""
            while chunk := s.recv(256):
                data += chunk
        answer = data.decode().strip()
        assert answer in (f"relay {src}", f"norelay {src}"), answer
        return answer.startswith("relay")

    def stop(self):
        kill_group(self.proc)


class TempDir:
    """A server_dir removed at stop(), for files servers read as their own users (maps)."""

    def __init__(self, prefix):
        self.path = server_dir(prefix)

    def stop(self):
        shutil.rmtree(self.path, ignore_errors=True)


# -- logkey's own daemons --------------------------------------------------------------------------

def logkey_cmd() -> list[str]:
    exe = os.environ.get("LOGKEY_EXE")
    return [exe] if exe else [sys.executable, "-m", "logkey"]


class Logkey:
    """`logkey watch` or `logkey policy` as a real process; stderr kept in a file."""

    def __init__(self, command: str, config: Path, *args, env=None):
        self.command, self.config, self.args = command, config, args
        self.env = {**os.environ, **(env or {})}
        self.stderr_path = config.parent / f"{command}-{time.monotonic_ns()}.err"
        self.proc = None

    def spawn(self):
        """Start it and return at once (start() also waits until it is serving)."""
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(logkey_cmd() + [self.command, "--config", str(self.config),
                                                         *self.args],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, cwd=ROOT, env=self.env)
        return self

    def start(self, ready=None):
        self.spawn()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"logkey {self.command} exited {self.proc.returncode}: "
                                     f"{self.log()}")
            return ready() if ready else "watching" in self.log()
        wait_for(up, timeout=20, what=f"logkey {self.command} to start")
        return self

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode if self.proc else None


# -- a mail site: what the end-to-end tests start, stopped together ----------------------------

class Site:
    """One mail site: dovecot(s) whose logs logkey watches, a gate store, `logkey policy`, and
    a postfix whose relay restrictions ask that policy service."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.running = []

    def add(self, thing):
        self.running.append(thing)
        return thing

    def dovecot(self, name="dovecot", **kw):
        return self.add(Dovecot(name, **kw)).start()

    def config(self, name, logs, store=None, window="10m", policy_port=None, extra=""):
        """A logkey config file: logs = [(path, pack)], a dir store by default."""
        path = self.tmp / f"{name}.yaml"
        store = store or f"{{type: dir, path: {self.tmp / (name + '-gates')}}}"
        text = "logs:\n" + "".join(f"  - path: {p}\n    packs: [{pack}]\n" for p, pack in logs)
        text += f"store: {store}\nstate_dir: {self.tmp / (name + '-state')}\nwindow: {window}\n"
        if policy_port:
            text += f"policy:\n  listen: [inet:127.0.0.1:{policy_port}]\n"
        path.write_text(text + extra)
        return path

    def watch(self, config, *args, env=None):
        return self.add(Logkey("watch", config, *args, env=env)).start()

    def policy(self, config, port):
        return self.add(Logkey("policy", config)).start(ready=lambda: port_open(port))

    def postfix(self, policy_ports: dict[str, int] | None = None,
                maps: dict[str, str] | None = None, start=True):
        """listeners: one per policy port ({name: port}) asking it, one per access map."""
        listeners = {}
        for name, port in (policy_ports or {}).items():
            listeners[name] = ("permit_mynetworks, permit_auth_destination, "
                               f"check_policy_service inet:127.0.0.1:{port}, "
                               "reject_unauth_destination")
        for name, table in (maps or {}).items():
            listeners[name] = (f"permit_mynetworks, permit_auth_destination, "
                               f"check_client_access {table}, reject_unauth_destination")
        postfix = self.add(Postfix(listeners))
        return postfix.start() if start else postfix

    def stop(self):
        for thing in reversed(self.running):
            try:
                thing.stop()
            except Exception as exc:       # keep stopping the others
                print(f"stopping {thing!r}: {exc}")
