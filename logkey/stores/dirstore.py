"""The `dir` gate store: one file per open gate, its mtime the expiry (the 1999 design).

One module because it is one store backend: the layout, the atomic write, the read that checks
a file's record and the purge share the same rules for names and files (key_to_name, the temp
names, lstat and O_NOFOLLOW); split, they could drift apart.

Reads/Writes: files directly in `path` only, never below it and never through a symlink.
Trust: the file names come only from `check_key`-validated keys; everything found in the
directory is treated as untrusted (checked with lstat/O_NOFOLLOW, size-limited, parsed
defensively).

Layout
    <path>/192.0.2.7              an IPv4 gate
    <path>/2001:db8::1            an IPv6 gate (compressed form, as `ipaddress` prints it)
    <path>/2001:db8:1:2::_64      an IPv6 prefix gate "2001:db8:1:2::/64": the "/" becomes "_"
                                  (no address or network ever contains "_")
    <path>/.<name>.<random>.tmp   a gate being written (dot-prefixed, same directory)

The file's **mtime is the expiry**: a gate is open iff a regular file exists under its name,
its mtime is later than now, and it holds the record of that gate (JSON naming its key,
`base.record_data`). A checker lstats the name and, when it is a regular file with a future
mtime, reads it once (O_NOFOLLOW); `is_open` remembers which file versions (device, inode,
ctime, size) held a good record, so a long-running checker pays one lstat per lookup. The
policy service goes further (`remember_answers`, `recent_is_open`): it keeps its answers while
an inotify watch on the directory reports no event (any write, rename, removal or touch empties
them, checked with one poll(2) before each answer), never an open answer past the gate's mtime
and none older than MEMO_AGE (1 s: the bound for a writer whose changes inotify cannot report,
as on another NFS client, where the attribute cache already allows seconds); the miss wait
asks is_open itself. The content is `GateRecord.to_json()`, also for people and for `logkey
gates`.

Writes are atomic: the record goes to a dot-prefixed temp file in the same directory (mode
0640), its mtime is set to the expiry, it is fsynced and renamed over the gate's name, then the
directory is fsynced. A reader sees the old gate or the new one, never a partial file.

Decisions
- The mtime decides the expiry, not the content. `get()` returns the record with `expires`
  taken from the mtime (so `touch -d` extends a gate, as the checker would see it).
- A file whose content is not a record for its name (garbage, empty, truncated, over 64 KiB,
  another address's record) is closed for every reader (`is_open`, `get`, `scan`, so `logkey
  gates`, `logkey check`, the policy service, the exports, and relayclient's own check), is
  reported with one warning line naming it (once per version of the file) and counted in
  `bad_records`; `purge()` removes it like an expired gate.
- A symlink, directory, FIFO or other non-regular file under a gate name is never followed,
  never open, and removed by `purge()` (the link itself; a non-empty directory is left alone).
- `put()` writes what it is given, even an already expired gate (it is simply closed; `purge()`
  removes it). `delete()` returns True only if the gate it removed was open.
- Names that are not ours (not a canonical key, not our temp pattern) are ignored, not removed.
- The directory is created with mode 0750 (group `group` if given); an existing directory that
  its group or others may write to is refused (whoever can write there opens gates: the
  checkers' group reads, never writes). With `group`, files are chgrp'ed to it too.

Errors: every OSError becomes StoreError with one line; an invalid key is ValueError.
"""
from __future__ import annotations

import errno
import grp
import os
import re
import secrets
import stat
import time
from typing import Iterator

from ..atomic import fsync_path, write_atomic
from .base import GateRecord, Store, StoreError, check_key, keys_for, now_or, record_data

DIR_MODE = 0o750
FILE_MODE = 0o640
MAX_RECORD = 64 * 1024          # a record is ~200 bytes; anything bigger is not ours
TEMP_MAX_AGE = 60.0             # seconds before purge() removes a stray temp file
TEMP_SUFFIX = ".tmp"
TEMP_NAME = re.compile(r"\.(.+)\.[0-9a-f]{12}(?:\.purge)?\.tmp")   # what put()/purge() create
GOOD_MAX = 65536                # file versions remembered as holding a good record (is_open)
PATHS_MAX = 65536               # keys whose file name is remembered (is_open)
MEMO_MAX = 65536                # answers remembered (recent_is_open)
MEMO_AGE = 1.0                  # seconds a remembered answer is trusted at most (recent_is_open)


