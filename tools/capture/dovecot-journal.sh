#!/usr/bin/env bash
# Capture dovecot's entries as a live systemd-journald records them (run by hand as root, not
# by CI): the values of the dovecot pack's `journal:` key, for Debian 12 and Debian 13.
#
# Usage:  tools/capture/dovecot-journal.sh [OUTDIR]        (default tests/fixtures/captured)
# Writes: OUTDIR/dovecot-<X.Y>-journald-<systemd major>.jsonl (full versions: the entries'
#         master line, and tests/fixtures/captured/README.md): `journalctl -o json` of every entry
#         of the unit dovecot.service or tagged dovecot (one JSON object a line, journalctl's
#         own text), for
#           - Debian 12: the installed dovecot (2.3) and systemd-journald;
#           - Debian 13: dovecot 2.4 and systemd-journald of the root $LOGKEY_TRIXIE_ROOT
#             (default /var/cache/logkey/trixie; skipped, with a line, when it is not ready),
#             run in a chroot on a private overlay of it (the root itself is never written).
#         Each run: tools/capture/journald-ns.sh starts journald by hand in a private mount
#         namespace and dovecot (log_path = syslog) as dovecot.service in it; clients from
#         127.0.0.2.. log in over POP3 (USER/PASS) and IMAP (LOGIN), fail a password, abort
#         a login, and one `logger -t dovecot` from outside the unit stands for a forgery.
# Trust:  traffic only to 127.0.0.1 ports 43110 (pop3) and 43143 (imap). Everything else is in
#         a mktemp dir removed at exit (kept with LOGKEY_KEEP_TMP=1: ns.err has journald's and
#         dovecot's stderr).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out_dir=${1:-$top/tests/fixtures/captured}
root=${LOGKEY_TRIXIE_ROOT:-/var/cache/logkey/trixie}
POP_PORT=43110 IMAP_PORT=43143 PASS=capture-secret
[ "$(id -u)" = 0 ] || { echo "dovecot-journal.sh: must run as root" >&2; exit 2; }
mkdir -p "$out_dir"; out_dir=$(cd "$out_dir" && pwd)
tmp=$(mktemp -d /tmp/logkey-dovecot-journal.XXXXXX)
chmod 755 "$tmp"
trap '[ -n "${LOGKEY_KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT

conf() {  # conf MAJOR DIR: a dovecot.conf in that release's syntax, files under DIR
  local d=$2
  if [ "$1" = 2.4 ]; then
    cat <<EOF
dovecot_config_version = 2.4.1
dovecot_storage_version = 2.4.0
auth_allow_cleartext = yes
auth_username_format = %{user}
mail_driver = maildir
mail_path = ~/Maildir
passdb passwd-file {
  passwd_file_path = $d/users
}
userdb passwd-file {
  passwd_file_path = $d/users
}
EOF
  else
    cat <<EOF
disable_plaintext_auth = no
auth_username_format = %u
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $d/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $d/users
}
EOF
  fi
  cat <<EOF
