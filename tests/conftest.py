"""Shared fixtures: real SQLite in tmp_path, the real local generator, real ffmpeg."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import App, build_app
from bot.settings import Settings


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Fast settings for tests: short clips, quick polling, tiny retry delays."""
    base: dict[str, object] = dict(
        data_dir=tmp_path / "data",
        clip_seconds=1.0,
        poll_seconds=0.05,
        retry_base_seconds=0.05,
        retry_max_seconds=0.2,
        generator_concurrency=2,
        backend_concurrency=2,
        status_edit_seconds=0.2,
        video_width=320,
        video_height=180,
        local_test_hooks=True,
    )
    base.update(overrides)
    return Settings.load(env={}, env_file=None, **base)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    a = build_app(settings)
    try:
        yield a
    finally:
        await a.aclose()
