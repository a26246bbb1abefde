"""Prompting through Discord, end to end: the unmodified discord.py client, the emulator."""

from __future__ import annotations

import struct
import zlib

from tests.discord_env import env, guild, png_bytes, until  # noqa: F401

__all__ = ["env", "guild"]


async def test_a_prompt_is_acked_in_time_then_its_status_follows_it_to_the_posted_clip(guild):
    await guild.open_project()
    it = await guild.emu.invoke_slash(
        guild.alice.id, guild.channel, "prompt", {"text": "a neon city at night", "slot": 2}
    )
    latency = await it.wait_acked(timeout=3.0)
    assert latency < 3.0
    reply = await it.wait_reply()
    assert reply["flags"] & 64  # ephemeral: only alice sees the receipt
    assert "Accepted as job #1" in reply["content"] and "ETA" in reply["content"]
    assert "position 1" in reply["content"] or "generating now" in reply["content"]
    job = await until(lambda: _with_status(guild, 1))  # posted by the outbox, once
    status_id = job.status_message_id
    status = guild.emu.get_message(guild.channel, status_id, viewer=guild.bob.id)
    assert "Job #1" in status["content"] and "neon city" in status["content"]
    clip = await until(lambda: guild._posted_clip(1), timeout=60)
    await guild.env.bot.publisher.flush()
    status = guild.emu.get_message(guild.channel, status_id)
    assert "✅ Posted" in status["content"] and str(clip.message_id) in status["content"]
    post = guild.emu.get_message(guild.channel, clip.message_id)
    assert post["attachments"][0]["filename"] == f"clip-{clip.id}.mp4"
    assert post["attachments"][0]["content_type"].startswith("video/")
    embed = post["embeds"][0]
    assert embed["title"] == f"Clip #{clip.id}" and "neon city" in embed["description"]
    assert {"name": "Slot", "value": "slot 2", "inline": True} in embed["fields"]
    assert sorted(r["emoji"]["name"] for r in post["reactions"]) == ["👍", "👎"]
    assert clip.slot == 1


async def test_a_typed_prompt_with_an_attached_image_uses_the_image(guild):
    await guild.open_project()
    since = guild.emu.revision
    await guild.emu.send_message(
        guild.bob.id,
        guild.channel,
        "!prompt a paper boat",
        attachments=[("boat.png", png_bytes(), "image/png")],
    )
    status = await guild.emu.wait_for_message(
        guild.channel, lambda m: "Job #" in m["content"], since=since, timeout=10
    )
    assert "paper boat" in status["content"]
    job = (await guild.app.store.member_jobs(guild.bob.id, active_only=False))[0]
    assert job.image_key and guild.app.media.path(job.image_key).is_file()


async def test_everyone_and_role_mentions_in_a_prompt_ping_nobody(guild):
    await guild.open_project()
    role = guild.emu.roles["Moderator"]
    clip = await guild.prompt_and_post(
        guild.alice, f"@everyone look <@&{role}> @here <@{guild.bob.id}>"
    )
    job = await until(lambda: _with_status(guild, clip.job_id))  # the outbox posts it too
    for mid in (job.status_message_id, clip.message_id):
        msg = guild.emu.get_message(guild.channel, mid)
        assert msg["mention_everyone"] is False
        assert msg["mentions"] == [] and msg["mention_roles"] == []


async def _with_status(guild, job_id: int):
    job = await guild.app.store.get_job(job_id)
    return job if job and job.status_message_id else None


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


async def test_bad_images_arriving_as_attachments_get_specific_ephemeral_refusals(guild):
    await guild.open_project()
    cases = {
        "notes.png": (b"just some text, not an image\n" * 4, "not an image"),
        "cut.png": (png_bytes((200, 200))[:300], "damaged"),
        "bomb.png": (_png_header_only(30_000, 30_000), "pixels"),
        "logo.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG"),
    }
    for filename, (data, expected) in cases.items():
        it, reply = await guild.slash(
            guild.alice,
            "prompt",
            {"text": "with a picture", "image": (filename, data, "image/png")},
        )
        assert reply["flags"] & 64, filename
        assert expected.lower() in reply["content"].lower(), (filename, reply["content"])
    assert await guild.app.store.member_jobs(guild.alice.id, active_only=False) == []


async def test_an_image_over_the_byte_limit_is_refused_before_download(tmp_path):
    from bot.frontend.harness import bot_on_emulator
    from tests.conftest import make_settings
    from tests.discord_env import Community

    async with bot_on_emulator(make_settings(tmp_path, image_max_bytes=1000)) as env:
        g = Community(env)
        await g.open_project()
        _, reply = await g.slash(
            g.alice,
            "prompt",
            {"text": "big", "image": ("big.png", png_bytes((400, 400), "blue") + b"\0" * 5000)},
        )
        assert "limit" in reply["content"] and "MB" in reply["content"]


