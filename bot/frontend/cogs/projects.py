"""Projects (moderators): /project create, status, open, close, backend, style, link,
listing; the slot plan: /project slots, split, merge, hint."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.frontend.checks import NO_MENTIONS
from bot.frontend.cogs.base import CrowdcutCog
from bot.frontend.limits import fit_content, fit_lines
from bot.frontend.render import clock, project_embed, slot_row, style_text
from bot.web.links import PageLinks
from storage.models import Project

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
        """Show the current project: each slot's time, bars, hint and the clip the cut
        would take for it now; time left."""
        project = await self.project_here(ctx)
        assert project is not None
        overall, per_slot = await self.bot.cuts.leaderboard(project)
        candidates = {slot: len(ranked) for slot, ranked in per_slot.items()}
        # what the cut would take now, by the same choice as the cut (pins, votes, clips
        # for any slot, reuse)
        chosen = await self.bot.cuts.choose(project)
        picks = {c.index: (c.clip_id, c.votes.get("score"), c.reused) for c in chosen if c.clip_id}
        counts = await self.app.store.job_counts(project.id)  # this server's, not everyone's
        queued = counts.get("queued", 0) + counts.get("submitted", 0) + counts.get("running", 0)
        embed = project_embed(
            project,
            filled=sum(1 for c in chosen if not c.reused),
            candidates=candidates,
            picks=picks,
            queued=queued,
            plan_note=await self.bot.projects.plans.describe(project),
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
        plan = await self.bot.projects.plans.describe(project)
        url = await self.pages.project_url(project.id)
        await ctx.send(
            f"🎞️ **{discord.utils.escape_markdown(project.title)}** is open: {plan} "
            "Prompt clips with `/prompt`, vote with "
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

    @project.command(name="style")
    @app_commands.describe(
        transition="How one clip gives way to the next: cut, crossfade, dip or zoom",
        beats="The transition's length in beats (0.5: half a beat)",
        fit="A clip shorter than its slot: hold its last frame, or slow it down",
        chain="On: a prompt without an image continues the previous slot's winner",
    )
    async def style(
        self,
        ctx: commands.Context[Any],
        transition: str | None = None,
        beats: float | None = None,
        fit: str | None = None,
        chain: bool | None = None,
    ) -> None:
        """Set the cut's transition and its length in beats, how short clips fill their
        slot, and chain mode; without options, show them (moderators)."""
        project = await self.moderated_project(ctx)
        project = await self.bot.projects.set_style(
            project.id, by=ctx.author.id, transition=transition, beats=beats, fit=fit, chain=chain
        )
        changed = any(v is not None for v in (transition, beats, fit, chain))
        head = "🎨 The project's style is now" if changed else "🎨 The project's style:"
        await ctx.send(f"{head} {style_text(project)}.", allowed_mentions=NO_MENTIONS)

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

    # ------------------------------------------------------------------ the slot plan
    @project.command(name="slots")
    @app_commands.describe(count="How many slots (planned again on the song's bars)")
    async def slots(self, ctx: commands.Context[Any], count: int) -> None:
        """Plan the slots again with this many slots, on the song's bars (moderators)."""
        project = await self.moderated_project(ctx)
        await self._defer_for_analysis(ctx, project)
        project, _ = await self.bot.projects.plans.set_count(project.id, count, by=ctx.author.id)
        await self._plan_changed(ctx, project, "🎚️ Slots planned again:")

    @project.command(name="split")
    @app_commands.describe(slot="The slot to split in two (on the bar nearest its middle)")
    async def split(self, ctx: commands.Context[Any], slot: int) -> None:
        """Split a slot in two; the slots after it move up by one (moderators)."""
        project = await self.moderated_project(ctx)
        await self._defer_for_analysis(ctx, project)
        project = await self.bot.projects.plans.split(project.id, slot - 1, by=ctx.author.id)
        await self._plan_changed(ctx, project, f"✂️ Slot {slot} is now slots {slot} and {slot + 1}:")

    @project.command(name="merge")
    @app_commands.describe(slot="The slot to merge with the one after it")
    async def merge(self, ctx: commands.Context[Any], slot: int) -> None:
        """Merge a slot with the next one; the slots after them move down by one
        (moderators)."""
        project = await self.moderated_project(ctx)
        project = await self.bot.projects.plans.merge(project.id, slot - 1, by=ctx.author.id)
        await self._plan_changed(
            ctx, project, f"🔗 Slots {slot} and {slot + 1} are now slot {slot}:"
        )

    @project.command(name="hint")
    @app_commands.describe(
        slot="The slot", text="A lyric line or a mood for prompters (empty: remove the hint)"
    )
    async def hint(self, ctx: commands.Context[Any], slot: int, *, text: str | None = None) -> None:
        """Give a slot a hint for prompters: a lyric line, a mood (moderators)."""
        project = await self.moderated_project(ctx)
        project = await self.bot.projects.plans.set_hint(
            project.id, slot - 1, text, by=ctx.author.id
        )
        s = project.slot_plan[slot - 1]
        said = (
            f"💬 Slot {slot} ({clock(s.start)}–{clock(s.end)}): "
            f"{discord.utils.escape_markdown(s.hint)}"
            if s.hint
            else f"💬 Slot {slot} has no hint now."
        )
        await ctx.send(fit_content(said), allowed_mentions=NO_MENTIONS)

    @project.command(name="credit")
    @app_commands.describe(
        text="The song's credit: “Title” by Artist, and its licence (empty: none)"
    )
    async def credit(self, ctx: commands.Context[Any], *, text: str | None = None) -> None:
        """The song's credit on the credits roll and the project page (moderators)."""
        project = await self.moderated_project(ctx)
        project = await self.bot.projects.set_credit(project, text, by=ctx.author.id)
        said = (
            f"🎵 The song is credited as: {discord.utils.escape_markdown(project.song_credit)}"
            if project.song_credit
            else "🎵 The song has no credit now."
        )
        await ctx.send(fit_content(said), allowed_mentions=NO_MENTIONS)

    async def _defer_for_analysis(self, ctx: commands.Context[Any], project: Project) -> None:
        # a project made before songs were analysed is analysed now: seconds. Otherwise
        # the answer comes at once, and a refusal can still be shown to the moderator only
        if not await self.bot.projects.plans.analysis_ready(project):
            await ctx.defer()

    async def _plan_changed(self, ctx: commands.Context[Any], project: Project, head: str) -> None:
        note = await self.bot.projects.plans.describe(project)
        rows = [slot_row(s) for s in project.slot_plan]
        text = f"{head} {note}\n" + fit_lines(rows, 1500, more=lambda k: f"… and {k} more slots")
        await ctx.send(fit_content(text), allowed_mentions=NO_MENTIONS)


async def setup(bot: CrowdcutBot) -> None:
    await bot.add_cog(Projects(bot))
