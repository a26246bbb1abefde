"""What tests and ``crowdcut demo`` do *as the people in the guild*.

:class:`EmulatorDriver` is mixed into :class:`~bot.emulator.server.DiscordEmulator`;
its methods play members: they post messages, use slash commands, click buttons
and react, each exactly as the Discord client would make Discord announce it on
the gateway. They also read the guild the way a member sees it (ephemeral
messages only for their owner) and wait for the bot's answers.

The Discord client refuses some things before Discord ever sees them; the driver
refuses them too, with :class:`DriverError` subclasses: an unknown or unsynced
slash command, a missing required option, an option of the wrong type, a file
over the upload limit, a command the member may not see
(``default_member_permissions``), a button that does not exist or is disabled.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bot.emulator.state import (
    ADD_REACTIONS,
    ADMINISTRATOR,
    FLAG_LOADING,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_MESSAGE_COMPONENT,
    INTERACTION_MODAL_SUBMIT,
    MANAGE_MESSAGES,
    USE_APPLICATION_COMMANDS,
    VIEW_CHANNEL,
    Channel,
    EmuUser,
    InteractionRecord,
    StoredMessage,
    UploadedFile,
    find_component,
    parse_emoji,
)

if TYPE_CHECKING:
    from bot.emulator.gateway import Gateway
    from bot.emulator.state import EmulatorState

log = logging.getLogger(__name__)

#: a file as the driver takes it: (filename, bytes) or (filename, bytes, content type)
FileSpec = tuple[str, bytes] | tuple[str, bytes, str]

OPTION_SUB_COMMAND = 1
OPTION_SUB_COMMAND_GROUP = 2
OPTION_STRING = 3
OPTION_INTEGER = 4
OPTION_BOOLEAN = 5
OPTION_USER = 6
OPTION_CHANNEL = 7
OPTION_ROLE = 8
OPTION_MENTIONABLE = 9
OPTION_NUMBER = 10
OPTION_ATTACHMENT = 11


class DriverError(Exception):
    """The driver was asked for something a Discord member could not do."""


class UnknownCommand(DriverError, LookupError):
    """No synced application command (or subcommand) has that name."""


class InvalidOptions(DriverError, ValueError):
    """Options missing, unknown, or not of the command's declared type."""


class CommandNotAvailable(DriverError, PermissionError):
    """The member's client would not offer this command (permissions, context)."""


class FileTooLarge(DriverError, ValueError):
    """The Discord client refuses to upload a file over the guild's limit."""


class ComponentNotFound(DriverError, LookupError):
    """No usable button with that custom id on that message."""


class InteractionFailed(DriverError):
    """The member saw "This interaction failed" (the application did not respond)."""


class EmuGuild:
    """A guild as the driver sees it: ``id``, ``name``, ``channels`` and ``roles`` by name."""

    def __init__(self, state: EmulatorState, guild_id: int) -> None:
        self._state = state
        self.id = guild_id

    def __repr__(self) -> str:
        return f"<EmuGuild id={self.id} name={self.name!r}>"

    @property
    def name(self) -> str:
        return self._state.guilds[self.id].name

    @property
    def channels(self) -> dict[str, int]:
        return {c.name: c.id for c in self._state.channels.values() if c.guild_id == self.id}

    @property
    def roles(self) -> dict[str, int]:
        return {r.name: r.id for r in self._state.guilds[self.id].roles.values()}

    @property
    def member_ids(self) -> list[int]:
        return list(self._state.guilds[self.id].members)


