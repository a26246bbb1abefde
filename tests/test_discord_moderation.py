"""Projects, cuts and moderation through Discord, end to end."""

from __future__ import annotations

import json
import subprocess

import av
import pytest

from bot.emulator import ComponentNotFound
from bot.errors import InvalidState
from bot.frontend.harness import bot_on_emulator
from tests.conftest import make_settings
from tests.discord_env import Community, env, guild, until  # noqa: F401
from tests.media_helpers import make_clip

__all__ = ["env", "guild"]

MOD_COMMANDS = [
    ("project", {"title": "x"}, "create"),
    ("project", {}, "open"),
    ("project", {}, "close"),
    ("cut", {}, "preview"),
    ("cut", {"clip": 1, "slot": 1}, "pin"),
    ("cut", {"clip": 1}, "exclude"),
    ("cut", {"clip": 1}, "include"),
    ("cut", {"clip": 1, "start": 0.5}, "trim"),
    ("cut", {}, "approve"),
    ("audit", {}, None),
]


@pytest.mark.parametrize(
    "name,options,sub", MOD_COMMANDS, ids=[f"{n} {s or ''}".strip() for n, _, s in MOD_COMMANDS]
)
async def test_a_member_who_is_not_a_moderator_is_refused_ephemerally(guild, name, options, sub):
    await guild.open_project()
    _, reply = await guild.slash(guild.alice, name, options, subcommand=sub)
    assert reply["flags"] & 64
    assert "Only moderators can do that" in reply["content"]


async def test_manage_server_makes_a_moderator_without_the_role(guild):
    manager = guild.emu.add_member("manager", manage_guild=True)
    _, reply = await guild.slash(
        manager, "project", {"title": "Managed", "slots": 2}, subcommand="create"
    )
    assert "is open" in reply["content"]


