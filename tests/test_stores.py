"""Gate stores: one contract over every backend (dir, redis), then each backend's own promises.
Redis tests run against a real redis-server started by the `redis_server` fixture."""
import errno
import grp
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import uuid

import pytest

from logkey.stores import GateRecord, StoreError, open_store
from logkey.stores import dirstore
from logkey.stores.base import check_key
from logkey.stores.dirstore import DirStore

BAD_KEYS = [
    "../x", "1.2.3.4/../..", "fe80::1%eth0", "mail.example.com", "localhost", "", ".", "..",
    "192.0.2.1/32", "192.0.2.0/24", "2001:db8::1/64", "2001:DB8::1", "2001:0db8::1",
    "192.0.2.1\n", " 192.0.2.1", "192.0.2.1/", "/etc/passwd", ".192.0.2.1", "192.0.2.1.tmp",
    "2001:db8:1:2::_64", "0x7f.1", "3232235777",
]


def gate(key, expires, user="alice", opened=None, source="mail.log:1"):
    return GateRecord(key=key, user=user, pack="dovecot", protocol="imap",
                      opened=expires - 600 if opened is None else opened, expires=expires,
                      source=source)


@pytest.fixture(params=["dir", "redis"])
def store(request, tmp_path):
    if request.param == "dir":
        s = DirStore(tmp_path / "gates")
    else:
        server = request.getfixturevalue("redis_server")
        s = open_store({"type": "redis", "url": server.url, "prefix": f"t{uuid.uuid4().hex}:"})
    yield s
    s.close()


# -- the contract ---------------------------------------------------------------------------------

def test_put_get_roundtrip(store):
    t = time.time()
    g = gate("192.0.2.7", t + 60)
    store.put(g)
    got = store.get("192.0.2.7")
    assert got is not None
    assert (got.key, got.user, got.pack, got.protocol, got.source) == \
        ("192.0.2.7", "alice", "dovecot", "imap", "mail.log:1")
    assert got.opened == pytest.approx(g.opened, abs=1e-6)
    assert got.expires == pytest.approx(g.expires, abs=1e-3)
    assert store.is_open("192.0.2.7")
    assert store.get("192.0.2.8") is None
    assert not store.is_open("192.0.2.8")


def test_expiry_by_now(store):
    t = time.time()
    store.put(gate("192.0.2.7", t + 60))
    assert store.get("192.0.2.7", now=t + 59) is not None
    assert store.get("192.0.2.7", now=t + 60.5) is None
    assert not store.is_open("192.0.2.7", now=t + 61)
    assert [g.key for g in store.scan(now=t + 61)] == []


def test_expiry_on_the_real_clock(store):
    store.put(gate("192.0.2.7", time.time() + 0.3))
    assert store.is_open("192.0.2.7")
    time.sleep(0.5)
    assert store.get("192.0.2.7") is None
    assert not store.is_open("192.0.2.7")


def test_replace_extends_and_shortens(store):
    t = time.time()
    store.put(gate("192.0.2.7", t + 60, user="alice"))
    store.put(gate("192.0.2.7", t + 120, user="bob"))
    got = store.get("192.0.2.7")
    assert got.user == "bob" and got.expires == pytest.approx(t + 120, abs=1e-3)
    store.put(gate("192.0.2.7", t + 30, user="carol"))
    got = store.get("192.0.2.7")
    assert got.user == "carol" and got.expires == pytest.approx(t + 30, abs=1e-3)
    assert store.get("192.0.2.7", now=t + 31) is None
    assert len(list(store.scan())) == 1


def test_put_expired_is_closed(store):
    t = time.time()
    store.put(gate("192.0.2.7", t + 60))
    store.put(gate("192.0.2.7", t - 1))
    assert store.get("192.0.2.7") is None
    assert list(store.scan()) == []


def test_delete(store):
    store.put(gate("192.0.2.7", time.time() + 60))
    assert store.delete("192.0.2.7") is True
    assert store.get("192.0.2.7") is None
    assert store.delete("192.0.2.7") is False
    assert store.delete("192.0.2.8") is False


def test_scan(store):
    t = time.time()
    keys = ["192.0.2.7", "198.51.100.1", "2001:db8::1", "2001:db8:1:2::/64", "::1"]
    for i, k in enumerate(keys):
        store.put(gate(k, t + 60 + i, user=f"u{i}"))
    store.put(gate("203.0.113.9", t - 5))
    found = {g.key: g for g in store.scan()}
    assert set(found) == set(keys)
    assert found["2001:db8:1:2::/64"].user == "u3"
    assert {g.key for g in store.scan(now=t + 62.5)} == {"2001:db8:1:2::/64", "::1"}


def test_purge_keeps_open_gates(store):
    t = time.time()
    store.put(gate("192.0.2.7", t + 60))
    store.put(gate("192.0.2.8", t - 5))
    assert isinstance(store.purge(), int)
    assert store.is_open("192.0.2.7")
    assert not store.is_open("192.0.2.8")
    assert [g.key for g in store.scan()] == ["192.0.2.7"]


