"""Votes follow what Discord shows: clears, deleted posts, forgotten members, late events.

End to end against the emulator. To hold events back (a slow batch, a busy bot), the
vote consumer is paused at the service's door while Discord keeps dispatching; what a
test proves did *not* count is checked after a later barrier vote was counted.
"""

from __future__ import annotations

import asyncio

import discord

from bot.core.voting import in_time
from bot.media.storyboard import cell_label
from storage import Store
from storage.models import Slot
from tests.discord_env import env, guild, until  # noqa: F401
from tests.test_discord_voting import clip_in_another_open_project

__all__ = ["env", "guild"]

VALUES = {"👍": 1, "👎": -1}


async def tally(g, clip):
    return (await g.app.store.vote_tallies(clip.project_id)).get(clip.id)


async def tally_is(g, clip, expected):
    return await tally(g, clip) == expected


class HeldVotes:
    """Pause the vote consumer: events keep arriving (and are stamped) but wait unapplied."""

    def __init__(self, g) -> None:
        self.bot = g.env.bot
        self.cog = self.bot.get_cog("Voting")
        self.gate = asyncio.Event()
        self.waiting = 0
        self._apply = self.bot.voting.on_reactions

        async def held(batch):
            self.waiting += len(batch)
            await self.gate.wait()
            return await self._apply(batch)

        self.bot.voting.on_reactions = held

    async def received(self, n: int) -> None:
        """Wait until ``n`` events reached the bot (held or queued behind)."""
        await until(lambda: self.waiting + self.cog._events.qsize() >= n, timeout=10)

    def release(self) -> None:
        self.bot.voting.on_reactions = self._apply
        self.gate.set()


# ---------------------------------------------------------------- forget-me, completely


