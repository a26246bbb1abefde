"""The emulator's in-memory Discord: one application, its guilds, people and messages.

Nothing here touches the network. Every operation either returns Discord-shaped
payloads (the REST objects of API v10, as Discord's OpenAPI description and
discord.py's ``discord/types`` spell them) or raises :class:`ApiError` carrying
Discord's JSON error body. Whatever Discord would also announce on the gateway
is handed to ``EmulatorState.emit(event_name, data)``, which the server wires to
the gateway.

Ids are real snowflakes (Discord epoch, timestamp in the top 42 bits), so
discord.py's ``created_at`` and snowflake ordering work as against Discord.

Sources: discord.com/developers/docs (resources/message, resources/guild,
topics/permissions "Permission Hierarchy", interactions/receiving-and-responding),
and discord.py 2.7's parsers for which keys it reads.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

DISCORD_EPOCH_MS = 1_420_070_400_000

# --- permissions (topics/permissions, "Bitwise Permission Flags") ---------------------
CREATE_INSTANT_INVITE = 1 << 0
KICK_MEMBERS = 1 << 1
BAN_MEMBERS = 1 << 2
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_AUDIT_LOG = 1 << 7
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
SPEAK = 1 << 21
CHANGE_NICKNAME = 1 << 26
MANAGE_ROLES = 1 << 28
USE_APPLICATION_COMMANDS = 1 << 31
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
MODERATE_MEMBERS = 1 << 40
ALL_PERMISSIONS = (1 << 51) - 1

EVERYONE_PERMISSIONS = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | CONNECT
    | SPEAK
    | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
)
MODERATOR_PERMISSIONS = MANAGE_MESSAGES | KICK_MEMBERS | MODERATE_MEMBERS | VIEW_AUDIT_LOG
MANAGER_PERMISSIONS = MANAGE_GUILD
BOT_PERMISSIONS = (
    EVERYONE_PERMISSIONS | MANAGE_MESSAGES | MENTION_EVERYONE | MANAGE_ROLES | MANAGE_CHANNELS
)

# --- message flags and types (resources/message) --------------------------------------
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_IS_COMPONENTS_V2 = 1 << 15
SETTABLE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_IS_COMPONENTS_V2

MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19
MESSAGE_CHAT_INPUT_COMMAND = 20

CHANNEL_GUILD_TEXT = 0
CHANNEL_DM = 1

INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_MESSAGE_COMPONENT = 3
INTERACTION_AUTOCOMPLETE = 4
INTERACTION_MODAL_SUBMIT = 5

MAX_CONTENT = 2000
MAX_NONCE = 25
#: how long a nonce with ``enforce_nonce`` finds its message again ("the past few minutes")
NONCE_WINDOW = 300.0
MAX_ATTACHMENTS = 10
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


class ApiError(Exception):
    """A request Discord would refuse; carries Discord's status and JSON error body."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {message} (code {code})")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            out["errors"] = self.errors
        return out


def form_error(path: list[str | int], code: str, message: str) -> ApiError:
    """Discord's 50035 "Invalid Form Body" with the nested ``errors`` object it uses.

    Live Discord puts a symbolic ``code`` (e.g. ``BASE_TYPE_MAX_LENGTH``) in each inner
    error; the OpenAPI description types it as an integer, and the emulator follows
    the description: the inner code is 50035 and the symbol leads the message.
    """
    errors: dict[str, Any] = {"_errors": [{"code": 50035, "message": f"{code}: {message}"}]}
    for key in reversed(path):
        errors = {str(key): errors}
    return ApiError(400, 50035, "Invalid Form Body", errors)


def unknown(kind: str) -> ApiError:
    codes = {
        "Channel": 10003,
        "Guild": 10004,
        "Member": 10007,
        "Message": 10008,
        "Emoji": 10014,
        "User": 10013,
        "Webhook": 10015,
        "Application": 10002,
        "interaction": 10062,
        "application command": 10063,
    }
    return ApiError(404, codes[kind], f"Unknown {kind}")


MISSING_PERMISSIONS = (403, 50013, "Missing Permissions")
MISSING_ACCESS = (403, 50001, "Missing Access")


def iso(ts: float) -> str:
    """Discord's timestamp format: microseconds and an explicit UTC offset."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


class SnowflakeFactory:
    """Discord-style ids: ms since 2015-01-01 << 22 | worker << 17 | process << 12 | increment."""

    def __init__(self, worker: int = 1, process: int = 0) -> None:
        self._worker = worker & 0x1F
        self._process = process & 0x1F
        self._increment = 0
        self._last = 0

    def new(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        self._increment = (self._increment + 1) & 0xFFF
        value = (ms << 22) | (self._worker << 17) | (self._process << 12) | self._increment
        if value <= self._last:  # same millisecond wrapped, or the clock stepped back
            value = self._last + 1
        self._last = value
        return value


def make_bot_token(user_id: int) -> str:
    """A token shaped like Discord's: base64(user id) . base64(time) . HMAC-ish tail."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    stamp = int(time.time() - 1_293_840_000).to_bytes(4, "big")
    return f"{b64(str(user_id).encode())}.{b64(stamp)}.{secrets.token_urlsafe(28)[:38]}"


# --- entities -------------------------------------------------------------------------


@dataclass
class EmuUser:
    """A Discord user: a member of the emulated guild, the bot, or the owner."""

    id: int
    name: str
    bot: bool = False
    global_name: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "username": self.name,
            "avatar": None,
            "discriminator": "0",
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "global_name": self.global_name,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int
    color: int = 0
    hoist: bool = False
    managed: bool = False
    mentionable: bool = False
    bot_id: int | None = None

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "colors": {
                "primary_color": self.color,
                "secondary_color": None,
                "tertiary_color": None,
            },
            "hoist": self.hoist,
            "managed": self.managed,
            "mentionable": self.mentionable,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass
class Overwrite:
    id: int
    type: int  # 0 role, 1 member
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "allow": str(self.allow),
            "deny": str(self.deny),
        }


@dataclass
class Channel:
    id: int
    name: str
    type: int = CHANNEL_GUILD_TEXT
    guild_id: int | None = None
    position: int = 0
    topic: str | None = None
    overwrites: list[Overwrite] = field(default_factory=list)
    recipients: list[int] = field(default_factory=list)
    last_message_id: int | None = None

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"


@dataclass
class Member:
    user: EmuUser
    role_ids: list[int]
    joined_at: float
    nick: str | None = None


@dataclass
class Guild:
    """One guild: its roles and members (its channels live in ``EmulatorState.channels``)."""

    id: int
    name: str
    owner_id: int
    created: float
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    bot_role_id: int = 0

    def role_by_name(self, name: str) -> Role:
        for role in self.roles.values():
            if role.name == name:
                return role
        raise KeyError(f"no role named {name!r}; roles: {[r.name for r in self.roles.values()]}")


