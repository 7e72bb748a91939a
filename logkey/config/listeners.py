"""The sections for what logkey listens on: `policy:` (the Postfix policy service's sockets),
`popwrap:` (the datagram socket popwrap reports to), `dovecot_policy:` (Dovecot's auth policy
server, on loopback) and `metrics:` (the Prometheus endpoints).

Takes: the YAML mapping of one section. Gives: the section with its defaults filled in
(*_DEFAULTS), durations in seconds, `policy.listen` always a list; or ValueError naming the
key inside the section (".listen: ...").
"""
from __future__ import annotations

import ipaddress
import re

from ..hostport import parse_hostport
from .values import parse_duration

POLICY_DEFAULTS = {"listen": ["unix:/run/logkey/policy.sock"], "socket_mode": "0660",
                   "socket_group": None, "max_request": 65536, "idle_timeout": "300s",
                   "miss_wait": "1s"}
POPWRAP_DEFAULTS = {"socket": None, "socket_mode": "0660", "socket_group": None}
DOVECOT_POLICY_DEFAULTS = {"listen": None, "api_key_file": None, "header": "X-API-Key",
                           "max_request": 16384}
METRICS_DEFAULTS = {"watch": None, "policy": None}


def with_defaults(v, defaults: dict, shape: str, known: str | None = None) -> dict:
    """A section's mapping over `defaults`' keys, the defaults filled in; `shape` says what
    it must be, `known` lists the keys in the unknown-key error (default: sorted)."""
    if not isinstance(v, dict):
        raise ValueError(f"must be a mapping{shape}")
    bad = set(v) - set(defaults)
    if bad:
        raise ValueError(f".{sorted(bad)[0]}: unknown key "
                         f"(known: {known or ', '.join(sorted(defaults))})")
    return dict(defaults, **v)


def check_socket_access(out: dict) -> None:
    """socket_mode and socket_group, as `policy:` and `popwrap:` both have them."""
    mode = out["socket_mode"]
    if not isinstance(mode, str) or not re.fullmatch(r"0?[0-7]{3}", mode):
        raise ValueError(".socket_mode: must be an octal mode such as \"0660\"")
    if out["socket_group"] is not None and not isinstance(out["socket_group"], str):
        raise ValueError(".socket_group: must be a group name")


def policy(v):
    out = with_defaults(v, POLICY_DEFAULTS, " (listen, socket_mode, socket_group, ...)")
    listen = out["listen"]
    if isinstance(listen, str):
        listen = [listen]
    if not isinstance(listen, list) or not all(
            isinstance(x, str) and (x.startswith("unix:") or x.startswith("inet:")) for x in listen):
        raise ValueError(".listen: must be a list of unix:PATH or inet:HOST:PORT")
    out["listen"] = listen
    check_socket_access(out)
    if isinstance(out["max_request"], bool) or not isinstance(out["max_request"], int) \
            or out["max_request"] < 256:
        raise ValueError(".max_request: must be a number of bytes, 256 or more")
    for key in ("idle_timeout", "miss_wait"):
        try:
            out[key] = parse_duration(out[key])
        except ValueError as exc:
            raise ValueError(f".{key}: {exc}") from None
    if out["miss_wait"] > 60:
        raise ValueError(".miss_wait: at most 60s (Postfix waits 100s for a policy reply)")
    return out


def popwrap(v):
    out = with_defaults(v, POPWRAP_DEFAULTS, " (socket, socket_mode, socket_group)")
    if out["socket"] is not None and (not isinstance(out["socket"], str) or not out["socket"]
                                      or "\0" in out["socket"]):
        raise ValueError(".socket: must be a path, or null (off)")
    check_socket_access(out)
    return out


def dovecot_policy(v):
    out = with_defaults(v, DOVECOT_POLICY_DEFAULTS,
                        " (listen, api_key_file, header, max_request)")
    if out["listen"] is not None:
        try:
            host, _ = parse_hostport(out["listen"])
        except ValueError as exc:
            raise ValueError(f".listen: {exc}") from None
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(".listen: must be a loopback address (127.0.0.1:PORT or "
                             "[::1]:PORT): the API key travels in clear")
        if not isinstance(out["api_key_file"], str) or not out["api_key_file"]:
            raise ValueError(".api_key_file: required with listen (a file holding the key "
                             "of Dovecot's auth_policy_server_api_header)")
    if not isinstance(out["header"], str) or not re.fullmatch(r"[A-Za-z0-9-]{1,64}",
                                                               out["header"]):
        raise ValueError(".header: must be an HTTP header name such as X-API-Key")
    if isinstance(out["max_request"], bool) or not isinstance(out["max_request"], int) \
            or not 256 <= out["max_request"] <= 1048576:
        raise ValueError(".max_request: must be a number of bytes from 256 to 1048576")
    return out


def metrics(v):
    out = with_defaults(v, METRICS_DEFAULTS, ": {watch: 127.0.0.1:9469, policy: 127.0.0.1:9470}",
                        known="watch, policy")
    for key, value in out.items():
        if value is not None:
            try:
                parse_hostport(value)
            except ValueError as exc:
                raise ValueError(f".{key}: {exc}") from None
    if out["watch"] is not None and out["watch"] == out["policy"]:
        raise ValueError(".policy: must differ from metrics.watch (two processes, two ports)")
    return out
