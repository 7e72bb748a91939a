#!/usr/bin/env python3
"""Throughput of the watcher's catch-up (`logkey watch --once`) against a plain readline loop,
measured in the same run.

A watcher that was down reads everything logged meanwhile before it follows the log again:
this is that read. The logs are bench/throughput.py's two mixes (default 1,000,000 lines each;
4% POP/IMAP lines, and the login-dense 20%); the watcher starts on each with no saved offset,
`--as-of` the end of the log and a window longer than the log, so its first read goes back to
the first line (as a catch-up after a long downtime would), and prints, per log, lines/s of:
  - the readline loop over the file (the baseline),
  - `logkey watch --once --observe` (every line read, matched, correlated and judged by the
    gate policy, every action logged, nothing written),
  - `logkey watch --once` with the default dir store (each gate written to a file, the
    gates of one pass synced together),
and the ratios. The audit lines go to /dev/null. Issue 17 asks for catch-up at 0.2 of the
baseline; compare with `logkey dry-run` (bench/throughput.py), which reads the same lines
without the policy, the audit or a store. Ratios are only meaningful on a quiet machine.

    python bench/catchup.py [--lines N] [--repeat R] [--keep DIR]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import DRY_RUN_ENV, arguments, best, generated_mixes, readline_loop  # noqa: E402

T0 = 1_795_000_000.0            # throughput.generate's first stamp; a line every 0.05 s


def watch_once(path: str, tmp: str, lines: int, observe: bool) -> float:
    """Seconds of one `logkey watch --once` over `path` from its first line."""
    run = os.path.join(tmp, "run")
    shutil.rmtree(run, ignore_errors=True)
    os.makedirs(os.path.join(run, "state"), mode=0o750)
    os.makedirs(os.path.join(run, "gates"), mode=0o750)
    span = int(lines * 0.05) + 86400
    config = os.path.join(run, "config.yaml")
    with open(config, "w", encoding="ascii") as f:
        f.write(f"logs:\n  - path: {path}\n    sender_verified: true\n"
                f"state_dir: {run}/state\nstore: {{type: dir, path: {run}/gates}}\n"
                f"window: {span}\nmax_session: {span}\n")
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + lines * 0.05 + 1))
    args = [sys.executable, "-m", "logkey", "watch", "--config", config, "--once",
            "--as-of", end] + (["--observe"] if observe else [])
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=DRY_RUN_ENV)
    return time.perf_counter() - start


def main() -> int:
    args = arguments(__doc__, repeat=1)
    n = args.lines
    with tempfile.TemporaryDirectory() as tmp:
        for name, _, path in generated_mixes(args, tmp):
            base = best(readline_loop, path, repeat=max(3, args.repeat))
            observe = best(watch_once, path, tmp, n, True, repeat=args.repeat)
            stored = best(watch_once, path, tmp, n, False, repeat=args.repeat)
            gates = len(os.listdir(os.path.join(tmp, "run", "gates")))
            print(f"mix {name} POP/IMAP lines")
            print(f"  readline loop (baseline):        {n / base:12,.0f} lines/s")
            print(f"  logkey watch --once --observe:   {n / observe:12,.0f} lines/s   "
                  f"ratio to baseline {base / observe:.4f}")
            print(f"  logkey watch --once, dir store:  {n / stored:12,.0f} lines/s   "
                  f"ratio to baseline {base / stored:.4f}  ({gates:,} gates at the end)")
            print(f"  goal >= 0.2 x baseline: {'met' if base / stored >= 0.2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
