"""logkey.sources.follow on real files and real processes: rotation under load, kill -9, hostile bytes,
first attach by time, files that appear later, corrupt state. Every test stops by itself."""
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from logkey.sources.follow import Follower

ROOT = Path(__file__).resolve().parent.parent
ALWAYS_RECENT = lambda line: 4e9      # noqa: E731 -- first attach starts at the first line
NEVER_TIMED = lambda line: None       # noqa: E731 -- first attach starts at the end

# A writer appending numbered lines in batches, each batch in two writes cut at a random byte
# (so the follower sees partial lines), rotating at the given line numbers.
WRITER = r"""
import os, random, shutil, sys, time
path, total, mode, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rotate_at = {int(x) for x in sys.argv[5].split(",") if x}
rnd = random.Random(7)
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
batch, n, t0 = max(1, rate // 200), 0, time.monotonic()
while n < total:
    k = min(batch, total - n)
    if any(n < r <= n + k for r in rotate_at):   # rotate exactly at the given line
        k = min(r for r in rotate_at if n < r <= n + k) - n
    data = b"".join(b"%08d %s\n" % (i, b"x" * rnd.randrange(0, 120)) for i in range(n, n + k))
    cut = rnd.randrange(len(data) + 1)
    os.write(fd, data[:cut])
    time.sleep(0.0005)
    os.write(fd, data[cut:])
    n += k
    if n in rotate_at:
        if os.path.exists(path + ".1"):
            os.rename(path + ".1", path + ".2")
        if mode == "rename":
            os.rename(path, path + ".1")
            for pause in (0.01, 0.03):      # the log missing for a while; the daemon still
                time.sleep(pause)           # writes to the renamed file until it reopens
                os.write(fd, b"%08d written to the renamed file\n" % n)
                n += 1
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        else:
            shutil.copyfile(path, path + ".1")
            os.truncate(path, 0)
    time.sleep(max(0.0, n / rate - (time.monotonic() - t0)))
os.close(fd)
"""

# A follower that prints each line ("L <data>"), commits, then prints "C"; killed with -9.
FOLLOWER = r"""
import sys
from logkey.sources.follow import Follower
path, state, out = sys.argv[1:4]
f = Follower([path], state, line_time=lambda line: 4e9)
with open(out, "ab", buffering=0) as w:
    while True:
        lines = f.read()
        if lines:
            w.write(b"".join(b"L " + l.data[:8] + b"\n" for l in lines))
            f.commit()
            w.write(b"C\n")
        f.wait(0.05)
"""


def start_writer(path, total, mode, rate, rotate_at=()):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(total), mode, str(rate),
                             ",".join(map(str, rotate_at))])


def collect(f, want, deadline_s=20.0, lag=None, done=None):
    """Read until `want` lines arrived, or `done()` is true and a read brings nothing more,
    bounded in time; `lag` (a Random): sleep up to 40 ms between reads instead of waiting,
    like a busy reader."""
    got, deadline = [], time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        finished = done is not None and done()
        new = f.read()
        got += new
        if len(got) >= want or (finished and not new):
            break
        if lag is not None:
            time.sleep(lag.uniform(0, 0.04))
        else:
            f.wait(0.05)
    return got


def numbers(lines):
    return [int(line.data[:8]) for line in lines]


def check_linenos(lines):
    """Line numbers count up by one inside a file generation; returns how many generations."""
    gens = 1
    for prev, cur in zip(lines, lines[1:]):
        if cur.lineno == 1:
            gens += 1
        else:
            assert cur.lineno == prev.lineno + 1, (prev, cur)
    return gens


@pytest.mark.parametrize("mode", ["rename", "copytruncate"])
def test_rotation_under_load_every_line_once_in_order(tmp_path, mode):
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    total = 20000
    f = Follower([str(log)], str(tmp_path / "state"), line_time=ALWAYS_RECENT)
    writer = start_writer(log, total, mode, rate=8000, rotate_at=(7000, 14000))
    try:
        got = collect(f, total, deadline_s=25, lag=random.Random(mode),
                      done=lambda: writer.poll() is not None)
    finally:
        writer.kill()
        f.close()
    assert numbers(got) == list(range(total))
    assert check_linenos(got) == 3
    assert {line.path for line in got} == {str(log)}


