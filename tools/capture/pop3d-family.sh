#!/bin/bash
# Capture real log lines from the Debian 12 builds of popa3d, solid-pop3d, GNU mailutils pop3d
# and perdition (run by hand as root, not by CI).
#
# Nothing is installed as a Debian package except libraries and ucspi-tcp/daemontools: the
# servers (which conflict with each other: each provides pop3-server) are fetched with
# `apt-get download` and unpacked with `dpkg -x` into a temp dir. Everything runs inside
# `unshare -m -n`: a private mount namespace (private /etc copy with a test user, private /dev
# whose `log` is tools/capture/syslogsink.py, set up by private-dev.sh, tmpfs /var/mail and
# /var/lib) and a private network namespace that only has `lo`, so the daemons may bind any port
# without touching the machine. The generated client imports its POP3/IMAP classes bound to a
# loopback source address from clients.py beside this script.
#
# Prerequisites:
#   apt-get install ucspi-tcp daemontools libmailutils9 libmu-dbm9 libgsasl18 \
#       libkyotocabinet16v5 libvanessa-adt1 libvanessa-logger0 libvanessa-socket2 libidn12 \
#       libpopt0 liblockfile1
# Usage:
#   tools/capture/pop3d-family.sh [OUTDIR]     (default: tests/fixtures/captured)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-$REPO/tests/fixtures/captured}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

T=$(mktemp -d /tmp/logkey-pop3cap.XXXXXX)
echo "temp dir: $T"
mkdir -p "$T/debs" "$T/x" "$T/dev" "$T/varlib/popa3d" "$T/varlib/solid-pop3d/bulletins" \
         "$T/home/lktest" "$T/out"

cd "$T/debs"
apt-get download popa3d solid-pop3d mailutils-pop3d perdition >/dev/null 2>&1
for f in *.deb; do
    n=${f%%_*}; mkdir -p "$T/x/$n"; dpkg -x "$f" "$T/x/$n"
    dpkg-deb -f "$f" Version > "$T/x/$n.version"
done
cd "$T"

# ---- private /etc: the machine's /etc plus a test user, the packages' configs, a hosts name ----
cp -a /etc "$T/etc"
HASH=$(openssl passwd -6 lkpass1)
echo "lktest:x:5001:5001:logkey test:/home/lktest:/bin/sh" >> "$T/etc/passwd"
echo "popa3d:x:5002:65534:popa3d:/var/lib/popa3d:/usr/sbin/nologin" >> "$T/etc/passwd"
echo "lktest:$HASH:19000:0:99999:7:::" >> "$T/etc/shadow"
echo "spop3d:x:5003:65534:solid-pop3d:/nonexistent:/usr/sbin/nologin" >> "$T/etc/passwd"
echo "popa3d:!:19000:0:99999:7:::" >> "$T/etc/shadow"
echo "spop3d:!:19000:0:99999:7:::" >> "$T/etc/shadow"
echo "lktest:x:5001:" >> "$T/etc/group"
echo "127.0.0.9 mail.example.test" >> "$T/etc/hosts"
cp "$T/x/popa3d/etc/pam.d/popa3d" "$T/x/solid-pop3d/etc/pam.d/solid-pop3d" \
   "$T/x/perdition/etc/pam.d/perdition" "$T/etc/pam.d/"
cp "$T/x/solid-pop3d/etc/spop3d.conf" "$T/etc/spop3d.conf"
chown 5001:5001 "$T/home/lktest"

# ---- self-signed certificate for perdition.imaps ----
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=capture.test \
    -keyout "$T/key.pem" -out "$T/cert.pem" >/dev/null 2>&1

