"""The configuration file: where it is, what each key means, validation.

Reads: one YAML file (--config FILE, else $LOGKEY_CONFIG, else /etc/logkey/config.yaml).
Every key is defined once in KEYS with its default and meaning; unknown keys are errors (a
typo must not silently disable a safety setting). Errors are one line: "FILE: key: problem".
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import LogkeyError
from .hostport import parse_hostport

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml when present: 10x faster

DEFAULT_PATH = "/etc/logkey/config.yaml"


class ConfigError(LogkeyError):
    """str() is one line naming the file, the key and the problem."""


_DURATION = re.compile(r"(\d+)\s*(s|m|h|d)?")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds from 600, "600", "10m", "1h", "2d"."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    m = _DURATION.fullmatch(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a duration (seconds, or 10m, 1h, 2d)")
    return float(int(m.group(1)) * _UNITS[m.group(2)])


def _duration(v):
    return parse_duration(v)


def _timezone(v):
    if v is None:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError   # only when a zone is configured
    try:
        return ZoneInfo(str(v))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Berlin)")


def _str_list(v):
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of names")
    return v


def _positive_int(v):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError("must be a positive whole number")
    return v


def _path(v):
    if not isinstance(v, str) or not v:
        raise ValueError("must be a path")
    return v


def _networks(v):
    if v is None:
        return None
    if not isinstance(v, list):
        raise ValueError("must be a list of networks (e.g. [192.0.2.0/24, 2001:db8::/32])")
    out = []
    for item in v:
        try:
            out.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (e.g. 192.0.2.0/24)") from None
    return out


def _non_negative_int(v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("must be a whole number, 0 or more")
    return v


def _ipv6_prefix(v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 128:
        raise ValueError("must be a prefix length from 1 to 128 (e.g. 64), or null")
    return v


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")


def _aliases(v, i) -> dict:
    """aliases: {TAG: PROGRAM}: lines tagged TAG are read by the rules for PROGRAM."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"[{i}].aliases: must be a mapping {{TAG: PROGRAM}}, e.g. {{mx2: dovecot}}")
    for tag, program in v.items():
        for what in (tag, program):
            if not isinstance(what, str) or not _TAG.fullmatch(what):
                raise ValueError(f"[{i}].aliases.{tag}: {what!r} is not a program tag "
                                 "(letters, digits, . _ / -, at most 64)")
    return dict(v)


def _logs(v):
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError("must be a list of {path: FILE-OR-GLOB, packs: [NAME...], "
                         "own_file: PACK, sender_verified: BOOL}")
    out = []
    for i, entry in enumerate(v):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict):
            raise ValueError(f"[{i}]: must be a mapping with path: or journal:")
        if "journal" in entry:              # the systemd journal (journal.py)
            if set(entry) != {"journal"}:
                raise ValueError(f"[{i}].{sorted(set(entry) - {'journal'})[0]}: a journal "
                                 "entry has its keys inside journal: (match, program, packs, "
                                 "directory, files)")
            from .sources.journal import parse_source
            out.append({"path": None, "packs": None, "own_file": None, "sender_verified": True,
                        "aliases": {},
                        "journal": parse_source(entry["journal"], f"[{i}].journal")})
            continue
        bad = set(entry) - {"path", "packs", "own_file", "sender_verified", "aliases"}
        if bad:
            raise ValueError(f"[{i}].{sorted(bad)[0]}: unknown key (known: path, packs, "
                             "own_file, sender_verified, aliases; or journal:)")
        path = entry.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError(f"[{i}].path: must be a path or glob")
        packs = entry.get("packs")
        if packs is not None and (not isinstance(packs, list) or
                                  not all(isinstance(x, str) for x in packs)):
            raise ValueError(f"[{i}].packs: must be a list of pack names")
        own = entry.get("own_file")
        if own is not None and not isinstance(own, str):
            raise ValueError(f"[{i}].own_file: must be a pack name")
        verified = entry.get("sender_verified", False)
        if not isinstance(verified, bool):
            raise ValueError(f"[{i}].sender_verified: must be true or false")
        out.append({"path": path, "packs": packs, "own_file": own,
                    "sender_verified": verified, "aliases": _aliases(entry.get("aliases"), i),
                    "journal": None})
    return out


EXPORT_FORMATS = ("lmdb", "sendmail", "exim", "opensmtpd", "text", "tcprules")