class Interaction:
    """The member's side of one interaction: the ack, the reply, the follow-ups."""

    def __init__(self, driver: EmulatorDriver, record: InteractionRecord) -> None:
        self._driver = driver
        self.record = record

    def __repr__(self) -> str:
        r = self.record
        return (
            f"<Interaction id={r.id} type={r.type} callback={r.callback_type} expired={r.expired}>"
        )

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def token(self) -> str:
        return self.record.token

    @property
    def payload(self) -> dict[str, Any]:
        """The INTERACTION_CREATE data that was dispatched."""
        return self.record.payload

    @property
    def acked(self) -> bool:
        return self.record.acked

    @property
    def failed(self) -> bool:
        """True once the ack deadline passed without a callback."""
        return self.record.expired

    @property
    def ack_latency(self) -> float | None:
        """Seconds from the INTERACTION_CREATE frame being sent to the bot (written to its
        socket) to the first callback arriving, or None while unanswered."""
        r = self.record
        return None if r.acked_at is None else r.acked_at - (r.sent_at or r.created_at)

    @property
    def callback_type(self) -> int | None:
        """4 message, 5 deferred, 6 deferred update, 7 update, 8 autocomplete, 9 modal."""
        return self.record.callback_type

    @property
    def modal(self) -> dict[str, Any] | None:
        return self.record.modal

    @property
    def original(self) -> dict[str, Any] | None:
        """The original response (for 6/7: the message the button is on), as the member sees it."""
        mid = self.record.original_message_id
        msg = self._driver.state.messages.get(mid) if mid is not None else None
        if msg is None or not msg.visible_for(self.record.user_id):
            return None
        return msg.render(self.record.user_id)

    @property
    def responses(self) -> list[dict[str, Any]]:
        """Original response then follow-ups as the member sees them (``flags`` & 64: ephemeral)."""
        state = self._driver.state
        out = []
        original = self.original
        if original is not None:
            out.append(original)
        for mid in self.record.followup_ids:
            msg = state.messages[mid]
            if msg.visible_for(self.record.user_id):
                out.append(msg.render(self.record.user_id))
        return out

    async def wait_acked(self, timeout: float = 3.0) -> float:
        """Wait for the first callback; return its latency in seconds.

        Raises :class:`InteractionFailed` when the deadline passes first.
        """
        r = self.record
        try:
            await self._driver._wait_until(lambda: r.acked or r.expired, timeout)
        except TimeoutError:
            raise InteractionFailed(
                f"interaction {r.id} was not acknowledged within {timeout:.1f}s"
            ) from None
        if r.expired and not r.acked:
            raise InteractionFailed("The application did not respond")
        assert self.ack_latency is not None
        return self.ack_latency

    async def wait_reply(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the member sees a real answer and return that message.

        That is the original response once it is no longer "thinking" (callback 4,
        or 5 then an edit / first follow-up), the updated message for 7, and for 6
        the first edit of the message or the first follow-up.
        """
        r = self.record
        state = self._driver.state

        def ready() -> dict[str, Any] | None:
            if r.expired and not r.acked:
                raise InteractionFailed("The application did not respond")
            if r.callback_type == 9:
                raise DriverError("the application answered with a modal (see .modal)")
            if r.callback_type in (4, 7):
                return self.original
            if r.callback_type == 5:
                original = self.original
                if original is not None and not original["flags"] & FLAG_LOADING:
                    return original
                if original is None and r.followup_ids:
                    return self.responses[0] if self.responses else None
            if r.callback_type == 6:
                if r.edited_after_ack:
                    return self.original
                for mid in r.followup_ids:
                    if state.messages[mid].visible_for(r.user_id):
                        return state.messages[mid].render(r.user_id)
            return None

        try:
            return await self._driver._wait_until(ready, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no reply to interaction {r.id} within {timeout:.1f}s "
                f"(callback type {r.callback_type}, responses {self.responses})"
            ) from None


class EmulatorDriver:
    """Mixin of :class:`DiscordEmulator`: the members' actions and the test's view."""

    state: EmulatorState
    gateway: Gateway
    interaction_timeout: float

    def _init_driver(self) -> None:
        self._changed = asyncio.Event()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self.state.on_change = self._notify

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, probe: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = probe()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            event = self._changed
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                pass

    async def _settle(self) -> None:
        # let the gateway writer tasks put what was just dispatched on the wire
        await asyncio.sleep(0)

    # -- people -----------------------------------------------------------------------

    def add_member(
        self,
        name: str,
        roles: Iterable[str] = (),
        bot: bool = False,
        manage_guild: bool = False,
        *,
        guild_id: int | None = None,
    ) -> EmuUser:
        """Add a member (dispatches GUILD_MEMBER_ADD). ``manage_guild`` adds the "Manager" role.

        ``guild_id`` picks the guild (the first one by default).
        """
        role_names = list(roles)
        if manage_guild and "Manager" not in role_names:
            role_names.append("Manager")
        return self.state.add_member(name, role_names, bot=bot, guild_id=guild_id).user

    def join_guild(self, user_id: int, guild_id: int, roles: Iterable[str] = ()) -> None:
        """An existing member also joins another guild (dispatches GUILD_MEMBER_ADD there)."""
        self.state.join_guild(user_id, guild_id, roles)

    def member(self, user_id: int) -> EmuUser:
        return self.state.get_user(user_id)

    def set_roles(self, user_id: int, roles: Iterable[str], *, guild_id: int | None = None) -> None:
        """Give a member exactly these roles (dispatches GUILD_MEMBER_UPDATE)."""
        self.state.set_member_roles(user_id, roles, guild_id=guild_id)

    def add_channel(
        self, name: str, topic: str | None = None, *, guild_id: int | None = None
    ) -> int:
        """Add a text channel everyone can see (dispatches CHANNEL_CREATE); returns its id."""
        return self.state.add_channel(name, topic=topic, guild_id=guild_id).id

    # -- guilds -----------------------------------------------------------------------

    def add_guild(self, name: str = "second server") -> EmuGuild:
        """Another guild the bot is in, built like the first ("general", "crowdcut",
        "moderators"; "@everyone", "Moderator", "Manager" and the bot's role; the same
        owner). Dispatches GUILD_CREATE to connected bots and is in every later READY."""
        return EmuGuild(self.state, self.state.add_guild(name).id)

    def guild(self, guild_id: int | None = None) -> EmuGuild:
        """A handle on a guild (the first one by default)."""
        return EmuGuild(self.state, self.state.get_guild(guild_id).id)

    @property
    def guilds(self) -> list[EmuGuild]:
        return [EmuGuild(self.state, g) for g in self.state.guilds]

    # -- what moderators and admins change --------------------------------------------

    def delete_channel(self, channel_id: int) -> None:
        """Delete a channel as an admin would: CHANNEL_DELETE, then 404 Unknown Channel (10003)
        for every request about it or its messages."""
        self.state.delete_channel(channel_id)

    def set_role_permissions(
        self, role: str | int, permissions: int, *, guild_id: int | None = None
    ) -> None:
        """Set a role's permission bits (dispatches GUILD_ROLE_UPDATE)."""
        guild = self.state.get_guild(guild_id)
        found = guild.roles.get(role) if isinstance(role, int) else guild.role_by_name(role)
        if found is None:
            raise KeyError(f"no role {role!r} in guild {guild.id}")
        self.state.set_role_permissions(found, int(permissions))

    def set_channel_overwrite(
        self, channel_id: int, target_id: int, *, allow: int = 0, deny: int = 0
    ) -> None:
        """Set the overwrite of a role or member on a channel; ``allow = deny = 0`` removes
        it (dispatches CHANNEL_UPDATE)."""
        self.state.set_overwrite(self.state.get_channel(channel_id), target_id, allow, deny)

    def revoke_bot_permissions(self, permissions: int, channel_id: int | None = None) -> None:
        """Take permissions (e.g. ``ATTACH_FILES | MANAGE_MESSAGES`` from
        :mod:`bot.emulator.state`) from the bot with a member overwrite on one channel, or on
        every channel of the first guild; dispatches CHANNEL_UPDATE for each. The bot then
        gets 403 Missing Permissions (50013) where it needs them."""
        self._bot_overwrites(channel_id, deny_add=permissions)

    def restore_bot_permissions(self, permissions: int, channel_id: int | None = None) -> None:
        """Undo :meth:`revoke_bot_permissions` for these bits."""
        self._bot_overwrites(channel_id, deny_remove=permissions)

    def _bot_overwrites(
        self, channel_id: int | None, *, deny_add: int = 0, deny_remove: int = 0
    ) -> None:
        state = self.state
        bot_id = state.bot_user.id
        if channel_id is None:
            targets = [c for c in state.channels.values() if c.guild_id == state.guild_id]
        else:
            targets = [state.get_channel(channel_id)]
        for channel in targets:
            current = next((o for o in channel.overwrites if o.id == bot_id), None)
            allow = current.allow if current else 0
            deny = ((current.deny if current else 0) | deny_add) & ~deny_remove
            state.set_overwrite(channel, bot_id, allow & ~deny_add, deny)

    # -- messages ---------------------------------------------------------------------

    def _files(self, specs: Iterable[FileSpec]) -> list[UploadedFile]:
        files = []
        for index, spec in enumerate(specs):
            filename, data = spec[0], spec[1]
            content_type = spec[2] if len(spec) > 2 else None  # type: ignore[misc]
            if content_type is None:
                content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            if len(data) > self.state.upload_limit:
                raise FileTooLarge(
                    f"{filename} is {len(data)} bytes; this guild's upload limit is "
                    f"{self.state.upload_limit}"
                )
            files.append(UploadedFile(index, filename, content_type, bytes(data)))
        return files

    async def send_message(
        self,
        user_id: int,
        channel_id: int,
        content: str = "",
        attachments: Sequence[FileSpec] = (),
        *,
        reply_to: int | None = None,
        embeds: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Post as a member; returns the message and dispatches MESSAGE_CREATE.

        Raises :class:`~bot.emulator.state.ApiError` (403) where the member may not post.
        """
        state = self.state
        author = state.get_user(user_id)
        channel = state.get_channel(channel_id)
        payload: dict[str, Any] = {"content": content}
        if embeds:
            payload["embeds"] = embeds
        if reply_to is not None:
            payload["message_reference"] = {
                "message_id": str(reply_to),
                "channel_id": str(channel.id),
            }
        msg = state.create_message(channel, author, payload, self._files(attachments))
        await self._settle()
        return msg.render(user_id)

    async def delete_message(self, user_id: int, channel_id: int, message_id: int) -> None:
        """Delete a message as its author or as a moderator (Manage Messages) would;
        dispatches MESSAGE_DELETE."""
        msg = self._visible_message(user_id, channel_id, message_id)
        if msg.author_id != user_id:
            self.state.require(user_id, self.state.get_channel(channel_id), MANAGE_MESSAGES)
        self.state.delete_message(msg)
        await self._settle()

    def messages(self, channel_id: int, viewer: int | None = None) -> list[dict[str, Any]]:
        """The channel as ``viewer`` sees it, oldest first (ephemeral ones only for their owner)."""
        return [m.render(viewer) for m in self.state.visible_messages(int(channel_id), viewer)]

    def get_message(
        self, channel_id: int, message_id: int, viewer: int | None = None
    ) -> dict[str, Any]:
        msg = self.state.get_message(channel_id, message_id)
        if not msg.visible_for(viewer):
            raise LookupError(f"message {message_id} is not visible to {viewer}")
        return msg.render(viewer)

    async def wait_for_message(
        self,
        channel_id: int,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 10.0,
        *,
        viewer: int | None = None,
        since: int | None = None,
    ) -> dict[str, Any]:
        """Wait for a message created or edited after this call (or after revision ``since``).

        ``predicate`` sees the message as ``viewer`` would; the first match is returned.
        Take ``since = emu.revision`` before an action to close the race with a fast bot.
        """
        start = self.state.revision if since is None else since
        channel_id = int(channel_id)

        def probe() -> dict[str, Any] | None:
            for msg in self.state.visible_messages(channel_id, viewer):
                if msg.revision > start:
                    rendered = msg.render(viewer)
                    if predicate is None or predicate(rendered):
                        return rendered
            return None

        try:
            return await self._wait_until(probe, timeout)
        except TimeoutError:
            recent = [
                (m["author"]["username"], m["content"][:80])
                for m in self.messages(channel_id, viewer)[-5:]
            ]
            raise TimeoutError(
                f"no matching message in channel {channel_id} within {timeout:.1f}s; "
                f"last messages: {recent}"
            ) from None

    @property
    def revision(self) -> int:
        """Increases with every change; pass it as ``since`` to :meth:`wait_for_message`."""
        return self.state.revision

    def attachment_bytes(self, attachment: Mapping[str, Any]) -> bytes:
        """The bytes behind an attachment dict (from a message or a resolved option)."""
        try:
            return self.state.files[int(attachment["id"])].data
        except (KeyError, ValueError):
            return self.state.file_for_url(str(attachment["url"])).data

    def dm_channel_id(self, user_id: int) -> int | None:
        """The DM channel between the bot and ``user_id``, if either opened one."""
        return self.state.dm_channels.get(int(user_id))

    def open_dm(self, user_id: int) -> int:
        """Open (or find) the DM channel between ``user_id`` and the bot; returns its id."""
        return self.state.dm_channel(int(user_id)).id

    # -- reactions --------------------------------------------------------------------

    def _visible_message(self, user_id: int, channel_id: int, message_id: int) -> StoredMessage:
        msg = self.state.get_message(channel_id, message_id)
        if not msg.visible_for(user_id):
            raise LookupError(f"message {message_id} is not visible to {user_id}")
        return msg

    async def add_reaction(
        self, user_id: int, channel_id: int, message_id: int, emoji: str
    ) -> None:
        """React as a member (dispatches MESSAGE_REACTION_ADD with the member)."""
        msg = self._visible_message(user_id, channel_id, message_id)
        key, _ = parse_emoji(emoji)
        if key not in msg.reactions:
            self.state.require(user_id, self.state.get_channel(channel_id), ADD_REACTIONS)
        self.state.add_reaction(msg, user_id, emoji)
        await self._settle()

    async def remove_reaction(
        self, user_id: int, channel_id: int, message_id: int, emoji: str
    ) -> None:
        """Take a member's reaction back (dispatches MESSAGE_REACTION_REMOVE)."""
        msg = self._visible_message(user_id, channel_id, message_id)
        self.state.remove_reaction(msg, user_id, emoji)
        await self._settle()

    async def clear_reactions(
        self, user_id: int, channel_id: int, message_id: int, emoji: str | None = None
    ) -> bool:
        """Remove every reaction (MESSAGE_REACTION_REMOVE_ALL) or every reaction of one emoji
        (MESSAGE_REACTION_REMOVE_EMOJI) as a moderator; needs Manage Messages.
        -> False when there was nothing to remove (and nothing is dispatched)."""
        msg = self._visible_message(user_id, channel_id, message_id)
        self.state.require(user_id, self.state.get_channel(channel_id), MANAGE_MESSAGES)
        removed = self.state.clear_reactions(msg, emoji)
        await self._settle()
        return removed

    def reactions(self, channel_id: int, message_id: int) -> dict[str, list[int]]:
        """Who reacted with what, in reaction order: what ``GET .../reactions/{emoji}`` serves."""
        msg = self.state.get_message(channel_id, message_id)
        return {key: list(r.users) for key, r in msg.reactions.items() if r.users}

    # -- application commands ---------------------------------------------------------

    def commands(self, guild: bool | int = True) -> list[dict[str, Any]]:
        """The commands the application synced: for the first guild, for the guild whose id
        is given, or the global ones with ``guild=False``."""
        scope = (self.state.guild_id if guild is True else int(guild)) if guild else None
        return list(self.state.commands.get(scope, []))

    async def invoke_slash(
        self,
        user_id: int,
        channel_id: int,
        name: str,
        options: Mapping[str, Any] | None = None,
        subcommand: str | None = None,
    ) -> Interaction:
        """Use ``/name [subcommand] options...`` as a member; dispatches INTERACTION_CREATE.

        Only synced commands exist. ``subcommand`` is ``"sub"`` or ``"group sub"``.
        Option values: str, int, float, bool; a user/member id or :class:`EmuUser`;
        a channel id or name; a role id or name; an attachment as
        ``(filename, bytes[, content_type])``.
        """
        state = self.state
        user = state.get_user(user_id)
        channel = state.get_channel(channel_id)
        if channel.guild_id is None:
            raise DriverError("the driver runs slash commands in guild channels only")
        try:
            command, scope = state.find_command(name, channel.guild_id)
        except LookupError:
            synced = sorted({c["name"] for cs in state.commands.values() for c in cs})
            raise UnknownCommand(
                f"/{name} is not a synced command "
                f"(synced: {synced or 'none - was the tree synced?'})"
            ) from None
        self._check_command_access(user.id, channel, command)
        resolved: dict[str, dict[str, Any]] = {}
        built = self._command_options(
            command, dict(options or {}), subcommand, resolved, channel, user.id
        )
        data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": 1}
        if built:
            data["options"] = built
        if resolved:
            data["resolved"] = resolved
        if scope is not None:
            data["guild_id"] = str(scope)
        record = self._new_interaction(INTERACTION_APPLICATION_COMMAND, user.id, channel, data)
        record.command_name = " ".join(
            [command["name"], *(subcommand.split() if subcommand else [])]
        )
        return await self._dispatch_interaction(record)

    def _check_command_access(
        self, user_id: int, channel: Channel, command: dict[str, Any]
    ) -> None:
        perms = self.state.channel_permissions(user_id, channel)
        if not perms & VIEW_CHANNEL or not perms & USE_APPLICATION_COMMANDS:
            raise CommandNotAvailable(f"member {user_id} cannot use commands in #{channel.name}")
        contexts = command.get("contexts")
        if contexts is not None and 0 not in contexts:
            raise CommandNotAvailable(f"/{command['name']} is not available in guilds")
        needed = command.get("default_member_permissions")
        if needed is not None:
            needed_bits = int(needed)
            base = self.state.base_permissions(user_id, channel.guild_id)
            if not base & ADMINISTRATOR and (needed_bits == 0 or base & needed_bits != needed_bits):
                raise CommandNotAvailable(
                    f"/{command['name']} needs permissions {needed_bits}, "
                    f"which member {user_id} lacks"
                )

    def _command_options(
        self,
        command: dict[str, Any],
        values: dict[str, Any],
        subcommand: str | None,
        resolved: dict[str, dict[str, Any]],
        channel: Channel,
        invoker: int,
    ) -> list[dict[str, Any]]:
        definitions = command.get("options") or []
        path: list[tuple[str, int]] = []
        label = f"/{command['name']}"
        for part in (subcommand or "").split():
            match = next(
                (
                    o
                    for o in definitions
                    if o["name"] == part
                    and o["type"] in (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP)
                ),
                None,
            )
            if match is None:
                subs = [o["name"] for o in definitions if o["type"] in (1, 2)]
                raise UnknownCommand(f"{label} has no subcommand {part!r} (it has {subs})")
            path.append((match["name"], match["type"]))
            label += f" {part}"
            definitions = match.get("options") or []
        if any(o["type"] in (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP) for o in definitions):
            subs = [o["name"] for o in definitions if o["type"] in (1, 2)]
            raise InvalidOptions(f"{label} needs a subcommand, one of {subs}")
        known = {o["name"]: o for o in definitions}
        extra = set(values) - set(known)
        if extra:
            raise InvalidOptions(
                f"{label} has no option(s) {sorted(extra)}; it has {sorted(known)}"
            )
        built: list[dict[str, Any]] = []
        for definition in definitions:
            name = definition["name"]
            if values.get(name) is None:
                if definition.get("required"):
                    raise InvalidOptions(f"{label} requires option {name!r}")
                continue
            value = self._option_value(label, definition, values[name], resolved, channel, invoker)
            built.append({"type": definition["type"], "name": name, "value": value})
        for name, kind in reversed(path):
            built = [{"type": kind, "name": name, "options": built}]
        return built

    def _option_value(
        self,
        label: str,
        definition: dict[str, Any],
        value: Any,
        resolved: dict[str, dict[str, Any]],
        channel: Channel,
        invoker: int,
    ) -> Any:
        state = self.state
        kind = definition["type"]
        name = definition["name"]

        def bad(expected: str) -> InvalidOptions:
            return InvalidOptions(f"{label} option {name!r} wants {expected}, got {value!r}")

        if kind == OPTION_STRING:
            if not isinstance(value, str):
                raise bad("a string")
            low, high = definition.get("min_length", 0), definition.get("max_length", 6000)
            if not low <= len(value) <= high:
                raise InvalidOptions(
                    f"{label} option {name!r} must be {low}..{high} characters long"
                )
            result: Any = value
        elif kind == OPTION_INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad("an integer")
            result = value
        elif kind == OPTION_NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad("a number")
            result = float(value)
        elif kind == OPTION_BOOLEAN:
            if not isinstance(value, bool):
                raise bad("a boolean")
            result = value
        elif kind in (OPTION_USER, OPTION_MENTIONABLE) and self._as_user(value) is not None:
            user = self._as_user(value)
            assert user is not None
            resolved.setdefault("users", {})[str(user.id)] = user.payload()
            member = state.guilds[channel.guild_id or state.guild_id].members.get(user.id)
            if member is not None:
                resolved.setdefault("members", {})[str(user.id)] = {
                    **state.member_payload(member, with_user=False),
                    "permissions": str(state.channel_permissions(user.id, channel)),
                }
            result = str(user.id)
        elif (
            kind in (OPTION_ROLE, OPTION_MENTIONABLE)
            and self._as_role(value, channel.guild_id) is not None
        ):
            role = self._as_role(value, channel.guild_id)
            assert role is not None
            resolved.setdefault("roles", {})[str(role.id)] = role.payload()
            result = str(role.id)
        elif kind == OPTION_CHANNEL:
            target = self._as_channel(value, channel.guild_id)
            if target is None:
                raise bad("a channel id or name")
            types = definition.get("channel_types")
            if types and target.type not in types:
                raise InvalidOptions(f"{label} option {name!r} accepts channel types {types}")
            partial = state.channel_payload(target, viewer=invoker)
            resolved.setdefault("channels", {})[str(target.id)] = partial
            result = str(target.id)
        elif kind == OPTION_ATTACHMENT:
            if not (isinstance(value, tuple) and len(value) in (2, 3)):
                raise bad("(filename, bytes[, content_type])")
            upload = self._files([value])[0]
            _stored, attachment = state.store_file(
                upload, f"/ephemeral-attachments/{state.application_id}"
            )
            attachment["ephemeral"] = True
            resolved.setdefault("attachments", {})[attachment["id"]] = attachment
            result = attachment["id"]
        else:
            raise bad(
                {6: "a user", 7: "a channel", 8: "a role", 9: "a user or role"}.get(kind, "?")
            )
        choices = definition.get("choices")
        if choices and result not in [c["value"] for c in choices]:
            raise InvalidOptions(
                f"{label} option {name!r} must be one of {[c['value'] for c in choices]}"
            )
        if kind in (OPTION_INTEGER, OPTION_NUMBER):
            low, high = definition.get("min_value"), definition.get("max_value")
            if (low is not None and result < low) or (high is not None and result > high):
                raise InvalidOptions(f"{label} option {name!r} must be within [{low}, {high}]")
        return result

    def _as_user(self, value: Any) -> EmuUser | None:
        if isinstance(value, EmuUser):
            return value
        if isinstance(value, int | str) and not isinstance(value, bool):
            try:
                return self.state.users.get(int(value))
            except ValueError:
                return next((u for u in self.state.users.values() if u.name == value), None)
        return None

    def _as_role(self, value: Any, guild_id: int | None) -> Any:
        roles = self.state.get_guild(guild_id).roles
        if isinstance(value, int | str) and not isinstance(value, bool):
            try:
                return roles.get(int(value))
            except ValueError:
                return next((r for r in roles.values() if r.name == value), None)
        return None

    def _as_channel(self, value: Any, guild_id: int | None) -> Channel | None:
        if isinstance(value, int | str) and not isinstance(value, bool):
            try:
                return self.state.channels.get(int(value))
            except ValueError:
                name = str(value).lstrip("#")
                return next(
                    (
                        c
                        for c in self.state.channels.values()
                        if c.name == name and c.guild_id == guild_id
                    ),
                    None,
                )
        return None

    # -- components -------------------------------------------------------------------

    async def click_button(self, user_id: int, message_id: int, custom_id: str) -> Interaction:
        """Click a button as a member; dispatches INTERACTION_CREATE (type 3) with the message."""
        msg, channel, component = self._usable_component(user_id, message_id, custom_id, {2})
        data = {"custom_id": custom_id, "component_type": 2, "id": component.get("id")}
        record = self._new_interaction(INTERACTION_MESSAGE_COMPONENT, user_id, channel, data)
        record.host_message_id = msg.id
        record.payload["message"] = msg.render(user_id)
        return await self._dispatch_interaction(record)

    async def choose(
        self, user_id: int, message_id: int, custom_id: str, values: Sequence[str]
    ) -> Interaction:
        """Pick ``values`` in a string select menu as a member (INTERACTION_CREATE, type 3)."""
        msg, channel, component = self._usable_component(user_id, message_id, custom_id, {3})
        offered = [o["value"] for o in component.get("options", [])]
        low, high = component.get("min_values", 1), component.get("max_values", 1)
        if not low <= len(values) <= high or any(v not in offered for v in values):
            raise InvalidOptions(
                f"select {custom_id!r} takes {low}..{high} of {offered}, got {list(values)}"
            )
        data = {
            "custom_id": custom_id,
            "component_type": 3,
            "values": list(values),
            "id": component.get("id"),
        }
        record = self._new_interaction(INTERACTION_MESSAGE_COMPONENT, user_id, channel, data)
        record.host_message_id = msg.id
        record.payload["message"] = msg.render(user_id)
        return await self._dispatch_interaction(record)

    async def submit_modal(
        self, interaction: Interaction, values: Mapping[str, str | Sequence[str]]
    ) -> Interaction:
        """Fill in and submit the modal the application answered ``interaction`` with.

        ``values`` maps each text input's (or string select's) custom id to what the
        member typed (or picked); dispatches INTERACTION_CREATE type 5.
        """
        modal = interaction.modal
        if modal is None:
            raise DriverError(f"{interaction!r} was not answered with a modal")
        left = dict(values)
        label = f"modal {modal.get('custom_id')!r}"

        def fill(component: dict[str, Any]) -> dict[str, Any] | None:
            kind = component.get("type")
            if kind == 1:
                inner = [f for c in component.get("components", []) if (f := fill(c))]
                return {"type": 1, "id": component.get("id"), "components": inner}
            if kind == 18:
                inner_one = fill(component["component"])
                return {"type": 18, "id": component.get("id"), "component": inner_one}
            custom_id = component.get("custom_id")
            if kind == 4:
                value = str(left.pop(custom_id, component.get("value") or ""))
                low, high = component.get("min_length", 0), component.get("max_length", 4000)
                if component.get("required", True) and not value:
                    raise InvalidOptions(f"{label} requires {custom_id!r}")
                if value and not low <= len(value) <= high:
                    raise InvalidOptions(f"{label}: {custom_id!r} must be {low}..{high} long")
                return {
                    "type": 4,
                    "id": component.get("id"),
                    "custom_id": custom_id,
                    "value": value,
                }
            if kind == 3:
                picked = left.pop(custom_id, [])
                chosen = [picked] if isinstance(picked, str) else list(picked)
                return {
                    "type": 3,
                    "id": component.get("id"),
                    "custom_id": custom_id,
                    "values": chosen,
                }
            return None

        components = [f for c in modal.get("components", []) if (f := fill(c))]
        if left:
            raise InvalidOptions(f"{label} has no input(s) {sorted(left)}")
        previous = interaction.record
        channel = self.state.get_channel(previous.channel_id)
        data = {"custom_id": modal.get("custom_id"), "components": components}
        record = self._new_interaction(INTERACTION_MODAL_SUBMIT, previous.user_id, channel, data)
        record.trigger_id = previous.id
        if previous.host_message_id is not None:
            record.host_message_id = previous.host_message_id
            host = self.state.messages[previous.host_message_id]
            record.payload["message"] = host.render(previous.user_id)
        return await self._dispatch_interaction(record)

    def _usable_component(
        self, user_id: int, message_id: int, custom_id: str, kinds: set[int]
    ) -> tuple[StoredMessage, Channel, dict[str, Any]]:
        state = self.state
        user = state.get_user(user_id)
        msg = state.messages.get(int(message_id))
        if msg is None or not msg.visible_for(user.id):
            raise ComponentNotFound(f"message {message_id} is not visible to member {user.id}")
        channel = state.get_channel(msg.channel_id)
        if not state.channel_permissions(user.id, channel) & VIEW_CHANNEL:
            raise ComponentNotFound(f"member {user.id} cannot see #{channel.name}")
        if msg.author_id != state.bot_user.id:
            raise ComponentNotFound(f"message {message_id} was not sent by the application")
        component = find_component(msg.data, custom_id)
        if component is None or component.get("type") not in kinds:
            ids = [
                c.get("custom_id")
                for row in msg.data.get("components", [])
                for c in row.get("components", [])
            ]
            raise ComponentNotFound(
                f"no component {custom_id!r} of type {sorted(kinds)} on message {message_id} "
                f"(has {ids})"
            )
        if component.get("disabled"):
            raise ComponentNotFound(f"component {custom_id!r} is disabled")
        return msg, channel, component

    # -- interactions plumbing --------------------------------------------------------

    def _new_interaction(
        self, kind: int, user_id: int, channel: Channel, data: dict[str, Any]
    ) -> InteractionRecord:
        state = self.state
        interaction_id = state.ids.new()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(120)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(state.application_id),
            "type": kind,
            "data": data,
            "guild_id": str(channel.guild_id),
            "guild": {"id": str(channel.guild_id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": state.channel_payload(channel, viewer=user_id),
            "member": state.interaction_member(user_id, channel),
            "token": token,
            "version": 1,
            "app_permissions": str(state.channel_permissions(state.bot_user.id, channel)),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(channel.guild_id)},
            "context": 0,
            "attachment_size_limit": state.upload_limit,
        }
        return InteractionRecord(
            id=interaction_id,
            token=token,
            type=kind,
            user_id=user_id,
            channel_id=channel.id,
            guild_id=channel.guild_id or state.guild_id,
            payload=payload,
            created_at=time.monotonic(),
        )

    async def _dispatch_interaction(self, record: InteractionRecord) -> Interaction:
        state = self.state
        state.interactions[record.id] = record
        state.interactions_by_token[record.token] = record
        if not self.gateway.live_sessions:
            log.warning("interaction %s dispatched with no bot connected", record.id)
        record.created_at = time.monotonic()
        state.emit("INTERACTION_CREATE", record.payload)
        loop = asyncio.get_running_loop()
        self._timers[record.id] = loop.call_later(self.interaction_timeout, self._expire, record)
        await self._settle()
        return Interaction(self, record)

    def _expire(self, record: InteractionRecord) -> None:
        self._timers.pop(record.id, None)
        if not record.acked:
            record.expired = True
            log.warning("interaction %s failed: The application did not respond", record.id)
            self.state.changed()

    def interaction(self, interaction_id: int) -> Interaction:
        return Interaction(self, self.state.interactions[int(interaction_id)])

    # -- misc controls ----------------------------------------------------------------

    def set_upload_limit(self, n: int) -> None:
        """Change the guild's per-file upload limit (bytes); REST answers 413 above it."""
        self.state.upload_limit = int(n)

    async def reconnect_bots(self) -> int:
        """Ask every connected bot to reconnect (op 7); discord.py then RESUMEs. -> how many."""
        count = self.gateway.request_reconnect()
        await self._settle()
        return count

    async def close_gateway(self, code: int = 4000, reason: str = "") -> int:
        """Close every bot's gateway socket with ``code``. After a resumable code (4000
        unknown error, 4008 rate limited, ...) discord.py RESUMEs and gets what it missed;
        after 4007 (invalid seq) or 4009 (session timed out) the session is gone and its
        RESUME is answered INVALID_SESSION, so it identifies again. -> how many."""
        return await self.gateway.close_connections(code, reason)

    async def invalidate_session(self, resumable: bool = False) -> int:
        """Send op 9 INVALID_SESSION (``d=resumable``) to every bot. ``False``: the session is
        forgotten and discord.py identifies again; ``True``: it reconnects and RESUMEs."""
        count = self.gateway.invalidate_sessions(resumable)
        await self._settle()
        return count

    async def wait_for_bot(self, timeout: float = 10.0) -> None:
        """Wait until a bot session has identified (READY sent)."""
        await self._wait_until(lambda: bool(self.gateway.live_sessions), timeout)

    @property
    def gateway_events(self) -> list[tuple[str, dict[str, Any]]]:
        """Every (event, data) dispatched so far, oldest first (bounded)."""
        return list(self.gateway.events)
