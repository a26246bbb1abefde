"""``crowdcut demo`` through Discord: the real bot, connected to the emulator on 127.0.0.1.

Simulated members use the same commands a person would: a moderator starts the project
with the song attached, members prompt (slash commands, and typed `!prompt` messages with
a reference image attached), one extends another's clip, everyone votes with reactions on
the posted clips, the moderator approves the cut with the button under the preview.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from bot.demo_scenario import community, reference_image, votes
from bot.frontend.harness import BotOnEmulator, bot_on_emulator
from bot.settings import Settings

log = logging.getLogger(__name__)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if not content and message.get("embeds"):
        e = message["embeds"][0]
        content = (e.get("title") or "") + " " + (e.get("description") or "")
    return content.replace("\n", " ")[:110]


async def run_discord_demo(settings: Settings, song: Path, n_members: int) -> dict[str, Any]:
    async with bot_on_emulator(settings) as env:
        return await _session(env, song, n_members)


async def _session(env: BotOnEmulator, song: Path, n_members: int) -> dict[str, Any]:
    emu, app = env.emu, env.app
    assert app is not None and env.bot is not None
    channel = env.channel
    _say(f"  Discord emulator on {emu.api_base}; the bot is connected and its commands synced")
    mod = emu.add_member("mod_mira", roles=["Moderator"])
    it = await emu.invoke_slash(
        mod.id,
        channel,
        "project",
        {"title": "Crowdcut Demo Night", "song": ("demo-song.m4a", song.read_bytes(), "audio/mp4")},
        subcommand="create",
    )
    reply = await it.wait_reply(timeout=60)
    _say(f"  mod_mira: /project create → {_text(reply)}")
    it = await emu.invoke_slash(
        mod.id,
        channel,
        "project",
        {"transition": "crossfade", "beats": 1.0, "chain": True},
        subcommand="style",
    )
    _say(f"  mod_mira: /project style crossfade, 1 beat, chain on → {_text(await it.wait_reply())}")
    credit = "“Demo Night” (92 BPM, synthesized by crowdcut, CC0)"
    it = await emu.invoke_slash(mod.id, channel, "project", {"text": credit}, subcommand="credit")
    _say(f"  mod_mira: /project credit → {_text(await it.wait_reply())}")
    project = await app.store.current_project(emu.guild_id, channel)
    assert project is not None
    n_slots = len(project.slot_plan)
    sim = community(n_members, n_slots)
    people = [emu.add_member(m.name) for m in sim]
    rounds = max(len(m.prompts) for m in sim)
    for r in range(rounds):
        for i, m in enumerate(sim):
            if r >= len(m.prompts):
                continue
            text, slot, with_image = m.prompts[r]
            who = people[i]
            if with_image:
                # the typed form: one message, the image attached
                await emu.send_message(
                    who.id,
                    channel,
                    f"!prompt {text}",
                    attachments=[(f"ref-{i}-{r}.png", reference_image(i * 100 + r), "image/png")],
                )
                _say(f"  {m.name:>10}: !prompt {text[:50]}… (+ reference image)")
            else:
                opts: dict[str, Any] = {"text": text}
                if slot is not None:
                    opts["slot"] = slot + 1
                it = await emu.invoke_slash(who.id, channel, "prompt", opts)
                latency = await it.wait_acked()
                answer = await it.wait_reply(timeout=30)
                _say(
                    f"  {m.name:>10}: /prompt {text[:40]}… → {_text(answer)} "
                    f"(acked in {latency * 1000:.0f} ms)"
                )
    # a refusal, as a member meets it: ephemeral, specific
    it = await emu.invoke_slash(people[0].id, channel, "prompt", {"text": "\u200b \u200b"})
    _say(f"  {sim[0].name:>10}: /prompt (invisible text) → {_text(await it.wait_reply())}")
    await _wait_for_clips(env)
    clips = await app.store.project_clips(project.id)
    first = clips[0]
    it = await emu.invoke_slash(
        people[1].id,
        channel,
        "extend",
        {"clip": first.id, "text": "the same shot continues into a sunrise"},
    )
    _say(f"  {sim[1].name:>10}: /extend {first.id} → {_text(await it.wait_reply(timeout=30))}")
    await _wait_for_clips(env)
    clips = await app.store.project_clips(project.id)
    _say(f"  {len(clips)} clips posted in #crowdcut, each with its 👍 / 👎")
    voters = [p.id for p in people] + [mod.id]
    cast = votes([c.id for c in clips], {c.id: c.member_id for c in clips}, voters)
    by_id = {c.id: c for c in clips}
    for voter, clip_id, emoji in cast:
        await emu.add_reaction(voter, channel, by_id[clip_id].message_id, emoji)
    await asyncio.sleep(0.5)
    tallies = await app.store.vote_tallies(project.id)
    _say(
        f"  {len(cast)} reactions from {len(voters)} members → "
        f"{sum(u + d for u, d in tallies.values())} votes counted (self-votes don't count)"
    )
    it = await emu.invoke_slash(mod.id, channel, "leaderboard")
    board = await it.wait_reply(timeout=30)
    _say(f"  /leaderboard → {_text(board)}…")
    it = await emu.invoke_slash(mod.id, channel, "project", subcommand="close")
    _say(f"  mod_mira: /project close → {_text(await it.wait_reply(timeout=60))}")
    started = time.monotonic()
    it = await emu.invoke_slash(mod.id, channel, "cut", subcommand="preview")
    _say(f"  mod_mira: /cut preview → {_text(await it.wait_reply(timeout=30))}")
    # the render is queued work: its post comes when it is done
    preview = await emu.wait_for_message(
        channel, lambda m: m["content"].startswith("🎬 Preview of cut #"), timeout=300
    )
    _say(
        f"  the preview is posted → {_text(preview)} "
        f"({len(preview.get('attachments', []))} files, {time.monotonic() - started:.0f} s)"
    )
    approve_id = next(
        c["custom_id"]
        for row in preview.get("components", [])
        for c in row.get("components", [])
        if ":approve:" in c.get("custom_id", "")
    )
    it = await emu.click_button(mod.id, int(preview["id"]), approve_id)
    await it.wait_acked()
    final = await emu.wait_for_message(
        channel,
        lambda m: any(e.get("title", "").startswith("🎉") for e in m.get("embeds", [])),
        timeout=120,
    )
    _say(f"  mod_mira clicks “Approve this cut” → {_text(final)}")
    await env.bot.publisher.flush()
    # the approval is recorded right after the video is posted (it carries the message id)
    deadline = time.monotonic() + 30
    while await app.store.latest_cut(project.id, "approved") is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the approval was not recorded")
        await asyncio.sleep(0.05)
    project = await app.store.get_project(project.id)
    assert project is not None and project.state == "approved"
    # the approved cut's files, out of the media store under the names people expect
    cut = await app.store.latest_cut(project.id, "approved")
    assert cut is not None
    out_dir = app.settings.renders_dir / f"project-{project.id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, name in ((cut.master_key, "master.mp4"), (cut.preview_key, "preview.mp4"),
                      (cut.manifest_key, "manifest.json"),
                      (cut.storyboard_key, "storyboard.png")):  # fmt: skip
        if key:
            await asyncio.to_thread(shutil.copyfile, app.media.path(key), out_dir / name)
    return {
        "video": out_dir / "master.mp4",
        "preview": out_dir / "preview.mp4",
        "manifest": out_dir / "manifest.json",
        "storyboard": out_dir / "storyboard.png",
        "channel": f"{len(emu.messages(channel))} messages in #crowdcut",
    }


async def _wait_for_clips(env: BotOnEmulator, timeout: float = 600) -> None:
    """Until every job is finished and every clip is posted."""
    app = env.app
    assert app is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = await app.store.job_counts()
        active = sum(counts.get(s, 0) for s in ("queued", "submitted", "running"))
        unposted = await app.store.unposted_clips()
        if not active and not unposted:
            return
        await asyncio.sleep(0.25)
    raise TimeoutError("clips were not all generated and posted in time")
