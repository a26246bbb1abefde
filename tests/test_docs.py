"""The README tells the truth: its commands exist, its test command is what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from bot.cli import build_parser

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


GROUPS = {"project", "cut"}


def readme_table_commands(prefix: str) -> set[str]:
    """The command names in the README's tables (``/cut pin clip slot`` → ``cut pin``)."""
    names = set()
    for line in README.splitlines():
        m = re.match(rf"^\| `{re.escape(prefix)}([a-z-]+)(?: ([a-z-]+))?", line)
        if m:
            names.add(f"{m[1]} {m[2]}" if m[1] in GROUPS and m[2] else m[1])
    return names


async def bot_commands(tmp_path: Path) -> tuple[set[str], set[str]]:
    from bot.app import build_app
    from bot.frontend.client import CrowdcutBot
    from tests.conftest import make_settings

    app = build_app(make_settings(tmp_path))
    bot = CrowdcutBot(app)
    try:
        await bot.setup_hook()
        slash = set()
        for cmd in bot.tree.walk_commands():
            if hasattr(cmd, "parent") and cmd.parent is not None:
                slash.add(f"{cmd.parent.name} {cmd.name}")
            elif not hasattr(cmd, "commands"):
                slash.add(cmd.name)
        # hybrid group fallbacks ("project status", "cut preview")
        for group in ("project", "cut"):
            grp = bot.get_command(group)
            if grp is not None and getattr(grp, "fallback", None):
                slash.add(f"{group} {grp.fallback}")
        typed = {c.qualified_name for c in bot.walk_commands() if not c.hidden}
        return slash, typed
    finally:
        await bot.close()
        await app.aclose()


async def test_every_slash_command_is_in_the_readme_table_and_every_row_exists(tmp_path):
    slash, _ = await bot_commands(tmp_path)
    documented = readme_table_commands("/")
    assert documented == slash


def test_every_cli_command_is_documented():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == readme_table_commands("crowdcut ")


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```sh\n(.+?)\n```", README, flags=re.S)
    test_cmd = next(b for b in blocks if "pytest" in b)
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_the_readme_names_the_demo_command():
    blocks = re.findall(r"```sh\n(.+?)\n```", README, flags=re.S)
    assert any(b.endswith("crowdcut demo") for b in blocks)
