#!/usr/bin/env python3
"""A tiny syslog receiver for capturing real daemons' log lines (run by hand, not by CI).

Reads:  datagrams on a unix socket (what glibc's syslog(3) sends to /dev/log).
Writes: one RFC 3164 line per message to OUTFILE, with host "capture" inserted after the stamp,
        exactly as rsyslog's traditional file format would write it; with SYSLOGSINK_KEEP_PRI=1
        the <PRI> the daemon sent is kept in front (docs/packs/*.md name each server's facility
        and severity from such runs).

With $LOGKEY_CAPTURE_CREDS set to a file, it also appends one JSON line per message with what
journald would record as the trusted fields of its sender: _PID, _UID, _GID from the socket's
SCM_CREDENTIALS, _COMM and _EXE read from /proc right away (journald does the same), and the
message as sent. That is how the packs' `journal:` expectations are checked.

Use it inside a private mount namespace so the machine's /dev/log is left alone; private-dev.sh
beside this file does the whole dance (a tmpfs /dev whose `log` is this receiver), e.g.:

    unshare -m bash -c '
        . tools/capture/private-dev.sh
        private_dev_with_syslog "$TMP" "$TMP/syslog.out"
        ... start the daemon, drive logins ...'
"""
import json
import os
import re
import socket
import struct
import sys
import time

PRI_STAMP = re.compile(rb"^<(\d{1,3})>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) ")


def sender(ancillary) -> dict:
    """The trusted fields journald would record for the sender of one datagram."""
    fields = {}
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= 12:
            pid, uid, gid = struct.unpack("iII", data[:12])
            fields.update(_PID=str(pid), _UID=str(uid), _GID=str(gid))
            try:
                with open(f"/proc/{pid}/comm") as f:
                    fields["_COMM"] = f.read().strip()
                fields["_EXE"] = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                pass                # gone already: journald would record no _COMM either
    return fields


def main(sock_path: str, out_path: str, seconds: float = 3600.0) -> int:
    keep_pri = os.environ.get("SYSLOGSINK_KEEP_PRI") == "1"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(1.0)
    creds_path = os.environ.get("LOGKEY_CAPTURE_CREDS")
    creds = open(creds_path, "a", buffering=1) if creds_path else None
    if creds:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    deadline = time.monotonic() + seconds
    with open(out_path, "ab", buffering=0) as out:
        while time.monotonic() < deadline:
            try:
                data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            if creds:
                creds.write(json.dumps({**sender(ancillary), "MESSAGE": data.decode(
                    "utf-8", "replace").rstrip("\n\x00")}) + "\n")
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
