"""The MTAs that conflict with postfix in Debian (Exim 4, OpenSMTPD, sendmail), really run for
tests/test_e2e_mta.py: their Debian 12 packages are unpacked (never installed) by .ci/mta-roots
into private roots under $LOGKEY_MTA_ROOTS (default /var/cache/logkey/mta).

Each MTA runs in a private mount namespace (`unshare -m`, held open by a `sleep` whose
namespace the servers and logkey enter with `nsenter -m`): the MTA's root is laid over /etc,
/usr and /var with overlayfs, and a network namespace of its own whose lo also has the IPv6
client addresses (2001:db8::50/64); dovecot runs there too, and the clients
(tests/mta_client.py) are run there with nsenter, each with an upper layer in a temp dir of its own, so the
builds' compiled-in paths (/etc/exim4, /var/spool/exim4, /etc/smtpd.conf, /var/spool/smtpd,
/etc/mail, /usr/lib/sm.bin, ...) are theirs and nothing of the machine changes; /run gets an
overlay too (smtpd.sock, sendmail.pid). The namespace's /etc also has the users the MTAs and
logkey's units run as, host names from files only (nsswitch.conf; resolv.conf points at
127.0.0.1: no MTA sends a DNS query anywhere) and an /etc/hosts naming mx.logkey.test.

`Namespace.as_unit()` runs a command as the shipped systemd unit would (contrib/systemd): its
User=, Group=, SupplementaryGroups=, NoNewPrivileges=yes and an empty capability bounding set
through setpriv, and ProtectSystem=strict with its ReadWritePaths= through a nested mount
namespace in which every mount is read-only but those paths. systemd is not PID 1 here.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, wait_for
from servers import PASSWORD, kill_group, server_dir

CLIENT = Path(__file__).with_name("mta_client.py")

ROOTS = Path(os.environ.get("LOGKEY_MTA_ROOTS", "/var/cache/logkey/mta"))
UNITS = ROOT / "contrib" / "systemd"

# Users the MTAs and logkey's units run as, with uids/gids no Debian system account takes;
# only in the namespaces' /etc. (name, uid, gid, groups it is also in)
USERS = {
    "Debian-exim": (64201, 64201),
    "logkey": (64202, 64202),
    "opensmtpd": (64203, 64203),
    "opensmtpq": (64204, 64204),
    "smmsp": (64205, 64205),
    "smmta": (64206, 64206),
}


def ensure_root(mta: str) -> Path:
    """The unpacked root of this MTA, made by .ci/mta-roots when it is missing."""
    if not (ROOTS / f"{mta}.versions").exists():
        proc = subprocess.run(["bash", str(ROOT / ".ci" / "mta-roots")], capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f".ci/mta-roots failed:\n{proc.stdout}{proc.stderr}"
    return ROOTS / mta


def versions() -> list[str]:
    """One line per unpacked MTA (pytest's report header)."""
    out = []
    for mta in ("exim", "opensmtpd", "sendmail"):
        try:
            out.append(f"{mta}: {(ROOTS / f'{mta}.versions').read_text().strip()}")
        except OSError:
            out.append(f"{mta}: not unpacked (.ci/mta-roots)")
    return out


V6_CLIENT = "2001:db8::50"     # an IPv6 client address (on the namespace's lo, in 2001:db8::/64)
V6_NEIGHBOUR = "2001:db8::51"  # another address in the same /64

SETUP = r"""
set -eu
T=$1; R=$2
ip link set lo up
ip -6 addr add 2001:db8::50/64 dev lo
for d in etc usr var run; do
    lower=/$d
    # /var holds the roots themselves: their var/ is copied into the upper layer instead
    # (overlayfs refuses a lower layer inside another one)
    [ "$d" != var ] && [ -d "$R/$d" ] && lower="$R/$d:/$d"
    mount -t overlay "lk-$d" -o "lowerdir=$lower,upperdir=$T/up/$d,workdir=$T/wk/$d" "/$d"
done
echo ready > "$T/ready"
exec sleep 86400
"""


class Namespace:
    """A private mount namespace with an MTA's root laid over /etc, /usr, /var and /run."""

    def __init__(self, mta: str, hostname="mx.logkey.test"):
        self.mta = mta
        self.root = ensure_root(mta)
        self.dir = server_dir(f"ns-{mta}")
        for d in ("etc", "usr", "var", "run"):
            (self.dir / "up" / d).mkdir(parents=True)
            (self.dir / "wk" / d).mkdir(parents=True)
        self.etc = self.dir / "up" / "etc"
        if (self.root / "var").is_dir():
            shutil.copytree(self.root / "var", self.dir / "up" / "var", symlinks=True,
                            dirs_exist_ok=True)
        self._users()
        (self.etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (self.etc / "hosts").write_text(f"127.0.0.1 localhost {hostname}\n::1 localhost ip6-localhost\n"
                                        "127.0.0.9 client.logkey.test\n")   # the senders' domain
        (self.etc / "mailname").write_text(hostname + "\n")
        nss = Path("/etc/nsswitch.conf").read_text().splitlines()   # no DNS: names from files
        (self.etc / "nsswitch.conf").write_text("".join(
            ("hosts: files" if line.startswith("hosts:") else line) + "\n" for line in nss))
        self.procs = []
        self.holder = subprocess.Popen(
            ["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", SETUP, "lk-ns",
             str(self.dir), str(self.root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)

        def ready():
            if self.holder.poll() is not None:
                raise AssertionError(f"namespace setup failed: {self.holder.stderr.read().decode()}")
            return (self.dir / "ready").exists()
        wait_for(ready, timeout=20, what=f"the {mta} namespace")
        print("namespace", self.dir)          # (kept after the test with LOGKEY_MTA_KEEP=1)

    def _users(self):
        def add(name, extra_lines):
            host = Path("/etc", name).read_text()
            known = {line.split(":", 1)[0] for line in host.splitlines()}
            lines = [line for line in extra_lines if line.split(":", 1)[0] not in known]
            (self.etc / name).write_text(host + "".join(lines))
            os.chmod(self.etc / name, 0o640 if name == "shadow" else 0o644)
        add("passwd", [f"{u}:x:{uid}:{gid}:{u}:/nonexistent:/usr/sbin/nologin\n"
                       for u, (uid, gid) in USERS.items()])
        add("group", [f"{u}:x:{gid}:\n" for u, (_, gid) in USERS.items()])
        add("shadow", [f"{u}:!:19000:0:99999:7:::\n" for u in USERS])

    def path(self, inside: str) -> Path:
        """Where a file written inside the namespace under /etc, /var or /run is seen from
        outside (the upper layer); for writing before a server reads it."""
        top, _, rest = inside.lstrip("/").partition("/")
        assert top in ("etc", "var", "run"), inside
        return self.dir / "up" / top / rest

    def write(self, inside: str, text: str, mode=0o644, owner: str | None = None):
        path = self.path(inside)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        if owner:
            self.chown(inside, owner)
        return path

    def mkdir(self, inside: str, mode=0o755, owner: str | None = None):
        path = self.path(inside)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        if owner:
            self.chown(inside, owner)
        return path

    def chown(self, inside: str, owner: str):
        user, _, group = owner.partition(":")
        uid = USERS[user][0] if user in USERS else shutil._get_uid(user) if user else -1
        gid = (USERS[group][1] if group in USERS else shutil._get_gid(group)) if group else -1
        os.chown(self.path(inside), uid, gid)

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--", *argv]

    # -- clients, inside the namespace's network (tests/mta_client.py) --

    def client(self, *args, timeout=60) -> str:
        proc = subprocess.run(self.argv([sys.executable, str(CLIENT), *map(str, args)]),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode not in (0, 1) or proc.stderr:
            raise AssertionError(f"mta_client {args}: {proc.returncode} {proc.stderr}")
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def port_open(self, port, host="127.0.0.1") -> bool:
        return subprocess.run(self.argv([sys.executable, str(CLIENT), "open", host, str(port)]),
                              capture_output=True, timeout=30).returncode == 0

    def pop_login(self, dovecot, src, user="test", password=PASSWORD) -> bool:
        return self.client("pop", src, dovecot.pop_port, user, password) == "ok"

    def rcpt(self, src, port, rcpt) -> tuple[int, str]:
        host = "::1" if ":" in src else "127.0.0.1"
        code, _, text = self.client("rcpt", src, host, port, rcpt).partition(" ")
        return int(code), text

    def dovecot(self, dovecot):
        """Run a servers.Dovecot (made, not started) in this namespace."""
        dovecot.log_path.touch()
        dovecot.proc = self.spawn(dovecot.command(), stderr=subprocess.PIPE)
        wait_port(dovecot.pop_port, ns=self, proc=dovecot.proc, what="dovecot")
        return dovecot

    def run(self, argv, *, check=True, timeout=60, input=None, env=None) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout,
                              input=input, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
        return proc

    def spawn(self, argv, *, stderr=None, env=None) -> subprocess.Popen:
        proc = subprocess.Popen(self.argv(argv), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=stderr if stderr is not None else subprocess.DEVNULL,
                                start_new_session=True, env=env)
        self.procs.append(proc)
        return proc

    def as_unit(self, unit: str, argv: list[str], *, read_write=(), groups=()) -> list[str]:
        """argv as contrib/systemd/UNIT runs it: its User=, Group=, SupplementaryGroups= (plus
        `groups`, a drop-in's), NoNewPrivileges, no capabilities, and ProtectSystem=strict with
        its ReadWritePaths= (plus `read_write`). The command line to give run() or spawn()."""
        settings = {}
        for line in (UNITS / unit).read_text().splitlines():
            if line and line[0] not in "#[" and "=" in line:
                key, _, value = line.partition("=")
                settings.setdefault(key, []).append(value)
        assert settings["NoNewPrivileges"] == ["yes"] and settings["CapabilityBoundingSet"] == [""]
        assert settings["ProtectSystem"] == ["strict"]
        user, group = settings["User"][0], settings["Group"][0]
        supplementary = [g for v in settings.get("SupplementaryGroups", []) for g in v.split()]
        supplementary += list(groups)
        rw = [p for v in settings.get("ReadWritePaths", []) for p in v.split()] + list(read_write)
        gids = ",".join(str(USERS[g][1] if g in USERS else shutil._get_gid(g))
                        for g in supplementary) or "-"
        script = "set -e\n"
        for p in rw:                               # ReadWritePaths: their own rw mounts
            script += f"mkdir -p {p} 2>/dev/null || true; mount --bind {p} {p}\n"
        script += ("for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do\n"
                   "  case \" " + " ".join(rw) + " \" in *\" $m \"*) continue ;; esac\n"
                   "  case $m in /proc*|/sys*|/dev*) continue ;; esac\n"
                   "  mount -o remount,bind,ro \"$m\" 2>/dev/null || true\n"
                   "done\n"
                   "exec \"$@\"\n")
        uid, gid = USERS[user][0], USERS[group][1]
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "as-unit",
                "setpriv", f"--reuid={uid}", f"--regid={gid}",
                f"--groups={gids}" if gids != "-" else "--clear-groups",
                "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--", *argv]

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                kill_group(proc)
        if self.holder.poll() is None:
            kill_group(self.holder)
        self.holder.stderr.close()
        if not os.environ.get("LOGKEY_MTA_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


def kill_pidfile(ns: Namespace, inside: str, sig=signal.SIGTERM) -> bool:
    try:
        pid = int(ns.path(inside).read_text().split()[0])
        os.kill(pid, sig)
        return True
    except (OSError, ValueError, IndexError):
        return False


def wait_port(port, ns: Namespace, host="127.0.0.1", proc=None, log=lambda: "", what="server"):
    def up():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited {proc.returncode}: {log()}")
        return ns.port_open(port, host)
    wait_for(up, timeout=20, what=f"{what} on {host} port {port}")


# -- SMTP client -----------------------------------------------------------------------------

OUTSIDE = "someone@outside.example"      # not a local domain of any of these MTAs: relaying
LOCAL = "root@mx.logkey.test"            # local mail (not postmaster, which some ACLs take first)


class MtaServer:
    """What the MTAs share: the daemon's argv run in the namespace (stderr kept), its ports
    ({page's port: port here}), and the RCPT answer; `refused` is the text of its refusal
    to relay (with 550)."""

    argv: list[str] = []
    refused = ""

    def __init__(self, ns: Namespace, ports: dict):
        self.ns, self.ports = ns, ports
        self.err = ns.dir / f"{type(self).__name__.lower()}.err"
        self.proc = None

    def start(self):
        with open(self.err, "ab") as err:
            self.proc = self.ns.spawn(self.argv, stderr=err)
        for port in self.ports.values():
            wait_port(port, self.ns, proc=self.proc, log=self.log, what=self.argv[0])
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            kill_group(self.proc)
        self.proc = None

    def log(self) -> str:
        return self.err.read_text(errors="replace")[-3000:]

    def answer(self, src, port=25, rcpt=OUTSIDE) -> tuple[int, str]:
        return self.ns.rcpt(src, self.ports[port], rcpt)

    def relays(self, src, port=25) -> bool:
        code, text = self.answer(src, port)
        if code == 250:
            return True
        assert code == 550 and self.refused in text, (code, text, self.log())
        return False


# -- Exim 4 (Debian's packaging: update-exim4.conf, split or unsplit configuration) -----------

EXIM_DEBCONF = """\
dc_eximconfig_configtype='internet'
dc_other_hostnames='mx.logkey.test'
dc_local_interfaces='127.0.0.1 ; ::1'
dc_readhost=''
dc_relay_domains=''
dc_minimaldns='false'
dc_relay_nets=''
dc_smarthost=''
CFILEMODE='644'
dc_use_split_config='{split}'
dc_hide_mailname=''
dc_mailname_in_oh='true'
dc_localdelivery='mail_spool'
"""
# What the suite sets for itself: no DNS (there is none), a fixed name.
EXIM_TEST_MACROS = "MAIN_HARDCODE_PRIMARY_HOSTNAME = mx.logkey.test\nMAIN_HOST_LOOKUP = !*\n"


class Exim(MtaServer):
    """Debian's exim4 (daemon-light) with Debian's own configuration, generated by
    update-exim4.conf from /etc/exim4/update-exim4.conf.conf as debconf leaves it for an
    "internet site", plus `files` ({path inside: text}, the page's snippets). Listens on
    127.0.0.1 and ::1 at self.ports ({25: port, 2525: port}: the page's port numbers to the
    ones used here, through -oX); messages are queued, never delivered (-odq)."""

    refused = "relay not permitted"

    def __init__(self, ns: Namespace, files: dict[str, str], split=True, ports=None):
        from conftest import free_port
        super().__init__(ns, ports or {25: free_port()})
        listen = " ; ".join(f"{h}.{p}" for p in self.ports.values() for h in ("127.0.0.1", "::1"))
        self.argv = ["exim4", "-bdf", "-odq", "-oX", f"<; {listen}"]
        ns.write("/etc/exim4/update-exim4.conf.conf",
                 EXIM_DEBCONF.format(split="true" if split else "false"))
        if split:
            ns.write("/etc/exim4/conf.d/main/000_logkey-test", EXIM_TEST_MACROS)
        else:
            files = {**files}
            local = "/etc/exim4/exim4.conf.localmacros"
            files[local] = EXIM_TEST_MACROS + files.get(local, "")
        for path, text in files.items():
            ns.write(path, text)
        ns.mkdir("/var/log/exim4", 0o750, "Debian-exim:adm")
        ns.mkdir("/var/spool/exim4", 0o750, "Debian-exim:Debian-exim")
        ns.run(["update-exim4.conf"])

    def log(self) -> str:
        out = super().log()
        for name in ("mainlog", "paniclog", "rejectlog"):
            try:
                out += f"\n--- {name}\n" + self.ns.path(f"/var/log/exim4/{name}").read_text(
                    errors="replace")[-2000:]
            except OSError:
                pass
        return out


# -- OpenSMTPD -------------------------------------------------------------------------------

OPENSMTPD_BASE = """\
# generated by tests/mtas.py: Debian's /etc/smtpd.conf, listening on the test's ports, with
# the page's lines. Debian's `match from local for any action "relay"` is narrowed to the
# loopback addresses: the IPv6 client address is on the namespace's own lo, which makes it
# `local` too.
table aliases file:/etc/aliases
{listen}
action "local" maildir alias <aliases>
action "relay" relay
match from any for domain "mx.logkey.test" action "local"
match for local action "local"
match from src {{ 127.0.0.1, ::1 }} for any action "relay"
{page}
"""


class OpenSMTPD(MtaServer):
    """Debian's smtpd (6.8.0p2) as `smtpd -d -f /etc/smtpd.conf` in the namespace; `page` is
    the page's smtpd.conf lines (ports already substituted), `listen` the listen lines."""

    argv = ["smtpd", "-d", "-f", "/etc/smtpd.conf"]
    refused = "Invalid recipient"

    def __init__(self, ns: Namespace, page: str, listen: str, ports: dict):
        super().__init__(ns, ports)
        ns.write("/etc/smtpd.conf", OPENSMTPD_BASE.format(listen=listen, page=page))
        ns.mkdir("/var/spool/smtpd", 0o711)
        ns.mkdir("/var/lib/opensmtpd/empty", 0o755)
        # what the package's postinst does (dpkg-statoverride): smtpctl setgid opensmtpq
        ns.run(["chgrp", "opensmtpq", "/usr/sbin/smtpctl"])
        ns.run(["chmod", "2555", "/usr/sbin/smtpctl"])


# -- sendmail --------------------------------------------------------------------------------

class Sendmail(MtaServer):
    """Debian's sendmail (8.17.1.9) with Debian's own sendmail.mc (cf/debian/sendmail.mc, as
    sendmailconfig installs it) and `mc` (the page's lines) at its end, built with m4 into
    /etc/mail/sendmail.cf. Debian's DAEMON_OPTIONS become 127.0.0.1 and ::1 on ports[25]; the
    page's own listeners keep their lines, with each `Port=N` in `mc` given ports[N]. Its
    dialup/provider includes (made by sendmailconfig) and greet_pause (1 s per connection) are
    left out, and host names come from /etc/hosts only (Debian's service.switch-nodns).
    `access` is the text of /etc/mail/access, built into access.db. Queue only (-odq)."""

    argv = ["/usr/libexec/sendmail/sendmail", "-bD", "-odq"]
    refused = "Relaying denied"

    def __init__(self, ns: Namespace, access: str, ports: dict, mc: str = ""):
        super().__init__(ns, ports)
        base = (ns.root / "usr/share/sendmail/cf/debian/sendmail.mc").read_text()
        for page_port, port in ports.items():
            mc = mc.replace(f"Port={page_port}'", f"Port={port}'")
        keep = []
        for line in base.splitlines():
            if line.startswith(("DAEMON_OPTIONS(", "include(`/etc/mail/m4/", "FEATURE(`greet_pause'")):
                continue
            if line.startswith("MAILER_DEFINITIONS"):
                keep.append("define(`confDOMAIN_NAME', `mx.logkey.test')dnl")
                # no DNS here (Debian's file for a host without it): a PTR lookup fails at once
                keep.append("define(`confSERVICE_SWITCH_FILE', "
                            "`/etc/mail/service.switch-nodns')dnl")
                port = ports[25]
                keep.append(f"DAEMON_OPTIONS(`Family=inet, Name=MTA-v4-{port}, Port={port}, "
                            "Addr=127.0.0.1')dnl")
                keep.append(f"DAEMON_OPTIONS(`Family=inet6, Name=MTA-v6-{port}, Port={port}, "
                            "Addr=::1')dnl")
            keep.append(line)
        ns.write("/etc/mail/sendmail.mc", "\n".join(keep) + "\n" + mc)
        ns.write("/etc/mail/local-host-names", "mx.logkey.test\n")
        ns.write("/etc/mail/access", access)
        ns.write("/etc/mail/aliases", "postmaster: root\n")
        ns.mkdir("/var/spool/mqueue", 0o700)
        ns.mkdir("/var/spool/mqueue-client", 0o770, "smmsp:smmsp")
        ns.mkdir("/var/lib/sendmail", 0o755)
        ns.mkdir("/run/sendmail/mta", 0o755)
        hostname = os.uname().nodename
        hosts = ns.path("/etc/hosts")
        hosts.write_text(hosts.read_text() + f"127.0.1.1 mx.logkey.test {hostname}\n")
        ns.run(["sh", "-c", "m4 /etc/mail/sendmail.mc > /etc/mail/sendmail.cf"])
        ns.run(["sh", "-c", "makemap hash /etc/mail/access < /etc/mail/access"])
        ns.run(["/usr/libexec/sendmail/sendmail", "-bi"], check=False)
