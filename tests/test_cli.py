"""The crowdcut command as an operator uses it: doctor, demo, assemble."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bot.cli import main

ROOT = Path(__file__).parents[1]


def crowdcut(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    import os

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "bot", "--env-file", "/nonexistent.env", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_doctor_passes_on_this_machine_and_names_what_it_found(tmp_path):
    out = crowdcut("doctor", "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ffmpeg" in out.stdout and "libx264 found" in out.stdout and "PyAV" in out.stdout
    assert "DISCORD_TOKEN is empty" in out.stdout  # a warning, not a failure


def test_doctor_fails_when_ffmpeg_is_missing(tmp_path):
    out = crowdcut(
        "doctor",
        "--data-dir",
        str(tmp_path / "data"),
        env={"FFMPEG_BINARY": str(tmp_path / "no-ffmpeg")},
    )
    assert out.returncode == 1
    assert "FFMPEG_BINARY" in out.stdout and "FAIL" in out.stdout


def test_a_bad_setting_stops_start_up_naming_the_setting(tmp_path):
    out = crowdcut("run", env={"GENERATOR_CONCURRENCY": "many", "DISCORD_TOKEN": "x"})
    assert out.returncode == 2
    assert "GENERATOR_CONCURRENCY='many' is not valid: expected a whole number" in out.stderr


def test_run_without_a_token_says_where_to_put_it():
    out = crowdcut("run", env={"DISCORD_TOKEN": ""})
    assert out.returncode == 2 and "DISCORD_TOKEN is empty" in out.stderr


async def test_the_demo_runs_the_whole_session_through_discord_and_writes_a_video(tmp_path):
    from bot.demo import run_demo
    from bot.media.probe import probe

    assert await run_demo(tmp_path / "demo", members=2, seconds=8.0) == 0
    renders = tmp_path / "demo" / "data" / "renders" / "project-1"
    master = probe(renders / "master.mp4")
    assert master.has_audio and master.pix_fmt == "yuv420p" and master.duration >= 8
    manifest = json.loads((renders / "manifest.json").read_text())
    assert len(manifest["slots"]) == 2
    assert (renders / "storyboard.png").is_file()


def test_assemble_re_renders_a_projects_cut(tmp_path, capsys):
    import asyncio

    from bot.demo import run_demo

    asyncio.run(run_demo(tmp_path / "demo", direct=True, members=2, seconds=8.0))
    data = tmp_path / "demo" / "data"
    master = data / "renders" / "project-1" / "master.mp4"
    master.unlink()
    assert (
        main(
            [
                "--env-file",
                "/nonexistent.env",
                "assemble",
                "--project",
                "1",
                "--data-dir",
                str(data),
            ]
        )
        == 0
    )
    assert master.is_file() and "master:" in capsys.readouterr().out
    assert (
        main(
            [
                "--env-file",
                "/nonexistent.env",
                "assemble",
                "--project",
                "99",
                "--data-dir",
                str(data),
            ]
        )
        == 1
    )
