"""Who is a moderator, and the one handler that turns errors into replies."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import discord
from discord.ext import commands

from bot.errors import PermissionDenied, UserFacingError
from bot.frontend.limits import fit_content
from bot.settings import Settings

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()


def is_moderator(member: discord.abc.User | None, settings: Settings) -> bool:
    """A moderator has the Manage Server permission or the configured role (name or id)."""
    if not isinstance(member, discord.Member):
        return False
    if member.guild_permissions.manage_guild or member.guild_permissions.administrator:
        return True
    want = settings.moderator_role.strip()
    for role in member.roles:
        if role.name == want or str(role.id) == want:
            return True
    return False


def require_moderator(member: discord.abc.User | None, settings: Settings) -> None:
    """Raise ``PermissionDenied`` unless ``member`` is a moderator. Checked on every call."""
    if not is_moderator(member, settings):
        raise PermissionDenied(
            f"Only moderators can do that (the “{settings.moderator_role}” role or Manage Server)."
        )


async def reply_error(
    target: commands.Context[Any] | discord.Interaction[Any], error: BaseException
) -> None:
    """Send a ``UserFacingError``'s message ephemerally. Anything else is logged with its
    traceback under a short reference, and the member gets a fixed apology naming only
    that reference: no exception text, path or URL ever reaches Discord."""
    if isinstance(error, UserFacingError):
        text = fit_content(f"⚠️ {error.message}")
    else:
        ref = secrets.token_hex(4)
        log.error(
            "command failed (ref %s)", ref, exc_info=(type(error), error, error.__traceback__)
        )
        text = f"⚠️ Something went wrong on our side; the operators have the details (ref {ref})."
    try:
        if isinstance(target, discord.Interaction):
            if target.response.is_done():
                await target.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            else:
                await target.response.send_message(
                    text, ephemeral=True, allowed_mentions=NO_MENTIONS
                )
        else:
            await target.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException:
        log.warning("could not deliver an error reply", exc_info=True)


def unwrap(error: BaseException) -> BaseException:
    """The error a command raised, out of discord.py's wrappers."""
    while isinstance(
        error,
        (
            commands.HybridCommandError,
            commands.CommandInvokeError,
            discord.app_commands.CommandInvokeError,
        ),
    ):
        inner = getattr(error, "original", None)
        if inner is None:
            break
        error = inner
    return error


def friendly_command_error(error: BaseException) -> UserFacingError | None:
    """discord.py's own argument errors, as messages a member understands."""
    if isinstance(error, commands.MissingRequiredArgument):
        return UserFacingError(
            f"You left out `{error.param.name}`. The slash command lists every option."
        )
    if isinstance(error, commands.MissingRequiredAttachment):
        return UserFacingError(f"Attach a file for `{error.param.name}`.")
    if isinstance(error, commands.BadLiteralArgument):
        choices = ", ".join(f"`{c}`" for c in error.literals)
        return UserFacingError(f"`{error.param.name}` must be one of {choices}.")
    if isinstance(error, commands.BadArgument):
        # its text quotes what was typed and discord.py's internals: not shown
        return UserFacingError(
            "That value doesn't fit; the slash command shows what each option takes."
        )
    if isinstance(error, commands.NotOwner):
        return UserFacingError("Only the bot's owner can do that.")
    if isinstance(error, commands.NoPrivateMessage):
        return UserFacingError("Use this command in a server channel.")
    if isinstance(error, commands.CheckFailure):
        return UserFacingError("You may not use this command here.")
    return None
