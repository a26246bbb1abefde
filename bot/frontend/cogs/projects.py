"""Projects (moderators): /project create, status, open, close, backend."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.frontend.checks import NO_MENTIONS
from bot.frontend.cogs.base import CrowdcutCog
from bot.frontend.render import project_embed

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)

SONG_MAX_BYTES = 100 * 1024 * 1024


class Projects(CrowdcutCog):
    """Open a project with a song, watch its progress, open and close voting."""

    @commands.hybrid_group(name="project", fallback="status")
    @commands.guild_only()
    async def project(self, ctx: commands.Context[Any]) -> None:
        """Show the current project: slots filled, candidates, leaders, time left."""
        project = await self.project_here(ctx)
        assert project is not None
        # the voting rules rank each slot (ties: fewer downs, then the earlier clip)
        overall, per_slot = await self.bot.cuts.leaderboard(project)
        candidates = {slot: len(ranked) for slot, ranked in per_slot.items()}
        leaders = {slot: (ranked[0].clip_id, ranked[0].score) for slot, ranked in per_slot.items()}
        counts = await self.app.store.job_counts(project.id)  # this server's, not everyone's
        queued = counts.get("queued", 0) + counts.get("submitted", 0) + counts.get("running", 0)
        embed = project_embed(
            project, filled=len(candidates), candidates=candidates, leaders=leaders, queued=queued
        )
        unslotted = len(overall) - sum(candidates.values())
        if unslotted:
            embed.add_field(name="Clips for any slot", value=str(unslotted))
        await ctx.send(embed=embed, allowed_mentions=NO_MENTIONS)

    @project.command(name="create")
    @app_commands.describe(
        title="The project's title",
        song="The song the video is cut to (MP3, M4A, WAV, OGG)",
        slots="Number of slots when there is no song",
    )
    async def create(
        self,
        ctx: commands.Context[Any],
        song: discord.Attachment | None = None,
        *,
        title: str,
        slots: int | None = None,
    ) -> None:
        """Start a project in this channel (moderators)."""
        self.require_moderator(ctx.author)
        await ctx.defer()
        assert ctx.guild is not None
        data = None
        if song is not None:
            data = await self.read_attachment(song, limit=SONG_MAX_BYTES, what="song")
        project = await self.bot.projects.create(
            guild_id=ctx.guild.id,
            channel_id=ctx.channel.id,
            title=title,
            by=ctx.author.id,
            song=data,
            song_name=song.filename if song else None,
            slots=slots,
        )
        n = len(project.slot_plan)
        await ctx.send(
            f"🎞️ **{discord.utils.escape_markdown(project.title)}** is open: {n} slots of "
            f"{project.slot_plan[0].duration:.1f}s. Prompt clips with `/prompt`, vote with "
            f"{self.settings.vote_up_emoji} / {self.settings.vote_down_emoji}.",
            allowed_mentions=NO_MENTIONS,
        )

    @project.command(name="open")
    @app_commands.describe(hours="Close voting automatically after this many hours")
    async def open_(self, ctx: commands.Context[Any], hours: float | None = None) -> None:
        """Open prompting and voting (moderators)."""
        project = await self.moderated_project(ctx)
        project = await self.bot.projects.open(project.id, by=ctx.author.id, hours=hours)
        tail = (
            f" Voting closes <t:{int(project.voting_ends_at)}:R>." if project.voting_ends_at else ""
        )
        await ctx.send(
            f"🟢 “{discord.utils.escape_markdown(project.title)}” is open for "
            f"prompts and votes.{tail}",
            allowed_mentions=NO_MENTIONS,
        )

    @project.command(name="backend")
    @app_commands.describe(name="A configured generator (empty: the server's default order)")
    async def backend(self, ctx: commands.Context[Any], name: str | None = None) -> None:
        """Choose the video generator for this project's new prompts (moderators)."""
        project = await self.moderated_project(ctx)
        project = await self.bot.projects.set_backend(project.id, name, by=ctx.author.id)
        order = list(self.app.generators)
        if project.backend:
            rest = [n for n in order if n != project.backend]
            tail = f" (then {', '.join(rest)} while it is down)" if rest else ""
            text = f"🎛️ New prompts in this project go to **{project.backend}**{tail}."
        else:
            text = f"🎛️ New prompts in this project go to the default order: {', '.join(order)}."
        await ctx.send(text, allowed_mentions=NO_MENTIONS)

    @project.command(name="close")
    async def close(self, ctx: commands.Context[Any]) -> None:
        """Close voting; votes after this do not count (moderators)."""
        self.require_moderator(ctx.author)
        await ctx.defer()
        project = await self.project_here(ctx)
        assert project is not None
        await self.bot.reconcile_votes(project.id)  # count what was cast while we were away
        project = await self.bot.projects.close(project.id, by=ctx.author.id)
        await ctx.send(
            f"🔴 Voting on “{discord.utils.escape_markdown(project.title)}” is "
            "closed. A moderator can now `/cut preview` and `/cut approve`.",
            allowed_mentions=NO_MENTIONS,
        )


async def setup(bot: CrowdcutBot) -> None:
    await bot.add_cog(Projects(bot))
