"""End to end, the way a mail administrator would check it: a real POP3/IMAP login against a real
dovecot opens relay through a real postfix for that client IP only, for the window only.

The servers are real programs from Debian's packages (installed by .ci/run), started by
tests/servers.py on loopback ports with configuration in temp dirs. Each test client connects
from its own loopback source address (127.0.0.2, 127.0.0.3, ...). These tests are the
project's acceptance suite; pytest's report header names the server versions they ran against.
"""
from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from servers import (PASSWORD, Dovecot, SyslogNamespace, TcpServer, TempDir, dovecot_login_word,
                     missing_programs, wait_for)
from conftest import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the servers run as root (as in CI)")


@pytest.fixture(scope="module", autouse=True)
def programs():
    missing = missing_programs()
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; .ci/run installs them "
                    "(the end-to-end suite runs the real servers)")


def standard(site, window="10m", store=None, extra=""):
    """dovecot (own log file) -> logkey watch -> dir store -> logkey policy <- postfix."""
    dovecot = site.dovecot()
    port = free_port()
    config = site.config("logkey", [(dovecot.log_path, "dovecot")], store=store, window=window,
                         policy_port=port, extra=extra)
    watcher = site.watch(config)
    site.policy(config, port)
    postfix = site.postfix({"main": port})
    return dovecot, watcher, postfix, config


def wait_relays(postfix, src, timeout=10.0, listener=None):
    """True once postfix relays for src (the watcher is asynchronous: a login line is followed
    within milliseconds, not at once); the first attempts may be refused."""
    return wait_for(lambda: postfix.relays(src, listener), timeout=timeout,
                      what=f"relay for {src}", step=0.1)


# -- 1, 2: a login opens relay for its own IP only --------------------------------------------

def test_pop3_login_opens_relay_for_that_ip_only(site):
    dovecot, _, postfix, _ = standard(site)
    assert not postfix.relays("127.0.0.2")
    assert dovecot.pop_login("127.0.0.2")
    assert wait_relays(postfix, "127.0.0.2")
    assert not postfix.relays("127.0.0.3")          # no login from there


def test_pop3_login_then_swaks_relays(site):
    """The same with swaks, the SMTP client mail administrators test with."""
    import subprocess
    dovecot, _, postfix, _ = standard(site)
    assert dovecot.pop_login("127.0.0.2")
    wait_relays(postfix, "127.0.0.2")

    def swaks(src):
        return subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(postfix.ports["main"]),
                               "--local-interface", src, "--helo", "client.logkey.test",
                               "--from", "sender@client.logkey.test", "--to", "x@outside.example",
                               "--timeout", "20"], capture_output=True, text=True, timeout=60)
    ok = swaks("127.0.0.2")
    assert ok.returncode == 0 and "250 2.0.0 Ok: queued" in ok.stdout, ok.stdout
    refused = swaks("127.0.0.3")
    assert refused.returncode != 0 and "Relay access denied" in refused.stdout, refused.stdout


def test_imap_login_opens_relay_for_that_ip_only(site):
    dovecot, _, postfix, _ = standard(site)
    assert dovecot.imap_login("127.0.0.4")
    assert wait_relays(postfix, "127.0.0.4")
    assert not postfix.relays("127.0.0.5")


# -- 3: failures and hostile user names open nothing ------------------------------------------

HOSTILE = "x>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1"


def test_failed_and_hostile_logins_open_nothing(site):
    dovecot, watcher, postfix, config = standard(site)
    assert not dovecot.pop_login("127.0.0.2", password="wrong")
    assert not dovecot.imap_login("127.0.0.3", password="wrong")
    assert not dovecot.pop_login("127.0.0.4", user="nosuchuser")
    assert not dovecot.pop_login("127.0.0.5", user=HOSTILE, password="wrong")
    assert not dovecot.imap_login("127.0.0.6", user=HOSTILE, password="wrong")
    assert not dovecot.imap_login("127.0.0.7", user=HOSTILE + ", session=<AAAA>")
    # a last, good login from another address: once it relays, every line before it was read
    assert dovecot.pop_login("127.0.0.8")
    wait_relays(postfix, "127.0.0.8")
    for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7",
               "127.0.0.9"):
        assert not postfix.relays(ip), ip
    assert "rip=127.0.0.9" in dovecot.log_text()     # the bait really reached the log


