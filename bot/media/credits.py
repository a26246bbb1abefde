"""The closing credits card: title, then who made each slot and with what prompt.

Drawn with Pillow and its bundled default font (``ImageFont.load_default(size=...)``), so
it works on a machine with no system fonts. The layout shrinks the text and adds columns as
the number of slots grows, and truncates long prompts to the width they get.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

BACKGROUND = (14, 14, 22)
TITLE_COLOUR = (255, 255, 255)
NAME_COLOUR = (255, 196, 84)
TEXT_COLOUR = (205, 205, 215)
ELLIPSIS = "..."
_MIN_FONT = 10


def _clean(text: str) -> str:
    """One line of text: control characters and runs of whitespace become one space."""
    return re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f]", " ", text)).strip()


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
