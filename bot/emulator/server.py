"""``DiscordEmulator``: the aiohttp server that ties state, REST, gateway and driver together."""

from __future__ import annotations

import logging
import re
from collections import deque
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from bot.emulator.driver import EmulatorDriver
from bot.emulator.gateway import PRIVILEGED_INTENTS, Gateway
from bot.emulator.rest import API_PREFIX, ForcedRateLimit, RequestRecord, RestApi
from bot.emulator.state import DEFAULT_UPLOAD_LIMIT, EmulatorState, EmuUser

log = logging.getLogger(__name__)


class DiscordEmulator(EmulatorDriver):
    """A Discord stand-in on 127.0.0.1 that the unmodified discord.py client can use.

    See the :mod:`bot.emulator` docstring for the driver API.
    """

    def __init__(
        self,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        *,
        port: int = 0,
        interaction_timeout: float = 3.0,
        privileged_intents: bool = True,
        heartbeat_interval_ms: int = 41250,
        guild_name: str = "crowdcut test server",
        bot_name: str = "crowdcut",
    ) -> None:
        self.host = "127.0.0.1"  # loopback only, by design
        self.port = port
        self.interaction_timeout = interaction_timeout
        #: which privileged intents the "developer portal" allows (4014 otherwise)
        self.privileged_intents = PRIVILEGED_INTENTS if privileged_intents else 0
        self.state = EmulatorState(
            guild_name=guild_name, bot_name=bot_name, upload_limit=upload_limit
        )
        self.gateway = Gateway(self, heartbeat_interval_ms=heartbeat_interval_ms)
        self.rest = RestApi(self)
        self.state.emit = self.gateway.dispatch
        self._init_driver()
        self.requests: deque[tuple[str, str, int]] = deque(maxlen=20000)
        self.request_log: deque[RequestRecord] = deque(maxlen=20000)
        self._forced: list[ForcedRateLimit] = []
        self._runner: web.AppRunner | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind 127.0.0.1 (port 0 picks a free one) and start serving."""
        app = web.Application(middlewares=[self.rest.middleware], client_max_size=256 * 1024 * 1024)
        app.router.add_get("/gateway", self.gateway.handle)
        self.rest.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        # Discord accepts any number of connections; aiohttp's default backlog of 128
        # would drop SYNs in a burst and cost the client a 1 s retransmission
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.state.base_url = self.base_url
        self._init_driver()  # bind the change event to the running loop's lifetime
        log.info("Discord emulator on %s (gateway %s)", self.api_base, self.gateway_url)
        return self

    async def close(self) -> None:
        """Close bot connections, cancel interaction timers and stop serving."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- addresses and ids ------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """What discord.py's ``Route.BASE`` must be set to."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    @property
    def bot_token(self) -> str:
        return self.state.bot_token

    @property
    def application_id(self) -> int:
        return self.state.application_id

    @property
    def bot_user_id(self) -> int:
        return self.state.bot_user.id

    @property
    def bot_user(self) -> EmuUser:
        return self.state.bot_user

    @property
    def owner(self) -> EmuUser:
        """The guild owner (every permission)."""
        return self.state.owner

    @property
    def guild_id(self) -> int:
        return self.state.guild_id

    @property
    def channels(self) -> dict[str, int]:
        """Guild text channels by name: at least "general", "crowdcut", "moderators"."""
        return {c.name: c.id for c in self.state.channels.values() if c.guild_id is not None}

    @property
    def roles(self) -> dict[str, int]:
        """Roles by name: "@everyone", "Moderator", "Manager" and the bot's own role."""
        return {r.name: r.id for r in self.state.roles.values()}

    # -- request log and rate limits --------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        self.requests.append(record.as_tuple())
        self.request_log.append(record)

    def rate_limit_next(
        self, method: str, path_regex: str, retry_after: float = 0.3, global_: bool = False
    ) -> None:
        """Answer the next ``method`` request whose API path matches ``path_regex`` with a 429.

        ``path_regex`` is searched in the path relative to the API base,
        e.g. ``r"/channels/\\d+/messages$"``.
        """
        self._forced.append(
            ForcedRateLimit(method.upper(), re.compile(path_regex), float(retry_after), global_)
        )

    def _take_forced_rate_limit(self, method: str, path: str) -> ForcedRateLimit | None:
        for rule in self._forced:
            if rule.method in (method, "*") and rule.pattern.search(path):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._forced.remove(rule)
                log.info("emulator answers %s %s with a forced 429", method, path)
                return rule
        return None

    def describe(self) -> dict[str, Any]:
        """What a developer needs to point a bot here."""
        return {
            "api_base": self.api_base,
            "gateway_url": self.gateway_url,
            "bot_token": self.bot_token,
            "application_id": str(self.application_id),
            "guild_id": str(self.guild_id),
            "channels": {k: str(v) for k, v in self.channels.items()},
        }