@dataclass
class StoredFile:
    """The bytes behind one attachment, served by the emulator's CDN routes."""

    id: int
    filename: str
    content_type: str
    data: bytes
    path: str  # URL path under the emulator, e.g. /attachments/<channel>/<id>/<name>


@dataclass
class ReactionState:
    emoji: dict[str, Any]  # {"id": str | None, "name": str}
    users: list[int] = field(default_factory=list)  # in the order they reacted


@dataclass
class StoredMessage:
    data: dict[str, Any]  # the REST message object, without ``reactions``
    guild_id: int | None
    visible_to: int | None = None  # ephemeral: the one user who sees it
    reactions: dict[str, ReactionState] = field(default_factory=dict)
    deleted: bool = False
    revision: int = 0
    interaction_id: int | None = None

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def channel_id(self) -> int:
        return int(self.data["channel_id"])

    @property
    def author_id(self) -> int:
        return int(self.data["author"]["id"])

    @property
    def flags(self) -> int:
        return int(self.data.get("flags", 0))

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    def visible_for(self, viewer: int | None) -> bool:
        return not self.deleted and (self.visible_to is None or self.visible_to == viewer)

    def render(self, viewer: int | None) -> dict[str, Any]:
        """The message as ``viewer`` would fetch it (``reactions[].me`` is relative to them)."""
        out = copy.deepcopy(self.data)
        if self.reactions:
            out["reactions"] = [
                {
                    "emoji": dict(r.emoji),
                    "count": len(r.users),
                    "count_details": {"burst": 0, "normal": len(r.users)},
                    "burst_colors": [],
                    "me_burst": False,
                    "me": viewer in r.users,
                }
                for r in self.reactions.values()
                if r.users
            ]
            if not out["reactions"]:
                del out["reactions"]
        return out


@dataclass
class UploadedFile:
    """A file part of a multipart request (or one the driver attaches)."""

    index: int
    filename: str
    content_type: str
    data: bytes


@dataclass
class InteractionRecord:
    """One interaction the driver started, and what the application did with it."""

    id: int
    token: str
    type: int
    user_id: int
    channel_id: int
    guild_id: int
    payload: dict[str, Any]
    created_at: float  # time.monotonic() at dispatch
    sent_at: float | None = None  # time.monotonic() once the frame was written to the bot
    command_name: str | None = None
    host_message_id: int | None = None  # the message whose component was used
    acked_at: float | None = None
    callback_type: int | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    expired: bool = False
    modal: dict[str, Any] | None = None
    autocomplete_choices: list[dict[str, Any]] | None = None
    edited_after_ack: bool = False
    trigger_id: int | None = None  # for a modal submit: the interaction that opened the modal

    @property
    def acked(self) -> bool:
        return self.acked_at is not None


# --- parsing helpers ------------------------------------------------------------------

USER_MENTION = re.compile(r"<@!?(\d{15,21})>")
ROLE_MENTION = re.compile(r"<@&(\d{15,21})>")
EVERYONE_MENTION = re.compile(r"@(everyone|here)\b")
CUSTOM_EMOJI = re.compile(r"^(?:a:)?([A-Za-z0-9_~]{2,32}):(\d{15,21})$")


def parse_emoji(text: str) -> tuple[str, dict[str, Any]]:
    """``👍`` or ``name:id`` (as in reaction routes) -> (key, partial emoji)."""
    match = CUSTOM_EMOJI.match(text)
    if match:
        name, emoji_id = match.groups()
        return f"{name}:{emoji_id}", {"id": emoji_id, "name": name}
    if not text or len(text) > 32 or ":" in text:
        raise unknown("Emoji")
    return text, {"id": None, "name": text}


