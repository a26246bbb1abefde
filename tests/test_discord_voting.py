"""Votes from reactions, end to end, including a restart while members keep reacting."""

from __future__ import annotations

from tests.discord_env import env, guild, until  # noqa: F401

__all__ = ["env", "guild"]


async def tally(g, clip):
    return (await g.app.store.vote_tallies(clip.project_id))[clip.id]


async def react(g, who, clip, emoji, add=True):
    if add:
        await g.emu.add_reaction(who.id, g.channel, clip.message_id, emoji)
    else:
        await g.emu.remove_reaction(who.id, g.channel, clip.message_id, emoji)


async def test_reactions_become_votes_by_the_rules(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "a lighthouse")
    await react(guild, guild.bob, clip, "👍")
    await react(guild, guild.carol, clip, "👎")
    await react(guild, guild.alice, clip, "👍")  # the author: does not count
    await react(guild, guild.robot, clip, "👍")  # a bot: does not count
    await react(guild, guild.mod, clip, "🔥")  # not a vote emoji
    assert await until(lambda: _eq(guild, clip, (1, 1)))
    await react(guild, guild.carol, clip, "👍")  # up after down: the later counts
    assert await until(lambda: _eq(guild, clip, (2, 0)))
    await react(guild, guild.carol, clip, "👍", add=False)  # back to the down still there
    assert await until(lambda: _eq(guild, clip, (1, 1)))
    await react(guild, guild.carol, clip, "👎", add=False)
    assert await until(lambda: _eq(guild, clip, (1, 0)))


async def _eq(g, clip, expected):
    return await tally(g, clip) == expected


async def test_votes_after_the_project_closes_do_not_count(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "a forest")
    barrier = await clip_in_another_open_project(guild)
    await react(guild, guild.bob, clip, "👍")
    await until(lambda: _eq(guild, clip, (1, 0)))
    _, reply = await guild.slash(guild.mod, "project", subcommand="close")
    assert "closed" in reply["content"]
    await react(guild, guild.carol, clip, "👍")
    await react(guild, guild.bob, clip, "👍", add=False)
    # votes are counted one event at a time in the order they came: once a later vote on
    # an open project's clip is counted, the two above have been seen and refused
    await guild.emu.add_reaction(guild.carol.id, barrier.channel_id, barrier.message_id, "👍")
    await until(lambda: _eq(guild, barrier, (1, 0)))
    assert await tally(guild, clip) == (1, 0)
    assert [v.voter_id for v in await guild.app.store.clip_votes(clip.id)] == [guild.bob.id]


async def clip_in_another_open_project(g):
    """A posted clip of a project open in #general, whose votes still count."""
    general = g.emu.channels["general"]

    async def slash(who, name, options, subcommand=None):
        it = await g.emu.invoke_slash(who.id, general, name, options, subcommand=subcommand)
        return await it.wait_reply(timeout=30)

    await slash(g.mod, "project", {"title": "Barrier", "slots": 1}, "create")
    reply = await slash(g.bob, "prompt", {"text": "a barrier"})
    job_id = int(reply["content"].split("job #")[1].split(" ")[0])
    return await until(lambda: g._posted_clip(job_id), timeout=60)


async def test_votes_cast_while_the_bot_was_down_are_counted_on_start(guild):
    await guild.open_project()
    a = await guild.prompt_and_post(guild.alice, "first clip")
    b = await guild.prompt_and_post(guild.bob, "second clip")
    await react(guild, guild.bob, a, "👍")
    await react(guild, guild.carol, a, "👍")
    await until(lambda: _eq(guild, a, (2, 0)))
    await guild.env.stop()
    # members keep reacting while crowdcut is down
    await react(guild, guild.mod, a, "👍")
    await react(guild, guild.carol, a, "👍", add=False)
    await react(guild, guild.carol, a, "👎")
    await react(guild, guild.alice, b, "👎")
    await react(guild, guild.carol, b, "👍")
    await react(guild, guild.bob, b, "👍")  # the author's own: still not counted
    await react(guild, guild.robot, b, "👍")
    await guild.env.start(sync=False)
    assert await tally(guild, a) == (2, 1)
    assert await tally(guild, b) == (1, 1)
    # the counts equal what members see, less the bots' own and self-votes
    msg = guild.emu.get_message(guild.channel, a.message_id)
    counts = {r["emoji"]["name"]: r["count"] for r in msg["reactions"]}
    assert counts == {"👍": 3, "👎": 2}  # including the bot's own seed reactions


async def test_clip_info_and_leaderboard_show_the_votes(guild):
    await guild.open_project()
    a = await guild.prompt_and_post(guild.alice, "winner", slot=1)
    b = await guild.prompt_and_post(guild.bob, "runner up", slot=1)
    await react(guild, guild.bob, a, "👍")
    await react(guild, guild.carol, a, "👍")
    await react(guild, guild.carol, b, "👎")
    await until(lambda: _eq(guild, a, (2, 0)))
    await until(lambda: _eq(guild, b, (0, 1)))
    _, reply = await guild.slash(guild.carol, "clip", {"clip": a.id})
    fields = {f["name"]: f["value"] for f in reply["embeds"][0]["fields"]}
    assert (
        fields["Author"] == "alice"
        and fields["Backend"] == "local · crowdcut procedural stand-in (no AI model)"
    )
    assert fields["Votes"].startswith("👍 2 · 👎 0") and fields["Slot"] == "slot 1"
    assert fields["Seed"].isdigit()
    _, reply = await guild.slash(guild.carol, "leaderboard", {"slot": 1})
    text = reply["embeds"][0]["description"]
    assert text.index(f"#{a.id}") < text.index(f"#{b.id}") and "+2" in text
    _, reply = await guild.slash(guild.carol, "clip", {"clip": 42})
    assert "no clip #42" in reply["content"]
