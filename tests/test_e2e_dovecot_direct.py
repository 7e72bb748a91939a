"""docs/dovecot-direct.md as written, end to end: a real Dovecot 2.3 and 2.4 configured with
the page's snippets reports its logins to a real `logkey watch` that follows no log at all
(`logs: []`), through `logkey popwrap --dovecot` (post-login script) and through the
watcher's auth policy listener; a real postfix asks a real `logkey policy` whether to relay.

2.3 is the machine's dovecot (Debian 12); 2.4 runs from the Debian 13 root
(tests/dovecot_direct.py: $LOGKEY_TRIXIE_ROOT, default /var/cache/logkey/trixie) when the
machine's dovecot is not 2.4 itself, so the same tests run inside that root too. A release
that is nowhere to be found is skipped, naming what is missing.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import free_port
from dovecot_direct import DirectDovecot, snippet, where  # noqa: F401
from servers import missing_programs, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the servers run as root (as in CI)")

RELEASES = ["2.3", "2.4"]
NOBODY = 65534


@pytest.fixture(scope="module", autouse=True)
def programs():
    missing = missing_programs()
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; .ci/run installs them")


class Direct:
    """One site: DirectDovecot (page snippets) -> logkey watch (page's logkey snippet, no
    logs) -> dir store -> logkey policy <- postfix."""

    def __init__(self, site, release, how, checks=False, watcher=True):
        root, why = where(release)
        if root is None:
            pytest.skip(why)
        self.site = site
        self.dovecot = site.add(DirectDovecot(release, root))
        d = self.dovecot.dir
        self.socket = d / "lk" / "popwrap.sock"
        self.port, self.policy_port = free_port(), free_port()
        self.key = secrets.token_hex(32)
        self.key_file = site.tmp / "dovecot-policy.key"
        self.key_file.write_text(self.key + "\n")
        self.key_file.chmod(0o400)

        def fill(text):
            return (text.replace("/run/logkey/popwrap.sock", str(self.socket))
                        .replace("127.0.0.1:10045", f"127.0.0.1:{self.port}")
                        .replace("/etc/logkey/dovecot-policy.key", str(self.key_file))
                        .replace("/usr/local/bin/logkey", self.dovecot.logkey))
        if how in ("postlogin", "both"):
            self.dovecot.add(fill(snippet(f"postlogin-{release}")))
        if how in ("policy", "both"):
            secret = snippet(f"policy-secret-{release}").replace("KEY", self.key).replace(
                "NONCE", secrets.token_hex(16))
            path = self.dovecot.secret(secret)
            text = fill(snippet(f"policy-{release}")).replace(
                "/etc/dovecot/logkey-policy-secret.conf", str(path))
            if checks:                      # Dovecot asks `allow` before and after the check
                text = text.replace("check_before_auth = no", "check_before_auth = yes") \
                           .replace("check_after_auth = no", "check_after_auth = yes")
            self.dovecot.add(text)
        self.config = site.tmp / "logkey.yaml"
        self.config.write_text(
            fill(snippet("logkey"))
            + f"store: {{type: dir, path: {site.tmp / 'gates'}}}\n"
            + f"state_dir: {site.tmp / 'state'}\nwindow: 10m\n"
            + f"policy:\n  listen: [inet:127.0.0.1:{self.policy_port}]\n  miss_wait: 5s\n")
        self.watcher = site.watch(self.config) if watcher else None
        if watcher and self.dovecot.root:
            # The page's socket_group: dovecot, as the gid of the root's dovecot group (which
            # need not be the machine's).
            os.chown(self.socket, -1, self.dovecot.socket_gid())
        self.dovecot.start()
        wait_for(lambda: f"Dovecot v{release}." in self.dovecot.log_text(),
                 what=f"dovecot {release} starting up")
        if watcher:
            site.policy(self.config, self.policy_port)
            self.postfix = site.postfix({"main": self.policy_port})

    def login(self, protocol, src, **kw):
        login = self.dovecot.pop_login if protocol == "pop3" else self.dovecot.imap_login
        return login(src, **kw)

    def gates(self) -> set:
        return {p.name for p in (self.site.tmp / "gates").iterdir()
                if not p.name.startswith(".")} if (self.site.tmp / "gates").exists() else set()

    def audit(self, src) -> list[str]:
        return [line for line in self.watcher.log().splitlines() if f"ip={src} " in line]


def relays_at_once(direct, src) -> bool:
    """The relay answer right after the login returned: one SMTP attempt, no retries
    (`logkey policy` waits up to its miss_wait, here 5 s for a loaded machine, for a gate
    that is on its way)."""
    return direct.postfix.relays(src)


def no_log_read(direct) -> None:
    log = direct.watcher.log()
    assert "watching 0 log(s)" in log, log


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_postlogin_login_opens_relay_at_once(site, release, protocol):
    direct = Direct(site, release, "postlogin")
    assert not direct.postfix.relays("127.0.0.2")
    assert direct.login(protocol, "127.0.0.2"), direct.dovecot.log_text()[-3000:]
    assert relays_at_once(direct, "127.0.0.2")
    assert not direct.postfix.relays("127.0.0.3")             # no login from there
    assert not direct.login(protocol, "127.0.0.4", password="wrong")
    assert not direct.postfix.relays("127.0.0.4")             # a failed login opens nothing
    assert direct.gates() == {"127.0.0.2"}
    [line] = direct.audit("127.0.0.2")
    assert f"user=test pack=dovecot-postlogin protocol={protocol} source=popwrap" in line, line
    no_log_read(direct)
    assert "logkey popwrap" not in direct.dovecot.log_text()  # nothing went wrong on the way


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("checks", [False, True], ids=["report", "report+allow"])
def test_policy_report_opens_relay_at_once(site, release, checks):
    direct = Direct(site, release, "policy", checks=checks)
    assert not direct.postfix.relays("127.0.0.2")
    assert direct.login("imap", "127.0.0.2"), direct.dovecot.log_text()[-3000:]
    assert direct.login("pop3", "127.0.0.5"), direct.dovecot.log_text()[-3000:]
    assert relays_at_once(direct, "127.0.0.2")
    assert relays_at_once(direct, "127.0.0.5")
    assert not direct.login("pop3", "127.0.0.4", password="wrong")
    assert not direct.login("imap", "127.0.0.6", user="nosuchuser")
    assert not direct.postfix.relays("127.0.0.4")
    assert not direct.postfix.relays("127.0.0.6")
    assert direct.gates() == {"127.0.0.2", "127.0.0.5"}
    assert "pack=dovecot-policy protocol=imap source=dovecot-policy" in \
        direct.audit("127.0.0.2")[0]
    no_log_read(direct)
    log = direct.dovecot.log_text()
    assert "Policy server" not in log and "rror" not in log, log[-3000:]


@pytest.mark.parametrize("release", RELEASES)
def test_forged_reports_open_nothing(site, release):
    """A local user (nobody) cannot write to the popwrap socket (file mode) and has no key for
    the policy listener: nothing opens, and each attempt is one line."""
    direct = Direct(site, release, "both")
    env = {"IP": "127.0.0.7", "USER": "test", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([direct.dovecot.logkey, "popwrap", "--dovecot", "--socket", str(direct.socket),
                           "/bin/echo", "went on"], env=env, user=NOBODY, group=NOBODY,
                          extra_groups=[], capture_output=True, text=True, timeout=30)
    assert proc.stdout == "went on\n", proc
    assert proc.stderr.startswith("logkey popwrap: cannot reach the watcher at "), proc.stderr
    assert "Permission denied; no postlogin for 127.0.0.7" in proc.stderr
    report = json.dumps({"login": "test", "remote": "127.0.0.8", "protocol": "imap",
                         "tls": False, "success": True, "policy_reject": False}).encode()
    url = f"http://127.0.0.1:{direct.port}/?command=report"
    for key in (None, "0" * 64, direct.key[:-1] + "x"):
        request = urllib.request.Request(url, data=report, method="POST",
                                         headers={"X-API-Key": key} if key else {})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert err.value.code == 403
    bad = [line for line in direct.watcher.log().splitlines() if "bad request" in line]
    assert len(bad) == 3 and all("no or wrong API key in X-API-Key" in b for b in bad), bad
    assert direct.login("pop3", "127.0.0.2")                   # the real ones still work
    assert relays_at_once(direct, "127.0.0.2")
    for src in ("127.0.0.7", "127.0.0.8"):
        assert not direct.postfix.relays(src)
    assert direct.gates() == {"127.0.0.2"}
    # Both ways on: the post-login datagram and the policy report each count the login.
    assert len(direct.audit("127.0.0.2")) == 2


@pytest.mark.parametrize("release", RELEASES)
def test_no_watcher_breaks_no_login(site, release):
    """With the watcher down (no socket, nothing on the port) every login still works: one
    line in Dovecot's log from popwrap, Dovecot's own error for the policy report."""
    direct = Direct(site, release, "both", watcher=False)
    assert direct.login("pop3", "127.0.0.2"), direct.dovecot.log_text()[-3000:]
    assert direct.login("imap", "127.0.0.3"), direct.dovecot.log_text()[-3000:]
    wait_for(lambda: "cannot reach the watcher" in direct.dovecot.log_text(),
             what="popwrap's line in dovecot's log")
