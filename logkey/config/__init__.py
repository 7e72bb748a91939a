"""The configuration file: where it is, what each key means, validation.

Reads: one YAML file (--config FILE, else $LOGKEY_CONFIG, else /etc/logkey/config.yaml).
Every key is defined once in KEYS with its default and meaning; unknown keys are errors (a
typo must not silently disable a safety setting). Errors are one line: "FILE: key: problem".

Takes: the path (or none). Gives: a Config, whose attributes are the keys' checked values.
This module holds the table of keys and the loading; the checks of each value are beside it:
values.py (durations, networks, numbers... every section uses them), logs.py (`logs:`,
`services:`), listeners.py (`policy:`, `popwrap:`, `dovecot_policy:`, `metrics:`) and
outputs.py (`store:`, `exports:`, `log:`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import LogkeyError
from . import listeners, logs, outputs, values
from .listeners import (DOVECOT_POLICY_DEFAULTS, METRICS_DEFAULTS, POLICY_DEFAULTS,  # noqa: F401
                        POPWRAP_DEFAULTS)
from .outputs import EXPORT_FORMATS  # noqa: F401
from .values import parse_duration  # noqa: F401

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml when present: 10x faster

DEFAULT_PATH = "/etc/logkey/config.yaml"


class ConfigError(LogkeyError):
    """str() is one line naming the file, the key and the problem."""


# name: (default, converter, meaning). The one table of keys; `logkey config --defaults` reads it.
KEYS: dict[str, tuple[Any, Any, str]] = {
    "window": (600, values.duration, "how long a gate stays open after a login, seconds or 10m/1h"),
    "join_window": (600, values.duration, "longest time between a connect line and the login it "
                                          "lends its IP to (pid joins), seconds or 10m"),
    "logout_hold": (10, values.duration, "how long a logout read before its session's login waits "
                                         "for it (dovecot 2.4 logs them out of order), seconds; 0: "
                                         "not at all"),
    "timezone": (None, values.timezone, "zone of log stamps that carry none (IANA name); "
                                        "default: the machine's local zone"),
    "packs": (None, values.str_list, "pack names to load; default: every shipped and local pack"),
    "patterns_dir": ("/etc/logkey/patterns.d", values.path,
                     "directory of local packs; a local pack overrides a shipped one by name"),
    "line_max": (65536, values.positive_int, "bytes; a longer log line is counted and skipped"),
    "rotate_wait": (5, values.duration, "seconds a rotated-away log is still read after it last "
                                        "grew (its writer may write to it until it reopens)"),
    "logs": ([], logs.logs, "log files to follow (paths or globs), each with optional packs: "
                            "[NAME...], own_file: PACK and sender_verified: true (the log daemon "
                            "lets only the real daemon's lines into this file; SECURITY.md); or "
                            "journal: {match, program, packs, directory, files} for the systemd "
                            "journal"),
    "store": ({"type": "dir", "path": "/var/lib/logkey/gates"}, outputs.store,
              "the gate store: {type: dir, path: DIR, group: NAME} or "
              "{type: redis, url: URL, prefix: logkey:gate:}"),
    "state_dir": ("/var/lib/logkey/state", values.path, "where read offsets are kept"),
    "max_session": (3600, values.duration, "a session still open keeps its gate open up to login + "
                                           "this, seconds or 1h"),
    "never_gate": (["127.0.0.1/32", "::1/128"], values.networks,
                   "networks that never get a gate (webmail or proxies logging in from here)"),
    "never_gate_users": ([], values.str_list, "user names that never open a gate"),
    "only_gate": (None, values.networks, "when set, only these networks get gates"),
    "never_gate_mynetworks": (False, values.boolean,
                              "also never gate Postfix's mynetworks "
                              "(postconf -h mynetworks): those relay already"),
    "max_ips_per_user": (5, values.non_negative_int,
                         "a user with this many open gates gets no new one (0: no limit)"),
    "policy": (dict(POLICY_DEFAULTS), listeners.policy,
               "logkey policy (Postfix policy service): listen: [unix:PATH, inet:127.0.0.1:PORT], "
               "socket_mode, socket_group, max_request (bytes), idle_timeout (seconds)"),
    "popwrap": (dict(POPWRAP_DEFAULTS), listeners.popwrap,
                "logkey popwrap -> watcher: socket (unix datagram socket the watcher listens on; "
                "null: off), socket_mode, socket_group (who may claim logins)"),
    "dovecot_policy": (dict(DOVECOT_POLICY_DEFAULTS), listeners.dovecot_policy,
                       "Dovecot's auth policy server, in the watcher (docs/dovecot-direct.md): "
                       "listen: 127.0.0.1:PORT (null: off), api_key_file (the key of "
                       "auth_policy_server_api_header), header, max_request (bytes)"),
    "exports": ([], outputs.exports,
                "maps kept for the SMTP side: [{format: lmdb|sendmail|exim|"
                "opensmtpd|text|tcprules, path: FILE, command: CMD, base: RULES}]"),
    "metrics": (dict(METRICS_DEFAULTS), listeners.metrics,
                "Prometheus metrics over HTTP, off by default: watch: IP:PORT for logkey watch, "
                "policy: IP:PORT for logkey policy (e.g. 127.0.0.1:9469, [::1]:9470)"),
    "log": ({"to": "stderr"}, outputs.own_log,
            "logkey's own log (watch, policy): {to: stderr|syslog, "
            "facility: mail, address: /dev/log, tag: logkey}"),
    "trusted_proxies": (["127.0.0.0/8", "::1/128"], values.networks,
                        "proxies whose word on a client's address is believed: Zimbra's oip= "
                        "counts only when ip= (the proxy) is in these networks (default: "
                        "loopback, a proxy on the same host)"),
    "services": ({}, logs.services,
                 "a site's own service names per pack: {cyrus: {imapmail: imap, "
                 "pop36: pop3}, nginx-mail: {\"10110\": pop3}}; sieve, lmtp, http, "
                 "nntp, smtp are never POP3/IMAP"),
    "ipv6_prefix": (None, values.ipv6_prefix, "gate the client's IPv6 network of this length "
                                              "(e.g. 64) instead of the exact address"),
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
    checked = {}
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(f"{path}: {key}: unknown key (known: {', '.join(KEYS)})")
        try:
            checked[key] = KEYS[key][1](value)
        except ValueError as exc:
            msg = str(exc)          # "[0].path: ..." and ".type: ..." name a key inside this one
            raise ConfigError(f"{path}: {key}{'' if msg[:1] in '[.' else ': '}{msg}") from None
    _resolve_relative(checked, os.path.dirname(os.path.abspath(path)))
    config = defaults()
    config.values.update(checked)
    config.path = path
    return config


def _resolve_relative(checked: dict, base: str) -> None:
    """Relative paths in a configuration file are relative to the file's directory."""
    def resolve(p):
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
    for entry in checked.get("logs", []):
        if entry["journal"] is not None:
            source = entry["journal"]
            if source["directory"]:
                source["directory"] = resolve(source["directory"])
            if source["files"]:
                source["files"] = [resolve(f) for f in source["files"]]
            continue
        entry["path"] = resolve(entry["path"])
    store = checked.get("store")
    if store and store.get("type") == "dir":
        store["path"] = resolve(store["path"])
    for entry in checked.get("exports", []):
        entry["path"] = resolve(entry["path"])
        if entry["base"]:
            entry["base"] = resolve(entry["base"])
    policy = checked.get("policy")
    if policy:
        policy["listen"] = [f"unix:{resolve(x[5:])}" if x.startswith("unix:") else x
                            for x in policy["listen"]]
    dovecot_policy = checked.get("dovecot_policy")
    if dovecot_policy and dovecot_policy["api_key_file"]:
        dovecot_policy["api_key_file"] = resolve(dovecot_policy["api_key_file"])
    popwrap = checked.get("popwrap")
    if popwrap and popwrap["socket"]:
        popwrap["socket"] = resolve(popwrap["socket"])
    log = checked.get("log")
    if log:
        log["address"] = resolve(log["address"])
    for key in ("state_dir", "patterns_dir"):
        if key in checked:
            checked[key] = resolve(checked[key])
