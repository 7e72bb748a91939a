"""The one build step pyproject.toml cannot say: the optional C parts (issue 17).

logkey/parse/_fastscan.c is scan.py's pre-filter in C; logkey/smtp/policy/_request.c is
protocol.py's per-request check. Both are optional: where no C compiler or Python headers are
found, the build warns and goes on, and logkey uses the same code in Python, which gives the
same answers, only slower. LOGKEY_PURE_PYTHON=1 leaves them out on purpose;
LOGKEY_REQUIRE_C=1 makes them required, so a failed compile fails the build (the Debian
package's build does: debian/rules).
"""
import os

from setuptools import Extension, setup

extensions = [] if os.environ.get("LOGKEY_PURE_PYTHON") else [
    Extension(name, [source], optional=not os.environ.get("LOGKEY_REQUIRE_C"),
              extra_compile_args=["-O2"])
    for name, source in (("logkey.parse._fastscan", "logkey/parse/_fastscan.c"),
                         ("logkey.smtp.policy._request", "logkey/smtp/policy/_request.c"))]

setup(ext_modules=extensions)
