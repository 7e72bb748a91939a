"""Dovecot's authentication policy requests, for the watcher's `dovecot_policy` listener
(authpolicyserver.py does the HTTP; this part is pure: a request in, an answer out).

Dovecot's auth process (src/auth/auth-policy.c, 2.3 and 2.4 alike) POSTs a JSON object to
`auth_policy_server_url` with `?command=allow` (before and after checking the password; it
reads `{"status": N}` back: 0 go on, <0 refuse, >0 wait N seconds) or `?command=report` (after
the check, with auth_policy_report_after_auth = yes; only the HTTP status of the answer is
looked at). The object holds the auth_policy_request_attributes (defaults: login, pwhash,
remote, device_id, protocol, session_id; 2.4 adds fail_type), then "tls" and, in a report,
"success" and "policy_reject" (booleans). The key of auth_policy_server_api_header comes in
the X-API-Key header (or the one it names, "Name:value").

Decisions: an `allow` is always answered `{"status":0,"msg":""}`: this listener never refuses,
delays or lets through anything itself. A `report` with "success": true and "policy_reject":
false, for protocol pop3 or imap, from a literal address in "remote", is a login (pack
"dovecot-policy": no logout follows, the gate lasts `window`); reports of failures and of other
protocols (smtp, submission, sieve...) are answered and open nothing.
Trust: only a request carrying the configured key is read at all; the key is compared in
constant time. The nonce (auth_policy_hash_nonce) only salts "pwhash", which the listener
cannot check without the password: it is not an authentication. Every refusal is a Bad with
the reason, for one log line.
"""
from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from ..events import GATE_PROTOCOLS, LOGIN, Event, canonical_ip

POLICY_PACK = "dovecot-policy"
NEUTRAL = b'{"status":0,"msg":""}'      # "go on": Dovecot's answer for "no opinion"
MAX_USER = 256


@dataclass
class Answer:
    status: int                 # HTTP status code
    body: bytes
    event: Event | None = None  # the login a report tells of
    bad: str | None = None      # why the request was refused (one log line), or None
    outcome: str = "allow"      # allow | login | failed | other (counted by the listener)


def bad(status: int, why: str) -> Answer:
    return Answer(status, json.dumps({"error": why}).encode(), bad=why, outcome="bad")


def key_matches(presented: str | None, key: str) -> bool:
    if presented is None:
        return False
    return hmac.compare_digest(presented.strip().encode("utf-8", "replace"),
                               key.encode("utf-8"))


def command_of(target: str) -> str | None:
    """The `command` query parameter of the request target, or None."""
    from urllib.parse import parse_qs, urlsplit
    try:
        values = parse_qs(urlsplit(target).query, max_num_fields=20).get("command", [])
    except ValueError:
        return None
    return values[0] if len(values) == 1 else None


def _user(value) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_USER or \
            not value.isprintable() or value != "".join(value.split()):
        return None
    return value


def decide(method: str, target: str, headers: dict, body: bytes, key: str,
           key_header: str, now: float) -> Answer:
    """The answer to one HTTP request. `headers`: lower-case names -> values."""
    if not key_matches(headers.get(key_header.lower()), key):
        return bad(403, f"no or wrong API key in {key_header}")
    if method != "POST":
        return bad(405, f"method {method[:16]!r}: only POST")
    command = command_of(target)
    if command not in ("allow", "report"):
        return bad(400, "command: must be allow or report (?command=...)")
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return bad(400, f"body: not JSON ({str(exc)[:80]})")
    if not isinstance(request, dict):
        return bad(400, "body: not a JSON object")
    if command == "allow":
        return Answer(200, NEUTRAL)
    success, rejected = request.get("success"), request.get("policy_reject", False)
    if not isinstance(success, bool) or not isinstance(rejected, bool):
        return bad(400, "success/policy_reject: not booleans (is this a Dovecot report?)")
    if not success or rejected:
        return Answer(200, NEUTRAL, outcome="failed")
    protocol = request.get("protocol")
    if not isinstance(protocol, str):
        return bad(400, "protocol: missing (auth_policy_request_attributes must keep "
                        "protocol=%s, 2.4: %{protocol})")
    if protocol not in GATE_PROTOCOLS:
        return Answer(200, NEUTRAL, outcome="other")
    remote = request.get("remote")
    ip = canonical_ip(remote) if isinstance(remote, str) else None
    if ip is None:
        return bad(400, f"remote: {str(remote)[:64]!r} is not an IP address "
                        "(auth_policy_request_attributes must keep remote=%{rip}, "
                        "2.4: %{remote_ip})")
    event = Event(LOGIN, ip, _user(request.get("login")), protocol,
                  datetime.fromtimestamp(now, timezone.utc), POLICY_PACK, "report")
    return Answer(200, NEUTRAL, event=event, outcome="login")