def test_ipv6_exact_and_prefix_gates(store):
    t = time.time()
    store.put(gate("2001:db8:1:2::/64", t + 60))
    store.put(gate("2001:db8:9::5", t + 60))
    assert store.is_open("2001:db8:1:2::abcd", ipv6_prefix=64)
    assert store.is_open("2001:db8:1:2:ffff:ffff:ffff:ffff", ipv6_prefix=64)
    assert not store.is_open("2001:db8:1:2::abcd")               # no prefix: exact only
    assert not store.is_open("2001:db8:1:3::1", ipv6_prefix=64)
    assert store.is_open("2001:db8:9::5")
    assert not store.is_open("2001:db8:9::6")
    assert store.get("2001:db8:1:2::/64").key == "2001:db8:1:2::/64"
    assert store.delete("2001:db8:1:2::/64")
    assert not store.is_open("2001:db8:1:2::abcd", ipv6_prefix=64)


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_bad_keys_refused(store, bad):
    with pytest.raises(ValueError):
        store.put(gate(bad, time.time() + 60))
    with pytest.raises(ValueError):
        store.get(bad)
    with pytest.raises(ValueError):
        store.delete(bad)
    assert list(store.scan()) == []


def test_bad_keys_are_bad():
    for bad in BAD_KEYS:
        for _ in range(2):              # refused again: only accepted keys are remembered
            with pytest.raises(ValueError):
                check_key(bad)
    for good in ("192.0.2.1", "2001:db8::1", "2001:db8:1:2::/64"):
        assert check_key(good) == good == check_key(good)


def test_a_record_is_every_field_as_json():
    """to_json writes the record's fields as dataclasses.asdict would give them (it does
    not call asdict, which deep-copies each value), and nothing else."""
    import dataclasses
    record = gate("2001:db8::7", 1_800_000_000.25, user="b\u00e9\"ob", source=None)
    assert record.to_json() == json.dumps(dataclasses.asdict(record), sort_keys=True)
    assert GateRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize("syncfs", [True, False])
def test_put_batch_stores_every_gate_durably_and_at_once(store, monkeypatch, syncfs):
    """A catch-up's gates together: each readable as put() leaves it, and for a dir store
    made durable by one syncfs (or, without it, an fsync of each file and the directory)
    instead of two fsyncs a gate."""
    now = time.time()
    batch = [gate(f"192.0.2.{i}", now + 60 + i) for i in range(1, 40)]
    synced, syncfs_calls = [], []
    if isinstance(store, DirStore):
        if syncfs:
            dirstore._syncfs(store.path)                 # looks libc's syncfs up
            libc_syncfs = dirstore._SYNCFS[0]
            assert libc_syncfs is not None, "glibc has syncfs"
            monkeypatch.setattr(dirstore, "_SYNCFS",
                                [lambda fd: syncfs_calls.append(fd) or libc_syncfs(fd)])
        else:
            monkeypatch.setattr(dirstore, "_SYNCFS", [None])
        real_fsync = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    store.put_batch(batch)
    assert sorted(g.key for g in store.scan(now)) == sorted(g.key for g in batch)
    assert all(store.get(g.key).expires == pytest.approx(g.expires) for g in batch)
    if isinstance(store, DirStore):
        assert len(synced) == (0 if syncfs else len(batch) + 1)
        assert len(syncfs_calls) == (1 if syncfs else 0)
        assert not [n for n in os.listdir(store.path) if n.startswith(".")]    # no temp left
    store.put_batch([])
    store.put_batch(batch[:1])                       # one gate: put() as before


def test_put_batch_failure_is_a_store_error_naming_the_gate(tmp_path):
    d = DirStore(tmp_path / "g")
    (tmp_path / "g" / "192.0.2.2").mkdir()           # a directory where a gate file goes
    with pytest.raises(StoreError, match=r"192\.0\.2\.2") as err:
        d.put_batch([gate("192.0.2.1", time.time() + 60), gate("192.0.2.2", time.time() + 60)])
    assert "\n" not in str(err.value)


def test_open_store_builds_both(tmp_path, redis_server):
    d = open_store({"type": "dir", "path": str(tmp_path / "g")})
    r = open_store({"type": "redis", "url": redis_server.url})
    for s in (d, r):
        s.put(gate("192.0.2.1", time.time() + 60))
        assert s.is_open("192.0.2.1")
        s.close()
    assert r.prefix == "logkey:gate:"
    with pytest.raises(StoreError):
        open_store({"type": "sqlite"})


# -- dir ------------------------------------------------------------------------------------------

@pytest.fixture
def gates(tmp_path):
    return tmp_path / "gates"


