#!/usr/bin/env python3
"""Start-up cost of `logkey relayclient`, which runs once per SMTP connection under tcpserver.

In one run, interleaved round-robin so drift hits every case alike, each spawned and waited
for --iterations times (mean and p50, milliseconds):
  - /bin/true                               the floor: spawning anything at all
  - python -c pass                          a bare start of the interpreter logkey runs on
  - logkey relayclient /bin/true            TCPREMOTEIP set, an open gate in a dir store,
                                            the cache current (the per-connection path)
  - python -m logkey.entry relayclient ...  the same without pip's console-script template
                                            (which imports `re`: about 6 ms here)
  - python -c 'from logkey.entry import main; main()' relayclient /bin/true
                                            no template, no runpy: logkey's own cost alone
  - the 1999 paper's Perl wrapper (4.3.2)   stat the gate file, set RELAYCLIENT, exec
and the difference of each to the bare interpreter. The goal: `logkey relayclient` within 6 ms
of its interpreter's bare start. The tcprules cdb export (`tcpserver -x`) costs nothing per
connection, so it is not measured here.

Which logkey: --exe, else $LOGKEY_EXE, else .venv/bin/logkey when it is a console script for
logkey.entry, else `python3 -m logkey.entry` from this tree; the run says which.

    python bench/relayclient.py [--iterations 300] [--exe PATH]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = "192.0.2.7"

PERL = r"""#!/usr/bin/perl
# The 1999 paper's SMTP-side wrapper (popKey, 4.3.2), minimal: is there a file named after the
# client's address whose time says it is still open? Then RELAYCLIENT. Then exec the server.
$ip = $ENV{'TCPREMOTEIP'};
@st = lstat("$ENV{'GATEDIR'}/$ip");
$ENV{'RELAYCLIENT'} = '' if $ip =~ /^[0-9.]+$/ && -f _ && $st[9] > time;
exec @ARGV;
die "exec: $!\n";
"""


def spawn_ms(argv: list[str], env: dict) -> float:
    t = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, env)
    _, status = os.waitpid(pid, 0)
    elapsed = (time.perf_counter() - t) * 1000
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} exited {os.waitstatus_to_exitcode(status)}")
    return elapsed


def pick_logkey(explicit: str | None) -> tuple[list[str], str, str]:
    """(command before "relayclient", its interpreter, how it was chosen)."""
    exe = explicit or os.environ.get("LOGKEY_EXE")
    how = "--exe" if explicit else "$LOGKEY_EXE"
    if not exe:
        venv = os.path.join(ROOT, ".venv", "bin", "logkey")
        try:
            with open(venv) as f:
                if "logkey.entry" in f.read(4096):
                    exe, how = venv, ".venv console script"
        except OSError:
            pass
    if exe:
        with open(exe) as f:
            first = f.readline()
        if not first.startswith("#!"):
            raise SystemExit(f"{exe}: not a script with a #! line")
        return [exe], first[2:].strip().split()[0], f"installed console script {exe} ({how})"
    return ([sys.executable, "-m", "logkey.entry"], sys.executable,
            f"{sys.executable} -m logkey.entry from {ROOT} (no venv install found)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--exe", help="the logkey console script to measure")
    args = ap.parse_args()

    logkey, python, how = pick_logkey(args.exe)
    tmp = tempfile.mkdtemp(prefix="logkey-bench-rc-")
    gates = os.path.join(tmp, "gates")
    os.mkdir(gates, 0o750)
    gate = os.path.join(gates, CLIENT)
    with open(gate, "w") as f:
        f.write('{"key": "%s"}\n' % CLIENT)     # the gate's record: the file is read too
    expiry = time.time() + 86400
    os.utime(gate, (expiry, expiry))
    config = os.path.join(tmp, "config.yaml")
    with open(config, "w") as f:
        f.write(f"store: {{type: dir, path: {gates}}}\n")
    perl = os.path.join(tmp, "popkey-relay.pl")
    with open(perl, "w") as f:
        f.write(PERL)
    os.chmod(perl, 0o755)

    # PYTHONDONTWRITEBYTECODE would make a source-tree run compile every module every time
    # (a venv install has its .pyc from pip): measure what a server would run.
    env = {k: v for k, v in os.environ.items()
           if k not in ("RELAYCLIENT", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    env.update(TCPREMOTEIP=CLIENT, LOGKEY_CONFIG=config, GATEDIR=gates)
    if logkey[0] == sys.executable:
        env["PYTHONPATH"] = ROOT
    os.chdir(tmp)                           # -m must find the installed logkey, not ./logkey
    check = ["/bin/sh", "-c", 'test "${RELAYCLIENT+set}" = set']
    # The first run takes the slow path (YAML) and writes the cache; then every case must relay.
    spawn_ms(logkey + ["relayclient"] + check, env)
    cases = {
        "/bin/true": ["/bin/true"],
        "python -c pass": [python, "-c", "pass"],
        "logkey relayclient": logkey + ["relayclient", "/bin/true"],
        "python -m logkey.entry": [python, "-m", "logkey.entry", "relayclient", "/bin/true"],
        "python -c 'from logkey...'": [python, "-c", "from logkey.entry import main; main()",
                                       "relayclient", "/bin/true"],
        "perl wrapper (1999)": ["/usr/bin/perl", perl, "/bin/true"],
    }
    if logkey[0] == sys.executable:
        del cases["python -m logkey.entry"]    # that is the main case already
    for name in ("logkey relayclient", "python -m logkey.entry", "python -c 'from logkey...'",
                 "perl wrapper (1999)"):
        if name in cases:
            spawn_ms(cases[name][:-1] + check, env)     # relays, or SystemExit

    times: dict[str, list[float]] = {name: [] for name in cases}
    for name, argv in cases.items():                    # warm the page cache
        spawn_ms(argv, env)
    for _ in range(args.iterations):
        for name, argv in cases.items():
            times[name].append(spawn_ms(argv, env))

    bare_mean = statistics.mean(times["python -c pass"])
    bare_p50 = statistics.median(times["python -c pass"])
    print(f"logkey: {how}")
    print(f"interpreter: {python}; {args.iterations} runs each, interleaved; "
          f"TCPREMOTEIP={CLIENT}, open gate, dir store, cache current")
    print(f"{'':28} {'mean ms':>8} {'p50 ms':>8} {'vs bare mean':>13} {'vs bare p50':>12}")
    for name, values in times.items():
        mean, p50 = statistics.mean(values), statistics.median(values)
        print(f"{name:28} {mean:8.2f} {p50:8.2f} {mean - bare_mean:+13.2f} {p50 - bare_p50:+12.2f}")
    over = statistics.median(times["logkey relayclient"]) - bare_p50
    print(f"goal (logkey relayclient within 6 ms of the bare interpreter, p50): "
          f"{'met' if over <= 6 else 'NOT met'} ({over:+.2f} ms)")
    os.chdir(ROOT)
    for root, dirs, files in os.walk(tmp, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    os.rmdir(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
