"""logkey/inotify.py, the standard-library inotify the follower uses, against the real kernel:
the events follow.py reads (create, modify, rename pairs, delete, the watch's end), names that
are not UTF-8, non-blocking reads, a wait that wakes on the event, and the flag values against
the kernel's own header when it is installed."""
import os
import re
import threading
import time
from pathlib import Path

import pytest

from logkey.inotify import INotify, flags

DIR_MASK = (flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE
            | flags.CLOSE_WRITE | flags.ATTRIB)


@pytest.fixture
def ino():
    i = INotify(nonblocking=True)
    yield i
    i.close()


def kinds(events, name):
    return [e.mask & ~flags.ISDIR for e in events if e.name == name]


def test_the_events_the_follower_reads(tmp_path, ino):
    wd = ino.add_watch(str(tmp_path), DIR_MASK)
    assert ino.read(timeout=0) == []
    log = tmp_path / "mail.log"
    with open(log, "wb") as f:
        f.write(b"one\n")
    os.rename(log, tmp_path / "mail.log.1")
    (tmp_path / "mail.log.1").unlink()
    events = ino.read(timeout=0)
    assert {e.wd for e in events} == {wd}
    assert kinds(events, "mail.log") == [flags.CREATE, flags.MODIFY, flags.CLOSE_WRITE,
                                          flags.MOVED_FROM]
    assert kinds(events, "mail.log.1") == [flags.MOVED_TO, flags.DELETE]
    moved = [e for e in events if e.mask & (flags.MOVED_FROM | flags.MOVED_TO)]
    assert moved[0].cookie == moved[1].cookie != 0
    os.rmdir(tmp_path)
    tail = ino.read(timeout=0)
    assert tail[-1].mask & flags.IGNORED and tail[-1].wd == wd and tail[-1].name == ""


def test_a_name_that_is_not_utf8_comes_back_as_the_same_path(tmp_path, ino):
    ino.add_watch(os.fsencode(tmp_path), flags.CREATE)      # bytes paths too
    raw = b"mail.log.\xff\xfe"
    fd = os.open(os.path.join(os.fsencode(tmp_path), raw), os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    ev, = ino.read(timeout=0)
    assert os.fsencode(ev.name) == raw
    assert os.path.exists(os.path.join(str(tmp_path), ev.name))


def test_a_wait_wakes_on_the_event_not_at_its_timeout(tmp_path, ino):
    ino.add_watch(str(tmp_path), flags.MODIFY)
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    t0 = time.monotonic()
    assert ino.read(timeout=100) == []          # nothing: returns after the timeout
    assert time.monotonic() - t0 >= 0.09
    timer = threading.Timer(0.2, lambda: log.open("ab").write(b"x\n"))
    timer.start()
    t0 = time.monotonic()
    events = ino.read(timeout=60_000)
    waited = time.monotonic() - t0
    timer.join()
    assert [e.name for e in events] == ["mail.log"]
    assert waited < 30                          # woken by the write, long before the minute


def test_errors_are_oserrors_with_errno(tmp_path, ino):
    with pytest.raises(FileNotFoundError):
        ino.add_watch(str(tmp_path / "absent"), flags.CREATE)
    blocking = INotify()
    try:
        assert os.get_blocking(blocking.fileno()) and not os.get_inheritable(blocking.fileno())
        assert not os.get_blocking(ino.fileno())
    finally:
        blocking.close()
        blocking.close()                        # twice is harmless


def test_flags_are_the_kernels():
    header = Path("/usr/include/linux/inotify.h")
    if not header.exists():
        pytest.skip("linux-libc-dev is not installed")
    defined = dict(re.findall(r"#define IN_(\w+)\s+(0x[0-9a-fA-F]+)", header.read_text()))
    ours = {k: v for k, v in vars(flags).items() if k.isupper()}
    assert ours and all(int(defined[k], 16) == v for k, v in ours.items())