def test_dir_file_names_and_content(gates):
    s = DirStore(gates)
    t = time.time()
    for k in ("192.0.2.7", "2001:db8::1", "2001:db8:1:2::/64"):
        s.put(gate(k, t + 60))
    assert sorted(os.listdir(gates)) == ["192.0.2.7", "2001:db8:1:2::_64", "2001:db8::1"]
    data = json.loads((gates / "2001:db8:1:2::_64").read_text())
    assert data == json.loads(gate("2001:db8:1:2::/64", t + 60).to_json())


def test_dir_mtime_is_the_expiry(gates):
    s = DirStore(gates)
    expires = time.time() + 600.123456
    s.put(gate("192.0.2.7", expires))
    st = os.lstat(gates / "192.0.2.7")
    assert st.st_mtime_ns == int(round(expires * 1e9))
    # A checker that only stats: open iff it exists and its mtime is in the future.
    os.utime(gates / "192.0.2.7", (time.time() - 1, time.time() - 1))
    assert not s.is_open("192.0.2.7")
    os.utime(gates / "192.0.2.7", (expires + 60, expires + 60))
    assert s.get("192.0.2.7").expires == pytest.approx(expires + 60, abs=1e-3)


def test_dir_modes(tmp_path):
    old = os.umask(0o077)
    try:
        s = DirStore(tmp_path / "a" / "b" / "gates")
        s.put(gate("192.0.2.7", time.time() + 60))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b" / "gates").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b" / "gates" / "192.0.2.7").st_mode) == 0o640


def test_dir_existing_directory_mode_kept(gates):
    gates.mkdir(mode=0o700)
    os.chmod(gates, 0o700)
    DirStore(gates).put(gate("192.0.2.7", time.time() + 60))
    assert stat.S_IMODE(os.stat(gates).st_mode) == 0o700


def test_dir_group(gates):
    if os.geteuid() == 0:
        other = [g for g in grp.getgrall() if g.gr_gid != os.getgid()]
        group = other[0]
    else:
        group = grp.getgrgid(os.getgid())
    s = DirStore(gates, group=group.gr_name)
    s.put(gate("192.0.2.7", time.time() + 60))
    assert os.stat(gates).st_gid == group.gr_gid
    assert os.stat(gates / "192.0.2.7").st_gid == group.gr_gid
    with pytest.raises(StoreError, match="unknown group"):
        DirStore(gates, group="no-such-group-logkey")


def test_dir_refuses_world_writable_or_not_a_directory(tmp_path):
    ww = tmp_path / "ww"
    ww.mkdir()
    os.chmod(ww, 0o777)
    with pytest.raises(StoreError, match="writable by others"):
        DirStore(ww)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError) as e:
        DirStore(f)
    assert "\n" not in str(e.value)


def test_dir_atomic_rename_no_partial_file_visible(gates):
    s = DirStore(gates)
    t = time.time()
    stop = threading.Event()
    seen, bad = [0], []

    def reader():
        while not stop.is_set():
            for name in os.listdir(gates):
                if name.startswith("."):
                    continue
                try:
                    data = (gates / name).read_bytes()
                except FileNotFoundError:
                    continue
                try:
                    rec = json.loads(data)
                    assert rec["key"] == name and len(rec["user"]) == 5000
                    seen[0] += 1
                except Exception as e:               # noqa: BLE001 - record what was seen
                    bad.append((name, data[:80], e))

    th = threading.Thread(target=reader)
    th.start()
    try:
        for i in range(300):
            s.put(gate("192.0.2.7", t + 60 + i, user=str(i % 10) * 5000))
    finally:
        stop.set()
        th.join()
    assert not bad, bad[:3]
    assert seen[0] > 0
    assert os.listdir(gates) == ["192.0.2.7"]                  # no temp file left behind


def test_dir_failed_write_raises_one_line_and_keeps_old_gate(gates, monkeypatch):
    s = DirStore(gates)
    t = time.time()
    s.put(gate("192.0.2.7", t + 60, user="old"))

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dirstore.os, "fsync", full)
    with pytest.raises(StoreError) as e:
        s.put(gate("192.0.2.7", t + 120, user="new"))
    monkeypatch.undo()
    msg = str(e.value)
    assert "\n" not in msg and "No space left" in msg and "192.0.2.7" in msg
    assert os.listdir(gates) == ["192.0.2.7"]
    assert s.get("192.0.2.7").user == "old"


def test_dir_unreadable_directory_is_store_error(gates):
    s = DirStore(gates)
    shutil.rmtree(gates)
    with pytest.raises(StoreError):
        list(s.scan())
    with pytest.raises(StoreError):
        s.purge()
    with pytest.raises(StoreError):
        s.put(gate("192.0.2.7", time.time() + 60))


