"""A clip is never posted twice and never lost across a crash between posting it and
recording the post: the post is an outbox effect, sent with a nonce, and a retry after a
restart first looks for its own post in the channel's whole history since the clip."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from bot.emulator import DiscordEmulator
from tests.discord_env import env, guild, until  # noqa: F401

__all__ = ["env", "guild"]

ROOT = Path(__file__).parents[1]


def crash_mid_post(db_path, clip_id: int) -> None:
    """The state a crash leaves when it hits after Discord accepted the post but before
    crowdcut recorded it: no message id, and the post effect still claimed."""
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("update clips set message_id = null, posted_at = null where id = ?", [clip_id])
        conn.execute(
            "update outbox set state = 'running', attempts = 1 where key = ?",
            [f"post_clip:{clip_id}"],
        )
    conn.close()


def clip_posts(emu, channel: int, clip_id: int) -> list[dict]:
    return [
        m
        for m in emu.messages(channel)
        if any(
            e.get("footer", {}).get("text", "").startswith(f"crowdcut clip #{clip_id} ")
            for e in m.get("embeds", [])
        )
    ]


async def test_a_post_that_reached_discord_is_adopted_not_repeated(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "posted just before the crash")
    await guild.env.stop()
    crash_mid_post(guild.env.settings.db_path, clip.id)
    guild.emu.state.nonces.clear()  # longer ago than Discord remembers a nonce
    await guild.env.start(sync=False)
    again = await until(lambda: _posted(guild, clip.id))
    assert again.message_id == clip.message_id
    assert len(clip_posts(guild.emu, guild.channel, clip.id)) == 1


async def test_a_clip_whose_post_never_arrived_is_posted_on_start(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "lost on the way")
    await guild.env.stop()
    crash_mid_post(guild.env.settings.db_path, clip.id)
    guild.emu.state.delete_message(guild.emu.state.get_message(guild.channel, clip.message_id))
    guild.emu.state.nonces.clear()
    await guild.env.start(sync=False)
    again = await until(lambda: _posted(guild, clip.id))
    posts = clip_posts(guild.emu, guild.channel, clip.id)
    assert len(posts) == 1 and int(posts[0]["id"]) != clip.message_id
    assert again.message_id == int(posts[0]["id"])


async def _posted(guild, clip_id: int):
    c = await guild.app.store.get_clip(clip_id)
    return c if c and c.message_id else None


async def test_a_bot_killed_after_discord_took_the_post_posts_it_once_after_200_messages(
    tmp_path,
):
    """SIGKILL while Discord has created the clip's post but crowdcut has no id for it
    (every answer to the upload is a 500), 200 messages since, restart: one post."""
    async with DiscordEmulator() as emu:
        environ = dict(
            os.environ,
            DISCORD_API_BASE=emu.api_base,
            DISCORD_GATEWAY_URL=emu.gateway_url,
            DISCORD_TOKEN=emu.bot_token,
            DATA_DIR=str(tmp_path / "data"),
            CLIP_SECONDS="1",
            POLL_SECONDS="0.1",
            STATUS_EDIT_SECONDS="0.2",
            RETRY_BASE_SECONDS="0.2",
            LOG_LEVEL="INFO",
        )
        cli = [sys.executable, "-m", "bot", "--env-file", str(tmp_path / "none.env")]
        sync = await asyncio.create_subprocess_exec(
            *cli, "sync-commands", "--guild", str(emu.guild_id), cwd=ROOT, env=environ
        )
        assert await asyncio.wait_for(sync.wait(), 60) == 0
        log_path = tmp_path / "bot.log"

        async def start_bot() -> asyncio.subprocess.Process:
            log = open(log_path, "ab")
            return await asyncio.create_subprocess_exec(
                *cli,
                "run",
                cwd=ROOT,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        channel = emu.channels["crowdcut"]
        mod = emu.add_member("mod", roles=["Moderator"])
        chatter = emu.add_member("chatter")
        # every upload (a clip post) is created, then answered 500: the id never arrives
        emu.fail_requests(
            "POST", r"/channels/\d+/messages$", status=500, after_handling=True, times=1000
        )
        bot = await start_bot()
        try:
            await emu.wait_for_bot(timeout=60)
            it = await emu.invoke_slash(
                mod.id, channel, "project", {"title": "Crash"}, subcommand="create"
            )
            await it.wait_reply(timeout=30)
            it = await emu.invoke_slash(mod.id, channel, "prompt", {"text": "one shot"})
            await it.wait_reply(timeout=30)
            await until(lambda: clip_posts(emu, channel, 1), timeout=90)
        finally:
            os.killpg(bot.pid, signal.SIGKILL)
            await bot.wait()
        emu.clear_faults()
        for i in range(200):
            await emu.send_message(chatter.id, channel, f"chatter {i}")
        emu.state.nonces.clear()  # the outage outlasted Discord's memory of the nonce
        bot = await start_bot()
        try:
            await emu.wait_for_bot(timeout=60)

            def settled() -> bool:
                conn = sqlite3.connect(tmp_path / "data" / "crowdcut.db")
                try:
                    row = conn.execute("select message_id from clips where id = 1").fetchone()
                finally:
                    conn.close()
                return bool(row and row[0])

            await until(settled, timeout=60)
        finally:
            bot.terminate()
            await asyncio.wait_for(bot.wait(), 20)
        posts = clip_posts(emu, channel, 1)
        assert len(posts) == 1, log_path.read_text()[-3000:]
        conn = sqlite3.connect(tmp_path / "data" / "crowdcut.db")
        (message_id,) = conn.execute("select message_id from clips where id = 1").fetchone()
        conn.close()
        assert int(posts[0]["id"]) == message_id
        assert "adopted" in log_path.read_text()
