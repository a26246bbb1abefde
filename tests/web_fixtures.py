"""Fixtures for the project pages: a real database and media store in ``tmp_path``, real
tiny MP4s, and the pages served on 127.0.0.1 (read-only, as ``crowdcut web`` runs them)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict

from bot.settings import Settings
from bot.web.server import WebServer
from storage import MediaStore, Store
from storage.models import Clip, Project, Slot
from tests.conftest import make_settings
from tests.media_helpers import make_clip

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quoted" \'single\''


@dataclass
class Site:
    """A project with clips, votes and (optionally) an approved cut, and its pages."""

    settings: Settings
    store: Store
    media: MediaStore
    server: WebServer
    project: Project
    clips: dict[str, Clip] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        token = self.store.project_web_token(self.project.id)
        assert token
        return token

    @property
    def page(self) -> str:
        return f"{self.url}p/{self.token}/"

    async def get(self, path: str, **kw: Any) -> tuple[int, CIMultiDict[str], bytes]:
        assert self.http is not None
        async with self.http.get(self.url + path.lstrip("/"), **kw) as r:
            return r.status, CIMultiDict(r.headers), await r.read()

    async def raw(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """GET ``path`` exactly as written (no client normalizing ``..`` or ``%2F``)."""
        reader, writer = await asyncio.open_connection(self.server.host, self.server.port)
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.server.host}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        status = int(data.split(b" ", 2)[1])
        return status, data.partition(b"\r\n\r\n")[2]


_CLIPS: dict[tuple[str, float], Path] = {}


def _clip_file(pattern: str, seconds: float) -> Path:
    """A tiny MP4 test pattern, made once per test session."""
    if (pattern, seconds) not in _CLIPS:
        folder = Path(tempfile.mkdtemp(prefix="crowdcut-web-clips-"))
        _CLIPS[pattern, seconds] = make_clip(
            folder / f"{pattern}.mp4", pattern=pattern, seconds=seconds, audio=False
        )
    return _CLIPS[pattern, seconds]


def add_clip(
    store: Store,
    media: MediaStore,
    project: Project,
    member: int,
    prompt: str,
    *,
    slot: int | None,
    pattern: str = "testsrc2",
    extends: int | None = None,
    seconds: float = 1.0,
) -> Clip:
    path = _clip_file(pattern, seconds)
    key = media.put_file(path, "mp4")
    job = store.add_job(
        project_id=project.id,
        member_id=member,
        prompt=prompt,
        channel_id=project.channel_id,
        duration=seconds,
        aspect="16:9",
        seed=1,
        slot=slot,
        extends_clip_id=extends,
    )
    store.claim_job(job.id, "local", model="stand-in")
    clip = store.complete_job(
        job.id,
        media_key=key,
        duration=seconds,
        width=160,
        height=90,
        fps=24,
        has_audio=False,
        size_bytes=path.stat().st_size,
    )
    assert clip is not None
    store.mark_clip_posted(clip.id, channel_id=project.channel_id, message_id=700000 + clip.id)
    return store.get_clip(clip.id)  # type: ignore[return-value]


def approve_cut(store: Store, media: MediaStore, project: Project, chosen: list[Clip]) -> None:
    """An approved cut of ``chosen`` (one per slot); its master and preview are the first
    clip's file and the second's (any MP4 serves to test the pages)."""
    slots = []
    for s, clip in zip(project.slot_plan, chosen, strict=True):
        up, down = store.vote_tallies(project.id).get(clip.id, (0, 0))
        job = store.get_job(clip.job_id)
        slots.append(
            {
                "index": s.index,
                "start": s.start,
                "duration": s.duration,
                "clip_id": clip.id,
                "author": "name at render time",
                "prompt": job.prompt if job else "",
                "backend": "local",
                "model": "stand-in",
                "votes": {"up": up, "down": down, "score": up - down},
                "reused": False,
            }
        )
    manifest = {"title": project.title, "width": 1280, "height": 720, "slots": slots}
    manifest_key = media.put_bytes(json.dumps(manifest).encode(), "json")
    cut = store.save_cut(
        project_id=project.id,
        slots=slots,
        master_key=chosen[0].media_key,
        preview_key=chosen[1].media_key,
        manifest_key=manifest_key,
        created_by=1,
    )
    store.approve_cut(cut.id, by=1)


def build_site(tmp_path: Path, *, approved: bool, **settings: Any) -> Site:
    s = make_settings(tmp_path, web_live_seconds=0.05, **settings)
    store = Store(s.db_path)
    media = MediaStore(s.media_dir)
    store.upsert_member(1, "mod_mira")
    store.upsert_member(2, "alice")
    store.upsert_member(3, "bob")
    store.upsert_member(4, HOSTILE)
    project = store.create_project(
        guild_id=77,
        channel_id=88,
        title=f"Night {HOSTILE}",
        created_by=1,
        slot_plan=[Slot(i, i * 4.0, 4.0) for i in range(3)],
        song_name="song <b>bold</b>.m4a",
        state="open",
    )
    site = Site(s, store, media, WebServer(s, port=0, cache_seconds=0.0), project)
    c = site.clips
    c["alice"] = add_clip(store, media, project, 2, "a neon city at night", slot=0)
    c["bob"] = add_clip(store, media, project, 3, "paper boats", slot=1, pattern="smptebars")
    c["hostile"] = add_clip(store, media, project, 4, HOSTILE, slot=2, pattern="rgbtestsrc")
    c["extended"] = add_clip(
        store,
        media,
        project,
        3,
        "the same shot into a sunrise",
        slot=2,
        pattern="testsrc",
        extends=c["alice"].id,
    )
    c["any"] = add_clip(
        store, media, project, 2, "for any slot", slot=None, pattern="testsrc2", seconds=1.5
    )
    values = {"👍": 1, "👎": -1}
    for voter in (1, 3, 4):
        store.apply_reaction(c["alice"].id, voter, "👍", added=True, values=values)
    store.apply_reaction(c["bob"].id, 2, "👎", added=True, values=values)
    if approved:
        approve_cut(store, media, project, [c["alice"], c["bob"], c["hostile"]])
    site.project = store.get_project(project.id)  # type: ignore[assignment]
    site.keys = {name: clip.media_key for name, clip in c.items()}
    return site


async def serve(site: Site) -> AsyncIterator[Site]:
    await site.server.start()
    site.http = aiohttp.ClientSession()
    try:
        yield site
    finally:
        await site.http.close()
        await site.server.stop()
        site.store.close()
