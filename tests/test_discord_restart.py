"""A clip is never posted twice and never lost across a crash between posting it and
recording the post."""

from __future__ import annotations

import sqlite3

from tests.discord_env import env, guild  # noqa: F401

__all__ = ["env", "guild"]


def forget_post(db_path, clip_id: int) -> None:
    """The state a crash leaves when it hits after Discord accepted the post but before
    crowdcut recorded it."""
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("update clips set message_id = null, posted_at = null where id = ?", [clip_id])
    conn.close()


def clip_posts(g, clip_id: int) -> list[dict]:
    return [
        m
        for m in g.emu.messages(g.channel)
        if any(
            e.get("footer", {}).get("text", "").startswith(f"crowdcut clip #{clip_id} ")
            for e in m.get("embeds", [])
        )
    ]


async def test_a_post_that_reached_discord_is_adopted_not_repeated(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "posted just before the crash")
    await guild.env.stop()
    forget_post(guild.env.settings.db_path, clip.id)
    await guild.env.start(sync=False)
    assert len(clip_posts(guild, clip.id)) == 1
    again = await guild.app.store.get_clip(clip.id)
    assert again.message_id == clip.message_id


async def test_a_clip_whose_post_never_arrived_is_posted_on_start(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "lost on the way")
    await guild.env.stop()
    forget_post(guild.env.settings.db_path, clip.id)
    guild.emu.state.delete_message(guild.emu.state.get_message(guild.channel, clip.message_id))
    await guild.env.start(sync=False)
    posts = clip_posts(guild, clip.id)
    assert len(posts) == 1 and int(posts[0]["id"]) != clip.message_id
    assert (await guild.app.store.get_clip(clip.id)).message_id == int(posts[0]["id"])
