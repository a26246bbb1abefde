"""Voting: reactions on clip posts become votes; /clip and /leaderboard show them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import NotFound
from bot.frontend.checks import NO_MENTIONS
from bot.frontend.cogs.base import CrowdcutCog
from bot.frontend.render import clip_info_embed

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)


class Voting(CrowdcutCog):
    """Votes from reactions, clip info and the leaderboard."""

    # raw events: they arrive for messages not in the cache too
    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=True)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=False)

    async def _reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        if self.bot.user is not None and payload.user_id == self.bot.user.id:
            return
        is_bot = False
        if payload.member is not None:
            is_bot = payload.member.bot
        else:
            user = self.bot.get_user(payload.user_id)
            is_bot = bool(user and user.bot)
        try:
            await self.bot.voting.on_reaction(
                message_id=payload.message_id, user_id=payload.user_id,
                emoji=str(payload.emoji), added=added, user_is_bot=is_bot)
        except Exception:
            log.exception("counting a reaction on message %s failed", payload.message_id)

    @commands.hybrid_command(name="clip")
    @app_commands.describe(clip="The clip number")
    async def clip_info(self, ctx: commands.Context[Any], clip: int) -> None:
        """Show a clip's prompt, author, slot, backend, seed and votes."""
        c = await self.app.store.get_clip(clip)
        if c is None:
            raise NotFound(f"There is no clip #{clip}.")
        job = await self.app.store.get_job(c.job_id)
        names = await self.app.store.member_names([c.member_id])
        author = "anonymous" if c.anonymous else names.get(c.member_id, "someone")
        up, down = (await self.app.store.vote_tallies(c.project_id)).get(c.id, (0, 0))
        jump = None
        if c.message_id and c.channel_id and ctx.guild:
            jump = f"https://discord.com/channels/{ctx.guild.id}/{c.channel_id}/{c.message_id}"
        await ctx.send(embed=clip_info_embed(c, job, author, up, down, jump), ephemeral=True,
                       allowed_mentions=NO_MENTIONS)

    @commands.hybrid_command(name="leaderboard")
    @commands.guild_only()
    @app_commands.describe(slot="Only this slot (1 = the start)")
    async def leaderboard(self, ctx: commands.Context[Any], slot: int | None = None) -> None:
        """The best clips so far, overall or in one slot."""
        project = await self.project_here(ctx)
        assert project is not None
        overall, per_slot = await self.bot.cuts.leaderboard(project)
        ranked = overall if slot is None else per_slot.get(slot - 1, [])
        where = "overall" if slot is None else f"slot {slot}"
        if not ranked:
            await ctx.send(f"No clips {where} yet.", ephemeral=True)
            return
        clips = {c.id: c for c in await self.app.store.project_clips(project.id)}
        names = await self.app.store.member_names(c.member_id for c in clips.values())
        lines = []
        for i, t in enumerate(ranked[:15], 1):
            c = clips[t.clip_id]
            who = "anonymous" if c.anonymous else names.get(c.member_id, "someone")
            lines.append(f"`{i:>2}.` clip **#{t.clip_id}** · score {t.score:+d} "
                         f"(👍 {t.up} · 👎 {t.down}) · {discord.utils.escape_markdown(who)}")
        embed = discord.Embed(title=f"🏆 {project.title} — {where}", description="\n".join(lines))
        await ctx.send(embed=embed, allowed_mentions=NO_MENTIONS)


async def setup(bot: CrowdcutBot) -> None:
    await bot.add_cog(Voting(bot))
