"""The one build step pyproject.toml cannot say: the optional C pre-filter (issue 17).

logkey/parse/_fastscan.c is scan.py's pre-filter in C. It is optional: where no C compiler or
Python headers are found, the build warns and goes on, and logkey uses the same pre-filter in
Python (scan.py), which gives the same answers, only slower. LOGKEY_PURE_PYTHON=1 leaves it
out on purpose (the Debian package does: it is Architecture: all; see debian/rules).
"""
import os

from setuptools import Extension, setup

extensions = [] if os.environ.get("LOGKEY_PURE_PYTHON") else [
    Extension("logkey.parse._fastscan", ["logkey/parse/_fastscan.c"], optional=True,
              extra_compile_args=["-O2"])]

setup(ext_modules=extensions)
