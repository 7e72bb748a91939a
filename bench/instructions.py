#!/usr/bin/env python3
"""Instructions per line of `logkey dry-run`, counted by valgrind (callgrind): a figure that,
unlike the lines/s of throughput.py, does not depend on what else the machine is doing.

Generates throughput.py's mixes (and one without any POP/IMAP line) of N lines each (default
20,000), runs `logkey dry-run` on each and on an empty file under `valgrind --tool=callgrind`,
and prints, with the start-up (the empty file's count) taken off:
  - instructions per line of each mix, one pack (dovecot) and all packs,
  - instructions per covered line: (mix - no-login mix) / covered lines, all packs.

    python bench/instructions.py [--lines N]

Needs valgrind. Slow (each run is ~50x a plain one); counts vary by well under 1% between
runs (PYTHONHASHSEED is fixed).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402

COLLECTED = re.compile(rb"Collected : (\d+)")


def count(path: str, *packs: str) -> int:
    args = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, "-m", "logkey", "dry-run", "--now", "2026-11-28T00:00:00+00:00"]
    for p in packs:
        args += ["--pack", p]
    done = subprocess.run(args + [path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env={**os.environ, "LOGKEY_CONFIG": os.devnull, "PYTHONHASHSEED": "0"})
    found = COLLECTED.findall(done.stderr)
    if done.returncode != 0 or not found:
        sys.exit("valgrind run failed: " + done.stderr.decode(errors="replace")[-500:])
    return int(found[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=20_000)
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind (apt-get install valgrind)")
    n = args.lines
    with tempfile.TemporaryDirectory() as tmp:
        empty = os.path.join(tmp, "empty.log")
        open(empty, "w").close()
        start = {(): count(empty), ("dovecot",): count(empty, "dovecot")}
        plain = os.path.join(tmp, "none.log")
        throughput.generate(plain, n, share=0.0)
        none_all = count(plain) - start[()]
        print(f"lines: {n} per mix; start-up {start[()]:,} instructions (all packs)")
        print(f"mix no POP/IMAP lines: all packs {none_all / n:,.0f} instructions/line")
        for name, (share, logins) in throughput.MIXES.items():
            path = os.path.join(tmp, f"mail-{share:.2f}.log")
            throughput.generate(path, n, share=share, logins=logins)
            covered = _covered(path)
            one = count(path, "dovecot") - start[("dovecot",)]
            every = count(path) - start[()]
            print(f"mix {name}: one pack {one / n:,.0f}, all packs {every / n:,.0f} "
                  f"instructions/line; {covered} covered lines, "
                  f"{(every - none_all) / covered:,.0f} instructions per covered line")
    return 0


def _covered(path: str) -> int:
    """Lines whose program tag a pack covers (throughput's LOGINS/DENSE templates)."""
    postfix_tags = {t.split(":")[0].split("[")[0] for t in throughput.POSTFIX}
    with open(path, "rb") as f:
        return sum(1 for line in f
                   if line.split(b" ", 3)[2].split(b":")[0].split(b"[")[0].decode()
                   not in postfix_tags)


if __name__ == "__main__":
    sys.exit(main())
