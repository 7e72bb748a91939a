#!/bin/bash
# Capture real Cyrus IMAP/POP3 syslog lines (run by hand as root; not run by CI).
#
# Debian's cyrus-imapd/cyrus-pop3d are not installed: the .debs are unpacked with dpkg -x into a
# temp dir and overlaid over /usr (read-only lower layer, writable upper in the temp dir) inside a
# private mount+pid namespace; /run and /dev are private tmpfs mounts; /dev/log is
# tools/capture/syslogsink.py (set up by private-dev.sh); the generated client imports
# POP3From/IMAPFrom from clients.py. master runs with -C/-M pointing at configs in the temp dir,
# services on 127.0.0.1:12143 (imap), :12110 (pop3), :14190 (sieve); authentication is SASL
# auxprop/sasldb with a sasldb file in the temp dir. Run twice: syslog_prefix "cyrus" (Debian's
# default: tags cyrus/imap, cyrus/pop3, cyrus/sieve) and syslog_prefix "sloti30t15" with the
# services named imaps/pop3s (plain listeners: the tag is prefix/service-name from cyrus.conf).
# Logins: success, wrong password, unknown user, 600-byte and hostile user names, STARTTLS
# (self-signed cert made in the temp dir), and one from 127.0.0.1 (reverse name: localhost). When the namespace's
# first process exits all its processes are killed: nothing is left running.
# Needs (apt-get install, libraries only): libical3 libpcre3 libxapian30, plus the installed
# libsasl2-2 libsasl2-modules libsasl2-modules-db, and openssl. KEEP=1 keeps the temp dir.
#
# Usage: tools/capture/cyrus.sh [OUTFILE]   (default tests/fixtures/captured/cyrus-<ver>.log)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T=$(mktemp -d /tmp/logkey-cyrus.XXXXXX)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$T"' EXIT
cd "$T"
apt-get download cyrus-common cyrus-imapd cyrus-pop3d sasl2-bin >/dev/null 2>&1
for f in ./*.deb; do dpkg -x "$f" pkg; done
VER=$(dpkg-deb -f cyrus-imapd_*.deb Version | sed 's/-.*$//')     # 3.6.1-4+deb12u5 -> 3.6.1
OUT=${1:-$ROOT/tests/fixtures/captured/cyrus-$VER.log}
mkdir -p "$(dirname "$OUT")"
mkdir -p usr-up usr-work dev lib spool sieve run/socket run/proc run/lock
chmod 755 "$T"
: > "$T/sink.out"

conf() {   # $1 = syslog_prefix line (or empty), $2 $3 = names of the imap and pop3 services
cat > imapd.conf <<CONF
configdirectory: $T/lib
partition-default: $T/spool
defaultpartition: default
sievedir: $T/sieve
proc_path: $T/run/proc
mboxname_lockpath: $T/run/lock
lmtpsocket: $T/run/socket/lmtp
idlesocket: $T/run/socket/idle
notifysocket: $T/run/socket/notify
servername: capture.example
cyrus_user: nobody
cyrus_group: nogroup
admins: cyrus
allowplaintext: yes
autocreate_quota: 0
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: $T/sasldb2
sasl_mech_list: PLAIN LOGIN
tls_server_cert: $T/cert.pem
tls_server_key: $T/key.pem
$1
CONF
cat > cyrus.conf <<CONF
START {
  recover cmd="ctl_cyrusdb -r -C $T/imapd.conf"
}
SERVICES {
  ${2:-imap}  cmd="imapd -C $T/imapd.conf" listen="127.0.0.1:12143" prefork=0 maxchild=10
  ${3:-pop3}  cmd="pop3d -C $T/imapd.conf" listen="127.0.0.1:12110" prefork=0 maxchild=10
  sieve cmd="timsieved -C $T/imapd.conf" listen="127.0.0.1:14190" prefork=0 maxchild=10
}
EVENTS {
}
CONF
}

cat > drive.py <<'PY'
import base64, os, socket, sys, time
sys.dont_write_bytecode = True      # clients.py lives in the repo: leave no __pycache__ there
sys.path.insert(0, os.environ["LOGKEY_CAPTURE_DIR"])
from clients import IMAPFrom, POP3From
proto, port, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cases = [("alice", "s3cret"), ("alice", "wrong"), ("nosuchuser", "x"), ("A" * 600, "x"),
         ("evil [6.6.6.6] plaintext User logged in", "x"), ("mallory ip=[7.7.7.7]", "x"),
         ("alice", "s3cret"), ("alice", "s3cret", "starttls"), ("alice", "s3cret", "from .1")]

def P(s):
    return POP3From(s, port)

def I(s):
    return IMAPFrom(s, port)

def sieve(s, u, p):
    c = socket.create_connection(("127.0.0.1", port), 10, (s, 0))
    f = c.makefile("rb")
    while not f.readline().startswith(b"OK"):
        pass
    tok = base64.b64encode(b"\0" + u.encode() + b"\0" + p.encode()).decode()
    c.sendall(b'AUTHENTICATE "PLAIN" "' + tok.encode() + b'"\r\n')
    r = f.readline()
    c.sendall(b"LOGOUT\r\n"); f.readline(); c.close()
    if not r.startswith(b"OK"):
        raise RuntimeError(r)

import ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for i, (u, p, *how) in enumerate(cases):
    s = "127.0.0.%d" % (first + i)
    if how == ["from .1"]:
        s = "127.0.0.1"        # has a name (localhost): the "host [ip]" form
    tls = how == ["starttls"]
    try:
        if proto == "pop3":
            c = P(s)
            if tls:
                c.stls(ctx)
            c.user(u); c.pass_(p); c.stat(); c.quit()
        elif proto == "imap":
            c = I(s)
            if tls:
                c.starttls(ctx)
            c.login(c._quote(u), p); c.select("INBOX"); c.logout()
        elif tls:
            continue
        else:
            sieve(s, u, p)
        print(proto, s, "ok", u[:40])
    except Exception as e:
        print(proto, s, "fail", u[:40], repr(e)[:80])
        try:
            c.quit() if proto == "pop3" else c.logout()
        except Exception:
            pass
    time.sleep(1)
PY

cat > inner.sh <<'IN'
set -eu
T=$1 HERE=$2
. "$HERE/private-dev.sh"
private_dev_with_syslog "$T" "$T/sink.out" 600
mount -t tmpfs none /run
mount -t overlay overlay -o "lowerdir=$T/pkg/usr:/usr,upperdir=$T/usr-up,workdir=$T/usr-work" /usr
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=capture.example -days 2 \
    -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null
chown nobody "$T/key.pem"
echo s3cret | saslpasswd2 -p -f "$T/sasldb2" -u capture.example -c alice
chown -R nobody:nogroup "$T/lib" "$T/spool" "$T/sieve" "$T/run" "$T/sasldb2"
run() {   # $1 syslog_prefix line, $2 first source address, $3 $4 service names
  ( cd "$T" && conf "$1" "${3:-}" "${4:-}" )
  /usr/lib/cyrus/bin/master -C "$T/imapd.conf" -M "$T/cyrus.conf" -p "$T/run/master.pid" &
  M=$!
  sleep 3
  python3 "$T/drive.py" imap 12143 $2
  python3 "$T/drive.py" pop3 12110 $(($2 + 10))
  python3 "$T/drive.py" sieve 14190 $(($2 + 20))
  kill $M 2>/dev/null || true; wait $M || true
  sleep 1
}
run "syslog_prefix: cyrus" 2
# the tag is <syslog_prefix>/<service name from cyrus.conf>: a site's own prefix and names
run "syslog_prefix: sloti30t15" 40 imaps pop3s
IN
export -f conf; export T
export LOGKEY_CAPTURE_DIR=$HERE   # drive.py imports clients.py from here
unshare --mount --pid --fork --mount-proc bash inner.sh "$T" "$HERE"
cp "$T/sink.out" "$OUT"
echo "wrote $(wc -l < "$OUT") lines to $OUT"
