"""Credits: the title card, the closing roll, and the older one-page credits card.

The roll (:func:`render_credits_roll`) is one tall PNG scrolled by ffmpeg: every slot with
its time, author (or "anonymous"), generator and model and the clip it extends, the song's
credit and the moderators who approved, at a twentieth of the frame height so it reads on a
phone. The card (:func:`render_credits_card`) fits everything on one frame instead.

Drawn with Pillow and its bundled default font (``ImageFont.load_default(size=...)``), so
it works on a machine with no system fonts. The layout shrinks the text and adds columns as
the number of slots grows, and truncates long prompts to the width they get.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from bot.media.assembly import CutSlot

log = logging.getLogger(__name__)

BACKGROUND = (14, 14, 22)
TITLE_COLOUR = (255, 255, 255)
NAME_COLOUR = (255, 196, 84)
TEXT_COLOUR = (205, 205, 215)
ELLIPSIS = "..."
_MIN_FONT = 10


def _clean(text: str) -> str:
    """One line of text: control characters and runs of whitespace become one space."""
    text = re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f]", " ", text)).strip()
    # dashes Pillow's bundled font has no glyph for
    return text.replace("\u2014", "-").replace("\u2013", "-")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def truncate(draw: ImageDraw.ImageDraw, text: str, font: object, max_width: float) -> str:
    """``text`` cut at a word (or character) boundary with ``...`` so it fits ``max_width``."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if draw.textlength(text[:mid].rstrip() + ELLIPSIS, font=font) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    space = cut.rfind(" ")
    if space > lo * 0.6:  # prefer a word boundary when it costs little
        cut = cut[:space]
    cut = cut.rstrip(" ,.;:-")
    return cut + ELLIPSIS if cut else ""


