"""Voting: reactions on clip posts become votes; /clip and /leaderboard show them."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.frontend.checks import NO_MENTIONS
from bot.frontend.cogs.base import CrowdcutCog
from bot.frontend.limits import fit_embed
from bot.frontend.render import clip_info_embed
from bot.services.voting import PostDeleted, ReactionClear, ReactionEvent, VoteEvent

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)


class Voting(CrowdcutCog):
    """Votes from reactions, clip info and the leaderboard."""

    def __init__(self, bot: CrowdcutBot) -> None:
        super().__init__(bot)
        # Reaction events are applied by one consumer, in the order they arrived, in
        # batches: discord.py runs each event handler as its own task, so handlers that
        # wrote on their own could overtake each other (an add after its remove). Each
        # event is stamped when it is received: that time decides whether it was cast
        # before the project closed, however long it waits here.
        self._events: asyncio.Queue[VoteEvent] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None

    async def cog_load(self) -> None:
        self._consumer = asyncio.create_task(self._consume(), name="crowdcut-votes")

    async def cog_unload(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()

    # raw events: they arrive for messages not in the cache too
    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self._enqueue(payload, added=True)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        self._enqueue(payload, added=False)

    @commands.Cog.listener()
    async def on_raw_reaction_clear(self, payload: discord.RawReactionClearEvent) -> None:
        self._events.put_nowait(ReactionClear(payload.message_id, None, time.time()))

    @commands.Cog.listener()
    async def on_raw_reaction_clear_emoji(
        self, payload: discord.RawReactionClearEmojiEvent
    ) -> None:
        self._events.put_nowait(ReactionClear(payload.message_id, str(payload.emoji), time.time()))

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        self._events.put_nowait(PostDeleted(payload.message_id, time.time()))

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        at = time.time()
        for message_id in sorted(payload.message_ids):
            self._events.put_nowait(PostDeleted(message_id, at))

    def _enqueue(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        # synchronous on purpose: the queue keeps the gateway's order
        if self.bot.user is not None and payload.user_id == self.bot.user.id:
            return
        if payload.member is not None:
            is_bot = payload.member.bot
        else:
            user = self.bot.get_user(payload.user_id)
            is_bot = bool(user and user.bot)
        self._events.put_nowait(
            ReactionEvent(
                payload.message_id, payload.user_id, str(payload.emoji), added, is_bot, time.time()
            )
        )

    async def _consume(self) -> None:
        while True:
            batch = [await self._events.get()]
            while not self._events.empty() and len(batch) < 1000:
                batch.append(self._events.get_nowait())
            try:
                await self.bot.voting.on_reactions(batch)
            except Exception:
                log.exception("counting %d vote events failed", len(batch))

    async def drain(self) -> None:
        """Wait until every reaction received so far is counted."""
        while not self._events.empty():
            await asyncio.sleep(0.01)

    @commands.hybrid_command(name="clip")
    @commands.guild_only()
    @app_commands.describe(clip="The clip number")
    async def clip_info(self, ctx: commands.Context[Any], clip: int) -> None:
        """Show a clip's prompt, author, slot, backend, seed and votes."""
        assert ctx.guild is not None
        card = await self.bot.voting.clip_card(clip, ctx.guild.id)
        c = card.clip
        jump = None
        if c.message_id and c.channel_id and ctx.guild and c.post_deleted_at is None:
            jump = f"https://discord.com/channels/{ctx.guild.id}/{c.channel_id}/{c.message_id}"
        rules = self.app.rules
        await ctx.send(
            embed=clip_info_embed(
                c,
                card.job,
                card.author,
                card.up,
                card.down,
                jump,
                up_emoji=rules.up_emoji,
                down_emoji=rules.down_emoji,
            ),
            ephemeral=True,
            allowed_mentions=NO_MENTIONS,
        )

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
            lines.append(
                f"`{i:>2}.` clip **#{t.clip_id}** · score {t.score:+d} "
                f"({self.app.rules.up_emoji} {t.up} · {self.app.rules.down_emoji} "
                f"{t.down}) · {discord.utils.escape_markdown(who)}"
            )
        title = f"🏆 {discord.utils.escape_markdown(project.title)} — {where}"
        embed = fit_embed(discord.Embed(title=title, description="\n".join(lines)))
        await ctx.send(embed=embed, allowed_mentions=NO_MENTIONS)


async def setup(bot: CrowdcutBot) -> None:
    await bot.add_cog(Voting(bot))
