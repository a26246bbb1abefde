from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import Settings

ROOT = Path(__file__).parents[1]


def example_names() -> list[str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.M)


def test_env_example_documents_every_setting_and_nothing_else():
    assert sorted(example_names()) == sorted(Settings.env_names())


def test_every_setting_in_env_example_has_a_comment_above_it():
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            assert lines[i - 1].startswith("# "), f"{line} has no comment"


def test_env_example_values_are_the_defaults():
    loaded = Settings.load(env={}, env_file=ROOT / ".env.example")
    assert loaded == Settings()


def test_the_environment_wins_over_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("GENERATOR_CONCURRENCY=3\nPREMODERATION=true\n# c\n\nCOMMAND_PREFIX='?'\n")
    s = Settings.load(env={"GENERATOR_CONCURRENCY": "4"}, env_file=env_file)
    assert s.generator_concurrency == 4 and s.premoderation is True and s.command_prefix == "?"


@pytest.mark.parametrize(
    "name,value,expected",
    [
        (
            "GENERATOR_CONCURRENCY",
            "lots",
            "GENERATOR_CONCURRENCY='lots' is not valid: expected a whole number",
        ),
        ("GENERATOR_CONCURRENCY", "0", "must be at least 1"),
        ("PREMODERATION", "maybe", "expected true or false"),
        ("GENERATOR", "sora", "allowed values are comfyui, fal, local, replicate, runway"),
        ("GENERATORS", "comfyui,sora", "GENERATORS='comfyui,sora' is not valid"),
        ("LOG_LEVEL", "LOUD", "allowed values are DEBUG"),
        ("CLIP_SECONDS", "fast", "CLIP_SECONDS='fast' is not valid: expected a number"),
    ],
)
def test_a_bad_value_names_the_setting_and_what_is_allowed(name, value, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        Settings.load(env={name: value}, env_file=None)


def test_a_malformed_env_file_line_is_reported_with_its_line_number(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("A=1\nthis is not a setting\n")
    with pytest.raises(ConfigError, match=r"\.env:2"):
        Settings.load(env={}, env_file=env_file)


def test_every_setting_has_help_text():
    for f in dataclasses.fields(Settings):
        assert f.metadata.get("help"), f.name


def test_the_repr_of_settings_shows_no_secret():
    secrets = {
        "DISCORD_TOKEN": "discord-token-xyz-123",
        "FAL_KEY": "fal-key-xyz-123",
        "REPLICATE_API_TOKEN": "r8_token_xyz_123",
        "RUNWAYML_API_SECRET": "key_runway_xyz_123",
        "COMFYUI_TOKEN": "comfy-token-xyz-123",
    }
    settings = Settings.load(env=secrets, env_file=None)
    shown = repr(settings) + str(settings)
    for value in secrets.values():
        assert value not in shown
    assert "fal_key='[set]'" in shown and "generator='local'" in shown
