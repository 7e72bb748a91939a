#!/usr/bin/env python3
"""Capture real nginx mail-proxy log lines (run by hand as root; tests/test_nginx_mail.py runs
the same capture against a fresh nginx every time).

nginx is Debian 12's nginx + libnginx-mod-mail, unpacked with `dpkg-deb -x` (never installed,
so the machine's nginx is neither started nor touched): .ci/nginx-mail.sh puts it in
/var/cache/logkey/nginx-root, or set LOGKEY_NGINX_ROOT. It runs as a private process with a
config in a temp dir: POP3 on 127.0.0.77:110, IMAP on 127.0.0.77:143 (the standard ports, on
an address nothing else uses: the protocol comes from the listener's port), POP3 on
127.0.0.77:<free port> (a site's own port: gives no event unless the configuration names it),
`auth_http` a tiny HTTP service in this process (password e2e-secret accepted, others refused
with Auth-Wait), upstream a real private dovecot (tests/servers.py) with a static passdb so
that crafted user names really log in. error_log goes both to a file (nginx's own format,
level info) and to syslog on a unix socket in the temp dir, read by this process (host
"capture", control characters escaped as rsyslog does). Clients connect from 127.0.0.N, one N
per session.

Usage: python3 tools/capture/nginx_mail.py [OUTDIR]   (default tests/fixtures/captured)
"""
from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

from clients import IMAPFrom, POP3From  # noqa: E402

DEFAULT_ROOT = "/var/cache/logkey/nginx-root"
LISTEN = "127.0.0.77"
PASSWORD = "e2e-secret"
NEWLINE_LOGIN = ('d\n2026/12/02 05:35:17 [info] 1#1: *1 client logged in, client: 6.6.6.6, '
                 'server: 127.0.0.77:143, login: "e')
# (source address, protocol, user, password, logs in)
SESSIONS = [
    ("127.0.0.20", "pop3", "alice", PASSWORD, True),
    ("127.0.0.21", "imap", "bob@example.org", PASSWORD, True),
    ("127.0.0.22", "pop3", "alice", "wrong", False),
    ("127.0.0.23", "imap", "bob", "wrong", False),
    ("127.0.0.24", "pop3", 'x", client: 6.6.6.6, server: 127.0.0.77:110, login: "y', PASSWORD, True),
    ("127.0.0.25", "imap-literal", 'z", upstream: 6.6.6.6', PASSWORD, True),
    ("127.0.0.26", "pop3", "client logged in, client: 6.6.6.6", "wrong", False),
    ("127.0.0.27", "pop3-other-port", "carol", PASSWORD, True),
    # a newline in the login name, as an IMAP literal and in POP3 AUTH PLAIN: it must not
    # start a line of the client's choosing in nginx's own file
    ("127.0.0.28", "imap-literal", NEWLINE_LOGIN, PASSWORD, True),
    ("127.0.0.29", "pop3-auth-plain", NEWLINE_LOGIN, PASSWORD, True),
]


def nginx_root() -> Path | None:
    root = Path(os.environ.get("LOGKEY_NGINX_ROOT", DEFAULT_ROOT))
    ok = (root / "usr/sbin/nginx").is_file() and \
        (root / "usr/lib/nginx/modules/ngx_mail_module.so").is_file()
    return root if ok else None


def version(root: Path) -> str:
    out = subprocess.run([str(root / "usr/sbin/nginx"), "-v"], capture_output=True, text=True)
    return out.stderr.strip().rsplit("/", 1)[-1]


class Auth(http.server.BaseHTTPRequestHandler):
    """nginx's auth_http protocol (ngx_mail_auth_http_module): Auth-User/Auth-Pass in, Auth-Status
    and the upstream's Auth-Server/Auth-Port out."""
    ports: dict = {}

    def do_GET(self):
        ok = self.headers.get("Auth-Pass") == PASSWORD
        self.send_response(200)
        if ok:
            self.send_header("Auth-Status", "OK")
            self.send_header("Auth-Server", "127.0.0.1")
            self.send_header("Auth-Port", str(self.ports[self.headers.get("Auth-Protocol")]))
        else:
            self.send_header("Auth-Status", "Invalid login or password")
            self.send_header("Auth-Wait", "1")
        self.end_headers()

    def log_message(self, *args):
        pass


def _syslog_reader(sock: socket.socket, out: list, stop: threading.Event):
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        # nginx sends "<PRI>Mmm dd hh:mm:ss HOST TAG: msg"; written as rsyslog's file format
        # (traditional) would: the PRI dropped, the host named "capture", control characters
        # as "#" and three octal digits ($EscapeControlCharactersOnReceive, on by default)
        text = data.split(b">", 1)[1] if data.startswith(b"<") else data
        stamp, rest = text[:15], text[16:]
        rest = b"".join(b"#%03o" % c if c < 32 else bytes([c]) for c in rest.split(b" ", 1)[1])
        out.append(stamp + b" capture " + rest)


