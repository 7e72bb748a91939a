"""The Exim, OpenSMTPD and sendmail pages (docs/mta/*.md), run as written against the real
MTAs from Debian 12, unpacked into private roots and run in private mount namespaces
(tests/mtas.py): a real dovecot login opens the gate, `logkey watch` runs as the shipped unit
runs it (user logkey, NoNewPrivileges, no capabilities, ProtectSystem=strict), and the MTA
decides from the page's snippets. Only port numbers are substituted; the MTAs' own base
configuration is Debian's (tests/mtas.py says what the suite changes in it, and why).

Each run checks: a gated client relays and an ungated one is refused, local mail is
unaffected, `logkey open`/`close` and expiry take effect (open/close: Exim and sendmail's
narrow set-up at the next RCPT, OpenSMTPD and sendmail's global set-up within PATH_UNIT_LAG
seconds, through their root path units; expiry: within EXPIRY_BOUND seconds), IPv4 and IPv6
(the exact address and, with ipv6_prefix: 64, the /64), the MTA restarted while no gate is open
starts and serves, and (narrow) port 25 never relays for a gate."""
from __future__ import annotations

import os
import shlex
import time

import pytest

import mtas
import servers
from conftest import free_port, wait_for
from servers import PASSWORD, logkey_cmd, port_open  # noqa: F401
from test_e2e_docs import snippet

EXPIRY_BOUND = 3.0          # seconds after a gate's expiry by which relay is refused
PATH_UNIT_LAG = 2.0         # seconds for `logkey open`/`close` to reach OpenSMTPD and sendmail's
                            # access db (the path unit's reload; Exim and sendmail's text map see
                            # them at the next RCPT)


def logkey_setup(ns: mtas.Namespace, dovecot, extra: str, ipv6_prefix=None):
    """/etc/logkey/config.yaml and the directories of contrib/systemd/logkey.tmpfiles."""
    ns.mkdir("/var/lib/logkey", 0o755, "logkey:logkey")
    ns.mkdir("/var/lib/logkey/gates", 0o750, "logkey:logkey")
    ns.mkdir("/var/lib/logkey/state", 0o750, "logkey:logkey")
    ns.mkdir("/run/logkey", 0o755, "logkey:logkey")
    text = (f"logs:\n  - path: {dovecot.log_path}\n    packs: [dovecot]\n"
            "store: {type: dir, path: /var/lib/logkey/gates}\n"
            "state_dir: /var/lib/logkey/state\nwindow: 10m\n")
    if ipv6_prefix:
        text += f"ipv6_prefix: {ipv6_prefix}\n"
    ns.write("/etc/logkey/config.yaml", text + extra)


class Watcher:
    """`logkey watch` inside the namespace, as contrib/systemd/logkey-watch.service runs it."""

    def __init__(self, ns, read_write=(), groups=()):
        self.ns, self.read_write, self.groups = ns, read_write, groups
        self.err = ns.dir / "watch.err"
        self.proc = None

    def start(self):
        self.err.write_bytes(b"")
        argv = self.ns.as_unit("logkey-watch.service",
                               [*logkey_cmd(), "watch", "-v", "--config", "/etc/logkey/config.yaml"],
                               read_write=self.read_write, groups=self.groups)
        with open(self.err, "ab") as err:
            self.proc = self.ns.spawn(argv, stderr=err)

        def up():
            assert self.proc.poll() is None, f"logkey watch exited: {self.log()}"
            return "watching" in self.log()
        wait_for(up, timeout=20, what="logkey watch")
        return self

    def log(self):
        return self.err.read_text(errors="replace")

    def __repr__(self):
        return self.log()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            mtas.kill_group(self.proc)


def admin(ns, *args):
    """A logkey admin command (open, close, export) as root inside the namespace."""
    out = ns.run([*logkey_cmd(), *args, "--config", "/etc/logkey/config.yaml"])
    print(time.time(), args, out.stdout, out.stderr)
    return out


def page_namespace(site, mta: str, page: str, logkey_snippet: str):
    """A namespace for `mta` with dovecot running in it and /etc/logkey/config.yaml holding
    the page's `exports:` (or other) snippet: (ns, dovecot)."""
    ns = site.add(mtas.Namespace(mta))
    dovecot = ns.dovecot(site.add(servers.Dovecot()))
    logkey_setup(ns, dovecot, snippet(page, logkey_snippet))
    return ns, dovecot


