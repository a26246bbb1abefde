"""A Discord emulator on 127.0.0.1 for tests and ``crowdcut demo``.

It speaks enough of Discord's REST API v10 and Gateway for the **unmodified
discord.py client** (``commands.Bot`` with app commands, views and buttons,
hybrid and prefix commands with message content) to run a real bot against it,
and it lets a test act as the guild's members.

Pointing discord.py at it
-------------------------
::

    from bot.discord_endpoints import point_discord_py_at

    emu = await DiscordEmulator().start()
    point_discord_py_at(emu.api_base, None, bot)   # sets discord.http.Route.BASE
    await bot.login(emu.bot_token)
    asyncio.create_task(bot.connect())

``api_base`` (``http://127.0.0.1:PORT/api/v10``) becomes ``discord.http.Route.BASE``
(process-wide: REST, webhooks and interaction callbacks all build URLs from it).
With no gateway URL given, the client's first connect asks ``GET /gateway/bot``,
which the emulator answers with its own ``ws://127.0.0.1:PORT/gateway``; pass
``emu.gateway_url`` (or the DISCORD_GATEWAY_URL setting) to skip that call.
:func:`bot.discord_endpoints.reset_discord_py_endpoints` undoes it.
``tests/emulator_fixtures.py`` wraps all of this in ``running_bot(emu, bot)``.

Driver API
----------
::

    emu = DiscordEmulator(upload_limit=10 * 1024 * 1024, interaction_timeout=3.0)
    await emu.start()            # binds 127.0.0.1:0; also ``async with DiscordEmulator() as emu``
    emu.api_base, emu.gateway_url, emu.bot_token, emu.application_id, emu.bot_user_id
    emu.guild_id
    emu.channels                 # {"general": id, "crowdcut": id, "moderators": id}
    emu.roles                    # {"@everyone": id, "Moderator": id, "Manager": id, "crowdcut": id}
    emu.owner, emu.bot_user      # EmuUser(id, name)

    m = emu.add_member("alice", roles=["Moderator"], bot=False, manage_guild=False)  # -> EmuUser
    msg = await emu.send_message(m.id, channel_id, "text",
                                 attachments=[("ref.png", b"...", "image/png")], reply_to=None)
    it = await emu.invoke_slash(m.id, channel_id, "prompt",
                                {"text": "...", "image": ("ref.png", data, "image/png")},
                                subcommand=None)          # or "sub" / "group sub"
    it = await emu.click_button(m.id, message_id, custom_id)
    it = await emu.choose(m.id, message_id, custom_id, ["value"])      # string select
    it2 = await emu.submit_modal(it, {"text-input-custom-id": "typed"})  # after a modal answer
    await it.wait_acked(timeout=3.0)   # -> seconds from dispatch to the first callback
    await it.wait_reply(timeout=10.0)  # -> the answer the member sees (not "thinking")
    it.responses, it.original, it.ack_latency, it.callback_type, it.failed, it.modal
    await emu.add_reaction(m.id, channel_id, message_id, "👍")
    await emu.remove_reaction(m.id, channel_id, message_id, "👍")
    emu.messages(channel_id, viewer=m.id)     # oldest first, as that member sees them
    emu.get_message(channel_id, message_id, viewer=None)
    await emu.wait_for_message(channel_id, predicate, timeout=10, viewer=None, since=None)
    emu.revision                              # pass as ``since`` to close races
    emu.attachment_bytes(attachment_dict)     # -> bytes
    emu.commands(guild=True)                  # what the application synced
    emu.set_upload_limit(n)
    emu.requests                              # (method, path, status), path relative to api_base
    emu.request_log                           # RequestRecord: route template, query, body, response
    emu.gateway_events                        # (event, data) dispatched
    emu.dm_channel_id(user_id), emu.open_dm(user_id)   # DMs between a member and the bot
    emu.add_channel("name", topic=None, guild_id=None) -> id          # CHANNEL_CREATE
    emu.set_roles(user_id, ["Moderator"], guild_id=None)              # GUILD_MEMBER_UPDATE
    await emu.wait_for_bot()
    await emu.close()

More guilds (each built like the first: the same three channels, four roles and owner)::

    g2 = emu.add_guild("second server")       # -> EmuGuild; GUILD_CREATE (on_guild_join)
    g2.id, g2.name, g2.channels, g2.roles, g2.member_ids
    emu.guild(guild_id=None), emu.guilds      # handles; READY lists every guild
    emu.add_member("bob", roles=["Moderator"], guild_id=g2.id)
    emu.join_guild(alice.id, g2.id, roles=[])  # an existing user joins another guild
    emu.commands(guild=g2.id)                 # what was synced to that guild

Moderators and admins::

    await emu.delete_message(mod.id, channel_id, message_id)    # MESSAGE_DELETE
    await emu.clear_reactions(mod.id, channel_id, message_id)   # MESSAGE_REACTION_REMOVE_ALL
    await emu.clear_reactions(mod.id, channel_id, message_id, "👍")  # ..._REMOVE_EMOJI
    emu.reactions(channel_id, message_id)     # {"👍": [user ids]}: what GET reactions serves
    emu.delete_channel(channel_id)            # CHANNEL_DELETE; then 404 code 10003
    emu.revoke_bot_permissions(ATTACH_FILES | MANAGE_MESSAGES, channel_id=None)  # CHANNEL_UPDATE
    emu.restore_bot_permissions(ATTACH_FILES | MANAGE_MESSAGES, channel_id=None)
    emu.set_channel_overwrite(channel_id, role_or_user_id, allow=0, deny=0)      # CHANNEL_UPDATE
    emu.set_role_permissions("@everyone", bits, guild_id=None)               # GUILD_ROLE_UPDATE

Faults (``path_regex`` is searched in the path relative to the API base; ``times`` or
``duration`` seconds or both; each returns a ``Fault`` whose ``hits`` counts answers)::

    emu.rate_limit_next("POST", r"/channels/\\d+/messages$", retry_after=0.3, global_=False,
                        times=1, duration=None)                    # one 429, or a storm
    emu.fail_requests("POST", r"/channels/\\d+/messages$", status=503, times=1)  # nothing done
    emu.fail_requests("POST", r"...", status=500, times=1, after_handling=True)
                                              # the message IS created, the client sees 500
    emu.clear_faults()
    emu.set_rate_limit(limit=50, window=1.0)  # the ordinary per-route bucket
    await emu.reconnect_bots()                # op 7: bots RESUME
    await emu.close_gateway(4000)             # resumable close: RESUME, missed events replayed
    await emu.close_gateway(4009)             # 4007/4009: RESUME refused, bots IDENTIFY again
    await emu.invalidate_session(resumable=False)   # op 9 d=false: IDENTIFY; d=true: RESUME

Messages sent with ``nonce`` and ``enforce_nonce: true`` (discord.py sets both when
given ``nonce=``) are created once per channel, author and nonce within five minutes;
a repeat returns the first message and dispatches nothing. ``GET .../messages`` takes
``before``/``after``/``around`` and ``limit`` 1..100 and answers newest first, as
Discord does (with ``after``: the ``limit`` oldest messages after it, newest first).

``interaction_timeout`` is the ack deadline (3 s like Discord); an interaction
not answered by then fails, and a late callback gets 404 Unknown interaction.
discord.py waits 5 s before any IDENTIFY that is not its first
(``Client.before_identify_hook``); override that hook in tests that re-identify.

Messages are dicts in Discord's REST shape. Driver refusals raise
:class:`DriverError` subclasses; permission refusals from the model raise
:class:`ApiError` (Discord's status and code).

Standalone: ``python -m bot.emulator --port 8765`` prints the api base, gateway
URL and bot token.
"""

from __future__ import annotations

from bot.emulator.driver import (
    CommandNotAvailable,
    ComponentNotFound,
    DriverError,
    EmuGuild,
    FileTooLarge,
    Interaction,
    InteractionFailed,
    InvalidOptions,
    UnknownCommand,
)
from bot.emulator.rest import Fault, RequestRecord
from bot.emulator.server import DiscordEmulator
from bot.emulator.state import ApiError, EmuUser

__all__ = [
    "ApiError",
    "CommandNotAvailable",
    "ComponentNotFound",
    "DiscordEmulator",
    "DriverError",
    "EmuGuild",
    "EmuUser",
    "Fault",
    "FileTooLarge",
    "Interaction",
    "InteractionFailed",
    "InvalidOptions",
    "RequestRecord",
    "UnknownCommand",
]
