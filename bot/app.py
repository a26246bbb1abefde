"""Wire once: settings, store, media store, generator and services, built in one place."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.voting import VoteRules
from bot.generators import create_generators
from bot.generators.base import Generator
from bot.media.ffmpeg import resolve_ffmpeg
from bot.settings import Settings
from storage import AsyncStore, MediaStore

log = logging.getLogger(__name__)


@dataclass
class App:
    """The shared objects every service and cog is handed."""

    settings: Settings
    store: AsyncStore
    media: MediaStore
    #: the configured backends, in order of preference (``GENERATORS``)
    generators: dict[str, Generator]
    ffmpeg: str
    rules: VoteRules = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.rules = VoteRules(
            up_emoji=s.vote_up_emoji,
            down_emoji=s.vote_down_emoji,
            count_self_votes=s.count_self_votes,
            count_bot_votes=s.count_bot_votes,
        )

    @property
    def generator(self) -> Generator:
        """The first backend: the one new jobs go to unless it is down."""
        return next(iter(self.generators.values()))

    @property
    def tmp_dir(self) -> Path:
        p = self.settings.data_dir / "tmp"
        p.mkdir(parents=True, exist_ok=True)
        return p

    async def aclose(self) -> None:
        for generator in self.generators.values():
            try:
                await generator.aclose()
            except Exception:
                log.exception("closing the %s generator failed", generator.name)
        await self.store.aclose()


def build_app(
    settings: Settings,
    *,
    generator: Generator | None = None,
    generators: dict[str, Generator] | None = None,
) -> App:
    """Build the ``App`` for ``settings``. Raises ``ConfigError`` on unusable settings.

    ``generator`` or ``generators`` replace the configured backends (tests, benchmarks)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ffmpeg = resolve_ffmpeg(settings.ffmpeg_binary or None)
    store = AsyncStore(settings.db_path)
    media = MediaStore(settings.media_dir)
    swept = media.sweep_temp()
    if swept:
        log.info("removed %d half-written media files left by a crash", swept)
    if generator is not None:
        generators = {generator.name: generator}
    if generators is None:
        generators = create_generators(settings.generator_names, settings)
    return App(settings=settings, store=store, media=media, generators=generators, ffmpeg=ffmpeg)
