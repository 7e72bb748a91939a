"""The sections for what logkey writes: `store:` (the gate store, a directory or Redis),
`exports:` (the map files kept for the SMTP side) and `log:` (logkey's own log, checked by
ownlog.py).

Takes: the YAML value of one section. Gives: it checked, with its defaults (a dir store's
type, a redis store's prefix; an export's command and base, None when absent); or ValueError
naming the entry or key inside the section ("[0].format: ...", ".url: ...").
"""
from __future__ import annotations

EXPORT_FORMATS = ("lmdb", "sendmail", "exim", "opensmtpd", "text", "tcprules")


def exports(v):
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


def own_log(v):
    from ..ownlog import check_settings         # logging.handlers only where it is used
    return check_settings(v)


def store(v):
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
