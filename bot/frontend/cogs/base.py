"""What every crowdcut cog shares: the bot's services and the member as an ``Author``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.errors import InvalidImage, NotFound
from bot.frontend.checks import require_moderator
from bot.services.submissions import Author
from storage.models import Project

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)


class CrowdcutCog(commands.Cog):
    def __init__(self, bot: CrowdcutBot) -> None:
        self.bot = bot
        self.app = bot.app
        self.settings = bot.app.settings

    @staticmethod
    def author(user: discord.abc.User) -> Author:
        return Author(id=user.id, name=user.display_name, is_bot=user.bot)

    def require_moderator(self, user: discord.abc.User) -> None:
        require_moderator(user, self.settings)

    async def moderated_project(self, ctx: commands.Context[Any]) -> Project:
        """The project here, for a moderator's command: refuses non-moderators first."""
        self.require_moderator(ctx.author)
        project = await self.project_here(ctx)
        assert project is not None
        return project

    async def project_here(
        self, ctx: commands.Context[Any], *, required: bool = True
    ) -> Project | None:
        if ctx.guild is None:
            if required:
                raise NotFound("Use this in a server channel.")
            return None
        project = await self.bot.projects.current(ctx.guild.id, ctx.channel.id)
        if project is None:
            # the guild's current project, when asked from another channel
            project = await self.bot.projects.current(ctx.guild.id)
        if project is None and required:
            raise NotFound(
                "There is no project here yet. A moderator can start one with `/project create`."
            )
        return project

    async def read_attachment(
        self, attachment: discord.Attachment, *, limit: int, what: str
    ) -> bytes:
        """Download an attachment, refusing it by its stated size before fetching."""
        if attachment.size > limit:
            raise InvalidImage(
                f"That {what} is {attachment.size / 1048576:.1f} MB; "
                f"the limit is {limit / 1048576:.0f} MB."
            )
        try:
            data = await attachment.read()
        except discord.HTTPException as e:
            log.warning("could not download an attachment (%s): %s", attachment.id, e)
            raise InvalidImage(f"Could not download that {what} from Discord; try again.") from None
        if len(data) > limit:
            raise InvalidImage(f"That {what} is over the {limit / 1048576:.0f} MB limit.")
        return data
