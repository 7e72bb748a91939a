#!/usr/bin/env python3
"""A tiny syslog receiver for capturing real daemons' log lines (run by hand, not by CI).

Reads:  datagrams on a unix socket (what glibc's syslog(3) sends to /dev/log).
Writes: one RFC 3164 line per message to OUTFILE, with host "capture" inserted after the stamp,
        exactly as rsyslog's traditional file format would write it; with SYSLOGSINK_KEEP_PRI=1
        the <PRI> the daemon sent is kept in front (docs/packs/*.md name each server's facility
        and severity from such runs).

Use it inside a private mount namespace so the machine's /dev/log is left alone; private-dev.sh
beside this file does the whole dance (a tmpfs /dev whose `log` is this receiver), e.g.:

    unshare -m bash -c '
        . tools/capture/private-dev.sh
        private_dev_with_syslog "$TMP" "$TMP/syslog.out"
        ... start the daemon, drive logins ...'
"""
import os
import re
import socket
import sys
import time

PRI_STAMP = re.compile(rb"^<(\d{1,3})>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) ")


def main(sock_path: str, out_path: str, seconds: float = 3600.0) -> int:
    keep_pri = os.environ.get("SYSLOGSINK_KEEP_PRI") == "1"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(1.0)
    deadline = time.monotonic() + seconds
    with open(out_path, "ab", buffering=0) as out:
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            data = data.rstrip(b"\n\x00")
            m = PRI_STAMP.match(data)
            if m:
                line = m.group(2) + b" capture " + data[m.end():]
            else:
                line = time.strftime("%b %e %H:%M:%S").encode() + b" capture " + data
            if keep_pri and m:                  # which facility.severity the daemon used
                line = b"<" + m.group(1) + b">" + line
            out.write(line.replace(b"\n", b"#012") + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 3600.0))
