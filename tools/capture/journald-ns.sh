#!/usr/bin/env bash
# A real systemd-journald, started by hand, and one command logging to it as a systemd unit:
# for tests/test_journald.py (a live journald under logkey's journal source) and
# tools/capture/dovecot-journal.sh (the journal fields of real dovecot 2.3 and 2.4 entries).
#
# Usage:  unshare -m --propagation private tools/capture/journald-ns.sh DIR UNIT CMD [ARGS...]
#         (as root, ONLY inside a private mount namespace: the mounts below vanish with it)
# Does:   tmpfs over /run/systemd (journald creates its sockets there itself: no socket
#         activation is needed, it binds /run/systemd/journal/{socket,stdout,dev-log} when
#         systemd passes it none), DIR/runlog bind-mounted over /run/log (so the volatile
#         journal, /run/log/journal/MACHINE-ID/system.journal, is in DIR/runlog/journal for
#         journalctl --directory outside the namespace), a tmpfs over /var/log/journal where
#         it exists (the machine's journal is never written), a private /dev (tmpfs, null zero
#         urandom random bound in) whose /dev/log is the symlink to journald's dev-log socket, as
#         on a systemd machine. Starts $JOURNALD (default /lib/systemd/systemd-journald),
#         then runs CMD in a cgroup named logkey-PID.slice/UNIT in every hierarchy journald
#         reads units from (cgroup v2, or v1's name=systemd and the hybrid unified one), so
#         journald records _SYSTEMD_UNIT=UNIT for it, from the kernel, as under systemd.
#         Prints "ready" on stdout once CMD runs. SIGTERM (or CMD's exit) stops CMD and
#         journald and removes the cgroups; their paths are in DIR/cgroups for a caller that
#         must clean up after a SIGKILL.
# Trust:  the cgroups are the only thing created outside the namespace (under /sys/fs/cgroup,
#         named for this script's pid); nothing listens but journald's sockets in the private
#         /run/systemd.
set -euo pipefail

dir=$1 unit=$2; shift 2
journald=${JOURNALD:-/lib/systemd/systemd-journald}
[ -x "$journald" ] || { echo "journald-ns.sh: $journald not found (apt-get install systemd)" >&2; exit 2; }
mkdir -p "$dir/runlog" "$dir/dev" /run/systemd /run/log      # (a minimal root may lack them)

mount -t tmpfs -o mode=755 logkey-run-systemd /run/systemd
mount --bind "$dir/runlog" /run/log
# the machine's persistent journal, where there is one, hidden: this journald never writes to it
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=755 logkey-var-journal /var/log/journal; fi
mount -t tmpfs -o mode=755,size=1m logkey-dev "$dir/dev"
for n in null zero urandom random; do
  touch "$dir/dev/$n"; mount --bind "/dev/$n" "$dir/dev/$n"
done
ln -s /run/systemd/journal/dev-log "$dir/dev/log"
mount --rbind "$dir/dev" /dev

cgroups=()
if [ ! -e /sys/fs/cgroup/cgroup.controllers ] && [ ! -e /sys/fs/cgroup/unified/cgroup.procs ] &&
   [ ! -e /sys/fs/cgroup/systemd/cgroup.procs ]; then
  # no cgroup file system here (a chroot with a fresh, read-only sysfs): the v2 hierarchy,
  # mounted in this namespace only (the kernel has one: the machine's, shared)
  mount -t cgroup2 logkey-cgroup2 /sys/fs/cgroup
fi
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then          # cgroup v2 only
  cgroups=("/sys/fs/cgroup/logkey-$$.slice/$unit")
else                                                        # v1 / hybrid
  for h in unified systemd; do
    [ -e "/sys/fs/cgroup/$h/cgroup.procs" ] && cgroups+=("/sys/fs/cgroup/$h/logkey-$$.slice/$unit")
  done
fi
[ ${#cgroups[@]} -gt 0 ] || { echo "journald-ns.sh: no cgroup hierarchy with units under /sys/fs/cgroup" >&2; exit 2; }
printf '%s\n' "${cgroups[@]}" > "$dir/cgroups"

jpid= cpid=
cleanup() {
  trap - EXIT TERM INT
  [ -n "$cpid" ] && { kill -TERM "$cpid" 2>/dev/null || true; wait "$cpid" 2>/dev/null || true; }
  [ -n "$jpid" ] && { kill -TERM "$jpid" 2>/dev/null || true; wait "$jpid" 2>/dev/null || true; }
  for c in "${cgroups[@]}"; do
    for _ in $(seq 50); do rmdir "$c" 2>/dev/null && break; sleep 0.1; done
    rmdir "${c%/*}" 2>/dev/null || true
  done
}
trap cleanup EXIT TERM INT

"$journald" &
jpid=$!
for _ in $(seq 100); do
  [ -S /run/systemd/journal/dev-log ] && [ -S /run/systemd/journal/socket ] && break
  kill -0 "$jpid" 2>/dev/null || break
  sleep 0.05
done
[ -S /run/systemd/journal/dev-log ] || { echo "journald-ns.sh: $journald made no /run/systemd/journal/dev-log" >&2; exit 1; }

for c in "${cgroups[@]}"; do mkdir -p "$c"; done
(
  for c in "${cgroups[@]}"; do echo "$BASHPID" > "$c/cgroup.procs"; done
  exec "$@"
) &
cpid=$!
echo ready
wait "$cpid" || true
