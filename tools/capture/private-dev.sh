# A private /dev whose `log` is tools/capture/syslogsink.py (sourced by the capture scripts in this
# folder, run by hand as root, not by CI). Call it only inside a private mount namespace
# (`unshare -m`, whose default propagation is private): the mounts below then vanish with the
# namespace, and the machine's /dev and /dev/log are never touched.
#
#   . tools/capture/private-dev.sh
#   private_dev_with_syslog DIR OUTFILE [SECONDS]
#   private_dev DIR
#
# private_dev mounts a tmpfs on DIR (created if missing) holding bind mounts of /dev/null, zero,
# urandom and random only: a /dev for a chroot (tools/capture/dovecot24.sh mounts it on the
# root's dev/, so the syslog daemon run in the chroot makes its dev/log there).
#
# private_dev_with_syslog does the same on DIR/dev, starts syslogsink.py on DIR/dev/log
# appending to OUTFILE for SECONDS (default 600), waits up to 5 s for the socket to exist, makes it world-writable (as /dev/log is on a real
# system: daemons log after dropping root) and then rbind-mounts DIR/dev over /dev.
# Sets SYSLOG_SINK_PID to the receiver's pid (a child of the calling shell: kill it when done).
# Returns non-zero, with the receiver stopped, if the socket does not appear.

_private_dev_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

private_dev() {
  local dev=$1 d
  mkdir -p "$dev"
  mount -t tmpfs -o mode=755,size=1m capture-dev "$dev" || return 1
  for d in null zero urandom random; do
    touch "$dev/$d" && mount --bind "/dev/$d" "$dev/$d" || return 1
  done
}

private_dev_with_syslog() {
  local dir=$1 out=$2 seconds=${3:-600}
  : >>"$out" || return 1            # the receiver appends here: fail now, not after it bound the socket
  private_dev "$dir/dev" || return 1
  python3 "$_private_dev_here/syslogsink.py" "$dir/dev/log" "$out" "$seconds" &
  SYSLOG_SINK_PID=$!
  for _ in $(seq 50); do
    [ -S "$dir/dev/log" ] && break
    kill -0 "$SYSLOG_SINK_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ ! -S "$dir/dev/log" ]; then
    echo "private-dev.sh: syslogsink.py did not create $dir/dev/log" >&2
    kill "$SYSLOG_SINK_PID" 2>/dev/null || true
    wait "$SYSLOG_SINK_PID" 2>/dev/null || true
    return 1
  fi
  chmod 666 "$dir/dev/log"
  mount --rbind "$dir/dev" /dev
}
