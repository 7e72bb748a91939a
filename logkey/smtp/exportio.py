"""What every export does to the system: write a file whole, run a tool or the export's
`command:`, each bounded in time, each failure one ExportError line.

Takes paths, bytes and argv from the export targets (exporttargets.py) and the Exporter
(exporter.py); gives replaced files and finished child processes, never a hung one.

Reads: the old file's mode and owner (kept on replacement; new files 0644).
Writes: the file given, by temp file, fsync and rename (logkey/atomic.py).
Runs: postmap, makemap, tcprules (TOOL_TIMEOUT) and an export's `command:` through /bin/sh -c
(COMMAND_TIMEOUT), each in its own process group, killed whole on timeout.
Trust: argv and `command` come from the code and the root-owned configuration.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess

from .. import atomic
from ..errors import LogkeyError

TOOL_TIMEOUT = 60.0        # seconds for postmap, makemap, tcprules
COMMAND_TIMEOUT = 10.0     # seconds for an export's `command`


class ExportError(LogkeyError):
    """An export could not be brought up to date; str() is one line."""


def run_bounded(argv: list[str], *, input: bytes | None = None, timeout: float,
                env: dict | None = None) -> subprocess.CompletedProcess:
    """Run argv in its own process group; on timeout the whole group is killed and
    ExportError raised. Output is captured."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else
                                subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, env=env)
    except OSError as exc:
        raise ExportError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.communicate()
        raise ExportError(f"{os.path.basename(argv[0])} still running after {timeout:.0f} s; "
                          "killed") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def run_command(command: str, timeout: float) -> str | None:
    """Run an export's `command:` (/bin/sh -c): None when it exited 0, else what it said, in
    one line (`exit N: ...`). ExportError when it could not run or ran past `timeout`."""
    out = run_bounded(["/bin/sh", "-c", command], timeout=timeout)
    if out.returncode == 0:
        return None
    return f"exit {out.returncode}: {output_tail(out.stderr) or output_tail(out.stdout)}"


def output_tail(data: bytes) -> str:
    """A tool's output as the end of one line, for an error message."""
    text = data.decode(errors="replace").strip().replace("\n", " | ")
    return text[-300:]


def find_tool(name: str) -> str:
    """The path of a program (PATH, then /usr/sbin and /usr/bin); ExportError if none."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                       if os.access(p, os.X_OK)), None)
    if path is None:
        raise ExportError(f"{name} not found (install the package that provides it)")
    return path


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data`, atomically (logkey/atomic.py). An existing file's mode and
    owner are kept; a new one is 0644."""
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise ExportError(f"{path}: {exc.strerror or exc}") from None
    keep_owner = old is not None and os.geteuid() == 0
    try:
        atomic.write_atomic(path, data, mode=(old.st_mode & 0o7777) if old else 0o644,
                            uid=old.st_uid if keep_owner else -1,
                            gid=old.st_gid if keep_owner else -1)
    except OSError as exc:
        raise ExportError(f"{path}: {exc.strerror or exc}") from None


def unlink_quietly(path: str) -> None:
    """Remove a leftover temp file, if it is there."""
    try:
        os.unlink(path)
    except OSError:
        pass
