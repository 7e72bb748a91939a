"""`logkey packs list` and `logkey packs test`: shipped packs, a site's local packs directory
overriding a shipped pack by name, and a pack file named on the command line, checked the way
fail2ban-regex checks a filter."""
import json
import shutil

import pytest

from conftest import NOW, ROOT, run_logkey
from logkey.parse.packfiles import load_packs
from logkey.commands.packs import source_kind

SITE_PACK = ROOT / "examples" / "patterns.d" / "qpopper-site.yaml"


def site_config(tmp_path, patterns_dir):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"patterns_dir: {patterns_dir}\n")
    return {"LOGKEY_CONFIG": str(cfg)}


def list_json(*args, env=None):
    proc = run_logkey("packs", "list", "--json", *args, env=env, check=0)
    return {d["pack"]: d for d in map(json.loads, proc.stdout.decode().splitlines())}


def test_list_shows_every_shipped_pack_with_its_sample_sources():
    shipped = load_packs()
    listed = list_json()
    assert set(listed) == set(shipped.packs)
    for name, d in listed.items():
        pack = shipped.packs[name]
        assert d["origin"] == "shipped" and not d["overrides_shipped"]
        assert d["programs"] == pack.programs
        assert [e["id"] for e in d["events"]] == [r.id for r in pack.rules + pack.untagged]
        assert d["samples"] == len(pack.samples) == sum(d["sources"].values())
        assert "other" not in d["sources"], f"{name}: a sample source of no known kind"
    assert listed["dovecot"]["sources"]["captured"] > 100


def test_list_text_names_the_columns():
    out = run_logkey("packs", "list", "--pack", "tcpserver", check=0).stdout.decode()
    assert out.startswith("tcpserver: ")
    for label in ("from:     shipped: ", "programs: tcpserver", "events:   pid-from (connect)",
                  "samples:  26 (26 captured)"):
        assert label in out, out


def test_source_kinds():
    assert source_kind("captured: dovecot 2.3.19.1 (Debian 12)") == "captured"
    assert source_kind("shared/samples/dovecot.log (published)") == "published"
    assert source_kind("https://example.org/blog") == "published"
    assert source_kind("hostile (constructed): a user name") == "constructed"
    assert source_kind("constructed from pop_log.c") == "constructed"
    assert source_kind("our mail.log") == "other"


def test_test_all_shipped_packs_pass():
    proc = run_logkey("packs", "test", check=0)
    out = proc.stdout.decode()
    total = sum(len(p.samples) for p in load_packs().packs.values())
    assert out.splitlines()[-1] == f"{total} passed, 0 failed"


def test_test_one_pack_by_name_and_unknown_name():
    out = run_logkey("packs", "test", "qpopper", check=0).stdout.decode()
    assert out.splitlines()[0].startswith("qpopper: ") and "dovecot" not in out
    proc = run_logkey("packs", "test", "no-such-pack", check=2)
    assert proc.stderr.decode().startswith("logkey: no pack named 'no-such-pack' (have: ")


def test_local_pack_directory_adds_and_overrides_by_name(tmp_path):
    local = tmp_path / "patterns.d"
    local.mkdir()
    shutil.copy(SITE_PACK, local)
    # A site's copy of the shipped dovecot pack, cut down to one sample.
    text = (ROOT / "patterns" / "dovecot.yaml").read_text()
    (local / "dovecot.yaml").write_text(text.replace(
        "description: Dovecot", "description: SITE COPY of Dovecot", 1))
    env = site_config(tmp_path, local)
    listed = list_json(env=env)
    assert listed["qpopper-site"]["origin"] == "local"
    assert not listed["qpopper-site"]["overrides_shipped"]
    assert listed["qpopper-site"]["sources"] == {"other": 1, "constructed": 3}
    assert listed["dovecot"]["origin"] == "local" and listed["dovecot"]["overrides_shipped"]
    assert listed["dovecot"]["description"].startswith("SITE COPY")
    assert listed["dovecot"]["file"] == str(local / "dovecot.yaml")
    assert listed["courier"]["origin"] == "shipped"
    out = run_logkey("packs", "test", "qpopper-site", env=env, check=0).stdout.decode()
    assert out.splitlines() == ["qpopper-site: 4/4 samples pass", "4 passed, 0 failed"]
    # Every loaded pack's samples still hold with the site pack beside them.
    run_logkey("packs", "test", env=env, check=0)


