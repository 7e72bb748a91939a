"""SECURITY.md's safe syslog set-up, for real: a local user forges a dovecot login with
`logger -t dovecot`, and an rsyslog file filtered by a property the sender cannot choose keeps
it out while dovecot's own login gets through.

Debian's rsyslogd and dovecot (installed by .ci/run) run with configuration in a temp dir, inside
a private mount namespace (`unshare -m`) where a tmpfs covers /dev, so the /dev/log they use is
the test's own and the machine's is never touched (as tools/capture/private-dev.sh does).
rsyslog's imuxsock takes the sender's uid and pid from SCM_CREDENTIALS (annotate, parseTrusted)
and its executable from /proc; the filtered file takes only lines whose $!uid is 0 and $!exe is
dovecot's log process, /usr/lib/dovecot/log (captured: every dovecot line reaches syslog through
it). A real POP3 login from 127.0.0.2, then `logger -t dovecot` as nobody claiming a login from
203.0.113.9: the plain file has both (dry-run reads two logins: the threat is real), the
filtered file only the real one, and `logkey watch` on it opens only 127.0.0.2's gate."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import free_port, run_logkey
from servers import dovecot_config

FORGED = ("pop3-login: Login: user=<mallory>, method=PLAIN, rip=203.0.113.9, lip=127.0.0.1, "
          "mpid=4242, secured, session=<AAAAAAAAAAAAAAAA>")

RSYSLOG_CONF = """\
global(workDirectory="{d}/work")
module(load="imuxsock" sysSock.use="off")
input(type="imuxsock" socket="/dev/log" annotate="on" parseTrusted="on")
# what a plain syslog set-up writes: anyone can put a dovecot line here
mail.* action(type="omfile" file="{d}/mail.log" fileCreateMode="0640")
# only dovecot's log process: uid and executable come from the kernel, not from the sender
if $programname == "dovecot" and $!uid == 0 and $!exe == "/usr/lib/dovecot/log" then {{
  action(type="omfile" file="{d}/dovecot.log" fileCreateMode="0640")
}}
"""

# with the version's own auth, passdb/userdb and mail lines (servers.dovecot_config)
DOVECOT_CONF = """\
protocols = pop3
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = syslog
syslog_facility = mail
ssl = no
auth_mechanisms = plain
first_valid_uid = 100
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""

# Runs as root in the private mount namespace; every wait is bounded, everything it started is
# stopped on the way out (a process left behind would keep the namespace alive).
SCRIPT = r"""
set -eu
D=$1 PORT=$2 PY=$3
cleanup() {
  [ -s "$D/run/master.pid" ] && kill "$(cat "$D/run/master.pid")" 2>/dev/null || true
  for _ in $(seq 100); do [ -s "$D/run/master.pid" ] && kill -0 "$(cat "$D/run/master.pid")" 2>/dev/null || break; sleep 0.05; done
  [ -n "${RS:-}" ] && kill "$RS" 2>/dev/null && wait "$RS" 2>/dev/null || true
}
trap cleanup EXIT
mount -t tmpfs -o mode=755,size=1m logkey-test-dev "$D/dev"
for d in null zero urandom random; do touch "$D/dev/$d"; mount --bind "/dev/$d" "$D/dev/$d"; done
mount --rbind "$D/dev" /dev
rsyslogd -n -f "$D/rsyslog.conf" -i "$D/rsyslog.pid" &
RS=$!
for _ in $(seq 200); do [ -S /dev/log ] && break; sleep 0.05; done
[ -S /dev/log ] || { echo "rsyslogd did not create /dev/log" >&2; exit 1; }
chmod 666 /dev/log                        # as on a real system: anyone may log
dovecot -c "$D/dovecot.conf"
"$PY" - "$PORT" <<'PY'
import poplib, socket, sys, time
port = int(sys.argv[1])
deadline = time.monotonic() + 10
while True:                               # dovecot listening?
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
class From(poplib.POP3):                  # a session from 127.0.0.2
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=("127.0.0.2", 0))
p = From("127.0.0.1", port, timeout=10); p.user("test"); p.pass_("secret"); p.stat(); p.quit()
PY
# the forgery: an unprivileged local user, the program tag of its choice
setpriv --reuid=65534 --regid=65534 --clear-groups logger -p mail.info -t dovecot "$FORGED"
for _ in $(seq 200); do
  grep -q 'rip=127.0.0.2' "$D/mail.log" 2>/dev/null && grep -q 'rip=203.0.113.9' "$D/mail.log" && break
  sleep 0.05
done
"""


@pytest.fixture
def world(open_tmp):
    """A temp dir dovecot's unprivileged processes can reach."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a private mount namespace and dovecot")
    for tool in ("rsyslogd", "dovecot", "unshare", "setpriv", "logger"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: .ci/run installs rsyslog, dovecot-pop3d, util-linux")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:                   # e.g. a container without CAP_SYS_ADMIN
        pytest.skip(f"no private mount namespace here: {probe.stderr.strip()}")
    return open_tmp


def test_filtered_rsyslog_file_keeps_out_a_forged_dovecot_login(world, tmp_path):
    d = world
    port = free_port()
    for sub in ("work", "dev", "run", "state", "home/test"):
        os.makedirs(os.path.join(d, sub))
    os.chown(os.path.join(d, "home/test"), 65534, 65534)
    with open(os.path.join(d, "users"), "w") as f:
        f.write(f"test:{{PLAIN}}secret:65534:65534::{d}/home/test::\n")
    with open(os.path.join(d, "rsyslog.conf"), "w") as f:
        f.write(RSYSLOG_CONF.format(d=d))
    with open(os.path.join(d, "dovecot.conf"), "w") as f:
        f.write(dovecot_config(Path(d) / "users", DOVECOT_CONF.format(d=d, port=port)))
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", SCRIPT,
                           "script", d, str(port), sys.executable],
                          env={**os.environ, "FORGED": FORGED}, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    plain, filtered = os.path.join(d, "mail.log"), os.path.join(d, "dovecot.log")

    def logins(path, *extra):
        out = run_logkey("dry-run", "--json", "--pack", "dovecot", *extra, path, check=0)
        return sorted(e["ip"] for e in map(json.loads, out.stdout.decode().splitlines())
                      if e["type"] == "event" and e["event"] == "login"), out.stderr.decode()

    ips, err = logins(plain)
    assert ips == ["127.0.0.2", "203.0.113.9"]              # the forged line reads as a login
    assert "logins are read from syslog lines" in err       # ... and dry-run says why
    with open(filtered) as f:
        text = f.read()
    assert "rip=127.0.0.2" in text and "203.0.113.9" not in text
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        logs:
          - path: {filtered}
            sender_verified: true
        store: {{type: dir, path: {tmp_path}/gates}}
        state_dir: {tmp_path}/state
        """))
    ips, err = logins(filtered, "--config", str(cfg))
    assert ips == ["127.0.0.2"] and err == ""               # declared filtered: no warning
    proc = run_logkey("watch", "--config", str(cfg), "--once", check=0)
    assert sorted(os.listdir(tmp_path / "gates")) == ["127.0.0.2"]
    assert "<4>" not in proc.stderr.decode(), proc.stderr.decode()
