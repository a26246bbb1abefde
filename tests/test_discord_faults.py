"""crowdcut on a bad day: each fault Discord (or the disk) can throw at the bot, end to end
with the unmodified discord.py client on the emulator. Each test checks what members and
moderators see, that nothing accepted is lost, that nothing is posted twice (posts are
counted per clip), and that the bot keeps running. ``docs/reliability.md`` is the matrix.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

from bot.emulator.state import ATTACH_FILES, MANAGE_MESSAGES
from tests.discord_env import env, guild, until  # noqa: F401
from tests.test_discord_restart import clip_posts

__all__ = ["env", "guild"]

MESSAGES = r"^/channels/\d+/messages$"


class LoopLag:
    """The longest the event loop kept a 50 ms timer waiting past its time: anything that
    holds the loop (a synchronous read, SQLite, ffmpeg, a CPU-bound parse) shows here."""

    period = 0.05

    def __init__(self) -> None:
        self.worst = 0.0
        self.samples = 0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, loop.time() - start - self.period)
            self.samples += 1


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[LoopLag]:
    lag = LoopLag()
    task = asyncio.create_task(lag._run())
    try:
        yield lag
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def status_posts(emu: Any, channel: int, job_id: int) -> list[dict]:
    return [m for m in emu.messages(channel) if m["content"].startswith(f"🎬 **Job #{job_id}**")]


async def prompt(guild: Any, who: Any, text: str) -> int:
    """A member prompts; returns the job id from the answer they see."""
    _, reply = await guild.slash(who, "prompt", {"text": text})
    assert "Accepted as job #" in reply["content"], reply["content"]
    return int(reply["content"].split("job #")[1].split(" ")[0])


async def posted(guild: Any, job_id: int) -> Any:
    clip = await guild.app.store.clip_for_job(job_id)
    return clip if clip and clip.message_id else None


def report(fault: str, **figures: Any) -> None:
    """The figures ``docs/reliability.md`` quotes (shown with ``pytest -s``)."""
    print(f"\n[{fault}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


async def status_shows(guild: Any, job_id: int, text: str) -> bool:
    posts = status_posts(guild.emu, guild.channel, job_id)
    return len(posts) == 1 and text in posts[0]["content"]


# -- 1. Discord answers 500 and 503 for a while ------------------------------------------


async def test_an_outage_of_500s_and_503s_posts_each_clip_once_when_discord_recovers(guild):
    await guild.open_project()
    emu = guild.emu
    async with loop_lag() as lag:
        # real-time renders: still rendering when their status messages show (those wait
        # for a burst of commands to pass)
        jobs = [await prompt(guild, guild.alice, "a lighthouse in a storm [slow]")]
        jobs.append(await prompt(guild, guild.bob, "a ferry at dawn [slow]"))
        for job_id in jobs:
            await until(lambda j=job_id: status_shows(guild, j, "Job #"))
        # while the clips render, Discord starts failing every message create: six 503s
        # (discord.py hands those straight back), then two 500s answered after the upload
        # was made (discord.py retries those itself, 1 s and 3 s later, with the nonce)
        unavailable = emu.fail_requests("POST", MESSAGES, status=503, times=6)
        created_500 = emu.fail_requests("POST", MESSAGES, status=500, times=2, after_handling=True)
        clips = [await until(lambda j=j: posted(guild, j), timeout=40) for j in jobs]
        for job_id in jobs:
            await until(lambda j=job_id: status_shows(guild, j, "✅ Posted"), timeout=20)
        # the bot kept answering members all along
        _, reply = await guild.slash(guild.carol, "queue")
    assert unavailable.hits == 6 and created_500.hits == 2
    posts = [len(clip_posts(emu, guild.channel, c.id)) for c in clips]
    assert posts == [1, 1]
    assert [len(status_posts(emu, guild.channel, j)) for j in jobs] == [1, 1]
    assert reply["content"] or reply["embeds"]
    assert not await guild.app.store.effects(state="failed")
    # what stalls remain is CPU contention (ffmpeg renders on the same cores), not a hold
    assert lag.samples > 20 and lag.worst < 0.5, f"the loop was held for {lag.worst:.3f}s"
    report(
        "500/503",
        failed_answers=unavailable.hits + created_500.hits,
        posts_per_clip=posts,
        loop_lag_ms=round(lag.worst * 1000),
    )


# -- 2. a 429 storm on one route ------------------------------------------------------------


async def test_a_429_storm_on_message_creates_leaves_other_routes_working(guild):
    await guild.open_project()
    emu = guild.emu
    first = await prompt(guild, guild.alice, "a kite over the dunes [slow]")  # still rendering
    await until(lambda: status_shows(guild, first, "Job #"))
    storm = emu.rate_limit_next("POST", MESSAGES, retry_after=0.2, times=None, duration=60)
    # members are answered at once: interaction callbacks are another route
    it = await emu.invoke_slash(guild.bob.id, guild.channel, "prompt", {"text": "a red tram"})
    ack = await it.wait_acked(timeout=3.0)
    second = int((await it.wait_reply())["content"].split("job #")[1].split(" ")[0])
    _, queue = await guild.slash(guild.carol, "queue")
    # the first job's status message is edited as it moves (PATCH is not limited), while
    # its clip post and the second job's status message wait out the storm
    await until(lambda: status_shows(guild, first, "posting the clip"), timeout=30)
    assert not status_posts(emu, guild.channel, second)
    assert not await posted(guild, first)
    await until(lambda: storm.hits >= 10)
    hits = storm.hits
    emu.clear_faults()
    clips = [await until(lambda j=j: posted(guild, j), timeout=30) for j in (first, second)]
    for job_id in (first, second):
        await until(lambda j=job_id: status_shows(guild, j, "✅ Posted"), timeout=20)
    await until(lambda: all(len(emu.reactions(guild.channel, c.message_id)) == 2 for c in clips))
    posts = [len(clip_posts(emu, guild.channel, c.id)) for c in clips]
    assert posts == [1, 1]
    assert [len(status_posts(emu, guild.channel, j)) for j in (first, second)] == [1, 1]
    assert ack < 3.0 and (queue["content"] or queue["embeds"])
    assert not await guild.app.store.effects(state="failed")
    report("429 storm", answers_429=hits, ack_s=round(ack, 3), posts_per_clip=posts)


# -- 3. the gateway drops the bot ---------------------------------------------------------


async def votes_of(guild: Any, clip_id: int) -> dict[int, int]:
    return {v.voter_id: v.value for v in await guild.app.store.clip_votes(clip_id)}


async def no_wait(shard_id: int | None, *, initial: bool = False) -> None:
    return None


async def has_vote(guild: Any, clip_id: int, user_id: int) -> bool:
    return (await votes_of(guild, clip_id)).get(user_id) == 1


async def test_gateway_closes_and_invalid_sessions_lose_no_votes_and_commands_work(guild):
    emu = guild.emu
    await guild.open_project()
    clip = await guild.prompt_and_post(guild.alice, "a lantern festival")
    voters = [guild.bob, guild.carol, guild.mod, emu.add_member("dave"), emu.add_member("erin")]
    faults = [
        ("close 4000 (resumable)", lambda: emu.close_gateway(4000)),
        ("close 4009 (session timed out)", lambda: emu.close_gateway(4009)),
        ("INVALID_SESSION d=false", lambda: emu.invalidate_session(resumable=False)),
        ("INVALID_SESSION d=true", lambda: emu.invalidate_session(resumable=True)),
        ("close 4007 (invalid seq)", lambda: emu.close_gateway(4007)),
    ]
    readies = emu.gateway.ready_count
    # discord.py waits 5 s before each IDENTIFY after the first (Discord's identify limit,
    # which the emulator does not have); the waits would only make this test slow
    guild.env.bot.before_identify_hook = no_wait
    for (name, fault), voter in zip(faults, voters, strict=True):
        assert await fault() == 1, name
        # a vote cast while the bot is away: replayed on a RESUME, recounted after a READY
        await emu.add_reaction(voter.id, guild.channel, clip.message_id, "👍")
        await until(lambda v=voter: has_vote(guild, clip.id, v.id), timeout=20)
    await until(lambda: guild.env.bot.is_ready())
    _, card = await guild.slash(guild.bob, "clip", {"clip": clip.id})
    await prompt(guild, guild.bob, "after the storm, a rainbow")
    assert len(clip_posts(emu, guild.channel, clip.id)) == 1
    assert card["embeds"] and f"#{clip.id}" in card["embeds"][0]["title"]
    votes = await votes_of(guild, clip.id)
    assert votes == {v.id: 1 for v in voters}
    report(
        "gateway",
        faults=len(faults),
        new_sessions=emu.gateway.ready_count - readies,
        votes_during_gaps=len(votes),
    )


# -- 4. the bot loses Attach Files and Manage Messages ------------------------------------


def notices(emu: Any, channel: int) -> list[dict]:
    return [
        m
        for m in emu.messages(channel)
        if m["author"]["id"] == str(emu.bot_user.id) and "crowdcut is missing the" in m["content"]
    ]


def forbidden(emu: Any) -> int:
    return sum(1 for (_m, _p, status) in emu.requests if status == 403)


async def forget(guild: Any, who: Any) -> dict:
    _, reply = await guild.slash(who, "forgetme")
    button = reply["components"][0]["components"][0]["custom_id"]
    it = await guild.emu.click_button(who.id, int(reply["id"]), button)
    return await until(
        lambda: it.original if "Deleted" in (it.original or {}).get("content", "") else None
    )


async def test_lost_permissions_get_one_notice_and_the_work_waits_for_them(guild):
    emu = guild.emu
    await guild.open_project()
    gone = await guild.prompt_and_post(guild.alice, "a snowglobe city")
    channel = guild.env.bot.get_channel(guild.channel)
    emu.revoke_bot_permissions(ATTACH_FILES | MANAGE_MESSAGES, channel_id=guild.channel)
    await until(lambda: not channel.permissions_for(channel.guild.me).attach_files)
    job = await prompt(guild, guild.bob, "a paper crane takes off")
    # the clip cannot be uploaded: moderators read one notice, the member's status waits
    notice = (await until(lambda: notices(emu, guild.channel), timeout=30))[0]
    assert "Attach Files" in notice["content"] and "Nothing is lost" in notice["content"]
    await until(lambda: status_shows(guild, job, "posting the clip"))
    # forget-me takes down crowdcut's own posts, which needs no Manage Messages
    done = await forget(guild, guild.alice)
    await until(lambda: not clip_posts(emu, guild.channel, gone.id))
    waiting = await guild.app.store.effects(state="pending", kind="post_clip")
    assert len(waiting) == 1 and waiting[0].last_error.startswith("missing permission")
    refused = forbidden(emu)
    emu.restore_bot_permissions(ATTACH_FILES | MANAGE_MESSAGES, channel_id=guild.channel)
    clip = await until(lambda: posted(guild, job), timeout=30)
    await until(lambda: status_shows(guild, job, "✅ Posted"))
    posts = len(clip_posts(emu, guild.channel, clip.id))
    assert posts == 1 and refused == forbidden(emu) == 1
    assert len(notices(emu, guild.channel)) == 1
    assert "Deleted" in done["content"]
    report("permissions", answers_403=refused, notices=1, posts_per_clip=[posts])


# -- 5. the channel is deleted ------------------------------------------------------------


async def test_a_deleted_channel_gives_up_its_effects_and_other_channels_carry_on(guild):
    emu = guild.emu
    await guild.open_project()
    other = emu.channels["general"]
    it = await emu.invoke_slash(
        guild.mod.id, other, "project", {"title": "Elsewhere"}, subcommand="create"
    )
    await it.wait_reply()
    # real-time render: still generating when its channel goes (status messages wait for
    # a burst of commands to pass, so by the time one shows a quick render could be done)
    doomed = await prompt(guild, guild.alice, "a castle made of sand [slow]")
    await until(lambda: status_shows(guild, doomed, "Job #"))
    deleted = guild.channel
    emu.delete_channel(deleted)
    await until(lambda: guild.env.bot.get_channel(deleted) is None)
    it = await emu.invoke_slash(guild.bob.id, other, "prompt", {"text": "a moth to a flame"})
    reply = await it.wait_reply(timeout=30)
    fine = int(reply["content"].split("job #")[1].split(" ")[0])
    clip = await until(lambda: posted(guild, fine), timeout=40)
    assert len(clip_posts(emu, other, clip.id)) == 1
    # the deleted channel's clip was made, and its post given up for good
    failed = await until(lambda: guild.app.store.effects(state="failed", kind="post_clip"), 40)
    assert [e.payload["clip_id"] for e in failed] == [
        (await guild.app.store.clip_for_job(doomed)).id
    ]
    assert "channel" in failed[0].last_error
    assert not await posted(guild, doomed)
    it = await emu.invoke_slash(guild.mod.id, other, "project", {}, subcommand="status")
    status = await it.wait_reply()
    assert "Elsewhere" in str(status)
    assert guild.env.bot.is_ready() and not guild.env.bot.is_closed()
    report("channel deleted", failed_effects=len(failed), posts_elsewhere=[1])


# -- 6. the database's disk is full -------------------------------------------------------

#: SQLite's largest page count: no limit
NO_LIMIT = 1073741823


async def fill_database(app: Any, full: bool) -> int:
    """Make the bot's database full (``full``) or give it room again, on its writer thread.

    ``max_page_count`` at the file's size makes any write that needs one more page fail with
    SQLITE_FULL ("database or disk is full"), as a full disk does. The outbox's last page
    is then topped up with finished filler rows, so that the next prompt's row (a job and
    its status effect) surely needs a new page."""
    store = app.store

    def run() -> int:
        db = store.sync.db
        if full:
            size = db.execute("pragma page_count").fetchone()[0]
            db.execute(f"pragma max_page_count = {size}")
            for n in (2000, 1000, 500, 250, 120, 60, 30, 15, 8, 4, 2, 1):
                with contextlib.suppress(sqlite3.OperationalError):
                    while True:
                        db.execute(
                            "insert into outbox (kind, key, payload, state, attempts, "
                            "created_at) values ('filler', 'filler:' || hex(randomblob(8)), "
                            "?, 'done', 0, 0)",
                            ["x" * n],
                        )
        else:
            db.execute(f"pragma max_page_count = {NO_LIMIT}")
        return db.execute("pragma max_page_count").fetchone()[0]

    return await asyncio.get_running_loop().run_in_executor(store._writer_pool, run)


async def test_a_full_disk_refuses_new_prompts_loses_nothing_and_recovers(guild, caplog):
    app = guild.app
    await guild.open_project()
    first = await guild.prompt_and_post(guild.alice, "a whale in the clouds")
    accepted = await prompt(guild, guild.carol, "a train through the snow")
    jobs_before = await app.store.job_counts()
    await fill_database(app, full=True)
    refused = []
    for who, text in ((guild.bob, "a fox in the rain"), (guild.alice, "a second idea")):
        _, reply = await guild.slash(who, "prompt", {"text": text})
        refused.append(reply["content"])
    assert all("storage is full" in r and "operator has been told" in r for r in refused), refused
    assert "database" in caplog.text and "is full" in caplog.text
    _, queue = await guild.slash(guild.bob, "queue")  # reading still works
    assert sum((await app.store.job_counts()).values()) == sum(jobs_before.values())
    # the job accepted before finishes rendering, and cannot record its clip: it waits
    await until(lambda: f"job {accepted} waits: the database is full" in caplog.text, 30)
    await fill_database(app, full=False)
    again = await prompt(guild, guild.bob, "a fox in the rain")
    clips = [await until(lambda j=j: posted(guild, j), timeout=40) for j in (accepted, again)]
    clips.insert(0, first)
    posts = [len(clip_posts(guild.emu, guild.channel, c.id)) for c in clips]
    assert posts == [1, 1, 1]
    counts = await app.store.job_counts()
    assert counts.get("done") == 3 and not counts.get("failed")
    report(
        "disk full",
        prompts_refused=len(refused),
        jobs_before=sum(jobs_before.values()),
        jobs_after=sum(counts.values()),
        posts_per_clip=posts,
    )