def parse_run(text):
    """(delivered numbers, numbers confirmed committed) of one follower run; a line cut by the
    kill is not counted as delivered."""
    delivered, committed = [], 0
    for raw in text.split(b"\n")[:-1]:
        if raw == b"C":
            committed = len(delivered)
        else:
            delivered.append(int(raw[2:]))
    return delivered, delivered[:committed]


def test_kill_9_at_random_moments_loses_nothing_and_repeats_nothing_committed(tmp_path):
    log, state = tmp_path / "mail.log", tmp_path / "state"
    log.write_bytes(b"")
    total, rnd = 16000, random.Random(1999)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = start_writer(log, total, "rename", rate=5000, rotate_at=(8000,))
    runs, deadline = [], time.monotonic() + 25
    try:
        for i in range(6):              # 5 runs killed with -9, then one left to finish
            out = tmp_path / ("out.%d" % i)
            proc = subprocess.Popen([sys.executable, "-c", FOLLOWER, str(log), str(state), str(out)],
                                    env=env)
            if i < 5:                   # killed 0.2-0.8 s after it began (not after the
                started = time.monotonic() + 10     # interpreter's start, slow under load)
                while not out.exists() and time.monotonic() < started:
                    time.sleep(0.01)
                time.sleep(rnd.uniform(0.2, 0.8))
                proc.send_signal(signal.SIGKILL)
            else:
                writer.wait(timeout=20)
                while time.monotonic() < deadline:
                    delivered, _ = parse_run(out.read_bytes() if out.exists() else b"")
                    if delivered and delivered[-1] == total - 1:
                        break
                    time.sleep(0.1)
                proc.kill()
            proc.wait(timeout=10)
            runs.append(parse_run(out.read_bytes() if out.exists() else b""))
    finally:
        writer.kill()
    assert sum(1 for delivered, _ in runs if delivered) >= 3, [len(d) for d, _ in runs]
    seen, committed_upto = set(), -1
    for delivered, committed in runs:
        assert delivered == list(range(delivered[0], delivered[0] + len(delivered))) if delivered else True
        if delivered:
            assert delivered[0] > committed_upto, "a committed line was delivered again"
            assert delivered[0] <= max(seen, default=-1) + 1, "a line was skipped across a restart"
        seen.update(delivered)
        if committed:
            committed_upto = committed[-1]
    assert seen == set(range(total))


def test_hostile_bytes_long_line_and_partial_last_line(tmp_path):
    log, state = tmp_path / "mail.log", str(tmp_path / "state")
    log.write_bytes(b"")
    f = Follower([str(log)], state, line_max=1000, line_time=ALWAYS_RECENT)
    assert f.read() == []
    with open(log, "ab") as w:
        w.write(b"bad \xff\xfe utf8\nnul \x00 inside\ncr \r inside\r\ncrlf\r\n")
        w.write(b"y" * (1 << 20) + b"\n")          # a 1 MB line
        w.write(b"z" * 1000 + b"\n" + b"z" * 1001 + b"\n")
        w.write(b"\n" + b"partial")
    got = f.read()
    assert [line.data for line in got] == [b"bad \xff\xfe utf8", b"nul \x00 inside", b"cr \r inside",
                                           b"crlf", None, b"z" * 1000, None, b""]
    assert [line.lineno for line in got] == list(range(1, 9))
    f.commit()                          # the offset stops before the partial line
    f.close()
    with open(log, "ab") as w:
        w.write(b" line, completed later\nnext\n")
    f = Follower([str(log)], state, line_max=1000, line_time=NEVER_TIMED)
    got = f.read()
    assert [(line.lineno, line.data) for line in got] == [(9, b"partial line, completed later"),
                                                          (10, b"next")]
    f.close()


