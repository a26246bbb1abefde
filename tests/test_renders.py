"""Renders are durable work: asked for at once, resumed after a restart, never published
stale, one video however many moderators approve, the master when it fits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import bot.frontend.client as client_module
import bot.services.renders as renders_module
from tests.discord_env import env, guild, until  # noqa: F401

__all__ = ["env", "guild"]


def _previews(guild) -> list[dict]:
    return [
        m
        for m in guild.emu.messages(guild.channel)
        if m["content"].startswith("🎬 Preview of cut #")
    ]


def _finals(guild) -> list[dict]:
    return [
        m
        for m in guild.emu.messages(guild.channel)
        if any(e.get("title", "").startswith("🎉") for e in m.get("embeds", []))
    ]


def _approve_id(message: dict) -> str:
    return next(
        c["custom_id"]
        for row in message["components"]
        for c in row["components"]
        if ":approve:" in c["custom_id"]
    )


class Gate:
    """Holds every render at the start of ``assemble`` until ``open`` (the render is then
    mid-way: claimed, running, nothing published). With ``precache``, the held render first
    renders everything into a scratch folder, so its segments are cached."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, precache: bool = False) -> None:
        self.real = renders_module.assemble
        self.entered = asyncio.Event()
        self._open = asyncio.Event()
        self.precache = precache
        monkeypatch.setattr(renders_module, "assemble", self._assemble)

    async def _assemble(self, slots, song, out_dir: Path, **kwargs):
        if not self._open.is_set():
            if self.precache:
                await self.real(slots, song, Path(out_dir) / "scratch", **kwargs)
            self.entered.set()
            await self._open.wait()
        return await self.real(slots, song, out_dir, **kwargs)

    def open(self) -> None:
        self._open.set()


async def _settled(guild) -> None:
    await guild.env.bot.renders.wait_idle()
    await guild.env.bot.publisher.flush()


async def test_a_preview_is_asked_for_at_once_and_posted_once(guild):
    project = await guild.open_project(slots=1)
    await guild.prompt_and_post(guild.alice, "a lighthouse", slot=1)
    started = time.monotonic()
    _, ack = await guild.slash(guild.mod, "cut", subcommand="preview")
    assert time.monotonic() - started < 1.5
    assert "Rendering a preview" in ack["content"] and ack["flags"] & 64
    preview = await guild.emu.wait_for_message(
        guild.channel, lambda m: m["content"].startswith("🎬 Preview of cut #"), timeout=60
    )
    assert sorted(a["filename"] for a in preview["attachments"]) == [
        "preview.mp4",
        "storyboard.png",
    ]
    await _settled(guild)
    assert len(_previews(guild)) == 1
    (render,) = await guild.app.store.project_renders(project.id)
    cut = await guild.app.store.get_cut(render.cut_id)
    assert render.state == "done" and cut.identity == render.identity and cut.storyboard_key


async def test_a_render_resumes_after_a_restart_and_posts_once(guild, monkeypatch):
    gate = Gate(monkeypatch, precache=True)
    project = await guild.open_project(slots=1)
    await guild.prompt_and_post(guild.alice, "a lighthouse", slot=1)
    await guild.slash(guild.mod, "cut", subcommand="preview")
    await asyncio.wait_for(gate.entered.wait(), 60)
    (running,) = await guild.app.store.project_renders(project.id)
    assert running.state == "running"
    await guild.env.stop()  # the process dies mid-render
    gate.open()
    await guild.env.start(sync=False)
    await guild.emu.wait_for_message(
        guild.channel, lambda m: m["content"].startswith("🎬 Preview of cut #"), timeout=60
    )
    await _settled(guild)
    assert len(_previews(guild)) == 1
    (render,) = await guild.app.store.project_renders(project.id)
    assert render.state == "done" and render.attempts == 2
    assert guild.env.bot.renders.renderer.rendered == 0  # the segments were cached already


