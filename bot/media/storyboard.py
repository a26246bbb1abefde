"""The storyboard: one frame of every slot in a grid, for the moderators' cut preview.

Frames are decoded with PyAV one clip at a time in a worker thread, and each is shrunk to
its cell at once, so memory stays small however many slots the cut has.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import av
from PIL import Image, ImageDraw, ImageFont

from bot.media.credits import truncate

if TYPE_CHECKING:
    from bot.media.assembly import CutSlot

log = logging.getLogger(__name__)

CELL_WIDTH = 320
CELL_HEIGHT = 180
LABEL_HEIGHT = 30
GAP = 6
BACKGROUND = (20, 20, 28)
PLACEHOLDER = (60, 60, 70)
LABEL_COLOUR = (235, 235, 240)


def frame_at(path: Path, seconds: float | None = None) -> Image.Image | None:
    """Decode the frame of ``path`` shown at ``seconds`` (default: the middle), or ``None``.

    Blocking (PyAV); ``None`` when the file has no decodable video.
    """
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if seconds is None:
                total = container.duration / 1_000_000 if container.duration else 0.0
                seconds = total / 2
            if seconds > 0 and stream.time_base:
                # seeks to the keyframe before; frames are then decoded up to the target
                container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
            picked = None
            for frame in container.decode(stream):
                picked = frame
                if frame.time is None or frame.time >= seconds:
                    break
            return picked.to_image() if picked is not None else None
    except (av.FFmpegError, OSError, ValueError) as exc:
        log.warning("no storyboard frame from %s: %s", path, exc)
        return None


def _cell(image: Image.Image | None) -> Image.Image:
    cell = Image.new("RGB", (CELL_WIDTH, CELL_HEIGHT), PLACEHOLDER if image is None else (0, 0, 0))
    if image is not None:
        image = image.convert("RGB")
        image.thumbnail((CELL_WIDTH, CELL_HEIGHT))
        cell.paste(image, ((CELL_WIDTH - image.width) // 2, (CELL_HEIGHT - image.height) // 2))
    return cell


def cell_label(slot: CutSlot) -> str:
    """The line under a slot's frame: its number and author, and what the moderators must
    notice before approving (a reused clip, a clip whose post a moderator deleted)."""
    label = f"#{slot.index + 1} {slot.author or 'anonymous'}"
    if slot.post_deleted:
        label = f"#{slot.index + 1} POST DELETED · {slot.author or 'anonymous'}"
    if slot.reused:
        label += " (reused)"
    return label


def _render(slots: list[CutSlot], dest: Path, columns: int) -> Path:
    ordered = sorted(slots, key=lambda s: s.index)
    columns = max(1, min(columns, len(ordered)))
    rows = math.ceil(len(ordered) / columns)
    width = GAP + columns * (CELL_WIDTH + GAP)
    height = GAP + rows * (CELL_HEIGHT + LABEL_HEIGHT + GAP)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    frames: dict[Path, Image.Image] = {}  # a reused clip is decoded once
    for i, slot in enumerate(ordered):
        row, col = divmod(i, columns)
        x = GAP + col * (CELL_WIDTH + GAP)
        y = GAP + row * (CELL_HEIGHT + LABEL_HEIGHT + GAP)
        path = Path(slot.clip_path)
        if path not in frames:
            frames[path] = _cell(frame_at(path))
        sheet.paste(frames[path], (x, y))
        draw.text(
            (x + 4, y + CELL_HEIGHT + 6),
            truncate(draw, cell_label(slot), font, CELL_WIDTH - 8),
            font=font,
            fill=LABEL_COLOUR,
        )
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.part.png")
    try:
        sheet.save(tmp, format="PNG")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


async def storyboard(slots: list[CutSlot], dest: Path, *, columns: int = 4) -> Path:
    """Write a PNG grid of one frame (the middle) of each slot's clip to ``dest``.

    Slots are laid out in slot order, ``columns`` to a row, each labelled with its slot
    number and author. A clip that cannot be decoded gets a grey cell instead of failing
    the whole board. Returns ``dest``.
    """
    if not slots:
        raise ValueError("storyboard needs at least one slot")
    return await asyncio.to_thread(_render, list(slots), Path(dest), columns)