def test_long_line_written_slowly_is_skipped_once(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    f = Follower([str(log)], str(tmp_path / "state"), line_max=100, line_time=ALWAYS_RECENT)
    got = []
    for _ in range(5):
        with open(log, "ab") as w:
            w.write(b"q" * 300)
        got += f.read()
    with open(log, "ab") as w:
        w.write(b"q\nafter\n")
    got += f.read()
    assert [(line.lineno, line.data) for line in got] == [(1, None), (2, b"after")]
    f.close()


def stamp(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00").encode()


def test_first_attach_seeks_by_time_in_a_large_file(tmp_path):
    now = datetime(2026, 11, 28, tzinfo=timezone.utc).timestamp()
    n = 300_000                         # about 30 MB over three days, one line without a time in 50
    start = now - 3 * 86400
    lines = []
    for i in range(n):
        t = start + (now - start) * i / n
        if i % 50 == 7:
            lines.append(b"-- no time stamp here \xff %d" % i)
        else:
            lines.append(stamp(t) + b" mail dovecot: pop3-login: Login: user=<u%d>, rip=192.0.2.%d %s"
                         % (i, i % 250, b"p" * (i % 40)))
    log = tmp_path / "mail.log"
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert log.stat().st_size > 25_000_000
    first_recent = next(i for i in range(n) if i % 50 != 7 and start + (now - start) * i / n >= now - 600)
    calls = []

    from logkey.sources.follow import header_time
    timer = header_time(now)

    def line_time(line):
        calls.append(line)
        return timer(line)

    f = Follower([str(log)], str(tmp_path / "state"), now=lambda: now, line_time=line_time)
    got = f.read()
    f.close()
    assert got[0].lineno == first_recent + 1
    assert [line.data for line in got] == lines[first_recent:]
    assert len(calls) < 5000, "the seek parsed %d lines: it read the file from the start" % len(calls)

    # the default line_time (headers.parse) gives the same place
    f = Follower([str(log)], str(tmp_path / "state2"), now=lambda: now)
    assert f.read()[0].lineno == first_recent + 1
    f.close()

    # far into a large file, going live beats counting: line numbers are reported as 0
    import logkey.sources.seek as seek
    old, seek.COUNT_MAX = seek.COUNT_MAX, 1 << 20
    try:
        f = Follower([str(log)], str(tmp_path / "state3"), now=lambda: now)
        got = f.read()
        f.commit()
        f.close()
    finally:
        seek.COUNT_MAX = old
    assert [line.data for line in got] == lines[first_recent:]
    assert {line.lineno for line in got} == {0}
    with open(log, "ab") as out:
        out.write(b"one more\n")
    f = Follower([str(log)], str(tmp_path / "state3"), now=lambda: now)
    assert [(line.lineno, line.data) for line in f.read()] == [(0, b"one more")]
    f.close()


def test_first_attach_without_times_starts_at_the_end(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"no time\n" * 1000 + b"half")
    f = Follower([str(log)], str(tmp_path / "state"), line_time=NEVER_TIMED)
    assert f.read() == []
    with open(log, "ab") as w:
        w.write(b" a line\nnew\n")
    assert [(line.lineno, line.data) for line in f.read()] == [(1001, b"half a line"), (1002, b"new")]
    f.close()


def test_missing_file_and_directory_appear_later_read_from_start(tmp_path):
    log = tmp_path / "later" / "mail.log"
    f = Follower([str(log)], str(tmp_path / "state"), line_time=NEVER_TIMED, poll_interval=0.05)
    assert f.read() == []
    log.parent.mkdir()
    log.write_bytes(b"1\n2\n")
    got = collect(f, 2, deadline_s=10)
    assert [(line.lineno, line.data) for line in got] == [(1, b"1"), (2, b"2")]
    os.rename(log, str(log) + ".1")     # rotated; the new one comes later
    assert f.read() == []
    log.write_bytes(b"3\n")
    assert [(line.lineno, line.data) for line in collect(f, 1, deadline_s=10)] == [(1, b"3")]
    f.close()


def test_glob_picks_up_new_files_from_their_start(tmp_path):
    (tmp_path / "a.log").write_bytes(b"old a\n")
    f = Follower([str(tmp_path / "*.log")], str(tmp_path / "state"), line_time=NEVER_TIMED)
    assert f.read() == []               # attached at the end: nothing timed
    (tmp_path / "b.log").write_bytes(b"b1\nb2\n")
    (tmp_path / "b.log.1").write_bytes(b"not matched\n")
    with open(tmp_path / "a.log", "ab") as w:
        w.write(b"new a\n")
    got = collect(f, 3, deadline_s=10)
    assert sorted((Path(line.path).name, line.lineno, line.data) for line in got) == [
        ("a.log", 2, b"new a"), ("b.log", 1, b"b1"), ("b.log", 2, b"b2")]
    f.close()


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"dev": 1}', b"\xff\x00" * 10, b"[" * 100000,
                                     b'{"dev": -1, "ino": 1, "offset": 1, "lineno": 1, "fp": "", "fp_len": 0}'])
