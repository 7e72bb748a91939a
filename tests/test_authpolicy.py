"""The Dovecot auth policy listener (`dovecot_policy`): authpolicy.decide() on Dovecot's
request shapes (2.3 and 2.4 send the same JSON; tests/test_e2e_dovecot_direct.py has the real
ones) and hostile ones, then a real `logkey watch` listening, fed bad requests of every kind
while good ones keep opening gates; and the popwrap socket's `postlogin` datagram."""
import json
import signal
import socket
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, free_port, run_logkey, wait_for
from logkey.sources.authpolicy import NEUTRAL, POLICY_PACK, decide
from logkey.gates.policy import GatePolicy, PolicyConfig
from logkey.sources.popsocket import POPWRAP_PACK, POSTLOGIN_PACK, popwrap_event

KEY = "k" * 32
HEADERS = {"x-api-key": KEY, "content-type": "application/json"}
REPORT = {"login": "alice", "pwhash": "0a1b", "remote": "192.0.2.7", "device_id": "",
          "protocol": "imap", "session_id": "AbCd", "fail_type": "", "tls": False,
          "success": True, "policy_reject": False}


def ask(body, command="report", headers=HEADERS, method="POST", target=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decide(method, target or f"/?command={command}", headers, data, KEY, "X-API-Key",
                  1_000_000.0)


def test_report_of_a_success_is_a_login():
    a = ask(REPORT)
    assert (a.status, a.body, a.bad) == (200, NEUTRAL, None)
    e = a.event
    assert (e.kind, e.ip, e.user, e.protocol, e.pack, e.session) == (
        "login", "192.0.2.7", "alice", "imap", POLICY_PACK, None)
    assert e.time.timestamp() == 1_000_000.0


def test_allow_is_always_neutral_and_opens_nothing():
    for body in (REPORT, {"login": "x", "remote": "192.0.2.7", "protocol": "pop3", "tls": True}):
        a = ask(body, command="allow")
        assert (a.status, a.body, a.event, a.bad) == (200, NEUTRAL, None, None)
        assert json.loads(a.body) == {"status": 0, "msg": ""}


@pytest.mark.parametrize("change", [
    {"success": False}, {"policy_reject": True}, {"protocol": "smtp"},
    {"protocol": "submission"}, {"protocol": "sieve"}, {"protocol": "IMAP"}])
def test_failures_and_other_protocols_open_nothing(change):
    a = ask({**REPORT, **change})
    assert (a.status, a.event, a.bad) == (200, None, None)


@pytest.mark.parametrize("remote,ip", [("::ffff:192.0.2.9", "192.0.2.9"),
                                       ("2001:DB8::1", "2001:db8::1")])
def test_addresses_are_canonical(remote, ip):
    assert ask({**REPORT, "remote": remote}).event.ip == ip


@pytest.mark.parametrize("remote", [
    "", "192.0.2.7 ", "192.0.2.7,10.0.0.1", "192.0.2.7\n", "fe80::1%eth0", "mail.example",
    "192.000.2.7", "1.2.3.4.5", None, 3232235527, ["192.0.2.7"], "٣.٣.٣.٣"])
def test_a_remote_that_is_not_an_address_is_refused(remote):
    a = ask({**REPORT, "remote": remote})
    assert a.event is None and a.status == 400 and a.bad.startswith("remote:")


@pytest.mark.parametrize("login", ["bob smith", "eve\nuser=root", "", "x" * 300, 7, None])
def test_an_odd_login_is_an_unknown_user(login):
    assert ask({**REPORT, "login": login}).event.user is None


@pytest.mark.parametrize("headers,why", [
    ({}, "no or wrong API key"), ({"x-api-key": ""}, "no or wrong API key"),
    ({"x-api-key": KEY[:-1]}, "no or wrong API key"),
    ({"x-api-key": KEY + "x"}, "no or wrong API key"),
    ({"authorization": KEY}, "no or wrong API key")])
def test_no_key_no_entry(headers, why):
    a = ask(REPORT, headers=headers)
    assert (a.status, a.event) == (403, None) and a.bad.startswith(why)


def test_key_may_carry_spaces_around_it():
    # 2.3/2.4 send "Name:value" headers as written after the colon (" KEY" for "Name: KEY")
    assert ask(REPORT, headers={"x-api-key": f" {KEY} "}).event is not None


@pytest.mark.parametrize("kw,status,why", [
    ({"method": "GET"}, 405, "method"),
    ({"target": "/"}, 400, "command:"),
    ({"target": "/?command=report&command=allow"}, 400, "command:"),
    ({"target": "/?command=delete"}, 400, "command:"),
    ({"body": b"{not json"}, 400, "body: not JSON"),
    ({"body": b"\xff\xfe"}, 400, "body: not JSON"),
    ({"body": b"[1, 2]"}, 400, "body: not a JSON object"),
    ({"body": {**REPORT, "success": "true"}}, 400, "success/policy_reject"),
    ({"body": {k: v for k, v in REPORT.items() if k != "protocol"}}, 400, "protocol:")])
def test_bad_requests(kw, status, why):
    body = kw.pop("body", REPORT)
    a = ask(body, **kw)
    assert (a.status, a.event) == (status, None) and a.bad.startswith(why), a.bad
    assert "error" in json.loads(a.body)


def test_url_with_its_own_query():
    # auth_policy_server_url = http://127.0.0.1:10045/?site=a& : Dovecot appends command=...
    assert ask(REPORT, target="/?site=a&command=report").event is not None


# -- what real Dovecots sent (captured from the releases the e2e suite runs, with
# auth_policy_check_before_auth/after_auth on: a POP3 login from 127.0.0.2, an IMAP one from
# 127.0.0.3, a wrong password from 127.0.0.4) ---------------------------------------------

CAPTURED = ROOT / "tests" / "fixtures" / "dovecot-policy"
EXPECTED = [("127.0.0.2", "pop3"), ("127.0.0.3", "imap")]


def captured(release):
    return json.loads((CAPTURED / f"dovecot-{release}.json").read_text())


@pytest.mark.parametrize("release", ["2.3", "2.4"])
def test_captured_requests(release):
    logins = []
    for req in captured(release):
        key = req["headers"]["x-api-key"]
        a = decide("POST", req["target"], req["headers"], req["body"].encode(), key,
                   "X-API-Key", 0.0)
        assert (a.status, a.body, a.bad) == (200, NEUTRAL, None), req
        if a.event is not None:
            logins.append((a.event.ip, a.event.protocol))
            assert a.event.user == "test"
    assert logins == EXPECTED


def http_request(req, key=None) -> bytes:
    headers = dict(req["headers"], **({"x-api-key": key} if key else {}))
    return (f"POST {req['target']} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
            + req["body"].encode())


@pytest.mark.parametrize("release", ["2.3", "2.4"])
def test_captured_requests_byte_by_byte_on_one_connection(listener, release):
    """The whole capture replayed on one kept-alive connection in 1-byte writes."""
    port, w, gates = listener
    requests = captured(release)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for req in requests:
            for byte in http_request(req, KEY):
                s.sendall(bytes([byte]))
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    assert out.count(b"HTTP/1.1 200 OK\r\n") == len(requests) and b"error" not in out
    wait_for(lambda: {p.name for p in gates.iterdir() if not p.name.startswith(".")} ==
             {"127.0.0.2", "127.0.0.3"}, what="the captured logins' gates")


# -- the popwrap socket's postlogin datagram ------------------------------------------------

def test_postlogin_datagram_is_a_login_without_a_session():
    e = popwrap_event(b"postlogin ::ffff:192.0.2.7 alice imap 4242\n", 1_000_000.0)
    assert (e.kind, e.ip, e.user, e.protocol, e.pack, e.session) == (
        "login", "192.0.2.7", "alice", "imap", POSTLOGIN_PACK, None)
    for bad in (b"postlogin 192.0.2.7 alice smtp 1", b"postlogin 192.0.2.7x alice imap",
                b"postlogout 192.0.2.7 alice imap 1", b"postlogin 192.0.2.7 al ice imap 1"):
        assert popwrap_event(bad, 0.0) is None, bad


def test_postlogin_gate_lasts_window_not_the_session():
    """popwrap's own logins track a session (its logout ends it); a post-login login has no
    logout coming, so its gate must not be held open up to max_session."""
    policy = GatePolicy(PolicyConfig(window=600, max_session=3600, never_gate=[],
                                     logout_packs=frozenset([POPWRAP_PACK])))
    e = popwrap_event(b"postlogin 192.0.2.7 alice imap 1", 1_000_000.0)
    [put] = policy.on_event(e, 1_000_000.0, POPWRAP_PACK)
    assert put.gate.expires == 1_000_600.0
    assert not policy.gates[put.gate.key].sessions
    assert policy.on_tick(1_000_300.0, None, False) == []        # not pushed on by a session


# -- a real watcher listening ------------------------------------------------------------------

@pytest.fixture
def listener(tmp_path, watch):
    port = free_port()
    key = tmp_path / "key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs: []\nstore: {{type: dir, path: {tmp_path / 'gates'}}}\n"
                   f"state_dir: {tmp_path / 'state'}\n"
                   f"dovecot_policy: {{listen: '127.0.0.1:{port}', api_key_file: {key}, "
                   "max_request: 4096}\n")
    w = watch(cfg)
    return port, w, tmp_path / "gates"


