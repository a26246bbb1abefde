"""The emulator's REST routes: the slice of Discord's HTTP API v10 a bot uses.

Paths, parameters and bodies follow Discord's OpenAPI description
(``shared/specs/discord-openapi.json``); path parameters are named as there, so a
logged request's route template is the spec's path. Errors use Discord's JSON
error body (``{"message": ..., "code": ...}``, ``errors`` for 50035). Every API
response carries ``X-RateLimit-*`` headers and ``Via`` (discord.py treats a 429
without ``Via`` as a Cloudflare ban and does not retry).

Not emulated (answered 404 with Discord's body, and logged): threads, pins,
webhooks other than interaction webhooks, guild/channel/role management by the bot
(the driver changes them), bulk delete, bans, emojis, stickers, polls, audit logs,
invites, voice.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, hdrs, web

from bot.emulator.state import (
    ADD_REACTIONS,
    ATTACH_FILES,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_AUTOCOMPLETE,
    INTERACTION_MESSAGE_COMPONENT,
    INTERACTION_MODAL_SUBMIT,
    MANAGE_MESSAGES,
    MESSAGE_CHAT_INPUT_COMMAND,
    MESSAGE_DEFAULT,
    READ_MESSAGE_HISTORY,
    SETTABLE_FLAGS,
    VIEW_CHANNEL,
    ApiError,
    Channel,
    InteractionRecord,
    StoredMessage,
    UploadedFile,
    bucket_hash,
    form_error,
    parse_emoji,
    unknown,
)

if TYPE_CHECKING:
    from bot.emulator.server import DiscordEmulator

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"

#: routes a bot may call without ``Authorization`` (the token is in the path, or it is public)
_NO_AUTH = ("/webhooks/", "/interactions/")
_PUBLIC = {"/gateway"}

#: where the middleware leaves the request's log record for the handlers
RECORD_KEY: Any = web.RequestKey("record", object) if hasattr(web, "RequestKey") else "record"

RATE_LIMIT = 50  # requests per bucket per window; generous, so only forced 429s slow a test
RATE_WINDOW = 1.0


@dataclass
class RequestRecord:
    """One request the emulator answered, with enough detail to validate it against the spec."""

    method: str
    path: str  # relative to the API base for API routes, e.g. /channels/1/messages
    status: int
    route: str | None  # the spec's path template, e.g. /channels/{channel_id}/messages
    query: dict[str, str] = field(default_factory=dict)
    content_type: str = ""
    body: Any = None  # parsed JSON, or the multipart ``payload_json``
    files: list[str] = field(default_factory=list)
    response: Any = None  # the JSON answered, if any

    def as_tuple(self) -> tuple[str, str, int]:
        return (self.method, self.path, self.status)


@dataclass
class Fault:
    """A rule the driver set: answer matching requests with an error instead of (or after)
    handling them.

    ``kind`` is ``"rate_limit"`` (a 429 with Discord's headers and body), ``"status"``
    (``status`` without touching the state) or ``"after"`` (handle the request, so the
    change happens and is dispatched, then answer ``status`` anyway: the outcome a client
    cannot know). It applies ``remaining`` more times (None: no count) and until the
    monotonic time ``until`` (None: no deadline); ``hits`` counts the requests it answered.
    """

    method: str
    pattern: re.Pattern[str]
    kind: str = "rate_limit"
    status: int = 429
    retry_after: float = 0.0
    global_: bool = False
    remaining: int | None = 1
    until: float | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.method in (method, "*") and bool(self.pattern.search(path))

    @property
    def spent(self) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return True
        return self.until is not None and time.monotonic() >= self.until


def _json(data: Any, status: int = 200) -> web.Response:
    # exactly "application/json", no charset: discord.py compares the header verbatim
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return web.Response(body=body, status=status, headers={hdrs.CONTENT_TYPE: "application/json"})


def _no_content() -> web.Response:
    return web.Response(status=204)


def _server_error(status: int) -> web.Response:
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    return _json({"message": f"{status}: {reason.get(status, 'Server Error')}", "code": 0}, status)


def _snowflake_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise form_error([name], "NUMBER_TYPE_COERCE", f'Value "{raw}" is not snowflake.') from None


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise form_error([name], "NUMBER_TYPE_COERCE", f'Value "{raw}" is not int.') from None
    if not low <= value <= high:
        raise form_error(
            [name], "NUMBER_TYPE_MAX", f"int value should be between {low} and {high}."
        )
    return value


def _truthy(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


class RestApi:
    """Route handlers bound to one emulator."""

    def __init__(self, emulator: DiscordEmulator) -> None:
        self.emu = emulator
        self.state = emulator.state
        self._windows: dict[str, tuple[float, int]] = {}
        #: requests per bucket (and major parameter) per window, as X-RateLimit-* tells
        self.rate_limit = RATE_LIMIT
        self.rate_window = RATE_WINDOW

    # -- wiring -----------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        p = API_PREFIX
        r = app.router
        get, post, put, patch, delete = r.add_get, r.add_post, r.add_put, r.add_patch, r.add_delete
        get(p + "/users/@me", self.get_me, allow_head=False)
        post(p + "/users/@me/channels", self.create_dm)
        get(p + "/users/{user_id}", self.get_user, allow_head=False)
        get(p + "/applications/@me", self.get_application, allow_head=False)
        get(p + "/oauth2/applications/@me", self.get_application, allow_head=False)
        get(p + "/gateway", self.get_gateway, allow_head=False)
        get(p + "/gateway/bot", self.get_gateway_bot, allow_head=False)
        cmds = p + "/applications/{application_id}/commands"
        gcmds = p + "/applications/{application_id}/guilds/{guild_id}/commands"
        get(cmds, self.get_commands, allow_head=False)
        put(cmds, self.put_commands)
        get(cmds + "/{command_id}", self.get_command, allow_head=False)
        get(gcmds, self.get_commands, allow_head=False)
        put(gcmds, self.put_commands)
        get(gcmds + "/{command_id}", self.get_command, allow_head=False)
        g = p + "/guilds/{guild_id}"
        get(g, self.get_guild, allow_head=False)
        get(g + "/channels", self.get_guild_channels, allow_head=False)
        get(g + "/roles", self.get_roles, allow_head=False)
        get(g + "/members", self.list_members, allow_head=False)
        get(g + "/members/{user_id}", self.get_member, allow_head=False)
        c = p + "/channels/{channel_id}"
        get(c, self.get_channel, allow_head=False)
        post(c + "/typing", self.typing)
        get(c + "/messages", self.list_messages, allow_head=False)
        post(c + "/messages", self.create_message)
        m = c + "/messages/{message_id}"
        get(m, self.get_message, allow_head=False)
        patch(m, self.edit_message)
        delete(m, self.delete_message)
        delete(m + "/reactions", self.clear_reactions)
        rx = m + "/reactions/{emoji_name}"
        get(rx, self.get_reactions, allow_head=False)
        delete(rx, self.clear_reactions)
        put(rx + "/@me", self.put_reaction)
        delete(rx + "/@me", self.delete_own_reaction)
        delete(rx + "/{user_id}", self.delete_user_reaction)
        post(
            p + "/interactions/{interaction_id}/{interaction_token}/callback",
            self.interaction_callback,
        )
        w = p + "/webhooks/{webhook_id}/{webhook_token}"
        post(w, self.webhook_execute)
        get(w + "/messages/{message_id}", self.webhook_get_message, allow_head=False)
        patch(w + "/messages/{message_id}", self.webhook_edit_message)
        delete(w + "/messages/{message_id}", self.webhook_delete_message)
        # the CDN
        get("/attachments/{channel_id}/{attachment_id}/{filename}", self.cdn, allow_head=False)
        get(
            "/ephemeral-attachments/{application_id}/{attachment_id}/{filename}",
            self.cdn,
            allow_head=False,
        )

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        is_api = path.startswith(API_PREFIX + "/") or path == API_PREFIX
        if not is_api:
            response = await handler(request)
            if path != "/gateway":
                self.emu._record(RequestRecord(request.method, path, response.status, None))
            return response
        rel = path[len(API_PREFIX) :]
        route = self._template(request)
        record = RequestRecord(
            request.method, rel, 0, route, dict(request.query), request.content_type
        )
        try:
            response = await self._answer(request, handler, rel, route, record)
        except web.HTTPException as exc:  # routing: 404 / 405
            if exc.status == 405:
                response = _json({"message": "405: Method Not Allowed", "code": 0}, 405)
            else:
                log.warning("emulator has no route for %s %s", request.method, rel)
                response = _json({"message": "404: Not Found", "code": 0}, 404)
        record.status = response.status
        if (
            isinstance(response, web.Response)
            and response.body is not None
            and response.content_type == "application/json"
        ):
            record.response = json.loads(response.body)  # type: ignore[arg-type]
        self.emu._record(record)
        response.headers["Via"] = "1.1 google"
        return response

    def _template(self, request: web.Request) -> str | None:
        info = request.match_info
        resource = info.route.resource if info.http_exception is None else None
        if resource is None:
            return None
        template = resource.canonical.removeprefix(API_PREFIX)
        if info.get("message_id") == "@original":
            template = template.replace("{message_id}", "@original")
        return template

    async def _answer(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        rel: str,
        route: str | None,
        record: RequestRecord,
    ) -> web.StreamResponse:
        request[RECORD_KEY] = record
        bucket = bucket_hash(request.method, route or rel)
        major = "+".join(
            request.match_info.get(k, "")
            # interaction callbacks are limited per interaction, as on Discord
            for k in (
                "channel_id",
                "guild_id",
                "webhook_id",
                "webhook_token",
                "interaction_id",
                "interaction_token",
            )
        )
        fault = self.emu._take_fault(request.method, rel)
        if fault is not None and fault.kind == "rate_limit":
            await self._drain(request)
            return self._too_many(fault, bucket)
        if fault is not None and fault.kind == "status":
            await self._drain(request)
            return _server_error(fault.status)
        if route is not None and not (route.startswith(_NO_AUTH) or route in _PUBLIC):
            auth = request.headers.get(hdrs.AUTHORIZATION, "")
            if auth != f"Bot {self.state.bot_token}":
                await self._drain(request)
                return _json({"message": "401: Unauthorized", "code": 0}, 401)
        limit_headers, exhausted = self._count(bucket, major)
        if exhausted is not None:
            await self._drain(request)
            return self._too_many(exhausted, bucket)
        try:
            response = await handler(request)
        except ApiError as err:
            await self._drain(request)
            if err.status >= 500:
                log.error("emulator error on %s %s: %s", request.method, rel, err)
            response = _json(err.body(), err.status)
        if fault is not None and fault.kind == "after":
            log.info(
                "emulator handled %s %s (status %s) and answers %s",
                request.method,
                rel,
                response.status,
                fault.status,
            )
            response = _server_error(fault.status)
        for key, value in limit_headers.items():
            response.headers[key] = value
        return response

    def _count(self, bucket: str, major: str) -> tuple[dict[str, str], Fault | None]:
        now = time.time()
        key = f"{bucket}:{major}"
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.rate_window:
            start, count = now, 0
        count += 1
        self._windows[key] = (start, count)
        reset = start + self.rate_window
        headers = {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(self.rate_limit - count, 0)),
            "X-RateLimit-Reset": f"{reset:.3f}",
            "X-RateLimit-Reset-After": f"{max(reset - now, 0.001):.3f}",
            "X-RateLimit-Bucket": bucket,
        }
        if count > self.rate_limit:
            return headers, Fault("", re.compile(""), retry_after=round(reset - now, 3))
        return headers, None

    def _too_many(self, limit: Fault, bucket: str) -> web.Response:
        now = time.time()
        body = {
            "message": "You are being rate limited.",
            "retry_after": limit.retry_after,
            "global": limit.global_,
            "code": 0,
        }
        response = _json(body, 429)
        response.headers["Retry-After"] = str(max(1, int(limit.retry_after + 0.999)))
        response.headers["X-RateLimit-Scope"] = "global" if limit.global_ else "user"
        if limit.global_:
            response.headers["X-RateLimit-Global"] = "true"
        else:
            response.headers.update(
                {
                    "X-RateLimit-Limit": str(self.rate_limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{now + limit.retry_after:.3f}",
                    "X-RateLimit-Reset-After": f"{limit.retry_after:.3f}",
                    "X-RateLimit-Bucket": bucket,
                }
            )
        return response

    async def _drain(self, request: web.Request) -> None:
        """Read and drop what is left of a body we refuse, so the client sees our answer."""
        if request.body_exists and not request.content.at_eof():
            try:
                while await request.content.readany():
                    pass
            except (ConnectionError, RuntimeError):
                pass

    # -- bodies -----------------------------------------------------------------------

    async def _read(self, request: web.Request) -> tuple[Any, list[UploadedFile]]:
        """The JSON body, or ``payload_json`` plus ``files[n]`` of a multipart body."""
        record: RequestRecord = request[RECORD_KEY]
        files: list[UploadedFile] = []
        if request.content_type == "multipart/form-data":
            payload: dict[str, Any] = {}
            too_large = False
            reader = await request.multipart()
            auto_index = 0
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                name = part.name or ""
                if part.filename is None:
                    text = await part.text()
                    if name == "payload_json":
                        try:
                            payload.update(json.loads(text))
                        except ValueError:
                            raise ApiError(
                                400, 50109, "The request body contains invalid JSON."
                            ) from None
                    else:
                        payload[name] = text
                    continue
                match = re.fullmatch(r"files\[(\d+)\]", name)
                index = int(match.group(1)) if match else auto_index
                auto_index = index + 1
                chunks: list[bytes] = []
                size = 0
                while chunk := await part.read_chunk(65536):
                    size += len(chunk)
                    if size > self.state.upload_limit:
                        too_large = True
                        chunks = []
                    elif not too_large:
                        chunks.append(chunk)
                declared = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
                if declared == "application/octet-stream":
                    # Discord sniffs the real type; discord.py always declares octet-stream
                    declared = mimetypes.guess_type(part.filename)[0] or declared
                files.append(UploadedFile(index, part.filename, declared, b"".join(chunks)))
                record.files.append(part.filename)
            record.body = payload
            if too_large:
                raise ApiError(413, 40005, "Request entity too large")
            return payload, files
        if not request.body_exists:
            return {}, files
        raw = await request.read()
        if not raw:
            return {}, files
        try:
            payload = json.loads(raw)
        except ValueError:
            raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
        record.body = payload
        return payload, files

    # -- users & application ----------------------------------------------------------

    async def get_me(self, request: web.Request) -> web.Response:
        return _json(self.state.bot_user_pii())

    async def get_user(self, request: web.Request) -> web.Response:
        return _json(self.state.get_user(request.match_info["user_id"]).payload())

    async def create_dm(self, request: web.Request) -> web.Response:
        payload, _ = await self._read(request)
        recipient = payload.get("recipient_id") if isinstance(payload, dict) else None
        if recipient is None:
            raise form_error(["recipient_id"], "BASE_TYPE_REQUIRED", "This field is required")
        channel = self.state.dm_channel(int(recipient))
        return _json(self.state.channel_payload(channel))

    async def get_application(self, request: web.Request) -> web.Response:
        return _json(self.state.application_payload())

    async def get_gateway(self, request: web.Request) -> web.Response:
        return _json({"url": self.emu.gateway_url})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        total = 1000
        return _json(
            {
                "url": self.emu.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": total,
                    "remaining": max(total - self.emu.gateway.ready_count, 0),
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    # -- application commands ---------------------------------------------------------

    def _command_scope(self, request: web.Request) -> int | None:
        if request.match_info["application_id"] != str(self.state.application_id):
            raise ApiError(403, 50001, "Missing Access")
        guild_id = request.match_info.get("guild_id")
        if guild_id is None:
            return None
        self.state.check_guild(guild_id)
        return int(guild_id)

    async def get_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        return _json(self.state.commands.get(scope, []))

    async def get_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        for command in self.state.commands.get(scope, []):
            if command["id"] == request.match_info["command_id"]:
                return _json(command)
        raise unknown("application command")

    async def put_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        payload, _ = await self._read(request)
        stored = self.state.overwrite_commands(scope, payload)
        log.info(
            "commands synced (%s): %s", "guild" if scope else "global", [c["name"] for c in stored]
        )
        return _json(stored)

    # -- guild ------------------------------------------------------------------------

    async def get_guild(self, request: web.Request) -> web.Response:
        guild = self.state.check_guild(request.match_info["guild_id"])
        return _json(self.state.guild_payload(guild, with_counts=_truthy(request, "with_counts")))

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self.state.check_guild(request.match_info["guild_id"])
        channels = [c for c in self.state.channels.values() if c.guild_id == guild.id]
        return _json([self.state.channel_payload(c) for c in channels])

    async def get_roles(self, request: web.Request) -> web.Response:
        guild = self.state.check_guild(request.match_info["guild_id"])
        return _json(self.state.role_payloads(guild))

    async def list_members(self, request: web.Request) -> web.Response:
        guild = self.state.check_guild(request.match_info["guild_id"])
        limit = _int_param(request, "limit", 1, 1, 1000)
        after = _snowflake_param(request, "after") or 0
        members = sorted(
            (m for m in guild.members.values() if m.user.id > after), key=lambda m: m.user.id
        )
        return _json([self.state.member_payload(m) for m in members[:limit]])

    async def get_member(self, request: web.Request) -> web.Response:
        guild = self.state.check_guild(request.match_info["guild_id"])
        member = self.state.get_member(request.match_info["user_id"], guild.id)
        return _json(self.state.member_payload(member))

    # -- channels & messages ----------------------------------------------------------

    def _channel(self, request: web.Request, needed: int = VIEW_CHANNEL) -> Channel:
        channel = self.state.get_channel(request.match_info["channel_id"])
        self.state.require(self.state.bot_user.id, channel, needed)
        return channel

    def _message(
        self, request: web.Request, needed: int = VIEW_CHANNEL | READ_MESSAGE_HISTORY
    ) -> StoredMessage:
        channel = self._channel(request, needed)
        msg = self.state.get_message(channel.id, request.match_info["message_id"])
        if msg.visible_to is not None:  # bots cannot fetch ephemeral messages
            raise unknown("Message")
        return msg

    def _render(self, msg: StoredMessage) -> dict[str, Any]:
        return msg.render(self.state.bot_user.id)

    async def get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        return _json(self.state.channel_payload(channel))

    async def typing(self, request: web.Request) -> web.Response:
        self._channel(request)
        return _no_content()

    async def list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel(request, VIEW_CHANNEL | READ_MESSAGE_HISTORY)
        limit = _int_param(request, "limit", 50, 1, 100)
        before = _snowflake_param(request, "before")
        after = _snowflake_param(request, "after")
        around = _snowflake_param(request, "around")
        msgs = self.state.visible_messages(channel.id, None)
        if around is not None:
            older = [m for m in msgs if m.id <= around][-((limit + 1) // 2) :]
            newer = [m for m in msgs if m.id > around][: limit - len(older)]
            chosen = older + newer
        elif after is not None:
            chosen = [m for m in msgs if m.id > after][:limit]
        else:
            if before is not None:
                msgs = [m for m in msgs if m.id < before]
            chosen = msgs[-limit:]
        # Discord answers newest first whatever the direction
        return _json([self._render(m) for m in reversed(chosen)])

    async def create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        payload, files = await self._read(request)
        if not isinstance(payload, dict):
            raise form_error([], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        msg = self.state.create_message(channel, self.state.bot_user, payload, files)
        return _json(self._render(msg))

    async def get_message(self, request: web.Request) -> web.Response:
        return _json(self._render(self._message(request)))

    async def edit_message(self, request: web.Request) -> web.Response:
        msg = self._message(request, VIEW_CHANNEL)
        payload, files = await self._read(request)
        channel = self.state.get_channel(msg.channel_id)
        if msg.author_id != self.state.bot_user.id:
            if set(payload) - {"flags"}:
                raise ApiError(403, 50005, "Cannot edit a message authored by another user")
            # only suppressing embeds is allowed on others' messages, with Manage Messages
            self.state.require(self.state.bot_user.id, channel, MANAGE_MESSAGES)
        if files:
            self.state.require(self.state.bot_user.id, channel, ATTACH_FILES)
        msg = self.state.edit_message(msg, payload, files)
        return _json(self._render(msg))

    async def delete_message(self, request: web.Request) -> web.Response:
        msg = self._message(request, VIEW_CHANNEL)
        if msg.author_id != self.state.bot_user.id:
            channel = self.state.get_channel(msg.channel_id)
            self.state.require(self.state.bot_user.id, channel, MANAGE_MESSAGES)
        self.state.delete_message(msg)
        return _no_content()

    # -- reactions --------------------------------------------------------------------

    async def put_reaction(self, request: web.Request) -> web.Response:
        msg = self._message(request)
        emoji = request.match_info["emoji_name"]
        key, _ = parse_emoji(emoji)
        if key not in msg.reactions:  # only the first reaction of an emoji needs the permission
            self.state.require(
                self.state.bot_user.id, self.state.get_channel(msg.channel_id), ADD_REACTIONS
            )
        self.state.add_reaction(msg, self.state.bot_user.id, emoji)
        return _no_content()

    async def delete_own_reaction(self, request: web.Request) -> web.Response:
        msg = self._message(request)
        self.state.remove_reaction(msg, self.state.bot_user.id, request.match_info["emoji_name"])
        return _no_content()

    async def delete_user_reaction(self, request: web.Request) -> web.Response:
        msg = self._message(request)
        user_id = int(request.match_info["user_id"])
        if user_id != self.state.bot_user.id:
            channel = self.state.get_channel(msg.channel_id)
            self.state.require(self.state.bot_user.id, channel, MANAGE_MESSAGES)
        self.state.remove_reaction(msg, user_id, request.match_info["emoji_name"])
        return _no_content()

    async def clear_reactions(self, request: web.Request) -> web.Response:
        """DELETE every reaction, or every reaction of one emoji (Manage Messages)."""
        msg = self._message(request)
        self.state.require(
            self.state.bot_user.id, self.state.get_channel(msg.channel_id), MANAGE_MESSAGES
        )
        self.state.clear_reactions(msg, request.match_info.get("emoji_name"))
        return _no_content()

    async def get_reactions(self, request: web.Request) -> web.Response:
        msg = self._message(request)
        limit = _int_param(request, "limit", 25, 1, 100)
        after = _snowflake_param(request, "after") or 0
        if request.query.get("type", "0") == "1":  # burst ("super") reactions: none here
            return _json([])
        users = self.state.reaction_users(
            msg, request.match_info["emoji_name"], after=after, limit=limit
        )
        return _json(users)

    # -- interactions -----------------------------------------------------------------

    def _interaction(self, interaction_id: str, token: str) -> InteractionRecord:
        try:
            record = self.state.interactions[int(interaction_id)]
        except (KeyError, ValueError):
            raise unknown("interaction") from None
        if record.token != token or record.expired:
            raise unknown("interaction")
        return record

    def _by_token(self, webhook_id: str, token: str) -> InteractionRecord:
        if webhook_id != str(self.state.application_id):
            raise unknown("Webhook")
        record = self.state.interactions_by_token.get(token)
        if record is None:
            raise unknown("Webhook")
        if not record.acked:
            # Discord: the interaction webhook exists only after the first callback
            raise unknown("Webhook")
        return record

    def _message_type(self, record: InteractionRecord) -> int:
        if record.type == INTERACTION_APPLICATION_COMMAND:
            return MESSAGE_CHAT_INPUT_COMMAND
        return MESSAGE_DEFAULT

    async def interaction_callback(self, request: web.Request) -> web.Response:
        info = request.match_info
        record = self._interaction(info["interaction_id"], info["interaction_token"])
        payload, files = await self._read(request)
        if record.acked:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if not isinstance(payload, dict) or "type" not in payload:
            raise form_error(["type"], "BASE_TYPE_REQUIRED", "This field is required")
        ctype = int(payload["type"])
        data = payload.get("data") or {}
        allowed = {
            INTERACTION_APPLICATION_COMMAND: {4, 5, 9},
            INTERACTION_MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
            INTERACTION_MODAL_SUBMIT: {4, 5, 6, 7},
            INTERACTION_AUTOCOMPLETE: {8},
        }[record.type]
        if ctype in (6, 7) and record.host_message_id is None:
            allowed = allowed - {6, 7}  # a modal opened by a slash command has no message
        if ctype not in allowed:
            raise form_error(
                ["type"],
                "INTERACTION_RESPONSE_TYPE_INVALID",
                f"Interaction callback type {ctype} is not valid for this interaction",
            )
        state = self.state
        channel = state.get_channel(record.channel_id)
        message: StoredMessage | None = None
        flags = int(data.get("flags") or 0)
        if ctype == 4:
            message = state.create_message(
                channel,
                state.bot_user,
                data,
                files,
                message_type=self._message_type(record),
                interaction=record,
                allow_flags=SETTABLE_FLAGS | FLAG_EPHEMERAL,
                check_permissions=False,
            )
            record.original_message_id = message.id
        elif ctype == 5:
            message = state.create_message(
                channel,
                state.bot_user,
                {},
                [],
                message_type=self._message_type(record),
                interaction=record,
                extra_flags=FLAG_LOADING | (flags & FLAG_EPHEMERAL),
                check_permissions=False,
            )
            record.original_message_id = message.id
        elif ctype in (6, 7):
            record.original_message_id = record.host_message_id
            if ctype == 7:
                assert record.host_message_id is not None
                host = state.messages[record.host_message_id]
                message = state.edit_message(host, data, files)
        elif ctype == 8:
            record.autocomplete_choices = list(data.get("choices") or [])
        elif ctype == 9:
            record.modal = data
        record.callback_type = ctype
        record.acked_at = time.monotonic()
        state.changed()
        log.info(
            "interaction %s answered with callback type %s in %.0f ms",
            record.id,
            ctype,
            (record.acked_at - record.created_at) * 1000,
        )
        if not _truthy(request, "with_response"):
            return _no_content()
        body: dict[str, Any] = {"interaction": {"id": str(record.id), "type": record.type}}
        if message is not None:
            body["interaction"].update(
                response_message_id=str(message.id),
                response_message_loading=bool(message.flags & FLAG_LOADING),
                response_message_ephemeral=bool(message.flags & FLAG_EPHEMERAL),
            )
            if ctype in (4, 7):
                body["resource"] = {"type": ctype, "message": self._render(message)}
        return _json(body)

    def _webhook_message(self, record: InteractionRecord, message_id: str) -> StoredMessage:
        if message_id == "@original":
            if record.original_message_id is None:
                raise unknown("Message")
            msg = self.state.messages[record.original_message_id]
        else:
            try:
                msg = self.state.messages[int(message_id)]
            except (KeyError, ValueError):
                raise unknown("Message") from None
            owned = {record.original_message_id, *record.followup_ids}
            if msg.id not in owned and msg.interaction_id != record.id:
                raise unknown("Message")
        if msg.deleted:
            raise unknown("Message")
        return msg

    async def webhook_execute(self, request: web.Request) -> web.Response:
        info = request.match_info
        record = self._by_token(info["webhook_id"], info["webhook_token"])
        payload, files = await self._read(request)
        state = self.state
        original = state.messages.get(record.original_message_id or 0)
        if (
            record.callback_type == 5
            and original is not None
            and original.flags & FLAG_LOADING
            and not original.deleted
        ):
            # Discord: the first follow-up to a deferred response edits that response
            msg = state.edit_message(original, payload, files, clear_flags=FLAG_LOADING)
        else:
            channel = state.get_channel(record.channel_id)
            msg = state.create_message(
                channel,
                state.bot_user,
                payload,
                files,
                interaction=record,
                allow_flags=SETTABLE_FLAGS | FLAG_EPHEMERAL,
                check_permissions=False,
            )
            record.followup_ids.append(msg.id)
        if _truthy(request, "wait"):
            return _json(self._render(msg))
        return _no_content()

    async def webhook_get_message(self, request: web.Request) -> web.Response:
        info = request.match_info
        record = self._by_token(info["webhook_id"], info["webhook_token"])
        return _json(self._render(self._webhook_message(record, info["message_id"])))

    async def webhook_edit_message(self, request: web.Request) -> web.Response:
        info = request.match_info
        record = self._by_token(info["webhook_id"], info["webhook_token"])
        msg = self._webhook_message(record, info["message_id"])
        payload, files = await self._read(request)
        msg = self.state.edit_message(msg, payload, files, clear_flags=FLAG_LOADING)
        if record.acked_at is not None and msg.id == record.original_message_id:
            record.edited_after_ack = True
        return _json(self._render(msg))

    async def webhook_delete_message(self, request: web.Request) -> web.Response:
        info = request.match_info
        record = self._by_token(info["webhook_id"], info["webhook_token"])
        msg = self._webhook_message(record, info["message_id"])
        self.state.delete_message(msg)
        return _no_content()

    # -- CDN --------------------------------------------------------------------------

    async def cdn(self, request: web.Request) -> web.Response:
        try:
            stored = self.state.files[int(request.match_info["attachment_id"])]
        except (KeyError, ValueError):
            return web.Response(status=404, text="Not Found")
        if request.path != stored.path and request.raw_path.split("?")[0] != stored.path:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, content_type=stored.content_type)