def test_dir_symlink_not_followed(gates, tmp_path):
    s = DirStore(gates)
    future = time.time() + 3600
    target = tmp_path / "target"
    target.write_text(gate("192.0.2.9", future).to_json())
    os.utime(target, (future, future))
    os.symlink(target, gates / "192.0.2.9")
    os.symlink("/etc/passwd", gates / "192.0.2.10")
    assert s.get("192.0.2.9") is None
    assert not s.is_open("192.0.2.9")
    assert not s.is_open("192.0.2.10")
    assert list(s.scan()) == []
    assert s.purge() == 2
    assert os.listdir(gates) == []
    assert target.exists() and os.path.exists("/etc/passwd")
    # put() replaces a planted symlink, it never writes through it
    os.symlink(target, gates / "192.0.2.9")
    before = target.read_text()
    s.put(gate("192.0.2.9", future, user="mallory"))
    assert target.read_text() == before
    assert stat.S_ISREG(os.lstat(gates / "192.0.2.9").st_mode)
    assert s.get("192.0.2.9").user == "mallory"


def test_dir_non_regular_files_closed_and_purged(gates):
    s = DirStore(gates)
    os.mkfifo(gates / "192.0.2.1")
    (gates / "192.0.2.2").mkdir()
    (gates / "192.0.2.3").mkdir()
    (gates / "192.0.2.3" / "keep").write_text("x")
    for k in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        assert s.get(k) is None                               # a FIFO must not hang us
    assert list(s.scan()) == []
    assert s.purge() == 2
    assert sorted(os.listdir(gates)) == ["192.0.2.3"]          # a non-empty dir is not ours


GARBAGE = {                      # content planted under a gate name -> why it is no gate
    "192.0.2.1": b"\x00garbage{",
    "192.0.2.2": b"",
    "192.0.2.3": gate("192.0.2.99", time.time() + 300).to_json().encode(),   # another's record
    "192.0.2.4": b"[1, 2]",
    "192.0.2.5": b"x" * 100_000,
    "192.0.2.6": b'{"key": "192.0.2.6", "user": "trunc',                   # cut short
    "192.0.2.7": b"\xff\xfe{\"key\": \"192.0.2.7\"}",                       # not UTF-8
    "192.0.2.8": b"[" * 100_000,                                            # nesting bomb
    "192.0.2.9": b'{"key": ["192.0.2.9"]}',
}


def test_dir_garbage_content_is_closed_reported_once_and_purged(gates, caplog):
    s = DirStore(gates)
    future = time.time() + 300
    for name, content in GARBAGE.items():
        (gates / name).write_bytes(content)
        os.utime(gates / name, (future, future))
    s.put(gate("192.0.2.10", future))                        # a real gate among them
    with caplog.at_level("WARNING", logger="logkey.store"):
        for _ in range(3):                                   # however often it is looked at
            for name in GARBAGE:
                assert s.get(name) is None
                assert not s.is_open(name)
            assert [g.key for g in s.scan()] == ["192.0.2.10"]
    assert s.is_open("192.0.2.10")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == len(GARBAGE) == s.bad_records      # one line per file, counted
    for name in GARBAGE:
        line = next(w for w in warned if f"gates: {name}: " in w)
        assert line.endswith("treated as closed") and "\n" not in line
    (gates / "192.0.2.1").write_bytes(b"still not a record")   # a new version: reported again
    os.utime(gates / "192.0.2.1", (future, future))
    assert not s.is_open("192.0.2.1") and s.bad_records == len(GARBAGE) + 1
    assert s.purge() == len(GARBAGE)                         # removed like expired gates
    assert os.listdir(gates) == ["192.0.2.10"]


def test_dir_record_with_odd_fields_is_still_its_gate(gates):
    s = DirStore(gates)
    future = time.time() + 300
    (gates / "192.0.2.1").write_text('{"key": "192.0.2.1", "user": 5, "opened": "x"}')
    os.utime(gates / "192.0.2.1", (future, future))
    got = s.get("192.0.2.1")
    assert got.user is None and got.source is None and got.opened <= future
    assert got.expires == pytest.approx(future, abs=1e-3)
    assert s.is_open("192.0.2.1") and s.bad_records == 0


def test_dir_is_open_rereads_a_rewritten_file(gates):
    s = DirStore(gates)
    future = time.time() + 300
    s.put(gate("192.0.2.1", future))
    assert s.is_open("192.0.2.1")                            # now remembered as good
    with open(gates / "192.0.2.1", "r+b") as f:              # rewritten in place
        f.write(b"#")
    os.utime(gates / "192.0.2.1", (future, future))
    assert not s.is_open("192.0.2.1") and s.bad_records == 1