def post(port, body, key=KEY, command="report"):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/?command={command}", method="POST",
        data=json.dumps(body).encode(), headers={"X-API-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def raw(port, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out


def test_listener_serves_good_requests_between_bad_ones(listener):
    port, w, gates = listener
    assert post(port, REPORT) == (200, NEUTRAL)
    wait_for(lambda: (gates / "192.0.2.7").exists(), what="the gate")
    hostile = [
        b"GET / HTTP/1.1\r\nX-Api-Key: " + KEY.encode() + b"\r\n\r\n",
        b"POST /?command=report HTTP/1.1\r\nX-API-Key: " + KEY.encode() + b"\r\n"
        b"Content-Length: 99999\r\n\r\n",
        b"POST /?command=report HTTP/1.1\r\nX-API-Key: " + KEY.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /?command=report HTTP/1.1\r\nX-API-Key: " + KEY.encode() + b"\r\n"
        b"Content-Length: 50\r\n\r\n{\"short\"",
        b"POST /?command=report HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n",
        b"\x00\xff\x16\x03\x01 not http at all\r\n\r\n",
        b"POST /?command=report HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /?command=report HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    ]
    answers = [raw(port, h) for h in hostile]
    assert [a.split(b" ", 2)[1] for a in answers] == [
        b"405", b"413", b"411", b"408", b"431", b"400", b"400", b"400"], answers
    assert post(port, {**REPORT, "remote": "192.0.2.8"}, key="x" * 32)[0] == 403
    # two requests on one kept-alive connection, as Dovecot's http client does
    body = json.dumps({**REPORT, "remote": "192.0.2.9"}).encode()
    one = (b"POST /?command=report HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode()
           + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    both = raw(port, one + one.replace(b"command=report", b"command=allow"))
    assert both.count(b"HTTP/1.1 200 OK") == 2 and both.count(NEUTRAL) == 2
    wait_for(lambda: (gates / "192.0.2.9").exists(), what="the kept-alive report's gate")
    assert not (gates / "192.0.2.8").exists()
    bad = [line for line in w.log().splitlines() if "bad request from 127.0.0.1" in line]
    assert len(bad) == 9 and all(line.startswith("<4>dovecot_policy: ") for line in bad), bad
    assert w.proc.poll() is None
    def counts():
        data = json.loads(run_logkey("status", "--json", "--config", str(w.config)).stdout)
        policy = data["watcher"].get("dovecot_policy") or {}
        return policy if policy.get("bad") == 9 else None
    assert wait_for(counts, what="the counts in logkey status", timeout=15, step=0.5) == {
        "requests": 12, "allow": 1, "login": 2, "failed": 0, "other": 0, "bad": 9}


def test_listener_holds_a_bounded_number_of_connections(listener):
    port, w, gates = listener
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        wait_for(lambda: "too many connections at once" in w.log(), what="the refusal")
    finally:
        for s in idle:
            s.close()
    def serving():
        try:
            return post(port, REPORT) == (200, NEUTRAL)
        except OSError:                 # still over the limit while the 300 close: reset
            return False
    assert wait_for(serving, what="serving again")
    wait_for(lambda: (gates / "192.0.2.7").exists(), what="the gate")


def test_a_new_key_takes_effect_on_reload_and_stop_is_clean(listener, tmp_path):
    port, w, gates = listener
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)   # kept open throughout
    (tmp_path / "key").chmod(0o600)
    (tmp_path / "key").write_text("n" * 32 + "\n")
    w.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in w.log(), what="the reload")
    assert post(port, REPORT)[0] == 403
    assert post(port, REPORT, key="n" * 32) == (200, NEUTRAL)
    wait_for(lambda: (gates / "192.0.2.7").exists(), what="the gate")
    assert w.stop() == 0
    idle.close()
    assert "Traceback" not in w.log() and "destroyed" not in w.log(), w.log()
    assert w.log().rstrip().endswith("stopped")


@pytest.mark.parametrize("setting,why", [
    ("{listen: '192.0.2.1:10045', api_key_file: KEY}", "must be a loopback address"),
    ("{listen: '127.0.0.1:10045'}", "api_key_file: required with listen"),
    ("{listen: 'localhost:10045', api_key_file: KEY}", "is not IP:PORT"),
    ("{listen: '127.0.0.1:10045', api_key_file: KEY, header: 'X API'}", "header:"),
    ("{listen: '127.0.0.1:10045', api_key_file: KEY, max_request: 10}", "max_request:"),
    ("{listen: '127.0.0.1:10045', api_key_file: KEY, key: x}", "unknown key")])
def test_bad_settings_are_one_line(tmp_path, setting, why):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"logs: []\ndovecot_policy: {setting.replace('KEY', str(tmp_path / 'k'))}\n")
    proc = run_logkey("config", "check", "--config", str(cfg))
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "dovecot_policy" in lines[0] \
        and why in lines[0], (proc.returncode, lines)