def test_hostile_user_name_that_logs_in_opens_no_other_ip(site):
    """A user whose name carries `rip=127.0.0.9, lip=...` really exists and logs in from
    127.0.0.10 and 127.0.0.11: its Login lines then hold rip= twice, which the dovecot pack
    refuses whole (no event), so nothing opens, and never 127.0.0.9, the address in the name."""
    dovecot = site.dovecot(users={"test": PASSWORD, HOSTILE: PASSWORD})
    port = free_port()
    config = site.config("logkey", [(dovecot.log_path, "dovecot")], policy_port=port)
    site.watch(config)
    site.policy(config, port)
    postfix = site.postfix({"main": port})
    assert dovecot.imap_login("127.0.0.10", user=HOSTILE)
    assert dovecot.pop_login("127.0.0.11", user=HOSTILE)
    assert dovecot.pop_login("127.0.0.12")              # read once this one relays
    wait_relays(postfix, "127.0.0.12")
    for ip in ("127.0.0.9", "127.0.0.10", "127.0.0.11"):
        assert not postfix.relays(ip), ip
    assert "rip=127.0.0.9, lip=127.0.0.1>, method=PLAIN, rip=127.0.0.10" in dovecot.log_text()


# -- 4: the window ----------------------------------------------------------------------------

def test_relay_only_within_the_window_with_no_further_log_traffic(site):
    dovecot, _, postfix, _ = standard(site, window="4s")
    assert dovecot.pop_login("127.0.0.2")
    logged_in = time.time()
    wait_relays(postfix, "127.0.0.2", timeout=3)
    # dovecot stamps whole seconds: the gate ends 4 s after the logout's second, so at most
    # 5 s after the login; nothing else is written to the log meanwhile
    time.sleep(max(0.0, logged_in + 5.5 - time.time()))
    assert not postfix.relays("127.0.0.2")


# -- 5: the race of the 1999 paper ---------------------------------------------------------------

def test_login_quit_then_smtp_at_once_200_times(site):
    """POP login + QUIT, then SMTP at once from the same address, 200 times, each time from an
    address with no gate yet (127.0.1.1 ... 127.0.1.200): every relay is accepted. The policy
    service waits briefly on a miss (policy.miss_wait) for the watcher to catch up. One user
    from 200 addresses is what max_ips_per_user exists to stop: raised here."""
    dovecot, _, postfix, _ = standard(site, extra="max_ips_per_user: 1000\n")
    refused = []
    for i in range(1, 201):
        src = f"127.0.1.{i}"
        assert dovecot.pop_login(src)
        if not postfix.relays(src):
            refused.append(src)
    assert refused == [], f"{len(refused)} refused: {refused}"


# -- 7: rotation during traffic ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["rename", "copytruncate"])
def test_rotation_between_logins(site, how):
    dovecot, _, postfix, _ = standard(site, extra="max_ips_per_user: 100\n")   # one user, 7 IPs
    assert dovecot.pop_login("127.0.0.2")
    wait_relays(postfix, "127.0.0.2")
    log = dovecot.log_path
    for n, src in enumerate(["127.0.0.3", "127.0.0.4", "127.0.0.5"], start=1):
        if how == "rename":
            os.rename(log, f"{log}.{n}")
            dovecot.reopen_log()
            wait_for(log.exists, what="dovecot to reopen its log")
        else:
            shutil.copyfile(log, f"{log}.{n}")
            with open(log, "r+") as f:
                f.truncate(0)
        assert dovecot.pop_login(src)
        assert dovecot.imap_login(src.replace("127.0.0.", "127.0.2."))
        wait_relays(postfix, src)
        wait_relays(postfix, src.replace("127.0.0.", "127.0.2."))


# -- 8: restart ----------------------------------------------------------------------------------

def test_kill_9_between_login_and_smtp_keeps_the_gate_and_reopens_nothing_stale(site):
    dovecot, watcher, postfix, config = standard(site, window="6s")
    assert dovecot.pop_login("127.0.0.2")
    wait_relays(postfix, "127.0.0.2")
    watcher.stop(signal.SIGKILL)
    assert postfix.relays("127.0.0.2")                 # the store outlives the watcher
    # a login while the watcher is down is picked up when it comes back
    assert dovecot.pop_login("127.0.0.3")
    again = site.watch(config)
    wait_relays(postfix, "127.0.0.3")
    # a login the watcher never saw live, older than the window when it comes back: no gate
    again.stop(signal.SIGKILL)
    assert dovecot.pop_login("127.0.0.4")
    time.sleep(7.5)
    site.watch(config)
    assert dovecot.pop_login("127.0.0.5")            # fresh traffic after the restart
    wait_relays(postfix, "127.0.0.5")
    assert not postfix.relays("127.0.0.4")
    assert not postfix.relays("127.0.0.2")           # expired meanwhile, not re-opened


# -- 6: dovecot through syslog -------------------------------------------------------------------

