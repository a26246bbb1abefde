"""The bot and the pages: what it links (only with PUBLIC_URL), /project link and
/project listing, and the pages served from the bot's process."""

from __future__ import annotations

import re
import socket

import aiohttp
import pytest

from bot.frontend.harness import bot_on_emulator
from bot.frontend.runner import start_pages
from bot.web.server import WebServer
from tests.conftest import make_settings
from tests.discord_env import Community

pytestmark = pytest.mark.timeout(120)

PUBLIC = "https://pages.example.org/crowdcut"


@pytest.fixture
async def linked(tmp_path):
    async with bot_on_emulator(make_settings(tmp_path, public_url=PUBLIC)) as env:
        yield Community(env)


@pytest.fixture
async def unlinked(tmp_path):
    async with bot_on_emulator(make_settings(tmp_path)) as env:
        yield Community(env)


async def test_without_public_url_the_bot_links_nothing(unlinked):
    g = unlinked
    _, reply = await g.slash(g.mod, "project", {"title": "Quiet"}, subcommand="create")
    assert "http" not in reply["content"]
    _, reply = await g.slash(g.alice, "project", subcommand="link")
    assert "PUBLIC_URL" in reply["content"] and "http" not in reply["content"]
    _, reply = await g.slash(g.mod, "project", subcommand="status")
    assert not reply["embeds"][0].get("url")


async def test_the_bot_links_the_page_and_a_moderator_gives_it_a_new_address(linked):
    g = linked
    _, reply = await g.slash(g.mod, "project", {"title": "Linked"}, subcommand="create")
    project = await g.app.store.current_project(g.emu.guild_id, g.channel)
    token = await g.app.store.project_web_token(project.id)
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    page = f"{PUBLIC}/p/{token}/"
    assert f"<{page}>" in reply["content"]
    _, reply = await g.slash(g.mod, "project", subcommand="status")
    assert reply["embeds"][0]["url"] == page
    _, reply = await g.slash(g.alice, "project", subcommand="link")
    assert page in reply["content"] and "unlisted" in reply["content"]
    # a member cannot change the address
    _, reply = await g.slash(g.alice, "project", {"new": True}, subcommand="link")
    assert "moderator" in reply["content"].lower()
    assert await g.app.store.project_web_token(project.id) == token
    # a moderator can: the old address stops working at once
    server = WebServer(g.app.settings, port=0, cache_seconds=0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}p/{token}/") as r:
                assert r.status == 200
            _, reply = await g.slash(g.mod, "project", {"new": True}, subcommand="link")
            new = await g.app.store.project_web_token(project.id)
            assert new != token and f"{PUBLIC}/p/{new}/" in reply["content"]
            async with http.get(f"{server.url}p/{token}/") as r:
                assert r.status == 404
            async with http.get(f"{server.url}p/{new}/") as r:
                assert r.status == 200
    finally:
        await server.stop()
    audit = await g.app.store.audit_log(g.emu.guild_id)
    assert any(e.action == "rotate_page_link" and e.actor_id == g.mod.id for e in audit)


async def test_a_clip_post_links_the_clips_page(linked):
    g = linked
    project = await g.open_project()
    clip = await g.prompt_and_post(g.alice, "a paper boat in the rain")
    token = await g.app.store.project_web_token(project.id)
    post = g.emu.get_message(g.channel, clip.message_id)
    assert post["embeds"][0]["url"] == f"{PUBLIC}/p/{token}/clip/{clip.id}"


async def test_without_public_url_a_clip_post_links_nothing(unlinked):
    g = unlinked
    await g.open_project()
    clip = await g.prompt_and_post(g.alice, "a paper boat in the rain")
    assert not g.emu.get_message(g.channel, clip.message_id)["embeds"][0].get("url")


async def test_moderators_list_their_servers_projects_on_the_index(linked):
    g = linked
    await g.open_project()
    _, reply = await g.slash(g.alice, "project", {"public": True}, subcommand="listing")
    assert "moderator" in reply["content"].lower()
    assert not await g.app.store.guild_is_public(g.emu.guild_id)
    _, reply = await g.slash(g.mod, "project", {"public": True}, subcommand="listing")
    assert "listed on the index" in reply["content"]
    assert await g.app.store.guild_is_public(g.emu.guild_id)
    _, reply = await g.slash(g.mod, "project", subcommand="listing")
    assert "listed on the index" in reply["content"]
    _, reply = await g.slash(g.mod, "project", {"public": False}, subcommand="listing")
    assert "unlisted" in reply["content"]
    assert not await g.app.store.guild_is_public(g.emu.guild_id)


async def test_the_bot_serves_the_pages_and_a_taken_port_costs_only_the_pages(tmp_path, caplog):
    settings = make_settings(tmp_path, web_port=0)
    assert await start_pages(settings) is None  # WEB_PORT=0: no pages
    from storage import Store

    Store(settings.db_path).close()  # the bot migrates the database before serving
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = make_settings(tmp_path, web_port=port)
        assert await start_pages(busy) is None
        assert "cannot listen" in caplog.text
    pages = await start_pages(make_settings(tmp_path, web_port=port))
    assert pages is not None
    try:
        async with aiohttp.ClientSession() as http, http.get(pages.url) as r:
            assert r.status == 200 and "crowdcut" in await r.text()
    finally:
        await pages.stop()


async def test_the_published_video_links_its_page_in_full_quality(linked):
    g = linked
    project = await g.open_project(slots=1)
    await g.prompt_and_post(g.alice, "a lighthouse beam over the sea", slot=1)
    since = g.emu.revision
    await g.approve_cut()
    final = await g.emu.wait_for_message(
        g.channel,
        lambda m: any(e.get("title", "").startswith("🎉") for e in m.get("embeds", [])),
        timeout=60,
        since=since,
    )
    token = await g.app.store.project_web_token(project.id)
    embed = final["embeds"][0]
    assert embed["url"] == f"{PUBLIC}/p/{token}/"
    assert any(f["value"] == embed["url"] for f in embed.get("fields", []))
