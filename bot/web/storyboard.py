"""The storyboard of an approved cut whose render did not keep one in the media store.

Renders record ``storyboard_key`` on the cut when they keep the storyboard; for older
cuts the page draws one in memory (never on disk: ``crowdcut web`` writes nothing) from
the middle frame of each slot's clip, and keeps the last few.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections import OrderedDict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

CELL = (320, 180)
LABEL = 28
GAP = 6
COLUMNS = 4


def _draw(cells: list[tuple[Path | None, str]]) -> bytes:
    from bot.media.storyboard import frame_at  # PyAV: imported when a board is drawn

    cols = max(1, min(COLUMNS, len(cells)))
    rows = math.ceil(len(cells) / cols)
    w, hgt = CELL
    sheet = Image.new(
        "RGB", (GAP + cols * (w + GAP), GAP + rows * (hgt + LABEL + GAP)), (20, 20, 28)
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=15)
    frames: dict[Path, Image.Image | None] = {}
    for i, (path, label) in enumerate(cells):
        r, c = divmod(i, cols)
        x, y = GAP + c * (w + GAP), GAP + r * (hgt + LABEL + GAP)
        cell = Image.new("RGB", CELL, (60, 60, 70))
        if path is not None:
            if path not in frames:
                frames[path] = frame_at(path) if path.is_file() else None
            image = frames[path]
            if image is not None:
                image = image.convert("RGB")
                image.thumbnail(CELL)
                cell.paste(image, ((w - image.width) // 2, (hgt - image.height) // 2))
        sheet.paste(cell, (x, y))
        draw.text((x + 4, y + hgt + 6), label[:40], font=font, fill=(235, 235, 240))
    out = io.BytesIO()
    sheet.save(out, "PNG", optimize=True)
    return out.getvalue()


class Storyboards:
    """Drawn storyboards, the last ``keep``, by cut and labels (a member forgotten since
    the last drawing gets a new board, without their name)."""

    def __init__(self, keep: int = 16) -> None:
        self._boards: OrderedDict[tuple[int, tuple[str, ...]], bytes] = OrderedDict()
        self._keep = keep
        self._lock = asyncio.Lock()

    async def png(self, cut_id: int, cells: list[tuple[Path | None, str]]) -> bytes:
        key = (cut_id, tuple(label for _, label in cells))
        async with self._lock:  # one drawing at a time: a crowd arriving draws it once
            if key in self._boards:
                self._boards.move_to_end(key)
                return self._boards[key]
            data = await asyncio.to_thread(_draw, cells)
            self._boards[key] = data
            while len(self._boards) > self._keep:
                self._boards.popitem(last=False)
            return data
