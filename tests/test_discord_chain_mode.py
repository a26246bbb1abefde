"""Chain mode and the project's style through Discord: /project style (moderators only,
refusals said, shown in /project status), a chained prompt's receipt, and the parent a
clip continues shown on its post and in /clip."""

from __future__ import annotations

from tests.discord_env import env, guild, until  # noqa: F401

__all__ = ["env", "guild"]


def fields_of(message: dict) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message["embeds"][0]["fields"]}


async def test_a_moderator_sets_the_style_and_the_status_shows_it(guild):
    await guild.open_project(slots=3)
    _, reply = await guild.slash(guild.bob, "project", {"chain": True}, "style")
    assert "moderator" in reply["content"].lower() and reply["flags"] & 64
    _, reply = await guild.slash(guild.mod, "project", {"transition": "wipe"}, "style")
    assert "not a transition" in reply["content"] and reply["flags"] & 64

    options = {"transition": "crossfade", "beats": 0.5, "fit": "slow", "chain": True}
    _, reply = await guild.slash(guild.mod, "project", options, "style")
    assert reply["content"].startswith("🎨 The project's style is now crossfade of 0.5 beats")
    assert "chain mode on" in reply["content"]
    _, reply = await guild.slash(guild.bob, "project", subcommand="status")
    style = fields_of(reply)["Style"]
    assert "crossfade of 0.5 beats" in style and "short clips slowed" in style
    actions = [e.action for e in await guild.app.store.audit_log(guild.emu.guild_id)]
    assert actions.count("set_style") == 1


async def test_a_chained_clip_shows_the_clip_it_continues(guild):
    await guild.open_project(slots=3)
    await guild.slash(guild.mod, "project", {"chain": True}, "style")
    first = await guild.prompt_and_post(guild.alice, "a corridor", slot=1)

    _, reply = await guild.slash(guild.bob, "prompt", {"text": "onto a beach", "slot": 2})
    assert f"continues clip #{first.id}" in reply["content"]
    job_id = int(reply["content"].split("job #")[1].split(" ")[0])
    second = await until(lambda: guild._posted_clip(job_id), timeout=60)
    assert second.parent_clip_id == first.id and second.lineage == "chain"

    post = guild.emu.get_message(guild.channel, second.message_id)
    assert fields_of(post)["Parent"] == f"continues clip #{first.id} (chain)"
    _, reply = await guild.slash(guild.carol, "clip", {"clip": second.id})
    assert fields_of(reply)["Parent"] == f"continues clip #{first.id} (chain)"
    _, reply = await guild.slash(guild.carol, "clip", {"clip": first.id})
    assert "Parent" not in fields_of(reply)
