"""Projects (moderators): /project create, status, open, close, backend, link, listing."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.frontend.checks import NO_MENTIONS
from bot.frontend.cogs.base import CrowdcutCog
from bot.frontend.render import project_embed
from bot.web.links import PageLinks

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)

SONG_MAX_BYTES = 100 * 1024 * 1024


class Projects(CrowdcutCog):
    """Open a project with a song, watch its progress, open and close voting."""

    def __init__(self, bot: CrowdcutBot) -> None:
        super().__init__(bot)
        self.pages = PageLinks(bot.app)

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
        embed.url = await self.pages.project_url(project.id)  # None: PUBLIC_URL unset
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
        url = await self.pages.project_url(project.id)
        await ctx.send(
            f"🎞️ **{discord.utils.escape_markdown(project.title)}** is open: {n} slots of "
            f"{project.slot_plan[0].duration:.1f}s. Prompt clips with `/prompt`, vote with "
            f"{self.settings.vote_up_emoji} / {self.settings.vote_down_emoji}."
            + (f"\nStandings and, once approved, the video: <{url}>" if url else ""),
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

    @project.command(name="link")
    @app_commands.describe(new="Give the page a new address; the old one stops working")
    async def link(self, ctx: commands.Context[Any], new: bool = False) -> None:
        """The project's web page; `new` gives it a new address (moderators)."""
        if new:
            project = await self.moderated_project(ctx)
            url = await self.pages.rotate(project, by=ctx.author.id)
            done = "🔗 The page has a new address; the old one no longer works."
        else:
            project = await self.project_here(ctx)
            assert project is not None
            url = await self.pages.project_url(project.id)
            done = "🔗 The page of this project (unlisted: only people with the link see it)."
        if url is None:
            text = "The bot links no web pages here: the operator has not set `PUBLIC_URL`."
            if new:
                text = done + " " + text
        else:
            text = f"{done}\n{url}"
        await ctx.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @project.command(name="listing")
    @app_commands.describe(public="True: list this server's projects on the site's index")
    async def listing(self, ctx: commands.Context[Any], public: bool | None = None) -> None:
        """Whether this server's projects are listed on the web pages' index (moderators)."""
        self.require_moderator(ctx.author)
        assert ctx.guild is not None
        if public is not None:
            await self.pages.set_listing(ctx.guild.id, public, by=ctx.author.id)
        listed = await self.pages.is_listed(ctx.guild.id)
        text = (
            "🌐 This server's projects are listed on the index of the web pages."
            if listed
            else "🔒 This server's projects are unlisted: a page is seen only with its link."
        )
        await ctx.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

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