def page_ports(scope: str) -> dict:
    """The page's port numbers to free ones here: 25, and the narrow set-up's 2525."""
    return {25: free_port()} if scope == "global" else {25: free_port(), 2525: free_port()}


def gated_port(scope: str) -> int:
    """The page's port on which gated clients relay."""
    return 25 if scope == "global" else 2525


def run_page_command(ns, page: str, name: str):
    """A `logkey ...` snippet of the page, run as root in the namespace with its config."""
    argv = snippet(page, name).split()
    assert argv[0] == "logkey", (page, name, argv)
    return ns.run([*logkey_cmd(), *argv[1:], "--config", "/etc/logkey/config.yaml"])


def start_watcher(site, ns):
    """`logkey watch`, as its unit runs it, until the test ends."""
    return site.add(Watcher(ns)).start()


def exercise(mta, dovecot, ns, watcher, gated_port, restart, lag=0.0):
    """The checks every page gets (module docstring). `restart()` restarts the MTA. `lag`: the
    seconds a change made by `logkey open`/`close` may take to reach the MTA (0: the next RCPT
    sees it; a path unit's reload takes a moment)."""
    v6, v6_neighbour = mtas.V6_CLIENT, mtas.V6_NEIGHBOUR

    def soon(relays: bool, src, port=gated_port):
        if lag == 0:
            assert mta.relays(src, port) == relays
        else:
            wait_for(lambda: mta.relays(src, port) == relays, timeout=lag, step=0.1,
                     what=f"{src} {'relayed' if relays else 'refused'} within {lag} s")

    assert not mta.relays("127.0.0.2", gated_port)
    assert ns.pop_login(dovecot, "127.0.0.2")
    wait_for(lambda: mta.relays("127.0.0.2", gated_port), timeout=10, step=0.2,
             what="relay for 127.0.0.2 after its login")
    wait_for(lambda: "by=logout" in watcher.log(), what="the watcher to read the logout")
    assert not mta.relays("127.0.0.3", gated_port)
    if gated_port != 25:                            # narrow: port 25 never relays for a gate
        assert not mta.relays("127.0.0.2", 25)
    assert mta.answer("127.0.0.3", 25, mtas.LOCAL)[0] == 250

    admin(ns, "close", "127.0.0.2")
    soon(False, "127.0.0.2")

    assert not mta.relays(v6, gated_port)
    admin(ns, "open", v6)                           # IPv6, the exact address
    soon(True, v6)
    admin(ns, "close", v6)
    soon(False, v6)

    admin(ns, "open", "127.0.0.4", "--for", "3")    # expiry
    expires = time.time() + 3
    soon(True, "127.0.0.4")
    wait_for(lambda: not mta.relays("127.0.0.4", gated_port),
             timeout=3 + EXPIRY_BOUND + 5, step=0.25, what="relay refused after expiry")
    assert time.time() - expires < EXPIRY_BOUND, "refused too late after expiry"

    # Restarted while no gate is open (and the /64 gate): the MTA starts and serves.
    watcher.stop()
    mta.stop()
    cfg = ns.path("/etc/logkey/config.yaml")
    cfg.write_text(cfg.read_text() + "ipv6_prefix: 64\n")
    watcher.start()
    restart()
    assert mta.answer("127.0.0.3", 25, mtas.LOCAL)[0] == 250
    assert not mta.relays("127.0.0.3", gated_port)
    assert not mta.relays(v6, gated_port)
    admin(ns, "open", v6_neighbour)                 # the gate is 2001:db8::/64
    soon(True, v6)
    if gated_port != 25:
        assert not mta.relays(v6, 25)


# -- Exim ------------------------------------------------------------------------------------

EXIM_FILE = {True: "/etc/exim4/conf.d/main/000_logkey", False: "/etc/exim4/exim4.conf.localmacros"}


@pytest.mark.parametrize("split,scope", [(True, "global"), (False, "global"), (True, "narrow")],
                         ids=["split-global", "unsplit-global", "split-narrow"])
