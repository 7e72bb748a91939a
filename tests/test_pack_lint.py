"""A pack that could open a false gate is refused at load, with file, entry and reason."""
import textwrap

import pytest

from logkey.parse.lint import check
from logkey.parse.packs import PackError, load_pack

GOOD = textwrap.dedent("""\
    description: test
    programs: [testd]
    events:
      - id: login
        kind: login
        protocol: pop3
        regex: '{regex}'
    samples:
      - line: 'Nov 27 10:00:00 h testd: ok 192.0.2.1'
        expect: {{kind: login, ip: 192.0.2.1}}
        source: test
    """)


def write(tmp_path, text, name="testd.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("regex, reason", [
    (r"ok (?P<ip>[0-9a-f.:]{2,45})$", "anchored at the start"),
    (r"^ok (?P<ip>[0-9a-f.:]{2,45})", "anchored at the end"),
    (r"^.*(?P<ip>[0-9a-f.:]{2,45})$", "unbounded wildcard"),
    (r"^user \S+ from (?P<ip>[0-9a-f.:]{2,45})$", "unbounded wildcard"),
    (r"^user [^,]+ from (?P<ip>[0-9a-f.:]{2,45})$", "unbounded wildcard"),
    (r"^user (?:.)+ from (?P<ip>[0-9a-f.:]{2,45})$", "wildcard group"),
    (r"^user .{3,} (?P<ip>[0-9a-f.:]{2,45})$", "unbounded wildcard"),
    (r"^ok (?P<ip>\S{2,45})$", "other than 0-9"),
    (r"^ok (?P<ip>.{2,45})$", "other than 0-9"),
    (r"^ok (?P<ip>[0-9a-z.:]{2,45})$", "other than 0-9"),
    (r"^ok (?P<ip>[^ ]{2,45})$", "other than 0-9"),
    (r"^ok (?P<ip>\w{2,45})$", "other than 0-9"),
    (r"^ok (?P<addr>[0-9.]{7,15})$", "unknown group"),
])
def test_unsafe_regex_is_refused(tmp_path, regex, reason):
    p = write(tmp_path, GOOD.format(regex=regex.replace("'", "''")))
    with pytest.raises(PackError) as e:
        load_pack(p)
    msg = str(e.value)
    assert msg.startswith(str(p) + ": events[0] (login): "), msg
    assert reason in msg
    assert "\n" not in msg


@pytest.mark.parametrize("regex", [
    r"^ok (?P<ip>[0-9a-fA-F.:]{2,45})$",
    r"^user (?P<user>[^ ]{1,64}) ok (?P<ip>[\d.]{7,15})$",
    r"^(?:user .{0,255} )?ok (?P<ip>\d{1,3}(?:\.\d{1,3}){3})$",
    r"^ok \[(?:::ffff:)?(?P<ip>[0-9a-f.:]{2,45})\](?: port=\d+)?.*$",
])
def test_safe_regex_is_accepted(tmp_path, regex):
    assert check(regex, needs_ip_group=True) is None