# ---- a backend POP3/IMAP stub for perdition (accepts password lkpass1 only) ----
cat > "$T/backend.py" <<'EOF'
import socketserver, sys
class POP(socketserver.StreamRequestHandler):
    def handle(self):
        w = lambda s: self.wfile.write(s.encode() + b"\r\n")
        w("+OK stub ready")
        for raw in self.rfile:
            cmd = raw.decode("latin-1").rstrip("\r\n"); verb = cmd.split(" ")[0].upper()
            if verb == "PASS": w("+OK" if cmd[5:] == "lkpass1" else "-ERR bad")
            elif verb == "QUIT": w("+OK bye"); return
            elif verb == "CAPA": w("+OK"); w("USER"); w(".")
            else: w("+OK")
class IMAP(socketserver.StreamRequestHandler):
    def handle(self):
        w = lambda s: self.wfile.write(s.encode() + b"\r\n")
        w("* OK [CAPABILITY IMAP4rev1] stub ready")
        for raw in self.rfile:
            line = raw.decode("latin-1").rstrip("\r\n")
            while line.endswith("}") and "{" in line:        # IMAP literal: LOGIN {6}
                line = line[:line.rindex("{")].rstrip(" ")
                w("+ go ahead")
                line += " " + self.rfile.readline().decode("latin-1").rstrip("\r\n")
            parts = line.split(" ")
            tag, verb = parts[0], (parts[1].upper() if len(parts) > 1 else "")
            if verb == "CAPABILITY": w("* CAPABILITY IMAP4rev1"); w(tag + " OK done")
            elif verb == "LOGIN":
                w(tag + (" OK logged in" if parts[-1].strip('"') == "lkpass1" else " NO bad"))
            elif verb == "LOGOUT": w("* BYE"); w(tag + " OK bye"); return
            else: w(tag + " OK")
socketserver.ForkingTCPServer.allow_reuse_address = True
kind, port = sys.argv[1], int(sys.argv[2])
socketserver.ForkingTCPServer(("127.0.0.1", port), POP if kind == "pop3" else IMAP).serve_forever()
EOF

# ---- the client: poplib / imaplib from a chosen loopback source address ----
cat > "$T/drive.py" <<'EOF'
import imaplib, os, poplib, ssl, sys
sys.dont_write_bytecode = True      # clients.py lives in the repo: leave no __pycache__ there
sys.path.insert(0, os.environ["LOGKEY_CAPTURE_DIR"])
from clients import IMAPFrom, IMAPSFrom, POP3From
mode, port, src, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
try:
    if mode == "pop3":
        p = POP3From(src, port)
        try:
            if pw.startswith("apop:"): p.apop(user, pw[5:])
            else: p.user(user); p.pass_(pw)
            p.stat()
        except poplib.error_proto as e: print("  ", e)
        p.quit()
    else:
        if mode == "imaps":
            ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            i = IMAPSFrom(src, port, ssl_context=ctx)
        else:
            i = IMAPFrom(src, port)
        try: i.login(user, pw)
        except imaplib.IMAP4.error as e: print("  ", e)
        i.logout()
except Exception as e:
    print("   client error:", type(e).__name__, e)
print(mode, port, src, user, "done")
EOF

# ---- what runs inside the namespaces ----
cat > "$T/inner.sh" <<'EOF'
set -u
T=$1; HERE=$2; X=$T/x
ip link set lo up
: > "$T/syslog.out"
. "$HERE/private-dev.sh"
private_dev_with_syslog "$T" "$T/syslog.out" 1200 || exit 1
SINKPID=$SYSLOG_SINK_PID
ln -s /proc/self/fd /dev/fd; ln -s fd/0 /dev/stdin; ln -s fd/1 /dev/stdout; ln -s fd/2 /dev/stderr
mount --bind "$T/etc" /etc
mount --bind "$T/varlib" /var/lib
mount -t tmpfs -o mode=2775 tmpfs /var/mail; chgrp mail /var/mail
mount --bind "$T/home" /home
mk_mbox() {
    printf 'From capture@example.test Sat Nov 28 00:00:00 2026\nFrom: capture@example.test\nSubject: t\n\nhello\n\n' > /var/mail/lktest
    chown 5001:mail /var/mail/lktest; chmod 660 /var/mail/lktest
}
mk_mbox
N=0
mark() { N=$(wc -l < "$T/syslog.out"); }
cut_to() { sleep 1.5; tail -n +$((N + 1)) "$T/syslog.out" > "$T/out/$1"; echo "== $1: $(wc -l < "$T/out/$1") lines"; }
drive() { python3 "$T/drive.py" "$@"; sleep 0.3; }
pop_round() {   # port
    drive pop3 "$1" 127.0.0.2 lktest lkpass1
    drive pop3 "$1" 127.0.0.3 lktest wrongpw
    drive pop3 "$1" 127.0.0.4 nosuchuser whatever
    drive pop3 "$1" 127.0.0.5 lktest apop:wrongsecret
    drive pop3 "$1" 127.0.0.9 lktest lkpass1
}
port_pid() { ss -Hltnp "sport = :$1" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1; }

