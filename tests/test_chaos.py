"""Rotation chaos: Debian's real logrotate rotating a log that a syslog-like writer (or a real
rsyslogd) writes logins to, under a real `logkey watch`. Each scenario counts the logins
written, in some file at the end, gated, lost and replayed, prints them, and fails on any
loss of a line that reached a file, on any replay and on a traceback in the watcher's log.
The whole module runs in a few minutes (each scenario ~5-15 s)."""
import os
import shutil
import signal
import time

import pytest

from chaos import Scenario, check


def _logrotate():
    if shutil.which("logrotate", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
        pytest.fail("logrotate not found: .ci/run installs it (apt-get install logrotate)")


@pytest.fixture
def scenario(tmp_path):
    _logrotate()
    made = []

    def make(name, options, every, seconds, **kw):
        s = Scenario(tmp_path, name, options, every, seconds, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


CREATE = "create 0640"
COMPRESS = "create 0640\n    compress\n    delaycompress"

# (name, logrotate directives, seconds between rotations, seconds written, Scenario options)
RUNNING = [
    ("create, HUP delay 0 ms", CREATE, 0.5, 5, {"delay_max": 0.0}),
    ("create, HUP delay up to 50 ms", CREATE, 0.5, 5, {"delay_max": 0.05}),
    ("create, HUP delay up to 200 ms", CREATE, 0.5, 5, {"delay_max": 0.2}),
    ("copytruncate", "copytruncate", 0.3, 5, {}),
    ("create + compress + delaycompress", COMPRESS, 0.25, 5, {}),
    # compress at once: the renamed file is compressed while the writer may still write to
    # it (what it wrote after the compression is in no file, and not counted)
    ("create + compress", "create 0640\n    compress", 0.3, 5, {}),
    ("invalid bytes, 1 MB lines", COMPRESS, 0.4, 5, {"hostile": True}),
    # Debian's setup: rsyslogd writes the file, logrotate rotates it (create, compress,
    # delaycompress, sharedscripts) and HUPs rsyslogd, which reopens it
    ("rsyslogd + logrotate", COMPRESS, 0.3, 6, {"rsyslog": True, "rate": 200}),
]


@pytest.mark.parametrize("name, options, every, seconds, kw", RUNNING,
                         ids=[r[0] for r in RUNNING])
def test_rotation_under_a_running_watcher(scenario, name, options, every, seconds, kw):
    """The writer reopens 0..delay_max s after logrotate's HUP (200 ms by default)."""
    s = scenario(name, options, every, seconds, **kw)
    s.watch()
    s.start_writer()
    check(s.finish(), s.logs())


def test_rotation_every_100ms_with_the_watcher_stopped_a_moment(scenario):
    s = scenario("every 0.1 s, watcher SIGSTOPped", COMPRESS,
                 0.1, 6)
    w = s.watch()
    s.start_writer()
    for _ in range(3):
        time.sleep(1.0)
        os.kill(w.proc.pid, signal.SIGSTOP)
        time.sleep(0.7)
        os.kill(w.proc.pid, signal.SIGCONT)
    check(s.finish(), s.logs())


def test_kill_9_with_two_rotations_while_down(scenario):
    s = scenario("kill -9, two rotations while down", COMPRESS,
                 3600, 6)
    w = s.watch()
    s.start_writer()
    for _ in range(2):
        time.sleep(1.5)
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait(10)
        s.rotator.once()
        time.sleep(0.3)
        s.rotator.once()
        w = s.watch()
    check(s.finish(), s.logs())


def test_stopped_for_seconds_across_rotations(scenario):
    s = scenario("stopped 3 s across rotations", COMPRESS,
                 0.4, 7)
    w = s.watch()
    s.start_writer()
    time.sleep(1.5)
    assert w.stop() == 0
    time.sleep(3)
    s.watch()
    check(s.finish(), s.logs())
