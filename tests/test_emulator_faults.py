"""The emulator's Discord as it misbehaves, and as it is on a bad day: nonces, 5xx and 429
storms, lost permissions, deleted channels, dropped gateway sessions, long histories,
moderators clearing reactions, and a second guild."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bot.emulator import ApiError, DiscordEmulator
from bot.emulator.state import ATTACH_FILES, EVERYONE_PERMISSIONS, MANAGE_MESSAGES, SEND_MESSAGES
from tests.emulator_fixtures import bot_options, running_bot, running_emulator

MESSAGES = r"^/channels/\d+/messages$"


class Bot(commands.Bot):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s before a repeated IDENTIFY; the emulator has no such limit."""


def make_bot(**overrides: Any) -> Bot:
    return Bot(command_prefix="!", **bot_options(**overrides))


def collect(bot: discord.Client, event: str, convert: Any = lambda *a: a[0]) -> list[Any]:
    seen: list[Any] = []

    async def listener(*args: Any) -> None:
        seen.append(convert(*args))

    bot.add_listener(listener, event)
    return seen


async def until(probe: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def statuses(emu: DiscordEmulator, method: str, suffix: str) -> list[int]:
    return [s for (m, p, s) in emu.requests if m == method and p.endswith(suffix)]


def created(emu: DiscordEmulator, channel_id: int) -> list[str]:
    return [
        d["id"]
        for (e, d) in emu.gateway_events
        if e == "MESSAGE_CREATE" and d["channel_id"] == str(channel_id)
    ]


# -- nonces -------------------------------------------------------------------------------


async def test_a_repeated_nonce_returns_the_first_message_and_dispatches_nothing() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            first = await channel.send("clip 7", nonce="crowdcut-post-7")
            again = await channel.send("clip 7", nonce="crowdcut-post-7")
            assert again.id == first.id
            # a file upload carries the nonce in payload_json
            upload = await channel.send(
                file=discord.File(io.BytesIO(b"\x00mp4"), "c.mp4"), nonce="crowdcut-file-7"
            )
            upload_again = await channel.send(
                file=discord.File(io.BytesIO(b"\x00mp4"), "c.mp4"), nonce="crowdcut-file-7"
            )
            assert upload_again.id == upload.id
            # the same nonce elsewhere is another message
            other = bot.get_channel(emu.channels["general"])
            assert (await other.send("clip 7", nonce="crowdcut-post-7")).id != first.id
        assert len(emu.messages(channel.id)) == 2
        assert created(emu, channel.id) == [str(first.id), str(upload.id)]
        bodies = [r.body for r in emu.request_log if r.route == "/channels/{channel_id}/messages"]
        assert all(b["enforce_nonce"] is True for b in bodies)


async def test_a_nonce_without_enforce_nonce_does_not_deduplicate() -> None:
    async with running_emulator() as emu, aiohttp.ClientSession() as http:
        url = f"{emu.api_base}/channels/{emu.channels['crowdcut']}/messages"
        auth = {"Authorization": f"Bot {emu.bot_token}"}
        ids = []
        for body in (
            {"content": "a", "nonce": "n1"},
            {"content": "a", "nonce": "n1"},
            {"content": "a", "nonce": "n1", "enforce_nonce": True},
            {"content": "a", "nonce": "n1", "enforce_nonce": True},
        ):
            async with http.post(url, json=body, headers=auth) as r:
                assert r.status == 200
                ids.append((await r.json())["id"])
        assert len(set(ids)) == 3 and ids[2] == ids[3]
        async with http.post(
            url, json={"content": "a", "nonce": "x" * 26, "enforce_nonce": True}, headers=auth
        ) as r:
            assert (r.status, (await r.json())["code"]) == (400, 50035)


# -- 5xx ----------------------------------------------------------------------------------


async def test_a_create_answered_500_happened_and_a_retry_with_its_nonce_finds_it() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            fault = emu.fail_requests("POST", MESSAGES, 500, times=1, after_handling=True)
            # discord.py retries a 500 once a second later, with the same body
            sent = await channel.send("clip 8 is ready", nonce="crowdcut-post-8")
            assert fault.hits == 1 and statuses(emu, "POST", "/messages") == [500, 200]
            assert [m["id"] for m in emu.messages(channel.id)] == [str(sent.id)]
            assert created(emu, channel.id) == [str(sent.id)]


async def test_a_create_answered_500_without_a_nonce_leaves_a_message_behind() -> None:
    async with running_emulator() as emu, aiohttp.ClientSession() as http:
        channel_id = emu.channels["crowdcut"]
        url = f"{emu.api_base}/channels/{channel_id}/messages"
        auth = {"Authorization": f"Bot {emu.bot_token}"}
        emu.fail_requests("POST", MESSAGES, 500, times=2, after_handling=True)
        for _ in range(3):
            async with http.post(url, json={"content": "hello"}, headers=auth) as r:
                last = r.status, await r.json()
        assert last[0] == 200
        assert [m["content"] for m in emu.messages(channel_id)] == ["hello"] * 3


async def test_an_outage_answers_503_for_a_while_and_changes_nothing() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            fault = emu.fail_requests("POST", MESSAGES, 503, times=None, duration=0.3)
            for _ in range(2):
                with pytest.raises(discord.DiscordServerError) as caught:
                    await channel.send("status")
                assert caught.value.status == 503
            await bot.fetch_channel(channel.id)  # other routes work
            assert emu.messages(channel.id) == []
            await until(lambda: fault.spent)
            await channel.send("status")
            assert fault.hits == 2 and len(emu.messages(channel.id)) == 1


# -- 429 ----------------------------------------------------------------------------------


async def test_a_429_storm_on_one_route_is_waited_out() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            storm = emu.rate_limit_next("POST", MESSAGES, retry_after=0.05, times=3)
            start = time.monotonic()
            fetch = asyncio.create_task(bot.fetch_channel(channel.id))
            sent = await channel.send("after the storm")
            assert time.monotonic() - start >= 0.15
            assert statuses(emu, "POST", "/messages") == [429, 429, 429, 200]
            assert (await fetch).id == channel.id  # another route was not limited
            assert storm.hits == 3 and emu.get_message(channel.id, sent.id)


async def test_429_answers_carry_discords_headers_and_body() -> None:
    async with running_emulator() as emu, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bot {emu.bot_token}"}
        url = f"{emu.api_base}/channels/{emu.channels['crowdcut']}/messages"
        emu.rate_limit_next("POST", MESSAGES, retry_after=1.5, times=None, duration=5)
        for _ in range(2):
            async with http.post(url, json={"content": "x"}, headers=auth) as r:
                body, headers = await r.json(), r.headers
                assert r.status == 429
                assert body == {
                    "message": "You are being rate limited.",
                    "retry_after": 1.5,
                    "global": False,
                    "code": 0,
                }
                assert headers["Retry-After"] == "2" and headers["X-RateLimit-Scope"] == "user"
                assert headers["X-RateLimit-Remaining"] == "0" and headers["X-RateLimit-Bucket"]
                assert float(headers["X-RateLimit-Reset-After"]) == 1.5
        emu.clear_faults()
        emu.rate_limit_next("*", r".", retry_after=0.2, global_=True, times=1)
        async with http.get(f"{emu.api_base}/users/@me", headers=auth) as r:
            assert r.status == 429 and (await r.json())["global"] is True
            assert r.headers["X-RateLimit-Global"] == "true"
            assert r.headers["X-RateLimit-Scope"] == "global"
        async with http.post(url, json={"content": "x"}, headers=auth) as r:
            assert r.status == 200


async def test_a_global_429_holds_every_route_of_discord_py() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            emu.rate_limit_next("POST", MESSAGES, retry_after=0.3, global_=True)
            send = asyncio.create_task(channel.send("a"))
            await until(lambda: statuses(emu, "POST", "/messages") == [429])
            start = time.monotonic()
            await bot.fetch_user(emu.owner.id)  # another route waits for the global limit
            assert time.monotonic() - start >= 0.25
            await send
            assert statuses(emu, "POST", "/messages") == [429, 200]


# -- permissions and deleted channels -------------------------------------------------------


async def test_a_bot_that_lost_attach_files_and_manage_messages_gets_50013() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        alice = emu.add_member("alice")
        channel_id = emu.channels["crowdcut"]
        async with running_bot(emu, bot):
            guild = bot.get_guild(emu.guild_id)
            channel = guild.get_channel(channel_id)
            theirs = await emu.send_message(alice.id, channel_id, "hi")
            ours = await channel.send("vote")
            await emu.add_reaction(alice.id, channel_id, ours.id, "👍")
            emu.revoke_bot_permissions(ATTACH_FILES | MANAGE_MESSAGES, channel_id)
            await until(lambda: not channel.permissions_for(guild.me).attach_files)
            assert not channel.permissions_for(guild.me).manage_messages
            attempts = [
                channel.send(file=discord.File(io.BytesIO(b"1"), "a.txt")),
                ours.edit(attachments=[discord.File(io.BytesIO(b"1"), "b.txt")]),
                channel.get_partial_message(int(theirs["id"])).delete(),
                ours.clear_reactions(),
                ours.clear_reaction("👍"),
                ours.remove_reaction("👍", discord.Object(alice.id)),
            ]
            for attempt in attempts:
                with pytest.raises(discord.Forbidden) as caught:
                    await attempt
                assert caught.value.code == 50013
            await channel.send("text still works")
            assert emu.reactions(channel_id, ours.id) == {"👍": [alice.id]}
            assert len(emu.messages(channel_id)) == 3
            emu.restore_bot_permissions(ATTACH_FILES | MANAGE_MESSAGES, channel_id)
            await until(lambda: channel.permissions_for(guild.me).attach_files)
            await channel.send(file=discord.File(io.BytesIO(b"1"), "a.txt"))
            await ours.clear_reactions()
            assert emu.reactions(channel_id, ours.id) == {}


async def test_role_permission_changes_reach_the_bot() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        async with running_bot(emu, bot):
            guild = bot.get_guild(emu.guild_id)
            channel = guild.get_channel(emu.channels["general"])
            emu.set_role_permissions("@everyone", EVERYONE_PERMISSIONS & ~ATTACH_FILES)
            emu.set_role_permissions(emu.bot_user.name, SEND_MESSAGES)
            await until(lambda: not channel.permissions_for(guild.me).attach_files)
            with pytest.raises(discord.Forbidden) as caught:
                await channel.send(file=discord.File(io.BytesIO(b"1"), "a.txt"))
            assert caught.value.code == 50013
        assert ("GUILD_ROLE_UPDATE") in [e for (e, _d) in emu.gateway_events]


async def test_a_deleted_channel_is_unknown_afterwards() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        deleted = collect(bot, "on_guild_channel_delete", lambda c: c.id)
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            posted = await channel.send("status")
            emu.delete_channel(channel.id)
            await until(lambda: deleted == [channel.id])
            assert bot.get_channel(channel.id) is None
            for attempt in (
                channel.send("status"),
                posted.edit(content="status 2"),
                channel.fetch_message(posted.id),
                posted.add_reaction("👍"),
            ):
                with pytest.raises(discord.NotFound) as caught:
                    await attempt
                assert caught.value.code == 10003
        assert "crowdcut" not in emu.channels


# -- the gateway --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [4000, 4008])
async def test_a_resumable_close_is_resumed_with_what_was_missed(code: int) -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        resumed = collect(bot, "on_resumed", lambda: True)
        seen = collect(bot, "on_message", lambda m: m.content)
        async with running_bot(emu, bot, gateway_url=emu.gateway_url):
            alice = emu.add_member("alice")
            assert await emu.close_gateway(code) == 1
            await emu.send_message(alice.id, emu.channels["general"], "while away")
            await until(lambda: resumed)
            await emu.send_message(alice.id, emu.channels["general"], "after")
            await until(lambda: "after" in seen)
            assert seen == ["while away", "after"]
            assert emu.gateway.ready_count == 1


@pytest.mark.parametrize("code", [4007, 4009])
async def test_a_non_resumable_close_makes_discord_py_identify_again(code: int) -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        readies = collect(bot, "on_ready", lambda: True)
        async with running_bot(emu, bot, gateway_url=emu.gateway_url):
            assert await emu.close_gateway(code) == 1
            await until(lambda: emu.gateway.ready_count == 2 and len(readies) == 2)
            alice = emu.add_member("alice")
            await until(lambda: bot.get_guild(emu.guild_id).get_member(alice.id) is not None)
        assert len(emu.gateway.sessions) <= 1


async def test_invalid_session_false_identifies_and_true_resumes() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        readies = collect(bot, "on_ready", lambda: True)
        resumed = collect(bot, "on_resumed", lambda: True)
        async with running_bot(emu, bot, gateway_url=emu.gateway_url):
            assert await emu.invalidate_session(resumable=False) == 1
            await until(lambda: emu.gateway.ready_count == 2 and len(readies) == 2)
            assert await emu.invalidate_session(resumable=True) == 1
            await until(lambda: resumed)
            assert emu.gateway.ready_count == 2
            alice = emu.add_member("alice")
            await until(lambda: bot.get_guild(emu.guild_id).get_member(alice.id) is not None)


# -- history ------------------------------------------------------------------------------


async def test_a_bot_pages_through_everything_after_a_time() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        alice = emu.add_member("alice")
        channel_id = emu.channels["crowdcut"]
        async with running_bot(emu, bot):
            channel = bot.get_channel(channel_id)
            await emu.send_message(alice.id, channel_id, "before the clip")
            # snowflakes count milliseconds: let the clock move on either side of ``since``
            await asyncio.sleep(0.002)
            since = datetime.now(UTC)
            await asyncio.sleep(0.002)
            clip = await channel.send("clip #1")
            for i in range(230):
                await emu.send_message(alice.id, channel_id, f"status {i}")
            found = [m async for m in channel.history(limit=None, after=since, oldest_first=True)]
            assert len(found) == 231 and found[0].id == clip.id
            assert [m.content for m in found[1:3]] == ["status 0", "status 1"]
            newest = [m async for m in channel.history(limit=120)]
            assert newest[0].content == "status 229" and newest[-1].content == "status 110"
        pages = [r.query for r in emu.request_log if r.route == "/channels/{channel_id}/messages"]
        assert all(int(q.get("limit", 50)) <= 100 for q in pages)


async def test_history_answers_newest_first_in_every_direction() -> None:
    async with running_emulator() as emu, aiohttp.ClientSession() as http:
        alice = emu.add_member("alice")
        channel_id = emu.channels["crowdcut"]
        ids = [int((await emu.send_message(alice.id, channel_id, str(i)))["id"]) for i in range(10)]
        auth = {"Authorization": f"Bot {emu.bot_token}"}

        async def page(query: str) -> list[int]:
            url = f"{emu.api_base}/channels/{channel_id}/messages?{query}"
            async with http.get(url, headers=auth) as r:
                assert r.status == 200, await r.text()
                return [int(m["id"]) for m in await r.json()]

        assert await page("limit=3") == ids[:-4:-1]
        assert await page(f"before={ids[5]}&limit=3") == [ids[4], ids[3], ids[2]]
        assert await page(f"after={ids[5]}&limit=3") == [ids[8], ids[7], ids[6]]
        assert await page(f"after={ids[0] - 1}&limit=2") == [ids[1], ids[0]]
        assert await page(f"around={ids[5]}&limit=3") == [ids[6], ids[5], ids[4]]
        assert await page(f"after={ids[9]}") == []
        assert await page("") == ids[::-1]
        for bad in ("limit=0", "limit=101", "after=x"):
            url = f"{emu.api_base}/channels/{channel_id}/messages?{bad}"
            async with http.get(url, headers=auth) as r:
                assert (r.status, (await r.json())["code"]) == (400, 50035)


# -- reactions and deletions by moderators -------------------------------------------------


async def test_moderators_clear_reactions_and_delete_messages_with_raw_events() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        cleared = collect(bot, "on_raw_reaction_clear", lambda p: p.message_id)
        cleared_emoji = collect(
            bot, "on_raw_reaction_clear_emoji", lambda p: (p.message_id, str(p.emoji))
        )
        deleted = collect(bot, "on_raw_message_delete", lambda p: p.message_id)
        alice = emu.add_member("alice")
        mod = emu.add_member("mod", roles=["Moderator"])
        channel_id = emu.channels["crowdcut"]
        async with running_bot(emu, bot):
            channel = bot.get_channel(channel_id)
            a, b, c = [await channel.send(t) for t in ("a", "b", "c")]
            for msg in (a, b):
                await emu.add_reaction(alice.id, channel_id, msg.id, "👍")
                await emu.add_reaction(mod.id, channel_id, msg.id, "👎")
            with pytest.raises(ApiError) as refused:
                await emu.clear_reactions(alice.id, channel_id, a.id)
            assert refused.value.code == 50013
            assert await emu.clear_reactions(mod.id, channel_id, a.id)
            assert await emu.clear_reactions(mod.id, channel_id, b.id, "👍")
            assert not await emu.clear_reactions(mod.id, channel_id, b.id, "👍")
            await emu.delete_message(mod.id, channel_id, c.id)
            await until(lambda: cleared and cleared_emoji and deleted)
            assert (cleared, cleared_emoji, deleted) == ([a.id], [(b.id, "👍")], [c.id])
            assert (await channel.fetch_message(a.id)).reactions == []
            fetched = await channel.fetch_message(b.id)
            assert [(str(r.emoji), r.count) for r in fetched.reactions] == [("👎", 1)]
            assert [u.id async for u in fetched.reactions[0].users()] == [mod.id]
            with pytest.raises(discord.NotFound):
                await channel.fetch_message(c.id)
            # the bot may clear too, with Manage Messages
            await b.clear_reaction("👎")
            await a.add_reaction("🔥")
            await a.clear_reactions()
            assert emu.reactions(channel_id, a.id) == emu.reactions(channel_id, b.id) == {}
            with pytest.raises(ApiError):
                await emu.delete_message(alice.id, channel_id, b.id)


# -- two guilds ---------------------------------------------------------------------------


async def test_a_bot_in_two_guilds_sees_both_and_runs_commands_in_each() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        joined = collect(bot, "on_guild_join", lambda g: g.id)
        seen: list[tuple[int, int]] = []

        @bot.tree.command(name="where", description="Where am I")
        async def where(interaction: discord.Interaction) -> None:
            assert interaction.guild is not None
            seen.append((interaction.guild.id, interaction.user.id))
            await interaction.response.send_message(f"in {interaction.guild.name}")

        second = emu.add_guild("second server")
        alice = emu.add_member("alice")
        bob = emu.add_member("bob", roles=["Moderator"], guild_id=second.id)
        emu.join_guild(alice.id, second.id, roles=["Manager"])
        async with running_bot(emu, bot):
            assert {g.id for g in bot.guilds} == {emu.guild_id, second.id}
            g2 = bot.get_guild(second.id)
            assert g2.name == "second server" and set(second.channels) == {
                "general",
                "crowdcut",
                "moderators",
            }
            assert {c.id for c in g2.text_channels} == set(second.channels.values())
            assert [r.name for r in g2.get_member(bob.id).roles] == ["@everyone", "Moderator"]
            assert bot.get_guild(emu.guild_id).get_member(bob.id) is None
            assert g2.get_member(alice.id) is not None
            await bot.tree.sync()  # global commands: both guilds
            it = await emu.invoke_slash(bob.id, second.channels["crowdcut"], "where")
            assert (await it.wait_reply())["content"] == "in second server"
            it = await emu.invoke_slash(alice.id, emu.channels["crowdcut"], "where")
            assert (await it.wait_reply())["content"] == "in crowdcut test server"
            assert seen == [(second.id, bob.id), (emu.guild_id, alice.id)]
            with pytest.raises(ApiError):  # bob is not in the first guild
                await emu.send_message(bob.id, emu.channels["crowdcut"], "hi")
            guild_cmd = app_commands.Command(name="only", description="d", callback=_only)
            bot.tree.add_command(guild_cmd, guild=discord.Object(second.id))
            await bot.tree.sync(guild=discord.Object(second.id))
            assert [c["name"] for c in emu.commands(guild=second.id)] == ["only"]
            assert emu.commands() == []
            third = emu.add_guild("third")
            await until(lambda: joined == [third.id])
            channel_id = emu.add_channel("clips", guild_id=third.id)
            await until(lambda: bot.get_channel(channel_id) is not None)
            assert bot.get_channel(channel_id).guild.id == third.id
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bot {emu.bot_token}"}
            async with http.get(f"{emu.api_base}/guilds/{second.id}/channels", headers=auth) as r:
                assert {int(c["id"]) for c in await r.json()} == set(second.channels.values())


async def _only(interaction: discord.Interaction) -> None:
    await interaction.response.send_message("only here")
