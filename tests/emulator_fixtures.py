"""Helpers to run a real discord.py bot against :class:`bot.emulator.DiscordEmulator`.

::

    from tests.emulator_fixtures import bot_options, running_bot, running_emulator

    async def test_something():
        async with running_emulator() as emu:
            bot = commands.Bot(command_prefix="!", **bot_options())
            async with running_bot(emu, bot):
                ...

``bot_options()`` gives intents the emulator grants and a short
``guild_ready_timeout`` (discord.py otherwise waits 2 s after the last
GUILD_CREATE before ``on_ready``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import discord

from bot.discord_endpoints import point_discord_py_at, reset_discord_py_endpoints
from bot.emulator import DiscordEmulator

log = logging.getLogger(__name__)

ClientT = TypeVar("ClientT", bound=discord.Client)


def bot_options(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``discord.Client``/``commands.Bot`` suited to the emulator."""
    intents = discord.Intents.default()
    intents.message_content = True
    intents.members = True
    options: dict[str, Any] = {"intents": intents, "guild_ready_timeout": 0.05}
    options.update(overrides)
    return options


@contextlib.asynccontextmanager
async def running_emulator(**kwargs: Any) -> AsyncIterator[DiscordEmulator]:
    """Start a :class:`DiscordEmulator` on 127.0.0.1:0 and close it afterwards."""
    emu = DiscordEmulator(**kwargs)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.close()


@contextlib.asynccontextmanager
async def running_bot(
    emu: DiscordEmulator,
    bot: ClientT,
    *,
    timeout: float = 10.0,
    gateway_url: str | None = None,
) -> AsyncIterator[ClientT]:
    """Log ``bot`` in against ``emu``, connect it, wait for ``on_ready``; close it on exit.

    The gateway is discovered through ``GET /gateway/bot`` unless ``gateway_url`` is given.
    A bot that fails to start (bad token, refused intents) raises here.
    """
    point_discord_py_at(emu.api_base, gateway_url, bot)
    connect_task: asyncio.Task[None] | None = None
    try:
        await bot.login(emu.bot_token)
        connect_task = asyncio.create_task(bot.connect(reconnect=True), name="discord-bot-connect")
        ready_task = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait(
            {connect_task, ready_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready_task not in done:
            ready_task.cancel()
            if connect_task in done:
                connect_task.result()  # raises why the bot stopped
                raise RuntimeError("the bot stopped before it was ready")
            raise TimeoutError(f"the bot was not ready within {timeout}s")
        if bot.get_guild(emu.guild_id) is None:
            raise RuntimeError("the bot is ready but has no guild")
        yield bot
    finally:
        await bot.close()
        if connect_task is not None:
            try:
                await asyncio.wait_for(connect_task, 5.0)
            except (discord.ConnectionClosed, TimeoutError) as exc:
                log.debug("bot connect task ended with %r", exc)
        reset_discord_py_endpoints(bot)
