"""The rotation chaos harness (tests/test_chaos.py): a syslog-like writer of login lines,
Debian's real logrotate driving the rotations, a real `logkey watch` with a dir store, and
the counts: logins written, in some file at the end, gated, lost, replayed.

The writer acts as rsyslog does: it appends lines to the log through one open descriptor and
reopens the path only when it gets SIGHUP (logrotate's postrotate), after a random delay of
0-200 ms during which it goes on writing to the renamed file. Every login has an address of
its own (198.18.0.0/15, benchmark addresses: only text here, never a network target) and a
user of its own, so each one opens exactly one gate. Bounded: every loop stops by itself.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import wait_for

WRITER = r"""
import os, random, signal, sys, time
path, pidfile, rate, seconds, hostile, delay_max = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1", float(sys.argv[6])
rnd = random.Random(13)
reopen_at = [None]
def hup(signum, frame):
    reopen_at[0] = time.monotonic() + rnd.uniform(0, delay_max)
syslog = path.startswith("unix:")          # a real rsyslogd writes the file: send it datagrams
if syslog:
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.connect(path[5:])
else:
    signal.signal(signal.SIGHUP, hup)
    open(pidfile, "w").write(str(os.getpid()))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
n, t0 = 0, time.monotonic()
end = t0 + seconds
while time.monotonic() < end:
    if reopen_at[0] is not None and time.monotonic() >= reopen_at[0]:
        reopen_at[0] = None
        os.close(fd)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    ip = "198.%d.%d.%d" % (18 + (n >> 16) % 2, (n >> 8) & 255, n & 255)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    line = ("%s mail dovecot: pop3-login: Login: user=<u%d>, method=PLAIN, rip=%s, "
            "lip=192.0.2.1, mpid=%d, session=<s%d>\n" % (stamp, n, ip, n, n)).encode()
    if hostile and n % 50 == 7:
        line += b"%s mail dovecot: \xff\xfe\x00 invalid bytes \xc3(\n" % stamp.encode()
    if hostile and n % 400 == 11:
        line += b"%s mail dovecot: " % stamp.encode() + b"A" * (1 << 20) + b"\n"
    if syslog:
        sock.send(b"<22>" + line.split(b" mail ", 1)[1].rstrip(b"\n"))
    else:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
    print(ip, flush=True)
    n += 1
    time.sleep(max(0.0, n / rate - (time.monotonic() - t0)))
"""

LOGIN_IP = re.compile(rb" dovecot: pop3-login: Login: user=<u\d+>, method=PLAIN, rip=(198\.1[89]\.\d+\.\d+),")
AUDIT = re.compile(r"gate (open|refresh) ip=(198\.1[89]\.\d+\.\d+) ")


def logrotate_conf(tmp: Path, log: Path, pidfile: Path, options: str) -> Path:
    conf = tmp / "logrotate.conf"
    conf.write_text(f"""{log} {{
    rotate 2000
    missingok
    {options}
    sharedscripts
    postrotate
        kill -HUP $(cat {pidfile}) 2>/dev/null || true
    endscript
}}
""")
    return conf


class Rotator:
    """`logrotate -f` every `every` seconds in a thread, until stopped; `hold` (an Event)
    pauses it; `rotations` counts the runs."""

    def __init__(self, conf: Path, state: Path, every: float):
        self.conf, self.state, self.every = conf, state, every
        self.stop_flag = threading.Event()
        self.rotations = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_flag.wait(self.every):
            self.once()

    def once(self):
        proc = subprocess.run(["logrotate", "-f", "-s", str(self.state), str(self.conf)],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            self.errors.append(proc.stderr[-500:])
        self.rotations += 1

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_flag.set()
        self.thread.join(60)


def file_ips(logdir: Path, stem: str) -> set[str]:
    """Every login address in some file of the log's generations at the end (decompressed)."""
    ips = set()
    for p in logdir.iterdir():
        if not p.name.startswith(stem):
            continue
        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(p.suffix, open)
        with opener(p, "rb") as f:
            ips.update(m.decode() for m in LOGIN_IP.findall(f.read()))
    return ips


def audit_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, ip in AUDIT.findall(text):
        counts[ip] = counts.get(ip, 0) + 1
    return counts