def test_corrupt_state_file_means_no_saved_offset(tmp_path, caplog, content):
    log, state = tmp_path / "mail.log", tmp_path / "state"
    log.write_bytes(b"one\n")
    f = Follower([str(log)], str(state), line_time=ALWAYS_RECENT)
    assert [line.data for line in f.read()] == [b"one"]
    f.commit()
    f.close()
    (name,) = os.listdir(state)
    (state / name).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="logkey.follow"):
        f = Follower([str(log)], str(state), line_time=ALWAYS_RECENT)
        assert [line.data for line in f.read()] == [b"one"]     # first attach again
    assert "treated as no saved offset" in caplog.text
    f.close()


COMMIT_ON_FULL_DISK = r"""
import resource, signal, sys
from logkey.sources.follow import Follower
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
f = Follower([sys.argv[1]], sys.argv[2], line_time=lambda line: 4e9)
f.read()
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
try:
    f.commit()
except OSError:
    sys.exit(3)
"""


@pytest.mark.parametrize("limit", [0, 4, 40])
def test_commit_on_a_full_disk_keeps_the_old_state(tmp_path, limit):
    log, state = tmp_path / "mail.log", tmp_path / "state"
    log.write_bytes(b"one\n")
    f = Follower([str(log)], str(state), line_time=ALWAYS_RECENT)
    f.read()
    f.commit()
    f.close()
    before = {name: (state / name).read_bytes() for name in os.listdir(state)}
    with open(log, "ab") as w:
        w.write(b"two\n")
    proc = subprocess.run([sys.executable, "-c", COMMIT_ON_FULL_DISK, str(log), str(state), str(limit)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=20)
    assert proc.returncode == 3
    assert {name: (state / name).read_bytes() for name in os.listdir(state)} == before
    f = Follower([str(log)], str(state), line_time=ALWAYS_RECENT)
    assert [(line.lineno, line.data) for line in f.read()] == [(2, b"two")]
    f.close()


def test_state_is_small_json_and_resumes(tmp_path):
    log, state = tmp_path / "mail.log", tmp_path / "state"
    log.write_bytes(b"one\ntwo\n")
    f = Follower([str(log)], str(state), line_time=ALWAYS_RECENT)
    assert len(f.read()) == 2
    f.commit()
    f.close()
    assert oct(state.stat().st_mode & 0o777) == oct(0o750)
    (name,) = os.listdir(state)
    rec = json.loads((state / name).read_bytes())
    st = log.stat()
    assert (rec["dev"], rec["ino"], rec["offset"], rec["lineno"]) == (st.st_dev, st.st_ino, 8, 2)
    with open(log, "ab") as w:
        w.write(b"three\n")
    f = Follower([str(log)], str(state), line_time=ALWAYS_RECENT)
    assert [(line.lineno, line.data) for line in f.read()] == [(3, b"three")]
    f.close()


def test_rename_then_old_file_written_then_new_created(tmp_path):
    """With rotate_wait 0 the renamed file is left as soon as the new one is there, its
    unterminated last line a line of its own."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n")
    f = Follower([str(log)], str(tmp_path / "state"), line_time=ALWAYS_RECENT, rotate_wait=0)
    assert len(f.read()) == 1
    with open(log, "ab") as old:
        os.rename(log, str(log) + ".1")
        old.write(b"2\n")
        old.flush()
        assert [line.data for line in f.read()] == [b"2"]     # the new one is not there yet
        old.write(b"3\npartial, never completed")
        old.flush()
        log.write_bytes(b"new\n")
    got = f.read()
    assert [(line.lineno, line.data) for line in got] == [         # each file in its order
        (3, b"3"), (1, b"new"), (4, b"partial, never completed")]
    f.close()


@pytest.mark.parametrize("running", [True, False])
def test_copytruncate_then_rename_before_the_follower_looks(tmp_path, running):
    """A copytruncate rotation, lines written to the truncated file, then a rename rotation, all
    between two reads (or while logkey is stopped): the copy's rest, the truncated file's new
    lines and the new file's lines all come out, in that order."""
    log, state = tmp_path / "mail.log", str(tmp_path / "state")
    log.write_bytes(b"1\n2\n")
    f = Follower([str(log)], state, line_time=ALWAYS_RECENT)
    assert [line.data for line in f.read()] == [b"1", b"2"]
    f.commit()
    if not running:
        f.close()
    with open(log, "ab") as w:
        w.write(b"3\n")
    (tmp_path / "mail.log.1").write_bytes(log.read_bytes())        # copytruncate
    with open(log, "r+b") as w:
        w.truncate(0)
    with open(log, "ab") as w:
        w.write(b"4 after the truncation\n5\n")
    os.rename(log, tmp_path / "mail.log.2")                          # then a rename
    log.write_bytes(b"6 in the new file\n")
    if not running:
        f = Follower([str(log)], state, line_time=ALWAYS_RECENT)
    got = [line.data for line in f.read()]
    got += [line.data for line in f.read()]
    assert got == [b"3", b"4 after the truncation", b"5", b"6 in the new file"]
    f.close()


@pytest.mark.parametrize("mode", ["rename", "copytruncate", "dateext"])
def test_rotation_while_stopped_reads_the_rest_of_the_rotated_file(tmp_path, mode):
    log, state = tmp_path / "mail.log", str(tmp_path / "state")
    log.write_bytes(b"one\n")
    f = Follower([str(log)], state, line_time=ALWAYS_RECENT)
    assert len(f.read()) == 1
    f.commit()
    f.close()
    with open(log, "ab") as w:
        w.write(b"two\n")
    rotated = str(log) + ("-20261128" if mode == "dateext" else ".1")
    (tmp_path / "mail.log.2").write_bytes(b"an older one\n")        # last written before
    os.utime(tmp_path / "mail.log.2", (time.time() - 100,) * 2)    # logkey first saw mail.log
    if mode == "copytruncate":
        rotated_bytes = log.read_bytes()
        Path(rotated).write_bytes(rotated_bytes)
        with open(log, "r+b") as w:
            w.truncate(0)
            w.write(b"new one, longer than the old file\n")
    else:
        os.rename(log, rotated)
        log.write_bytes(b"new one\n")
    f = Follower([str(log)], state, line_time=ALWAYS_RECENT)
    got = f.read()
    assert [(line.lineno, line.data) for line in got][:1] == [(2, b"two")]
    assert [line.lineno for line in got][1:] == [1]
    f.close()


def _no_inotify(nonblocking=False):
    raise OSError(24, "Too many open files")       # inotify_init1 past max_user_instances


def test_wait_wakes_on_append_and_polls_without_inotify(tmp_path, monkeypatch):
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    for inotify in (True, False):
        if not inotify:
            monkeypatch.setattr("logkey.inotify.INotify", _no_inotify)    # inotify_init1 fails: polling
        f = Follower([str(log)], str(tmp_path / "state"), line_time=ALWAYS_RECENT, poll_interval=0.05)
        assert (f.fileno() is not None) == inotify
        f.read()
        timer = threading.Timer(0.2, lambda: log.open("ab").write(b"x\n"))
        timer.start()
        t0 = time.monotonic()
        got = []
        while not got and time.monotonic() - t0 < 10:
            f.wait(10)
            got = f.read()
        timer.join()
        assert [line.data for line in got] == [b"x"]
        assert time.monotonic() - t0 < 8
        f.close()


def logrotate(tmp_path, log, options):
    """One run of Debian's real logrotate on `log` with the given directives."""
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{log} {{\n    rotate 50\n    {options}\n}}\n")
    subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)],
                   check=True, timeout=60)