def test_a_batch_skips_a_vanished_clip_and_counts_every_other_vote(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    p = store.create_project(
        guild_id=1, channel_id=2, title="t", created_by=9, slot_plan=[Slot(0, 0, 4)], state="open"
    )
    clips = []
    for member in (5, 6):
        j = store.add_job(
            project_id=p.id,
            member_id=member,
            prompt="x",
            channel_id=2,
            duration=4,
            aspect="16:9",
            seed=1,
        )
        store.claim_job(j.id, "local")
        clips.append(
            store.complete_job(
                j.id,
                media_key=f"{member:064d}.mp4",
                duration=4,
                width=64,
                height=36,
                fps=24,
                has_audio=True,
                size_bytes=100,
            )
        )
    kept, forgotten = clips
    store.forget_member(6)
    events = [(kept.id, 100 + i, "👍", True, 1.0) for i in range(500)]
    events.insert(250, (forgotten.id, 42, "👍", True, 1.0))  # its clip is gone
    assert store.apply_reactions(events, values=VALUES) == 500
    assert store.vote_tallies(p.id) == {kept.id: (500, 0)}
    store.close()


async def test_a_vote_on_a_forgotten_members_clip_does_not_lose_the_others_in_its_batch(guild):
    await guild.open_project()
    theirs = await guild.prompt_and_post(guild.alice, "to be forgotten")
    ours = await guild.prompt_and_post(guild.bob, "stays")
    # the voting cache learns alice's clip from a counted vote
    await guild.emu.add_reaction(guild.carol.id, guild.channel, theirs.message_id, "👍")
    await until(lambda: tally_is(guild, theirs, (1, 0)))
    await guild.env.bot.members.forget(guild.alice.id)  # her post stays up on Discord
    voters = [guild.emu.add_member(f"voter{i}") for i in range(12)]
    held = HeldVotes(guild)
    await guild.emu.add_reaction(guild.mod.id, guild.channel, ours.message_id, "👍")
    for i, v in enumerate(voters):
        if i == len(voters) // 2:
            await guild.emu.add_reaction(guild.mod.id, guild.channel, theirs.message_id, "👎")
        await guild.emu.add_reaction(v.id, guild.channel, ours.message_id, "👍")
    await held.received(2 + len(voters))
    held.release()  # the last 13 are applied as one batch, alice's clip in the middle
    await until(lambda: tally_is(guild, ours, (1 + len(voters), 0)))
    assert await guild.app.store.get_clip(theirs.id) is None
    assert all(c.member_id != guild.alice.id for c in held.bot.voting._clips_by_message.values())


# ---------------------------------------------------------------- reactions follow Discord


async def test_a_moderator_clearing_reactions_clears_the_votes(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "cleared")
    await guild.emu.add_reaction(guild.bob.id, guild.channel, clip.message_id, "👍")
    await guild.emu.add_reaction(guild.carol.id, guild.channel, clip.message_id, "👎")
    await until(lambda: tally_is(guild, clip, (1, 1)))
    await guild.emu.clear_reactions(guild.mod.id, guild.channel, clip.message_id)
    await until(lambda: tally_is(guild, clip, (0, 0)))
    assert await guild.app.store.clip_votes(clip.id) == []


async def test_clearing_one_emoji_leaves_the_other_vote_of_a_member_counting(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "one emoji cleared")
    await guild.emu.add_reaction(guild.carol.id, guild.channel, clip.message_id, "👎")
    await guild.emu.add_reaction(guild.carol.id, guild.channel, clip.message_id, "👍")
    await guild.emu.add_reaction(guild.bob.id, guild.channel, clip.message_id, "👍")
    await until(lambda: tally_is(guild, clip, (2, 0)))  # carol's later 👍 counts
    await guild.emu.clear_reactions(guild.mod.id, guild.channel, clip.message_id, "👍")
    await until(lambda: tally_is(guild, clip, (0, 1)))  # her 👎 is still on Discord
    assert guild.carol.id in guild.emu.reactions(guild.channel, clip.message_id)["👎"]


async def test_a_deleted_post_takes_its_clip_out_of_the_vote_and_the_cut(guild):
    await guild.open_project(slots=2)
    gone = await guild.prompt_and_post(guild.alice, "deleted by a moderator", slot=1)
    other = await guild.prompt_and_post(guild.bob, "still standing", slot=1)
    await guild.emu.add_reaction(guild.bob.id, guild.channel, gone.message_id, "👍")
    await guild.emu.add_reaction(guild.carol.id, guild.channel, gone.message_id, "👍")
    await until(lambda: tally_is(guild, gone, (2, 0)))  # it leads slot 1
    await guild.emu.delete_message(guild.mod.id, guild.channel, gone.message_id)
    await until(lambda: tally_is(guild, gone, None))
    assert await guild.app.store.clip_votes(gone.id) == []

    _, reply = await guild.slash(guild.carol, "clip", {"clip": gone.id})
    fields = {f["name"]: f["value"] for f in reply["embeds"][0]["fields"]}
    assert fields["Votes"] == "post deleted by a moderator — out of the vote"
    assert "Message" not in fields
    _, reply = await guild.slash(guild.carol, "leaderboard")
    text = reply["embeds"][0]["description"]
    assert f"#{other.id}" in text and f"#{gone.id}" not in text
    _, reply = await guild.slash(guild.carol, "project", subcommand="status")
    desc = reply["embeds"][0]["description"]
    assert f"clip #{other.id} (score 0) · 1 for it" in desc.splitlines()[0]
    project = await guild.app.store.get_project(gone.project_id)
    assert gone.id not in {s.clip_id for s in await guild.env.bot.cuts.choose(project)}

    # a moderator can still pin it; the storyboard says why it is there
    _, reply = await guild.slash(guild.mod, "cut", {"clip": gone.id, "slot": 2}, "pin")
    assert "post deleted by a moderator" in reply["content"]
    slots = await guild.env.bot.cuts.choose(project)
    pinned = next(s for s in slots if s.clip_id == gone.id)
    assert pinned.post_deleted and "POST DELETED" in cell_label(pinned)
    # ... but /cut include does not put it back to the vote
    _, reply = await guild.slash(guild.mod, "cut", {"clip": gone.id}, "include")
    assert "stays out" in reply["content"]
    assert gone.id not in {s.clip_id for s in await guild.env.bot.cuts.choose(project)}
    assert await tally(guild, gone) is None


async def test_reactions_on_a_deleted_post_in_the_same_batch_do_not_count(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "deleted mid batch")
    barrier = await clip_in_another_open_project(guild)
    held = HeldVotes(guild)
    await guild.emu.add_reaction(guild.mod.id, barrier.channel_id, barrier.message_id, "👎")
    await guild.emu.add_reaction(guild.bob.id, guild.channel, clip.message_id, "👍")
    await guild.emu.delete_message(guild.mod.id, guild.channel, clip.message_id)
    await guild.emu.add_reaction(guild.carol.id, barrier.channel_id, barrier.message_id, "👍")
    await held.received(4)
    held.release()
    await until(lambda: tally_is(guild, barrier, (1, 1)))
    assert await guild.app.store.clip_votes(clip.id) == []
    assert (await guild.app.store.get_clip(clip.id)).post_deleted_at is not None


async def test_a_bulk_delete_takes_every_clip_out(guild):
    await guild.open_project()
    a = await guild.prompt_and_post(guild.alice, "bulk one")
    b = await guild.prompt_and_post(guild.carol, "bulk two")
    await guild.emu.add_reaction(guild.bob.id, guild.channel, a.message_id, "👍")
    await until(lambda: tally_is(guild, a, (1, 0)))
    payload = discord.RawBulkMessageDeleteEvent(
        {
            "ids": [str(a.message_id), str(b.message_id)],
            "channel_id": str(guild.channel),
            "guild_id": str(guild.emu.guild_id),
        }
    )
    guild.env.bot.dispatch("raw_bulk_message_delete", payload)
    await until(lambda: tally_is(guild, b, None))
    assert await tally(guild, a) is None


async def test_a_post_deleted_while_the_bot_was_down_leaves_the_vote_on_start(guild):
    await guild.open_project()
    gone = await guild.prompt_and_post(guild.alice, "deleted while away")
    kept = await guild.prompt_and_post(guild.carol, "kept")
    await guild.emu.add_reaction(guild.bob.id, guild.channel, gone.message_id, "👍")
    await until(lambda: tally_is(guild, gone, (1, 0)))
    await guild.env.stop()
    await guild.emu.delete_message(guild.mod.id, guild.channel, gone.message_id)
    await guild.emu.add_reaction(guild.bob.id, guild.channel, kept.message_id, "👍")
    await guild.env.start(sync=False)  # start-up reconciliation: 404 Unknown Message
    assert await tally(guild, gone) is None
    assert await tally(guild, kept) == (1, 0)
    assert (await guild.app.store.get_clip(gone.id)).post_deleted_at is not None


# ---------------------------------------------------------------- late events


def test_a_reaction_counts_by_when_it_arrived_not_when_it_was_applied():
    assert in_time(10.0, is_open=True, closed_at=None)
    assert in_time(10.0, is_open=False, closed_at=10.5)
    assert not in_time(11.0, is_open=False, closed_at=10.5)
    assert not in_time(10.0, is_open=False, closed_at=None)


async def test_reactions_made_before_the_close_count_even_when_applied_after_it(guild):
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "a close call")
    barrier = await clip_in_another_open_project(guild)
    await guild.emu.add_reaction(guild.mod.id, guild.channel, clip.message_id, "👎")
    await until(lambda: tally_is(guild, clip, (0, 1)))
    held = HeldVotes(guild)
    await guild.emu.add_reaction(guild.bob.id, guild.channel, clip.message_id, "👍")
    await guild.emu.add_reaction(guild.carol.id, guild.channel, clip.message_id, "👍")
    await guild.emu.remove_reaction(guild.mod.id, guild.channel, clip.message_id, "👎")
    await held.received(3)
    # the close lands while those wait (as at the end of a long reconciliation)
    await guild.env.bot.projects.close(clip.project_id, by=guild.mod.id)
    # after the close: these do not count
    await guild.emu.add_reaction(guild.mod.id, guild.channel, clip.message_id, "👍")
    await guild.emu.remove_reaction(guild.bob.id, guild.channel, clip.message_id, "👍")
    await guild.emu.clear_reactions(guild.mod.id, guild.channel, clip.message_id, "👍")
    await guild.emu.add_reaction(guild.carol.id, barrier.channel_id, barrier.message_id, "👍")
    await held.received(7)
    held.release()
    await until(lambda: tally_is(guild, barrier, (1, 0)))
    assert await tally(guild, clip) == (2, 0)
    voters = {v.voter_id for v in await guild.app.store.clip_votes(clip.id)}
    assert voters == {guild.bob.id, guild.carol.id}