async def test_empty_and_huge_prompts_are_refused_with_the_reason(guild):
    await guild.open_project()
    _, reply = await guild.slash(guild.alice, "prompt", {"text": "\u200b\u200b"})
    assert "no visible text" in reply["content"] and reply["flags"] & 64
    _, reply = await guild.slash(guild.alice, "prompt", {"text": "x" * 5000})
    assert "5,000 characters" in reply["content"]


async def test_prompting_without_a_project_says_how_to_start_one(guild):
    _, reply = await guild.slash(guild.alice, "prompt", {"text": "hello"})
    assert "no project here" in reply["content"] and "/project create" in reply["content"]


async def test_queue_lists_my_jobs_and_cancel_is_mine_or_a_moderators(guild):
    await guild.open_project()
    await guild.env.bot.worker.stop()  # keep the jobs waiting
    for text in ("one", "two"):
        await guild.slash(guild.alice, "prompt", {"text": f"{text} [slow]"})
    _, reply = await guild.slash(guild.alice, "queue")
    assert "#1" in reply["content"] and "#2" in reply["content"] and "position" in reply["content"]
    _, reply = await guild.slash(guild.bob, "cancel", {"job": 1})
    assert "Only the job's author or a moderator" in reply["content"] and reply["flags"] & 64
    _, reply = await guild.slash(guild.alice, "cancel", {"job": 1})
    assert "Job #1 canceled" in reply["content"]
    _, reply = await guild.slash(guild.mod, "cancel", {"job": 2})
    assert "Job #2 canceled" in reply["content"]
    assert [a.action for a in await guild.app.store.audit_log(guild.emu.guild_id)] == [
        "cancel_job",
        "open_project",
        "create_project",
    ]
    await guild.env.bot.publisher.flush()  # status messages wait for a burst of commands
    job = await guild.app.store.get_job(1)
    assert "Canceled" in guild.emu.get_message(guild.channel, job.status_message_id)["content"]


async def test_extend_continues_from_the_last_frame_of_a_clip(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "a long corridor", slot=1)
    _, reply = await guild.slash(guild.bob, "extend", {"clip": clip.id, "text": "it opens"})
    assert "Accepted as job #2" in reply["content"]
    job = await guild.app.store.get_job(2)
    assert job.extends_clip_id == clip.id and job.image_key and job.slot == 1
    _, reply = await guild.slash(guild.bob, "extend", {"clip": 999, "text": "nothing"})
    assert "no clip #999" in reply["content"]


async def test_a_clip_over_the_upload_limit_is_re_encoded_to_fit(tmp_path):
    from bot.frontend.harness import bot_on_emulator
    from bot.services.submissions import Author
    from tests.conftest import make_settings
    from tests.discord_env import Community

    async with bot_on_emulator(make_settings(tmp_path), upload_limit=60_000) as env:
        g = Community(env)
        await g.open_project()
        project = await env.app.store.current_project(env.emu.guild_id, g.channel)
        # seed 2 of this prompt makes a ~180 kB clip: over the limit, and it can be shrunk
        sub = await env.bot.submissions.submit(
            project, Author(g.alice.id, "alice"), "busy detailed fractal storm", duration=3, seed=2
        )
        clip = await until(lambda: g._posted_clip(sub.job.id), timeout=60)
        original = env.app.media.path(clip.media_key).stat().st_size
        post = env.emu.get_message(g.channel, clip.message_id)
        assert original > 60_000, "the test clip must be over the limit"
        assert post["attachments"][0]["size"] <= 60_000


async def test_a_prompt_from_another_channel_is_posted_for_voting_in_the_projects_channel(guild):
    await guild.open_project()
    general = guild.emu.channels["general"]
    it = await guild.emu.invoke_slash(guild.alice.id, general, "prompt", {"text": "elsewhere"})
    assert "Accepted" in (await it.wait_reply())["content"]
    clip = await until(lambda: guild._posted_clip(1), timeout=60)
    assert clip.channel_id == guild.channel
    job = await guild.app.store.get_job(1)
    assert job.channel_id == general  # the status message stays where she asked


async def test_a_clip_that_cannot_fit_at_all_is_still_posted_for_voting(tmp_path):
    from bot.frontend.harness import bot_on_emulator
    from tests.conftest import make_settings
    from tests.discord_env import Community

    async with bot_on_emulator(make_settings(tmp_path), upload_limit=3_000) as env:
        g = Community(env)
        await g.open_project()
        clip = await g.prompt_and_post(g.alice, "far too big for this server")
        post = env.emu.get_message(g.channel, clip.message_id)
        assert post.get("attachments") == []
        fields = {f["name"]: f["value"] for f in post["embeds"][0]["fields"]}
        assert "Too large for this server's upload limit" in fields["Video"]
        await env.bot.publisher.flush()  # the vote reactions are the outbox's next effect
        post = env.emu.get_message(g.channel, clip.message_id)
        assert sorted(r["emoji"]["name"] for r in post["reactions"]) == ["👍", "👎"]
