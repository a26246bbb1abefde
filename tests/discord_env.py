"""Fixtures for end-to-end tests: crowdcut connected to the Discord emulator."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.frontend.harness import BotOnEmulator, bot_on_emulator
from tests.conftest import make_settings


def png_bytes(size: tuple[int, int] = (64, 48), colour: str = "orange") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


async def until(probe: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``probe`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class Community:
    """The emulator's guild with a few named people, and shortcuts for what they do."""

    def __init__(self, env: BotOnEmulator) -> None:
        self.env = env
        self.emu = env.emu
        self.mod = self.emu.add_member("mod_mira", roles=["Moderator"])
        self.alice = self.emu.add_member("alice")
        self.bob = self.emu.add_member("bob")
        self.carol = self.emu.add_member("carol")
        self.robot = self.emu.add_member("otherbot", bot=True)

    @property
    def app(self):
        return self.env.app

    @property
    def channel(self) -> int:
        return self.env.channel

    async def slash(
        self,
        who: Any,
        name: str,
        options: dict[str, Any] | None = None,
        subcommand: str | None = None,
        timeout: float = 30.0,
    ) -> tuple[Any, dict]:
        it = await self.emu.invoke_slash(
            who.id, self.channel, name, options or {}, subcommand=subcommand
        )
        await it.wait_acked(timeout=3.0)
        return it, await it.wait_reply(timeout=timeout)

    async def open_project(self, slots: int = 3) -> Any:
        await self.slash(
            self.mod, "project", {"title": "Test Night", "slots": slots}, subcommand="create"
        )
        return await self.app.store.current_project(self.emu.guild_id, self.channel)

    async def wait_idle_and_posted(self, timeout: float = 60) -> None:
        async def done() -> bool:
            counts = await self.app.store.job_counts()
            active = sum(counts.get(s, 0) for s in ("queued", "submitted", "running"))
            return not active and not await self.app.store.unposted_clips()

        await until(done, timeout)
        await self.env.bot.publisher.flush()

    async def prompt_and_post(self, who: Any, text: str, **opts: Any) -> Any:
        """Prompt, wait for the clip to be generated and posted; returns the clip."""
        _, reply = await self.slash(who, "prompt", {"text": text, **opts})
        assert "Accepted as job #" in reply["content"], reply["content"]
        job_id = int(reply["content"].split("job #")[1].split(" ")[0])
        clip = await until(lambda: self._posted_clip(job_id), timeout=60)
        return clip

    async def approve_cut(self, timeout: float = 120) -> dict:
        """``/cut approve`` as the moderator, then wait for the final video's post (the
        command answers at once; the render and the post are queued work)."""
        _, reply = await self.slash(self.mod, "cut", subcommand="approve")
        assert "final video" in reply["content"], reply["content"]
        return await self.wait_for_final(timeout)

    async def wait_for_final(self, timeout: float = 120, since: int | None = None) -> dict:
        """The final video's post (after the emulator's revision ``since``), once its
        approval is recorded."""
        final = await self.emu.wait_for_message(
            self.channel,
            lambda m: any(e.get("title", "").startswith("🎉") for e in m.get("embeds", [])),
            timeout=timeout,
            **({"since": since} if since is not None else {}),
        )

        async def recorded() -> bool:
            for p in await self.app.store.list_projects(self.emu.guild_id):
                cut = await self.app.store.latest_cut(p.id, "approved")
                if cut is not None and cut.message_id == int(final["id"]):
                    return True
            return False

        await until(recorded, timeout)
        return final

    async def _posted_clip(self, job_id: int) -> Any:
        clip = await self.app.store.clip_for_job(job_id)
        return clip if clip and clip.message_id else None


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[BotOnEmulator]:
    async with bot_on_emulator(make_settings(tmp_path)) as e:
        yield e


@pytest.fixture
async def guild(env: BotOnEmulator) -> Community:
    return Community(env)
