"""The slot plan through Discord: a song planned on its bars, the moderators' /project
slots, split, merge and hint, and /project status showing each slot's time, bars, hint
and the clip the cut would take for it now."""

from __future__ import annotations

import pytest

from tests.discord_env import env, guild, until  # noqa: F401
from tests.song_helpers import song_async

__all__ = ["env", "guild"]


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("songs")


def rows_of(reply: dict) -> list[str]:
    return reply["embeds"][0]["description"].splitlines()


async def test_a_moderator_shapes_the_plan_and_the_status_shows_it(guild, songs):
    path = await song_async(songs, 92, 16.0)
    _, reply = await guild.slash(
        guild.mod,
        "project",
        {"title": "Bars", "song": ("song.m4a", path.read_bytes(), "audio/mp4")},
        subcommand="create",
    )
    assert "on the bars of the 92 BPM song" in reply["content"]
    project = await guild.app.store.current_project(guild.emu.guild_id, guild.channel)
    n = len(project.slot_plan)
    assert n >= 6 and all(s.bars for s in project.slot_plan)

    _, reply = await guild.slash(
        guild.mod, "project", {"slot": 2, "text": "the city **wakes** @everyone"}, "hint"
    )
    assert "Slot 2 (0:0" in reply["content"] and r"the city \*\*wakes\*\*" in reply["content"]
    _, reply = await guild.slash(guild.mod, "project", {"slot": 1}, "split")
    assert "single bar" in reply["content"] and reply["flags"] & 64  # 1 s clips: 1 bar each
    _, reply = await guild.slash(guild.mod, "project", {"slot": 4}, "merge")
    assert reply["content"].startswith("🔗 Slots 4 and 5 are now slot 4:")
    _, reply = await guild.slash(guild.mod, "project", {"slot": 4}, "split")
    assert reply["content"].startswith("✂️ Slot 4 is now slots 4 and 5:")
    project = await guild.app.store.get_project(project.id)
    assert len(project.slot_plan) == n and project.slot_plan[1].hint is not None

    _, reply = await guild.slash(guild.bob, "project", subcommand="status")
    rows = rows_of(reply)
    assert len(rows) == n
    assert rows[0].startswith("` 1` 0:00.0–") and " · bar" in rows[0]
    assert "💬 the city \\*\\*wakes\\*\\* @everyone" in rows[1]  # escaped, never a mention
    assert all("no clip yet" in r for r in rows)
    fields = {f["name"]: f["value"] for f in reply["embeds"][0]["fields"]}
    assert "on the bars of the 92 BPM song" in fields["Plan"]

    _, reply = await guild.slash(guild.mod, "project", {"count": 3}, "slots")
    assert "3 slots of" in reply["content"] and "on the bars" in reply["content"]
    actions = [e.action for e in await guild.app.store.audit_log(guild.emu.guild_id)]
    for action in ("set_slot_hint", "split_slot", "merge_slots", "set_slot_count"):
        assert action in actions


async def test_the_status_shows_the_clip_the_cut_would_take_for_every_slot(guild):
    await guild.open_project(slots=3)
    clip = await guild.prompt_and_post(guild.alice, "for any slot")  # names no slot
    _, reply = await guild.slash(guild.bob, "project", subcommand="status")
    rows = rows_of(reply)
    assert f"clip #{clip.id} (score 0)" in rows[0]
    assert f"clip #{clip.id} (reused)" in rows[1] and f"clip #{clip.id} (reused)" in rows[2]
    fields = {f["name"]: f["value"] for f in reply["embeds"][0]["fields"]}
    assert fields["Slots filled"] == "1 / 3"


async def test_a_split_is_refused_once_a_clip_names_a_later_slot(guild):
    await guild.open_project(slots=3)
    await guild.prompt_and_post(guild.alice, "for slot two", slot=2)
    _, reply = await guild.slash(guild.mod, "project", {"slot": 1}, "split")
    assert reply["flags"] & 64 and "name slot(s) 2" in reply["content"]
    _, reply = await guild.slash(guild.mod, "project", {"slot": 3}, "split")
    assert "Slot 3 is now slots 3 and 4" in reply["content"]


@pytest.mark.parametrize(
    "options,sub",
    [({"count": 2}, "slots"), ({"slot": 1}, "split"), ({"slot": 1}, "merge"),
     ({"slot": 1, "text": "x"}, "hint")],
)  # fmt: skip
async def test_slot_commands_are_for_moderators(guild, options, sub):
    await guild.open_project()
    _, reply = await guild.slash(guild.alice, "project", options, subcommand=sub)
    assert reply["flags"] & 64 and "Only moderators can do that" in reply["content"]
