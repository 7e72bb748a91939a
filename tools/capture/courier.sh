#!/bin/bash
# Capture real Courier POP3/IMAP syslog lines (run by hand as root; not run by CI).
#
# Debian's courier-pop/courier-imap conflict with other POP servers as packages, so nothing is
# installed: the .debs are unpacked with dpkg -x into a temp dir and overlaid (read-only lower
# layer, writable upper layer in the temp dir) over /etc and /usr inside a private mount+pid
# namespace. /run and /dev are private tmpfs mounts there; /dev/log is tools/capture/syslogsink.py
# (set up by private-dev.sh); the generated client imports POP3From/IMAPFrom from clients.py.
# Servers listen on 127.0.0.1:11110 (pop3d) and 127.0.0.1:11143 (imapd); logins come from
# 127.0.0.2.. . When the namespace's first process exits every process in it is killed, so
# nothing is left running. Needs: libidn12 libltdl7 (apt-get install), perl, python3; libgamin0
# (imapd's libfam.so.0) is unpacked with the rest. Logins: success + logout, wrong password,
# unknown user, a 612-byte user name (courierlogger cuts at 511 bytes), two crafted 505-byte
# names whose cut second half reads as a success, a name holding ", ip=[...], port=[...]", a
# CR in the user name. KEEP=1 keeps the temp dir for debugging.
#
# Usage: tools/capture/courier.sh [OUTFILE]   (default tests/fixtures/captured/courier-<ver>.log)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T=$(mktemp -d /tmp/logkey-courier.XXXXXX)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$T"' EXIT
cd "$T"
apt-get download courier-pop courier-imap courier-base courier-authdaemon courier-authlib \
    courier-authlib-userdb libcourier-unicode4 libgamin0 >/dev/null 2>&1
for f in ./*.deb; do dpkg -x "$f" pkg; done
VER=$(dpkg-deb -f courier-imap_*.deb Version | sed 's/+.*$//')   # courier-imap 5.0.13+1.0.16-3 -> 5.0.13
OUT=${1:-$ROOT/tests/fixtures/captured/courier-$VER.log}
mkdir -p "$(dirname "$OUT")"

# configuration, edited in the unpacked tree (the lower layer)
E=pkg/etc/courier
sed -i -e 's/^authmodulelist=.*/authmodulelist="authuserdb"/' -e 's/^daemons=.*/daemons=2/' $E/authdaemonrc
sed -i -e 's/^PORT=.*/PORT=11110/' -e 's/^ADDRESS=.*/ADDRESS=127.0.0.1/' $E/pop3d
sed -i -e 's/^PORT=.*/PORT=11143/' -e 's/^ADDRESS=.*/ADDRESS=127.0.0.1/' $E/imapd
mkdir -p home/alice
chown -R 65534:65534 home; chmod 755 "$T" home
HASH=$(python3 -c 'import crypt; print(crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_SHA512)))' 2>/dev/null)
printf 'alice\tuid=65534|gid=65534|home=%s/home/alice|mail=%s/home/alice/Maildir|systempw=%s\n' "$T" "$T" "$HASH" > $E/userdb
chmod 600 $E/userdb
mkdir -p etc-up etc-work usr-up usr-work dev run
: > "$T/sink.out"

cat > drive.py <<'PY'
import os, sys, time
sys.dont_write_bytecode = True      # clients.py lives in the repo: leave no __pycache__ there
sys.path.insert(0, os.environ["LOGKEY_CAPTURE_DIR"])
from clients import IMAPFrom, POP3From
proto, port, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
LONG = "A" * 600 + "@example.org"
# a name whose tail, if the 511-byte cut made it a line of its own, reads like a success
# courierlogger reads stderr with fgets(buf, 512): "INFO: " + 505 bytes, the rest of the line
# becomes the next syslog message of the same tag. 19 + 486 = 505, so the second message is
# "LOGIN, user=evil" + the server's own ", ip=[<client>], port=[<port>]": a perfect success line.
FORGED = "b" * 486 + "LOGIN, user=evil"
FORGED2 = "c" * 486 + "LOGIN, user=evil, ip=[::ffff:6.6.6.6], port=[1], protocol=IMAP"
HOSTILE = "mallory, ip=[::ffff:7.7.7.7], port=[2]"
cases = [("alice", "s3cret"), ("alice", "wrong"), ("nosuchuser", "x"), (LONG, "x"),
         (FORGED, "x"), (FORGED2, "x"), (HOSTILE, "x"),
         ("alice\r\nLOGIN, user=x, ip=[9.9.9.9]", "x"), ("alice", "s3cret")]

def src(n):
    return "127.0.0.%d" % n

def P(s):
    return POP3From(s, port)

def I(s):
    return IMAPFrom(s, port)

for i, (u, p) in enumerate(cases):
    s = src(first + i)
    try:
        if proto == "pop3":
            c = P(s)
            c.user(u); c.pass_(p); c.stat(); c.quit()
        else:
            c = I(s)
            c.login(c._quote(u), p); c.select("INBOX"); c.logout()
        print(proto, s, "ok", u[:40])
    except Exception as e:
        print(proto, s, "fail", u[:40], repr(e)[:80])
        try:
            c.quit() if proto == "pop3" else c.logout()
        except Exception:
            pass
    time.sleep(4)   # courier delays failed logins
PY

cat > inner.sh <<'IN'
set -eu
T=$1 HERE=$2
. "$HERE/private-dev.sh"
private_dev_with_syslog "$T" "$T/sink.out" 600
mount -t tmpfs none /run
mount -t overlay overlay -o "lowerdir=$T/pkg/etc:/etc,upperdir=$T/etc-up,workdir=$T/etc-work" /etc
mount -t overlay overlay -o "lowerdir=$T/pkg/usr:/usr,upperdir=$T/usr-up,workdir=$T/usr-work" /usr
mkdir -p /run/courier/authdaemon
/usr/sbin/makeuserdb
/usr/lib/courier/courier-authlib/authdaemond >/dev/null 2>&1 &
sleep 1
maildirmake.courier "$T/home/alice/Maildir" && chown -R 65534:65534 "$T/home/alice"
/usr/lib/courier/pop3d start
/usr/lib/courier/imapd start
sleep 1
python3 "$T/drive.py" pop3 11110 2
python3 "$T/drive.py" imap 11143 20
sleep 1
/usr/lib/courier/pop3d stop || true
/usr/lib/courier/imapd stop || true
sleep 1
IN
export LOGKEY_CAPTURE_DIR=$HERE   # drive.py imports clients.py from here
unshare --mount --pid --fork --mount-proc bash inner.sh "$T" "$HERE"
cp "$T/sink.out" "$OUT"
echo "wrote $(wc -l < "$OUT") lines to $OUT"