def _exports(v):
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError("must be a list of {format: F, path: FILE}")
    out = []
    for i, entry in enumerate(v):
        if not isinstance(entry, dict):
            raise ValueError(f"[{i}]: must be a mapping with format: and path:")
        bad = set(entry) - {"format", "path", "command", "base"}
        if bad:
            raise ValueError(f"[{i}].{sorted(bad)[0]}: unknown key (known: format, path, "
                             "command, base)")
        if entry.get("format") not in EXPORT_FORMATS:
            raise ValueError(f"[{i}].format: must be one of {', '.join(EXPORT_FORMATS)}")
        if not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ValueError(f"[{i}].path: must be a file path")
        for key in ("command", "base"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise ValueError(f"[{i}].{key}: must be a string")
        if entry.get("base") is not None and entry["format"] != "tcprules":
            raise ValueError(f"[{i}].base: only a tcprules export has a base rules file")
        out.append({"format": entry["format"], "path": entry["path"],
                    "command": entry.get("command"), "base": entry.get("base")})
    return out


def _policy(v):
    if not isinstance(v, dict):
        raise ValueError("must be a mapping (listen, socket_mode, socket_group, ...)")
    known = {"listen", "socket_mode", "socket_group", "max_request", "idle_timeout", "miss_wait"}
    bad = set(v) - known
    if bad:
        raise ValueError(f".{sorted(bad)[0]}: unknown key (known: {', '.join(sorted(known))})")
    out = dict(POLICY_DEFAULTS, **v)
    listen = out["listen"]
    if isinstance(listen, str):
        listen = [listen]
    if not isinstance(listen, list) or not all(
            isinstance(x, str) and (x.startswith("unix:") or x.startswith("inet:")) for x in listen):
        raise ValueError(".listen: must be a list of unix:PATH or inet:HOST:PORT")
    out["listen"] = listen
    mode = out["socket_mode"]
    if not isinstance(mode, str) or not re.fullmatch(r"0?[0-7]{3}", mode):
        raise ValueError(".socket_mode: must be an octal mode such as \"0660\"")
    if out["socket_group"] is not None and not isinstance(out["socket_group"], str):
        raise ValueError(".socket_group: must be a group name")
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


def _popwrap(v):
    if not isinstance(v, dict):
        raise ValueError("must be a mapping (socket, socket_mode, socket_group)")
    known = {"socket", "socket_mode", "socket_group"}
    bad = set(v) - known
    if bad:
        raise ValueError(f".{sorted(bad)[0]}: unknown key (known: {', '.join(sorted(known))})")
    out = dict(POPWRAP_DEFAULTS, **v)
    if out["socket"] is not None and (not isinstance(out["socket"], str) or not out["socket"]
                                      or "\0" in out["socket"]):
        raise ValueError(".socket: must be a path, or null (off)")
    mode = out["socket_mode"]
    if not isinstance(mode, str) or not re.fullmatch(r"0?[0-7]{3}", mode):
        raise ValueError(".socket_mode: must be an octal mode such as \"0660\"")
    if out["socket_group"] is not None and not isinstance(out["socket_group"], str):
        raise ValueError(".socket_group: must be a group name")
    return out


def _dovecot_policy(v):
    if not isinstance(v, dict):
        raise ValueError("must be a mapping (listen, api_key_file, header, max_request)")
    bad = set(v) - set(DOVECOT_POLICY_DEFAULTS)
    if bad:
        raise ValueError(f".{sorted(bad)[0]}: unknown key (known: "
                         f"{', '.join(sorted(DOVECOT_POLICY_DEFAULTS))})")
    out = dict(DOVECOT_POLICY_DEFAULTS, **v)
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


def _metrics(v):
    if not isinstance(v, dict):
        raise ValueError("must be a mapping: {watch: 127.0.0.1:9469, policy: 127.0.0.1:9470}")
    bad = set(v) - set(METRICS_DEFAULTS)
    if bad:
        raise ValueError(f".{sorted(bad)[0]}: unknown key (known: watch, policy)")
    out = dict(METRICS_DEFAULTS, **v)
    for key, value in out.items():
        if value is not None:
            try:
                parse_hostport(value)
            except ValueError as exc:
                raise ValueError(f".{key}: {exc}") from None
    if out["watch"] is not None and out["watch"] == out["policy"]:
        raise ValueError(".policy: must differ from metrics.watch (two processes, two ports)")
    return out


METRICS_DEFAULTS = {"watch": None, "policy": None}

POPWRAP_DEFAULTS = {"socket": None, "socket_mode": "0660", "socket_group": None}
DOVECOT_POLICY_DEFAULTS = {"listen": None, "api_key_file": None, "header": "X-API-Key",
                           "max_request": 16384}

POLICY_DEFAULTS = {"listen": ["unix:/run/logkey/policy.sock"], "socket_mode": "0660",
                   "socket_group": None, "max_request": 65536, "idle_timeout": "300s",
                   "miss_wait": "1s"}


def _log(v):
    from .ownlog import check_settings         # logging.handlers only where it is used
    return check_settings(v)


def _store(v):
    if not isinstance(v, dict):
        raise ValueError("must be a mapping: {type: dir, path: DIR} or {type: redis, url: URL}")
    kind = v.get("type", "dir")
    allowed = {"dir": {"type", "path", "group"},
               "redis": {"type", "url", "prefix", "sentinel"}}.get(kind)
    if allowed is None:
        raise ValueError(f".type: {kind!r} is not a store type (dir or redis)")
    bad = set(v) - allowed
    if bad:
        raise ValueError(f".{sorted(bad)[0]}: unknown key for a {kind} store "
                         f"(known: {', '.join(sorted(allowed))})")
    out = dict(v, type=kind)
    if kind == "dir":
        if not isinstance(v.get("path"), str) or not v["path"]:
            raise ValueError(".path: a dir store needs a path")
    else:
        url = v.get("url")
        if not isinstance(url, str) or not url.split("://")[0] in ("redis", "rediss", "unix"):
            raise ValueError(".url: a redis store needs a redis://, rediss:// or unix:// URL")
        prefix = v.get("prefix", "logkey:gate:")
        if not isinstance(prefix, str):
            raise ValueError(".prefix: must be a string")
        out["prefix"] = prefix
    return out


def _services(v):
    from .parse.packs import check_services
    return check_services(v)


# name: (default, converter, meaning). The one table of keys; `logkey config --defaults` reads it.
KEYS: dict[str, tuple[Any, Any, str]] = {
    "window": (600, _duration, "how long a gate stays open after a login, seconds or 10m/1h"),
    "join_window": (600, _duration, "longest time between a connect line and the login it "
                                    "lends its IP to (pid joins), seconds or 10m"),
    "logout_hold": (10, _duration, "how long a logout read before its session's login waits "
                                   "for it (dovecot 2.4 logs them out of order), seconds; 0: "
                                   "not at all"),
    "timezone": (None, _timezone, "zone of log stamps that carry none (IANA name); "
                                  "default: the machine's local zone"),
    "packs": (None, _str_list, "pack names to load; default: every shipped and local pack"),
    "patterns_dir": ("/etc/logkey/patterns.d", _path,
                     "directory of local packs; a local pack overrides a shipped one by name"),
    "line_max": (65536, _positive_int, "bytes; a longer log line is counted and skipped"),
    "rotate_wait": (5, _duration, "seconds a rotated-away log is still read after it last "
                                  "grew (its writer may write to it until it reopens)"),
    "logs": ([], _logs, "log files to follow (paths or globs), each with optional packs: "
                        "[NAME...], own_file: PACK and sender_verified: true (the log daemon "
                        "lets only the real daemon's lines into this file; SECURITY.md); or "
                        "journal: {match, program, packs, directory, files} for the systemd "
                        "journal"),
    "store": ({"type": "dir", "path": "/var/lib/logkey/gates"}, _store,
              "the gate store: {type: dir, path: DIR, group: NAME} or "
              "{type: redis, url: URL, prefix: logkey:gate:}"),
    "state_dir": ("/var/lib/logkey/state", _path, "where read offsets are kept"),
    "max_session": (3600, _duration, "a session still open keeps its gate open up to login + "
                                     "this, seconds or 1h"),
    "never_gate": (["127.0.0.1/32", "::1/128"], _networks,
                   "networks that never get a gate (webmail or proxies logging in from here)"),
    "never_gate_users": ([], _str_list, "user names that never open a gate"),
    "only_gate": (None, _networks, "when set, only these networks get gates"),
    "never_gate_mynetworks": (False, _bool, "also never gate Postfix's mynetworks "
                                            "(postconf -h mynetworks): those relay already"),
    "max_ips_per_user": (5, _non_negative_int, "a user with this many open gates gets no new "
                                               "one (0: no limit)"),
    "policy": (dict(POLICY_DEFAULTS), _policy,
               "logkey policy (Postfix policy service): listen: [unix:PATH, inet:127.0.0.1:PORT], "
               "socket_mode, socket_group, max_request (bytes), idle_timeout (seconds)"),
    "popwrap": (dict(POPWRAP_DEFAULTS), _popwrap,
                "logkey popwrap -> watcher: socket (unix datagram socket the watcher listens on; "
                "null: off), socket_mode, socket_group (who may claim logins)"),
    "dovecot_policy": (dict(DOVECOT_POLICY_DEFAULTS), _dovecot_policy,
                       "Dovecot's auth policy server, in the watcher (docs/dovecot-direct.md): "
                       "listen: 127.0.0.1:PORT (null: off), api_key_file (the key of "
                       "auth_policy_server_api_header), header, max_request (bytes)"),
    "exports": ([], _exports, "maps kept for the SMTP side: [{format: lmdb|sendmail|exim|"
                              "opensmtpd|text|tcprules, path: FILE, command: CMD, base: RULES}]"),
    "metrics": (dict(METRICS_DEFAULTS), _metrics,
                "Prometheus metrics over HTTP, off by default: watch: IP:PORT for logkey watch, "
                "policy: IP:PORT for logkey policy (e.g. 127.0.0.1:9469, [::1]:9470)"),
    "log": ({"to": "stderr"}, _log, "logkey's own log (watch, policy): {to: stderr|syslog, "
                                   "facility: mail, address: /dev/log, tag: logkey}"),
    "trusted_proxies": (["127.0.0.0/8", "::1/128"], _networks,
                        "proxies whose word on a client's address is believed: Zimbra's oip= "
                        "counts only when ip= (the proxy) is in these networks (default: "
                        "loopback, a proxy on the same host)"),
    "services": ({}, _services, "a site's own service names per pack: {cyrus: {imapmail: imap, "
                            "pop36: pop3}, nginx-mail: {\"10110\": pop3}}; sieve, lmtp, http, "
                            "nntp, smtp are never POP3/IMAP"),
    "ipv6_prefix": (None, _ipv6_prefix, "gate the client's IPv6 network of this length (e.g. "
                                        "64) instead of the exact address"),
}


@dataclass
class Config:
    path: str | None
    values: dict[str, Any]

    def __getattr__(self, name):
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def defaults() -> Config:
    return Config(None, {k: conv(d) if d is not None else None
                         for k, (d, conv, _) in KEYS.items()})


def locate(explicit: str | None) -> tuple[str | None, bool]:
    """(path, required): --config wins, then $LOGKEY_CONFIG, then the default path."""
    if explicit:
        return explicit, True
    env = os.environ.get("LOGKEY_CONFIG")
    if env:
        return env, True
    return DEFAULT_PATH, False


def load(explicit: str | None = None, optional: bool = False) -> Config:
    """Load the configuration. With `optional`, a missing default file means defaults."""
    path, required = locate(explicit)
    if not required and optional and not Path(path).exists():
        return defaults()
    try:
        with open(path, "rb") as f:
            data = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(f"{path}: {where}not valid YAML: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a YAML mapping of keys")
    values = {}
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(f"{path}: {key}: unknown key (known: {', '.join(KEYS)})")
        try:
            values[key] = KEYS[key][1](value)
        except ValueError as exc:
            msg = str(exc)          # "[0].path: ..." and ".type: ..." name a key inside this one
            raise ConfigError(f"{path}: {key}{'' if msg[:1] in '[.' else ': '}{msg}") from None
    _resolve_relative(values, os.path.dirname(os.path.abspath(path)))
    config = defaults()
    config.values.update(values)
    config.path = path
    return config


def _resolve_relative(values: dict, base: str) -> None:
    """Relative paths in a configuration file are relative to the file's directory."""
    def resolve(p):
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
    for entry in values.get("logs", []):
        if entry["journal"] is not None:
            source = entry["journal"]
            if source["directory"]:
                source["directory"] = resolve(source["directory"])
            if source["files"]:
                source["files"] = [resolve(f) for f in source["files"]]
            continue
        entry["path"] = resolve(entry["path"])
    store = values.get("store")
    if store and store.get("type") == "dir":
        store["path"] = resolve(store["path"])
    for entry in values.get("exports", []):
        entry["path"] = resolve(entry["path"])
        if entry["base"]:
            entry["base"] = resolve(entry["base"])
    policy = values.get("policy")
    if policy:
        policy["listen"] = [f"unix:{resolve(x[5:])}" if x.startswith("unix:") else x
                            for x in policy["listen"]]
    dovecot_policy = values.get("dovecot_policy")
    if dovecot_policy and dovecot_policy["api_key_file"]:
        dovecot_policy["api_key_file"] = resolve(dovecot_policy["api_key_file"])
    popwrap = values.get("popwrap")
    if popwrap and popwrap["socket"]:
        popwrap["socket"] = resolve(popwrap["socket"])
    log = values.get("log")
    if log:
        log["address"] = resolve(log["address"])
    for key in ("state_dir", "patterns_dir"):
        if key in values:
            values[key] = resolve(values[key])
