"""The Discord emulator, driven by an unmodified discord.py client over loopback."""

from __future__ import annotations

import asyncio
import io
import json
import zlib
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bot.discord_endpoints import point_discord_py_at, reset_discord_py_endpoints
from bot.emulator import (
    ApiError,
    CommandNotAvailable,
    ComponentNotFound,
    DiscordEmulator,
    FileTooLarge,
    InteractionFailed,
    InvalidOptions,
    UnknownCommand,
)
from tests.emulator_fixtures import bot_options, running_bot, running_emulator

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x08" + b"\x00" * 40


def make_bot(**overrides: Any) -> commands.Bot:
    return commands.Bot(command_prefix="!", **bot_options(**overrides))


def collect(bot: discord.Client, event: str, convert: Any = lambda *a: a[0]) -> list[Any]:
    """Append ``convert(*args)`` of every ``event`` the bot dispatches to the returned list."""
    seen: list[Any] = []

    async def listener(*args: Any) -> None:
        seen.append(convert(*args))

    bot.add_listener(listener, event)
    return seen


async def until(probe: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not probe():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- connecting --------------------------------------------------------------------------


async def test_bot_gets_ready_with_guild_channels_roles_and_members() -> None:
    async with running_emulator() as emu:
        alice = emu.add_member("alice", roles=["Moderator"])
        bot = make_bot()
        async with running_bot(emu, bot):
            guild = bot.get_guild(emu.guild_id)
            assert guild is not None
            assert bot.user is not None and bot.user.id == emu.bot_user_id
            assert bot.application_id == emu.application_id
            assert {"general", "crowdcut", "moderators"} <= {c.name for c in guild.text_channels}
            assert {"@everyone", "Moderator", "Manager"} <= {r.name for r in guild.roles}
            member = guild.get_member(alice.id)
            assert member is not None and [r.name for r in member.roles] == [
                "@everyone",
                "Moderator",
            ]
            assert guild.member_count == len(guild.members) == 3
            assert guild.owner_id == emu.owner.id
            mods = guild.get_channel(emu.channels["moderators"])
            assert not mods.permissions_for(guild.default_role).view_channel
            assert mods.permissions_for(member).view_channel
            assert mods.permissions_for(guild.me).send_messages
        assert ("GET", "/gateway/bot", 200) in emu.requests


async def test_a_second_bot_after_the_first_stops_gets_ready_again() -> None:
    async with running_emulator() as emu:
        for _ in range(2):
            bot = make_bot()
            async with running_bot(emu, bot):
                assert bot.get_guild(emu.guild_id) is not None
        assert emu.gateway.ready_count == 2


async def test_a_reconnect_request_is_resumed_with_missed_events_replayed() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        resumed = collect(bot, "on_resumed", lambda: True)
        seen = collect(bot, "on_message", lambda m: m.content)
        async with running_bot(emu, bot, gateway_url=emu.gateway_url):
            alice = emu.add_member("alice")
            assert await emu.reconnect_bots() == 1
            # sent while the bot is between sockets: must arrive through the replay
            await emu.send_message(alice.id, emu.channels["general"], "while away")
            await until(lambda: resumed)
            await emu.send_message(alice.id, emu.channels["general"], "after")
            await until(lambda: "after" in seen)
            assert seen == ["while away", "after"]
            assert emu.gateway.ready_count == 1  # resumed, not re-identified


class NoIdentifyPauseBot(commands.Bot):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s before a repeated IDENTIFY; the emulator has no such limit."""


async def test_a_session_the_emulator_forgot_is_identified_again() -> None:
    async with running_emulator() as emu:
        bot = NoIdentifyPauseBot(command_prefix="!", **bot_options())
        readies = collect(bot, "on_ready", lambda: True)
        async with running_bot(emu, bot):
            assert await emu.reconnect_bots() == 1
            emu.gateway.sessions.clear()  # so the RESUME is answered INVALID_SESSION
            await until(lambda: emu.gateway.ready_count == 2 and len(readies) == 2)
            alice = emu.add_member("alice")
            await until(lambda: bot.get_guild(emu.guild_id).get_member(alice.id) is not None)


async def test_zstd_stream_is_spoken_when_discord_py_asks_for_it() -> None:
    from discord.utils import _ActiveDecompressionContext

    if _ActiveDecompressionContext.COMPRESSION_TYPE != "zstd-stream":
        pytest.skip("discord.py found no zstd here, so it asks for zlib-stream")
    async with running_emulator() as emu:
        bot = make_bot()
        async with running_bot(emu, bot):
            alice = emu.add_member("alice")
            await until(lambda: bot.get_guild(emu.guild_id).get_member(alice.id) is not None)


async def test_a_wrong_token_is_refused() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        point_discord_py_at(emu.api_base, None, bot)
        try:
            with pytest.raises(discord.LoginFailure):
                await bot.login("not-the-token")
        finally:
            await bot.close()
            reset_discord_py_endpoints(bot)
        assert ("GET", "/users/@me", 401) in emu.requests


async def test_refused_privileged_intents_close_the_gateway_with_4014() -> None:
    async with running_emulator(privileged_intents=False) as emu:
        bot = make_bot()
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with running_bot(emu, bot):
                pass


async def test_gateway_payloads_are_zlib_stream_compressed() -> None:
    async with running_emulator() as emu, aiohttp.ClientSession() as session:
        url = emu.gateway_url + "?v=10&encoding=json&compress=zlib-stream"
        async with session.ws_connect(url) as ws:
            inflate = zlib.decompressobj()
            hello = await ws.receive()
            assert hello.type == aiohttp.WSMsgType.BINARY and hello.data.endswith(
                b"\x00\x00\xff\xff"
            )
            assert json.loads(inflate.decompress(hello.data))["op"] == 10
            await ws.send_json(
                {"op": 2, "d": {"token": emu.bot_token, "intents": 1, "properties": {}}}
            )
            ready = json.loads(inflate.decompress((await ws.receive()).data))
            assert (ready["t"], ready["s"]) == ("READY", 1)
            assert ready["d"]["application"]["id"] == str(emu.application_id)
            guild = json.loads(inflate.decompress((await ws.receive()).data))
            assert (guild["t"], guild["s"]) == ("GUILD_CREATE", 2)
            await ws.send_json({"op": 1, "d": 2})
            ack = json.loads(inflate.decompress((await ws.receive()).data))
            assert ack["op"] == 11


async def test_messages_without_the_content_intent_arrive_blank() -> None:
    async with running_emulator() as emu:
        bot = make_bot(intents=discord.Intents.default())
        contents = collect(bot, "on_message", lambda m: m.content)
        async with running_bot(emu, bot):
            alice = emu.add_member("alice")
            await emu.send_message(alice.id, emu.channels["general"], "secret words")
            await emu.send_message(alice.id, emu.channels["general"], f"hey {emu.bot_user.mention}")
            await until(lambda: len(contents) == 2)
        assert contents == ["", f"hey <@{emu.bot_user_id}>"]


# -- application commands and interactions ---------------------------------------------------


def prompt_bot(emu: DiscordEmulator, seen: dict[str, Any]) -> commands.Bot:
    bot = make_bot()
    guild = discord.Object(emu.guild_id)

    @bot.hybrid_command(name="prompt", description="Submit a prompt")
    @app_commands.guilds(guild)
    async def prompt(
        ctx: commands.Context, text: str, image: discord.Attachment | None = None
    ) -> None:
        await ctx.defer()
        data = await image.read() if image else b""
        seen["text"], seen["bytes"] = text, data
        answer = f"queued {text!r} with {len(data)} bytes"
        if ctx.interaction is not None:
            await ctx.interaction.edit_original_response(content=answer)
        else:
            await ctx.send(answer)

    group = app_commands.Group(
        name="project",
        description="Projects",
        guild_ids=[emu.guild_id],
        default_permissions=discord.Permissions(manage_guild=True),
    )

    @group.command(name="open", description="Open a project")
    async def open_(interaction: discord.Interaction, title: str, slots: int) -> None:
        await interaction.response.send_message(
            f"opened {title} with {slots} slots", ephemeral=True
        )

    bot.tree.add_command(group)

    @bot.tree.command(name="later", description="Defers, then follows up", guild=guild)
    async def later(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send("here it is")
        await interaction.followup.send("and one more")

    @bot.tree.command(name="slow", description="Never answers", guild=guild)
    async def slow(interaction: discord.Interaction) -> None:
        seen["slow"] = interaction.id

    return bot


async def test_slash_command_with_attachment_is_synced_invoked_deferred_and_edited() -> None:
    async with running_emulator() as emu:
        seen: dict[str, Any] = {}
        bot = prompt_bot(emu, seen)
        alice = emu.add_member("alice")
        channel = emu.channels["crowdcut"]
        async with running_bot(emu, bot):
            with pytest.raises(UnknownCommand, match="was the tree synced"):
                await emu.invoke_slash(alice.id, channel, "prompt", {"text": "x"})
            await bot.tree.sync(guild=discord.Object(emu.guild_id))
            assert {c["name"] for c in emu.commands()} == {"prompt", "project", "later", "slow"}
            assert all(
                c["id"] and c["application_id"] == str(emu.application_id) for c in emu.commands()
            )

            it = await emu.invoke_slash(
                alice.id,
                channel,
                "prompt",
                {"text": "a red fox", "image": ("ref.png", PNG, "image/png")},
            )
            latency = await it.wait_acked(timeout=3.0)
            assert 0 <= latency < 3.0 and it.callback_type == 5
            reply = await it.wait_reply(timeout=5)
            assert reply["content"] == f"queued 'a red fox' with {len(PNG)} bytes"
            assert seen == {"text": "a red fox", "bytes": PNG}
            resolved = it.payload["data"]["resolved"]["attachments"]
            (attachment,) = resolved.values()
            assert attachment["content_type"] == "image/png" and attachment["width"] == 16
            assert emu.attachment_bytes(attachment) == PNG
            assert reply["interaction_metadata"]["user"]["id"] == str(alice.id)
            assert [m["id"] for m in emu.messages(channel)] == [reply["id"]]
            token = it.token
            assert ("PATCH", f"/webhooks/{emu.application_id}/{token}/messages/@original", 200) in (
                emu.requests
            )


async def test_the_first_follow_up_after_a_defer_replaces_the_thinking_message() -> None:
    async with running_emulator() as emu:
        bot = prompt_bot(emu, {})
        alice = emu.add_member("alice")
        channel = emu.channels["crowdcut"]
        async with running_bot(emu, bot):
            await bot.tree.sync(guild=discord.Object(emu.guild_id))
            it = await emu.invoke_slash(alice.id, channel, "later")
            assert (await it.wait_reply())["content"] == "here it is"
            await until(lambda: len(it.responses) == 2)
            assert [m["content"] for m in it.responses] == ["here it is", "and one more"]
            assert [m["content"] for m in emu.messages(channel)] == ["here it is", "and one more"]


async def test_subcommands_options_and_ephemeral_replies() -> None:
    async with running_emulator() as emu:
        bot = prompt_bot(emu, {})
        alice = emu.add_member("alice")
        boss = emu.add_member("boss", manage_guild=True)
        channel = emu.channels["crowdcut"]
        async with running_bot(emu, bot):
            await bot.tree.sync(guild=discord.Object(emu.guild_id))
            with pytest.raises(CommandNotAvailable):
                await emu.invoke_slash(
                    alice.id, channel, "project", {"title": "t", "slots": 3}, subcommand="open"
                )
            with pytest.raises(InvalidOptions, match="needs a subcommand"):
                await emu.invoke_slash(boss.id, channel, "project")
            with pytest.raises(InvalidOptions, match="requires option 'slots'"):
                await emu.invoke_slash(
                    boss.id, channel, "project", {"title": "t"}, subcommand="open"
                )
            with pytest.raises(InvalidOptions, match="wants an integer"):
                await emu.invoke_slash(
                    boss.id, channel, "project", {"title": "t", "slots": "3"}, subcommand="open"
                )
            with pytest.raises(UnknownCommand):
                await emu.invoke_slash(boss.id, channel, "project", {}, subcommand="shut")
            it = await emu.invoke_slash(
                boss.id, channel, "project", {"title": "Summer", "slots": 3}, subcommand="open"
            )
            reply = await it.wait_reply(timeout=5)
            assert reply["content"] == "opened Summer with 3 slots"
            assert reply["flags"] & 64
            assert [m["content"] for m in emu.messages(channel, viewer=boss.id)] == [
                reply["content"]
            ]
            assert emu.messages(channel, viewer=alice.id) == []
            assert emu.messages(channel) == []


async def test_an_unanswered_interaction_fails_and_a_second_callback_is_refused() -> None:
    async with running_emulator(interaction_timeout=0.3) as emu:
        seen: dict[str, Any] = {}
        bot = prompt_bot(emu, seen)
        alice = emu.add_member("alice")
        channel = emu.channels["crowdcut"]
        async with running_bot(emu, bot):
            await bot.tree.sync(guild=discord.Object(emu.guild_id))
            it = await emu.invoke_slash(alice.id, channel, "slow")
            with pytest.raises(InteractionFailed, match="did not respond"):
                await it.wait_acked(timeout=2)
            assert it.failed and seen["slow"] == it.id

        # a raw second callback, as a buggy client would send it
        async with aiohttp.ClientSession() as session:
            emu.interaction_timeout = 3.0
            it = await emu.invoke_slash(alice.id, channel, "prompt", {"text": "x"})
            url = f"{emu.api_base}/interactions/{it.id}/{it.token}/callback"
            async with session.post(url, json={"type": 5}) as first:
                assert first.status == 204
            async with session.post(url, json={"type": 4, "data": {"content": "late"}}) as second:
                assert second.status == 400
                assert await second.json() == {
                    "message": "Interaction has already been acknowledged.",
                    "code": 40060,
                }


async def test_a_button_on_a_persistent_view_reaches_its_callback() -> None:
    clicks: list[int] = []

    class Vote(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.button(label="Vote", custom_id="crowdcut:vote:up:1")
        async def up(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            clicks.append(interaction.user.id)
            await interaction.response.edit_message(content=f"{len(clicks)} vote(s)")

    async with running_emulator() as emu:
        bot = make_bot()

        async def setup_hook() -> None:
            bot.add_view(Vote())

        bot.setup_hook = setup_hook  # type: ignore[method-assign]
        alice = emu.add_member("alice")
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            sent = await channel.send("0 votes", view=Vote())
            button = sent.components[0].children[0]
            assert button.custom_id == "crowdcut:vote:up:1"
            with pytest.raises(ComponentNotFound):
                await emu.click_button(alice.id, sent.id, "nope")
            it = await emu.click_button(alice.id, sent.id, "crowdcut:vote:up:1")
            updated = await it.wait_reply(timeout=5)
            assert clicks == [alice.id]
            assert it.callback_type == 7 and updated["content"] == "1 vote(s)"
            assert emu.get_message(emu.channels["crowdcut"], sent.id)["content"] == "1 vote(s)"


async def test_a_deferred_button_update_then_an_edit_is_the_reply() -> None:
    class Work(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.button(label="Go", custom_id="crowdcut:work:go:1")
        async def go(self, interaction: discord.Interaction, _b: discord.ui.Button) -> None:
            await interaction.response.defer()  # type 6: no "thinking" message
            await asyncio.sleep(0.05)
            await interaction.edit_original_response(content="done", view=None)
            await interaction.followup.send("only you see this", ephemeral=True)

    async with running_emulator() as emu:
        bot = make_bot()
        alice = emu.add_member("alice")
        bob = emu.add_member("bob")
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            sent = await channel.send("work", view=Work())
            it = await emu.click_button(alice.id, sent.id, "crowdcut:work:go:1")
            assert await it.wait_acked() < 3 and it.callback_type == 6
            reply = await it.wait_reply()
            assert (reply["id"], reply["content"], reply["components"]) == (
                str(sent.id),
                "done",
                [],
            )
            await until(lambda: len(it.responses) == 2)
            assert it.responses[1]["content"] == "only you see this"
            assert it.responses[1]["flags"] & 64
            assert [m["content"] for m in emu.messages(channel.id, viewer=bob.id)] == ["done"]
            assert len(emu.messages(channel.id, viewer=alice.id)) == 2


async def test_a_member_can_dm_the_bot_and_the_bot_answers() -> None:
    async with running_emulator() as emu:
        bot = make_bot()

        @bot.command()
        async def hi(ctx: commands.Context) -> None:
            await ctx.send(f"hi {ctx.author.name}, in {type(ctx.channel).__name__}")

        alice = emu.add_member("alice")
        async with running_bot(emu, bot):
            dm = emu.open_dm(alice.id)
            await emu.send_message(alice.id, dm, "!hi")
            reply = await emu.wait_for_message(
                dm, lambda m: m["author"]["bot"] if "bot" in m["author"] else False, timeout=5
            )
        assert reply["content"] == "hi alice, in DMChannel"
        assert emu.dm_channel_id(alice.id) == dm


async def test_a_select_then_a_modal_reach_the_bot_and_its_answers_come_back() -> None:
    class Rename(discord.ui.Modal, title="Rename"):
        name = discord.ui.TextInput(
            label="New name", custom_id="crowdcut:rename:name", max_length=20
        )

        async def on_submit(self, interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"renamed to {self.name.value}", ephemeral=True)

    class Pick(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.select(
            custom_id="crowdcut:pick:slot:1",
            options=[
                discord.SelectOption(label="Intro", value="intro"),
                discord.SelectOption(label="Outro", value="outro"),
            ],
        )
        async def pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
            await interaction.response.send_modal(Rename())

    async with running_emulator() as emu:
        bot = make_bot()
        alice = emu.add_member("alice")
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            sent = await channel.send("pick a slot", view=Pick())
            with pytest.raises(InvalidOptions):
                await emu.choose(alice.id, sent.id, "crowdcut:pick:slot:1", ["middle"])
            it = await emu.choose(alice.id, sent.id, "crowdcut:pick:slot:1", ["outro"])
            await it.wait_acked()
            assert it.callback_type == 9 and it.modal["title"] == "Rename"
            with pytest.raises(InvalidOptions, match="requires"):
                await emu.submit_modal(it, {})
            submitted = await emu.submit_modal(it, {"crowdcut:rename:name": "Finale"})
            reply = await submitted.wait_reply()
            assert reply["content"] == "renamed to Finale" and reply["flags"] & 64


async def test_new_channels_and_role_changes_reach_the_bot() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        alice = emu.add_member("alice")
        async with running_bot(emu, bot):
            guild = bot.get_guild(emu.guild_id)
            channel_id = emu.add_channel("showcase", topic="finished videos")
            emu.set_roles(alice.id, ["Moderator"])
            await until(lambda: guild.get_channel(channel_id) is not None)
            await until(
                lambda: [r.name for r in guild.get_member(alice.id).roles][-1] == "Moderator"
            )
            assert emu.channels["showcase"] == channel_id


# -- messages, files, reactions --------------------------------------------------------------


async def test_a_prefix_command_sees_the_attachment_bytes() -> None:
    async with running_emulator() as emu:
        seen: dict[str, Any] = {}
        bot = prompt_bot(emu, seen)
        bob = emu.add_member("bob")
        channel = emu.channels["crowdcut"]
        async with running_bot(emu, bot):
            since = emu.revision
            await emu.send_message(
                bob.id,
                channel,
                "!prompt a-paper-boat",
                attachments=[("boat.png", PNG, "image/png")],
            )
            reply = await emu.wait_for_message(
                channel, lambda m: m["author"]["id"] == str(emu.bot_user_id), since=since, timeout=5
            )
        assert seen == {"text": "a-paper-boat", "bytes": PNG}
        assert reply["content"] == f"queued 'a-paper-boat' with {len(PNG)} bytes"
        assert (
            "GET",
            f"/attachments/{channel}/{emu.messages(channel)[0]['attachments'][0]['id']}/boat.png",
            200,
        ) in emu.requests


async def test_a_file_the_bot_sends_comes_back_as_message_create() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        created = collect(bot, "on_message")
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            sent = await channel.send(
                "the cut",
                file=discord.File(io.BytesIO(b"\x00mp4"), "final cut.mp4"),
                embed=discord.Embed(title="Final", description="v1"),
            )
            await until(lambda: created)
            assert [m.id for m in created] == [sent.id]
            echoed = created[0]
            assert echoed.attachments[0].filename == "final_cut.mp4"
            assert echoed.attachments[0].content_type == "video/mp4"
            assert await echoed.attachments[0].read() == b"\x00mp4"
            assert echoed.embeds[0].title == "Final"
            edited = await sent.edit(content="the cut (v2)", attachments=[])
            assert edited.attachments == [] and edited.content == "the cut (v2)"
            await sent.delete()
            assert emu.messages(emu.channels["crowdcut"]) == []
        record = next(
            r for r in emu.request_log if r.method == "POST" and r.route.endswith("/messages")
        )
        assert record.content_type == "multipart/form-data" and record.files == ["final cut.mp4"]


async def test_reactions_dispatch_raw_events_and_fetch_reports_counts() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        raw = collect(bot, "on_raw_reaction_add", lambda p: ("add", p.user_id, str(p.emoji)))
        removed = collect(
            bot, "on_raw_reaction_remove", lambda p: ("remove", p.user_id, str(p.emoji))
        )
        alice = emu.add_member("alice")
        channel_id = emu.channels["crowdcut"]
        async with running_bot(emu, bot):
            channel = bot.get_channel(channel_id)
            msg = await channel.send("vote here")
            await msg.add_reaction("👍")
            await emu.add_reaction(alice.id, channel_id, msg.id, "👍")
            await emu.add_reaction(alice.id, channel_id, msg.id, "🔥")
            fetched = await channel.fetch_message(msg.id)
            counts = {str(r.emoji): (r.count, r.me) for r in fetched.reactions}
            assert counts == {"👍": (2, True), "🔥": (1, False)}
            users = [u.id async for u in fetched.reactions[0].users()]
            assert sorted(users) == sorted([emu.bot_user_id, alice.id])
            await emu.remove_reaction(alice.id, channel_id, msg.id, "👍")
            await msg.remove_reaction("🔥", discord.Object(alice.id))
            await until(lambda: len(raw) == 3 and len(removed) == 2)
            assert raw == [
                ("add", emu.bot_user_id, "👍"),
                ("add", alice.id, "👍"),
                ("add", alice.id, "🔥"),
            ]
            assert removed == [("remove", alice.id, "👍"), ("remove", alice.id, "🔥")]
            fetched = await channel.fetch_message(msg.id)
            assert [(str(r.emoji), r.count) for r in fetched.reactions] == [("👍", 1)]


async def test_a_file_over_the_upload_limit_is_a_413() -> None:
    async with running_emulator(upload_limit=1024) as emu:
        bot = make_bot()
        alice = emu.add_member("alice")
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            with pytest.raises(discord.HTTPException) as caught:
                await channel.send(file=discord.File(io.BytesIO(b"x" * 2048), "big.bin"))
            assert caught.value.status == 413 and caught.value.code == 40005
            assert emu.messages(emu.channels["crowdcut"]) == []
            with pytest.raises(FileTooLarge):
                await emu.send_message(
                    alice.id, emu.channels["crowdcut"], "", attachments=[("big.bin", b"x" * 2048)]
                )
            # the connection survives: the next upload works
            ok = await channel.send(file=discord.File(io.BytesIO(b"x" * 10), "small.bin"))
            assert ok.attachments[0].size == 10


async def test_what_discord_refuses_is_refused_and_changes_nothing() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            with pytest.raises(discord.HTTPException) as too_long:
                await channel.send("x" * 2001)
            assert (too_long.value.status, too_long.value.code) == (400, 50035)
            assert "2000 or fewer" in str(too_long.value)
            sent = await channel.send("keep me")
            with pytest.raises(discord.HTTPException) as empty:
                await sent.edit(content="")
            assert empty.value.code == 50006
            assert emu.get_message(channel.id, sent.id)["content"] == "keep me"
            mods = bot.get_channel(emu.channels["moderators"])
            await mods.send("the bot may post here")


async def test_a_429_is_retried_by_discord_py_and_succeeds() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            emu.rate_limit_next("POST", r"/channels/\d+/messages$", retry_after=0.2)
            loop = asyncio.get_running_loop()
            start = loop.time()
            sent = await channel.send("hello")
            assert loop.time() - start >= 0.2
            statuses = [s for (m, p, s) in emu.requests if m == "POST" and p.endswith("/messages")]
            assert statuses == [429, 200]
            assert emu.get_message(channel.id, sent.id)["content"] == "hello"

            emu.rate_limit_next("GET", r"^/users/\d+$", retry_after=0.1, global_=True)
            user = await bot.fetch_user(emu.owner.id)
            assert user.name == emu.owner.name
            assert [s for (m, p, s) in emu.requests if p == f"/users/{emu.owner.id}"] == [429, 200]


async def test_allowed_mentions_none_pings_nobody() -> None:
    async with running_emulator() as emu:
        bot = make_bot()
        alice = emu.add_member("alice")
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            text = f"@everyone look, {alice.mention} and <@&{emu.roles['Moderator']}>"
            quiet = await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
            loud = await channel.send(text)
        quiet_d = emu.get_message(channel.id, quiet.id)
        loud_d = emu.get_message(channel.id, loud.id)
        assert (quiet_d["mention_everyone"], quiet_d["mentions"], quiet_d["mention_roles"]) == (
            False,
            [],
            [],
        )
        assert loud_d["mention_everyone"] is True
        assert [u["id"] for u in loud_d["mentions"]] == [str(alice.id)]
        assert loud_d["mention_roles"] == [str(emu.roles["Moderator"])]


async def test_members_cannot_post_where_they_cannot_see() -> None:
    async with running_emulator() as emu:
        alice = emu.add_member("alice")
        mod = emu.add_member("mod", roles=["Moderator"])
        with pytest.raises(ApiError) as caught:
            await emu.send_message(alice.id, emu.channels["moderators"], "hi mods")
        assert caught.value.code == 50001
        msg = await emu.send_message(mod.id, emu.channels["moderators"], "hi mods")
        assert msg["author"]["id"] == str(mod.id)


async def test_unknown_routes_and_missing_auth_get_discord_error_bodies() -> None:
    async with running_emulator() as emu, aiohttp.ClientSession() as session:
        auth = {"Authorization": f"Bot {emu.bot_token}"}
        async with session.get(f"{emu.api_base}/guilds/{emu.guild_id}/bans", headers=auth) as r:
            assert r.status == 404
            assert await r.json() == {"message": "404: Not Found", "code": 0}
        async with session.get(f"{emu.api_base}/users/@me") as r:
            assert r.status == 401
        async with session.get(f"{emu.api_base}/channels/1/messages/2", headers=auth) as r:
            assert (r.status, (await r.json())["code"]) == (404, 10003)
        async with session.get(f"{emu.api_base}/users/@me", headers=auth) as r:
            assert r.headers["Content-Type"] == "application/json"
            assert {
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "X-RateLimit-Reset-After",
                "X-RateLimit-Bucket",
            } <= set(r.headers)
