#!/usr/bin/env python3
"""The fixed cost of a logkey command: `logkey dry-run` of an empty file, run whole.

Every logkey command pays it (imports, the argument parser, the packs loaded and compiled);
bench/throughput.py's dry-run figures include it once per run. Prints the median and the
lowest wall time of R runs of each of:
  - `python -c pass` (the interpreter alone),
  - `logkey --version` (imports and the argument parser),
  - `logkey dry-run --pack dovecot EMPTY` (one pack),
  - `logkey dry-run EMPTY` (all packs),
the runs of the four interleaved, so a load that comes and goes falls on all of them alike.
With --bytecode (the default) the children may read and write __pycache__ as an installed
logkey does (PYTHONDONTWRITEBYTECODE is dropped from their environment); --no-bytecode keeps
the caller's environment, where a module may be compiled from source on every run.
--instructions counts each run's instructions under valgrind (callgrind) instead: one run
each, a figure the machine's load does not move (PYTHONHASHSEED is fixed).

    python bench/startup.py [--repeat R] [--no-bytecode] [--instructions]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--bytecode", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--instructions", action="store_true", help="count under valgrind")
    opts = ap.parse_args()
    env = {**os.environ, "LOGKEY_CONFIG": os.devnull, "PYTHONHASHSEED": "0"}
    if opts.bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)                # not every user's: no log-trust warning
        empty = os.path.join(tmp, "empty.log")
        open(empty, "w").close()
        dry = [sys.executable, "-m", "logkey", "dry-run", "--now", "2026-11-28T00:00:00+00:00"]
        runs = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "logkey --version": [sys.executable, "-m", "logkey", "--version"],
            "dry-run, one pack": dry + ["--pack", "dovecot", empty],
            "dry-run, all packs": dry + [empty],
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for args in runs.values():          # one run each first: __pycache__ written
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=env)
        if opts.instructions:
            counts = {name: instructions(args, env) for name, args in runs.items()}
            for name, n in counts.items():
                print(f"{name:22s} {n / 1e6:8.1f} M instructions")
            print(f"all packs / one pack: "
                  f"{counts['dry-run, all packs'] / counts['dry-run, one pack']:.2f}")
            return
        for _ in range(opts.repeat):
            for name, args in runs.items():
                t = time.perf_counter()
                subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=env)
                times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        print(f"{name:22s} median {statistics.median(ts):6.3f} s   lowest {min(ts):6.3f} s")
    one, every = (statistics.median(times[k]) for k in ("dry-run, one pack", "dry-run, all packs"))
    print(f"all packs / one pack: {every / one:.2f}")


def instructions(args: list[str], env: dict) -> int:
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
                          + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    found = re.findall(rb"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        sys.exit("valgrind run failed: " + done.stderr.decode(errors="replace")[-500:])
    return int(found[-1])


if __name__ == "__main__":
    main()
