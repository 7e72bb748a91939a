#!/usr/bin/env python3
"""Throughput of `logkey dry-run` against a plain readline loop, measured in the same run.

Generates a deterministic mixed mail log (default 1,000,000 lines: mostly Postfix, a few
percent POP/IMAP logins, logouts and failures of several servers) in a temp dir, then prints
lines/s of:
  - a plain Python binary readline loop over the file (the baseline),
  - `logkey dry-run --pack dovecot FILE` (one pack),
  - `logkey dry-run FILE` (all packs),
and the ratios. Goal (issue 2): all packs >= 0.2 x baseline, all packs <= 1.3 x one pack's time.

    python bench/throughput.py [--lines N] [--keep FILE]
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time

POSTFIX = [
    "postfix/smtpd[{pid}]: connect from unknown[{ip}]",
    "postfix/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    "postfix/smtpd[{pid}]: {qid}: client=mx{n}.example.net[{ip}]",
    "postfix/cleanup[{pid}]: {qid}: message-id=<{n}.{pid}@example.net>",
    "postfix/qmgr[812]: {qid}: from=<user{n}@example.net>, size={size}, nrcpt=1 (queue active)",
    "postfix/smtp[{pid}]: {qid}: to=<u{n}@example.org>, relay=mx.example.org[{ip}]:25, delay=0.4, "
    "delays=0.1/0/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {qid2})",
    "postfix/qmgr[812]: {qid}: removed",
    "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 <v{n}@example.net>: "
    "Relay access denied; from=<s{n}@spam.example> to=<v{n}@example.net> proto=ESMTP helo=<x>",
    "postfix/anvil[900]: statistics: max connection rate 1/60s for (smtp:{ip}) at Nov 27 10:00:00",
    "CRON[{pid}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
]
LOGINS = [
    "dovecot: pop3-login: Login: user=<u{n}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid={pid}, "
    "TLS, session=<S{n}x{pid}>",
    "dovecot: imap-login: Login: user=<u{n}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid={pid}, "
    "TLS, session=<I{n}x{pid}>",
    "dovecot: imap(u{n})<{pid}><I{n}x{pid}>: Disconnected: Logged out in=120 out=4012 deleted=0",
    "dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<u{n}>, "
    "method=PLAIN, rip={ip}, lip=192.0.2.1, session=<F{n}>",
    "pop3d: LOGIN, user=u{n}@example.net, ip=[::ffff:{ip}], port=[{pid}]",
    "imapd: LOGOUT, user=u{n}@example.net, ip=[::ffff:{ip}], headers=0, body=0, rcvd=64, "
    "sent=1200, time=3",
    "imapd: LOGIN FAILED, user=u{n}@example.net, ip=[::ffff:{ip}]",
    "cyrus/imap[{pid}]: login: client{n}.example.net [{ip}] u{n} plaintext User logged in",
    "popper[{pid}]: POP login by user \"u{n}\" at (client.example.net) {ip}",
    "vpopmail[{pid}]: vchkpw-pop3: (PLAIN) login success u{n}@example.net:{ip}",
]


def generate(path: str, lines: int, seed: int = 2) -> None:
    rnd = random.Random(seed)
    t0 = 1_795_000_000.0
    with open(path, "w", encoding="ascii") as f:
        for i in range(lines):
            t = t0 + i * 0.05
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{i % 1000000:06d}+00:00"
            template = rnd.choice(LOGINS) if rnd.random() < 0.04 else rnd.choice(POSTFIX)
            msg = template.format(
                pid=rnd.randrange(1000, 60000), n=rnd.randrange(5000),
                ip=f"198.51.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                qid=f"{rnd.getrandbits(40):010X}", qid2=f"{rnd.getrandbits(40):010X}",
                size=rnd.randrange(500, 90000))
            f.write(f"{stamp} mail {msg}\n")


def readline_loop(path: str) -> float:
    start = time.perf_counter()
    n = 0
    with open(path, "rb") as f:
        readline = f.readline
        while readline():
            n += 1
    return time.perf_counter() - start


def dry_run(path: str, *packs: str) -> float:
    args = [sys.executable, "-m", "logkey", "dry-run", "--now", "2026-11-28T00:00:00+00:00"]
    for p in packs:
        args += ["--pack", p]
    start = time.perf_counter()
    subprocess.run(args + [path], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "LOGKEY_CONFIG": os.devnull})
    return time.perf_counter() - start


def best(fn, *args, repeat=3) -> float:
    return min(fn(*args) for _ in range(repeat))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", metavar="FILE", help="write the generated log here and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or os.path.join(tmp, "mail.log")
        generate(path, args.lines)
        base = best(readline_loop, path, repeat=args.repeat)
        one = best(dry_run, path, "dovecot", repeat=args.repeat)
        every = best(dry_run, path, repeat=args.repeat)
    n = args.lines
    print(f"lines: {n}")
    print(f"readline loop (baseline):  {n / base:12,.0f} lines/s")
    print(f"logkey dry-run, one pack:  {n / one:12,.0f} lines/s   ratio to baseline {base / one:.3f}")
    print(f"logkey dry-run, all packs: {n / every:12,.0f} lines/s   ratio to baseline {base / every:.3f}")
    print(f"all packs / one pack time: {every / one:.2f}  (goal <= 1.3)")
    print(f"goal all packs >= 0.2 x baseline: {'met' if base / every >= 0.2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