_GATE_NAME = re.compile(r"[0-9a-f.:]{2,45}(?:_[0-9]{1,3})?")


def key_to_name(key: str) -> str:
    """The file name of a gate key (ValueError unless `check_key` accepts it)."""
    return check_key(key).replace("/", "_")


def name_to_key(name: str) -> str | None:
    """The key a file name stands for, or None if the name is not a gate name."""
    if name.startswith(".") or len(name) > 64:
        return None
    key = name.replace("_", "/")
    try:
        check_key(key)
    except ValueError:
        return None
    return key if key_to_name(key) == name else None


def _one_line(err: BaseException) -> str:
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return " ".join(text.split())


_SYNCFS = []            # [libc's syncfs, or None where there is none], looked up at first use


def _syncfs(path: str) -> bool:
    """syncfs(2) of the file system holding `path`; False where the C library has none."""
    if not _SYNCFS:
        try:
            import ctypes                   # (only a writer's batch gets here)
            _SYNCFS.append(getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None))
        except (ImportError, OSError):
            _SYNCFS.append(None)
    syncfs = _SYNCFS[0]
    if syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            import ctypes
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
    return True


class DirStore(Store):
    """`create`: make the directory when it is missing (the watcher, `logkey open`); a
    reader's one-off question (`logkey check`, `gates`, an export) passes False: a missing
    directory is then a store without gates, and is not made by whoever asked (root's
    `logkey check` would leave a directory the watcher's user cannot write)."""

    def __init__(self, path: str | os.PathLike, group: str | int | None = None,
                 create: bool = True):
        self.path = os.fspath(path)
        self.gid = self._resolve_group(group)
        self._good: dict[str, tuple] = {}          # name -> identity of a version with a record
        self._paths: dict[str, tuple] = {}         # key -> (name, path), checked (is_open)
        self._changes = None                        # inotify on the directory (remember_answers)
        self._memo: dict = {}                       # key -> (asked at, valid until, open)
        self.temps_removed = 0                      # stale temp files the last purge() removed
        self.missing = False                        # create=False and no directory (no gates)
        if create:
            self._make_dir()
        else:
            self._check_existing()

    # -- setup ------------------------------------------------------------------------------

    @staticmethod
    def _resolve_group(group: str | int | None) -> int | None:
        if group is None:
            return None
        if isinstance(group, int) or str(group).isdigit():
            return int(group)
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            raise StoreError(f"gate store: unknown group {group!r}") from None

    def _make_dir(self) -> None:
        try:
            try:
                os.mkdir(self.path, DIR_MODE)
                os.chmod(self.path, DIR_MODE)          # mkdir's mode is cut by the umask
                if self.gid is not None:
                    os.chown(self.path, -1, self.gid)
            except FileExistsError:
                pass
            except FileNotFoundError:                  # parents missing: they get the umask
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                return self._make_dir()
            st = self._checked_stat()
            if self.gid is not None and st.st_gid != self.gid:
                os.chown(self.path, -1, self.gid)
        except OSError as e:
            raise StoreError(f"gate store {self.path}: {_one_line(e)}") from None

    def _check_existing(self) -> None:
        try:
            self._checked_stat()
        except FileNotFoundError:
            self.missing = True
        except OSError as e:
            raise StoreError(f"gate store {self.path}: {_one_line(e)}") from None

    def _checked_stat(self) -> os.stat_result:
        st = os.stat(self.path)
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"gate store {self.path}: not a directory")
        if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):    # whoever writes opens gates
            raise StoreError(f"gate store {self.path}: directory is writable by "
                             f"{'others' if st.st_mode & stat.S_IWOTH else 'its group'} "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}); only logkey's user "
                             "may write there")
        return st

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _error(self, what: str, e: OSError) -> StoreError:
        return StoreError(f"gate store {self.path}: cannot {what}: {_one_line(e)}")

    # -- writing ----------------------------------------------------------------------------

    def put(self, gate: GateRecord, sync: bool = True) -> None:
        """`sync=False`: for put_batch, which makes the batch durable at once."""
        name = key_to_name(gate.key)
        uid, gid = -1, -1 if self.gid is None else self.gid
        if os.geteuid() == 0:           # root's `logkey open`: the file is the store owner's
            try:                        # (the watcher, as user logkey, must read it)
                st = os.stat(self.path)
                uid, gid = st.st_uid, st.st_gid if self.gid is None else self.gid
            except OSError:
                pass
        try:                                           # the mtime IS the expiry
            write_atomic(self._file(name), gate.to_json().encode() + b"\n", mode=FILE_MODE,
                         uid=uid, gid=gid,
                         mtime_ns=int(round(gate.expires * 1e9)), temp_suffix=TEMP_SUFFIX,
                         sync=sync)
        except OSError as e:
            raise self._error(f"write gate {name}", e) from None

    def put_batch(self, gates: list[GateRecord]) -> None:
        """Each gate written and renamed into place as put() does (readers see it at once),
        then all made durable together: one syncfs(2) of the store's file system where the C
        library has it, else an fsync of each file and one of the directory. put() pays two
        fsyncs a gate, ~7 ms each on a virtual disk: a watcher catching up on a busy log
        wrote ~70 gates a second. A crash before the sync returns loses nothing: the read
        offsets are saved only after it (daemon/applying.py), so the lines are read again."""
        if len(gates) < 2:
            for gate in gates:
                self.put(gate)
            return
        for gate in gates:
            self.put(gate, sync=False)
        try:
            if not _syncfs(self.path):
                for gate in gates:
                    try:
                        fsync_path(self._file(key_to_name(gate.key)))
                    except FileNotFoundError:
                        pass                    # removed since (a purge): nothing to keep
                fsync_path(self.path, directory=True)
        except OSError as e:
            raise self._error("sync gates", e) from None

    def delete(self, key: str) -> bool:
        name = key_to_name(key)
        path = self._file(name)
        was_open = self._read(key, name, time.time()) is not None
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(path)
            else:
                os.unlink(path)                        # a symlink itself, never its target
        except FileNotFoundError:
            return False
        except OSError as e:
            raise self._error(f"remove gate {name}", e) from None
        return was_open and stat.S_ISREG(st.st_mode)

    # -- reading ----------------------------------------------------------------------------

    def is_open(self, ip: str, ipv6_prefix: int | None = None, now: float | None = None) -> bool:
        """What a checker does: one lstat per key, a regular file whose mtime is in the future,
        then its record read once per version of the file. `ip` must be canonical (every
        caller passes canonical_ip output); the file name is the key itself ("/" -> "_" for a
        prefix gate), nothing else."""
        return self._open_until(ip, ipv6_prefix, time.time() if now is None else now) > 0.0

    def _open_until(self, ip: str, ipv6_prefix: int | None, now: float) -> float:
        """is_open's lookup: the expiry (mtime) of the first open gate for `ip`, 0.0 if none."""
        for key in (keys_for(ip, ipv6_prefix) if ipv6_prefix and ":" in ip else (ip,)):
            name, path = self._paths.get(key) or self._path_of(key)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                raise self._error(f"read gate {key}", e) from None
            if not stat.S_ISREG(st.st_mode):
                self._not_regular(name, st)
            elif st.st_mtime > now and (
                    self._good.get(name) == _identity(st) or
                    self._read(key, name, now) is not None):
                return st.st_mtime
        return 0.0

    # -- remembered answers (the policy service): no lstat while the directory is unchanged --

    def remember_answers(self) -> bool:
        """Let `recent_is_open` answer from a memo of its last answers, emptied whenever the
        kernel reports a change in the directory (inotify: a gate written, renamed, removed,
        touched); an open answer is never kept past the gate's mtime. False (and recent_is_open
        is is_open) when inotify is not available."""
        if self._changes is not None:
            return True
        from ..inotify import INotify, flags
        try:
            changes = INotify(nonblocking=True)
        except OSError:
            return False
        try:                    # every event that may change whether a gate is open
            changes.add_watch(self.path, flags.CREATE | flags.DELETE | flags.MOVED_FROM
                              | flags.MOVED_TO | flags.MODIFY | flags.ATTRIB | flags.CLOSE_WRITE
                              | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR
                              | flags.DONT_FOLLOW)
        except OSError:
            changes.close()
            return False
        self._changes, self._memo = changes, {}
        self._changed = changes.poll                      # poll(0): events queued?
        self._watch_gone = flags.DELETE_SELF | flags.MOVE_SELF | flags.UNMOUNT | flags.IGNORED
        return True

    def recent_is_open(self, ip: str, ipv6_prefix: int | None = None) -> bool:
        """is_open(ip, ipv6_prefix) now, from the memo when nothing in the directory changed
        since that answer (remember_answers) and it is under MEMO_AGE seconds old (the bound
        for a writer whose changes inotify never reports, e.g. on another NFS client)."""
        changes = self._changes
        if changes is None:
            return self.is_open(ip, ipv6_prefix)
        now = time.time()
        # Changes first, then the memo: a change the kernel finished before this call is seen.
        if self._changed(0):
            self._drain_changes()
            if self._changes is None:
                return self.is_open(ip, ipv6_prefix, now)
        key = ip if not ipv6_prefix else (ip, ipv6_prefix)
        memo = self._memo.get(key)
        if memo is not None and memo[0] <= now < memo[1]:
            return memo[2]
        until = self._open_until(ip, ipv6_prefix, now)
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()
        self._memo[key] = (now, min(until, now + MEMO_AGE) if until else now + MEMO_AGE,
                           until > 0.0)
        return until > 0.0

    def _drain_changes(self) -> None:
        """Read the queued change events and forget every remembered answer; when the watch
        is gone (the directory removed, moved or unmounted) stop remembering altogether."""
        self._memo.clear()
        try:
            events = self._changes.read(timeout=0)
        except OSError:
            events = None
        if events is None or any(e.mask & self._watch_gone for e in events):
            self._changes.close()
            self._changes, self._memo = None, {}

    def close(self) -> None:
        if self._changes is not None:
            self._changes.close()
            self._changes, self._memo = None, {}

    def _path_of(self, key: str) -> tuple[str, str]:
        """(file name, path) of a key is_open is asked about, checked once and remembered (a
        policy lookup per SMTP transaction need not redo the check and the join)."""
        name = key.replace("/", "_")
        if not _GATE_NAME.fullmatch(name):              # cheap; canonical_ip made the key
            raise ValueError(f"not a gate key: {key!r}")
        if len(self._paths) >= PATHS_MAX:
            self._paths.clear()
        self._paths[key] = name, path = name, self._file(name)
        return name, path

    def get(self, key: str, now: float | None = None) -> GateRecord | None:
        name = key_to_name(key)
        return self._read(key, name, now_or(now))

    def _read(self, key: str, name: str, now: float, quiet: bool = False) -> GateRecord | None:
        """The gate in the file `name`, if it is open at `now` and holds `key`'s record (else
        None; bad content is reported unless `quiet`)."""
        try:
            # O_NOFOLLOW: a symlink fails with ELOOP; O_NONBLOCK: a planted FIFO cannot hang us.
            fd = os.open(self._file(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            if e.errno in (errno.ELOOP, errno.ENXIO):  # a symlink; a socket or reader-less FIFO
                try:
                    self._not_regular(name, os.lstat(self._file(name)), quiet)
                except OSError:
                    pass
                return None
            raise self._error(f"read gate {name}", e) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._not_regular(name, st, quiet)
                return None
            if st.st_mtime <= now:
                return None
            raw = os.read(fd, MAX_RECORD + 1)
        except OSError as e:
            raise self._error(f"read gate {name}", e) from None
        finally:
            os.close(fd)
        data = record_data(key, raw) if len(raw) <= MAX_RECORD else None
        if data is None:
            if quiet:
                return None
            why = (f"larger than {MAX_RECORD} bytes" if len(raw) > MAX_RECORD else
                   "empty" if not raw else "not a gate record for this address")
            self.report_bad(f"gate store {self.path}: {name}", _identity(st), why)
            return None
        if not quiet:
            if len(self._good) >= GOOD_MAX:
                self._good.clear()
            self._good[name] = _identity(st)
        return _record(key, data, st)

    def _not_regular(self, name: str, st: os.stat_result, quiet: bool = False) -> None:
        if not quiet and not stat.S_ISREG(st.st_mode):
            kind = ("a symlink" if stat.S_ISLNK(st.st_mode) else "a directory"
                    if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device")
            self.report_bad(f"gate store {self.path}: {name}", _identity(st),
                            f"{kind}, not a regular file (never followed)")

    def scan(self, now: float | None = None) -> Iterator[GateRecord]:
        now = now_or(now)
        for name, key in self._gate_names():
            gate = self._read(key, name, now)
            if gate is not None:
                yield gate

    def _gate_names(self) -> list[tuple[str, str]]:
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError as e:
            if self.missing:
                return []
            raise self._error("list directory", e) from None
        except OSError as e:
            raise self._error("list directory", e) from None
        return [(n, k) for n in names if (k := name_to_key(n)) is not None]

    # -- cleaning ---------------------------------------------------------------------------

    def purge(self, now: float | None = None) -> int:
        """Remove expired gates and anything non-regular under a gate name; also our own temp
        files (.KEY.12HEX.tmp, left by a writer killed with -9) older than a minute (by ctime,
        on the real clock: a temp file's mtime is its expiry; a younger one may be a write
        under way), counted in `temps_removed`. Returns how many gate names were removed."""
        now = now_or(now)
        removed = 0
        self.temps_removed = 0
        try:
            names = os.listdir(self.path)
        except OSError as e:
            raise self._error("list directory", e) from None
        for name in names:
            try:
                if (m := TEMP_NAME.fullmatch(name)) and name_to_key(m.group(1)):
                    st = os.lstat(self._file(name))
                    if st.st_ctime < time.time() - TEMP_MAX_AGE and not stat.S_ISDIR(st.st_mode):
                        os.unlink(self._file(name))     # the name itself, never a link's target
                        self.temps_removed += 1
                elif name_to_key(name) is not None:
                    removed += self._purge_one(name, now)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise self._error(f"purge {name}", e) from None
        return removed

    def _purge_one(self, name: str, now: float) -> int:
        path = self._file(name)
        st = os.lstat(path)
        self._not_regular(name, st)
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(path)
                return 1
            except OSError:
                return 0                               # not empty: not ours to delete
        if not stat.S_ISREG(st.st_mode):
            os.unlink(path)
            return 1
        key = name_to_key(name)
        if st.st_mtime > now and self._read(key, name, now) is not None:
            return 0
        # Expired, or no record in it. A put() may rename a fresh gate into place between our
        # look and our removal, so move it aside atomically first and put it back if it
        # turned out to be a fresh gate.
        aside_name = f".{name}.{secrets.token_hex(6)}.purge{TEMP_SUFFIX}"
        aside = self._file(aside_name)
        os.rename(path, aside)
        try:
            if self._read(key, aside_name, now, quiet=True) is not None:
                try:
                    os.link(aside, path)               # fails if an even newer gate exists
                except FileExistsError:
                    pass
                return 0
            return 1
        finally:
            os.unlink(aside)


def _identity(st: os.stat_result) -> tuple:
    """A version of a file: a rewrite (rename over it, or in place) changes ctime or inode."""
    return (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size, st.st_mtime_ns)


def _record(key: str, data: dict, st: os.stat_result) -> GateRecord:
    """The record of a gate file (`data` names `key`); `expires` is always the mtime. Fields
    of the wrong type are None (`opened` then the file's ctime)."""
    expires = st.st_mtime
    fields = {k: data.get(k) for k in GateRecord.__dataclass_fields__}
    texts = ("user", "pack", "protocol", "source")
    if all(fields[k] is None or isinstance(fields[k], str) for k in texts) and \
            isinstance(fields["opened"], (int, float)) and not isinstance(fields["opened"], bool):
        fields.update(key=key, expires=expires, opened=float(fields["opened"]))
        return GateRecord(**fields)
    return GateRecord(key=key, user=None, pack=None, protocol=None,
                      opened=min(st.st_ctime, expires), expires=expires, source=None)
