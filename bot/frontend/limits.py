"""Discord's limits on a message, and fitting text to them.

Discord refuses a whole message (400, ``BASE_TYPE_MAX_LENGTH``) when one part is over
its limit, and the member then sees nothing at all. So every text that carries what a
member typed or a list that grows (prompts, the queue, the audit log, leaderboards,
usage, a project's slots, credits) goes through here before it is sent: too long is cut
with "…", and a list keeps the lines that fit and counts the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import discord

log = logging.getLogger(__name__)

#: https://discord.com/developers/docs/resources/message#create-message and
#: https://discord.com/developers/docs/resources/message#embed-object-embed-limits
CONTENT = 2000
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
FIELD_NAME = 256
FIELD_VALUE = 1024
FIELDS = 25
FOOTER = 2048
AUTHOR_NAME = 256
EMBED_TOTAL = 6000

ELLIPSIS = "…"


def shorten(text: str, limit: int) -> str:
    """``text`` when it fits in ``limit`` characters, else its start and "…"."""
    if len(text) <= limit:
        return text
    # a backslash left at the end (half of a markdown escape) would escape the "…"
    return text[: max(0, limit - 1)].rstrip("\\") + ELLIPSIS


def fit_content(text: str) -> str:
    """A message's content, within 2,000 characters."""
    return shorten(text, CONTENT)


def _and_more(n: int) -> str:
    return f"… and {n} more"


def fit_lines(
    lines: Iterable[str], limit: int = CONTENT, *, more: Callable[[int], str] = _and_more
) -> str:
    """The lines joined by newlines within ``limit``: all of them when they fit, else the
    first ones that fit and ``more(n)`` for the ``n`` left out. A line too long on its
    own is shortened."""
    lines = list(lines)
    whole = "\n".join(lines)
    if len(whole) <= limit:
        return whole
    room = limit - len(more(len(lines))) - 1
    shown: list[str] = []
    used = 0
    for line in lines:
        line = shorten(line, max(1, room))
        add = len(line) + (1 if shown else 0)
        if used + add > room:
            break
        shown.append(line)
        used += add
    left = len(lines) - len(shown)
    return "\n".join([*shown, more(left)] if left else shown)


def fit_embed(embed: discord.Embed) -> discord.Embed:
    """Fit an embed to every limit, in place: each part shortened, at most 25 fields,
    and 6,000 characters in all (the description gives way first, then the last fields)."""
    if embed.title:
        embed.title = shorten(embed.title, EMBED_TITLE)
    if embed.description:
        embed.description = shorten(embed.description, EMBED_DESCRIPTION)
    if embed.author and embed.author.name:
        embed.set_author(
            name=shorten(embed.author.name, AUTHOR_NAME),
            url=embed.author.url,
            icon_url=embed.author.icon_url,
        )
    if embed.footer and embed.footer.text:
        embed.set_footer(text=shorten(embed.footer.text, FOOTER), icon_url=embed.footer.icon_url)
    while len(embed.fields) > FIELDS:
        embed.remove_field(len(embed.fields) - 1)
    for i, f in enumerate(embed.fields):
        embed.set_field_at(
            i,
            name=shorten(f.name or "\u200b", FIELD_NAME),
            value=shorten(f.value or "\u200b", FIELD_VALUE),
            inline=bool(f.inline),
        )
    excess = len(embed) - EMBED_TOTAL
    if excess > 0 and embed.description:
        embed.description = shorten(embed.description, max(1, len(embed.description) - excess))
    while len(embed) > EMBED_TOTAL and embed.fields:
        embed.remove_field(len(embed.fields) - 1)
    return embed
