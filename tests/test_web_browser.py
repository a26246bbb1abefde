"""The project page in a real browser: Debian's Chromium, driven by Playwright.

The bot runs on the Discord emulator, members prompt and vote there, and the page is
served read-only by ``WebServer`` (as ``crowdcut web`` serves it). The browser must see
the standings move when a vote arrives in Discord (no reload), then, once the cut is
approved, play the master and seek in it (range requests), and list every slot in the
credits, all without a console error.

``CROWDCUT_SCREENSHOTS=1`` writes the phone and desktop screenshots into
``docs/screenshots/`` (the README shows them); otherwise they go to the test's folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bot.frontend.harness import bot_on_emulator
from bot.web.server import WebServer
from tests.conftest import make_settings
from tests.discord_env import Community, until

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)",
    ),
]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


async def wait_video_ready(page) -> float:
    """The master's duration, once its metadata has loaded."""
    return await page.evaluate(
        """async () => {
            const v = document.getElementById('master');
            if (v.readyState < 1) {
                await new Promise((ok, fail) => {
                    v.addEventListener('loadedmetadata', ok, {once: true});
                    v.addEventListener('error', () => fail(new Error('video error')), {once: true});
                });
            }
            return v.duration;
        }"""
    )


async def test_the_page_plays_seeks_credits_every_slot_and_follows_the_vote_live(tmp_path):
    playwright_api = pytest.importorskip("playwright.async_api")
    settings = make_settings(tmp_path, web_live_seconds=0.1)
    async with bot_on_emulator(settings) as env:
        g = Community(env)
        project = await g.open_project(slots=3)
        clips = [
            await g.prompt_and_post(who, text, slot=i + 1)
            for i, (who, text) in enumerate(
                [
                    (g.alice, "a neon city at night seen from a slow drone"),
                    (g.bob, "paper boats sailing through a sea of clouds"),
                    (g.carol, "a choir of glowing jellyfish <b>pulsing</b>"),
                ]
            )
        ]
        server = WebServer(env.settings, port=0, cache_seconds=0.0)
        await server.start()
        url = await server.page_url(project.id)
        errors: list[str] = []
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
            )
            try:
                page = await browser.new_page(viewport=DESKTOP)
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))

                # --- voting open: the standings follow Discord without a reload
                await page.goto(url)
                await page.wait_for_selector("#standings[data-updated]")  # the stream is live
                await page.evaluate("() => { window.__sameDocument = true; }")
                alice = clips[0]
                score = f'li[data-clip="{alice.id}"] .score'
                assert await page.text_content(score) == "0"
                await env.emu.add_reaction(g.bob.id, g.channel, alice.message_id, "👍")
                await env.emu.add_reaction(g.carol.id, g.channel, alice.message_id, "👍")
                await page.wait_for_function(
                    f"() => document.querySelector('{score}').textContent === '+2'",
                    timeout=20_000,
                )
                assert await page.evaluate("() => window.__sameDocument") is True  # no reload
                await page.set_viewport_size(PHONE)
                await page.screenshot(path=tmp_path / "voting-phone.png", full_page=True)

                # --- approved: the master plays and seeks, the credits list every slot
                await g.approve_cut(timeout=180)

                async def approved():
                    p = await g.app.store.get_project(project.id)
                    return p.state == "approved"

                await until(approved, timeout=120)
                await page.set_viewport_size(DESKTOP)
                await page.goto(url)
                duration = await wait_video_ready(page)
                assert duration > 2.5
                await page.evaluate(
                    "async () => { const v = document.getElementById('master');"
                    " v.muted = true; await v.play(); }"
                )
                await page.wait_for_function(
                    "() => document.getElementById('master').currentTime > 0.2", timeout=20_000
                )
                target = duration / 2
                await page.evaluate(
                    """async (t) => {
                        const v = document.getElementById('master');
                        const seeked = new Promise(ok => v.addEventListener('seeked', ok,
                                                                            {once: true}));
                        v.currentTime = t;
                        await seeked;
                    }""",
                    target,
                )
                await page.wait_for_function(
                    f"() => document.getElementById('master').currentTime > {target + 0.2}",
                    timeout=20_000,
                )
                slots = await page.eval_on_selector_all(
                    "#credits li[data-slot]", "els => els.map(e => e.dataset.slot)"
                )
                assert slots == ["0", "1", "2"]
                credits = await page.text_content("#credits")
                assert "a choir of glowing jellyfish <b>pulsing</b>" in credits  # as text
                assert all(name in credits for name in ("alice", "bob", "carol"))
                storyboard = await page.evaluate(
                    "() => document.querySelector('#storyboard img').naturalWidth"
                )
                assert storyboard > 0
                await page.evaluate("() => document.getElementById('master').pause()")
                shots = ROOT / "docs" / "screenshots"
                if os.environ.get("CROWDCUT_SCREENSHOTS") != "1":
                    shots = tmp_path
                shots.mkdir(parents=True, exist_ok=True)
                await page.evaluate(
                    "() => { document.getElementById('master').currentTime = 1.5; }"
                )
                await page.screenshot(path=shots / "project-desktop.png", full_page=True)
                await page.set_viewport_size(PHONE)
                await page.screenshot(path=shots / "project-phone.png", full_page=True)
            finally:
                await browser.close()
                await server.stop()
        assert errors == []