def test_pack_file_argument_stands_in_for_the_pack_of_its_name(tmp_path):
    mine = tmp_path / "qpopper.yaml"           # named like the shipped pack: replaces it
    mine.write_text(SITE_PACK.read_text())
    out = run_logkey("packs", "test", str(mine), check=0).stdout.decode()
    assert out.splitlines()[0] == "qpopper: 4/4 samples pass"
    listed = list_json("--pack", str(mine))
    assert list(listed) == ["qpopper"] and listed["qpopper"]["file"] == str(mine)
    assert listed["qpopper"]["overrides_shipped"]


def test_a_failing_sample_and_an_untested_rule_exit_1(tmp_path):
    text = SITE_PACK.read_text()
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(text.replace("expect: {kind: login, ip: 203.0.113.9, user: dave",
                                  "expect: {kind: login, ip: 203.0.113.99, user: dave"))
    proc = run_logkey("packs", "test", str(wrong), check=1)
    out = proc.stdout.decode()
    assert "FAIL wrong samples[0]: ip: expected '203.0.113.99', got '203.0.113.9'" in out
    assert out.splitlines()[-1] == "3 passed, 1 failed"
    untested = tmp_path / "untested.yaml"
    untested.write_text(text.replace(
        "samples:\n",
        "  - id: never-seen\n    kind: login\n    protocol: pop3\n"
        "    regex: '^NEVER (?P<user>[a-z]{1,20}) (?P<ip>[0-9a-fA-F.:]{2,45})$'\n"
        "samples:\n"))
    out = run_logkey("packs", "test", str(untested), check=1).stdout.decode()
    assert "FAIL untested: rule 'never-seen' matches no sample" in out
    assert out.splitlines()[-1] == "4 passed, 0 failed, 1 rule(s) without a sample"


def test_a_pack_the_lint_refuses_is_one_line_exit_2(tmp_path):
    local = tmp_path / "patterns.d"
    local.mkdir()
    bad = local / "greedy.yaml"
    bad.write_text(SITE_PACK.read_text().replace(
        r"from \([A-Za-z0-9._:-]{1,255}\) (?P<ip>", r"from .* (?P<ip>"))
    env = site_config(tmp_path, local)
    for args in (("packs", "test"), ("packs", "list"), ("packs", "test", str(bad))):
        proc = run_logkey(*args, env=env, check=2)
        err = proc.stderr.decode()
        assert err.startswith(f"logkey: {bad}: events[0] (site-log-login): "), err
        assert len(err.strip().splitlines()) == 1
    proc = run_logkey("packs", "test", str(tmp_path / "missing.yaml"), check=2)
    assert "missing.yaml: No such file or directory" in proc.stderr.decode()


# --- services: a site's own service names (cyrus.conf) and listener ports (nginx) --------------
CYRUS_SITE = ("Nov 27 10:00:00 mail cyrus/imapmail[1]: login: [198.51.100.40] alice plaintext "
              "User logged in\n"
              "Nov 27 10:00:01 mail pop36[2]: login: [2001:db8::41] bob plaintext User logged in\n"
              "Nov 27 10:00:02 mail cyrus/sieve6[3]: login: [198.51.100.42] carol PLAIN User "
              "logged in\n")


def _dry_events(tmp_path, config_text):
    import json
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(config_text)
    log = tmp_path / "mail.log"
    log.write_text(CYRUS_SITE)
    out = run_logkey("dry-run", "--json", "--config", str(cfg), "--now", NOW, str(log), check=0)
    return [json.loads(x) for x in out.stdout.decode().splitlines()][:-1]


def test_services_name_cyrus_services(tmp_path):
    assert _dry_events(tmp_path, "{}\n") == []
    got = _dry_events(tmp_path, "services: {cyrus: {imapmail: imap, pop36: pop3}}\n")
    assert [(e["ip"], e["protocol"]) for e in got] == [("198.51.100.40", "imap"),
                                                        ("2001:db8::41", "pop3")]


@pytest.mark.parametrize("value, message", [
    ("{cyrus: {sieve6: imap}}", "services.cyrus.sieve6: a sieve6 login is never a POP3/IMAP login"),
    ("{cyrus: {lmtp2: pop3}}", "services.cyrus.lmtp2: a lmtp2 login is never"),
    ("{cyrus: {imapmail: smtp}}", "services.cyrus.imapmail: must be pop3, imap or none"),
    ("{nosuchpack: {x: imap}}", "services: no pack named 'nosuchpack'"),
])
def test_services_refused(tmp_path, value, message):
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"services: {value}\n")
    out = run_logkey("dry-run", "--config", str(cfg), "--now", NOW, "/dev/null", check=None)
    assert out.returncode == 2
    assert message in out.stderr.decode()
    assert b"Traceback" not in out.stderr
