"""The addresses the bot links to, and the moderators' two changes to the pages.

A page's address is ``PUBLIC_URL/p/<token>/``: the token is the project's unguessable
key (128 bits), so a project is unlisted until its server lists its projects on the
index. Without ``PUBLIC_URL`` the bot links nothing (the pages may still be served, but
the bot cannot know where the world reaches them).
"""

from __future__ import annotations

import logging
import secrets

from bot.app import App
from storage.models import Project

log = logging.getLogger(__name__)


def new_token() -> str:
    """A fresh page token: 128 bits from the OS's CSPRNG, as 32 hex digits."""
    return secrets.token_hex(16)


def page_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/p/{token}/"


class PageLinks:
    """Links to the project pages, for the cogs."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.store = app.store

    @property
    def enabled(self) -> bool:
        return bool(self.app.settings.public_url)

    async def project_url(self, project_id: int) -> str | None:
        """The project's page, or None when the bot links nothing (no ``PUBLIC_URL``)."""
        if not self.enabled:
            return None
        token = await self.store.project_web_token(project_id)
        return page_url(self.app.settings.public_url, token) if token else None

    async def clip_url(self, project_id: int, clip_id: int) -> str | None:
        base = await self.project_url(project_id)
        return f"{base}clip/{clip_id}" if base else None

    async def rotate(self, project: Project, *, by: int) -> str | None:
        """Give the project's page a new address (the old one answers 404 from now on);
        returns the new one (None without ``PUBLIC_URL``)."""
        await self.store.rotate_web_token(project.id, new_token())
        await self.store.audit("rotate_page_link", actor_id=by, project_id=project.id)
        return await self.project_url(project.id)

    async def set_listing(self, guild_id: int, public: bool, *, by: int) -> None:
        """List (or stop listing) the server's projects on the index."""
        await self.store.set_guild_public(guild_id, public, by=by)
        await self.store.audit(
            "page_listing", actor_id=by, guild_id=guild_id, details={"public": public}
        )

    async def is_listed(self, guild_id: int) -> bool:
        return bool(await self.store.guild_is_public(guild_id))
