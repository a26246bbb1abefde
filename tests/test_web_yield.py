"""The pages share the bot's process: while the bot takes a burst of interactions, a
request waits until the burst is over (at most ``YIELD_MAX_SECONDS``), then is served."""

from __future__ import annotations

import asyncio

import pytest

import bot.web.app as web_app
from tests.web_fixtures import build_site, serve

pytestmark = pytest.mark.timeout(60)


class Burst:
    """Stands in for the bot's ``interactions_pouring_in``: seconds left while on."""

    def __init__(self) -> None:
        self.on = True
        self.asked = asyncio.Event()
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls >= 3:
            self.asked.set()
        return 0.01 if self.on else 0.0


async def test_a_request_during_a_burst_waits_for_its_end_then_is_served(tmp_path):
    site = build_site(tmp_path, approved=True)
    burst = Burst()
    site.server.busy = burst
    async for s in serve(site):
        request = asyncio.create_task(s.get(f"p/{s.token}/"))
        await asyncio.wait_for(burst.asked.wait(), 10)
        assert not request.done()  # still held back: the bot is busy
        burst.on = False
        status, _, body = await asyncio.wait_for(request, 10)
        assert status == 200 and b"<video" in body


async def test_a_burst_that_never_ends_holds_a_request_back_only_so_long(tmp_path, monkeypatch):
    monkeypatch.setattr(web_app, "YIELD_MAX_SECONDS", 0.2)
    site = build_site(tmp_path, approved=True)
    burst = Burst()
    site.server.busy = burst
    async for s in serve(site):
        status, headers, _ = await asyncio.wait_for(
            s.get(f"p/{s.token}/media/{s.keys['alice']}", headers={"Range": "bytes=0-9"}), 10
        )
        assert status == 206 and headers["Content-Range"].startswith("bytes 0-9/")
        assert burst.on and burst.calls >= 3  # it was asked, and gave no end
