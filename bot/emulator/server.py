"""``DiscordEmulator``: the aiohttp server that ties state, REST, gateway and driver together."""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from bot.emulator.driver import EmulatorDriver
from bot.emulator.gateway import PRIVILEGED_INTENTS, Gateway
from bot.emulator.rest import API_PREFIX, Fault, RequestRecord, RestApi
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
        self._faults: list[Fault] = []
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
        """The first guild's text channels by name: "general", "crowdcut", "moderators"..."""
        return {c.name: c.id for c in self.state.channels.values() if c.guild_id == self.guild_id}

    @property
    def roles(self) -> dict[str, int]:
        """Roles by name: "@everyone", "Moderator", "Manager" and the bot's own role."""
        return {r.name: r.id for r in self.state.roles.values()}

    # -- request log and rate limits --------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        self.requests.append(record.as_tuple())
        self.request_log.append(record)

    def _add_fault(self, fault: Fault, times: int | None, duration: float | None) -> Fault:
        if times is None and duration is None:
            raise ValueError("give times, duration or both; a fault without either never ends")
        fault.remaining = times
        fault.until = None if duration is None else time.monotonic() + duration
        self._faults.append(fault)
        return fault

    def rate_limit_next(
        self,
        method: str,
        path_regex: str,
        retry_after: float = 0.3,
        global_: bool = False,
        *,
        times: int | None = 1,
        duration: float | None = None,
    ) -> Fault:
        """Answer the next ``times`` ``method`` requests whose API path matches ``path_regex``
        (or all of them for ``duration`` seconds: a 429 storm) with a 429.

        ``path_regex`` is searched in the path relative to the API base,
        e.g. ``r"/channels/\\d+/messages$"``; ``method`` may be ``"*"``. The 429 carries
        ``retry_after``/``global`` in the body and ``Retry-After``, ``X-RateLimit-Scope``
        and either ``X-RateLimit-Global`` or the bucket headers, as Discord's do.
        """
        fault = Fault(
            method.upper(),
            re.compile(path_regex),
            "rate_limit",
            429,
            float(retry_after),
            global_,
        )
        return self._add_fault(fault, times, duration)

    def fail_requests(
        self,
        method: str,
        path_regex: str,
        status: int = 503,
        *,
        times: int | None = 1,
        duration: float | None = None,
        after_handling: bool = False,
    ) -> Fault:
        """Answer matching requests with a 5xx (JSON body ``{"message", "code": 0}``).

        Without ``after_handling`` nothing happens (an outage in front of Discord). With
        it the request is handled first, so a message is created and MESSAGE_CREATE is
        dispatched, and the client still gets ``status``: a create whose outcome it
        cannot know. Count what exists afterwards with :meth:`messages`.
        Returns the :class:`~bot.emulator.rest.Fault`; its ``hits`` says how many answered.
        """
        fault = Fault(
            method.upper(),
            re.compile(path_regex),
            "after" if after_handling else "status",
            int(status),
        )
        return self._add_fault(fault, times, duration)

    def clear_faults(self) -> None:
        """Forget every 429 and 5xx rule still pending."""
        self._faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        self._faults = [f for f in self._faults if not f.spent]
        for rule in self._faults:
            if rule.matches(method, path):
                if rule.remaining is not None:
                    rule.remaining -= 1
                rule.hits += 1
                log.info("emulator answers %s %s with a forced %s", method, path, rule.status)
                return rule
        return None

    def set_rate_limit(self, limit: int = 50, window: float = 1.0) -> None:
        """How many requests per route bucket (and channel/guild) per ``window`` seconds."""
        self.rest.rate_limit, self.rest.rate_window = int(limit), float(window)

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
