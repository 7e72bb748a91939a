"""The configuration file: where it is, what each key means, validation.

Reads: one YAML file (--config FILE, else $LOGKEY_CONFIG, else /etc/logkey/config.yaml).
Every key is defined once in KEYS with its default and meaning; unknown keys are errors (a
typo must not silently disable a safety setting). Errors are one line: "FILE: key: problem".
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml when present: 10x faster

DEFAULT_PATH = "/etc/logkey/config.yaml"


class ConfigError(Exception):
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


def _any(v):
    return v


# name: (default, converter, meaning). The one table of keys; `logkey config --defaults` reads it.
KEYS: dict[str, tuple[Any, Any, str]] = {
    "window": (600, _duration, "how long a gate stays open after a login, seconds or 10m/1h"),
    "join_window": (600, _duration, "longest time between a connect line and the login it "
                                    "lends its IP to (pid joins), seconds or 10m"),
    "timezone": (None, _timezone, "zone of log stamps that carry none (IANA name); "
                                  "default: the machine's local zone"),
    "packs": (None, _str_list, "pack names to load; default: every shipped and local pack"),
    "patterns_dir": ("/etc/logkey/patterns.d", _path,
                     "directory of local packs; a local pack overrides a shipped one by name"),
    "line_max": (65536, _positive_int, "bytes; a longer log line is counted and skipped"),
    "logs": ([], _any, "log files to follow (logkey watch)"),
    "store": ({"type": "dir", "path": "/var/lib/logkey/gates"}, _any, "the gate store"),
    "state_dir": ("/var/lib/logkey/state", _path, "where read offsets are kept"),
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
            raise ConfigError(f"{path}: {key}: {exc}") from None
    config = defaults()
    config.values.update(values)
    config.path = path
    return config
