"""Run the real ``CrowdcutBot`` against the Discord emulator, in this process.

Used by ``crowdcut demo``, the end-to-end tests and ``bench/discord_load.py``: the
unmodified discord.py client talks HTTP and WebSocket to the emulator on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.app import App, build_app
from bot.discord_endpoints import reset_discord_py_endpoints
from bot.emulator import DiscordEmulator
from bot.frontend.client import CrowdcutBot
from bot.frontend.runner import make_bot
from bot.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class BotOnEmulator:
    """A running bot, its app and the emulator it is connected to."""

    emu: DiscordEmulator
    settings: Settings
    app: App | None = None
    bot: CrowdcutBot | None = None
    _task: asyncio.Task[None] | None = None
    members: dict[str, Any] = field(default_factory=dict)

    @property
    def channel(self) -> int:
        return self.emu.channels["crowdcut"]

    async def start(self, *, sync: bool = True) -> CrowdcutBot:
        """Start a fresh App and bot on the same data directory (a process start)."""
        self.app = build_app(self.settings)
        self.bot = make_bot(self.app)
        await self.bot.login(self.settings.discord_token)  # runs setup_hook
        self.bot.start_background()
        self._task = asyncio.create_task(self.bot.connect(reconnect=True))
        await asyncio.wait_for(self.bot.wait_until_ready(), 30)
        await asyncio.wait_for(self.bot.background_ready.wait(), 60)
        if sync:
            await self.sync()
        return self.bot

    async def sync(self) -> None:
        """Sync the commands to every guild the emulator has (instant, like `!sync` in each).
        Call it again after ``emu.add_guild`` for a guild added while the bot runs."""
        assert self.bot is not None
        for g in self.emu.guilds:
            guild = discord.Object(g.id)
            self.bot.tree.copy_global_to(guild=guild)
            await self.bot.tree.sync(guild=guild)

    async def stop(self) -> None:
        """Stop the bot and close its app (the process ends; the emulator stays)."""
        if self.bot is not None:
            await self.bot.publisher.flush()
            await self.bot.close()
            reset_discord_py_endpoints(self.bot)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
        if self.app is not None:
            await self.app.aclose()
        self.bot = self.app = self._task = None


@contextlib.asynccontextmanager
async def bot_on_emulator(
    settings: Settings, *, upload_limit: int | None = None, start: bool = True
) -> AsyncIterator[BotOnEmulator]:
    """An emulator on 127.0.0.1:0 and crowdcut connected to it, with commands synced."""
    emu = DiscordEmulator(**({"upload_limit": upload_limit} if upload_limit else {}))
    await emu.start()
    settings = dataclasses.replace(
        settings,
        discord_api_base=emu.api_base,
        discord_gateway_url=emu.gateway_url,
        discord_token=emu.bot_token,
    )
    env = BotOnEmulator(emu=emu, settings=settings)
    try:
        if start:
            await env.start()
        yield env
    finally:
        await env.stop()
        await emu.close()