def append_lines(log, start, n):
    with open(log, "ab") as f:
        f.write(b"".join(b"%08d %s\n" % (i, b"y" * 40) for i in range(start, start + n)))
    return start + n


@pytest.mark.parametrize("options", ["create\n    compress\n    delaycompress",
                                     "create\n    compress", "copytruncate\n    compress"])
@pytest.mark.parametrize("running", [True, False])
def test_two_rotations_between_reads_read_every_generation_compressed_too(
        tmp_path, options, running):
    """Two logrotate runs between two reads, or while logkey is stopped: the generation in
    between (plain .1, or already .2.gz) and the rest of the one logkey was in are read,
    oldest first, none twice."""
    log, state = tmp_path / "mail.log", str(tmp_path / "state")
    n = append_lines(log, 0, 30)
    f = Follower([str(log)], state, line_time=ALWAYS_RECENT, rotate_wait=0)
    got = numbers(f.read())
    f.commit()
    for _ in range(2):
        n = append_lines(log, n, 30)
        if not running:
            f.close()
            f = None
        for _ in range(2):
            logrotate(tmp_path, log, options)
            n = append_lines(log, n, 30)
        if f is None:
            f = Follower([str(log)], state, line_time=ALWAYS_RECENT, rotate_wait=0)
        got += numbers(f.read()) + numbers(f.read())
        f.commit()
    f.close()
    assert got == list(range(n))


