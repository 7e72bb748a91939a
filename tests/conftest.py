import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-28T00:00:00+00:00"
SHARED_SAMPLES = ROOT.parent / "shared" / "samples"


def run_logkey(*args, stdin=None, env=None, check=None):
    """Run the installed console script if there is one (what users run), else the module."""
    exe = os.environ.get("LOGKEY_EXE")
    cmd = [exe] if exe else [sys.executable, "-m", "logkey"]
    full_env = {**os.environ, "LOGKEY_CONFIG": os.devnull, **(env or {})}
    proc = subprocess.run(cmd + list(args), input=stdin, capture_output=True, env=full_env,
                          cwd=ROOT, timeout=300)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


@pytest.fixture
def now():
    return datetime(2026, 11, 28, tzinfo=timezone.utc)