def test_exim_page(site, split, scope):
    """Debian's split and unsplit configuration take the same macro in their own file; the
    narrow macro is the same line with a port condition (run with the split one)."""
    ns, dovecot = page_namespace(site, "exim", "exim.md", "exim-logkey")
    ports = page_ports(scope)
    macros = snippet("exim.md", f"exim-debian-{scope}").replace("{2525}", "{%d}" % ports.get(2525, 0))
    exim = mtas.Exim(ns, {EXIM_FILE[split]: macros}, split=split, ports=ports)
    site.add(exim).start()
    # What the page says of a missing file: every RCPT where the list is looked at fails.
    if scope == "narrow":                           # port 25 never depends on logkey
        assert exim.answer("127.0.0.3", 25, mtas.LOCAL)[0] == 250
    code, text = exim.answer("127.0.0.3", max(ports), mtas.LOCAL)
    assert code == 421 and "Unexpected failure" in text, (code, text)
    run_page_command(ns, "exim.md", "exim-create")
    watcher = start_watcher(site, ns)
    exercise(exim, dovecot, ns, watcher, gated_port(scope), exim.start)


# -- OpenSMTPD ---------------------------------------------------------------------------------

class PathUnit:
    """What systemd does with contrib/systemd/NAME.path (PathChanged=FILE): runs NAME.service's
    ExecStart as root, in the namespace, each time FILE has been replaced."""

    def __init__(self, ns, name):
        import threading
        self.ns = ns
        unit = (mtas.UNITS / f"{name}.path").read_text()
        self.file = ns.path(next(l.split("=", 1)[1] for l in unit.splitlines()
                                 if l.startswith("PathChanged=")))
        service = (mtas.UNITS / f"{name}.service").read_text()
        self.argv = next(l.split("=", 1)[1] for l in service.splitlines()
                         if l.startswith("ExecStart="))
        self.argv = shlex.split(self.argv)
        self.runs = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        seen = None
        while not self.stopping.wait(0.1):
            try:
                st = self.file.stat()
                now = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                now = None
            if now is not None and now != seen:
                seen = now
                self.runs.append(self.ns.run(self.argv, check=False))

    def stop(self):
        self.stopping.set()
        self.thread.join(5)


OPENSMTPD_LISTEN = "listen on 127.0.0.1 port {port}\nlisten on ::1 port {port}"


@pytest.mark.parametrize("scope", ["global", "narrow"])
def test_opensmtpd_page(site, scope):
    ns, dovecot = page_namespace(site, "opensmtpd", "opensmtpd.md", "opensmtpd-logkey")
    ports = page_ports(scope)
    page = snippet("opensmtpd.md", f"opensmtpd-{scope}").replace(" 2525 ", f" {ports.get(2525)} ")
    smtpd = site.add(mtas.OpenSMTPD(ns, page, OPENSMTPD_LISTEN.format(port=ports[25]), ports))
    run_page_command(ns, "opensmtpd.md", "opensmtpd-create")
    smtpd.start()                                   # no gate open: it starts
    site.add(PathUnit(ns, "logkey-smtpd-table"))
    watcher = start_watcher(site, ns)
    exercise(smtpd, dovecot, ns, watcher, gated_port(scope), smtpd.start, lag=PATH_UNIT_LAG)


def test_exim_page_readsocket(site):
    """Exim asks `logkey policy` (as its unit runs it) with ${readsocket}: no file, no process
    per RCPT; logkey down or hung: no relay, local mail unaffected, the wait bounded."""
    import signal
    ns, dovecot = page_namespace(site, "exim", "postfix.md", "policy-logkey")
    ports = page_ports("narrow")
    macros = snippet("exim.md", "exim-debian-readsocket").replace("{2525}", "{%d}" % ports[2525])
    exim = site.add(mtas.Exim(ns, {EXIM_FILE[True]: macros}, ports=ports)).start()
    start_watcher(site, ns)
    err = ns.dir / "policy.err"
    policy = ns.spawn(ns.as_unit("logkey-policy.service", [*logkey_cmd(), "policy", "--config",
                                                            "/etc/logkey/config.yaml"]),
                      stderr=open(err, "wb"))
    mtas.wait_port(10040, ns, proc=policy, log=err.read_text, what="logkey policy")

    assert exim.answer("127.0.0.3", 25, mtas.LOCAL)[0] == 250
    assert not exim.relays("127.0.0.2", 2525)
    assert ns.pop_login(dovecot, "127.0.0.2")
    wait_for(lambda: exim.relays("127.0.0.2", 2525), timeout=10, step=0.2,
             what="relay for 127.0.0.2 after its login")
    assert not exim.relays("127.0.0.2", 25)
    assert not exim.relays("127.0.0.3", 2525)
    admin(ns, "open", mtas.V6_CLIENT)
    assert exim.relays(mtas.V6_CLIENT, 2525)
    admin(ns, "close", mtas.V6_CLIENT)
    assert not exim.relays(mtas.V6_CLIENT, 2525)

    os.killpg(policy.pid, signal.SIGSTOP)           # hung: the wait is the snippet's 3 s
    try:
        started = time.monotonic()
        assert not exim.relays("127.0.0.2", 2525)
        assert time.monotonic() - started < 3 + 2
        assert exim.answer("127.0.0.3", 25, mtas.LOCAL)[0] == 250
    finally:
        os.killpg(policy.pid, signal.SIGCONT)
    mtas.kill_group(policy)                         # down: refused at once
    started = time.monotonic()
    assert not exim.relays("127.0.0.2", 2525)
    assert time.monotonic() - started < 2
    assert exim.answer("127.0.0.3", 25, mtas.LOCAL)[0] == 250
    assert exim.answer("127.0.0.3", 2525, mtas.LOCAL)[0] == 250