def _raw_session(src, port, proto, user, password) -> bool:
    """A login that the stdlib clients cannot send (a newline inside the user name)."""
    import base64
    with socket.create_connection((LISTEN, port), 10, source_address=(src, 0)) as c:
        f = c.makefile("rb")
        f.readline()
        if proto == "imap-literal":
            name = user.encode()
            c.sendall(b"a LOGIN {%d}\r\n" % len(name))
            if not f.readline().startswith(b"+"):
                return False
            c.sendall(name + b" " + password.encode() + b"\r\n")
            reply = f.readline()
            c.sendall(b"b LOGOUT\r\n")
            return reply.startswith(b"a OK")
        token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
        c.sendall(b"AUTH PLAIN " + token + b"\r\n")
        reply = f.readline()
        c.sendall(b"QUIT\r\n")
        return reply.startswith(b"+OK")


def capture(outdir: Path, root: Path) -> dict:
    """Run the sessions; write nginx-VER-error.log and nginx-VER-syslog.log into outdir.
    Returns {"error_log": path, "syslog": path, "ledger": [...], "version": VER, "port": N}."""
    from conftest import free_port, stop_process
    from servers import Dovecot
    ver = version(root)
    tmp = Path(tempfile.mkdtemp(prefix="logkey-nginx."))
    dove = Dovecot("nginx-upstream")
    text = dove.config.read_text()
    text = text.replace(f"driver = passwd-file\n  args = scheme=PLAIN username_format=%u {dove.dir}/users",
                        f"driver = static\n  args = password={PASSWORD}")
    text = text.replace(f"driver = passwd-file\n  args = username_format=%u {dove.dir}/users",
                        f"driver = static\n  args = uid=65534 gid=65534 home={dove.dir}/home/u0")
    dove.config.write_text(text)
    dove.start()
    Auth.ports = {"pop3": dove.pop_port, "imap": dove.imap_port}
    auth = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Auth)
    threading.Thread(target=auth.serve_forever, daemon=True).start()
    log_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log_sock.bind(str(tmp / "log.sock"))
    os.chmod(tmp / "log.sock", 0o666)
    received: list[bytes] = []
    stop = threading.Event()
    reader = threading.Thread(target=_syslog_reader, args=(log_sock, received, stop), daemon=True)
    reader.start()
    other = free_port(host=LISTEN)
    (tmp / "nginx.conf").write_text(f"""# generated by tools/capture/nginx_mail.py
load_module {root}/usr/lib/nginx/modules/ngx_mail_module.so;
daemon off;
worker_processes 1;
user nobody nogroup;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
error_log syslog:server=unix:{tmp}/log.sock,facility=mail,tag=nginx info;
events {{ worker_connections 64; }}
mail {{
    server_name capture.example;
    auth_http 127.0.0.1:{auth.server_address[1]}/auth;
    server {{ listen {LISTEN}:110; protocol pop3; pop3_auth plain; }}
    server {{ listen {LISTEN}:143; protocol imap; imap_auth plain; }}
    server {{ listen {LISTEN}:{other}; protocol pop3; pop3_auth plain; }}
}}
""")
    os.chmod(tmp, 0o755)
    proc = subprocess.Popen([str(root / "usr/sbin/nginx"), "-p", str(tmp), "-e", str(tmp / "error.log"),
                             "-c", str(tmp / "nginx.conf")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    ledger = []
    try:
        deadline = time.monotonic() + 10
        while not (tmp / "nginx.pid").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        time.sleep(0.3)
        for src, proto, user, password, good in SESSIONS:
            port = {"pop3": 110, "imap": 143}.get(proto, other)
            ok = False
            try:
                if proto in ("imap-literal", "pop3-auth-plain"):
                    ok = _raw_session(src, 143 if proto == "imap-literal" else 110, proto,
                                      user, password)
                elif proto == "imap":
                    c = IMAPFrom(src, port, LISTEN)
                    c.login(user, password)
                    ok = True
                    c.logout()
                else:
                    c = POP3From(src, port, LISTEN)
                    c.user(user)
                    c.pass_(password)
                    ok = True
                    c.quit()
            except Exception:
                pass
            ledger.append({"ip": src, "protocol": proto, "user": user, "ok": ok, "expected": good})
        time.sleep(0.5)
    finally:
        stop_process(proc)
        dove.proc and stop_process(dove.proc)
        auth.shutdown()
        stop.set()
        reader.join(2)
        log_sock.close()
    outdir.mkdir(parents=True, exist_ok=True)
    error_log = outdir / f"nginx-{ver}-error.log"
    syslog = outdir / f"nginx-{ver}-syslog.log"
    error_log.write_bytes((tmp / "error.log").read_bytes())
    syslog.write_bytes(b"".join(line + b"\n" for line in received))
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(dove.dir, ignore_errors=True)
    return {"error_log": error_log, "syslog": syslog, "ledger": ledger, "version": ver,
            "port": other}


if __name__ == "__main__":
    found = nginx_root()
    if found is None:
        sys.exit(f"no nginx with the mail module under {os.environ.get('LOGKEY_NGINX_ROOT', DEFAULT_ROOT)}"
                 " (run .ci/nginx-mail.sh)")
    result = capture(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests/fixtures/captured",
                     found)
    for row in result["ledger"]:
        print(row)
    print(result["error_log"], result["syslog"])
