#!/usr/bin/env python3
"""Append-to-gate latency of `logkey watch`, and the time to go live on a large log.

1. A watcher follows a temp log into a dir store; login lines (distinct IPs) are appended
   one at a time, and the time from the write to the gate file's appearance is measured
   (p50/p99 over --logins). Baseline in the same run: the time for a plain reader
   process that polls the same file with inotify to see the line (the floor any log
   follower pays).
2. A log of --size-mb megabytes whose lines span the last day is written; the time from
   starting `logkey watch` to the gate of a login appended right after the start is
   measured (it must not read the file from the start).

    python bench/latency.py [--logins 200] [--size-mb 1024]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

LINE = ("{stamp} mail dovecot: pop3-login: Login: user=<u{n}>, method=PLAIN, rip={ip}, "
        "lip=192.0.2.1, mpid={n}, session=<s{n}>\n")
NOISE = ("{stamp} mail postfix/smtpd[{n}]: disconnect from unknown[198.51.100.{m}] ehlo=1 "
         "mail=1 rcpt=1 data=1 quit=1 commands=5\n")


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1e6) % 1000000:06d}+00:00"


def config(tmp: str, log: str) -> str:
    path = os.path.join(tmp, "logkey.yaml")
    with open(path, "w") as f:
        f.write(f"logs: [{{path: {log}}}]\nstore: {{type: dir, path: {tmp}/gates}}\n"
                f"state_dir: {tmp}/state\nwindow: 10m\nmax_ips_per_user: 0\n")
    return path


def start(cfg: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "logkey", "watch", "--config", cfg],
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def wait_file(path: str, limit: float = 10.0) -> float:
    deadline = time.perf_counter() + limit
    while not os.path.exists(path):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"no gate {path} after {limit} s")
        time.sleep(0.0005)
    return time.perf_counter()


def ip_of(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255 or 1}"


def latency(logins: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "mail.log")
        open(log, "w").close()
        proc = start(config(tmp, log))
        try:
            time.sleep(1.0)
            out = []
            with open(log, "a", buffering=1) as f:
                for n in range(1, logins + 1):
                    ip = ip_of(n + 256)
                    t0 = time.perf_counter()
                    f.write(LINE.format(stamp=stamp(time.time()), n=n, ip=ip))
                    out.append(wait_file(os.path.join(tmp, "gates", ip)) - t0)
                    time.sleep(0.01)
            return out
        finally:
            proc.terminate()
            proc.wait(10)


def baseline(logins: int) -> list[float]:
    """A minimal inotify follower in its own process: the floor for 'see an appended line'."""
    code = r"""
import os, sys
from logkey.inotify import INotify, flags
log, flag_dir = sys.argv[1], sys.argv[2]
ino = INotify(); ino.add_watch(log, flags.MODIFY)
f = open(log, "rb"); buf = b""
print("ready", flush=True)
while True:
    ino.read()
    buf += f.read()
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        if line == b"quit":
            sys.exit(0)
        open(os.path.join(flag_dir, line.split()[-1].decode()), "w").close()
"""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "mail.log")
        open(log, "w").close()
        proc = subprocess.Popen([sys.executable, "-c", code, log, tmp], stdout=subprocess.PIPE)
        proc.stdout.readline()
        out = []
        with open(log, "a", buffering=1) as f:
            for n in range(1, logins + 1):
                t0 = time.perf_counter()
                f.write(f"x {n}\n")
                out.append(wait_file(os.path.join(tmp, str(n))) - t0)
                time.sleep(0.01)
            f.write("quit\n")
        proc.wait(10)
        return out


def go_live(size_mb: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "mail.log")
        target = size_mb << 20
        now = time.time()
        lines = target // 130 + 1
        with open(log, "w") as f:
            chunk = []
            for i in range(lines):
                t = now - 86400 + 86400 * i / lines
                chunk.append(NOISE.format(stamp=stamp(t), n=i % 60000, m=i % 250))
                if len(chunk) == 10000:
                    f.write("".join(chunk))
                    chunk = []
            f.write("".join(chunk))
        size = os.path.getsize(log)
        cfg = config(tmp, log)
        t0 = time.perf_counter()
        proc = start(cfg)
        try:
            with open(log, "a") as f:
                f.write(LINE.format(stamp=stamp(time.time()), n=1, ip="10.9.9.9"))
            t1 = wait_file(os.path.join(tmp, "gates", "10.9.9.9"), limit=120)
        finally:
            proc.terminate()
            proc.wait(10)
        return t1 - t0, size


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logins", type=int, default=200)
    ap.add_argument("--size-mb", type=int, default=1024)
    args = ap.parse_args()
    base = baseline(args.logins)
    lat = latency(args.logins)
    print(f"append-to-gate, {args.logins} logins: p50 {pct(lat, 50) * 1000:.1f} ms, "
          f"p99 {pct(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms (goal: p99 < 50 ms)")
    print(f"baseline (bare inotify reader): p50 {pct(base, 50) * 1000:.1f} ms, "
          f"p99 {pct(base, 99) * 1000:.1f} ms; ratio p99 {pct(lat, 99) / pct(base, 99):.1f}x")
    live, size = go_live(args.size_mb)
    print(f"go live on a {size / (1 << 20):.0f} MiB log (start to the first gate): {live:.2f} s "
          f"(goal: under 1 s, plus Python's start)")
    print(f"mean append-to-gate {statistics.mean(lat) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
