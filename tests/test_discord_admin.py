"""Admin paths through Discord, and `crowdcut run` / `crowdcut sync-commands` as an operator
starts them: separate processes pointed at the emulator by DISCORD_API_BASE and
DISCORD_GATEWAY_URL."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from bot.emulator import DiscordEmulator
from tests.discord_env import env, guild, until  # noqa: F401

__all__ = ["env", "guild"]

ROOT = Path(__file__).parents[1]


async def test_the_owner_syncs_commands_from_discord_and_others_cannot(guild):
    since = guild.emu.revision
    await guild.emu.send_message(guild.alice.id, guild.channel, "!sync")
    refusal = await guild.emu.wait_for_message(
        guild.channel, lambda m: m["author"].get("bot"), since=since
    )
    assert "own" in refusal["content"].lower()
    since = guild.emu.revision
    await guild.emu.send_message(guild.emu.owner.id, guild.channel, "!sync")
    done = await guild.emu.wait_for_message(
        guild.channel, lambda m: m["content"].startswith("Synced"), since=since
    )
    assert "(guild)" in done["content"]
    names = {c["name"] for c in guild.emu.commands()}
    assert {"prompt", "project", "cut", "forgetme"} <= names


async def test_moderators_read_the_audit_log(guild):
    await guild.open_project()
    _, reply = await guild.slash(guild.mod, "audit")
    assert reply["flags"] & 64
    assert "create_project" in reply["content"] and "open_project" in reply["content"]
    assert "mod\\_mira" in reply["content"]  # markdown-escaped


async def test_voting_opened_for_some_hours_closes_by_itself(guild):
    project = await guild.open_project()
    await guild.slash(guild.mod, "project", subcommand="close")
    _, reply = await guild.slash(guild.mod, "project", {"hours": 0.0001}, subcommand="open")
    assert "Voting closes" in reply["content"]
    since = guild.emu.revision
    # nothing is due until the 0.36 s have passed; then exactly this project closes
    assert await until(guild.env.bot.close_due_projects, timeout=5) == 1
    notice = await guild.emu.wait_for_message(guild.channel, since=since)
    assert "Voting time is over" in notice["content"]
    assert (await guild.app.store.get_project(project.id)).state == "closed"


def _jpeg(mode: str, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.new(mode, (80, 40), "red" if mode == "RGB" else (0, 128, 128, 0))
    im.save(buf, "JPEG", **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def _gif() -> bytes:
    frames = [Image.new("P", (40, 40), i) for i in (1, 2, 3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


async def test_awkward_but_valid_images_from_discord_are_accepted_and_cleaned(guild):
    await guild.open_project()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90°
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 7.0)})
    images = {"rotated.jpg": _jpeg("RGB", exif), "print.jpg": _jpeg("CMYK"), "loop.gif": _gif()}
    for name, data in images.items():
        _, reply = await guild.slash(
            guild.alice, "prompt", {"text": f"from {name}", "image": (name, data, "image/jpeg")}
        )
        assert "Accepted" in reply["content"], (name, reply["content"])
    jobs = await guild.app.store.member_jobs(guild.alice.id, active_only=False)
    by_prompt = {j.prompt: j for j in jobs}
    rotated = Image.open(guild.app.media.path(by_prompt["from rotated.jpg"].image_key))
    assert rotated.size == (40, 80)  # the orientation was applied
    assert not rotated.getexif() and "exif" not in rotated.info  # GPS never leaves us
    assert Image.open(guild.app.media.path(by_prompt["from print.jpg"].image_key)).mode == "RGB"


async def test_crowdcut_run_and_sync_commands_work_as_separate_processes(tmp_path):
    async with DiscordEmulator() as emu:
        env = dict(
            os.environ,
            DISCORD_API_BASE=emu.api_base,
            DISCORD_GATEWAY_URL=emu.gateway_url,
            DISCORD_TOKEN=emu.bot_token,
            DATA_DIR=str(tmp_path / "data"),
            CLIP_SECONDS="1",
            LOG_LEVEL="INFO",
        )
        cli = [sys.executable, "-m", "bot", "--env-file", str(tmp_path / "none.env")]
        sync = await asyncio.create_subprocess_exec(
            *cli,
            "sync-commands",
            "--guild",
            str(emu.guild_id),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(sync.communicate(), 60)
        assert sync.returncode == 0, out.decode()
        assert b"synced" in out and b"prompt" in out
        log = open(tmp_path / "bot.log", "wb")
        bot = await asyncio.create_subprocess_exec(
            *cli, "run", cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            await emu.wait_for_bot(timeout=60)
            mod = emu.add_member("mod", roles=["Moderator"])
            channel = emu.channels["crowdcut"]
            it = await emu.invoke_slash(
                mod.id, channel, "project", {"title": "Live"}, subcommand="create"
            )
            await it.wait_acked()
            assert "is open" in (await it.wait_reply(timeout=30))["content"]
            it = await emu.invoke_slash(mod.id, channel, "prompt", {"text": "hello world"})
            await it.wait_acked()
            assert "Accepted" in (await it.wait_reply(timeout=30))["content"]
            clip_post = await emu.wait_for_message(
                channel,
                lambda m: any(e.get("title", "").startswith("Clip #") for e in m.get("embeds", [])),
                timeout=60,
            )
            assert clip_post["attachments"][0]["filename"].endswith(".mp4")
        finally:
            bot.terminate()
            # SIGTERM closes the bot cleanly: exit status 0
            assert await asyncio.wait_for(bot.wait(), 20) == 0
        text = (tmp_path / "bot.log").read_text()
        assert "Traceback" not in text, text