def test_dir_remembered_answers_see_every_change_at_once(gates, tmp_path):
    """recent_is_open (the policy service's lookup) answers from its memo only while the
    kernel reports no change in the directory: every way a gate opens or closes is seen by
    the next lookup, and an open answer never outlives the gate's mtime."""
    s = DirStore(gates)
    assert s.remember_answers() and s.remember_answers()        # once is enough
    now = time.time()
    s.put(gate("192.0.2.1", now + 300))
    assert s.recent_is_open("192.0.2.1") and s.recent_is_open("192.0.2.1")
    assert not s.recent_is_open("192.0.2.2") and "192.0.2.2" in s._memo   # a miss remembered
    s.put(gate("192.0.2.2", now + 300))                              # ... then opened
    assert s.recent_is_open("192.0.2.2")
    assert s.recent_is_open("192.0.2.1") and "192.0.2.1" in s._memo
    s.delete("192.0.2.1")                                            # `logkey close`
    assert not s.recent_is_open("192.0.2.1")
    os.utime(gates / "192.0.2.2", (now - 1, now - 1))                # touch -d: closed
    assert not s.recent_is_open("192.0.2.2")
    os.utime(gates / "192.0.2.2", (now + 300, now + 300))            # and extended again
    assert s.recent_is_open("192.0.2.2")
    with open(gates / "192.0.2.2", "r+b") as f:                     # garbage written in place
        f.write(b"#")
    os.utime(gates / "192.0.2.2", (now + 300, now + 300))
    assert not s.recent_is_open("192.0.2.2") and s.bad_records == 1
    elsewhere = DirStore(tmp_path / "other")                         # renamed in from outside
    elsewhere.put(gate("192.0.2.3", now + 300))
    assert not s.recent_is_open("192.0.2.3")
    os.rename(tmp_path / "other" / "192.0.2.3", gates / "192.0.2.3")
    assert s.recent_is_open("192.0.2.3")
    os.rename(gates / "192.0.2.3", tmp_path / "other" / "192.0.2.3")   # and out again
    assert not s.recent_is_open("192.0.2.3")
    s.put(gate("192.0.2.4", time.time() + 0.3))        # expires well inside MEMO_AGE
    assert dirstore.MEMO_AGE > 0.3
    assert s.recent_is_open("192.0.2.4")
    time.sleep(0.4)                                    # no change in the directory meanwhile
    assert not s.recent_is_open("192.0.2.4")
    s.close()


def test_dir_remembered_answers_stop_when_the_directory_goes(gates):
    """The directory removed (or moved away, or its file system unmounted): the watch is gone,
    so the lookups go back to one lstat each, on the path, whatever is there now."""
    s = DirStore(gates)
    assert s.remember_answers()
    s.put(gate("192.0.2.1", time.time() + 300))
    assert s.recent_is_open("192.0.2.1")
    shutil.rmtree(gates)
    assert not s.recent_is_open("192.0.2.1") and s._changes is None
    gates.mkdir(mode=0o750)
    s.put(gate("192.0.2.1", time.time() + 300))
    assert s.recent_is_open("192.0.2.1")
    gates.rename(gates.with_name("moved"))
    assert not s.recent_is_open("192.0.2.1")
    s.close()


