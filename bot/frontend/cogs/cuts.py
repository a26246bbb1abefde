"""The cut (moderators): /cut preview, pin, exclude, include, approve."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import InvalidState
from bot.frontend.checks import NO_MENTIONS
from bot.frontend.cogs.base import CrowdcutCog
from bot.frontend.limits import fit_embed, fit_lines
from bot.frontend.render import POST_DELETED, progress_bar
from bot.services.cuts import Rendered
from bot.web.links import PageLinks
from storage.models import Cut, Project

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)


class Cuts(CrowdcutCog):
    """Preview the winners, override votes, approve and publish the video."""

    def __init__(self, bot: CrowdcutBot) -> None:
        super().__init__(bot)
        # two moderators approving at the same moment must publish one video, not two
        self._publishing = asyncio.Lock()

    @commands.hybrid_group(name="cut", fallback="preview")
    @commands.guild_only()
    async def cut(self, ctx: commands.Context[Any]) -> None:
        """Render the current winners: a storyboard and a preview video (moderators)."""
        self.require_moderator(ctx.author)
        await ctx.defer()
        project = await self.project_here(ctx)
        assert project is not None
        rendered = await self._render(ctx, project, preview=True)
        from bot.frontend.views import cut_decision_view

        board = self.settings.renders_dir / f"project-{project.id}" / "storyboard.png"
        await self.bot.cuts.storyboard(project, board)
        files = [discord.File(board, filename="storyboard.png")]
        files.append(await self._video_file(ctx, rendered, "preview"))
        await ctx.send(
            f"🎬 Preview of cut #{rendered.cut.id} for "
            f"“{discord.utils.escape_markdown(project.title)}” — {len(rendered.cut.slots)} "
            "slots. Moderators can approve it below.",
            files=files,
            view=cut_decision_view(rendered.cut.id),
            allowed_mentions=NO_MENTIONS,
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

    @cut.command(name="approve")
    async def approve(self, ctx: commands.Context[Any]) -> None:
        """Close voting, render the final cut and publish it with its credits (moderators)."""
        self.require_moderator(ctx.author)
        await ctx.defer()
        project = await self.project_here(ctx)
        assert project is not None
        if project.state == "approved":
            raise InvalidState("This project's cut is already approved.")
        if project.state == "open":
            await self.bot.reconcile_votes(project.id)
            project = await self.bot.projects.close(project.id, by=ctx.author.id)
        rendered = await self._render(ctx, project)
        await self.publish(ctx.channel, project, rendered.cut, ctx.author)
        await ctx.send(f"✅ Cut #{rendered.cut.id} approved and published.", ephemeral=True)

    # ------------------------------------------------------------------ helpers
    async def _render(
        self, ctx: commands.Context[Any], project: Project, *, preview: bool = False
    ) -> Rendered:
        status = await ctx.channel.send("🎞️ Cutting the video… " + progress_bar(0))
        state = {"stage": "starting", "f": 0.0}

        def progress(stage: str, fraction: float) -> None:
            state["stage"], state["f"] = stage, fraction

        async def ticker() -> None:
            while True:
                await asyncio.sleep(max(1.0, self.settings.status_edit_seconds))
                try:
                    await status.edit(
                        content=f"🎞️ Cutting the video — {state['stage']} "
                        + progress_bar(float(state["f"]))
                    )
                except discord.HTTPException:
                    pass

        tick = asyncio.create_task(ticker())
        started = time.monotonic()
        try:
            make = self.bot.cuts.preview if preview else self.bot.cuts.render
            rendered = await make(project, by=ctx.author.id, progress=progress)
        finally:
            tick.cancel()
        await status.edit(
            content=f"🎞️ Cut #{rendered.cut.id} rendered in "
            f"{time.monotonic() - started:.0f}s ({rendered.result.duration:.0f}s "
            "of video)."
        )
        return rendered

    async def _video_file(
        self, ctx: commands.Context[Any], rendered: Rendered, name: str
    ) -> discord.File:
        path = rendered.result.preview
        guild = ctx.guild
        limit = guild.filesize_limit if guild else 10 * 1024 * 1024
        if path.stat().st_size > limit * 0.97:
            from bot.media.clips import fit_to_size

            smaller = path.with_name(f"{name}-fit.mp4")
            path = await fit_to_size(path, smaller, int(limit * 0.9))
        return discord.File(path, filename=f"{name}.mp4")

    async def publish(
        self,
        channel: discord.abc.Messageable,
        project: Project,
        cut: Cut,
        approver: discord.abc.User,
    ) -> discord.Message:
        """Post the final video with its credits and manifest, and record the approval."""
        async with self._publishing:
            fresh = await self.app.store.get_project(project.id)
            if fresh is None or fresh.state == "approved":
                raise InvalidState("This project's cut is already approved.")
            return await self._publish(channel, fresh, cut, approver)

    async def _publish(
        self,
        channel: discord.abc.Messageable,
        project: Project,
        cut: Cut,
        approver: discord.abc.User,
    ) -> discord.Message:
        media = self.app.media
        video = media.path(cut.preview_key) if cut.preview_key else None
        guild = getattr(channel, "guild", None)
        limit = guild.filesize_limit if guild else 10 * 1024 * 1024
        files = []
        if video is not None:
            if video.stat().st_size > limit * 0.97:
                from bot.media.clips import fit_to_size

                video = await fit_to_size(video, video.with_name("final-fit.mp4"), int(limit * 0.9))
            files.append(discord.File(video, filename=f"crowdcut-{project.id}.mp4"))
        if cut.manifest_key:
            files.append(
                discord.File(
                    media.path(cut.manifest_key), filename=f"crowdcut-{project.id}-manifest.json"
                )
            )
        credits = []
        seen = set()
        for s in cut.slots:
            if s.get("reused") or s.get("clip_id") in seen:
                continue
            seen.add(s.get("clip_id"))
            credits.append(
                f"`{s['index'] + 1:>2}` {discord.utils.escape_markdown(s['author'])}"
                f" — {discord.utils.escape_markdown(str(s['prompt'])[:60])}"
            )
        embed = discord.Embed(
            title=f"🎉 {project.title}",
            description=fit_lines(credits, 4000, more=lambda n: f"… and {n} more clips")
            or "No credits.",
            colour=discord.Colour.green(),
        )
        embed.set_footer(text=f"cut #{cut.id} · approved by {approver.display_name}")
        # the full-quality master, the storyboard and the credits, when PUBLIC_URL is set
        page = await PageLinks(self.app).project_url(project.id)
        if page:
            embed.url = page
            embed.add_field(name="Watch in full quality", value=page, inline=False)
        message = await channel.send(
            embed=fit_embed(embed), files=files, allowed_mentions=NO_MENTIONS
        )
        await self.bot.cuts.approve(project, cut, by=approver.id, message_id=message.id)
        return message


async def setup(bot: CrowdcutBot) -> None:
    await bot.add_cog(Cuts(bot))
