"""Live standings: one poller per project page that someone is watching.

However many viewers have a project's page open, its standings are read once per
``interval`` (``WEB_LIVE_SECONDS``) and each change is handed to every viewer's stream.
Reading the database (rather than being told by the bot) is what lets ``crowdcut web``
run in its own process; the poller stops when the last viewer leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Load = Callable[[str], Awaitable[dict[str, Any] | None]]


class _Feed:
    def __init__(self) -> None:
        self.data: str | None = None
        self.version = 0
        self.gone = False
        self.viewers = 0
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None


class LiveStandings:
    """Streams of a project's standings (JSON text), keyed by the page's token."""

    def __init__(self, load: Load, interval: float) -> None:
        self._load = load
        self.interval = interval
        self._feeds: dict[str, _Feed] = {}
        self._closed = False

    async def stream(self, token: str, heartbeat: float = 15.0) -> AsyncIterator[str | None]:
        """The standings now, then each change; ``None`` when nothing changed for
        ``heartbeat`` seconds (the caller sends a keep-alive). Ends when voting ends, the
        page goes away (rotated link, forgotten) or the server stops."""
        feed = self._feeds.get(token)
        if feed is None:
            feed = self._feeds[token] = _Feed()
        feed.viewers += 1
        if feed.task is None:
            feed.task = asyncio.create_task(self._poll(token, feed))
        seen = 0
        try:
            while not self._closed:
                async with feed.changed:
                    if feed.version == seen and not feed.gone:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(feed.changed.wait(), heartbeat)
                if self._closed:
                    return
                if feed.version != seen and feed.data is not None:
                    seen = feed.version
                    yield feed.data
                    if not json.loads(feed.data).get("live"):
                        return
                elif feed.gone:
                    return
                else:
                    yield None
        finally:
            feed.viewers -= 1
            if feed.viewers == 0 and self._feeds.get(token) is feed:
                del self._feeds[token]
                if feed.task is not None:
                    feed.task.cancel()

    async def _poll(self, token: str, feed: _Feed) -> None:
        while True:
            try:
                data = await self._load(token)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the live standings of a page failed; trying again")
                data = {}
            if data is None:
                async with feed.changed:
                    feed.gone = True
                    feed.changed.notify_all()
                return
            if data:
                text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
                if text != feed.data:
                    async with feed.changed:
                        feed.data = text
                        feed.version += 1
                        feed.changed.notify_all()
                if not data.get("live"):
                    return
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        """Stop every poller and end every stream (the server is stopping)."""
        self._closed = True
        for feed in list(self._feeds.values()):
            if feed.task is not None:
                feed.task.cancel()
            async with feed.changed:
                feed.changed.notify_all()
