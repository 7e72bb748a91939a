"""`python -m build` makes a wheel and an sdist; `pipx install` of the wheel gives a working
`logkey`; the version is written in one place (logkey/__init__.py).

The build runs here, not in .ci/run, so that a developer's `pytest` checks packaging too: the
`build` package is in the `test` extra, and it builds in an isolated environment (setuptools
from the package index) from a copy of the source tree, so the checkout gets no build/ or
egg-info. pipx is Debian's (.ci/run installs it), running Debian's python3, with its home and
bin dir in a temp dir."""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser

import pytest

from conftest import ROOT
from logkey import __version__
from logkey.parse.packfiles import shipped_dir

IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                ".hypothesis", ".pytest_cache", ".quickstart", "*.pyc", "*.so",
                                ".*.relayclient.json")


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    src = tmp_path_factory.mktemp("src") / "logkey"
    shutil.copytree(ROOT, src, ignore=IGNORE, symlinks=True)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheel, = out.glob("logkey-*.whl")
    sdist, = out.glob("logkey-*.tar.gz")
    return wheel, sdist


def test_version_is_written_once():
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = {attr = "logkey.__version__"}' in pyproject
    assert __version__ not in pyproject


def test_wheel_holds_the_packs_the_command_and_the_man_pages(dists):
    wheel, _ = dists
    names = set(zipfile.ZipFile(wheel).namelist())
    # With a C compiler (as here) the wheel carries the C pre-filter and is this Python's and
    # platform's; without one, setup.py's optional extension is left out: a pure wheel.
    fast = {n for n in names if n.startswith("logkey/parse/_fastscan.") and n.endswith(".so")}
    if fast:
        assert re.fullmatch(rf"logkey-{__version__}-cp3\d+-cp3\d+-linux_\w+\.whl", wheel.name)
    else:
        assert wheel.name == f"logkey-{__version__}-py3-none-any.whl"
    packs = {p.name for p in shipped_dir().glob("*.yaml")}
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("logkey/patterns/")} == packs
    data = f"logkey-{__version__}.data"
    assert f"{data}/scripts/logkey" in names
    man = {p.name for p in (ROOT / "docs" / "man").glob("*.1")}
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith(f"{data}/data/share/man/man1/")} \
        == man
    assert not any(n.startswith(("tests/", "docs/", "contrib/")) for n in names)
    meta = Parser().parsestr(zipfile.ZipFile(wheel).read(
        f"logkey-{__version__}.dist-info/METADATA").decode())
    assert meta["Version"] == __version__
    assert meta["License-Expression"] == "GPL-2.0-or-later"


def test_sdist_holds_every_tracked_file(dists):
    _, sdist = dists
    prefix = f"logkey-{__version__}/"
    with tarfile.open(sdist) as tar:
        members = {m.name.removeprefix(prefix): m for m in tar.getmembers()}
    for must in ("tests/conftest.py", "docs/man/logkey.1", "docs/packs.md", "COPYING",
                 "contrib/daemontools/logkey-watch/run", "config.example.yaml", ".ci/run",
                 "examples/patterns.d/qpopper-site.yaml", "bin/logkey", "patterns/dovecot.yaml"):
        assert must in members, must
    assert members["contrib/daemontools/logkey-watch/run"].mode & 0o111, "run scripts stay executable"
    if not (ROOT / ".git").exists():
        return
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    missing = [f for f in tracked if f not in members and f != ".gitignore"
               and (ROOT / f).exists()]
    assert not missing, f"tracked files the sdist leaves out: {missing}"


def test_pipx_installs_a_working_logkey(dists, tmp_path):
    wheel, _ = dists
    pipx = shutil.which("pipx")
    if pipx is None:
        pytest.fail("pipx not found: .ci/run installs it (apt-get install pipx)")
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin"),
           "LOGKEY_CONFIG": os.devnull}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run([pipx, "install", str(wheel)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logkey = tmp_path / "bin" / "logkey"
    out = subprocess.run([logkey, "--version"], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out == f"logkey {__version__}\n"
    proc = subprocess.run([logkey, "packs", "test"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1].endswith(" passed, 0 failed")
    proc = subprocess.run([logkey, "dry-run", "--now", "2026-11-28T00:35:00+00:00",
                           str(ROOT / "tests" / "logs" / "mail.log")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "Events: " in proc.stdout, proc.stderr
    venv_man = tmp_path / "pipx" / "venvs" / "logkey" / "share" / "man" / "man1"
    assert (venv_man / "logkey.1").is_file()