def _layout(n: int, width: int, avail_h: int, margin: int, start_size: int) -> tuple[int, int]:
    """Pick (font size, columns) so ``n`` lines fit; the biggest font wins."""
    for size in range(start_size, _MIN_FONT - 1, -1):
        line_h = int(size * 1.45)
        rows = max(1, avail_h // line_h)
        cols = math.ceil(n / rows) if n else 1
        col_w = (width - 2 * margin - (cols - 1) * margin) / cols
        if col_w >= size * 14:
            return size, cols
    size = _MIN_FONT
    cols = max(1, int((width - margin) // (size * 14 + margin)))
    return size, cols


def render_credits_card(
    dest: Path, title: str, lines: list[tuple[str, str]], width: int, height: int
) -> Path:
    """Draw the credits card to ``dest`` (PNG, ``width``x``height``) and return ``dest``.

    ``lines`` are ``(credit, text)`` pairs, e.g. ``("3. alice", "a cat surfing a wave")``:
    the credit is drawn in the accent colour, the text after it, cut with ``...`` to fit.
    Lines that cannot fit even at the smallest size are summed up as "... and N more".
    Synchronous (Pillow): run it in a thread from async code.
    """
    dest = Path(dest)
    margin = max(8, width // 24)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)

    title_font = _font(max(12, height // 12))
    title_text = truncate(draw, _clean(title) or "crowdcut", title_font, width - 2 * margin)
    top = margin
    draw.text((width / 2, top), title_text, font=title_font, fill=TITLE_COLOUR, anchor="mt")
    top += int(title_font.size * 1.6) if hasattr(title_font, "size") else 40

    entries = [(_clean(credit), _clean(text)) for credit, text in lines]
    avail_h = height - top - margin
    size, cols = _layout(len(entries), width, avail_h, margin, max(_MIN_FONT, height // 26))
    line_h = int(size * 1.45)
    rows = max(1, avail_h // line_h)
    capacity = rows * cols
    if len(entries) > capacity:
        hidden = len(entries) - capacity + 1
        entries = entries[: capacity - 1] + [("", f"... and {hidden} more")]
    # centre a short list vertically in the space left
    used_rows = min(rows, math.ceil(len(entries) / cols)) if entries else 0
    top += max(0, (avail_h - used_rows * line_h) // 2)

    font = _font(size)
    col_w = (width - 2 * margin - (cols - 1) * margin) / cols
    for i, (credit, text) in enumerate(entries):
        col, row = divmod(i, used_rows) if used_rows else (0, 0)
        x = margin + col * (col_w + margin)
        y = top + row * line_h
        prefix = f"{credit}  " if credit else ""
        prefix = truncate(draw, prefix, font, col_w * 0.5) if prefix else ""
        if prefix:
            draw.text((x, y), prefix, font=font, fill=NAME_COLOUR)
        used = draw.textlength(prefix, font=font) if prefix else 0
        draw.text(
            (x + used, y), truncate(draw, text, font, col_w - used), font=font, fill=TEXT_COLOUR
        )

    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.part.png")
    try:
        image.save(tmp, format="PNG")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug(
        "credits card %dx%d: %d lines, font %d, %d columns", width, height, len(lines), size, cols
    )
    return dest


# ---------------------------------------------------------------------- the music video's
# title card and closing roll


@dataclass(frozen=True)
class Credits:
    """What the title card, the roll and the manifest say beyond the slots themselves."""

    song_credit: str = ""  # e.g. "“Night Drive” by Example Band (CC BY 4.0)"
    moderators: tuple[str, ...] = ()  # who approved the cut


def _clock(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


def lineage_text(slot: CutSlot) -> str:
    """How a slot's clip came from another: "extends clip #12", or ""."""
    if slot.parent_clip_id is None:
        return ""
    verb = "continues" if slot.lineage == "chain" else "extends"
    return f"{verb} clip #{slot.parent_clip_id}"


def slot_credit(slot: CutSlot) -> dict[str, object]:
    """The machine-readable credit of one slot (the manifest's, and the roll's source)."""
    return {
        "slot": slot.index + 1,
        "start": round(slot.start, 3),
        "end": round(slot.start + slot.duration, 3),
        "clip_id": slot.clip_id,
        "author": slot.author or "anonymous",
        "generator": slot.backend,
        "model": slot.model,
        "parent_clip_id": slot.parent_clip_id,
        "lineage": (slot.lineage or "extend") if slot.parent_clip_id is not None else None,
    }


def roll_lines(title: str, slots: list[CutSlot], credits: Credits) -> list[tuple[str, str, str]]:
    """The closing roll as ``(accent, main, detail)`` lines, top to bottom.

    A line with an empty accent and main is a gap; the first line is the title.
    """
    lines: list[tuple[str, str, str]] = [("", _clean(title) or "crowdcut", "")]
    if credits.song_credit:
        lines.append(("music", _clean(credits.song_credit), ""))
    lines.append(("", "", ""))
    for slot in sorted(slots, key=lambda s: s.index):
        made = " · ".join(x for x in (slot.backend, slot.model) if x)
        detail = " · ".join(x for x in (made, lineage_text(slot)) if x)
        accent = f"#{slot.index + 1}  {_clock(slot.start)}"
        lines.append((accent, _clean(slot.author or "anonymous"), _clean(detail)))
    return lines


#: seconds of the end card (who approved; "made with crowdcut") after the roll
END_CARD_SECONDS = 2.0


def end_card_lines(credits: Credits) -> list[tuple[str, str, str]]:
    """The end card after the roll: the moderators who approved, then crowdcut.

    A card of its own, always the same length, so approving (which adds the moderators'
    names) renders only this short still and never changes the video's length.
    """
    lines: list[tuple[str, str, str]] = [("", "", "")]
    if credits.moderators:
        lines += [("", "approved by", ""),
                  ("", ", ".join(_clean(m) for m in credits.moderators), ""),
                  ("", "", "")]  # fmt: skip
    lines.append(("", "made with crowdcut", ""))
    return lines


def roll_digest(lines: list[tuple[str, str, str]], width: int, height: int) -> str:
    """A hash of what the roll shows (its cache key)."""
    blob = json.dumps([lines, width, height, ROLL_VERSION], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


#: bump when the roll's drawing changes
ROLL_VERSION = 1
DETAIL_COLOUR = (150, 150, 165)


def roll_font_size(height: int) -> int:
    """Text size of the roll: a twentieth of the frame height, so a slot's line reads on a
    phone held sideways (36 px at 720p)."""
    return max(_MIN_FONT, height // 20)


def _roll_content_height(n_lines: int, height: int) -> int:
    size = roll_font_size(height)
    return int(int(size * 1.6) * 1.8) + int(size * 1.5) * (n_lines - 1)


def roll_height(n_lines: int, width: int, height: int) -> int:
    """Height of the roll image for ``n_lines`` lines (at least ``height``). Pure."""
    margin = max(8, width // 16)
    return max(height, _roll_content_height(n_lines, height) + 2 * margin)


def roll_seconds(n_lines: int, width: int, height: int) -> float:
    """How long the roll lasts to be read: a still page for 4 s, or a scroll of a screen
    every 5 s with 1.5 s held at the top and the bottom."""
    travel = roll_height(n_lines, width, height) - height
    return 4.0 if travel <= 0 else 3.0 + travel / (height / 5)


def render_credits_roll(
    dest: Path, lines: list[tuple[str, str, str]], width: int, height: int
) -> tuple[Path, int]:
    """Draw the roll as one tall PNG ``width`` wide; return ``(dest, its height)``.

    At least ``height`` tall (a short roll is centred and does not scroll). Synchronous.
    """
    size = roll_font_size(height)
    font, title_font = _font(size), _font(int(size * 1.6))
    line_h = int(size * 1.5)
    margin = max(8, width // 16)
    content = _roll_content_height(len(lines), height)
    total = roll_height(len(lines), width, height)
    image = Image.new("RGB", (width, total), BACKGROUND)
    draw = ImageDraw.Draw(image)
    y = margin + (total - 2 * margin - content) // 2
    usable = width - 2 * margin
    accent_w, main_w = int(usable * 0.2), int(usable * 0.34)
    title = truncate(draw, lines[0][1], title_font, usable)
    draw.text((width / 2, y), title, font=title_font, fill=TITLE_COLOUR, anchor="mt")
    y += int(title_font.size * 1.8)  # type: ignore[union-attr]  # as _roll_content_height
    for accent, main, detail in lines[1:]:
        x = margin
        if accent:
            draw.text((x, y), truncate(draw, accent, font, accent_w - size // 2), font=font,
                      fill=NAME_COLOUR)  # fmt: skip
        if main and not accent:  # a centred line ("made with crowdcut")
            draw.text((width / 2, y), truncate(draw, main, font, usable), font=font,
                      fill=TEXT_COLOUR, anchor="mt")  # fmt: skip
        elif main:
            room = main_w if detail else usable - accent_w
            draw.text((x + accent_w, y), truncate(draw, main, font, room - size // 2),
                      font=font, fill=TITLE_COLOUR)  # fmt: skip
        if detail:
            draw.text((x + accent_w + main_w, y),
                      truncate(draw, detail, font, usable - accent_w - main_w), font=font,
                      fill=DETAIL_COLOUR)  # fmt: skip
        y += line_h
    _save(image, dest)
    return dest, total


def render_title_card(dest: Path, title: str, subtitle: str, width: int, height: int) -> Path:
    """Draw the title card (RGBA PNG, transparent but for a dark band holding the title and
    ``subtitle``) to overlay on the opening of the video. Synchronous."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    title_font = _font(max(_MIN_FONT, height // 9))
    sub_font = _font(max(_MIN_FONT, height // 22))
    margin = max(8, width // 16)
    band_h = int(title_font.size * 1.6 + (sub_font.size * 1.8 if subtitle else 0))  # type: ignore[union-attr]
    top = (height - band_h) // 2
    draw.rectangle((0, top, width, top + band_h), fill=(*BACKGROUND, 190))
    draw.text((width / 2, top + title_font.size * 0.3),  # type: ignore[union-attr]
              truncate(draw, _clean(title) or "crowdcut", title_font, width - 2 * margin),
              font=title_font, fill=(*TITLE_COLOUR, 255), anchor="mt")  # fmt: skip
    if subtitle:
        draw.text((width / 2, top + title_font.size * 1.5),  # type: ignore[union-attr]
                  truncate(draw, _clean(subtitle), sub_font, width - 2 * margin),
                  font=sub_font, fill=(*NAME_COLOUR, 255), anchor="mt")  # fmt: skip
    _save(image, dest)
    return dest


def _save(image: Image.Image, dest: Path) -> None:
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.part.png")
    try:
        image.save(tmp, format="PNG")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