async def test_a_preview_made_stale_by_a_pin_is_not_published_as_current(guild, monkeypatch):
    gate = Gate(monkeypatch)
    project = await guild.open_project(slots=1)
    a = await guild.prompt_and_post(guild.alice, "favourite", slot=1)
    b = await guild.prompt_and_post(guild.bob, "underdog", slot=1)
    await guild.emu.add_reaction(guild.carol.id, guild.channel, a.message_id, "👍")
    await until(lambda: guild.app.store.clip_votes(a.id))
    await guild.slash(guild.mod, "cut", subcommand="preview")
    await asyncio.wait_for(gate.entered.wait(), 60)
    await guild.slash(guild.mod, "cut", {"clip": b.id, "slot": 1}, subcommand="pin")
    gate.open()
    await guild.emu.wait_for_message(
        guild.channel, lambda m: m["content"].startswith("🔁 The cut changed"), timeout=60
    )
    await guild.emu.wait_for_message(
        guild.channel, lambda m: m["content"].startswith("🎬 Preview of cut #"), timeout=60
    )
    await _settled(guild)
    (posted,) = _previews(guild)
    cut = await guild.app.store.latest_cut(project.id)
    assert f"cut #{cut.id} " in posted["content"]
    assert [s["clip_id"] for s in cut.slots] == [b.id]  # the pinned clip, not the stale one
    states = [r.state for r in await guild.app.store.project_renders(project.id)]
    assert states == ["stale", "done"]


async def test_approve_on_a_stale_preview_refuses_and_offers_the_current_one(guild):
    project = await guild.open_project(slots=1)
    a = await guild.prompt_and_post(guild.alice, "favourite", slot=1)
    b = await guild.prompt_and_post(guild.bob, "underdog", slot=1)
    await guild.emu.add_reaction(guild.carol.id, guild.channel, a.message_id, "👍")
    await until(lambda: guild.app.store.clip_votes(a.id))
    await guild.slash(guild.mod, "cut", subcommand="preview")
    old = await guild.emu.wait_for_message(
        guild.channel, lambda m: m["content"].startswith("🎬 Preview of cut #"), timeout=60
    )
    await _settled(guild)
    await guild.emu.add_reaction(guild.alice.id, guild.channel, b.message_id, "👍")
    await guild.emu.add_reaction(guild.carol.id, guild.channel, b.message_id, "👍")
    await until(lambda: len(guild.app.store.sync.clip_votes(b.id)) == 2)
    it = await guild.emu.click_button(guild.mod.id, int(old["id"]), _approve_id(old))
    reply = await it.wait_reply(timeout=30)
    assert "The cut changed" in reply["content"] and reply["flags"] & 64
    new = await guild.emu.wait_for_message(
        guild.channel,
        lambda m: m["content"].startswith("🎬 Preview of cut #") and m["id"] != old["id"],
        timeout=60,
    )
    await _settled(guild)
    assert not _finals(guild)
    assert (await guild.app.store.get_project(project.id)).state == "open"
    cut = await guild.app.store.latest_cut(project.id)
    assert f"cut #{cut.id} " in new["content"] and [s["clip_id"] for s in cut.slots] == [b.id]


async def test_two_moderators_approving_at_once_publish_one_video(guild):
    second = guild.emu.add_member("mod_max", roles=["Moderator"])
    project = await guild.open_project(slots=1)
    await guild.prompt_and_post(guild.alice, "a lighthouse", slot=1)
    await guild.slash(guild.mod, "cut", subcommand="preview")
    preview = await guild.emu.wait_for_message(
        guild.channel, lambda m: m["content"].startswith("🎬 Preview of cut #"), timeout=60
    )
    clicks = await asyncio.gather(
        guild.emu.click_button(guild.mod.id, int(preview["id"]), _approve_id(preview)),
        guild.emu.click_button(second.id, int(preview["id"]), _approve_id(preview)),
    )
    await asyncio.gather(*(it.wait_reply(timeout=30) for it in clicks))
    await guild.wait_for_final()
    await _settled(guild)
    assert len(_finals(guild)) == 1
    finals = [r for r in await guild.app.store.project_renders(project.id) if r.kind == "final"]
    assert len(finals) == 1
    assert (await guild.app.store.get_project(project.id)).state == "approved"