async def test_a_project_with_a_song_is_split_into_slots_and_shows_its_status(guild, tmp_path):
    from bot.media.song import synthesize_song

    song = await synthesize_song(tmp_path / "s.m4a", 3.0)
    _, reply = await guild.slash(
        guild.mod,
        "project",
        {"title": "Song Night", "song": ("song.m4a", song.read_bytes(), "audio/mp4")},
        subcommand="create",
    )
    assert "3 slots of 1.0s" in reply["content"]
    await guild.prompt_and_post(guild.alice, "opening shot", slot=1)
    _, reply = await guild.slash(guild.bob, "project", subcommand="status")
    embed = reply["embeds"][0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Slots filled"] == "1 / 3" and fields["State"] == "open"
    # each slot shows the clip the cut would take now: the named one, then reused
    rows = embed["description"].splitlines()
    assert rows[0].startswith("` 1` 0:00.0–0:01.0 · clip #1 (score 0)")
    assert "clip #1 (reused)" in rows[1]
    _, reply = await guild.slash(guild.mod, "project", {"title": "Another"}, subcommand="create")
    assert "already has the project" in reply["content"]


async def test_the_songs_credit_comes_from_its_tags_and_a_moderator_can_change_it(guild, tmp_path):
    from bot.media.ffmpeg import resolve_ffmpeg
    from bot.media.song import synthesize_song

    plain = await synthesize_song(tmp_path / "plain.m4a", 2.0)
    tagged = tmp_path / "tagged.m4a"
    subprocess.run(
        [resolve_ffmpeg(), "-v", "error", "-i", str(plain), "-c", "copy",
         "-metadata", "title=Night Drive", "-metadata", "artist=Example Band", str(tagged)],
        check=True,
    )  # fmt: skip
    _, reply = await guild.slash(
        guild.mod,
        "project",
        {"title": "Tagged", "song": ("song.m4a", tagged.read_bytes(), "audio/mp4")},
        subcommand="create",
    )
    assert "is open" in reply["content"]
    _, status = await guild.slash(guild.bob, "project", subcommand="status")
    fields = {f["name"]: f["value"] for f in status["embeds"][0]["fields"]}
    assert fields["Song"].startswith("“Night Drive” by Example Band")
    _, reply = await guild.slash(
        guild.bob, "project", {"text": "x"}, subcommand="credit"
    )  # not a moderator
    assert "Only moderators" in reply["content"]
    credit = "“Night Drive” by Example Band (CC BY 4.0)"
    _, reply = await guild.slash(guild.mod, "project", {"text": credit}, subcommand="credit")
    assert "CC BY 4.0" in reply["content"]
    await guild.prompt_and_post(guild.alice, "a drive at night", slot=1)
    final = await guild.approve_cut()
    assert final["embeds"][0]["fields"][0] == {"name": "Music", "value": credit, "inline": False}
    files = {a["filename"]: a for a in final["attachments"]}
    manifest = json.loads(guild.emu.attachment_bytes(
        next(a for n, a in files.items() if n.endswith("manifest.json"))))  # fmt: skip
    assert manifest["credits"]["song"] == credit
    cut = await guild.app.store.latest_cut(1, "approved")
    with av.open(str(guild.app.media.path(cut.master_key))) as master:
        assert credit in master.metadata["comment"]
    # the published video carries it: it is not changed any more
    project = await guild.app.store.get_project(1)
    with pytest.raises(InvalidState, match="already approved"):
        await guild.env.bot.projects.set_credit(project, "y", by=guild.mod.id)


async def test_a_song_that_is_not_audio_is_refused(guild):
    _, reply = await guild.slash(
        guild.mod,
        "project",
        {"title": "Bad", "song": ("song.mp3", b"not really an mp3" * 100, "audio/mpeg")},
        subcommand="create",
    )
    assert "not an audio file" in reply["content"]


async def test_the_cut_is_previewed_overridden_and_approved_with_the_button(guild):
    await guild.open_project(slots=2)
    a = await guild.prompt_and_post(guild.alice, "slot one favourite", slot=1)
    b = await guild.prompt_and_post(guild.bob, "slot one underdog", slot=1)
    c = await guild.prompt_and_post(guild.carol, "slot two", slot=2)
    await guild.emu.add_reaction(guild.carol.id, guild.channel, a.message_id, "👍")
    await until(lambda: guild.app.store.clip_votes(a.id))
    _, reply = await guild.slash(guild.mod, "cut", {"clip": b.id, "slot": 1}, subcommand="pin")
    assert f"Clip #{b.id} is pinned to slot 1" in reply["content"]
    _, ack = await guild.slash(guild.mod, "cut", subcommand="preview")
    assert "Rendering a preview" in ack["content"] and ack["flags"] & 64
    preview = await guild.emu.wait_for_message(
        guild.channel, lambda m: m["content"].startswith("🎬 Preview of cut #"), timeout=120
    )
    names = sorted(att["filename"] for att in preview["attachments"])
    assert names == ["preview.mp4", "storyboard.png"]
    buttons = [c["custom_id"] for row in preview["components"] for c in row["components"]]
    approve = next(x for x in buttons if ":approve:" in x)
    assert approve.startswith("crowdcut:cut:approve:")
    cut = await guild.app.store.latest_cut(a.project_id)
    assert [s["clip_id"] for s in cut.slots] == [b.id, c.id]  # the pin beat the votes
    # a member who is not a moderator presses the button: refused, nothing published
    it = await guild.emu.click_button(guild.alice.id, int(preview["id"]), approve)
    reply = await it.wait_reply()
    assert "Only moderators" in reply["content"] and reply["flags"] & 64
    assert (await guild.app.store.get_project(a.project_id)).state == "open"
    # the moderator presses it
    it = await guild.emu.click_button(guild.mod.id, int(preview["id"]), approve)
    await it.wait_acked()
    final = await guild.emu.wait_for_message(
        guild.channel,
        lambda m: any(e.get("title", "").startswith("🎉") for e in m.get("embeds", [])),
        timeout=60,
    )
    files = {att["filename"]: att for att in final["attachments"]}
    assert set(files) == {f"crowdcut-{a.project_id}.mp4", f"crowdcut-{a.project_id}-manifest.json"}
    manifest_file = files[f"crowdcut-{a.project_id}-manifest.json"]
    manifest = json.loads(guild.emu.attachment_bytes(manifest_file))
    assert [s["clip_id"] for s in manifest["slots"]] == [b.id, c.id]
    credits = final["embeds"][0]["description"]
    assert "bob" in credits and "carol" in credits
    assert "approved by mod_mira" in final["embeds"][0]["footer"]["text"]
    approved = await until(lambda: guild.app.store.latest_cut(a.project_id, "approved"))
    project = await guild.app.store.get_project(a.project_id)
    assert project.state == "approved" and approved.approved_by == guild.mod.id
    actions = [e.action for e in await guild.app.store.audit_log(guild.emu.guild_id)]
    assert {"pin_clip", "approve_cut", "create_project"} <= set(actions)


async def test_a_moderator_picks_where_a_clip_starts_in_the_cut(guild):
    await guild.open_project(slots=1)
    clip = await guild.prompt_and_post(guild.alice, "a long take", slot=1)
    project = await guild.app.store.get_project(clip.project_id)
    before = (await guild.env.bot.renders.selection(project)).identity
    _, reply = await guild.slash(
        guild.mod, "cut", {"clip": clip.id, "start": 0.25}, subcommand="trim"
    )
    assert f"Clip #{clip.id} starts 0.25 s in" in reply["content"]
    chosen = await guild.env.bot.renders.selection(project)
    assert chosen.slots[0].in_point == 0.25 and chosen.identity != before
    assert chosen.records()[0]["in_point"] == 0.25
    # past the clip's end: refused, with the clip's length
    _, reply = await guild.slash(
        guild.mod, "cut", {"clip": clip.id, "start": 99}, subcommand="trim"
    )
    assert f"Clip #{clip.id} is only" in reply["content"] and reply["flags"] & 64
    _, reply = await guild.slash(guild.mod, "cut", {"clip": clip.id, "start": 0}, subcommand="trim")
    assert "starts from its first frame again" in reply["content"]
    assert (await guild.env.bot.renders.selection(project)).identity == before
    actions = [e.action for e in await guild.app.store.audit_log(guild.emu.guild_id)]
    assert actions.count("trim_clip") == 2


async def test_cut_approve_closes_voting_renders_and_publishes(guild):
    await guild.open_project(slots=1)
    await guild.prompt_and_post(guild.alice, "only clip", slot=1)
    _, reply = await guild.slash(guild.mod, "cut", subcommand="approve")
    assert "final video is being rendered" in reply["content"] and reply["flags"] & 64
    await guild.wait_for_final()
    project = await guild.app.store.current_project(guild.emu.guild_id)
    assert project is None  # approved: no current project any more


async def test_excluded_clips_stay_out_and_include_puts_them_back(guild):
    await guild.open_project(slots=1)
    a = await guild.prompt_and_post(guild.alice, "good", slot=1)
    b = await guild.prompt_and_post(guild.bob, "better", slot=1)
    await guild.emu.add_reaction(guild.carol.id, guild.channel, b.message_id, "👍")
    await until(lambda: guild.app.store.clip_votes(b.id))
    await guild.slash(guild.mod, "cut", {"clip": b.id}, subcommand="exclude")
    project = await guild.app.store.get_project(a.project_id)
    assert [s.clip_id for s in await guild.env.bot.cuts.choose(project)] == [a.id]
    await guild.slash(guild.mod, "cut", {"clip": b.id}, subcommand="include")
    assert [s.clip_id for s in await guild.env.bot.cuts.choose(project)] == [b.id]


async def test_premoderated_prompts_wait_for_a_moderators_button_even_across_a_restart(tmp_path):
    async with bot_on_emulator(make_settings(tmp_path, premoderation=True)) as env:
        g = Community(env)
        await g.open_project()
        _, reply = await g.slash(g.alice, "prompt", {"text": "please approve me"})
        assert "waits for a moderator" in reply["content"]
        mods = env.emu.channels["moderators"]
        card = await env.emu.wait_for_message(mods, lambda m: "please approve me" in m["content"])
        ids = [c["custom_id"] for row in card["components"] for c in row["components"]]
        assert ids == ["crowdcut:prompt:approve:1", "crowdcut:prompt:reject:1"]
        _, reply = await g.slash(g.alice, "prompt", {"text": "reject me"})
        card2 = await env.emu.wait_for_message(mods, lambda m: "reject me" in m["content"])
        await env.stop()
        await env.start(sync=False)  # the buttons must still work after a restart
        with pytest.raises(ComponentNotFound, match="cannot see #moderators"):
            await env.emu.click_button(g.bob.id, int(card["id"]), ids[0])
        it = await env.emu.click_button(g.mod.id, int(card["id"]), ids[0])
        updated = await it.wait_reply()
        assert "approved by mod_mira" in updated["content"] and not updated.get("components")
        it = await env.emu.click_button(g.mod.id, int(card2["id"]), "crowdcut:prompt:reject:2")
        assert "rejected by mod_mira" in (await it.wait_reply())["content"]
        clip = await until(lambda: g._posted_clip(1), timeout=60)
        assert clip.job_id == 1
        assert (await env.app.store.get_job(2)).state == "canceled"
        actions = [e.action for e in await env.app.store.audit_log(env.emu.guild_id)]
        assert "approve_prompt" in actions and "reject_prompt" in actions


async def test_forget_me_deletes_a_members_data_but_keeps_approved_clips_anonymous(guild):
    await guild.open_project(slots=1)
    kept = await guild.prompt_and_post(guild.alice, "in the final video", slot=1)
    await guild.approve_cut()
    await guild.open_project(slots=1)
    dropped = await guild.prompt_and_post(guild.alice, "never used", slot=1)
    await guild.emu.add_reaction(guild.alice.id, guild.channel, kept.message_id, "👍")
    it, reply = await guild.slash(guild.alice, "forgetme")
    assert "cannot be undone" in reply["content"]
    button = reply["components"][0]["components"][0]["custom_id"]
    with pytest.raises(ComponentNotFound):  # ephemeral: bob cannot even see it
        await guild.emu.click_button(guild.bob.id, int(reply["id"]), button)
    it2 = await guild.emu.click_button(guild.alice.id, int(reply["id"]), button)
    done = await until(lambda: _said(it2, "Deleted"))
    assert "credited as anonymous" in done["content"]
    assert await guild.app.store.get_clip(dropped.id) is None
    assert not guild.app.media.exists(dropped.media_key)
    # the unused clip's post and its status message come down from the channel too
    await guild.env.bot.publisher.flush()
    ids = {int(m["id"]) for m in guild.emu.messages(guild.channel)}
    assert dropped.message_id not in ids and kept.message_id in ids
    assert (await guild.app.store.get_clip(kept.id)).anonymous
    _, info = await guild.slash(guild.bob, "clip", {"clip": kept.id})
    fields = {f["name"]: f["value"] for f in info["embeds"][0]["fields"]}
    assert fields["Author"] == "anonymous"


async def test_forget_me_renders_the_approved_video_again_and_edits_its_post(guild):
    """The published video's credits roll, storyboard and manifest named the member: the
    cut is rendered again with "anonymous", its post edited, the old files deleted."""
    await guild.open_project(slots=2)
    kept = await guild.prompt_and_post(guild.alice, "in the final video", slot=1)
    await guild.prompt_and_post(guild.bob, "the other slot", slot=2)
    final = await guild.approve_cut()
    assert "alice" in final["embeds"][0]["description"]
    store = guild.app.store
    before = await store.latest_cut(kept.project_id, "approved")
    assert any(s["author"] == "alice" for s in before.slots)
    await guild.env.bot.members.forget(guild.alice.id)
    # the cut's own record credits nobody at once, and a render of it is queued
    recorded = await store.latest_cut(kept.project_id, "approved")
    assert [s["author"] for s in recorded.slots] == ["anonymous", "bob"]

    def edited():
        post = guild.emu.get_message(guild.channel, int(final["id"]))
        return post if "alice" not in post["embeds"][0]["description"] else None

    post = await until(edited, timeout=120)
    cut = await store.latest_cut(kept.project_id, "approved")
    assert cut.id == before.id and cut.message_id == before.message_id
    assert cut.master_key != before.master_key and cut.manifest_key != before.manifest_key
    for key in (before.master_key, before.manifest_key, before.storyboard_key):
        assert not guild.app.media.exists(key)  # the files that named alice are gone
    files = {a["filename"]: a for a in post["attachments"]}
    manifest = json.loads(
        guild.emu.attachment_bytes(files[f"crowdcut-{cut.project_id}-manifest.json"])
    )
    assert [s["author"] for s in manifest["credits"]["slots"]] == ["anonymous", "bob"]
    assert "alice" not in json.dumps(manifest)
    assert f"crowdcut-{cut.project_id}.mp4" in files
    assert "bob" in post["embeds"][0]["description"]
    assert "approved by mod_mira" in post["embeds"][0]["footer"]["text"]


def _said(it, text: str):
    original = it.original
    return original if original and text in original["content"] else None


async def test_forget_me_answers_at_once_for_a_member_with_50_clips_and_200_votes(guild):
    await guild.open_project(slots=4)
    store, media = guild.app.store, guild.app.media
    key = media.put_file(make_clip(guild.env.settings.data_dir / "c.mp4"), "mp4")
    clips = []
    for i in range(50):
        job = await store.add_job(
            project_id=1,
            member_id=guild.alice.id,
            prompt=f"clip {i}",
            channel_id=guild.channel,
            duration=1.0,
            aspect="16:9",
            seed=i,
        )
        await store.claim_job(job.id, "local")
        await store.set_provider_job_id(job.id, f"p{i}")
        clips.append(
            await store.complete_job(
                job.id,
                media_key=key,
                duration=1.0,
                width=160,
                height=90,
                fps=24.0,
                has_audio=True,
                size_bytes=1000,
            )
        )
    voters = [guild.emu.add_member(f"voter{i}") for i in range(4)]
    for clip in clips:
        for v in voters:
            await store.apply_reaction(clip.id, v.id, "👍", added=True, values={"👍": 1, "👎": -1})
    await guild.env.bot.publisher.flush()  # 50 clip posts and status messages are out
    assert len(await store.project_clips(1)) == 50
    assert sum([len(await store.clip_votes(c.id)) for c in clips]) == 200
    _, reply = await guild.slash(guild.alice, "forgetme")
    button = reply["components"][0]["components"][0]["custom_id"]
    it = await guild.emu.click_button(guild.alice.id, int(reply["id"]), button)
    assert await it.wait_acked(timeout=3.0) < 3.0
    done = await until(lambda: _said(it, "Deleted"))
    assert "50 clip(s)" in done["content"]
    await guild.env.bot.publisher.flush()
    left = [m for m in guild.emu.messages(guild.channel) if "clip #" in str(m.get("embeds"))]
    assert left == [] and await store.project_clips(1) == []


async def test_a_forgotten_members_old_reactions_are_not_turned_back_into_votes(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.bob, "still open")
    await guild.emu.add_reaction(guild.alice.id, guild.channel, clip.message_id, "👍")
    await until(lambda: guild.app.store.clip_votes(clip.id))
    await guild.env.bot.members.forget(guild.alice.id)
    assert await guild.app.store.clip_votes(clip.id) == []
    await guild.env.stop()
    await guild.env.start(sync=False)  # reconciliation sees alice's 👍 still on Discord
    assert await guild.app.store.clip_votes(clip.id) == []


async def test_a_429_from_discord_is_waited_out_and_the_reply_still_arrives(guild):
    await guild.open_project()
    guild.emu.rate_limit_next("POST", r"/channels/\d+/messages$", retry_after=0.3)
    _, reply = await guild.slash(guild.alice, "prompt", {"text": "rate limited but fine"})
    assert "Accepted" in reply["content"]
    # the status message is the outbox's: it waits the 429 out and is posted once
    job = await until(lambda: _with_status(guild, 1))
    statuses = [r for r in guild.emu.requests if r[2] == 429]
    assert statuses
    posts = [m for m in guild.emu.messages(guild.channel) if "Job #1" in m["content"]]
    assert [m["id"] for m in posts] == [str(job.status_message_id)]


async def _with_status(guild, job_id: int):
    job = await guild.app.store.get_job(job_id)
    return job if job and job.status_message_id else None