@pytest.mark.parametrize("text, where, reason", [
    ("description: x\nprograms: [testd]\nevents: []\nsamples: []\n", "events", "at least one"),
    ("programs: [testd]\nbogus: 1\n", "", "unknown key 'bogus'"),
    ("programs: testd\n", "programs", "list of program tags"),
    ("programs: [testd]\nevents:\n  - {id: a, kind: login, protocol: pop3, regex: '^x$'}\n"
     "samples: [{line: x, expect: none, source: t}]\n", "events[0] (a)", "needs an ip"),
    ("programs: [testd]\nevents:\n  - {id: a, kind: login, regex: '^(?P<ip>[0-9.]{7,15})$'}\n"
     "samples: [{line: x, expect: none, source: t}]\n", "events[0] (a)", "needs a protocol"),
    ("programs: [testd]\nevents:\n  - {id: a, kind: open, regex: '^x$'}\n", "events[0] (a)",
     "kind must be"),
    ("programs: [testd]\nevents:\n  - {id: a, kind: login, protocol: pop3, regex: '^(?P<ip>[0-9.]{7,15})$'}\n",
     "samples", "needs samples"),
    ("programs: [testd]\nevents:\n  - {id: a, kind: login, protocol: pop3, regex: '^(?P<ip>[0-9.]{7,15}$'}\n",
     "events[0] (a)", "does not compile"),
    ("programs: [testd\n", "line 2", "not valid YAML"),
])
def test_bad_pack_is_refused_with_one_line(tmp_path, text, where, reason):
    p = write(tmp_path, text)
    with pytest.raises(PackError) as e:
        load_pack(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: {where}" if where else f"{p}: "), msg
    assert reason in msg, msg
    assert "\n" not in msg


def test_local_pack_overrides_shipped_one_by_name(tmp_path):
    from logkey.parse.packfiles import load_packs
    regex = r"^local (?P<ip>[0-9.]{7,15})$"
    write(tmp_path, GOOD.format(regex=regex), name="qmail.yaml")
    packs = load_packs(["qmail"], tmp_path)
    assert packs.packs["qmail"].path == tmp_path / "qmail.yaml"


def test_rule_programs_limit_a_rule_to_some_tags(tmp_path):
    from logkey.parse.packfiles import load_packs
    (tmp_path / "two.yaml").write_text(
        "programs: [aaa, bbb]\n"
        "events:\n"
        "  - {id: one, kind: login, protocol: pop3, programs: [aaa],\n"
        "     regex: '^ok (?P<ip>[0-9.]{7,15})$'}\n"
        "samples:\n"
        "  - {line: 'Nov 27 10:00:00 h aaa: ok 192.0.2.1', expect: {kind: login, ip: 192.0.2.1},"
        " source: t}\n"
        "  - {line: 'Nov 27 10:00:00 h bbb: ok 192.0.2.1', expect: none, source: t}\n")
    packs = load_packs(["two"], tmp_path)
    assert [r.id for r in packs.rules_for("aaa").rules] == ["one"]
    assert packs.rules_for("bbb").rules == []
    (tmp_path / "bad.yaml").write_text(
        "programs: [aaa]\nevents:\n  - {id: one, kind: login, protocol: pop3, programs: aaa,\n"
        "     regex: '^ok (?P<ip>[0-9.]{7,15})$'}\n")
    with pytest.raises(PackError) as e:
        load_pack(tmp_path / "bad.yaml")
    assert "events[0] (one): programs must be a list" in str(e.value)


@pytest.mark.parametrize("text", [
    "a: [1, 0o17, 1:20, .inf, ~, yes, '2', x]\nb: {c: d}\n",
    "a: &x {k: v}\nb: *x\n",                    # an alias: SafeConstructor's shared object
    "a: &x {k: v}\n<<: *x\n",                   # a merge key
    "a: 2026-11-27\nb: !!binary aGk=\n",        # tags the fast path leaves to SafeConstructor
    "{a: 1, a: 2}\n",
])
def test_pack_loader_builds_what_safe_loader_builds(text):
    import yaml
    from logkey.parse.packyaml import Loader as _Loader
    assert yaml.load(text, Loader=_Loader) == yaml.load(text, Loader=yaml.SafeLoader)


@pytest.mark.parametrize("text, reason", [
    ("programs: [testd]\n? [a]\n: b\n", "found unhashable key"),
    ("programs: [testd]\nx: !foo y\n", "could not determine a constructor"),
])
def test_pack_loader_refuses_as_safe_loader_does(tmp_path, text, reason):
    p = write(tmp_path, text)
    with pytest.raises(PackError) as e:
        load_pack(p)
    assert str(e.value).startswith(f"{p}: line "), str(e.value)
    assert reason in str(e.value)


def test_shipped_packs_load_as_safe_loader_reads_them():
    import yaml
    from logkey.parse.packfiles import shipped_dir
    from logkey.parse.packyaml import Loader as _Loader
    for path in sorted(shipped_dir().glob("*.yaml")):
        text = path.read_bytes()
        assert yaml.load(text, Loader=_Loader) == yaml.load(text, Loader=yaml.SafeLoader), path
