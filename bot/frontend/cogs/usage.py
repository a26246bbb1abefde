"""Spend (moderators): /usage — what generation cost, per project, per member, per backend."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import UserFacingError
from bot.frontend.checks import NO_MENTIONS
from bot.frontend.cogs.base import CrowdcutCog
from bot.frontend.limits import fit_embed
from bot.services.usage import SpendLine, UsageReport, UsageService

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)

#: rows per embed field; the rest are summed into one "and N more" line
MAX_ROWS = 12
FIELD_LIMIT = 1024


class Usage(CrowdcutCog):
    """The spend report for moderators."""

    def __init__(self, bot: CrowdcutBot) -> None:
        super().__init__(bot)
        self.spend = UsageService(bot.app)

    @commands.hybrid_command(name="usage")
    @commands.guild_only()
    @app_commands.describe(
        days="Only the last N days (default: since the start)",
        server="Every project of this server, not just the current one",
    )
    async def usage(
        self, ctx: commands.Context[Any], days: int | None = None, server: bool = False
    ) -> None:
        """What generation has cost: per project, per member and per backend (moderators)."""
        self.require_moderator(ctx.author)
        assert ctx.guild is not None
        if days is not None and days < 1:
            raise UserFacingError("`days` must be at least 1.")
        await ctx.defer(ephemeral=True)
        project = None if server else await self.project_here(ctx, required=False)
        report = await self.spend.report(ctx.guild.id, project, days=days)
        await ctx.send(
            embed=usage_embed(report, days=days), ephemeral=True, allowed_mentions=NO_MENTIONS
        )


def usage_embed(report: UsageReport, *, days: int | None = None) -> discord.Embed:
    """The report as one embed: the budget first, then the three breakdowns."""
    money = report.money
    where = report.project.title if report.project else "this server"
    embed = discord.Embed(title=f"💸 Spend — {discord.utils.escape_markdown(where)}")
    lines = []
    if report.project is not None:
        spent = f"**This project:** {money(report.project_spent)}"
        if report.project_budget > 0:
            share = report.project_spent / report.project_budget * 100
            spent += f" of its {money(report.project_budget)} budget ({share:.0f}%)"
        else:
            spent += " (no budget set)"
        lines.append(spent)
        if report.waiting_jobs:
            lines.append(
                f"About {money(report.project_waiting)} more for {report.waiting_jobs} "
                f"prompt{'s' if report.waiting_jobs != 1 else ''} not charged yet."
            )
    if report.member_daily_budget > 0:
        lines.append(
            f"Each member may spend {money(report.member_daily_budget)} per day (UTC); "
            "refused content does not count."
        )
    if days is not None:
        lines.append(f"Breakdowns cover the last {days} day{'s' if days != 1 else ''}.")
    if not (report.projects or report.members or report.backends):
        lines.append("Nothing has been spent yet.")
    embed.description = "\n".join(lines)

    def rows(items: list[SpendLine], render: Any) -> str:
        shown = [render(item) for item in items[:MAX_ROWS]]
        rest = items[MAX_ROWS:]
        if rest:
            shown.append(f"… and {len(rest)} more: {money(sum(i.amount for i in rest))}")
        text = "\n".join(shown)
        return text if len(text) <= FIELD_LIMIT else text[: FIELD_LIMIT - 1] + "…"

    def count(item: SpendLine) -> str:
        return f"{item.generations} generation{'s' if item.generations != 1 else ''}"

    def project_row(item: SpendLine) -> str:
        here = report.project is not None and item.key == report.project.id
        label = discord.utils.escape_markdown(item.label)
        return f"{'**' + label + '**' if here else label} — {money(item.amount)} · {count(item)}"

    def member_row(item: SpendLine) -> str:
        row = f"{discord.utils.escape_markdown(item.label)} — {money(item.amount)} · {count(item)}"
        if abs(item.refused) >= 0.005:
            row += f" · {money(item.refused)} on refused content"
        return row

    def backend_row(item: SpendLine) -> str:
        row = f"{item.label} — {money(item.amount)} · {count(item)}"
        if item.seconds:
            row += f" · {item.seconds:g} s of video"
        return row

    if report.projects:
        embed.add_field(name="Per project", value=rows(report.projects, project_row), inline=False)
    if report.members:
        embed.add_field(name="Per member", value=rows(report.members, member_row), inline=False)
    if report.backends:
        embed.add_field(name="Per backend", value=rows(report.backends, backend_row), inline=False)
    embed.set_footer(
        text=f"Amounts in {report.currency} at the configured PRICES; refunds for failures "
        "the provider does not bill are taken off."
    )
    return fit_embed(embed)


async def setup(bot: CrowdcutBot) -> None:
    await bot.add_cog(Usage(bot))