async def test_the_final_post_carries_the_master_when_it_fits_and_a_preview_otherwise(
    guild, tmp_path
):
    store, media = guild.app.store, guild.app.media
    limit = 200_000  # the server's upload limit when the final was asked for
    posted = []
    for title, master_bytes in (("Roomy", 100_000), ("Tight", 300_000)):
        await guild.slash(guild.mod, "project", {"title": title, "slots": 1}, subcommand="create")
        project = await store.current_project(guild.emu.guild_id, guild.channel)
        files = {}
        for name, size in (("master", master_bytes), ("preview", 50_000)):
            path = tmp_path / f"{title}-{name}.mp4"
            path.write_bytes(name.encode() * (size // len(name)))
            files[name] = media.put_file(path, "mp4")
        render, _ = await store.enqueue_render(
            project_id=project.id, kind="final", identity=title, slots=[],
            requested_by=guild.mod.id, channel_id=guild.channel, upload_limit=limit,
        )  # fmt: skip
        await store.claim_render(time.time() + 1)
        since = guild.emu.revision
        await store.finish_render(
            render.id, master_key=files["master"], preview_key=files["preview"],
            manifest_key=None, storyboard_key=None, preview_bytes=limit,
        )  # fmt: skip
        guild.env.bot.outbox.wake()
        final = await guild.wait_for_final(since=since)
        (video,) = [a for a in final["attachments"] if a["filename"].endswith(".mp4")]
        posted.append(guild.emu.attachment_bytes(video)[:6])
    assert posted == [b"master", b"previe"]  # the master fit; then it did not, the preview did


async def test_segments_are_rendered_in_the_background_while_the_vote_goes_on(guild, monkeypatch):
    monkeypatch.setattr(renders_module.RenderWorker, "background_seconds", 0.2)
    monkeypatch.setattr(client_module, "QUIET_SECONDS", 0.5)  # members' quiet period
    project = await guild.open_project(slots=1)
    await guild.prompt_and_post(guild.alice, "a lighthouse", slot=1)
    renders = guild.env.bot.renders
    current = (await renders.selection(project)).identity
    await until(lambda: renders._seen.get(project.id) == current, timeout=60)
    before = renders.renderer.rendered
    assert before > 0  # nobody asked for a render: the background pass made them
    await guild.slash(guild.mod, "cut", subcommand="preview")
    await guild.emu.wait_for_message(
        guild.channel, lambda m: m["content"].startswith("🎬 Preview of cut #"), timeout=60
    )
    await _settled(guild)
    assert renders.renderer.rendered == before  # the preview only joined cached segments


async def test_a_preview_over_the_limit_is_made_from_the_segments_and_posted(tmp_path):
    """A server whose previews must stay under 100 kB: the posted preview is the segments'
    preview encodes joined, under the limit, smaller than the master, and it plays."""
    import av

    from bot.frontend.harness import bot_on_emulator
    from tests.conftest import make_settings
    from tests.discord_env import Community

    settings = make_settings(tmp_path, preview_max_bytes=100_000, video_width=640,
                             video_height=360)  # fmt: skip
    async with bot_on_emulator(settings) as env:
        guild = Community(env)
        project = await guild.open_project(slots=3)
        for slot, who in ((1, guild.alice), (2, guild.bob), (3, guild.carol)):
            await guild.prompt_and_post(who, f"a busy street, take {slot}", slot=slot)
        await guild.slash(guild.mod, "cut", subcommand="preview")
        preview = await guild.emu.wait_for_message(
            guild.channel, lambda m: m["content"].startswith("🎬 Preview of cut #"), timeout=120
        )
        (video,) = [a for a in preview["attachments"] if a["filename"] == "preview.mp4"]
        data = guild.emu.attachment_bytes(video)
        cut = await guild.app.store.latest_cut(project.id)
        master = guild.app.media.path(cut.master_key)
        assert master.stat().st_size > 100_000  # so the limit really had to be met
        assert len(data) <= 100_000 * renders_module.UPLOAD_HEADROOM
        path = tmp_path / "posted.mp4"
        path.write_bytes(data)
        with av.open(str(path)) as posted, av.open(str(master)) as full:
            frames = sum(1 for _ in posted.decode(video=0))
            assert frames == full.streams.video[0].frames
            assert posted.streams.video[0].width < 640


async def test_a_render_that_keeps_failing_gives_up_and_says_so(guild, monkeypatch):
    from bot.errors import MediaError

    async def broken(*args, **kwargs):
        raise MediaError("ffmpeg said no")

    monkeypatch.setattr(renders_module, "assemble", broken)
    monkeypatch.setattr(renders_module.RenderWorker, "max_attempts", 2)
    project = await guild.open_project(slots=1)
    await guild.prompt_and_post(guild.alice, "a lighthouse", slot=1)
    await guild.slash(guild.mod, "cut", subcommand="preview")
    notice = await guild.emu.wait_for_message(
        guild.channel, lambda m: "could not be made" in m["content"], timeout=30
    )
    assert "ffmpeg" not in notice["content"]  # the reason is for the operator's log
    (render,) = await guild.app.store.project_renders(project.id)
    assert render.state == "failed" and render.attempts == 2