def plant(gates, name, kind, outside):
    """A non-regular entry under a gate name; `outside` is a directory beyond the store."""
    path = gates / name
    if kind == "symlink-to-gate":            # a real, open gate file of another store
        target = outside / "gate"
        target.write_text(json.dumps({"key": name}))
        future = time.time() + 3600
        os.utime(target, (future, future))
        os.symlink(target, path)
    elif kind == "symlink-to-dir":
        (outside / "sub").mkdir(exist_ok=True)
        (outside / "sub" / "keep").write_text("x")
        os.symlink(outside / "sub", path)
    elif kind == "dangling":
        os.symlink(outside / "nothing", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "directory":
        path.mkdir()
    future = time.time() + 3600
    os.utime(path, (future, future), follow_symlinks=False)


PLANTED = ["symlink-to-gate", "symlink-to-dir", "dangling", "fifo", "socket", "directory"]


@pytest.mark.parametrize("kind", PLANTED)
def test_dir_planted_non_regular_entry_never_followed(tmp_path, kind, caplog):
    gates, outside = tmp_path / "g", tmp_path / "outside"
    outside.mkdir()
    s = DirStore(gates)
    name = "192.0.2.20"
    plant(gates, name, kind, outside)
    before = sorted(str(p) for p in outside.rglob("*"))
    with caplog.at_level("WARNING", logger="logkey.store"):
        assert not s.is_open(name)
        assert s.get(name) is None
        assert list(s.scan()) == []
        assert s.delete(name) is False                       # `logkey close`: it was not open
        assert os.listdir(gates) == []                       # ... and it is gone
        plant(gates, name, kind, outside)
        assert s.purge() == 1
    assert os.listdir(gates) == []                           # the entry itself, nothing else
    assert sorted(str(p) for p in outside.rglob("*")) == before
    assert s.bad_records >= 1
    assert all(f"{gates}: {name}: " in r.getMessage() for r in caplog.records)
    assert any("not a regular file" in r.getMessage() for r in caplog.records)


def test_dir_planted_entries_through_the_commands(tmp_path):
    """`logkey gates`, `check`, `close`, `purge` against a store full of planted entries."""
    gates, outside = tmp_path / "gates", tmp_path / "outside"
    outside.mkdir()
    s = DirStore(gates)
    names = {}
    for i, kind in enumerate(PLANTED):
        names[kind] = f"192.0.2.{30 + i}"
        plant(gates, names[kind], kind, outside)
    future = time.time() + 300
    for name, content in GARBAGE.items():
        (gates / name).write_bytes(content)
        os.utime(gates / name, (future, future))
    s.put(gate("192.0.2.50", future))
    before = sorted(str(p) for p in outside.rglob("*"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: {{type: dir, path: {gates}}}\n")
    from conftest import run_logkey
    out = run_logkey("gates", "--config", str(cfg), check=0)
    assert out.stdout.decode().splitlines()[0].startswith("192.0.2.50 ")
    last = out.stdout.decode().splitlines()[-1]
    assert last.startswith("1 open gate(s); " + str(len(PLANTED) + len(GARBAGE)) + " entries"), last
    err = out.stderr.decode().splitlines()
    assert len(err) == len(PLANTED) + len(GARBAGE), err
    assert all(line.endswith("treated as closed") for line in err)
    for name in list(names.values()) + list(GARBAGE):
        proc = run_logkey("check", "--config", str(cfg), name)
        assert proc.returncode == 1 and proc.stdout.decode() == f"{name}: closed\n"
        assert len(proc.stderr.decode().splitlines()) == 1 and name in proc.stderr.decode()
    assert run_logkey("check", "--config", str(cfg), "192.0.2.50").returncode == 0
    assert run_logkey("close", "--config", str(cfg), names["symlink-to-gate"],
                      check=0).stdout.decode() == "closed 0 gate(s)\n"
    run_logkey("purge", "--config", str(cfg), check=0)
    assert os.listdir(gates) == ["192.0.2.50"]
    assert sorted(str(p) for p in outside.rglob("*")) == before


def test_dir_purge(gates, monkeypatch):
    s = DirStore(gates)
    t = time.time()
    s.put(gate("192.0.2.1", t + 60))
    s.put(gate("192.0.2.2", t - 60))
    s.put(gate("2001:db8:1:2::/64", t - 1))
    (gates / "README").write_text("not ours")
    (gates / ".hidden").write_text("not ours")
    (gates / ".192.0.2.3.0123456789ab.tmp").write_text("{")   # a writer that died
    assert s.purge() == 2
    assert sorted(os.listdir(gates)) == [".192.0.2.3.0123456789ab.tmp", ".hidden",
                                         "192.0.2.1", "README"]   # the temp file is too young
    monkeypatch.setattr(dirstore, "TEMP_MAX_AGE", -1.0)
    assert s.purge() == 0
    assert sorted(os.listdir(gates)) == [".hidden", "192.0.2.1", "README"]
    assert s.purge(now=t + 61) == 1
    assert sorted(os.listdir(gates)) == [".hidden", "README"]


def test_dir_delete_reports_open_gates_only(gates):
    s = DirStore(gates)
    t = time.time()
    s.put(gate("192.0.2.1", t - 1))
    assert s.delete("192.0.2.1") is False
    assert os.listdir(gates) == []


def test_dir_ignores_foreign_names_in_scan(gates):
    s = DirStore(gates)
    future = time.time() + 60
    for name in ("2001:DB8::1", "localhost", "192.0.2.01", "2001:db8::1_64"):
        (gates / name).write_text("{}")
        os.utime(gates / name, (future, future))
    assert list(s.scan()) == []
    assert s.purge() == 0
    assert len(os.listdir(gates)) == 4


# -- redis ----------------------------------------------------------------------------------------

@pytest.fixture
def rstore(redis_server):
    s = open_store({"type": "redis", "url": redis_server.url})
    yield s
    s.close()


def test_without_the_redis_client_a_redis_store_is_one_clear_error(tmp_path):
    """redis is an extra (logkey[redis]): without it `config check`, `watch` and `check` each
    stop at a redis store with one line naming what to install; a dir store needs nothing."""
    import sys
    blocked = ("import sys; sys.modules['redis'] = None; sys.argv[0] = 'logkey'; "
               "from logkey import entry; sys.exit(entry.main())")
    cfg = tmp_path / "c.yaml"
    (tmp_path / "mail.log").write_text("")
    for redis_store, store in ((True, "{type: redis, url: 'redis://127.0.0.1:1/0'}"),
                               (False, f"{{type: dir, path: {tmp_path / 'g'}}}")):
        cfg.write_text(f"logs:\n  - path: {tmp_path / 'mail.log'}\nstore: {store}\n"
                       f"state_dir: {tmp_path / 'state'}\n")
        for args in (["config", "check", "--config", str(cfg)],
                     ["watch", "--once", "--config", str(cfg)],
                     ["check", "--config", str(cfg), "127.0.0.1"]):
            proc = subprocess.run([sys.executable, "-c", blocked, *args], capture_output=True,
                                  timeout=60)
            if redis_store:
                assert proc.returncode == 2, (args, proc.stderr)
                assert b"logkey[redis]" in proc.stderr and proc.stderr.count(b"\n") == 1
            else:
                assert proc.returncode in (0, 1) and b"logkey[redis]" not in proc.stderr, proc.stderr


def test_redis_ttl_and_value(rstore):
    t = time.time()
    g = gate("2001:db8:1:2::/64", t + 60)
    rstore.put(g)
    c = rstore.client
    pttl = c.pttl("logkey:gate:2001:db8:1:2::/64")
    assert 58_000 < pttl <= 60_000
    assert json.loads(c.get("logkey:gate:2001:db8:1:2::/64")) == json.loads(g.to_json())


def test_redis_expired_never_written(rstore):
    t = time.time()
    rstore.put(gate("192.0.2.7", t - 1))
    assert rstore.client.dbsize() == 0
    rstore.put(gate("192.0.2.7", t + 60))
    rstore.put(gate("192.0.2.7", t - 1))                    # closing an open gate deletes it
    assert rstore.client.exists("logkey:gate:192.0.2.7") == 0


def test_redis_put_batch_is_one_pipeline_with_each_gate_as_put_writes_it(rstore, monkeypatch):
    t = time.time()
    rstore.put(gate("192.0.2.9", t + 60))
    batch = [gate(f"192.0.2.{i}", t + 60 + i) for i in range(1, 9)] + [gate("192.0.2.9", t - 1)]
    c = rstore.client
    pipelines = []
    real_pipeline = c.pipeline
    monkeypatch.setattr(c, "pipeline", lambda **kw: pipelines.append(kw) or real_pipeline(**kw))
    for command in ("set", "delete"):               # not a round trip a gate
        monkeypatch.setattr(c, command, lambda *a, **kw: pytest.fail("a command outside the pipeline"))
    rstore.put_batch(batch)                         # 192.0.2.9 expired: deleted, as put does
    assert pipelines == [{"transaction": False}]
    monkeypatch.undo()
    assert sorted(k.decode() for k in c.keys("*")) == sorted(
        f"logkey:gate:192.0.2.{i}" for i in range(1, 9))
    for i in range(1, 9):
        assert 58_000 + i * 1000 < c.pttl(f"logkey:gate:192.0.2.{i}") <= 60_000 + i * 1000
        assert json.loads(c.get(f"logkey:gate:192.0.2.{i}")) == json.loads(batch[i - 1].to_json())


def test_redis_put_batch_to_a_server_that_is_gone_is_one_store_error(redis_server):
    s = open_store({"type": "redis", "url": redis_server.url})
    s.put(gate("192.0.2.1", time.time() + 60))
    redis_server.stop()
    try:
        with pytest.raises(StoreError, match="cannot write 2 gates") as err:
            s.put_batch([gate("192.0.2.2", time.time() + 60), gate("192.0.2.3", time.time() + 60)])
        assert "\n" not in str(err.value)
    finally:
        redis_server.start()
        s.close()


def test_redis_bad_keys_write_nothing(rstore):
    for bad in BAD_KEYS:
        with pytest.raises(ValueError):
            rstore.put(gate(bad, time.time() + 60))
    assert rstore.client.dbsize() == 0


def test_redis_scan_uses_scan_not_keys(rstore, monkeypatch):
    def no_keys(*a, **k):
        raise AssertionError("KEYS used")

    monkeypatch.setattr(rstore.client, "keys", no_keys)
    t = time.time()
    pipe = rstore.client.pipeline(transaction=False)
    for i in range(1200):
        ip = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        pipe.set(f"logkey:gate:{ip}", gate(ip, t + 60).to_json(), px=60_000)
    pipe.set("logkey:gate:not-an-ip", "{}", px=60_000)
    pipe.set("other:10.0.0.1", "{}", px=60_000)
    pipe.execute()
    assert len({g.key for g in rstore.scan()}) == 1200


def test_redis_prefixes_isolate(redis_server):
    a = open_store({"type": "redis", "url": redis_server.url, "prefix": "a*[x]:"})
    b = open_store({"type": "redis", "url": redis_server.url, "prefix": "ab:"})
    t = time.time()
    a.put(gate("192.0.2.1", t + 60))
    b.put(gate("192.0.2.2", t + 60))
    assert [g.key for g in a.scan()] == ["192.0.2.1"]
    assert [g.key for g in b.scan()] == ["192.0.2.2"]
    assert not a.is_open("192.0.2.2")
    a.close()
    b.close()


def test_redis_tampered_values(rstore, caplog):
    c = rstore.client
    c.set("logkey:gate:192.0.2.1", b"\xffgarbage", px=30_000)
    c.set("logkey:gate:192.0.2.2", b"garbage")
    c.set("logkey:gate:192.0.2.3", gate("192.0.2.99", time.time() + 60).to_json(), px=30_000)
    c.set("logkey:gate:192.0.2.4", b'{"key": "192.0.2.4", "expires": "x"}', px=30_000)
    c.set("logkey:gate:192.0.2.5", b'{"key": "192.0.2.5", "expires": "x"}')   # no TTL
    with caplog.at_level("WARNING", logger="logkey.store"):
        for _ in range(2):
            for key in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):  # no record for its key
                assert rstore.get(key) is None and not rstore.is_open(key)
            got = rstore.get("192.0.2.4")                        # its record, odd fields
            assert got is not None and got.user is None and got.source is None
            assert got.expires == pytest.approx(time.time() + 30, abs=2)
            assert rstore.get("192.0.2.5") is None               # ... and no TTL: never open
            assert {g.key for g in rstore.scan()} == {"192.0.2.4"}
    assert rstore.bad_records == 3
    assert sorted(r.getMessage().split(": ")[1] for r in caplog.records) == [
        "logkey:gate:192.0.2.1", "logkey:gate:192.0.2.2", "logkey:gate:192.0.2.3"]


def test_redis_unix_socket(redis_server):
    s = open_store({"type": "redis", "url": redis_server.unix_url})
    s.put(gate("192.0.2.1", time.time() + 60))
    assert s.is_open("192.0.2.1")
    s.close()


def test_redis_stopped_then_restarted(redis_server, rstore):
    rstore.put(gate("192.0.2.1", time.time() + 60))
    redis_server.stop()
    for call in (lambda: rstore.put(gate("192.0.2.2", time.time() + 60)),
                 lambda: rstore.get("192.0.2.1"), lambda: list(rstore.scan()),
                 lambda: rstore.delete("192.0.2.1"), lambda: rstore.is_open("192.0.2.1")):
        started = time.monotonic()
        with pytest.raises(StoreError) as e:
            call()
        assert time.monotonic() - started < 5
        assert "\n" not in str(e.value) and str(e.value).startswith("redis store")
    redis_server.start()
    assert rstore.get("192.0.2.1") is None                  # --save "": the data went with it
    rstore.put(gate("192.0.2.2", time.time() + 60))
    assert rstore.is_open("192.0.2.2")


def test_redis_unreachable_message_hides_password():
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    s = open_store({"type": "redis", "url": f"redis://user:s3cret@127.0.0.1:{port}/0"})
    with pytest.raises(StoreError) as e:
        s.get("192.0.2.1")
    assert "s3cret" not in str(e.value) and "\n" not in str(e.value)


def test_redis_wrong_type_is_store_error(rstore):
    rstore.client.hset("logkey:gate:192.0.2.1", "a", "b")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        rstore.get("192.0.2.1")


def test_redis_sentinel(redis_server, tmp_path):
    """A real redis-sentinel watching the fixture's server: the store finds the master."""
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n")
    proc = subprocess.Popen([redis_server.binary, str(conf), "--sentinel"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s = open_store({"type": "redis", "url": "redis:///0",
                        "sentinel": {"hosts": [f"127.0.0.1:{port}"], "service": "mymaster"}})
        deadline = time.monotonic() + 10
        while True:
            try:
                s.put(gate("192.0.2.1", time.time() + 60))
                break
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert s.is_open("192.0.2.1")
        direct = open_store({"type": "redis", "url": redis_server.url})
        assert direct.is_open("192.0.2.1")
        s.close()
        direct.close()
    finally:
        proc.terminate()
        proc.wait(5)


def test_dir_purge_removes_only_its_own_stale_temp_files(gates, tmp_path, monkeypatch):
    """A writer killed with -9 leaves .KEY.HEX.tmp: purge (the watcher's, at start and every
    minute, and `logkey purge`) removes it once it is a minute old, and counts it; a symlink
    under such a name is removed itself, its target never touched; other dot names stay."""
    s = DirStore(gates)
    target = tmp_path / "outside"
    target.write_text("keep me")
    (gates / ".192.0.2.3.0123456789ab.tmp").write_text("{")
    os.symlink(target, gates / ".192.0.2.4.0123456789ab.tmp")
    (gates / ".notakey.0123456789ab.tmp").write_text("not ours")
    (gates / ".192.0.2.5.xyz.tmp").write_text("not our pattern")
    monkeypatch.setattr(dirstore, "TEMP_MAX_AGE", -1.0)
    assert s.purge() == 0 and s.temps_removed == 2
    assert sorted(os.listdir(gates)) == [".192.0.2.5.xyz.tmp", ".notakey.0123456789ab.tmp"]
    assert target.read_text() == "keep me"


def test_redis_writes_lost_when_another_server_answers(redis_server, rstore, gates):
    """A restarted Redis (no persistence) is another server (run_id): writes_lost() says so
    once, so the watcher writes its gates again; the dir store never loses writes silently."""
    assert rstore.writes_lost() is False
    rstore.put(gate("192.0.2.1", time.time() + 60))
    assert rstore.writes_lost() is False
    redis_server.stop()
    with pytest.raises(StoreError):
        rstore.writes_lost()
    redis_server.start()
    assert rstore.writes_lost() is True and rstore.get("192.0.2.1") is None
    assert rstore.writes_lost() is False
    assert DirStore(gates).writes_lost() is False
