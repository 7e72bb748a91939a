"""Which of SECURITY.md's warnings apply to one configuration, checked on the files themselves.

Reads: the modes of the followed logs and their directories, the configuration file, the dir
store's directory; the configured socket modes and metrics addresses. Writes nothing.
Each check returns sentences for an administrator, one per finding; none of them stops
anything (`logkey status` lists them; the daemons still refuse what they always refused).
"""
from __future__ import annotations

import ipaddress
import os
import stat

from ..hostport import parse_hostport


def writable_by_others(path: str) -> list[str]:
    """Why someone other than the file's owner and group can change what `path` says: the
    file, or its directory (without the sticky bit: the file can be replaced), is
    world-writable. [] when neither is, or the file cannot be seen."""
    found = []
    try:
        st = os.stat(path)
    except OSError:
        return found
    if st.st_mode & stat.S_IWOTH:
        found.append(f"{path} is writable by every local user")
    parent = os.path.dirname(os.path.abspath(path))
    try:
        dst = os.stat(parent)
    except OSError:
        return found
    if dst.st_mode & stat.S_IWOTH and not dst.st_mode & stat.S_ISVTX:
        found.append(f"{parent} (the directory of {path}) is writable by every local user")
    return found


def followed_file_warnings(paths) -> list[str]:
    """Followed logs whose text anyone may write: a written login line opens a gate."""
    return [f"{why}: anyone on this host can write login lines that open gates "
            "(SECURITY.md: follow only files no untrusted user can write)"
            for path in paths for why in writable_by_others(path)]


def config_warnings(cfg) -> list[str]:
    """The configuration file, the dir store, the popwrap socket, the Dovecot policy key, the
    metrics addresses."""
    found = []
    if cfg.path:
        found += [f"{why}: anyone on this host can change logkey's configuration"
                  for why in writable_by_others(cfg.path)]
    if cfg.store.get("type") == "dir":
        try:
            if os.stat(cfg.store["path"]).st_mode & stat.S_IWOTH:
                found.append(f"gate store {cfg.store['path']} is writable by every local user: "
                             "anyone on this host can open a gate")
        except OSError:
            pass
    popwrap = cfg.popwrap
    if popwrap["socket"] and int(popwrap["socket_mode"], 8) & 0o002:
        found.append(f"popwrap.socket_mode {popwrap['socket_mode']} lets every local user "
                     "claim a login, for any address (SECURITY.md: give it to the POP "
                     "server's user only)")
    key_file = cfg.dovecot_policy["listen"] and cfg.dovecot_policy["api_key_file"]
    try:
        if key_file and os.stat(key_file).st_mode & 0o004:
            found.append(f"dovecot_policy.api_key_file {key_file} is readable by every local "
                         "user: anyone on this host can report a login that opens a gate")
    except OSError:
        pass
    for what, listen in sorted(cfg.metrics.items()):
        if listen:
            host, _ = parse_hostport(listen)
            if not ipaddress.ip_address(host).is_loopback:
                found.append(f"metrics.{what} {listen} is not a loopback address: whoever "
                             "reaches it reads the metrics (log file names, counts)")
    return found