class Rsyslog:
    """A real rsyslogd writing mail.* to `log` (RSYSLOG_FileFormat), taking datagrams on a
    socket of its own in `tmp` (never /dev/log), no rate limit; SIGHUP makes it reopen."""

    def __init__(self, tmp: Path, log: Path):
        self.socket = tmp / "log.sock"
        self.pidfile = tmp / "rsyslogd.pid"
        (tmp / "rsyslog-work").mkdir()
        self.conf = tmp / "rsyslog.conf"
        self.conf.write_text(f"""global(workDirectory="{tmp}/rsyslog-work")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{self.socket}" RateLimit.Interval="0" CreatePath="on")
mail.* action(type="omfile" file="{log}" template="RSYSLOG_FileFormat")
""")
        rsyslogd = shutil.which("rsyslogd", path=os.environ.get("PATH", "") + ":/usr/sbin")
        self.proc = subprocess.Popen([rsyslogd, "-n", "-f", str(self.conf), "-i",
                                      str(self.pidfile)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        wait_for(lambda: self.socket.exists() and self.pidfile.exists()
                 or self.proc.poll() is not None, what="rsyslogd's socket")
        assert self.proc.poll() is None, self.proc.stderr.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stderr.close()


class Scenario:
    """One chaos run: the writer, logrotate and a watcher in `tmp`; `report()` the counts."""

    def __init__(self, tmp: Path, name: str, options: str, every: float, seconds: float,
                 rate: float = 150, hostile: bool = False, delay_max: float = 0.2,
                 rotate_wait: str = "5s", rsyslog: bool = False):
        self.tmp, self.name = tmp, name
        self.log = tmp / "logs" / "mail.log"
        self.log.parent.mkdir()
        self.rsyslog = Rsyslog(tmp, self.log) if rsyslog else None
        self.pidfile = self.rsyslog.pidfile if rsyslog else tmp / "writer.pid"
        self.seconds, self.rate, self.hostile, self.delay_max = seconds, rate, hostile, delay_max
        self.cfg = tmp / "logkey.yaml"
        self.cfg.write_text(f"logs:\n  - path: {self.log}\n    packs: [dovecot]\n"
                            f"store: {{type: dir, path: {tmp / 'gates'}}}\n"
                            f"state_dir: {tmp / 'state'}\nwindow: 10m\nmax_ips_per_user: 0\n"
                            f"line_max: 65536\nrotate_wait: {rotate_wait}\n")
        self.rotator = Rotator(logrotate_conf(tmp, self.log, self.pidfile, options),
                               tmp / "logrotate.state", every)
        self.watchers = []
        self.writer = None
        self.ledger = tmp / "written.txt"

    def watch(self):
        from servers import Logkey
        w = Logkey("watch", self.cfg).spawn()
        self.watchers.append(w)
        wait_for(lambda: "watching" in w.log() or w.proc.poll() is not None, timeout=30,
                 what="the watcher to start")
        assert w.proc.poll() is None, w.log()
        return w

    def start_writer(self):
        self.log.touch()
        with open(self.ledger, "wb") as out:
            self.writer = subprocess.Popen(
                [sys.executable, "-c", WRITER,
                 f"unix:{self.rsyslog.socket}" if self.rsyslog else str(self.log),
                 str(self.pidfile), str(self.rate),
                 str(self.seconds), "1" if self.hostile else "0", str(self.delay_max)],
                stdout=out, stdin=subprocess.DEVNULL)
        wait_for(self.pidfile.exists, what="the writer's pid file")
        self.rotator.start()

    def finish(self, timeout=60.0):
        """Wait for the writer to end, stop rotating, and for the watcher to gate what is in
        the files (bounded); the counts."""
        self.writer.wait(self.seconds + 60)
        self.rotator.stop()
        if self.rsyslog is not None:             # what it has taken in is in the file
            time.sleep(1.0)
        in_file = file_ips(self.log.parent, self.log.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if in_file <= set(audit_counts(self.logs())):
                break
            time.sleep(0.2)
        time.sleep(0.5)                 # anything read twice would show by now
        return self.report(in_file)

    def logs(self) -> str:
        return "".join(w.log() for w in self.watchers)

    def report(self, in_file):
        """lost: in some file, never gated. replayed: a gate decided twice by one watcher, or
        refreshed (every login has an address of its own). again: opened by a watcher after a
        kill -9 that came before the first opening reached the store (the store is the
        truth: a gate in it is taken over at start, and a line read again leaves it alone)."""
        written = set(self.ledger.read_text().split())
        runs = [audit_counts(w.log()) for w in self.watchers]
        gated = set().union(*runs)
        refreshed = set(ip for _, ip in ((m.group(1), m.group(2)) for m in
                        AUDIT.finditer(self.logs())) if _ == "refresh")
        replayed = {ip for run in runs for ip, n in run.items() if n > 1} | refreshed
        again = sum(1 for ip in gated if sum(1 for run in runs if ip in run) > 1)
        return {"scenario": self.name, "written": len(written), "in_file": len(in_file),
                "gated": len(gated & written), "lost": len(in_file - gated),
                "replayed": len(replayed), "again_after_kill": again,
                "rotations": self.rotator.rotations,
                "not_in_file": len(written - in_file), "logrotate_errors": self.rotator.errors[:2]}

    def stop(self):
        self.rotator.stop_flag.set()
        if self.rsyslog is not None:
            self.rsyslog.stop()
        if self.writer is not None and self.writer.poll() is None:
            self.writer.kill()
            self.writer.wait(10)
        for w in self.watchers:
            if w.proc.poll() is None:
                os.kill(w.proc.pid, signal.SIGCONT)
            w.stop(signal.SIGKILL)


def check(report: dict, logs: str) -> None:
    print(report)
    assert "Traceback" not in logs, logs[-3000:]
    assert report["lost"] == 0 and report["replayed"] == 0, (report, logs[-3000:])
    assert report["in_file"] > 0 and not report["logrotate_errors"], report
