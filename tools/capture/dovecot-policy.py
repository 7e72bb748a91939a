#!/usr/bin/env python3
"""Regenerate tests/fixtures/dovecot-policy/dovecot-RELEASE.json: what a real Dovecot sends to
its auth policy server (docs/dovecot-direct.md's policy snippets, with the allow checks on),
for a POP3 login from 127.0.0.2, an IMAP one from 127.0.0.3 and a wrong password from
127.0.0.4; a plain capture server answers {"status":0}. tests/test_authpolicy.py replays them.
Run as root from the repository, with the release where tests/dovecot_direct.py finds it:
    .venv/bin/python tools/capture/dovecot-policy.py 2.3   (and 2.4)
"""
import json
import sys
import threading
import time
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
TOP = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(TOP / "tests"))
from conftest import free_port  # noqa: E402
from dovecot_direct import DirectDovecot, snippet, where  # noqa: E402

KEPT = ("x-api-key", "content-type", "content-length", "transfer-encoding", "expect")
release = sys.argv[1]
got = []


class Capture(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        got.append({"target": self.path, "body": body.decode(),
                    "headers": {k.lower(): v for k, v in self.headers.items()
                                if k.lower() in KEPT}})
        out = b'{"status":0,"msg":""}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


port = free_port()
srv = ThreadingHTTPServer(("127.0.0.1", port), Capture)
threading.Thread(target=srv.serve_forever, daemon=True).start()
root, why = where(release)
if root is None:
    sys.exit(f"dovecot-policy.py: {why}")
d = DirectDovecot(release, root)
key = "0123456789abcdef0123456789abcdef"
secret = snippet(f"policy-secret-{release}").replace("KEY", key).replace("NONCE", "capture")
path = d.secret(secret)
d.add(snippet(f"policy-{release}")
      .replace("127.0.0.1:10045", f"127.0.0.1:{port}")
      .replace("/etc/dovecot/logkey-policy-secret.conf", str(path))
      .replace("check_before_auth = no", "check_before_auth = yes")
      .replace("check_after_auth = no", "check_after_auth = yes"))
d.start()
try:
    assert d.pop_login("127.0.0.2")
    assert d.imap_login("127.0.0.3")
    assert not d.pop_login("127.0.0.4", password="wrong")
    time.sleep(1)
finally:
    d.stop()
out = TOP / "tests" / "fixtures" / "dovecot-policy" / f"dovecot-{release}.json"
out.write_text(json.dumps(got, indent=1) + "\n")
print(len(got), "requests ->", out)
