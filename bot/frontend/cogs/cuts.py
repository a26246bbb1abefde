"""The cut (moderators): /cut preview, pin, exclude, include, trim, approve."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from discord import app_commands
from discord.ext import commands

from bot.errors import InvalidState
from bot.frontend.cogs.base import CrowdcutCog
from bot.frontend.render import POST_DELETED
from bot.services.renders import DEFAULT_UPLOAD_LIMIT, FINAL, PREVIEW

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)


class Cuts(CrowdcutCog):
    """Preview the winners, override votes, approve and publish the video."""

    @commands.hybrid_group(name="cut", fallback="preview")
    @commands.guild_only()
    async def cut(self, ctx: commands.Context[Any]) -> None:
        """Render the current winners: a storyboard and a preview video (moderators)."""
        self.require_moderator(ctx.author)
        project = await self.project_here(ctx)
        assert project is not None
        render, new = await self.bot.renders.request(
            project, PREVIEW, by=ctx.author.id, channel_id=ctx.channel.id,
            upload_limit=_upload_limit(ctx),
        )  # fmt: skip
        await self.app.store.audit(
            "preview_cut", actor_id=ctx.author.id, project_id=project.id,
            target=f"render:{render.id}",
        )  # fmt: skip
        already = "" if new else " (it was already asked for)"
        await ctx.send(
            f"🎞️ Rendering a preview of the current cut{already}; it is posted here when it "
            "is ready.",
            ephemeral=True,
        )

    @cut.command(name="pin")
    @app_commands.describe(clip="The clip number", slot="The slot it must fill (1 = the start)")
    async def pin(self, ctx: commands.Context[Any], clip: int, slot: int) -> None:
        """Put a clip in a slot whatever the votes say (moderators)."""
        project = await self.moderated_project(ctx)
        pinned = await self.bot.cuts.pin(project, clip, slot - 1, by=ctx.author.id)
        note = f" Its post was {POST_DELETED}: only this pin puts it in the cut."
        await ctx.send(
            f"📌 Clip #{clip} is pinned to slot {slot}."
            + (note if pinned.post_deleted_at is not None else "")
        )

    @cut.command(name="exclude")
    @app_commands.describe(clip="The clip number")
    async def exclude(self, ctx: commands.Context[Any], clip: int) -> None:
        """Keep a clip out of the cut whatever the votes say (moderators)."""
        project = await self.moderated_project(ctx)
        await self.bot.cuts.exclude(project, clip, by=ctx.author.id)
        await ctx.send(f"🚫 Clip #{clip} is excluded from the cut.")

    @cut.command(name="include")
    @app_commands.describe(clip="The clip number")
    async def include(self, ctx: commands.Context[Any], clip: int) -> None:
        """Undo a pin or an exclusion (moderators)."""
        project = await self.moderated_project(ctx)
        cleared = await self.bot.cuts.clear_override(project, clip, by=ctx.author.id)
        if cleared.post_deleted_at is not None:
            await ctx.send(
                f"↩️ Clip #{clip} has no pin or exclusion now, but its post was "
                f"{POST_DELETED}: it is not posted again and stays out of the cut."
            )
            return
        await ctx.send(f"↩️ Clip #{clip} is back to the votes.")

    @cut.command(name="trim")
    @app_commands.describe(
        clip="The clip number",
        start="The second of the clip its slot starts at (0 = its first frame)",
    )
    async def trim(self, ctx: commands.Context[Any], clip: int, start: float) -> None:
        """Pick where a clip starts in the cut: its in-point (moderators)."""
        project = await self.moderated_project(ctx)
        trimmed = await self.bot.cuts.trim(project, clip, start, by=ctx.author.id)
        at = trimmed.in_point or 0.0
        if at:
            await ctx.send(f"✂️ Clip #{clip} starts {at:g} s in, wherever the cut uses it.")
        else:
            await ctx.send(f"✂️ Clip #{clip} starts from its first frame again.")

    @cut.command(name="approve")
    async def approve(self, ctx: commands.Context[Any]) -> None:
        """Close voting, render the final cut and publish it with its credits (moderators)."""
        self.require_moderator(ctx.author)
        project = await self.project_here(ctx)
        assert project is not None
        if project.state == "approved":
            raise InvalidState("This project's cut is already approved.")
        await ctx.defer(ephemeral=True)
        if project.state == "open":
            await self.bot.reconcile_votes(project.id)
            project = await self.bot.projects.close(project.id, by=ctx.author.id)
        render, new = await self.bot.renders.request(
            project, FINAL, by=ctx.author.id, channel_id=ctx.channel.id,
            upload_limit=_upload_limit(ctx), by_name=ctx.author.display_name,
        )  # fmt: skip
        already = "" if new else " (another moderator already approved it)"
        await ctx.send(
            f"✅ The current cut is approved{already}: voting is closed and the final video "
            "is being rendered; it is posted here when it is ready.",
            ephemeral=True,
        )


def _upload_limit(ctx: commands.Context[Any]) -> int:
    """The server's upload limit (10, 50 or 100 MiB by boost tier)."""
    return ctx.guild.filesize_limit if ctx.guild else DEFAULT_UPLOAD_LIMIT


async def setup(bot: CrowdcutBot) -> None:
    await bot.add_cog(Cuts(bot))
