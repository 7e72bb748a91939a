#!/usr/bin/env python3
"""Throughput of `logkey dry-run` against a plain readline loop, measured in the same run.

Generates two deterministic mixed mail logs (default 1,000,000 lines each: mostly Postfix
with 4% POP/IMAP logins, logouts and failures of several servers; and a login-dense one, an
IMAP-heavy store's, with 20% of them, half dovecot's) in a temp dir, then prints, per log,
lines/s of:
  - a plain Python binary readline loop over the file (the baseline),
  - `logkey dry-run --pack dovecot FILE` (one pack),
  - `logkey dry-run FILE` (all packs),
and the ratios. Goals (issues 2, 17): all packs >= 0.25 x baseline on the 4% mix, >= 0.2 on the
login-dense one, all packs <= 1.3 x one pack's time. Ratios are only meaningful on a quiet
machine.

    python bench/throughput.py [--lines N] [--repeat R] [--keep DIR]
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
    "popper[{pid}]: (v4.1.0) POP login by user \"u{n}\" at (client.example.net) {ip}",
    "vpopmail[{pid}]: vchkpw-pop3: (PLAIN) login success u{n}@example.net:{ip}",
]
# An IMAP-heavy mail store (issue 17): dovecot's logins, logouts, failed and aborted logins
# first, then courier, cyrus, qpopper and UW imapd/ipop3d, each shape as the packs' samples.
DENSE = LOGINS + [
    "dovecot: imap-login: Login: user=<u{n}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid={pid}, "
    "TLS, session=<J{n}x{pid}>",
    "dovecot: imap(u{n})<{pid}><J{n}x{pid}>: Disconnected: Logged out in=88 out=912 deleted=0 "
    "expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0",
    "dovecot: pop3(u{n})<{pid}><S{n}x{pid}>: Disconnected: Logged out top=0/0, retr=1/2000, "
    "del=0/1, size=2000",
    "dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<u{n}>, "
    "method=PLAIN, rip={ip}, lip=192.0.2.1, TLS, session=<F{n}x{pid}>",
    "dovecot: imap-login: Aborted login (no auth attempts in 0 secs): user=<>, rip={ip}, "
    "lip=192.0.2.1, session=<A{n}x{pid}>",
    "imapd: LOGIN, user=u{n}@example.net, ip=[::ffff:{ip}], port=[{pid}], protocol=IMAP",
    "in.qpopper[{pid}]: (v4.0.9) POP login by user \"u{n}\" at (client.example.net) {ip}",
    "ipop3d[{pid}]: Login user=u{n} host=client.example.net [{ip}] nmsgs=3/3",
    "imapd[{pid}]: Logout user=u{n} host=client.example.net [{ip}]",
    "imapd[{pid}]: Login failed user=u{n} auth=u{n} host=client.example.net [{ip}]",
]
MIXES = {"4%": (0.04, LOGINS), "login-dense 20%": (0.20, DENSE)}


def generate(path: str, lines: int, seed: int = 2, share: float = 0.04,
             logins: list[str] = LOGINS) -> None:
    rnd = random.Random(seed)
    t0 = 1_795_000_000.0
    with open(path, "w", encoding="ascii") as f:
        for i in range(lines):
            t = t0 + i * 0.05
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{i % 1000000:06d}+00:00"
            template = rnd.choice(logins) if rnd.random() < share else rnd.choice(POSTFIX)
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
                   stderr=subprocess.DEVNULL, env=DRY_RUN_ENV)
    return time.perf_counter() - start


# As an installed logkey runs: with its modules' bytecode (a package ships it). Where the
# caller's environment has PYTHONDONTWRITEBYTECODE (and the checkout no __pycache__), every run
# would compile each module from source: ~330 M instructions, ~0.1 s, per run (bench/startup.py).
DRY_RUN_ENV = {k: v for k, v in {**os.environ, "LOGKEY_CONFIG": os.devnull}.items()
               if k != "PYTHONDONTWRITEBYTECODE"}


def best(fn, *args, repeat=3) -> float:
    return min(fn(*args) for _ in range(repeat))


def arguments(doc: str, repeat: int) -> argparse.Namespace:
    """--lines, --repeat and --keep, as this bench and bench/catchup.py take them."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=repeat)
    ap.add_argument("--keep", metavar="DIR", help="write the generated logs here and keep them")
    args = ap.parse_args()
    print(f"lines: {args.lines} per mix")
    return args


def generated_mixes(args: argparse.Namespace, tmp: str):
    """(name, share, path) of each mix, generated in --keep's directory or `tmp`."""
    for name, (share, logins) in MIXES.items():
        path = os.path.join(args.keep or tmp, f"mail-{share:.2f}.log")
        generate(path, args.lines, share=share, logins=logins)
        yield name, share, path


def main() -> int:
    args = arguments(__doc__, repeat=3)
    n = args.lines
    with tempfile.TemporaryDirectory() as tmp:
        for name, share, path in generated_mixes(args, tmp):
            base = best(readline_loop, path, repeat=args.repeat)
            one = best(dry_run, path, "dovecot", repeat=args.repeat)
            every = best(dry_run, path, repeat=args.repeat)
            goal = 0.2 if share > 0.1 else 0.25
            print(f"mix {name} POP/IMAP lines")
            print(f"  readline loop (baseline):  {n / base:12,.0f} lines/s")
            print(f"  logkey dry-run, one pack:  {n / one:12,.0f} lines/s   "
                  f"ratio to baseline {base / one:.3f}")
            print(f"  logkey dry-run, all packs: {n / every:12,.0f} lines/s   "
                  f"ratio to baseline {base / every:.3f}")
            print(f"  all packs / one pack time: {every / one:.2f}  (goal <= 1.3)")
            print(f"  goal all packs >= {goal} x baseline: "
                  f"{'met' if base / every >= goal else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
