#!/usr/bin/env python3
"""pygtail 0.14's defects (issue 3), each reproduced in a temp dir, next to the same scenario
through logkey's own follower (logkey.sources.follow.Follower). One line per defect.

Installs nothing: with pygtail importable (`pip install pygtail==0.14.0`, by hand) both sides
run; without it only logkey's side does.

    python bench/pygtail_defects.py [--lines N]
"""
from __future__ import annotations

import argparse
import locale
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from logkey.sources.follow import Follower  # noqa: E402

try:
    import pygtail
    from pygtail import Pygtail
except ImportError:
    pygtail = Pygtail = None

RECENT = lambda line: 4e9       # noqa: E731 -- logkey's first attach starts at line 1


def append(path, data: bytes):
    with open(path, "ab") as f:
        f.write(data)


def follower(d, path):
    return Follower([path], os.path.join(d, "state"), line_time=RECENT)


def texts(lines):
    return [line.data.decode("utf-8", "replace") if line.data is not None else None
            for line in lines]


def pyg_lines(p):
    return [line.rstrip("\n") for line in p.readlines()]


# --- 1. one invalid UTF-8 byte ------------------------------------------------------------------
def invalid_utf8_pygtail(d):
    path = os.path.join(d, "mail.log")
    append(path, b"login 1\nbad \xff byte\nlogin 2\n")
    errors = 0
    for attempt in range(3):            # three later runs, a new line appended before each
        append(path, b"login %d\n" % (attempt + 3))
        try:
            Pygtail(path).readlines()
        except UnicodeDecodeError:
            errors += 1
    return errors == 3, "3 of 3 reads raised UnicodeDecodeError (encoding %s); nothing after " \
        "the byte is ever read" % locale.getpreferredencoding() if errors == 3 else \
        "%d of 3 reads raised" % errors


def invalid_utf8_logkey(d):
    path = os.path.join(d, "mail.log")
    append(path, b"login 1\nbad \xff byte\nlogin 2\n")
    f = follower(d, path)
    got = f.read()
    append(path, b"login 3\n")
    got += f.read()
    return len(got) == 4, "all 4 lines, the bad one as bytes %r" % got[1].data


# --- 2. copytruncate in a running instance -------------------------------------------------------
def copytruncate(path):
    shutil.copyfile(path, path + ".1")
    os.truncate(path, 0)


def copytruncate_pygtail(d):
    path = os.path.join(d, "mail.log")
    append(path, b"login 1\nlogin 2\n")
    p = Pygtail(path, copytruncate=True)
    seen = pyg_lines(p)
    append(path, b"login 3 (just before rotation)\n")
    copytruncate(path)
    append(path, b"login 4 (new file)\n")
    seen += pyg_lines(p)
    append(path, b"login 5 (new file, now longer than the old one)\n")
    seen += pyg_lines(p)
    missed = [w for w in ("login 3", "login 4", "login 5") if not any(s.startswith(w) for s in seen)]
    return bool(missed), "missed %s; read %r" % (", ".join(missed) or "nothing", seen[2:])


def copytruncate_logkey(d):
    path = os.path.join(d, "mail.log")
    append(path, b"login 1\nlogin 2\n")
    f = follower(d, path)
    seen = texts(f.read())
    append(path, b"login 3 (just before rotation)\n")
    copytruncate(path)
    append(path, b"login 4 (new file)\n")
    seen += texts(f.read())
    append(path, b"login 5 (new file, now longer than the old one)\n")
    seen += texts(f.read())
    missed = [w for w in ("login 3", "login 4", "login 5") if not any(s.startswith(w) for s in seen)]
    return not missed, "read %r" % seen[2:]


# --- 3. offset file rewritten in place --------------------------------------------------------------
# A crash between the truncation and the write is a window of microseconds; a full disk (or a
# file size limit) makes the same state deterministic: the write after the truncation fails.
SAVE_FAILS = r"""
import resource, signal, sys
sys.path.insert(0, sys.argv[3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
which, path = sys.argv[1], sys.argv[2]
if which == "pygtail":
    from pygtail import Pygtail
    p = Pygtail(path, offset_file=path + ".offset")
    while next(p, None) is not None:
        pass
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))    # the disk is full from now on
    p.update_offset_file()
else:
    from logkey.sources.follow import Follower
    f = Follower([path], path + ".state", line_time=lambda line: 4e9)
    f.read()
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    f.commit()
"""