@pytest.mark.parametrize("content", ["short", "has:colon" * 3, "two words here and more", ""])
def test_a_bad_key_file_stops_the_start(tmp_path, content):
    key = tmp_path / "k"
    key.write_text(content)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"logs: []\nstore: {{type: dir, path: {tmp_path / 'g'}}}\n"
                   f"state_dir: {tmp_path / 's'}\n"
                   f"dovecot_policy: {{listen: '127.0.0.1:{free_port()}', api_key_file: {key}}}\n")
    proc = run_logkey("watch", "--once", "--config", str(cfg))
    # (a root without inotify_simple says so first, as a warning)
    lines = [x for x in proc.stderr.decode().strip().splitlines() if not x.startswith("<4>")]
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert "dovecot_policy.api_key_file" in lines[0] and str(key) in lines[0]


def test_status_warns_of_a_key_everyone_reads(tmp_path):
    key = tmp_path / "k"
    key.write_text(KEY)
    key.chmod(0o644)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"logs: []\nstore: {{type: dir, path: {tmp_path / 'g'}}}\n"
                   f"state_dir: {tmp_path / 's'}\n"
                   f"dovecot_policy: {{listen: '127.0.0.1:10045', api_key_file: {key}}}\n")
    out = run_logkey("status", "--config", str(cfg)).stdout.decode()
    assert "dovecot_policy.api_key_file" in out and "readable by every local user" in out, out

