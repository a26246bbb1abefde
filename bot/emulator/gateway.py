"""The emulator's Gateway (websocket) endpoint, API v10, JSON encoding.

Follows discord.com/developers/docs/events/gateway: HELLO with a heartbeat
interval, IDENTIFY (token and intents checked), READY then a GUILD_CREATE per guild,
heartbeat ACKs, RESUME with replay of missed dispatches, REQUEST_GUILD_MEMBERS,
op 7 RECONNECT, op 9 INVALID_SESSION and closes with any code on request
(see :data:`NON_RESUMABLE_CLOSE`), and Discord's close codes (4001 unknown opcode,
4002 decode error, 4003 not authenticated, 4004 authentication failed,
4005 already authenticated, 4012 invalid API version, 4013 invalid intents,
4014 disallowed intents).

Transport compression as discord.py 2.7 asks for it: ``compress=zlib-stream``
(one ``zlib.compressobj()`` per connection, every payload flushed with
``Z_SYNC_FLUSH``) or, when discord.py finds ``zstandard`` (or Python 3.14's
``compression.zstd``) installed, ``compress=zstd-stream`` (one zstd stream per
connection, every payload a flushed block). If the emulator's own Python lacks
zstd it answers ``zstd-stream`` clients with uncompressed text frames, which
discord.py reads without decompressing.

Dispatches are filtered by the session's intents the way Discord does, and
guild message contents are blanked without MESSAGE_CONTENT unless the bot wrote
or is mentioned in the message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from bot.emulator.server import DiscordEmulator

try:  # pragma: no cover - depends on what is installed
    import zstandard as _zstd_mod

    def _zstd_compressor() -> Callable[[bytes], bytes]:
        cobj = _zstd_mod.ZstdCompressor().compressobj()
        return lambda data: cobj.compress(data) + cobj.flush(_zstd_mod.COMPRESSOBJ_FLUSH_BLOCK)

except ImportError:  # pragma: no cover
    try:
        from compression import zstd as _zstd_std  # type: ignore[import-not-found]

        def _zstd_compressor() -> Callable[[bytes], bytes]:
            comp = _zstd_std.ZstdCompressor()
            return lambda data: comp.compress(data, mode=_zstd_std.ZstdCompressor.FLUSH_BLOCK)

    except ImportError:
        _zstd_compressor = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# opcodes
DISPATCH = 0
HEARTBEAT = 1
IDENTIFY = 2
PRESENCE_UPDATE = 3
VOICE_STATE_UPDATE = 4
RESUME = 6
RECONNECT = 7
REQUEST_GUILD_MEMBERS = 8
INVALID_SESSION = 9
HELLO = 10
HEARTBEAT_ACK = 11
REQUEST_SOUNDBOARD_SOUNDS = 31

# intents
GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10
DIRECT_MESSAGES = 1 << 12
DIRECT_MESSAGE_REACTIONS = 1 << 13
MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
ALL_INTENTS = (1 << 26) - 1

#: how long a dropped session may still RESUME (Discord does not publish its window)
RESUME_WINDOW = 300.0

#: close codes after which Discord's session is gone (topics/opcodes-and-status-codes,
#: "Reconnect: false", plus 4007 and 4009 which say "reconnect and start a new session")
NON_RESUMABLE_CLOSE = {4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014}

#: events Discord sends whatever the intents
UNFILTERED = {
    "READY",
    "RESUMED",
    "INTERACTION_CREATE",
    "USER_UPDATE",
    "APPLICATION_COMMAND_PERMISSIONS_UPDATE",
}


def _event_intent(event: str, data: dict[str, Any]) -> int:
    in_guild = "guild_id" in data
    if event.startswith("GUILD_MEMBER"):
        return GUILD_MEMBERS
    if event.startswith("MESSAGE_REACTION"):
        return GUILD_MESSAGE_REACTIONS if in_guild else DIRECT_MESSAGE_REACTIONS
    if event.startswith("MESSAGE_"):
        return GUILD_MESSAGES if in_guild else DIRECT_MESSAGES
    return GUILDS


class _Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(eq=False)
class Connection:
    """One websocket; frames go out in order through a queue and a writer task."""

    ws: web.WebSocketResponse
    compress: Callable[[bytes], bytes] | None
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    writer: asyncio.Task[None] | None = None
    session: Session | None = None
    #: called with each payload once its frame is on the wire
    on_sent: Callable[[dict[str, Any]], None] | None = None
    #: the close code the emulator sent, if it closed the socket (the client echoes 1000)
    server_close_code: int | None = None

    def start(self) -> None:
        self.writer = asyncio.create_task(self._write())

    def send(self, payload: dict[str, Any]) -> None:
        self.queue.put_nowait(payload)

    async def _write(self) -> None:
        while True:
            payload = await self.queue.get()
            if payload is None or self.ws.closed:
                return
            raw = json.dumps(payload, separators=(",", ":")).encode()
            try:
                if self.compress is not None:
                    await self.ws.send_bytes(self.compress(raw))
                else:
                    await self.ws.send_str(raw.decode())
            except (ConnectionError, RuntimeError) as exc:
                log.debug("gateway write failed: %s", exc)
                return
            if self.on_sent is not None:
                self.on_sent(payload)

    async def stop(self) -> None:
        self.queue.put_nowait(None)
        if self.writer is not None:
            try:
                await asyncio.wait_for(self.writer, 2.0)
            except (TimeoutError, asyncio.CancelledError):
                self.writer.cancel()


@dataclass(eq=False)
class Session:
    """An identified gateway session; it outlives its socket so that RESUME can replay."""

    session_id: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    buffer: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5000))
    connection: Connection | None = None
    resumable: bool = True
    disconnected_at: float | None = None

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        payload = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
        self.buffer.append(payload)
        if self.connection is not None:
            self.connection.send(payload)


class Gateway:
    """Accepts bot connections on ``/gateway`` and fans dispatches out to sessions."""

    def __init__(self, emulator: DiscordEmulator, *, heartbeat_interval_ms: int = 41250) -> None:
        self.emu = emulator
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()
        self.events: deque[tuple[str, dict[str, Any]]] = deque(maxlen=2000)
        self.ready_count = 0

    # -- fan-out -----------------------------------------------------------------

    def _frame_sent(self, payload: dict[str, Any]) -> None:
        """Stamp an interaction with the moment its INTERACTION_CREATE left for the bot."""
        if payload.get("t") != "INTERACTION_CREATE":
            return
        record = self.emu.state.interactions.get(int(payload["d"]["id"]))
        if record is not None and record.sent_at is None:
            record.sent_at = time.monotonic()

    @property
    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.connection is not None]

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send ``event`` to every session whose intents ask for it (buffered for resumes)."""
        self.events.append((event, data))
        now = time.monotonic()
        for session in list(self.sessions.values()):
            if session.connection is None:
                gone = session.disconnected_at or now
                if not session.resumable or now - gone > RESUME_WINDOW:
                    self.sessions.pop(session.session_id, None)
                    continue
            if event not in UNFILTERED and not session.intents & _event_intent(event, data):
                continue
            session.dispatch(event, self._for_session(session, event, data))

    def _for_session(self, session: Session, event: str, data: dict[str, Any]) -> dict[str, Any]:
        if event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE") or session.intents & MESSAGE_CONTENT:
            return data
        if "guild_id" not in data:  # DMs always carry content
            return data
        bot_id = str(self.emu.state.bot_user.id)
        if data["author"]["id"] == bot_id or any(
            m["id"] == bot_id for m in data.get("mentions", [])
        ):
            return data
        stripped = dict(data)
        stripped.update(content="", embeds=[], attachments=[], components=[])
        stripped.pop("poll", None)
        return stripped

    # -- connections ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        mode = query.get("compress")
        compress: Callable[[bytes], bytes] | None = None
        if mode == "zlib-stream":
            zc = zlib.compressobj()
            compress = lambda data: zc.compress(data) + zc.flush(zlib.Z_SYNC_FLUSH)  # noqa: E731
        elif mode == "zstd-stream":
            if _zstd_compressor is not None:
                compress = _zstd_compressor()
            else:
                log.info("zstd-stream asked for but no zstd here: sending uncompressed text frames")
        elif mode:
            return web.Response(status=400, text=f"unknown compress {mode!r}")

        ws = web.WebSocketResponse(autoping=True, max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        conn = Connection(ws, compress)
        conn.on_sent = self._frame_sent
        conn.start()
        self.connections.add(conn)
        log.info("gateway connection opened (compress=%s)", mode or "none")
        try:
            if query.get("v") != "10":
                raise _Closed(4012, "Invalid API version")
            if query.get("encoding", "json") != "json":
                raise _Closed(4002, "Error while decoding payload.")
            conn.send(
                {
                    "op": HELLO,
                    "d": {"heartbeat_interval": self.heartbeat_interval_ms},
                    "s": None,
                    "t": None,
                }
            )
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    raw = msg.data
                elif msg.type == WSMsgType.BINARY:
                    raw = msg.data.decode("utf-8", "replace")
                else:
                    break
                try:
                    payload = json.loads(raw)
                    op = payload["op"]
                except (ValueError, KeyError, TypeError):
                    raise _Closed(4002, "Error while decoding payload.") from None
                await self._on_op(conn, op, payload.get("d"))
        except _Closed as closed:
            log.info("gateway closing the connection: %s %s", closed.code, closed.reason)
            conn.server_close_code = closed.code
            await conn.stop()
            await ws.close(code=closed.code, message=closed.reason.encode())
        finally:
            await self._detach(conn)
        return ws

    async def _detach(self, conn: Connection) -> None:
        self.connections.discard(conn)
        await conn.stop()
        session = conn.session
        if session is not None and session.connection is conn:
            session.connection = None
            session.disconnected_at = time.monotonic()
            # a client's clean close (1000/1001) ends the session, as does a close code
            # of Discord's that says so; anything else may RESUME
            code = conn.server_close_code or conn.ws.close_code
            if conn.server_close_code is not None:
                session.resumable = session.resumable and code not in NON_RESUMABLE_CLOSE
            else:
                session.resumable = code not in (1000, 1001)
            if not session.resumable:
                self.sessions.pop(session.session_id, None)
            self.emu.state.changed()
            log.info("gateway session %s disconnected (code %s)", session.session_id, code)

    async def _on_op(self, conn: Connection, op: int, data: Any) -> None:
        if op == HEARTBEAT:
            conn.send({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == IDENTIFY:
            self._identify(conn, data or {})
        elif op == RESUME:
            self._resume(conn, data or {})
        elif conn.session is None:
            raise _Closed(4003, "Not authenticated.")
        elif op == REQUEST_GUILD_MEMBERS:
            self._request_members(conn.session, data or {})
        elif op in (PRESENCE_UPDATE, VOICE_STATE_UPDATE, REQUEST_SOUNDBOARD_SOUNDS):
            log.debug("gateway op %s ignored", op)
        else:
            raise _Closed(4001, "Unknown opcode.")

    def _check_token(self, token: Any) -> None:
        if not isinstance(token, str) or token.removeprefix("Bot ") != self.emu.state.bot_token:
            raise _Closed(4004, "Authentication failed.")

    def _identify(self, conn: Connection, data: dict[str, Any]) -> None:
        if conn.session is not None:
            raise _Closed(4005, "Already authenticated.")
        self._check_token(data.get("token"))
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0 or intents & ~ALL_INTENTS:
            raise _Closed(4013, "Invalid intent(s).")
        if intents & PRIVILEGED_INTENTS & ~self.emu.privileged_intents:
            raise _Closed(4014, "Disallowed intent(s).")
        state = self.emu.state
        session = Session(secrets.token_hex(16), intents, data.get("shard"))
        session.connection = conn
        conn.session = session
        self.sessions[session.session_id] = session
        ready: dict[str, Any] = {
            "v": 10,
            "user": state.bot_user_pii(),
            "guilds": [{"id": str(g), "unavailable": True} for g in state.guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.emu.gateway_url,
            "application": {
                "id": str(state.application_id),
                "flags": state.application_payload()["flags"],
            },
            "private_channels": [],
            "presences": [],
            "relationships": [],
            "guild_join_requests": [],
            "user_settings": {},
            "auth": {},
            "_trace": ['["crowdcut-emulator",{"micros":0}]'],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        session.dispatch("READY", ready)
        if intents & GUILDS:
            for guild in state.guilds.values():
                session.dispatch("GUILD_CREATE", state.guild_create_payload(guild))
        self.ready_count += 1
        self.emu.state.changed()
        log.info("gateway session %s identified (intents %s)", session.session_id, intents)

    def _resume(self, conn: Connection, data: dict[str, Any]) -> None:
        if conn.session is not None:
            raise _Closed(4005, "Already authenticated.")
        self._check_token(data.get("token"))
        session = self.sessions.get(str(data.get("session_id")))
        seq = data.get("seq") or 0
        live = session.connection if session is not None else None
        if session is None or not session.resumable or (live is not None and not live.ws.closed):
            log.info("gateway RESUME refused: unknown or live session")
            conn.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        oldest = session.buffer[0]["s"] if session.buffer else session.seq + 1
        if seq + 1 < oldest:
            conn.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        session.connection = conn
        session.disconnected_at = None
        conn.session = session
        replay = [p for p in session.buffer if p["s"] > seq]
        for payload in replay:
            conn.send(payload)
        session.dispatch("RESUMED", {"_trace": ['["crowdcut-emulator",{"micros":0}]']})
        log.info("gateway session %s resumed, %d events replayed", session.session_id, len(replay))

    def _request_members(self, session: Session, data: dict[str, Any]) -> None:
        state = self.emu.state
        guild = state.guilds.get(int(data.get("guild_id") or 0))
        if guild is None:
            return
        members = list(guild.members.values())
        not_found: list[str] = []
        user_ids = data.get("user_ids")
        if user_ids is not None:
            wanted = [int(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])]
            not_found = [str(u) for u in wanted if u not in guild.members]
            members = [m for m in members if m.user.id in wanted]
        else:
            query = str(data.get("query") or "").lower()
            members = [
                m
                for m in members
                if m.user.name.lower().startswith(query) or (m.nick or "").lower().startswith(query)
            ]
            limit = int(data.get("limit") or 0)
            if limit:
                members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [state.member_payload(m) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": not_found,
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        if data.get("presences"):
            chunk["presences"] = []
        session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    # -- driver controls --------------------------------------------------------------

    def request_reconnect(self) -> int:
        """Send op 7 RECONNECT to every live connection; clients then RESUME."""
        count = 0
        for session in self.live_sessions:
            assert session.connection is not None
            session.connection.send({"op": RECONNECT, "d": None, "s": None, "t": None})
            count += 1
        return count

    async def close_connections(self, code: int, reason: str = "") -> int:
        """Close every identified connection with ``code``, as Discord's gateway would.

        After a resumable code the client may RESUME (and gets what it missed); after one
        of :data:`NON_RESUMABLE_CLOSE` the session is gone, so a RESUME is answered
        INVALID_SESSION ``false`` and the client identifies again. -> how many closed.
        """
        count = 0
        for session in self.live_sessions:
            conn = session.connection
            assert conn is not None
            if code in NON_RESUMABLE_CLOSE:
                session.resumable = False
                self.sessions.pop(session.session_id, None)
            conn.server_close_code = code
            await conn.stop()
            await conn.ws.close(code=code, message=(reason or f"closed {code}").encode())
            count += 1
        log.info("gateway closed %d connection(s) with %s", count, code)
        return count

    def invalidate_sessions(self, resumable: bool) -> int:
        """Send op 9 INVALID_SESSION ``d=resumable`` to every identified connection.

        With ``False`` the session is forgotten at once (the client must IDENTIFY);
        with ``True`` it stays, and the client's RESUME succeeds. -> how many.
        """
        count = 0
        for session in self.live_sessions:
            assert session.connection is not None
            session.connection.send({"op": INVALID_SESSION, "d": resumable, "s": None, "t": None})
            if not resumable:
                session.resumable = False
                self.sessions.pop(session.session_id, None)
            count += 1
        return count

    async def close(self) -> None:
        for conn in list(self.connections):
            await conn.stop()
            if not conn.ws.closed:
                await conn.ws.close(code=1001, message=b"emulator shutting down")
        self.sessions.clear()