def _walk_components(components: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for comp in components:
        yield comp
        for key in ("components",):
            inner = comp.get(key)
            if isinstance(inner, list):
                yield from _walk_components(inner)
        for key in ("accessory", "component"):
            inner = comp.get(key)
            if isinstance(inner, dict):
                yield from _walk_components([inner])


def find_component(message: dict[str, Any], custom_id: str) -> dict[str, Any] | None:
    for comp in _walk_components(message.get("components") or []):
        if comp.get("custom_id") == custom_id:
            return comp
    return None


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# --- the state ------------------------------------------------------------------------


class EmulatorState:
    """One application with its bot user, its guilds (the first is ``guild_id``), and
    everything said in them."""

    def __init__(
        self,
        *,
        guild_name: str = "crowdcut test server",
        bot_name: str = "crowdcut",
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
    ) -> None:
        self.ids = SnowflakeFactory()
        self.upload_limit = upload_limit
        self.base_url = "http://127.0.0.1:0"  # set by the server once it is bound
        self.emit: Callable[[str, dict[str, Any]], None] = lambda event, data: None
        self.on_change: Callable[[], None] = lambda: None
        self.revision = 0

        self.users: dict[int, EmuUser] = {}
        self.owner = self._new_user("guildowner")
        self.application_id = self.ids.new()
        # Discord gives a bot user the same id as its application
        self.bot_user = EmuUser(self.application_id, bot_name, bot=True)
        self.users[self.bot_user.id] = self.bot_user
        self.bot_token = make_bot_token(self.bot_user.id)
        self.verify_key = secrets.token_hex(32)

        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, StoredMessage] = {}
        self.channel_messages: dict[int, list[int]] = {}
        self.files: dict[int, StoredFile] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.interactions: dict[int, InteractionRecord] = {}
        #: the same records by token (a follow-up names its interaction by token only)
        self.interactions_by_token: dict[str, InteractionRecord] = {}
        self.dm_channels: dict[int, int] = {}  # user id -> DM channel id
        #: (channel id, author id, nonce) -> (message id, time.time()) for ``enforce_nonce``
        self.nonces: dict[tuple[int, int, str], tuple[int, float]] = {}
        #: the first guild: what ``guild_id``, ``roles`` and ``members`` refer to
        self.guild_id = self._build_guild(guild_name).id

    @property
    def guild(self) -> Guild:
        return self.guilds[self.guild_id]

    @property
    def guild_name(self) -> str:
        return self.guild.name

    @property
    def roles(self) -> dict[int, Role]:
        """The first guild's roles."""
        return self.guild.roles

    @property
    def members(self) -> dict[int, Member]:
        """The first guild's members."""
        return self.guild.members

    @property
    def bot_role_id(self) -> int:
        return self.guild.bot_role_id

    # -- construction -----------------------------------------------------------------

    def _new_user(self, name: str, *, bot: bool = False) -> EmuUser:
        user = EmuUser(self.ids.new(), name, bot=bot)
        self.users[user.id] = user
        return user

    def _build_guild(self, name: str) -> Guild:
        """A guild as the emulator sets one up: four roles, three channels, owner and bot."""
        guild = Guild(self.ids.new(), name, self.owner.id, time.time())
        self.guilds[guild.id] = guild
        everyone = Role(guild.id, "@everyone", EVERYONE_PERMISSIONS, 0)
        bot_role = Role(
            self.ids.new(),
            self.bot_user.name,
            BOT_PERMISSIONS,
            3,
            managed=True,
            bot_id=self.bot_user.id,
        )
        moderator = Role(
            self.ids.new(),
            "Moderator",
            MODERATOR_PERMISSIONS,
            2,
            color=0x3498DB,
            hoist=True,
            mentionable=True,
        )
        manager = Role(self.ids.new(), "Manager", MANAGER_PERMISSIONS, 1, color=0xE67E22)
        for role in (everyone, moderator, manager, bot_role):
            guild.roles[role.id] = role
        guild.bot_role_id = bot_role.id

        self._new_channel(guild, "general", "Say hi", [])
        self._new_channel(guild, "crowdcut", "Prompts for the community music video", [])
        self._new_channel(
            guild,
            "moderators",
            "Moderation queue",
            [
                Overwrite(everyone.id, 0, deny=VIEW_CHANNEL),
                Overwrite(moderator.id, 0, allow=VIEW_CHANNEL | SEND_MESSAGES),
                Overwrite(bot_role.id, 0, allow=VIEW_CHANNEL | SEND_MESSAGES),
            ],
        )
        self._add_member_record(guild, self.owner, [])
        self._add_member_record(guild, self.bot_user, [bot_role.id])
        return guild

    def add_guild(self, name: str) -> Guild:
        """Another guild the bot is in, set up like the first (dispatches GUILD_CREATE)."""
        guild = self._build_guild(name)
        payload = self.guild_create_payload(guild)
        # a guild joined while connected comes without "unavailable" (discord.py: guild_join)
        del payload["unavailable"]
        self.emit("GUILD_CREATE", payload)
        self.changed()
        return guild

    def _new_channel(
        self, guild: Guild, name: str, topic: str | None, overwrites: list[Overwrite]
    ) -> Channel:
        position = sum(1 for c in self.channels.values() if c.guild_id == guild.id)
        channel = Channel(
            self.ids.new(), name, CHANNEL_GUILD_TEXT, guild.id, position, topic, overwrites
        )
        self.channels[channel.id] = channel
        self.channel_messages[channel.id] = []
        return channel

    def add_channel(
        self,
        name: str,
        *,
        topic: str | None = None,
        overwrites: list[Overwrite] | None = None,
        guild_id: int | None = None,
    ) -> Channel:
        """A text channel in a guild (the first by default); dispatches CHANNEL_CREATE."""
        channel = self._new_channel(self.get_guild(guild_id), name, topic, overwrites or [])
        self.emit("CHANNEL_CREATE", self.channel_payload(channel))
        self.changed()
        return channel

    def delete_channel(self, channel_id: int) -> Channel:
        """Delete a guild channel (dispatches CHANNEL_DELETE); later requests get 10003."""
        channel = self.get_channel(channel_id)
        if channel.guild_id is None:
            raise ApiError(400, 50003, "Cannot execute action on a DM channel")
        payload = self.channel_payload(channel)
        del self.channels[channel.id]
        for mid in self.channel_messages.pop(channel.id, []):
            self.messages[mid].deleted = True
        self.emit("CHANNEL_DELETE", payload)
        self.changed()
        return channel

    def set_overwrite(self, channel: Channel, target_id: int, allow: int, deny: int) -> None:
        """Set (or with allow = deny = 0 remove) one overwrite; dispatches CHANNEL_UPDATE."""
        if channel.guild_id is None:
            raise ApiError(400, 50003, "Cannot execute action on a DM channel")
        guild = self.guilds[channel.guild_id]
        kind = 0 if target_id in guild.roles else 1
        channel.overwrites = [o for o in channel.overwrites if o.id != target_id]
        if allow or deny:
            channel.overwrites.append(Overwrite(target_id, kind, allow=allow, deny=deny))
        self.emit("CHANNEL_UPDATE", self.channel_payload(channel))
        self.changed()

    def set_role_permissions(self, role: Role, permissions: int) -> None:
        """Change a role's permissions (dispatches GUILD_ROLE_UPDATE)."""
        role.permissions = permissions
        guild = next(g for g in self.guilds.values() if role.id in g.roles)
        self.emit("GUILD_ROLE_UPDATE", {"guild_id": str(guild.id), "role": role.payload()})
        self.changed()

    def set_member_roles(
        self, user_id: int, role_names: Iterable[str], *, guild_id: int | None = None
    ) -> Member:
        """Replace a member's roles (dispatches GUILD_MEMBER_UPDATE)."""
        guild = self.get_guild(guild_id)
        member = self.get_member(user_id, guild.id)
        member.role_ids = [guild.role_by_name(n).id for n in role_names]
        payload = self.member_payload(member)
        self.emit("GUILD_MEMBER_UPDATE", {**payload, "guild_id": str(guild.id)})
        self.changed()
        return member

    def _add_member_record(self, guild: Guild, user: EmuUser, role_ids: list[int]) -> Member:
        member = Member(user, role_ids, time.time())
        guild.members[user.id] = member
        return member

    def add_member(
        self,
        name: str,
        role_names: Iterable[str] = (),
        *,
        bot: bool = False,
        guild_id: int | None = None,
    ) -> Member:
        """A new user joins a guild (the first by default); dispatches GUILD_MEMBER_ADD."""
        guild = self.get_guild(guild_id)
        role_ids = [guild.role_by_name(n).id for n in role_names]
        user = self._new_user(name, bot=bot)
        return self._join(guild, user, role_ids)

    def join_guild(self, user_id: int, guild_id: int, role_names: Iterable[str] = ()) -> Member:
        """An existing user joins another guild; dispatches GUILD_MEMBER_ADD."""
        guild = self.get_guild(guild_id)
        user = self.get_user(user_id)
        if user.id in guild.members:
            raise ApiError(400, 0, f"user {user.id} is already a member of guild {guild.id}")
        return self._join(guild, user, [guild.role_by_name(n).id for n in role_names])

    def _join(self, guild: Guild, user: EmuUser, role_ids: list[int]) -> Member:
        member = self._add_member_record(guild, user, role_ids)
        self.emit("GUILD_MEMBER_ADD", {**self.member_payload(member), "guild_id": str(guild.id)})
        self.changed()
        return member

    def role_by_name(self, name: str, guild_id: int | None = None) -> Role:
        return self.get_guild(guild_id).role_by_name(name)

    def guild_of(self, channel: Channel) -> Guild | None:
        return self.guilds.get(channel.guild_id) if channel.guild_id is not None else None

    def changed(self) -> int:
        self.revision += 1
        self.on_change()
        return self.revision

    # -- lookups ----------------------------------------------------------------------

    def get_channel(self, channel_id: int | str) -> Channel:
        try:
            return self.channels[int(channel_id)]
        except (KeyError, ValueError):
            raise unknown("Channel") from None

    def get_user(self, user_id: int | str) -> EmuUser:
        try:
            return self.users[int(user_id)]
        except (KeyError, ValueError):
            raise unknown("User") from None

    def get_member(self, user_id: int | str, guild_id: int | str | None = None) -> Member:
        try:
            return self.get_guild(guild_id).members[int(user_id)]
        except (KeyError, ValueError):
            raise unknown("Member") from None

    def get_message(self, channel_id: int | str, message_id: int | str) -> StoredMessage:
        try:
            msg = self.messages[int(message_id)]
        except (KeyError, ValueError):
            raise unknown("Message") from None
        if msg.channel_id != int(channel_id) or msg.deleted:
            raise unknown("Message")
        return msg

    def get_guild(self, guild_id: int | str | None = None) -> Guild:
        """A guild by id (the first one for None); 404 Unknown Guild otherwise."""
        if guild_id is None:
            return self.guild
        try:
            return self.guilds[int(guild_id)]
        except (KeyError, ValueError):
            raise unknown("Guild") from None

    def check_guild(self, guild_id: int | str) -> Guild:
        return self.get_guild(guild_id)

    # -- permissions (topics/permissions, "Permission Hierarchy") ---------------------

    def base_permissions(self, user_id: int, guild_id: int | None = None) -> int:
        guild = self.get_guild(guild_id)
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        member = guild.members.get(user_id)
        if member is None:
            return 0
        perms = guild.roles[guild.id].permissions
        for role_id in member.role_ids:
            perms |= guild.roles[role_id].permissions
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def channel_permissions(self, user_id: int, channel: Channel) -> int:
        if channel.guild_id is None:  # a DM
            return (
                VIEW_CHANNEL
                | SEND_MESSAGES
                | READ_MESSAGE_HISTORY
                | ADD_REACTIONS
                | ATTACH_FILES
                | EMBED_LINKS
            )
        perms = self.base_permissions(user_id, channel.guild_id)
        if perms & ADMINISTRATOR or perms == ALL_PERMISSIONS:
            return ALL_PERMISSIONS
        member = self.guilds[channel.guild_id].members.get(user_id)
        if member is None:
            return 0
        by_id = {o.id: o for o in channel.overwrites}
        everyone = by_id.get(channel.guild_id)
        if everyone:
            perms = (perms & ~everyone.deny) | everyone.allow
        allow = deny = 0
        for role_id in member.role_ids:
            ow = by_id.get(role_id)
            if ow and ow.type == 0:
                allow |= ow.allow
                deny |= ow.deny
        perms = (perms & ~deny) | allow
        own = by_id.get(user_id)
        if own and own.type == 1:
            perms = (perms & ~own.deny) | own.allow
        if not perms & VIEW_CHANNEL:
            return 0
        return perms

    def require(self, user_id: int, channel: Channel, needed: int) -> None:
        perms = self.channel_permissions(user_id, channel)
        if not perms & VIEW_CHANNEL:
            raise ApiError(*MISSING_ACCESS)
        if perms & needed != needed:
            raise ApiError(*MISSING_PERMISSIONS)

    # -- payloads ---------------------------------------------------------------------

    def bot_user_pii(self) -> dict[str, Any]:
        return {
            **self.bot_user.payload(),
            "mfa_enabled": False,
            "locale": "en-US",
            "premium_type": 0,
            "email": None,
            "verified": True,
        }

    def application_payload(self) -> dict[str, Any]:
        # GATEWAY_PRESENCE_LIMITED | GATEWAY_GUILD_MEMBERS_LIMITED |
        # GATEWAY_MESSAGE_CONTENT_LIMITED:
        # an unverified bot with every privileged intent switched on in the portal
        flags = (1 << 13) | (1 << 15) | (1 << 19)
        return {
            "id": str(self.application_id),
            "name": self.bot_user.name,
            "icon": None,
            "description": "",
            "type": None,
            "bot": self.bot_user.payload(),
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": self.verify_key,
            "flags": flags,
            "flags_new": str(flags),
            "rpc_origins": [],
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "owner": self.owner.payload(),
            "approximate_guild_count": len(self.guilds),
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "explicit_content_filter": 0,
            "team": None,
            "eligible_oauth2_scopes": ["bot", "applications.commands"],
            "integration_types_config": {"0": {}},
        }

    def role_payloads(self, guild: Guild | None = None) -> list[dict[str, Any]]:
        roles = (guild or self.guild).roles.values()
        return [r.payload() for r in sorted(roles, key=lambda r: r.position)]

    def channel_payload(self, channel: Channel, *, viewer: int | None = None) -> dict[str, Any]:
        if channel.guild_id is None:
            return {
                "id": str(channel.id),
                "type": CHANNEL_DM,
                "last_message_id": str(channel.last_message_id)
                if channel.last_message_id
                else None,
                "flags": 0,
                "recipients": [self.users[u].payload() for u in channel.recipients],
            }
        data: dict[str, Any] = {
            "id": str(channel.id),
            "type": channel.type,
            "last_message_id": str(channel.last_message_id) if channel.last_message_id else None,
            "flags": 0,
            "guild_id": str(channel.guild_id),
            "name": channel.name,
            "parent_id": None,
            "rate_limit_per_user": 0,
            "topic": channel.topic,
            "position": channel.position,
            "permission_overwrites": [o.payload() for o in channel.overwrites],
            "nsfw": False,
        }
        if viewer is not None:
            data["permissions"] = str(self.channel_permissions(viewer, channel))
        return data

    def member_payload(self, member: Member, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "avatar": None,
            "banner": None,
            "communication_disabled_until": None,
            "flags": 0,
            "joined_at": iso(member.joined_at),
            "nick": member.nick,
            "pending": False,
            "premium_since": None,
            "roles": [str(r) for r in member.role_ids],
            "mute": False,
            "deaf": False,
        }
        if with_user:
            data["user"] = member.user.payload()
        return data

    def guild_payload(
        self, guild: Guild | None = None, *, with_counts: bool = False
    ) -> dict[str, Any]:
        guild = guild or self.guild
        general = next(
            (c for c in self.channels.values() if c.guild_id == guild.id and c.name == "general"),
            None,
        )
        data: dict[str, Any] = {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "description": None,
            "home_header": None,
            "splash": None,
            "discovery_splash": None,
            "features": [],
            "banner": None,
            "owner_id": str(guild.owner_id),
            "application_id": None,
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": str(general.id) if general else None,
            "system_channel_flags": 0,
            "widget_enabled": False,
            "widget_channel_id": None,
            "verification_level": 0,
            "roles": self.role_payloads(guild),
            "default_message_notifications": 1,
            "mfa_level": 0,
            "explicit_content_filter": 0,
            "max_presences": None,
            "max_members": 500000,
            "max_stage_video_channel_users": 50,
            "max_video_channel_users": 25,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "rules_channel_id": None,
            "safety_alerts_channel_id": None,
            "public_updates_channel_id": None,
            "premium_progress_bar_enabled": False,
            "nsfw": False,
            "nsfw_level": 0,
            "emojis": [],
            "stickers": [],
            "incidents_data": None,
        }
        if with_counts:
            data["approximate_member_count"] = len(guild.members)
            data["approximate_presence_count"] = 0
        return data

    def guild_create_payload(self, guild: Guild | None = None) -> dict[str, Any]:
        """GUILD_CREATE: the REST guild plus the gateway-only extra fields."""
        guild = guild or self.guild
        bot_member = guild.members[self.bot_user.id]
        return {
            **self.guild_payload(guild),
            "joined_at": iso(bot_member.joined_at),
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),
            "members": [self.member_payload(m) for m in guild.members.values()],
            "channels": [
                self.channel_payload(c) for c in self.channels.values() if c.guild_id == guild.id
            ],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
        }

    def interaction_member(self, user_id: int, channel: Channel) -> dict[str, Any]:
        return {
            **self.member_payload(self.get_member(user_id, channel.guild_id)),
            "permissions": str(self.channel_permissions(user_id, channel)),
        }

    # -- files ------------------------------------------------------------------------

    def store_file(self, upload: UploadedFile, prefix: str) -> tuple[StoredFile, dict[str, Any]]:
        if len(upload.data) > self.upload_limit:
            raise ApiError(413, 40005, "Request entity too large")
        file_id = self.ids.new()
        name = sanitize_filename(upload.filename)
        path = f"{prefix}/{file_id}/{quote(name)}"
        stored = StoredFile(file_id, name, upload.content_type, upload.data, path)
        self.files[file_id] = stored
        url = self.base_url + path
        attachment: dict[str, Any] = {
            "id": str(file_id),
            "filename": name,
            "size": len(upload.data),
            "url": url,
            "proxy_url": url,
            "content_type": upload.content_type,
        }
        dims = image_size(upload.data)
        if dims:
            attachment["width"], attachment["height"] = dims
        return stored, attachment

    def file_for_url(self, url: str) -> StoredFile:
        path = url.removeprefix(self.base_url).split("?", 1)[0]
        for stored in self.files.values():
            if stored.path == path:
                return stored
        raise KeyError(url)

    # -- messages ---------------------------------------------------------------------

    def _mentions(
        self,
        content: str,
        allowed: dict[str, Any] | None,
        author_id: int,
        channel: Channel,
        reply_to: StoredMessage | None,
    ) -> tuple[list[int], list[int], bool]:
        """Who the message would really ping: (users, roles, everyone)."""
        if allowed is None:
            parse = {"users", "roles", "everyone"}
            allowed_users: set[int] = set()
            allowed_roles: set[int] = set()
            replied_user = True
        else:
            parse = set(allowed.get("parse") or [])
            allowed_users = {int(u) for u in allowed.get("users") or []}
            allowed_roles = {int(r) for r in allowed.get("roles") or []}
            replied_user = bool(allowed.get("replied_user", False))
            if "users" in parse and allowed_users:
                raise form_error(
                    ["allowed_mentions"],
                    "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    'parse:["users"] and users: [ids...] are mutually exclusive.',
                )
            if "roles" in parse and allowed_roles:
                raise form_error(
                    ["allowed_mentions"],
                    "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    'parse:["roles"] and roles: [ids...] are mutually exclusive.',
                )
        can_everyone = bool(self.channel_permissions(author_id, channel) & MENTION_EVERYONE)
        users: list[int] = []
        for match in USER_MENTION.finditer(content):
            uid = int(match.group(1))
            if (
                uid in self.users
                and uid not in users
                and ("users" in parse or uid in allowed_users)
            ):
                users.append(uid)
        if reply_to is not None and replied_user and reply_to.author_id not in users:
            users.append(reply_to.author_id)
        roles: list[int] = []
        for match in ROLE_MENTION.finditer(content):
            rid = int(match.group(1))
            guild = self.guild_of(channel)
            role = guild.roles.get(rid) if guild is not None else None
            if role is None or rid in roles or not ("roles" in parse or rid in allowed_roles):
                continue
            if role.mentionable or can_everyone:
                roles.append(rid)
        everyone = bool(EVERYONE_MENTION.search(content)) and "everyone" in parse and can_everyone
        return users, roles, everyone

    def _validate_message(self, payload: dict[str, Any], *, partial: bool) -> None:
        content = payload.get("content")
        if content is not None and len(str(content)) > MAX_CONTENT:
            raise form_error(
                ["content"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
            )
        embeds = payload.get("embeds")
        if embeds:
            if len(embeds) > 10:
                raise form_error(
                    ["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."
                )
            total = 0
            for i, embed in enumerate(embeds):
                total += _check_embed(i, embed)
            if total > 6000:
                raise form_error(
                    ["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
                )
        components = payload.get("components")
        if components:
            flags = int(payload.get("flags") or 0)
            if not flags & FLAG_IS_COMPONENTS_V2 and len(components) > 5:
                raise form_error(
                    ["components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length."
                )
            seen: set[str] = set()
            for row_i, row in enumerate(components):
                if row.get("type") == 1 and len(row.get("components") or []) > 5:
                    raise form_error(
                        ["components", row_i, "components"],
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 5 or fewer in length.",
                    )
            for comp in _walk_components(components):
                cid = comp.get("custom_id")
                if cid is not None:
                    if len(cid) > 100:
                        raise form_error(
                            ["components"],
                            "BASE_TYPE_MAX_LENGTH",
                            "custom_id must be 100 or fewer in length.",
                        )
                    if cid in seen:
                        raise form_error(
                            ["components"],
                            "COMPONENT_CUSTOM_ID_DUPLICATED",
                            "Component custom id cannot be duplicated",
                        )
                    seen.add(cid)
                label = comp.get("label")
                if label is not None and comp.get("type") == 2 and len(label) > 80:
                    raise form_error(
                        ["components"],
                        "BASE_TYPE_MAX_LENGTH",
                        "label must be 80 or fewer in length.",
                    )

    def _attachments_from(
        self,
        payload: dict[str, Any],
        files: list[UploadedFile],
        channel: Channel,
        existing: list[dict[str, Any]],
        *,
        partial: bool,
    ) -> list[dict[str, Any]]:
        """Resolve ``attachments`` + uploaded files into the message's attachment list.

        New uploads are referenced by ``{"id": <index of files[n]>}``; existing ones by
        their snowflake. A PATCH without ``attachments`` keeps what the message had.
        """
        for upload in files:  # refuse before storing anything
            if len(upload.data) > self.upload_limit:
                raise ApiError(413, 40005, "Request entity too large")
        by_index = {f.index: f for f in files}
        listed = payload.get("attachments")
        if listed is None:
            keep = list(existing) if partial else []
            wanted_new = [(f, f.filename, None) for f in files]
        else:
            existing_by_id = {a["id"]: a for a in existing}
            keep = []
            wanted_new = []
            for entry in listed:
                raw_id = str(entry.get("id"))
                if raw_id in existing_by_id:
                    keep.append(existing_by_id[raw_id])
                    continue
                try:
                    upload = by_index.pop(int(raw_id))
                except (KeyError, ValueError):
                    raise form_error(
                        ["attachments"], "ATTACHMENT_NOT_FOUND", f"Unknown attachment {raw_id}"
                    ) from None
                wanted_new.append(
                    (upload, entry.get("filename") or upload.filename, entry.get("description"))
                )
            # files not referenced in ``attachments`` are still uploaded, in order
            wanted_new += [(f, f.filename, None) for f in by_index.values()]
        if len(keep) + len(wanted_new) > MAX_ATTACHMENTS:
            raise form_error(
                ["attachments"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."
            )
        result = list(keep)
        for upload, name, description in wanted_new:
            upload = UploadedFile(upload.index, name, upload.content_type, upload.data)
            _stored, attachment = self.store_file(upload, f"/attachments/{channel.id}")
            if description:
                attachment["description"] = description
            result.append(attachment)
        return result

    def _normalize_components(self, components: list[dict[str, Any]]) -> list[dict[str, Any]]:
        components = _drop_none(copy.deepcopy(components))
        used = {c["id"] for c in _walk_components(components) if isinstance(c.get("id"), int)}
        counter = 1
        for comp in _walk_components(components):
            if not isinstance(comp.get("id"), int):
                while counter in used:
                    counter += 1
                comp["id"] = counter
                used.add(counter)
        return components

    def _normalize_embeds(
        self, embeds: list[dict[str, Any]], attachments: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        by_name = {a["filename"]: a["url"] for a in attachments}
        out = []
        for embed in _drop_none(copy.deepcopy(embeds)):
            embed.setdefault("type", "rich")
            for key in ("image", "thumbnail", "author", "footer"):
                part = embed.get(key)
                if not isinstance(part, dict):
                    continue
                for url_key in ("url", "icon_url"):
                    url = part.get(url_key)
                    if isinstance(url, str) and url.startswith("attachment://"):
                        part[url_key] = by_name.get(url.removeprefix("attachment://"), url)
                if key in ("image", "thumbnail") and "url" in part:
                    part.setdefault("proxy_url", part["url"])
            for fld in embed.get("fields", []):
                fld.setdefault("inline", False)
            out.append(embed)
        return out

    def create_message(
        self,
        channel: Channel,
        author: EmuUser,
        payload: dict[str, Any],
        files: Sequence[UploadedFile] = (),
        *,
        message_type: int = MESSAGE_DEFAULT,
        interaction: InteractionRecord | None = None,
        extra_flags: int = 0,
        allow_flags: int = SETTABLE_FLAGS,
        check_permissions: bool = True,
    ) -> StoredMessage:
        """Create a message as Discord does for ``POST /channels/{id}/messages`` and friends.

        With ``nonce`` and ``enforce_nonce: true``, a message the same author sent to the
        same channel with the same nonce in the last few minutes is returned instead, and
        nothing is created or dispatched (resources/message, "Create Message").
        """
        files = list(files)
        if check_permissions:
            needed = SEND_MESSAGES | (ATTACH_FILES if files else 0)
            self.require(author.id, channel, needed)
        self._validate_message(payload, partial=False)
        nonce_key = self._nonce_key(channel, author, payload)
        if nonce_key is not None:
            seen = self.nonces.get(nonce_key)
            if seen is not None and time.time() - seen[1] < NONCE_WINDOW:
                earlier = self.messages.get(seen[0])
                if earlier is not None and not earlier.deleted:
                    log.info("nonce %r seen before: returning message %s", nonce_key[2], seen[0])
                    return earlier
        content = str(payload.get("content") or "")
        embeds = payload.get("embeds") or []
        components = payload.get("components") or []
        sticker_ids = payload.get("sticker_ids") or []
        has_files = bool(files) or bool(payload.get("attachments"))
        if not (content or embeds or components or has_files or sticker_ids or payload.get("poll")):
            if not extra_flags & FLAG_LOADING:
                raise ApiError(400, 50006, "Cannot send an empty message")
        reply_to = None
        reference = payload.get("message_reference")
        if reference and reference.get("message_id"):
            ref_channel = reference.get("channel_id") or channel.id
            try:
                reply_to = self.get_message(ref_channel, reference["message_id"])
            except ApiError:
                if reference.get("fail_if_not_exists", True):
                    raise form_error(
                        ["message_reference"], "REPLIES_UNKNOWN_MESSAGE", "Unknown message"
                    ) from None
        flags = (int(payload.get("flags") or 0) & allow_flags) | extra_flags
        users, roles, everyone = self._mentions(
            content, payload.get("allowed_mentions"), author.id, channel, reply_to
        )
        attachments = self._attachments_from(payload, files, channel, [], partial=False)
        msg_id = self.ids.new()
        data: dict[str, Any] = {
            "type": MESSAGE_REPLY
            if reply_to is not None and message_type == MESSAGE_DEFAULT
            else message_type,
            "content": content,
            "mentions": [self.users[u].payload() for u in users],
            "mention_roles": [str(r) for r in roles],
            "attachments": attachments,
            "embeds": self._normalize_embeds(embeds, attachments),
            "timestamp": iso(time.time()),
            "edited_timestamp": None,
            "flags": flags,
            "components": self._normalize_components(components),
            "id": str(msg_id),
            "channel_id": str(channel.id),
            "author": author.payload(),
            "pinned": False,
            "mention_everyone": everyone,
            "tts": bool(payload.get("tts", False)),
        }
        if payload.get("nonce") is not None:
            data["nonce"] = payload["nonce"]
        if reply_to is not None:
            data["message_reference"] = {
                "type": 0,
                "channel_id": str(reply_to.channel_id),
                "message_id": str(reply_to.id),
            }
            if reply_to.guild_id:
                data["message_reference"]["guild_id"] = str(reply_to.guild_id)
            data["referenced_message"] = reply_to.render(None)
            data["referenced_message"].pop("reactions", None)
        if interaction is not None:
            data["webhook_id"] = str(self.application_id)
            data["application_id"] = str(self.application_id)
            invoker = self.users[interaction.user_id]
            data["interaction_metadata"] = self.interaction_metadata(interaction)
            if interaction.command_name:
                data["interaction"] = {
                    "id": str(interaction.id),
                    "type": interaction.type,
                    "name": interaction.command_name,
                    "user": invoker.payload(),
                }
        stored = StoredMessage(
            data=data,
            guild_id=channel.guild_id,
            visible_to=interaction.user_id if (interaction and flags & FLAG_EPHEMERAL) else None,
            interaction_id=interaction.id if interaction else None,
        )
        self.messages[msg_id] = stored
        self.channel_messages.setdefault(channel.id, []).append(msg_id)
        if nonce_key is not None:
            self.nonces[nonce_key] = (msg_id, time.time())
        if stored.visible_to is None:
            channel.last_message_id = msg_id
        stored.revision = self.changed()
        if stored.visible_to is None:  # bots never receive ephemeral messages on the gateway
            self.emit("MESSAGE_CREATE", self.message_event(stored))
        return stored

    def _nonce_key(
        self, channel: Channel, author: EmuUser, payload: dict[str, Any]
    ) -> tuple[int, int, str] | None:
        nonce = payload.get("nonce")
        if nonce is None:
            return None
        if isinstance(nonce, bool) or not isinstance(nonce, int | str):
            raise form_error(["nonce"], "BASE_TYPE_BAD_TYPE", "Must be an integer or a string.")
        if isinstance(nonce, str) and len(nonce) > MAX_NONCE:
            raise form_error(
                ["nonce"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_NONCE} or fewer in length."
            )
        enforce = payload.get("enforce_nonce")
        if isinstance(enforce, str):  # a multipart form field rather than payload_json
            enforce = enforce.lower() == "true"
        if not enforce:
            return None
        now = time.time()
        if len(self.nonces) > 10_000:
            self.nonces = {k: v for k, v in self.nonces.items() if now - v[1] < NONCE_WINDOW}
        return (channel.id, author.id, str(nonce))

    def interaction_metadata(self, interaction: InteractionRecord) -> dict[str, Any]:
        """``interaction_metadata`` of a message an interaction produced (resources/message)."""
        metadata: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.type,
            "user": self.users[interaction.user_id].payload(),
            "authorizing_integration_owners": {"0": str(interaction.guild_id)},
        }
        if interaction.original_message_id is not None:
            metadata["original_response_message_id"] = str(interaction.original_message_id)
        if interaction.type == INTERACTION_MESSAGE_COMPONENT and interaction.host_message_id:
            metadata["interacted_message_id"] = str(interaction.host_message_id)
        trigger = self.interactions.get(interaction.trigger_id or 0)
        if interaction.type == INTERACTION_MODAL_SUBMIT and trigger is not None:
            metadata["triggering_interaction_metadata"] = self.interaction_metadata(trigger)
        return metadata

    def edit_message(
        self,
        msg: StoredMessage,
        payload: dict[str, Any],
        files: Sequence[UploadedFile] = (),
        *,
        clear_flags: int = 0,
    ) -> StoredMessage:
        """Apply a PATCH (content, embeds, components, attachments, flags, allowed_mentions)."""
        files = list(files)
        self._validate_message(payload, partial=True)
        channel = self.get_channel(msg.channel_id)
        data = copy.deepcopy(msg.data)  # a refused edit leaves the message as it was
        if "content" in payload:
            data["content"] = str(payload["content"] or "")
        if "embeds" in payload:
            data["embeds"] = self._normalize_embeds(payload["embeds"] or [], data["attachments"])
        if "components" in payload:
            data["components"] = self._normalize_components(payload["components"] or [])
        if payload.get("flags") is not None:
            keep = data["flags"] & ~SETTABLE_FLAGS
            data["flags"] = keep | (int(payload["flags"]) & SETTABLE_FLAGS)
        data["flags"] &= ~clear_flags
        if "content" in payload or "allowed_mentions" in payload:
            users, roles, everyone = self._mentions(
                data["content"], payload.get("allowed_mentions"), msg.author_id, channel, None
            )
            data["mentions"] = [self.users[u].payload() for u in users]
            data["mention_roles"] = [str(r) for r in roles]
            data["mention_everyone"] = everyone
        keeps_files = (
            data["attachments"] if "attachments" not in payload else payload["attachments"]
        )
        if not (data["content"] or data["embeds"] or data["components"] or keeps_files or files):
            if not data["flags"] & FLAG_LOADING:
                raise ApiError(400, 50006, "Cannot send an empty message")
        if "attachments" in payload or files:
            data["attachments"] = self._attachments_from(
                payload, files, channel, data.get("attachments", []), partial=True
            )
            if "embeds" in payload:  # attachment:// names resolve against the new files
                data["embeds"] = self._normalize_embeds(
                    payload["embeds"] or [], data["attachments"]
                )
        data["edited_timestamp"] = iso(time.time())
        msg.data = data
        msg.revision = self.changed()
        if msg.visible_to is None:
            self.emit("MESSAGE_UPDATE", self.message_event(msg))
        return msg

    def delete_message(self, msg: StoredMessage) -> None:
        msg.deleted = True
        self.changed()
        if msg.visible_to is None:
            event: dict[str, Any] = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            if msg.guild_id:
                event["guild_id"] = str(msg.guild_id)
            self.emit("MESSAGE_DELETE", event)

    def message_event(self, msg: StoredMessage) -> dict[str, Any]:
        """MESSAGE_CREATE/UPDATE: the message plus guild_id, member and mention members."""
        data = msg.render(None)
        if msg.guild_id:
            data["guild_id"] = str(msg.guild_id)
            members = self.guilds[msg.guild_id].members
            author = members.get(msg.author_id)
            if author is not None and "webhook_id" not in data:
                data["member"] = self.member_payload(author, with_user=False)
            for mention in data["mentions"]:
                m = members.get(int(mention["id"]))
                if m is not None:
                    mention["member"] = self.member_payload(m, with_user=False)
        return data

    def visible_messages(self, channel_id: int, viewer: int | None) -> list[StoredMessage]:
        return [
            self.messages[mid]
            for mid in self.channel_messages.get(channel_id, [])
            if self.messages[mid].visible_for(viewer)
        ]

    # -- reactions --------------------------------------------------------------------

    def add_reaction(self, msg: StoredMessage, user_id: int, emoji_text: str) -> bool:
        key, emoji = parse_emoji(emoji_text)
        state = msg.reactions.get(key)
        if state is None:
            if len(msg.reactions) >= 20:
                raise ApiError(400, 30010, "Maximum number of reactions reached (20)")
            state = msg.reactions[key] = ReactionState(emoji)
        if user_id in state.users:
            return False
        state.users.append(user_id)
        msg.revision = self.changed()
        event: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(msg.channel_id),
            "message_id": str(msg.id),
            "emoji": dict(emoji),
            "message_author_id": str(msg.author_id),
            "burst": False,
            "burst_colors": [],
            "type": 0,
        }
        if msg.guild_id:
            event["guild_id"] = str(msg.guild_id)
            member = self.guilds[msg.guild_id].members.get(user_id)
            if member is not None:
                event["member"] = self.member_payload(member)
        if msg.visible_to is None:
            self.emit("MESSAGE_REACTION_ADD", event)
        return True

    def remove_reaction(self, msg: StoredMessage, user_id: int, emoji_text: str) -> bool:
        key, emoji = parse_emoji(emoji_text)
        state = msg.reactions.get(key)
        if state is None or user_id not in state.users:
            return False
        state.users.remove(user_id)
        if not state.users:
            del msg.reactions[key]
        msg.revision = self.changed()
        event: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(msg.channel_id),
            "message_id": str(msg.id),
            "emoji": dict(emoji),
            "burst": False,
            "type": 0,
        }
        if msg.guild_id:
            event["guild_id"] = str(msg.guild_id)
        if msg.visible_to is None:
            self.emit("MESSAGE_REACTION_REMOVE", event)
        return True

    def clear_reactions(self, msg: StoredMessage, emoji_text: str | None = None) -> bool:
        """Remove every reaction, or every reaction of one emoji, from a message.

        Dispatches MESSAGE_REACTION_REMOVE_ALL, or MESSAGE_REACTION_REMOVE_EMOJI for one
        emoji (events/gateway-events); False when there was nothing to remove.
        """
        event: dict[str, Any] = {"channel_id": str(msg.channel_id), "message_id": str(msg.id)}
        if msg.guild_id:
            event["guild_id"] = str(msg.guild_id)
        if emoji_text is None:
            if not msg.reactions:
                return False
            msg.reactions.clear()
            name = "MESSAGE_REACTION_REMOVE_ALL"
        else:
            key, emoji = parse_emoji(emoji_text)
            if msg.reactions.pop(key, None) is None:
                return False
            event["emoji"] = dict(emoji)
            name = "MESSAGE_REACTION_REMOVE_EMOJI"
        msg.revision = self.changed()
        if msg.visible_to is None:
            self.emit(name, event)
        return True

    def reaction_users(
        self, msg: StoredMessage, emoji_text: str, *, after: int = 0, limit: int = 25
    ) -> list[dict[str, Any]]:
        key, _ = parse_emoji(emoji_text)
        state = msg.reactions.get(key)
        if state is None:
            return []
        ids = sorted(u for u in state.users if u > after)[:limit]
        return [self.users[u].payload() for u in ids]

    # -- DMs --------------------------------------------------------------------------

    def dm_channel(self, user_id: int) -> Channel:
        user = self.get_user(user_id)
        existing = self.dm_channels.get(user.id)
        if existing is not None:
            return self.channels[existing]
        channel = Channel(self.ids.new(), "", CHANNEL_DM, None, recipients=[user.id])
        self.channels[channel.id] = channel
        self.channel_messages[channel.id] = []
        self.dm_channels[user.id] = channel.id
        return channel

    # -- application commands ---------------------------------------------------------

    def overwrite_commands(
        self, guild_id: int | None, commands: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Bulk overwrite: keep the id of a command whose (name, type) survives, like Discord."""
        if not isinstance(commands, list):
            raise form_error([], "BASE_TYPE_ARRAY", "Must be an array.")
        previous = {(c["name"], c["type"]): c for c in self.commands.get(guild_id, [])}
        stored: list[dict[str, Any]] = []
        seen: set[tuple[str, int]] = set()
        for i, raw in enumerate(commands):
            name = raw.get("name")
            ctype = int(raw.get("type") or 1)
            if not isinstance(name, str) or not name:
                raise form_error([i, "name"], "BASE_TYPE_REQUIRED", "This field is required")
            if ctype == 1 and (not re.fullmatch(r"[-_'\w]{1,32}", name) or name != name.lower()):
                raise form_error(
                    [i, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            if (name, ctype) in seen:
                raise form_error(
                    [i, "name"],
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                )
            seen.add((name, ctype))
            old = previous.get((name, ctype))
            command: dict[str, Any] = {
                "id": old["id"] if old else str(self.ids.new()),
                "application_id": str(self.application_id),
                "version": str(self.ids.new()),
                "default_member_permissions": (
                    None
                    if raw.get("default_member_permissions") is None
                    else str(int(raw["default_member_permissions"]))
                ),
                "type": ctype,
                "name": name,
                "description": raw.get("description", "") if ctype == 1 else "",
                "dm_permission": raw.get("dm_permission", True),
                "contexts": raw.get("contexts"),
                "integration_types": raw.get("integration_types") or [0],
                "nsfw": bool(raw.get("nsfw", False)),
            }
            for key in ("name_localizations", "description_localizations"):
                if raw.get(key) is not None:
                    command[key] = raw[key]
            if raw.get("options"):
                command["options"] = _drop_none(copy.deepcopy(raw["options"]))
            if guild_id is not None:
                command["guild_id"] = str(guild_id)
            stored.append(command)
        self.commands[guild_id] = stored
        self.changed()
        return copy.deepcopy(stored)

    def find_command(
        self, name: str, guild_id: int | None = None
    ) -> tuple[dict[str, Any], int | None]:
        for scope in (guild_id or self.guild_id, None):
            for command in self.commands.get(scope, []):
                if command["name"] == name and command["type"] == 1:
                    return command, scope
        raise LookupError(name)


def _check_embed(index: int, embed: dict[str, Any]) -> int:
    limits = {"title": 256, "description": 4096}
    total = 0
    for key, limit in limits.items():
        value = embed.get(key)
        if value is not None:
            if len(str(value)) > limit:
                raise form_error(
                    ["embeds", index, key],
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {limit} or fewer in length.",
                )
            total += len(str(value))
    fields = embed.get("fields") or []
    if len(fields) > 25:
        raise form_error(
            ["embeds", index, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
        )
    for fi, fld in enumerate(fields):
        for key, limit in (("name", 256), ("value", 1024)):
            value = str(fld.get(key) or "")
            if not value:
                raise form_error(
                    ["embeds", index, "fields", fi, key],
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                )
            if len(value) > limit:
                raise form_error(
                    ["embeds", index, "fields", fi, key],
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {limit} or fewer in length.",
                )
            total += len(value)
    for part, key, limit in (("footer", "text", 2048), ("author", "name", 256)):
        value = (embed.get(part) or {}).get(key)
        if value is not None:
            if len(str(value)) > limit:
                raise form_error(
                    ["embeds", index, part, key],
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {limit} or fewer in length.",
                )
            total += len(str(value))
    return total


_FILENAME_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_filename(name: str) -> str:
    """Discord keeps ASCII letters, digits, ``._-`` and turns the rest into ``_``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _FILENAME_BAD.sub("_", base).strip("._") or "unknown"
    return cleaned[:1024]


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or JPEG, read from its header (Discord reports them)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            length = int.from_bytes(data[i + 2 : i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):
                return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(
                    data[i + 5 : i + 7], "big"
                )
            i += 2 + length
    return None


def bucket_hash(method: str, template: str) -> str:
    """A stable opaque bucket id per route, shaped like Discord's 32-hex hashes."""
    return hashlib.md5(f"{method} {template}".encode(), usedforsecurity=False).hexdigest()
