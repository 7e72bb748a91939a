import pytest

from conftest import ROOT
from logkey import config


def test_example_config_loads_and_names_every_key():
    cfg = config.load(str(ROOT / "config.example.yaml"))
    text = (ROOT / "config.example.yaml").read_text()
    for key in config.KEYS:
        assert f"{key}:" in text, key
    assert cfg.window == 600 and cfg.line_max == 65536


@pytest.mark.parametrize("value, seconds", [(600, 600), ("600", 600), ("10m", 600), ("1h", 3600),
                                            ("2d", 172800), ("90s", 90)])
def test_durations(value, seconds):
    assert config.parse_duration(value) == seconds


@pytest.mark.parametrize("text, needle", [
    ("window: -1\n", "window: must not be negative"),
    ("window: soon\n", "window: 'soon' is not a duration"),
    ("timezone: Mars/Base\n", "timezone: unknown time zone"),
    ("line_max: 0\n", "line_max: must be a positive whole number"),
    ("packs: dovecot\n", "packs: must be a list"),
    ("- a\n", "must be a YAML mapping"),
    ("window: [\n", "not valid YAML"),
])
def test_bad_values_are_one_line(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(str(p))
    assert str(e.value).startswith(f"{p}: ") and needle in str(e.value)


def test_default_file_is_optional_for_dry_run(monkeypatch, tmp_path):
    monkeypatch.delenv("LOGKEY_CONFIG", raising=False)
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "none.yaml"))
    assert config.load(None, optional=True).path is None
    with pytest.raises(config.ConfigError):
        config.load(None)


def test_readme_has_a_section_per_pack():
    from logkey.parse.packfiles import load_packs
    readme = (ROOT / "README.md").read_text()
    for name in load_packs().packs:
        assert f"\n### {name}\n" in readme, f"README has no section for pack {name}"
        assert (ROOT / "docs" / "packs" / f"{name}.md").is_file(), name
