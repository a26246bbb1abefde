"""The routes of the project pages. Handlers read, build a page, render it: nothing else.

::

    /                               the index: projects of servers that list theirs
    /p/<token>/                     a project: video, storyboard, credits, standings
    /p/<token>/clip/<id>            a clip: its video, prompt, author, lineage, cuts
    /p/<token>/events               the live standings (server-sent events)
    /p/<token>/standings.json       the same, once
    /p/<token>/embed                the video alone (the Twitter player card)
    /p/<token>/media/<sha256>.<ext> a file of this project, from the media store
    /p/<token>/storyboard.png       a storyboard drawn for a cut that kept none
    /static/style.css, live.js      the stylesheet and the standings script

Anything else is 404, and so is every URL of a project whose token is wrong (rotated),
and every clip and file that forget-me removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from bot.settings import Settings
from bot.web import templates
from bot.web.live import LiveStandings
from bot.web.media import IMMUTABLE, serve_media
from bot.web.pages import ProjectPage, build_project_page, standings_data
from bot.web.reader import WebReader
from bot.web.storyboard import Storyboards

log = logging.getLogger(__name__)

TOKEN = re.compile(r"^[0-9a-f]{32}$")
MEDIA_KEY = re.compile(r"^[0-9a-f]{64}\.(?:mp4|png|jpg)$")
MANIFEST_KEY = re.compile(r"^[0-9a-f]{64}\.json$")
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
#: the longest a request waits for the bot's burst of interactions to end (see _yielding)
YIELD_MAX_SECONDS = 1.0
PAGES_KEY = web.AppKey("crowdcut_pages", "ProjectPages")


class ProjectPages:
    """Loads pages by token (briefly cached, so a crowd costs one read a second) and
    answers the routes."""

    def __init__(
        self,
        settings: Settings,
        reader: WebReader,
        media_root: Path,
        *,
        cache_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.media_root = Path(media_root)
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, ProjectPage | None]] = {}
        self._manifests: dict[str, dict[str, Any]] = {}
        self._rendered: dict[str, tuple[ProjectPage, str]] = {}
        self.storyboards = Storyboards()
        self.live = LiveStandings(self._live_data, settings.web_live_seconds)

    # ------------------------------------------------------------------ loading
    async def page(self, token: str, *, fresh: bool = False) -> ProjectPage | None:
        if not TOKEN.match(token):
            return None
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and not fresh and now - hit[0] < self.cache_seconds:
            return hit[1]
        page = await self._load(token)
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[token] = (now, page)
        return page

    async def _load(self, token: str) -> ProjectPage | None:
        project = await self.reader.project_by_token(token)
        if project is None:
            return None
        clips, cuts = await asyncio.gather(
            self.reader.clips(project.id), self.reader.cuts(project.id)
        )
        names = (
            await self.reader.member_names([project.approved_by])
            if project.approved_by is not None
            else {}
        )
        approved = next((c for c in reversed(cuts) if c.state == "approved"), None)
        manifest = await self._manifest(approved.manifest_key) if approved else None
        return build_project_page(project, token, clips, cuts, names=names, manifest=manifest)

    async def _manifest(self, key: str | None) -> dict[str, Any] | None:
        if not key or not MANIFEST_KEY.match(key):
            return None
        if key not in self._manifests:
            path = self.media_root / key[:2] / key
            try:
                text = await asyncio.to_thread(path.read_text, "utf-8")
                self._manifests[key] = json.loads(text)
            except (OSError, ValueError):
                log.warning("the manifest %s could not be read", key)
                return None
        return self._manifests[key]

    async def _live_data(self, token: str) -> dict[str, Any] | None:
        page = await self.page(token, fresh=True)
        return standings_data(page) if page is not None else None

    async def _required(self, request: web.Request) -> ProjectPage:
        page = await self.page(request.match_info["token"])
        if page is None:
            raise web.HTTPNotFound()
        return page

    def base_url(self, request: web.Request) -> str:
        return self.settings.public_url.rstrip("/") or f"{request.scheme}://{request.host}"

    # ------------------------------------------------------------------ routes
    async def index(self, request: web.Request) -> web.Response:
        projects = await self.reader.public_projects()
        return _html(templates.index_page(projects), indexable=True)

    async def project_redirect(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if not TOKEN.match(token):
            raise web.HTTPNotFound()
        raise web.HTTPMovedPermanently(f"{token}/")

    async def project(self, request: web.Request) -> web.Response:
        page = await self._required(request)
        base = f"{self.base_url(request)}/p/{page.token}/"
        rendered = self._rendered.get(base)
        if rendered is not None and rendered[0] is page:  # the same load: the same HTML
            return _html(rendered[1])
        board = self._storyboard_href(page)
        preview = page.preview_key or page.master_key
        manifest = await self._manifest(page.approved.manifest_key) if page.approved else None
        share = templates.Share(
            url=base,
            video=f"{base}media/{preview}" if preview else None,
            image=f"{base}{board}" if board else None,
            embed=f"{base}embed" if preview else None,
            width=(manifest or {}).get("width"),
            height=(manifest or {}).get("height"),
        )
        markup = templates.project_page(page, share, storyboard=board)
        if len(self._rendered) > 1000:
            self._rendered.clear()
        self._rendered[base] = (page, markup)
        return _html(markup)

    def _storyboard_href(self, page: ProjectPage) -> str | None:
        if page.storyboard_key:
            return f"media/{page.storyboard_key}"
        if page.approved is not None and page.credits:
            return "storyboard.png"
        return None

    async def clip(self, request: web.Request) -> web.Response:
        page = await self._required(request)
        clip = page.visible_clip(int(request.match_info["clip_id"]))
        if clip is None:
            raise web.HTTPNotFound()
        child_ids = await self.reader.clip_children(clip.id)
        children = [c for c in (page.visible_clip(i) for i in child_ids) if c is not None]
        return _html(templates.clip_page(page, clip, children))

    async def embed(self, request: web.Request) -> web.Response:
        page = await self._required(request)
        key = page.preview_key or page.master_key
        if key is None:
            raise web.HTTPNotFound()
        resp = _html(templates.embed_page(page, key))
        # the one page another site may frame (the Twitter player card)
        resp.headers["Content-Security-Policy"] = CSP
        return resp

    async def media(self, request: web.Request) -> web.StreamResponse:
        page = await self._required(request)
        key = request.match_info["key"]
        if not MEDIA_KEY.match(key) or key not in page.servable_keys():
            raise web.HTTPNotFound()
        name = None
        if request.query.get("download") and key == page.master_key:
            name = f"crowdcut-{page.project.id}.mp4"
        return await serve_media(request, self.media_root, key, download_name=name)

    async def storyboard(self, request: web.Request) -> web.Response:
        page = await self._required(request)
        if page.approved is None or not page.credits or page.storyboard_key:
            raise web.HTTPNotFound()
        cells = []
        for line in page.credits:
            path = None
            if line.clip is not None:
                path = self.media_root / line.clip.media_key[:2] / line.clip.media_key
            cells.append((path, f"#{line.index + 1} {line.author}"))
        data = await self.storyboards.png(page.approved.id, cells)
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=data, content_type="image/png", headers=headers)

    async def standings_json(self, request: web.Request) -> web.Response:
        page = await self._required(request)
        return web.json_response(
            standings_data(page), headers={"Cache-Control": "no-store"}, dumps=_dumps
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        page = await self._required(request)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx: pass each event on at once
            }
        )
        await resp.prepare(request)
        # the browser reconnects after a dropped stream: every 3 s, not at once
        await resp.write(b"retry: 3000\n\n")
        async for data in self.live.stream(page.token):
            if data is None:
                await resp.write(b": keep-alive\n\n")
            else:
                await resp.write(f"data: {data}\n\n".encode())
        if await self.page(page.token, fresh=True) is None:
            await resp.write(b"event: gone\ndata: {}\n\n")
        return resp

    async def static(self, request: web.Request) -> web.Response:
        asset = templates.ASSETS.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound()
        etag = f'"{asset.version}"'
        versioned = request.query.get("v") == asset.version
        headers = {
            "ETag": etag,
            "Cache-Control": IMMUTABLE if versioned else "public, max-age=300",
        }
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=asset.body, headers={**headers, "Content-Type": asset.content_type}
        )


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


def _html(markup: str, *, indexable: bool = False) -> web.Response:
    resp = web.Response(text=markup, content_type="text/html", charset="utf-8")
    resp.headers["Cache-Control"] = "no-cache"
    if not indexable:
        resp.headers["X-Robots-Tag"] = "noindex"
    return resp


@web.middleware
async def _not_found_page(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return web.Response(
            status=404, text=templates.not_found_page(), content_type="text/html", charset="utf-8"
        )


async def _security_headers(request: web.Request, resp: web.StreamResponse) -> None:
    # the page's address carries its token: never send it on to another site
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Content-Security-Policy", CSP + "; frame-ancestors 'none'")


def _yielding(busy: Callable[[], float]) -> Middleware:
    """A middleware: a request that arrives while the bot takes a burst of interactions
    waits until it is over (``busy()``: the seconds left, 0 when none; at most
    :data:`YIELD_MAX_SECONDS`). The pages share the bot's process and its interpreter
    lock: Discord allows 3 s to acknowledge a command, a video player has seconds
    buffered."""

    @web.middleware
    async def wait_for_the_bot(request: web.Request, handler: Any) -> web.StreamResponse:
        left = busy()
        if left > 0:
            deadline = time.monotonic() + YIELD_MAX_SECONDS
            while left > 0 and (now := time.monotonic()) < deadline:
                await asyncio.sleep(min(left, deadline - now))
                left = busy()
        return await handler(request)

    return wait_for_the_bot


def make_web_app(
    pages: ProjectPages, *, busy: Callable[[], float] | None = None
) -> web.Application:
    """The aiohttp application for ``pages`` (GET and HEAD only); with ``busy``, requests
    wait while the bot is busy (see :func:`_yielding`)."""
    middlewares = [_not_found_page] if busy is None else [_yielding(busy), _not_found_page]
    app = web.Application(middlewares=middlewares)
    app.on_response_prepare.append(_security_headers)
    app[PAGES_KEY] = pages
    r = app.router
    r.add_get("/", pages.index)
    r.add_get("/static/{name}", pages.static)
    r.add_get("/p/{token}", pages.project_redirect)
    r.add_get("/p/{token}/", pages.project)
    r.add_get("/p/{token}/clip/{clip_id:[0-9]+}", pages.clip)
    r.add_get("/p/{token}/embed", pages.embed)
    r.add_get("/p/{token}/events", pages.events)
    r.add_get("/p/{token}/standings.json", pages.standings_json)
    r.add_get("/p/{token}/storyboard.png", pages.storyboard)
    r.add_get("/p/{token}/media/{key}", pages.media)

    async def stop_streams(_: web.Application) -> None:
        await pages.live.close()

    app.on_shutdown.append(stop_streams)
    return app