protocols = pop3 imap
listen = 127.0.0.1
base_dir = $d/run
state_dir = $d/state
log_path = syslog
syslog_facility = mail
ssl = no
auth_mechanisms = plain login
auth_verbose = yes
first_valid_uid = 100
service pop3-login {
  inet_listener pop3 {
    port = $POP_PORT
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
EOF
}

drive() {  # the clients, from the machine's side of the shared loopback
  LOGKEY_CAPTURE_DIR=$here python3 - "$POP_PORT" "$IMAP_PORT" "$PASS" <<'EOF'
import os, socket, sys, time
sys.path.insert(0, os.environ["LOGKEY_CAPTURE_DIR"])
from clients import IMAPFrom, POP3From
pop, imap, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for _ in range(600):                                   # up to a minute on a loaded machine
    try:
        socket.create_connection(("127.0.0.1", pop), 1).close()
        socket.create_connection(("127.0.0.1", imap), 1).close()
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit(f"dovecot-journal.sh: dovecot is not listening on {pop}/{imap}")
p = POP3From("127.0.0.2", pop); p.user("test"); p.pass_(password); p.stat(); p.quit()
m = IMAPFrom("127.0.0.3", imap); m.login("test", password); m.select("INBOX"); m.logout()
p = POP3From("127.0.0.4", pop); p.user("test")
try:
    p.pass_("wrong")
except Exception:
    pass
p.quit()
POP3From("127.0.0.5", pop).quit()                      # connected, no login: aborted
time.sleep(1.5)
EOF
}

run() {  # run NAME DIR-AS-SEEN-BY-DOVECOT CHROOT-OR-EMPTY: one capture into $tmp/NAME
  local name=$1 inside=$2 chroot_dir=$3 w=$tmp/$1
  mkdir -p "$w/home" "$w/state"
  chown 65534:65534 "$w/home"
  printf 'test:{PLAIN}%s:65534:65534::%s/home::\n' "$PASS" "$inside" >"$w/users"
  cp "$here/journald-ns.sh" "$w/"
  export w inside chroot_dir
  unshare -m --propagation private bash -euo pipefail -c '
    if [ -n "$chroot_dir" ]; then
      M=$w/root; mkdir -p "$M" "$w/upper" "$w/ovl"
      mount -t overlay overlay -o "lowerdir=$chroot_dir,upperdir=$w/upper,workdir=$w/ovl" "$M"
      mount -t proc proc "$M/proc"; mount --rbind /dev "$M/dev"; mount --rbind /sys "$M/sys"
      mount -t tmpfs -o mode=1777 capture-tmp "$M/tmp"
      mkdir -p "$M$inside"; mount --bind "$w" "$M$inside"
      exec chroot "$M" "$inside/journald-ns.sh" "$inside/j" dovecot.service \
        dovecot -F -c "$inside/dovecot.conf"
    fi
    exec "$w/journald-ns.sh" "$w/j" dovecot.service dovecot -F -c "$w/dovecot.conf"
  ' >"$w/ns.out" 2>"$w/ns.err" &
  local ns=$!
  drive
  # a forgery: logger in the namespace (its /dev/log), outside the unit's cgroup
  nsenter -t "$ns" -m -r logger --socket-errors=on -t dovecot \
    -p mail.info "pop3-login: Login: user=<mallory>, method=PLAIN, rip=198.51.100.66, lip=127.0.0.1, mpid=1, session=<forgedforged12>"
  sleep 1
  kill -TERM "$ns"; wait "$ns" || true
  [ -s "$w/ns.err" ] && sed 's/^/  /' "$w/ns.err" >&2
  journalctl --directory="$w/j/runlog/journal" --output=json --no-pager \
    _SYSTEMD_UNIT=dovecot.service + SYSLOG_IDENTIFIER=dovecot >"$w/entries.jsonl"
}

keep() {  # keep NAME ROOT: $tmp/NAME/entries.jsonl under the versions of ROOT's packages
  local admin=${2:-}/var/lib/dpkg v s name
  v=$(dpkg-query --admindir="$admin" -W -f='${Version}' dovecot-core)     # 1:2.4.1+dfsg1-6+deb13u7
  s=$(dpkg-query --admindir="$admin" -W -f='${Version}' systemd)          # 257.13-1~deb13u1
  name=dovecot-$(echo "$v" | sed -E 's/^[0-9]+://; s/^([0-9]+\.[0-9]+).*/\1/')-journald-${s%%.*}.jsonl
  cp "$tmp/$1/entries.jsonl" "$out_dir/$name"
  echo "wrote $out_dir/$name ($(wc -l <"$tmp/$1/entries.jsonl") entries; dovecot-core $v, systemd $s)"
}

# --- Debian 12: this machine's dovecot and journald --------------------------------------------
mkdir -p "$tmp/bookworm"; conf 2.3 "$tmp/bookworm" >"$tmp/bookworm/dovecot.conf"
run bookworm "$tmp/bookworm" ""
keep bookworm ""

# --- Debian 13: dovecot 2.4 and journald of the trixie root --------------------------------------
if [ -e "$root.READY" ] && [ -x "$root/usr/sbin/dovecot" ] && [ -x "$root/usr/lib/systemd/systemd-journald" ]; then
  mkdir -p "$tmp/trixie"; conf 2.4 /srv/capture >"$tmp/trixie/dovecot.conf"
  run trixie /srv/capture "$root"
  keep trixie "$root"
else
  echo "dovecot-journal.sh: $root is not a finished Debian 13 root with dovecot and systemd; Debian 13 skipped" >&2
fi
