"""The operator docs stay true: the command output docs/troubleshooting.md shows is what
logkey prints (each block after a `<!-- dry-run: ARGS -->` or `<!-- packs-test: ARGS -->`
marker is run again), every pack page names the server-side log settings and the syslog
facility its server needs, and the pages the README points to exist."""
import re
import shlex

import pytest

from conftest import ROOT, run_logkey
from logkey.parse.packfiles import load_packs

DOCS = ROOT / "docs"
MARKED = re.compile(r"<!-- (dry-run|packs-test): (.*?) -->\n```text\n(.*?)```", re.S)


def marked_blocks():
    text = (DOCS / "troubleshooting.md").read_text()
    return [(cmd, args, out) for cmd, args, out in MARKED.findall(text)]


def test_troubleshooting_has_marked_outputs():
    kinds = [cmd for cmd, _, _ in marked_blocks()]
    assert kinds.count("dry-run") == 2 and kinds.count("packs-test") == 1


@pytest.mark.parametrize("cmd, args, shown", marked_blocks(),
                         ids=lambda v: v if v in ("dry-run", "packs-test") else "")
def test_troubleshooting_output_is_what_logkey_prints(cmd, args, shown):
    argv = (["dry-run"] if cmd == "dry-run" else ["packs", "test"]) + shlex.split(args)
    proc = run_logkey(*argv)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == shown


@pytest.mark.parametrize("name", sorted(load_packs().packs))
def test_pack_page_names_the_server_settings_and_syslog_facility(name):
    text = (DOCS / "packs" / f"{name}.md").read_text()
    sections = re.split(r"^## ", text, flags=re.M)
    settings = [s for s in sections if s.lower().startswith(("settings", "server-side"))
                or "settings" in s.splitlines()[0].lower()]
    assert settings, f"docs/packs/{name}.md has no settings section"
    body = settings[0]
    assert len(body.split()) > 25, f"docs/packs/{name}.md: the settings section says too little"
    assert re.search(r"\b(mail|daemon|local[0-7]|authpriv)\.(info|notice|err)\b|stderr", body), \
        f"docs/packs/{name}.md: name the syslog facility.level (or stderr) its lines come with"


def test_migration_page_maps_grace_and_dbfile():
    text = (DOCS / "migrating-from-pop-before-smtp.md").read_text()
    for needle in ("`$grace`", "`window:`", "`$dbfile`", "/etc/postfix/pop-before-smtp",
                   "exports:", "`$out_pat`", "`max_session`", "--dumpconfig"):
        assert needle in text, needle


def test_readme_points_to_the_operator_docs():
    readme = (ROOT / "README.md").read_text()
    for page in ("docs/troubleshooting.md", "docs/migrating-from-pop-before-smtp.md",
                 "docs/packs.md", "docs/man/", "contrib/daemontools/", "contrib/runit/"):
        assert page in readme, page
        assert (ROOT / page).exists(), page