def save_fails(d, which):
    path = os.path.join(d, "mail.log")
    append(path, b"".join(b"login %d\n" % i for i in range(1000)))
    if which == "pygtail":
        p = Pygtail(path, offset_file=path + ".offset")
        p.readlines()                   # a first run: offset saved at the end
    else:
        f = Follower([path], path + ".state", line_time=RECENT)
        f.read()
        f.commit()
        f.close()
    append(path, b"login 1000\n")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    proc = subprocess.run([sys.executable, "-c", SAVE_FAILS, which, path, root],
                          capture_output=True, timeout=60)
    failed = proc.returncode != 0
    if which == "pygtail":
        size = os.path.getsize(path + ".offset")
        again = len(Pygtail(path, offset_file=path + ".offset").readlines())
        return again > 1, "save %s, offset file left %d bytes, next run re-read %d lines" % (
            "failed" if failed else "succeeded", size, again)
    f = Follower([path], path + ".state", line_time=RECENT)
    again = len(f.read())
    return again <= 1, "save %s, old state kept, next run read %d line(s) (the one not committed)" % (
        "failed" if failed else "succeeded", again)


# --- 4. between rename and create ----------------------------------------------------------------
def missing_pygtail(d):
    path = os.path.join(d, "mail.log")
    append(path, b"login 1\n")
    p = Pygtail(path)
    p.readlines()
    append(path, b"login 2\n")
    os.rename(path, path + ".1")
    raised = []
    try:
        p.readlines()                   # the running instance
    except FileNotFoundError:
        raised.append("running instance")
    try:
        Pygtail(path).readlines()       # the next run (cron)
    except FileNotFoundError:
        raised.append("new instance")
    return bool(raised), "FileNotFoundError in: %s" % (", ".join(raised) or "none")


def missing_logkey(d):
    path = os.path.join(d, "mail.log")
    append(path, b"login 1\n")
    f = follower(d, path)
    f.read()
    append(path, b"login 2\n")
    os.rename(path, path + ".1")
    got = texts(f.read())
    append(path, b"login 3\n")
    got += texts(f.read())
    return got == ["login 2", "login 3"], "waited; read %r" % got


# --- 5. cost per line -------------------------------------------------------------------------------
def cost(d, which, n):
    path = os.path.join(d, "mail.log")
    line = b"Nov 27 10:00:00 mail dovecot: pop3-login: Login: user=<u>, method=PLAIN, rip=192.0.2.1\n"
    append(path, line * n)
    t0 = time.perf_counter()
    if which == "pygtail":
        got = len(Pygtail(path).readlines())
    else:
        f = follower(d, path)
        got = 0
        while True:
            k = len(f.read())
            if not k:
                break
            got += k
    us = (time.perf_counter() - t0) / max(got, 1) * 1e6
    return us, got


def run(name, fn, *args):
    with tempfile.TemporaryDirectory() as d:
        try:
            return fn(d, *args)
        except Exception as e:          # a defect may show as any exception
            return None, "%s: %s" % (type(e).__name__, e)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000, help="lines for the cost per line")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    sys.unraisablehook = lambda unraisable: None     # pygtail's __del__ on a missing file
    if Pygtail is None:
        print("pygtail not importable: only logkey's side runs (pip install pygtail==0.14.0)")
    else:
        print("pygtail %s" % pygtail.__version__)
    cases = [
        ("1 invalid UTF-8 byte", invalid_utf8_pygtail, invalid_utf8_logkey, ()),
        ("2 copytruncate while running", copytruncate_pygtail, copytruncate_logkey, ()),
        ("3 offset save fails after truncation", save_fails, save_fails, None),
        ("4 read between rename and create", missing_pygtail, missing_logkey, ()),
    ]
    for name, pyg, lk, extra in cases:
        pargs, largs = (("pygtail",), ("logkey",)) if extra is None else ((), ())
        if Pygtail is not None:
            hit, why = run(name, pyg, *pargs)
            p_text = "%s (%s)" % ("REPRODUCED" if hit else "not reproduced", why)
        else:
            p_text = "not run"
        ok, why = run(name, lk, *largs)
        print("%s: pygtail %s | logkey %s (%s)" % (name, p_text, "ok" if ok else "FAILS", why))
    lk_us, lk_n = run("cost", cost, "logkey", args.lines)
    if Pygtail is not None:
        p_us, p_n = run("cost", cost, "pygtail", args.lines)
        p_text = "%.2f us/line (%s lines)" % (p_us, p_n) if p_us is not None else p_n
    else:
        p_text = "not run"
    print("5 cost per line: pygtail %s | logkey %.2f us/line (%d lines)" % (p_text, lk_us, lk_n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
