"""``crowdcut run`` and ``crowdcut sync-commands``: build the bot from settings and go."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord

from bot.app import App, build_app
from bot.discord_endpoints import DISCORD_API_BASE, point_discord_py_at
from bot.frontend.client import CrowdcutBot
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.web.server import WebServer

log = logging.getLogger(__name__)


def make_bot(app: App) -> CrowdcutBot:
    """A bot aimed at the configured REST base and gateway."""
    bot = CrowdcutBot(app)
    s = app.settings
    custom_base = s.discord_api_base.rstrip("/") != DISCORD_API_BASE
    point_discord_py_at(
        s.discord_api_base if custom_base else None, s.discord_gateway_url or None, bot
    )
    return bot


async def run_bot(settings: Settings) -> int:
    """Run until stopped. SIGTERM and SIGINT close the bot cleanly: jobs in flight stay
    resumable, the database is closed after the last write."""
    app = build_app(settings)
    bot = make_bot(app)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
    pages = await start_pages(settings, busy=bot.interactions_pouring_in)
    try:
        async with bot:
            bot.start_background()
            await bot.start(settings.discord_token)
    finally:
        if pages is not None:
            await pages.stop()
        await app.aclose()
    log.info("crowdcut stopped")
    return 0


async def start_pages(
    settings: Settings, *, busy: Callable[[], float] | None = None
) -> WebServer | None:
    """The project pages, served from the bot's process (``WEB_PORT=0``: none). A port
    already taken costs the pages, not the bot: it is logged and the bot runs on."""
    if not settings.web_port:
        return None
    from bot.web.server import WebServer

    pages = WebServer(settings, own_thread=True, busy=busy)
    try:
        await pages.start()
    except OSError as e:
        await pages.stop()
        log.error(
            "the project pages cannot listen on %s:%s (%s); the bot runs without them: "
            "set WEB_HOST / WEB_PORT",
            pages.host,
            pages.port,
            e.strerror,
        )
        return None
    log.info("project pages on %s (linked at %s)", pages.url, settings.public_url or "nothing")
    return pages


async def sync_commands(settings: Settings, guild_id: int | None = None) -> int:
    """Push the slash commands to Discord: globally, or to one guild (instant)."""
    app = build_app(settings)
    bot = make_bot(app)
    try:
        async with bot:
            await bot.login(settings.discord_token)  # runs setup_hook: cogs loaded
            guild = discord.Object(guild_id) if guild_id else None
            if guild:
                bot.tree.copy_global_to(guild=guild)
            synced = await bot.tree.sync(guild=guild)
            print(
                f"synced {len(synced)} commands "
                f"{'to guild ' + str(guild_id) if guild_id else 'globally'}: "
                + ", ".join(c.name for c in synced)
            )
    finally:
        await app.aclose()
    return 0
