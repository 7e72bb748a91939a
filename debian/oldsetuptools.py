"""Copy the source tree for a wheel build with a setuptools older than 77 (Debian 12 has 66).

pyproject.toml names its license the PEP 639 way (`license = "GPL-2.0-or-later"` and
`license-files`), which setuptools 77 introduced and older ones refuse. The copy's
pyproject.toml gives the same license as the table they read (`license = {text = ...}`;
COPYING is among the license files they pick up by default). Nothing else changes. Used by
debian/rules only; the tree itself is never modified. Usage: oldsetuptools.py SRC DEST
"""
import re
import shutil
import sys
from pathlib import Path

IGNORE = shutil.ignore_patterns(".git", "debian", "*.so", ".venv", ".pybuild", "build", "dist",
                                "*.egg-info", "__pycache__", ".quickstart", ".hypothesis",
                                ".pytest_cache")


def main(src: str, dest: str) -> int:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=IGNORE, symlinks=True)
    path = Path(dest) / "pyproject.toml"
    text, n = re.subn(r'(?m)^license = ("[^"\n]+")$', r"license = {text = \1}",
                      path.read_text())
    text, m = re.subn(r"(?m)^license-files = .*\n", "", text)
    if (n, m) != (1, 1):
        print(f"{path}: expected one `license = \"...\"` and one `license-files` line, "
              f"found {n} and {m}", file=sys.stderr)
        return 1
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
