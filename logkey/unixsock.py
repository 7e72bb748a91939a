"""Binding a local (unix) socket safely, for `logkey policy` and the watcher's popwrap socket.

Writes: the socket file. Trust: a path that exists and is not a socket is refused, and so is a
socket another process still answers on; only a stale socket is replaced. The socket is bound
under umask 0177 (nobody else can connect in between) and then opened up to exactly the
configured mode and group.
"""
from __future__ import annotations

import grp
import os
import socket
import stat


class SocketSetupError(Exception):
    """str() is the reason, for the caller to prefix with what it was doing."""


def group_id(name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise SocketSetupError(f"no group named {name!r}") from None


def bind_unix(path: str, kind: int = socket.SOCK_STREAM, mode: int = 0o660,
              gid: int | None = None) -> socket.socket:
    """A socket of `kind` bound at `path` with `mode` and group `gid` (stream sockets are
    listening); its (st_dev, st_ino) identify the file for a later remove_if_ours()."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise SocketSetupError(exc.strerror or str(exc)) from None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketSetupError("exists and is not a socket")
        with socket.socket(socket.AF_UNIX, kind) as probe:
            probe.settimeout(1.0)
            if probe.connect_ex(path) == 0:
                raise SocketSetupError("another process is listening there")
        os.unlink(path)                         # a stale socket of an earlier run
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, 0o755, exist_ok=True)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError as exc:
        sock.close()
        raise SocketSetupError(exc.strerror or str(exc)) from None
    return sock


def identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def remove_if_ours(path: str, ident: tuple[int, int] | None) -> None:
    """Remove the socket file if it is still the one we bound (not a successor's)."""
    if ident is not None and identity(path) == ident:
        try:
            os.unlink(path)
        except OSError:
            pass
