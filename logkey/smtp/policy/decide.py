"""The policy decision: one request in, one action out. Pure: no I/O of its own, no clock;
the store is reached only through the `is_open(ip) -> bool` callable it is given.

Trust: the request comes from the socket; only `request` and `client_address` are looked at.
- `request` must be `smtpd_access_policy`, the one request type Postfix's smtpd sends
  (SMTPD_POLICY_README); any other type gets DUNNO (no opinion).
- `client_address` must be a literal IPv4/IPv6 address (`events.canonical_ip`: IPv4-mapped
  IPv6 becomes IPv4, IPv6 is compressed, zone ids and leading zeros are refused); anything else
  (missing, empty, "unknown", a name) gets DUNNO.
- An open gate for that address gives OK. Postfix takes one action per reply, so the OK path
  carries nothing else (no PREPEND): OK is the whole answer.
- Every error (the store unreachable, a bug) gives DUNNO, never OK; `on_error` hears of it so
  the server can log it. The protocol state is not looked at: where OK takes effect is chosen
  by the restriction list `check_policy_service` is placed in (README: smtpd_relay_restrictions).
"""
from __future__ import annotations

from typing import Callable

from ...events import canonical_ip

OK = "OK"
DUNNO = "DUNNO"
REQUEST_TYPE = "smtpd_access_policy"


def decide(request: dict, is_open: Callable[[str], bool],
           on_error: Callable[[BaseException], None] | None = None) -> str:
    try:
        if request.get("request") != REQUEST_TYPE:
            return DUNNO
        address = request.get("client_address")
        if not isinstance(address, str):
            return DUNNO
        ip = canonical_ip(address)
        if ip is None:
            return DUNNO
        return OK if is_open(ip) is True else DUNNO
    except Exception as exc:                  # never OK on error
        if on_error is not None:
            try:
                on_error(exc)
            except Exception:
                pass
        return DUNNO
