"""The bot a user might write first, for ``bench/discord_load.py`` to compare against.

With ``--floor`` its /prompt only acknowledges (defers) and does nothing else: the
fastest answer discord.py itself can give, a floor for the latency numbers.

Otherwise the same discord.py and the same database, but the way a quick bot is usually
written:
SQLite on the event loop with a commit per write, the status message sent before the
interaction is answered, a reaction stored as "the vote" with no memory of the other
emoji, and clips posted one by one at start-up. Not part of crowdcut.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

import discord
from discord import app_commands

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bot.discord_endpoints import point_discord_py_at  # noqa: E402

DB = Path(os.environ["DATA_DIR"]) / "crowdcut.db"
MEDIA = Path(os.environ["DATA_DIR"]) / "media"


class NaiveBot(discord.Client):
    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.members = True
        super().__init__(intents=intents)
        self.tree = app_commands.CommandTree(self)
        self.db = sqlite3.connect(DB)
        self.started = False

    async def on_ready(self) -> None:
        if self.started:
            return
        self.started = True
        rows = self.db.execute(
            "select id, channel_id, media_key from clips where message_id is null"
        ).fetchall()
        for clip_id, channel_id, key in rows:
            channel = self.get_channel(channel_id)
            path = MEDIA / key[:2] / key
            msg = await channel.send(f"Clip #{clip_id}", file=discord.File(path))
            await msg.add_reaction("👍")
            await msg.add_reaction("👎")
            self.db.execute("update clips set message_id = ? where id = ?", (msg.id, clip_id))
            self.db.commit()

    async def on_raw_reaction_add(self, p: discord.RawReactionActionEvent) -> None:
        if p.user_id == self.user.id or str(p.emoji) not in ("👍", "👎"):
            return
        row = self.db.execute(
            "select id from clips where message_id = ?", (p.message_id,)
        ).fetchone()
        if row:
            self.db.execute(
                "insert or replace into votes values (?, ?, ?, ?, ?)",
                (row[0], p.user_id, 1 if str(p.emoji) == "👍" else -1, str(p.emoji), time.time()),
            )
            self.db.commit()

    async def on_raw_reaction_remove(self, p: discord.RawReactionActionEvent) -> None:
        row = self.db.execute(
            "select id from clips where message_id = ?", (p.message_id,)
        ).fetchone()
        if row:
            self.db.execute(
                "delete from votes where clip_id = ? and voter_id = ? and emoji = ?",
                (row[0], p.user_id, str(p.emoji)),
            )
            self.db.commit()


bot = NaiveBot()


FLOOR = "--floor" in sys.argv


@bot.tree.command(name="prompt")
async def prompt(interaction: discord.Interaction, text: str) -> None:
    """Queue a clip."""
    if FLOOR:  # the floor: acknowledge and do nothing else
        await interaction.response.defer(ephemeral=True)
        return
    text = text.strip()
    project = bot.db.execute("select id from projects where state = 'open'").fetchone()
    cur = bot.db.execute(
        "insert into jobs (project_id, member_id, channel_id, prompt, state, moderation, "
        "queued_at, duration, aspect, seed, attempts) values (?,?,?,?,?,?,?,?,?,?,0)",
        (
            project[0],
            interaction.user.id,
            interaction.channel_id,
            text,
            "queued",
            "pending",
            time.time(),
            4.0,
            "16:9",
            0,
        ),
    )
    bot.db.commit()
    position = bot.db.execute("select count(*) from jobs where state = 'queued'").fetchone()[0]
    await interaction.channel.send(f"Job #{cur.lastrowid}: {text}")
    await interaction.response.send_message(f"Queued at position {position}", ephemeral=True)


if __name__ == "__main__":
    point_discord_py_at(os.environ["DISCORD_API_BASE"], os.environ["DISCORD_GATEWAY_URL"], bot)
    if "sync-commands" in sys.argv:
        import asyncio

        async def sync() -> None:
            async with bot:
                await bot.login(os.environ["DISCORD_TOKEN"])
                guild = discord.Object(int(sys.argv[sys.argv.index("--guild") + 1]))
                bot.tree.copy_global_to(guild=guild)
                await bot.tree.sync(guild=guild)

        asyncio.run(sync())
    else:
        bot.run(os.environ["DISCORD_TOKEN"], log_handler=None)
