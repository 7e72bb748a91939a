"""debian/: what can be checked without building the package (.ci/debian-package builds it
with dpkg-buildpackage, runs lintian, and installs, upgrades and purges it on Debian 12 and 13).

The changelog follows the one version in logkey/__init__.py; debian/control depends on
Debian's package for every requirement in pyproject.toml, with a lower bound no older than
pyproject's; inotify_simple, which Debian lacks, is not required; the sysusers and tmpfiles
files are contrib/systemd's own; the unit rewrite in debian/rules matches the shipped units;
debian/oldsetuptools.py still finds the two license lines it rewrites for Debian 12; and the
package builds the C parts and requires them (Architecture: any)."""
import re
import subprocess
import sys

from conftest import ROOT
from logkey import __version__

DEBIAN = ROOT / "debian"
# pyproject name -> Debian binary package
DEBIAN_NAME = {"regex": "python3-regex", "pyyaml": "python3-yaml", "redis": "python3-redis",
               "prometheus-client": "python3-prometheus-client"}


def control_fields(text: str) -> dict:
    fields, key = {}, None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def binary_stanza() -> dict:
    stanzas = (DEBIAN / "control").read_text().split("\n\n")
    return control_fields(next(s for s in stanzas if s.startswith("Package: logkey")))


def relations(value: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        m = re.fullmatch(r"([a-z0-9.+-]+)(?: \(>= ([^)]+)\))?", part)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def pyproject_dependencies(extra: str | None = None) -> dict:
    """The requirements (or those of the optional extra `extra`) with their lower bounds."""
    text = (ROOT / "pyproject.toml").read_text()
    block = (re.search(r"(?ms)^dependencies = \[(.*?)^\]", text).group(1) if extra is None
             else re.search(rf"(?m)^{extra} = \[(.*)\]$", text).group(1))
    deps = {}
    for name, bound in re.findall(r'"([A-Za-z0-9_.-]+)>=([^"]+)"', block):
        deps[name.lower().replace("_", "-")] = bound
    return deps


def bound_covers(debian: str | None, python: str, name: str) -> bool:
    """The Debian lower bound asks for at least pyproject's version. python3-regex is
    versioned 0.1.YYYYMMDD for regex YYYY.M.D."""
    if debian is None:
        return False
    if name == "regex":
        y, m, d = map(int, python.split("."))
        return debian.removeprefix("0.1.") >= f"{y:04}{m:02}{d:02}"
    return tuple(map(int, debian.split("."))) >= tuple(map(int, python.split(".")))


def test_the_changelog_follows_the_version():
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    m = re.fullmatch(r"logkey \(([^)]+)\) \w+; urgency=\w+", first)
    assert m, first
    assert m.group(1) == __version__, "add a debian/changelog entry for the new version (dch -v)"
    assert (DEBIAN / "source" / "format").read_text().strip() == "3.0 (native)"


def test_every_requirement_is_a_debian_package():
    # only the Redis store needs redis: an extra (logkey[redis]), not a requirement
    assert "redis" not in pyproject_dependencies() and "redis" in pyproject_dependencies("redis")
    deps = {**pyproject_dependencies(), **pyproject_dependencies("redis")}
    assert "inotify-simple" not in deps                  # not in Debian: logkey/inotify.py
    assert set(deps) == set(DEBIAN_NAME), "a new requirement needs its Debian package here"
    stanza = binary_stanza()
    depends, recommends = relations(stanza["Depends"]), relations(stanza["Recommends"])
    for name, bound in deps.items():
        pkg = DEBIAN_NAME[name]
        assert pkg in depends or pkg in recommends, pkg
        assert bound_covers(depends.get(pkg) or recommends.get(pkg), bound, name), pkg
    # only the Redis store needs redis, and it says which package is missing
    assert "python3-redis" in recommends and "python3-redis" not in depends


def test_account_and_directories_are_contribs_files():
    for kind in ("sysusers", "tmpfiles"):
        link = DEBIAN / f"logkey.{kind}"
        assert link.is_symlink() and link.resolve() == ROOT / "contrib" / "systemd" / f"logkey.{kind}"


def test_the_units_rewrite_matches_the_shipped_units():
    rules = (DEBIAN / "rules").read_text()
    assert "s,^ExecStart=/usr/local/bin/logkey ,ExecStart=/usr/bin/logkey ," in rules
    assert "dh_installsystemd --no-enable" in rules        # installed disabled
    for unit in ("logkey-watch", "logkey-policy"):
        assert f"{unit}" in re.search(r"^UNITS = (.*)$", rules, re.M).group(1)
        text = (ROOT / "contrib" / "systemd" / f"{unit}.service").read_text()
        verb = unit.removeprefix("logkey-")
        assert f"\nExecStart=/usr/local/bin/logkey {verb} --config /etc/logkey/config.yaml\n" in text


def test_oldsetuptools_rewrites_only_the_license(tmp_path):
    dest = tmp_path / "src"
    proc = subprocess.run([sys.executable, str(DEBIAN / "oldsetuptools.py"), str(ROOT), str(dest)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    new = (dest / "pyproject.toml").read_text().splitlines()
    old = (ROOT / "pyproject.toml").read_text().splitlines()
    assert [line for line in old if line not in new] == \
        ['license = "GPL-2.0-or-later"', 'license-files = ["COPYING"]']
    assert [line for line in new if line not in old] == ['license = {text = "GPL-2.0-or-later"}']
    assert not (dest / "debian").exists() and not (dest / ".git").exists()
    assert (dest / "bin" / "logkey").exists() and (dest / "COPYING").exists()


def test_the_package_builds_its_c_parts_and_requires_them(tmp_path):
    """Architecture: any with the C parts built and required (LOGKEY_REQUIRE_C): a package
    whose compile failed must not build, or it would run the slower fallback unseen."""
    stanza = binary_stanza()
    assert stanza["Architecture"] == "any"
    assert "${shlibs:Depends}" in stanza["Depends"]
    source = control_fields((DEBIAN / "control").read_text().split("\n\n")[0])
    assert "python3-all-dev" in relations(source["Build-Depends"])
    rules = (DEBIAN / "rules").read_text()
    assert re.search(r"(?m)^export LOGKEY_REQUIRE_C = 1$", rules)
    assert "LOGKEY_PURE_PYTHON" not in rules
    # setup.py run against a stand-in setuptools (a venv of Python 3.12 or later has none)
    probe = ("import sys, types; st = types.ModuleType('setuptools'); "
             "st.Extension = lambda name, sources, optional, **kw: (name, optional); "
             "st.setup = lambda **kw: print(sorted(kw['ext_modules'])); "
             "sys.modules['setuptools'] = st; exec(open('setup.py').read())")
    for env, optional in (({}, True), ({"LOGKEY_REQUIRE_C": "1"}, False)):
        out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                             text=True, env={"PATH": "/usr/bin:/bin", **env}, check=True).stdout
        assert out.strip() == str([("logkey.parse._fastscan", optional),
                                   ("logkey.smtp.policy._request", optional)])
