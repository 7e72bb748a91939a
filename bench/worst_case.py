#!/usr/bin/env python3
"""Worst-case matching time per pack: crafted near-miss lines up to the line-length cap.

For every pack, every real sample line that reaches its rules (a few per pack, logins and
failures first) is turned into crafted lines: one token of its message (a word, a number, a
delimiter) or two neighbouring ones repeated until the line is 1 KiB, 8 KiB or the cap (`line_max`, default 65536: a
longer line is skipped unread), each once as it is and once as a near miss (its last byte
changed, so a rule that reads to the end fails there, after all its backtracking). Each line
goes through what `logkey watch` does with a line (Engine.match_line: header, dispatch, the
pack's combined regex under its time limit, the known-non-event check); the slowest are
measured again (best of 5). Baseline, in the same run: a plain non-matching line of the same
program at the cap (its message all "x"), and the pack's own sample lines (median).

Printed per pack: crafted lines, median, slowest (us), slowest / plain baseline, how many hit
the matcher's time limit (50 ms of CPU, kept by timelimit.py's timer as in the watcher:
such a line gives no event and is counted), and the slowest
line's recipe. Printing only.

    python bench/worst_case.py [--cap BYTES] [--lines-per-pack N] [--tokens N] [--pack NAME]...
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from logkey.parse import headers, match, timelimit  # noqa: E402
from logkey.config import KEYS  # noqa: E402
from logkey.parse.engine import Engine  # noqa: E402
from logkey.parse.packfiles import load_packs  # noqa: E402

NOW = datetime(2026, 11, 28, tzinfo=timezone.utc)
TOKEN = re.compile(rb"[A-Za-z]+|[0-9]+|[^A-Za-z0-9]")


def reaches(packs, line: bytes) -> bool:
    header = headers.parse(line)
    if header is None:
        return False
    rules = packs.rules_for(header.program) if header.program else packs.untagged
    return bool(rules)


def base_lines(packs, pack, limit: int) -> list[bytes]:
    """Distinct real lines of the pack that reach a matcher: logins, then the rest."""
    logins, others, seen = [], [], set()
    for sample in pack.samples:
        for text in sample.get("lines") or [sample["line"]]:
            line = text.encode("utf-8", "surrogateescape")
            if line in seen or not reaches(packs, line):
                continue
            seen.add(line)
            (logins if isinstance(sample.get("expect"), dict) else others).append(line)
    picked = logins[: (limit + 1) // 2]
    return picked + others[: limit - len(picked)]


def crafted(line: bytes, lengths: list[int], tokens: int):
    """(recipe, line) near-miss variants of one real line."""
    header = headers.parse(line)
    prefix, message = line[:len(line) - len(header.message)], header.message
    spans = [(m.start(), m.end()) for m in TOKEN.finditer(message)]
    step = max(1, len(spans) // tokens)
    chosen = spans[::step][:tokens]
    pairs = [(spans[i][0], spans[i + 1][1]) for i in range(0, len(spans) - 1, step)][:tokens]
    for start, end in chosen + pairs:
        tok = message[start:end]
        for length in lengths:
            room = length - len(line) + len(tok)
            if room < len(tok):
                continue
            body = message[:start] + tok * (room // len(tok)) + message[end:]
            out = prefix + body
            recipe = f"{tok.decode('latin-1')!r} x {room // len(tok)} at {start}"
            yield recipe, out[:length]
            yield recipe + ", last byte changed", out[:length - 1] + (
                b"#" if out[length - 1:length] != b"#" else b"!")


def timed(engine, line: bytes) -> float:
    t0 = time.perf_counter()
    engine.match_line(line)
    return time.perf_counter() - t0


def best_of(engine, line: bytes, n: int = 5) -> float:
    return min(timed(engine, line) for _ in range(n))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cap", type=int, default=KEYS["line_max"][0],
                    help="longest line logkey reads (line_max; default %(default)s)")
    ap.add_argument("--lines-per-pack", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=12,
                    help="tokens (and token pairs) repeated per line")
    ap.add_argument("--pack", action="append", help="only these packs")
    args = ap.parse_args()

    packs = load_packs()
    engine = Engine(packs, headers.Clock(NOW, timezone.utc))
    lengths = sorted({min(1024, args.cap), min(8192, args.cap), args.cap})
    print(f"cap {args.cap} bytes, lengths {lengths}, match time limit "
          f"{match.MATCH_TIMEOUT * 1000:.0f} ms; times are Engine.match_line, best of 5")
    print(f"{'pack':<12} {'lines':>6} {'sample us':>10} {'plain us':>9} {'median us':>10} "
          f"{'slowest us':>11} {'x plain':>8} {'limit hits':>10}  slowest line")
    t_start = time.monotonic()
    with timelimit.cpu_limit():         # the time limit as the watcher keeps it (a CPU timer)
        measure(packs, engine, lengths, args)
    print(f"({time.monotonic() - t_start:.0f} s)")
    return 0


def measure(packs, engine, lengths, args) -> None:
    for name, pack in packs.packs.items():
        if args.pack and name not in args.pack:
            continue
        bases = base_lines(packs, pack, args.lines_per_pack)
        if not bases:
            print(f"{name:<12} no sample line reaches its rules")
            continue
        program = headers.parse(bases[0]).program or pack.programs[0]
        plain = f"Nov 27 10:00:00 mail {program}[42]: ".encode()
        plain += b"x" * (args.cap - len(plain))
        plain_us = best_of(engine, plain) * 1e6
        sample_us = statistics.median(best_of(engine, b) for b in bases) * 1e6
        results = []
        limit_hits = 0
        for base in bases:
            for recipe, line in crafted(base, lengths, args.tokens):
                before = engine.stats.timeouts
                results.append((timed(engine, line), recipe, line, base))
                limit_hits += engine.stats.timeouts - before
        results.sort(key=lambda r: r[0], reverse=True)
        top = [(best_of(engine, line), recipe, line, base) for _, recipe, line, base in results[:5]]
        top.sort(key=lambda r: r[0], reverse=True)
        slowest, recipe, line, base = top[0]
        median = statistics.median(r[0] for r in results) * 1e6
        where = headers.parse(base).message[:40].decode("latin-1")
        print(f"{name:<12} {len(results):>6} {sample_us:>10.1f} {plain_us:>9.1f} {median:>10.1f} "
              f"{slowest * 1e6:>11.1f} {slowest * 1e6 / plain_us:>8.1f} {limit_hits:>10}  "
              f"{len(line)} bytes: {recipe} in {where!r}")


if __name__ == "__main__":
    sys.exit(main())
