"""Linux inotify from the standard library (ctypes on libc's inotify_init1 and inotify_add_watch).

The part of PyPI's inotify_simple that follow.py uses, with the same interface and behaviour:
`INotify(nonblocking=...)` with fileno(), add_watch(path, mask) -> wd, read(timeout=ms) ->
[Event(wd, mask, cookie, name)], close(); `flags` holds the kernel's event bits. Debian ships
no inotify_simple, and these few lines keep the packaged follower on Debian's python3 alone.
read() waits as inotify_simple's does (poll(2) on the descriptor, then read(2) of what
FIONREAD says is there), so a wake-up is as prompt. Names are decoded as os.fsdecode does
(undecodable bytes become surrogates, as in every other path logkey handles).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import struct
import termios
from array import array
from typing import NamedTuple

_EVENT = struct.Struct("iIII")     # struct inotify_event: wd, mask, cookie, len; then the name
_libc = None


class flags:
    """The event and watch bits of <linux/inotify.h>."""
    ACCESS = 0x00000001
    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    CLOSE_WRITE = 0x00000008
    CLOSE_NOWRITE = 0x00000010
    OPEN = 0x00000020
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    UNMOUNT = 0x00002000
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    DONT_FOLLOW = 0x02000000
    EXCL_UNLINK = 0x04000000
    MASK_ADD = 0x20000000
    ISDIR = 0x40000000
    ONESHOT = 0x80000000


class Event(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: str


def _lib():
    """libc's two functions, typed; OSError if this libc has no inotify."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(None, use_errno=True)     # the running python's own libc
            lib.inotify_init1.argtypes = [ctypes.c_int]
            lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        except AttributeError as e:
            raise OSError(errno.ENOSYS, f"no inotify in libc ({e})") from None
        _libc = lib
    return _libc


def _call(fn, *args) -> int:
    while True:
        rc = fn(*args)
        if rc != -1:
            return rc
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


class INotify:
    def __init__(self, nonblocking: bool = False):
        lib = _lib()
        self._fd = _call(lib.inotify_init1, os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0))
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        # poll(timeout ms): non-empty when events are queued (poll(0): without waiting). A
        # bound method, not a wrapper: the policy service asks once a request (dirstore.py).
        self.poll = self._poller.poll

    def fileno(self) -> int:
        return self._fd

    def add_watch(self, path, mask: int) -> int:
        return _call(_lib().inotify_add_watch, self._fd, os.fsencode(path), mask)

    def read(self, timeout: int | None = None) -> list[Event]:
        """The events queued now; if none and timeout is not 0, wait up to `timeout` ms (None:
        for ever) for some."""
        data = self._available()
        if not data and timeout != 0 and self._poller.poll(timeout):
            data = self._available()
        events, pos = [], 0
        while pos + _EVENT.size <= len(data):
            wd, mask, cookie, size = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size + size
            name = data[pos - size:pos].split(b"\0", 1)[0]
            events.append(Event(wd, mask, cookie, os.fsdecode(name)))
        return events

    def _available(self) -> bytes:
        n = array("i", [0])
        fcntl.ioctl(self._fd, termios.FIONREAD, n, True)
        return os.read(self._fd, n[0]) if n[0] else b""

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
