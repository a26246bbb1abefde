"""Fake video providers on 127.0.0.1, each following its provider's published contract.

Every fake is an ``aiohttp.web.Application`` built by its class (``FakeComfyUI``,
``FakeFal``, ``FakeReplicate``, ``FakeRunway``), counts the create requests it received
(``submissions``), and can be told to misbehave. :class:`ThreadedServer` runs one in a
thread with its own event loop, so a test can point a bot running in a *subprocess* (the
SIGKILL restart tests) or in the test's own loop at it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

_CLIP_CACHE: dict[tuple[float, str], bytes] = {}


def tiny_mp4(seconds: float = 1.0, size: str = "160x90") -> bytes:
    """A small real H.264 MP4 (made once per process with the real ffmpeg) that fakes
    answer as their finished output."""
    key = (seconds, size)
    if key not in _CLIP_CACHE:
        import tempfile

        from tests.media_helpers import make_clip

        w, h = (int(v) for v in size.split("x"))
        with tempfile.TemporaryDirectory() as d:
            path = make_clip(Path(d) / "out.mp4", seconds=seconds, width=w, height=h)
            _CLIP_CACHE[key] = path.read_bytes()
    return _CLIP_CACHE[key]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """Serve ``make_app()`` on 127.0.0.1 from a background thread until :meth:`stop`.

    ``port`` may be given so that a server can be stopped and started again at the same
    address (a host going down and coming back).
    """

    def __init__(self, make_app: Callable[[], web.Application], port: int | None = None):
        self.make_app = make_app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    def start(self) -> ThreadedServer:
        self._ready.clear()
        self._thread = threading.Thread(target=self._serve, name=f"fake-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("fake server did not start")
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def up() -> None:
            self._runner = web.AppRunner(self.make_app(), shutdown_timeout=0.5)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

        loop.run_until_complete(up())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
        loop.close()

    def call(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on the server's loop thread and return its result."""
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(_as_coro(fn), self._loop)
        return fut.result(15)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
        self._loop = None
        self._thread = None

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _as_coro(fn: Callable[[], object]) -> object:
    result = fn()
    if asyncio.iscoroutine(result):
        result = await result
    return result
