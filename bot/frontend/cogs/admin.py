"""Admin: /forgetme for members, /audit for moderators, the owner's !sync."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.frontend.checks import NO_MENTIONS
from bot.frontend.cogs.base import CrowdcutCog
from bot.frontend.limits import fit_lines

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)


class ConfirmForget(discord.ui.View):
    """A short-lived confirmation only the member who asked can press."""

    def __init__(self, cog: Admin, member_id: int) -> None:
        super().__init__(timeout=120)
        self.cog = cog
        self.member_id = member_id

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        if interaction.user.id != self.member_id:
            await interaction.response.send_message(
                "⚠️ This button is for the member who asked to be forgotten.", ephemeral=True
            )
            return False
        return True

    @discord.ui.button(label="Yes, forget me", style=discord.ButtonStyle.danger)
    async def confirm(
        self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]
    ) -> None:
        # answer first: the work below can take a while for an active member
        await interaction.response.edit_message(content="🧹 Forgetting you…", view=None)
        self.stop()
        # their posts in the channel come down through the outbox, as durable work
        summary = await self.cog.bot.members.forget(self.member_id)
        self.cog.bot.outbox.wake()
        await interaction.edit_original_response(
            content=(
                f"🧹 Done. Deleted {summary['jobs']} prompt(s), {summary['clips']} clip(s) "
                f"and {summary['votes']} vote(s). "
                + (
                    f"{summary['kept_clips']} clip(s) in an approved video stay, credited "
                    "as anonymous."
                    if summary["kept_clips"]
                    else ""
                )
            ),
            view=None,
        )


class Admin(CrowdcutCog):
    """Forget-me, the audit log, command sync."""

    @commands.hybrid_command(name="forgetme")
    async def forgetme(self, ctx: commands.Context[Any]) -> None:
        """Delete your prompts, images, votes and unused clips from crowdcut."""
        await ctx.send(
            "This deletes your prompts, reference images, votes and every clip of "
            "yours that is not in an approved video (those stay, credited as "
            "anonymous). It cannot be undone.",
            view=ConfirmForget(self, ctx.author.id),
            ephemeral=True,
        )

    @commands.hybrid_command(name="audit")
    @commands.guild_only()
    async def audit(self, ctx: commands.Context[Any]) -> None:
        """The latest moderator actions (moderators)."""
        self.require_moderator(ctx.author)
        assert ctx.guild is not None
        entries = await self.app.store.audit_log(ctx.guild.id, limit=20)
        if not entries:
            await ctx.send("No moderator actions yet.", ephemeral=True)
            return
        names = await self.app.store.member_names(e.actor_id for e in entries if e.actor_id)

        def who(actor_id: int | None) -> str:
            if actor_id is None:
                return "crowdcut"
            member = ctx.guild.get_member(actor_id) if ctx.guild else None
            name = member.display_name if member else names.get(actor_id, str(actor_id))
            return discord.utils.escape_markdown(name)

        lines = [
            f"<t:{int(e.at)}:R> **{e.action}** {e.target or ''} by {who(e.actor_id)}"
            for e in entries
        ]
        text = fit_lines(lines, more=lambda n: f"… and {n} older")
        await ctx.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @commands.command(name="sync", hidden=True)
    @commands.is_owner()
    async def sync(self, ctx: commands.Context[Any], scope: str = "guild") -> None:
        """Sync slash commands: `!sync` (this server, instant) or `!sync global`."""
        if scope == "global" or ctx.guild is None:
            synced = await self.bot.tree.sync()
        else:
            self.bot.tree.copy_global_to(guild=ctx.guild)
            synced = await self.bot.tree.sync(guild=ctx.guild)
        await ctx.send(f"Synced {len(synced)} commands ({scope}).")


async def setup(bot: CrowdcutBot) -> None:
    await bot.add_cog(Admin(bot))
