"""The pages' view of the database: read-only connections, off the event loop.

Each reader thread opens its own read-only connection (``Store.open_readonly``), the
way datasette keeps SQLite off its loop; WAL lets them read while the bot writes. The
pages get a pool of their own, so a crowd of viewers never queues behind the bot's
reads (or the other way round).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from storage import Store
from storage.models import Cut, Project
from storage.pages import PageClip, PublicProject

T = TypeVar("T")


class WebReader:
    """Named, awaited reads for the pages."""

    def __init__(self, db_path: Path | str, *, threads: int = 4) -> None:
        self.path = Path(db_path)
        Store.open_readonly(self.path).close()  # fail now, with the path, if it cannot open
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="crowdcut-web-reader")
        self._local = threading.local()
        self._stores: list[Store] = []
        self._lock = threading.Lock()

    def _store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = Store.open_readonly(self.path)
            self._local.store = store
            with self._lock:
                self._stores.append(store)
        return store

    async def _run(self, fn: Callable[[Store], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._store()))

    def check_schema(self) -> None:
        """Raise ``RuntimeError`` when the database predates the pages (its migrations
        were not applied: the bot has not run this version yet)."""
        store = Store.open_readonly(self.path)
        try:
            names = store.applied_migrations()
        finally:
            store.close()
        if "m005_project_pages" not in names:
            raise RuntimeError(
                f"{self.path} has not been upgraded for the project pages yet: start the bot "
                "(crowdcut run) once, or run crowdcut doctor, then crowdcut web."
            )

    async def project_by_token(self, token: str) -> Project | None:
        return await self._run(lambda s: s.project_by_web_token(token))

    async def project_token(self, project_id: int) -> str | None:
        return await self._run(lambda s: s.project_web_token(project_id))

    async def public_projects(self, limit: int = 100) -> list[PublicProject]:
        return await self._run(lambda s: s.public_projects(limit))

    async def guild_is_public(self, guild_id: int) -> bool:
        return await self._run(lambda s: s.guild_is_public(guild_id))

    async def clips(self, project_id: int) -> list[PageClip]:
        return await self._run(lambda s: s.page_clips(project_id))

    async def clip(self, clip_id: int) -> PageClip | None:
        return await self._run(lambda s: s.page_clip(clip_id))

    async def clip_children(self, clip_id: int) -> list[int]:
        return await self._run(lambda s: s.clip_children(clip_id))

    async def cuts(self, project_id: int) -> list[Cut]:
        return await self._run(lambda s: s.project_cuts(project_id))

    async def member_names(self, ids: Iterable[int]) -> dict[int, str]:
        wanted = list(ids)
        return await self._run(lambda s: s.member_names(wanted))

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._pool.shutdown, True)
        with self._lock:
            stores, self._stores = self._stores, []
        for s in stores:
            s.close()
