"""Persistent buttons: prompt pre-moderation and cut approval.

Custom ids carry their state (``crowdcut:<feature>:<action>:<id>``) and are parsed
back by ``DynamicItem``, so the buttons keep working after a restart with no view
registry in memory. Every press re-checks, on our side, that the presser is a
moderator.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import InvalidState, UserFacingError
from bot.frontend.checks import NO_MENTIONS, reply_error, require_moderator
from bot.frontend.limits import CONTENT, fit_content, shorten
from bot.frontend.render import quote
from bot.services.renders import DEFAULT_UPLOAD_LIMIT, FINAL, PREVIEW
from bot.services.submissions import Author
from storage.models import OPEN, Cut, Job, Project

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)


def _author(user: discord.abc.User) -> Author:
    return Author(user.id, user.display_name, user.bot)


class PromptDecision(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"crowdcut:prompt:(?P<action>approve|reject):(?P<job>\d+)",
):
    """Approve / Reject on a prompt waiting in the moderators' channel."""

    def __init__(self, action: str, job_id: int) -> None:
        approve = action == "approve"
        super().__init__(
            discord.ui.Button(
                label="Approve" if approve else "Reject",
                style=discord.ButtonStyle.success if approve else discord.ButtonStyle.danger,
                custom_id=f"crowdcut:prompt:{action}:{job_id}",
            )
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> PromptDecision:
        return cls(match["action"], int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        bot: CrowdcutBot = interaction.client  # type: ignore[assignment]
        try:
            require_moderator(interaction.user, bot.settings)
            job = await bot.submissions.moderate(
                self.job_id,
                _author(interaction.user),
                approve=self.action == "approve",
                guild_id=interaction.guild_id,
            )
        except UserFacingError as e:
            await reply_error(interaction, e)
            return
        verdict = "✅ approved" if self.action == "approve" else "❌ rejected"
        content = (interaction.message.content if interaction.message else "") or ""
        await interaction.response.edit_message(
            content=fit_verdict(content, f"**{verdict} by {interaction.user.display_name}**"),
            view=None,
            allowed_mentions=NO_MENTIONS,
        )
        await bot.publisher.job_changed(job)


class CutDecision(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"crowdcut:cut:(?P<action>approve|reject):(?P<cut>\d+)",
):
    """Approve / Reject under a cut preview."""

    def __init__(self, action: str, cut_id: int) -> None:
        approve = action == "approve"
        super().__init__(
            discord.ui.Button(
                label="Approve this cut" if approve else "Not yet",
                style=discord.ButtonStyle.success if approve else discord.ButtonStyle.secondary,
                custom_id=f"crowdcut:cut:{action}:{cut_id}",
            )
        )
        self.action = action
        self.cut_id = cut_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> CutDecision:
        return cls(match["action"], int(match["cut"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        bot: CrowdcutBot = interaction.client  # type: ignore[assignment]
        try:
            require_moderator(interaction.user, bot.settings)
            project, cut = await bot.cuts.pending_decision(self.cut_id, interaction.guild_id)
        except UserFacingError as e:
            await reply_error(interaction, e)
            return
        if self.action == "reject":
            await bot.cuts.reject(project, cut, by=interaction.user.id)
            await interaction.response.edit_message(
                content=fit_verdict(
                    interaction.message.content if interaction.message else "",
                    f"**Not approved — {interaction.user.display_name} wants changes.**",
                ),
                view=None,
                allowed_mentions=NO_MENTIONS,
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            text = await approve_pressed(bot, interaction, project, cut)
        except UserFacingError as e:
            await reply_error(interaction, e)
            return
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def approve_pressed(
    bot: CrowdcutBot, interaction: discord.Interaction[Any], project: Project, cut: Cut
) -> str:
    """Approve the cut under the button if it is still the project's current one: voting
    closes and its final render is queued (two presses, one render). A cut that changed
    since (a vote, a pin, an exclusion, a forget-me) is never published: a preview of the
    current one is queued instead."""
    renders = bot.renders
    guild = interaction.guild
    limit = guild.filesize_limit if guild else DEFAULT_UPLOAD_LIMIT
    channel_id = interaction.channel_id
    if project.state == OPEN:
        await bot.reconcile_votes(project.id)  # votes cast while the bot was away count
    if not await renders.is_current(project, cut.identity):
        await renders.request(project, PREVIEW, by=interaction.user.id, channel_id=channel_id,
                              upload_limit=limit)  # fmt: skip
        return (
            f"⚠️ The cut changed since cut #{cut.id} was previewed (a vote, a pin, an "
            "exclusion or a member who left), so it was not approved. A preview of the "
            "current cut is on its way; approve that one."
        )
    if project.state == OPEN:
        with contextlib.suppress(InvalidState):  # another moderator closed it just now
            project = await bot.projects.close(project.id, by=interaction.user.id)
    render, new = await renders.request(
        project, FINAL, by=interaction.user.id, channel_id=channel_id, upload_limit=limit,
        identity=cut.identity, by_name=interaction.user.display_name,
    )  # fmt: skip
    if interaction.message is not None:
        with contextlib.suppress(discord.HTTPException):
            await interaction.message.edit(view=None)
    if not new:
        return f"Cut #{cut.id} is already approved; its final video is on its way."
    return f"✅ Cut #{cut.id} approved: voting is closed and the final video is being rendered."


def fit_verdict(content: str, verdict: str) -> str:
    """A card's text with the decision under it; the card gives way, never the verdict."""
    if not content:
        return fit_content(verdict)
    return f"{shorten(content, CONTENT - len(verdict) - 1)}\n{verdict}"


def dynamic_items() -> list[type[discord.ui.DynamicItem[Any]]]:
    return [PromptDecision, CutDecision]


def cut_decision_view(cut_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CutDecision("approve", cut_id))
    view.add_item(CutDecision("reject", cut_id))
    return view


async def send_for_approval(bot: CrowdcutBot, job: Job, author: discord.abc.User) -> None:
    """Post a waiting prompt in the moderators' channel with Approve / Reject."""
    project = await bot.app.store.get_project(job.project_id)
    channel = _moderation_channel(bot, project.guild_id) if project else None
    if channel is None:
        log.warning(
            "PREMODERATION is on but channel %r was not found; job %s waits",
            bot.settings.moderation_channel,
            job.id,
        )
        return
    view = discord.ui.View(timeout=None)
    view.add_item(PromptDecision("approve", job.id))
    view.add_item(PromptDecision("reject", job.id))
    files = []
    if job.image_key:
        files.append(discord.File(bot.app.media.path(job.image_key), filename="reference.png"))
    msg = await channel.send(
        fit_content(
            f"🛡️ Prompt **#{job.id}** from {discord.utils.escape_markdown(author.display_name)} "
            f"waits for approval:\n{quote(job.prompt, 1500)}"
        ),
        view=view,
        files=files,
        allowed_mentions=NO_MENTIONS,
    )
    await bot.app.store.set_moderation(job.id, "pending", message_id=msg.id)


def _moderation_channel(bot: CrowdcutBot, guild_id: int) -> discord.TextChannel | None:
    """The moderators' channel of the project's own server, never another server's."""
    want = bot.settings.moderation_channel.strip().lstrip("#")
    guild = bot.get_guild(guild_id)
    for ch in guild.text_channels if guild else []:
        if ch.name == want or str(ch.id) == want:
            return ch
    return None