@pytest.mark.parametrize("file_format", ["traditional", "rfc3339"])
def test_dovecot_through_rsyslog(site, file_format):
    """dovecot with log_path = syslog, an rsyslogd of the test's own in a private mount
    namespace (its /dev/log on a tmpfs), writing RSYSLOG_TraditionalFileFormat and
    RSYSLOG_FileFormat (RFC 3339) files; logkey follows one of them."""
    namespace = site.add(SyslogNamespace(Dovecot(log="syslog"))).start()
    dovecot = namespace.dovecot
    path = namespace.traditional if file_format == "traditional" else namespace.rfc3339
    port = free_port()
    config = site.config("logkey", [(path, "dovecot")], policy_port=port)
    site.watch(config)
    site.policy(config, port)
    postfix = site.postfix({"main": port})
    assert not dovecot.pop_login("127.0.0.3", password="wrong")
    assert not dovecot.imap_login("127.0.0.4", user=HOSTILE, password="wrong")
    assert dovecot.pop_login("127.0.0.2")
    assert dovecot.imap_login("127.0.0.5")
    wait_relays(postfix, "127.0.0.2")
    wait_relays(postfix, "127.0.0.5")
    for ip in ("127.0.0.3", "127.0.0.4", "127.0.0.9"):
        assert not postfix.relays(ip), ip
    text = path.read_text()
    assert f" dovecot: pop3-login: {dovecot_login_word()}: user=<test>" in text, text
    if file_format == "rfc3339":
        assert text[:4].isdigit() and text[10] == "T", text[:80]
    else:
        assert text[:3].isalpha(), text[:80]


# -- 9: two hosts' worth of POP servers, one Redis -------------------------------------------------

def test_two_pop_hosts_one_redis_two_policy_services(site, redis_server):
    """Two dovecots with separate logs, a `logkey watch` for each writing to one redis-server,
    a `logkey policy` per host reading it, and one postfix asking each in turn (a listener
    per policy service): a login on either POP host opens relay through both."""
    store = f"{{type: redis, url: '{redis_server.url}'}}"
    hosts = []
    for name in ("pop-a", "pop-b"):
        dovecot = site.dovecot(name)
        port = free_port()
        config = site.config(name, [(dovecot.log_path, "dovecot")], store=store, policy_port=port)
        site.watch(config)
        site.policy(config, port)
        hosts.append((dovecot, port))
    postfix = site.postfix({"via_a": hosts[0][1], "via_b": hosts[1][1]})
    assert hosts[0][0].pop_login("127.0.0.2")
    assert hosts[1][0].imap_login("127.0.0.3")
    for listener in ("via_a", "via_b"):
        wait_relays(postfix, "127.0.0.2", listener=listener)
        wait_relays(postfix, "127.0.0.3", listener=listener)
        assert not postfix.relays("127.0.0.4", listener)


# -- 10: the exported maps, read by their real consumers ------------------------------------------

def test_exports_lmdb_for_postfix_and_tcprules_cdb_and_relayclient_for_tcpserver(site):
    """The watcher keeps an lmdb: access map (read by postfix's check_client_access) and a
    tcprules cdb (read by `tcpserver -x`); `logkey relayclient` in front of a stand-in for
    qmail-smtpd reads the store directly. A login opens all three for its IP, for the window."""
    dovecot = site.dovecot()
    maps = site.add(TempDir("maps")).path
    base = maps / "tcp.smtp"
    base.write_text(":allow\n")
    config = site.config("logkey", [(dovecot.log_path, "dovecot")], window="5s", extra=(
        f"exports:\n  - {{format: lmdb, path: {maps}/clients}}\n"
        f"  - {{format: tcprules, path: {maps}/tcp.smtp.cdb, base: {base}}}\n"))
    postfix = site.postfix(maps={"lmdb": f"lmdb:{maps}/clients"}, start=False)
    site.watch(config, env={"MAIL_CONFIG": str(postfix.conf)})     # postmap reads its main.cf
    wait_for(lambda: (maps / "clients.lmdb").exists() and (maps / "tcp.smtp.cdb").exists(),
               what="the first exports")
    postfix.start()
    by_cdb = site.add(TcpServer(rules_cdb=maps / "tcp.smtp.cdb"))
    import servers
    wrapper = servers.logkey_cmd() + ["relayclient"]
    by_wrapper = site.add(TcpServer(wrapper=wrapper, env={"LOGKEY_CONFIG": str(config)}))
    checks = {"postfix lmdb": postfix.relays, "tcpserver -x cdb": by_cdb.relays,
              "relayclient": by_wrapper.relays}
    for name, relays in checks.items():
        assert not relays("127.0.0.2"), name
    assert dovecot.pop_login("127.0.0.2")
    logged_in = time.time()
    for name, relays in checks.items():
        wait_for(lambda: relays("127.0.0.2"), timeout=4, what=f"{name} relaying", step=0.1)
        assert not relays("127.0.0.3"), name
    # the window is 5 s from the logout's whole second: closed everywhere soon after
    time.sleep(max(0.0, logged_in + 6 - time.time()))
    for name, relays in checks.items():
        wait_for(lambda: not relays("127.0.0.2"), timeout=3, what=f"{name} closing",
                   step=0.1)