# A. popa3d under tcpserver (inetd style): IP only in tcpserver's log
mark
tcpserver -v -R -H -l0 127.0.0.1 21110 "$X/popa3d/usr/sbin/popa3d" 2> >(multilog t "$T/tcplog-popa3d") & TS=$!
sleep 0.5; pop_round 21110; kill "$TS"; wait "$TS" 2>/dev/null
cut_to popa3d-tcpserver.syslog

# B. popa3d standalone (-D)
mark
"$X/popa3d/usr/sbin/popa3d" -D & sleep 1
pop_round 110
P=$(port_pid 110); [ -n "$P" ] && kill "$P"
cut_to popa3d-standalone.syslog

# C. solid-pop3d under tcpserver (inetd style, as Debian's inetd.conf runs it)
mk_mbox; mark
tcpserver -v -R -H -l0 127.0.0.1 21111 "$X/solid-pop3d/usr/sbin/solid-pop3d" 2> >(multilog t "$T/tcplog-solid") & TS=$!
sleep 0.5; pop_round 21111; kill "$TS"; wait "$TS" 2>/dev/null
cut_to solid-pop3d-tcpserver.syslog

# D. GNU mailutils pop3d: inetd mode under tcpserver, then daemon mode
mk_mbox; mark
tcpserver -v -R -H -l0 127.0.0.1 21112 "$X/mailutils-pop3d/usr/sbin/pop3d" --inetd --no-config \
    2> >(multilog t "$T/tcplog-gnu") & TS=$!
sleep 0.5; pop_round 21112; kill "$TS"; wait "$TS" 2>/dev/null
cut_to gnu-pop3d-inetd.syslog
mk_mbox; mark
"$X/mailutils-pop3d/usr/sbin/pop3d" --daemon --foreground --no-config & GP=$!
sleep 1; pop_round 110; kill "$GP"; wait "$GP" 2>/dev/null
cut_to gnu-pop3d-daemon.syslog
# mailutils logs a client address only through an ACL `log` entry (address alone, or a format)
printf 'acl {\n  log from any;\n  log from any "connect from ${address}";\n  allow from any;\n}\n' > "$T/gnu-acl.conf"
mk_mbox; mark
"$X/mailutils-pop3d/usr/sbin/pop3d" --daemon --foreground --config-file="$T/gnu-acl.conf" & GP=$!
sleep 1; drive pop3 110 127.0.0.2 lktest lkpass1; drive pop3 110 127.0.0.3 lktest wrongpw
kill "$GP"; wait "$GP" 2>/dev/null
cut_to gnu-pop3d-daemon-acl.syslog

