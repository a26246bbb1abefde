"""Start and stop the project pages: inside the bot (``crowdcut run``), alone (``crowdcut
web``) or after the demo (``crowdcut demo --serve``). Always read-only on the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable

from aiohttp import web

from bot.settings import Settings
from bot.web.app import ProjectPages, make_web_app
from bot.web.reader import WebReader

log = logging.getLogger(__name__)


class WebServer:
    """The pages on ``host``:``port`` (``WEB_HOST``/``WEB_PORT`` unless given; port 0
    picks a free one). With ``own_thread`` they run on an event loop of their own, so
    that a crowd of viewers never delays the bot's answers to Discord (its loop only
    ever waits for its own work); ``busy`` (the bot's seconds left of a burst of
    interactions) holds new requests back while the bot takes one."""

    def __init__(
        self,
        settings: Settings,
        *,
        host: str | None = None,
        port: int | None = None,
        cache_seconds: float = 1.0,
        own_thread: bool = False,
        busy: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.own_thread = own_thread
        self.busy = busy
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.host = settings.web_host if host is None else host
        self.port = settings.web_port if port is None else port
        self.cache_seconds = cache_seconds
        self.reader: WebReader | None = None
        self.pages: ProjectPages | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Serve; returns the local address (``http://host:port/``)."""
        if not self.own_thread:
            return await self._start()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="crowdcut-web", daemon=True
        )
        self._thread.start()
        try:
            return await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._start(), self._loop)
            )
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> str:
        self.reader = WebReader(self.settings.db_path)
        self.reader.check_schema()
        self.pages = ProjectPages(
            self.settings,
            self.reader,
            self.settings.media_dir,
            cache_seconds=self.cache_seconds,
        )
        self._runner = web.AppRunner(
            make_web_app(self.pages, busy=self.busy), access_log=None, shutdown_timeout=5.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server  # the bound port, when 0 was asked for
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("project pages on %s", self.url)
        return self.url

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def page_url(self, project_id: int) -> str | None:
        """Where a project's page is: at ``PUBLIC_URL`` when set, else here."""
        assert self.reader is not None
        token = await self.reader.project_token(project_id)
        if token is None:
            return None
        base = self.settings.public_url.rstrip("/") + "/" if self.settings.public_url else self.url
        return f"{base}p/{token}/"

    async def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            await self._stop()
            return
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._stop(), loop))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join)
            loop.close()
            self._loop = self._thread = None

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.reader is not None:
            await self.reader.aclose()
            self.reader = None


async def serve_until_stopped(server: WebServer) -> None:
    """Serve until SIGINT or SIGTERM (Ctrl-C)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
        await server.stop()
