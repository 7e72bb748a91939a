"""Replacing a file so that a reader sees the old content or the new, never a part.

Writes: a temp file beside the target (O_EXCL, O_NOFOLLOW: never through a planted symlink),
all of `data` (a short write on a full disk must not become the file), mode and group set on
the descriptor (not cut by the umask), optional mtime, fsync, rename over the target, fsync
of the directory. Imports only `os`: relayclient uses it on its start-up path.
"""
import os


def fsync_path(path: str, directory: bool = False) -> None:
    """fsync a file (never through a symlink) or a directory, by name. Raises OSError."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECTORY if directory
                                          else os.O_NOFOLLOW | os.O_NONBLOCK)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, *, mode: int = 0o640, uid: int = -1, gid: int = -1,
                 mtime_ns: int | None = None, temp_suffix: str = ".tmp",
                 sync_dir: bool = True, sync: bool = True) -> None:
    """Raises OSError (the temp file removed); `uid`/`gid` -1 leave them as created.
    `sync=False`: neither the file nor the directory is fsynced; the caller makes a batch of
    such writes durable at once (DirStore.put_batch)."""
    head, name = os.path.split(path)
    tmp = os.path.join(head, "." + name + "." + os.urandom(6).hex() + temp_suffix)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        try:
            os.fchmod(fd, mode)
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync and sync_dir:
        fsync_path(head or ".", directory=True)
