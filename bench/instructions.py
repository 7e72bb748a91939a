#!/usr/bin/env python3
"""Instructions per line of `logkey dry-run`, counted by valgrind (callgrind): a figure that,
unlike the lines/s of throughput.py, does not depend on what else the machine is doing.

Generates throughput.py's mixes (and one without any POP/IMAP line) of N and 2N lines each
(default N 10,000), runs `logkey dry-run` on each under `valgrind --tool=callgrind`, and prints,
from the difference of the two counts (start-up and first compiles cancel out):
  - instructions per line of each mix, one pack (dovecot) and all packs,
  - instructions per covered line: (mix - no-login mix) / covered lines, all packs,
  - the same for throughput.py's readline loop over the same logs (the baseline), and each
    dry-run figure's ratio to it (as throughput.py's ratios: baseline / dry-run).

    python bench/instructions.py [--lines N] [--jobs J]

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
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402

COLLECTED = re.compile(rb"Collected : (\d+)")


READLINE = ("import sys\nwith open(sys.argv[1], 'rb') as f:\n    readline = f.readline\n"
            "    while readline():\n        pass\n")     # throughput.readline_loop's loop


def count(path: str, *packs: str) -> int:
    """Instructions of one dry-run of `path` (packs: only these; "readline": the baseline)."""
    args = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    if packs == ("readline",):
        args += ["-c", READLINE]
    else:
        args += ["-m", "logkey", "dry-run", "--now", "2026-11-28T00:00:00+00:00"]
        for p in packs:
            args += ["--pack", p]
    done = subprocess.run(args + [path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env={**os.environ, "LOGKEY_CONFIG": os.devnull, "PYTHONHASHSEED": "0"})
    found = COLLECTED.findall(done.stderr)
    if done.returncode != 0 or not found:
        sys.exit(f"valgrind run failed (exit {done.returncode}, {args[4:]}): "
                 + done.stderr.decode(errors="replace")[-500:])
    return int(found[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--jobs", type=int, default=2, help="valgrind runs at once")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind (apt-get install valgrind)")
    n = args.lines
    mixes = {"no POP/IMAP": (0.0, throughput.LOGINS), **throughput.MIXES}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, (share, logins) in mixes.items():
            for size in (n, 2 * n):
                path = os.path.join(tmp, f"mail-{share:.2f}-{size}.log")
                throughput.generate(path, size, share=share, logins=logins)
                runs[(name, size, "all")] = (path,)
                runs[(name, size, "readline")] = (path, "readline")
                if share:
                    runs[(name, size, "one")] = (path, "dovecot")
        with ThreadPoolExecutor(args.jobs) as pool:
            done = dict(zip(runs, pool.map(lambda a: count(*a), runs.values())))
        # The first n lines of the 2n-line log are the n-line log (same seed): the difference
        # is n lines' work, without start-up or the first compile of each tag's rules.
        per = {(name, kind): (done[(name, 2 * n, kind)] - done[(name, n, kind)]) / n
               for (name, size, kind) in done if size == n}
        none = per[("no POP/IMAP", "all")]
        print(f"instructions per line (lines {n}..{2 * n} of each log; valgrind callgrind); "
              "ratio: readline loop / dry-run")
        base = per[("no POP/IMAP", "readline")]
        print(f"  mix no POP/IMAP lines:    readline {base:7,.0f}; "
              f"all packs {none:9,.0f} (ratio {base / none:.3f})")
        for name, (share, logins) in throughput.MIXES.items():
            covered = (_covered(os.path.join(tmp, f"mail-{share:.2f}-{2 * n}.log"))
                       - _covered(os.path.join(tmp, f"mail-{share:.2f}-{n}.log")))
            every, one, base = per[(name, "all")], per[(name, "one")], per[(name, "readline")]
            print(f"  mix {name + ':':<20} readline {base:7,.0f}; "
                  f"one pack {one:9,.0f} (ratio {base / one:.3f}), "
                  f"all packs {every:9,.0f} (ratio {base / every:.3f}); "
                  f"all / one {every / one:.2f}")
            print(f"      per covered line (all packs, over the no-POP/IMAP mix) "
                  f"{(every - none) * n / covered:9,.0f}")
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
