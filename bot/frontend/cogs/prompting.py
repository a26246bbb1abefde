"""Prompting: /prompt, /extend, /queue, /cancel."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.queue import format_eta
from bot.frontend.checks import NO_MENTIONS, is_moderator
from bot.frontend.cogs.base import CrowdcutCog
from bot.frontend.limits import fit_lines
from bot.frontend.render import clip_label, quote
from bot.services.submissions import Submission

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)

Aspect = Literal["16:9", "9:16", "1:1"]


#: prompts being validated and stored at once. The acknowledgement (defer) happens before
#: this gate: in a burst, every interaction is acknowledged at once and the heavier work
#: (image checks, database writes, messages) queues here instead of crowding the event loop
#: that the next acknowledgements need.
INTAKE_CONCURRENCY = 4


class Prompting(CrowdcutCog):
    """Prompt clips, extend clips, follow and cancel your jobs."""

    def __init__(self, bot: CrowdcutBot) -> None:
        super().__init__(bot)
        self.intake = asyncio.Semaphore(INTAKE_CONCURRENCY)

    @commands.hybrid_command(name="prompt")
    @commands.guild_only()
    @app_commands.describe(
        text="What the clip should show",
        image="Optional reference image (PNG, JPEG, WebP or GIF)",
        slot="Which slot of the song this clip is for (1 = the start)",
        duration="Clip length in seconds",
        aspect="Frame shape",
    )
    async def prompt(
        self,
        ctx: commands.Context[Any],
        image: discord.Attachment | None = None,
        *,
        text: str,
        slot: int | None = None,
        duration: float | None = None,
        aspect: Aspect | None = None,
    ) -> None:
        """Prompt a clip for the current project. Attach an image to guide it."""
        await ctx.defer(ephemeral=True)
        await self.bot.acks_first()
        async with self.intake:
            project = await self.project_here(ctx)
            data = None
            if image is not None:
                data = await self.read_attachment(
                    image, limit=self.settings.image_max_bytes, what="image"
                )
            sub = await self.bot.submissions.submit(
                project,
                self.author(ctx.author),
                text,
                image=data,
                slot=None if slot is None else slot - 1,
                duration=duration,
                aspect=aspect,
                channel_id=ctx.channel.id,
            )
            await self._announce(ctx, sub)

    @commands.hybrid_command(name="extend")
    @commands.guild_only()
    @app_commands.describe(
        clip="The clip number to continue from",
        text="What happens next",
        slot="Slot for the new clip (default: the one after)",
    )
    async def extend(
        self, ctx: commands.Context[Any], clip: int, *, text: str, slot: int | None = None
    ) -> None:
        """Continue a clip: its last frame becomes the reference image of a new prompt."""
        await ctx.defer(ephemeral=True)
        await self.bot.acks_first()
        async with self.intake:
            project = await self.project_here(ctx)
            kwargs: dict[str, Any] = {"channel_id": ctx.channel.id}
            if slot is not None:
                kwargs["slot"] = slot - 1
            sub = await self.bot.submissions.extend(
                project, self.author(ctx.author), clip, text, **kwargs
            )
            await self._announce(ctx, sub)

    async def _announce(self, ctx: commands.Context[Any], sub: Submission) -> None:
        """Tell the member (ephemerally, for a slash command). The public status message
        that follows the job is the outbox's: queued with the job, posted exactly once,
        and edited through the channel, so it outlives the interaction."""
        job = sub.job
        self.bot.outbox.wake()
        if ctx.interaction is not None:
            if job.moderation == "pending":
                where = "it waits for a moderator's approval"
            elif sub.position is None:
                where = "generating soon"
            elif sub.position.position == 0:
                where = f"generating now, ETA {format_eta(sub.position.eta_seconds)}"
            else:
                where = (
                    f"position {sub.position.position}, ETA {format_eta(sub.position.eta_seconds)}"
                )
            note = f"\n{sub.note}" if sub.note else ""
            await ctx.send(f"✅ Accepted as job #{job.id} — {where}.{note}", ephemeral=True)
        if job.moderation == "pending":
            from bot.frontend.views import send_for_approval

            await send_for_approval(self.bot, job, ctx.author)

    @commands.hybrid_command(name="queue")
    async def queue(self, ctx: commands.Context[Any]) -> None:
        """Your jobs that are waiting or generating, with their places and ETAs."""
        await ctx.defer(ephemeral=True)  # places are worked out over the whole queue
        rows = await self.bot.submissions.my_jobs(
            ctx.author.id, ctx.guild.id if ctx.guild else None
        )
        if not rows:
            await ctx.send("You have no jobs waiting or generating.", ephemeral=True)
            return
        lines = []
        for job, pos in rows:
            if job.state == "queued" and job.moderation == "pending":
                where = "waiting for a moderator"
            elif job.state == "queued" and pos:
                where = f"position {pos.position}, ETA {format_eta(pos.eta_seconds)}"
            else:
                where = f"generating ({(job.progress or 0) * 100:.0f}%)"
            lines.append(
                f"**#{job.id}** · {clip_label(job.slot)} · {where}\n{quote(job.prompt, 80)}"
            )
        text = fit_lines(lines, more=lambda n: f"… and {n} more job{'s' if n != 1 else ''}")
        await ctx.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @commands.hybrid_command(name="cancel")
    @commands.guild_only()
    @app_commands.describe(job="The job number (see /queue)")
    async def cancel(self, ctx: commands.Context[Any], job: int) -> None:
        """Cancel one of your jobs (moderators: anyone's)."""
        await ctx.defer(ephemeral=True)  # telling the generator is a network call
        done = await self.bot.submissions.cancel(
            job,
            self.author(ctx.author),
            is_moderator=is_moderator(ctx.author, self.settings),
            guild_id=ctx.guild.id if ctx.guild else None,
        )
        await ctx.send(f"🚫 Job #{done.id} canceled.", ephemeral=True)
        await self.bot.publisher.job_changed(done)


async def setup(bot: CrowdcutBot) -> None:
    await bot.add_cog(Prompting(bot))
