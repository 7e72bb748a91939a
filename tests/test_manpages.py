"""The man pages in docs/man/ are current with the CLI (tools/manpages.py --check renders them
again from logkey.commands.cli with argparse-manpage and compares), and man(1) renders every one."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

MAN_DIR = ROOT / "docs" / "man"
PAGES = sorted(MAN_DIR.glob("*.1"))


def test_pages_are_current_with_the_cli():
    generated_with = re.search(r"\(Python (\d+\.\d+)\)", PAGES[0].read_text()).group(1)
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if running != generated_with:
        pytest.skip(f"pages are generated with Python {generated_with} (argparse's layout "
                    f"differs between versions); this is {running}")
    try:
        import argparse_manpage  # noqa: F401  (tools/manpages.py needs it)
    except ImportError:
        pytest.fail("argparse-manpage is missing: pip install '.[test]' (.ci/run does)")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "manpages.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_command_has_a_page():
    from logkey.commands.cli import build_parser
    import argparse
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    names = {p.name for p in PAGES}
    assert names == {"logkey.1", "logkey-relayclient.1"} | {f"logkey-{c}.1" for c in sub.choices}


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_man_renders_the_page(page):
    man = shutil.which("man")
    if man is None:
        pytest.skip("man is not installed (.ci/run installs man-db)")
    proc = subprocess.run([man, "--warnings", "-l", str(page)], capture_output=True,
                          env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"},
                          timeout=60)
    text = re.sub(r".\x08", "", proc.stdout.decode())       # bold and underline by overstrike
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()
    name = page.stem.upper()
    assert text.startswith(f"{name}(1)") and "\nNAME\n" in text and "\nSEE ALSO\n" in text
