"""The policy service's listeners: the `listen` addresses parsed, each opened as an asyncio
server, named back for the log, and the unix sockets removed on exit.

Takes: `policy.listen` entries (unix:PATH, inet:HOST:PORT, inet:[V6]:PORT), socket_mode and
socket_group for unix sockets, and the protocol factory each accepted connection gets.
Gives: asyncio servers, and the (path, inode) of each unix socket bound, so that only our own
socket is removed (another process may have bound the path since).
Writes: the unix sockets (via unixsock.bind_unix: safe against a planted file or symlink).
Trust: the addresses come from the configuration or the command line (root's); nothing here
reads from a client.
"""
from __future__ import annotations

import os
import socket

from ...errors import LogkeyError
from ...unixsock import SocketSetupError, bind_unix

# The listen backlog, which is also how many connections asyncio accepts in one go per
# listener, before any of them is set up (and before the connection cap can close an idle
# one): the cap (limits.py) leaves that many descriptors free per listener, so a flood of
# connects never runs the process out of descriptors.
BACKLOG = 128


class PolicyError(LogkeyError):
    """A listener cannot be set up; str() is one line."""


def parse_listen(spec: str) -> tuple:
    """("unix", path) or ("inet", host, port) from unix:PATH, inet:HOST:PORT, inet:[V6]:PORT."""
    if spec.startswith("unix:") and len(spec) > 5:
        return ("unix", spec[5:])
    if spec.startswith("inet:"):
        rest = spec[5:]
        if rest.startswith("["):
            host, sep, port = rest[1:].partition("]:")
        else:
            host, sep, port = rest.rpartition(":")
            sep = sep if ":" not in host else ""        # bare IPv6 needs brackets
        if sep and host and port.isdigit() and int(port) <= 65535:
            return ("inet", host, int(port))
    raise PolicyError(f"listen {spec!r}: expected unix:PATH, inet:HOST:PORT or inet:[IPV6]:PORT")


async def open_listener(loop, spec: str, where: tuple, factory, socket_mode: int,
                        gid: int | None):
    """(asyncio server, (path, inode) of its unix socket or None); PolicyError if it cannot
    be opened."""
    if where[0] == "unix":
        path = where[1]
        try:
            sock = bind_unix(path, socket.SOCK_STREAM, socket_mode, gid)
        except SocketSetupError as exc:
            raise PolicyError(f"listen {spec}: {exc}") from None
        server = await loop.create_unix_server(factory, sock=sock, backlog=BACKLOG)
        return server, (path, os.stat(path).st_ino)
    try:
        server = await loop.create_server(factory, where[1], where[2], backlog=BACKLOG,
                                          reuse_address=True)
    except OSError as exc:
        raise PolicyError(f"listen {spec}: {exc.strerror or exc}") from None
    return server, None


def addresses(servers) -> list[str]:
    """The addresses the servers listen on, in the `listen` syntax (for the log)."""
    out = []
    for server in servers:
        for sock in server.sockets:
            name = sock.getsockname()
            out.append(f"unix:{name}" if isinstance(name, str) else
                       f"inet:[{name[0]}]:{name[1]}" if ":" in name[0] else
                       f"inet:{name[0]}:{name[1]}")
    return out


def remove_sockets(sockets) -> None:
    """Remove each (path, inode) unix socket, only if the path is still that socket."""
    for path, inode in sockets:
        try:
            if os.lstat(path).st_ino == inode:
                os.unlink(path)
        except OSError:
            pass