def test_first_attach_reaches_back_into_a_rotated_file_within_the_window(tmp_path):
    log = tmp_path / "mail.log"
    (tmp_path / "mail.log.2.gz").write_bytes(__import__("gzip").compress(b"old 1\nold 2\n"))
    os.utime(tmp_path / "mail.log.2.gz", (time.time() - 7200,) * 2)     # before the window
    (tmp_path / "mail.log.1").write_bytes(b"recent 1\nrecent 2\n")
    log.write_bytes(b"live 1\n")
    f = Follower([str(log)], str(tmp_path / "state"), line_time=ALWAYS_RECENT)
    assert [line.data for line in f.read()] == [b"recent 1", b"recent 2", b"live 1"]
    f.close()


def test_rotated_files_older_than_the_window_are_skipped_counted_and_said(tmp_path, caplog):
    log, state = tmp_path / "mail.log", str(tmp_path / "state")
    log.write_bytes(b"1\n")
    f = Follower([str(log)], state, line_time=ALWAYS_RECENT, attach_window=600)
    f.read()
    f.commit()
    f.close()
    with open(log, "ab") as w:
        w.write(b"2\n3\n")
    os.rename(log, str(log) + ".1")
    os.utime(str(log) + ".1", (time.time() - 3600,) * 2)      # a long stop
    log.write_bytes(b"new\n")
    with caplog.at_level(logging.WARNING, logger="logkey.follow"):
        f = Follower([str(log)], state, line_time=ALWAYS_RECENT, attach_window=600)
        assert [line.data for line in f.read()] == [b"new"]
    f.close()
    assert "mail.log.1 skipped from byte 2: last written before the 600s that can still " \
           "matter (2 line(s))" in caplog.text


def test_copytruncate_copy_shorter_than_the_offset_is_no_loss_and_no_warning(tmp_path, caplog):
    """logkey read lines written after logrotate's copy, before its truncate: the copy is
    shorter than the offset, nothing is lost and nothing is said."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n2\n")
    f = Follower([str(log)], str(tmp_path / "state"), line_time=ALWAYS_RECENT)
    (tmp_path / "mail.log.1").write_bytes(log.read_bytes())        # the copy ...
    with open(log, "ab") as w:
        w.write(b"3\n")
    assert [line.data for line in f.read()] == [b"1", b"2", b"3"]  # ... read past it
    with open(log, "r+b") as w:
        w.truncate(0)                                               # ... then the truncate
        w.write(b"4\n")
    with caplog.at_level(logging.WARNING, logger="logkey.follow"):
        assert [line.data for line in f.read()] == [b"4"]
    assert "truncated" not in caplog.text
    f.close()


def test_stale_state_temp_files_are_removed_at_start_and_only_those(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    stale = state / (".%s.json.0123456789ab.tmp" % ("a" * 32))
    stale.write_text("{")
    other = state / ".journal.cursor.0123456789ab.tmp"
    other.write_text("not a follower's")
    Follower([str(tmp_path / "mail.log")], str(state)).close()
    assert sorted(os.listdir(state)) == [other.name]


def test_copytruncate_of_a_file_logkey_saw_empty(tmp_path):
    """An empty file has no fingerprint: written, copied and truncated, then written again
    before the next read, its first lines are in the copy, which is read first."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    f = Follower([str(log)], str(tmp_path / "state"), line_time=ALWAYS_RECENT)
    assert f.read() == []
    for rotation in range(2):
        with open(log, "ab") as w:
            w.write(b"%d before\n" % rotation)
        (tmp_path / f"mail.log.{2 - rotation}").write_bytes(log.read_bytes())   # the copy
        with open(log, "r+b") as w:
            w.truncate(0)
        got = [line.data for line in f.read()]
        with open(log, "ab") as w:
            w.write(b"%d after\n" % rotation)
        got += [line.data for line in f.read()]
        assert got == [b"%d before" % rotation, b"%d after" % rotation]
    f.close()