# E. perdition in front of stub backends
python3 "$T/backend.py" pop3 21141 & B1=$!
python3 "$T/backend.py" imap 21143 & B2=$!
sleep 0.5
PD="$X/perdition/usr/sbin"
COMMON="-f /dev/null -M '' -n --no_daemon -b 127.0.0.1 -u nobody -g nogroup"
mark
eval "$PD/perdition.pop3 $COMMON -P POP3 -l 21140 -s 127.0.0.1:21141 --pid_file $T/pd1.pid" 2>>"$T/perdition.stderr" & sleep 1
drive pop3 21140 127.0.0.2 lktest lkpass1
drive pop3 21140 127.0.0.3 lktest wrongpw
drive pop3 21140 127.0.0.9 lktest lkpass1
P=$(port_pid 21140); [ -n "$P" ] && kill "$P"
cut_to perdition-pop3.syslog
mark
eval "$PD/perdition.imap4 $COMMON -P IMAP4 -l 21142 -s 127.0.0.1:21143 --pid_file $T/pd2.pid" 2>>"$T/perdition.stderr" & sleep 1
drive imap 21142 127.0.0.2 lktest lkpass1
drive imap 21142 127.0.0.3 lktest wrongpw
P=$(port_pid 21142); [ -n "$P" ] && kill "$P"
cut_to perdition-imap4.syslog
mark
eval "$PD/perdition.imaps $COMMON -P IMAP4S --ssl_mode ssl_listen -l 21993 -s 127.0.0.1:21143 --ssl_cert_file $T/cert.pem --ssl_key_file $T/key.pem --pid_file $T/pd3.pid" 2>>"$T/perdition.stderr" & sleep 1
drive imaps 21993 127.0.0.2 lktest lkpass1
drive imaps 21993 127.0.0.3 lktest wrongpw
P=$(port_pid 21993); [ -n "$P" ] && kill "$P"
cut_to perdition-imaps.syslog
kill "$B1" "$B2" 2>/dev/null; wait "$B1" "$B2" 2>/dev/null

sleep 1
for d in popa3d solid gnu; do cp "$T/tcplog-$d/current" "$T/out/tcpserver-$d.multilog" 2>/dev/null; done
kill "$SINKPID"; wait "$SINKPID" 2>/dev/null
echo "left in namespace:"; ps -eo pid,args | grep -E "$T|popa3d|pop3d|perdition|tcpserver" | grep -v grep || true
EOF

export LOGKEY_CAPTURE_DIR=$HERE   # drive.py imports clients.py from here
unshare -m -n --propagation private bash "$T/inner.sh" "$T" "$HERE"

# ---- name the files after server, version and how they were run ----
V_POPA=$(cat "$T/x/popa3d.version"); V_SOLID=$(cat "$T/x/solid-pop3d.version")
V_GNU=$(cat "$T/x/mailutils-pop3d.version"); V_GNU=${V_GNU#*:}; V_PERD=$(cat "$T/x/perdition.version")
mkdir -p "$OUT"
cp "$T/out/popa3d-tcpserver.syslog"     "$OUT/popa3d-$V_POPA-tcpserver-syslog.log"
cp "$T/out/tcpserver-popa3d.multilog"   "$OUT/popa3d-$V_POPA-tcpserver-multilog.log"
cp "$T/out/popa3d-standalone.syslog"    "$OUT/popa3d-$V_POPA-standalone.log"
cp "$T/out/solid-pop3d-tcpserver.syslog" "$OUT/solid-pop3d-$V_SOLID-tcpserver.log"
cp "$T/out/gnu-pop3d-inetd.syslog"      "$OUT/gnu-pop3d-$V_GNU-inetd.log"
cp "$T/out/gnu-pop3d-daemon.syslog"     "$OUT/gnu-pop3d-$V_GNU-daemon.log"
cp "$T/out/gnu-pop3d-daemon-acl.syslog" "$OUT/gnu-pop3d-$V_GNU-daemon-acl.log"
cp "$T/out/tcpserver-gnu.multilog"      "$OUT/gnu-pop3d-$V_GNU-inetd-tcpserver-multilog.log"
cat "$T/out/perdition-pop3.syslog" "$T/out/perdition-imap4.syslog" "$T/out/perdition-imaps.syslog" \
    > "$OUT/perdition-$V_PERD-daemon.log"
echo "written to $OUT; temp dir $T (remove it when done)"