# -- sendmail ----------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["global", "narrow"])
def test_sendmail_page(site, scope):
    """Global: the access db rebuilt by the root path unit from access.local and the gates.
    Narrow: the access db holds the site's entries only and stays so; the page's text map and
    rules, on a listener of their own, see a change at the next RCPT."""
    site_entries = snippet("sendmail.md", "sendmail-access-local")
    if scope == "global":
        ns, dovecot = page_namespace(site, "sendmail", "sendmail.md", "sendmail-logkey")
        ns.write("/etc/mail/access.local", site_entries)
        sendmail = site.add(mtas.Sendmail(ns, site_entries, page_ports(scope)))
        run_page_command(ns, "sendmail.md", "sendmail-create")
        sendmail.start()
        site.add(PathUnit(ns, "logkey-sendmail-access"))
        lag = PATH_UNIT_LAG
    else:
        ns, dovecot = page_namespace(site, "sendmail", "sendmail.md", "sendmail-narrow-logkey")
        sendmail = site.add(mtas.Sendmail(ns, site_entries, page_ports(scope),
                                          mc=snippet("sendmail.md", "sendmail-narrow-mc")))
        access_db = ns.path("/etc/mail/access.db").read_bytes()
        # What the page says of a missing file (-o): no gated client relays, nothing else changes.
        sendmail.start()
        assert sendmail.answer("127.0.0.3", 2525, mtas.LOCAL)[0] == 250
        assert sendmail.answer("127.0.0.3", 25, mtas.LOCAL)[0] == 250
        assert not sendmail.relays("127.0.0.3", 2525)
        run_page_command(ns, "sendmail.md", "sendmail-narrow-create")
        lag = 0.0
    watcher = start_watcher(site, ns)
    exercise(sendmail, dovecot, ns, watcher, gated_port(scope), sendmail.start, lag=lag)
    if scope == "narrow":
        assert ns.path("/etc/mail/access.db").read_bytes() == access_db
        check = snippet("sendmail.md", "sendmail-narrow-check").replace(
            "sendmail -bt", f"{sendmail.argv[0]} -bt")      # Debian's alternatives: not here
        for key, answer in (("IPv6:2001:db8:0:0", "returns RELAY"), ("127.0.0.3", "no match")):
            out = ns.run(["sh", "-c", check.replace("192.0.2.10", key)]).stdout
            assert f"map_lookup: logkey (Connect:{key}) {answer}" in out, out
        # Not answering (not the logkey listener), the rules give back the recipient unchanged.
        out = ns.run(["sh", "-c", f"echo 'Local_check_rcpt <{mtas.OUTSIDE}>' | "
                                  f"{sendmail.argv[0]} -bt"]).stdout
        assert "Local_check_rcpt returns: < someone @ outside . example >" in out, out


@pytest.mark.parametrize("name", ["logkey-smtpd-table", "logkey-sendmail-access"])
def test_root_path_units_pass_systemd_analyze_verify(tmp_path, name):
    """The path units the pages install (emulated above by PathUnit): systemd's own check,
    with smtpctl taken from the unpacked OpenSMTPD (it is not installed here)."""
    import subprocess
    smtpctl = mtas.ensure_root("opensmtpd") / "usr/sbin/smtpctl"
    for suffix in ("path", "service"):
        text = (mtas.UNITS / f"{name}.{suffix}").read_text()
        (tmp_path / f"{name}.{suffix}").write_text(text.replace("/usr/sbin/smtpctl", str(smtpctl)))
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / f"{name}.path"),
                           str(tmp_path / f"{name}.service")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
