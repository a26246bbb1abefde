"""The storyboard: one frame of every slot in a grid, for the moderators' cut preview.

Under each frame: slot number, author, time range and score; on it, badges for what a
moderator must notice (a pinned or reused clip, broken continuity, a deleted post).

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
LABEL_HEIGHT = 46
GAP = 6
BACKGROUND = (20, 20, 28)
PLACEHOLDER = (60, 60, 70)
LABEL_COLOUR = (235, 235, 240)
DETAIL_COLOUR = (170, 170, 185)


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


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"{int(minutes)}:{rest:04.1f}"


def slot_marks(slot: CutSlot) -> list[str]:
    """What the moderators must notice about a slot before approving, most serious first."""
    marks = []
    if slot.post_deleted:
        marks.append("POST DELETED")
    if slot.continuity_broken:
        marks.append("CONTINUITY BROKEN")
    if slot.pinned:
        marks.append("PINNED")
    if slot.reused:
        marks.append("REUSED")
    return marks


def cell_label(slot: CutSlot) -> str:
    """The first line under a slot's frame: number, author and the marks of
    :func:`slot_marks` (a deleted post, broken continuity, a pin, a reused clip)."""
    label = f"#{slot.index + 1} {slot.author or 'anonymous'}"
    if slot.post_deleted:
        label = f"#{slot.index + 1} POST DELETED · {slot.author or 'anonymous'}"
    if slot.reused:
        label += " (reused)"
    others = [m for m in slot_marks(slot) if m not in ("POST DELETED", "REUSED")]
    if others:
        label += " · " + " · ".join(m.lower() for m in others)
    return label


def cell_detail(slot: CutSlot) -> str:
    """The second line under a slot's frame: its time range in the song and its score."""
    # ASCII where Pillow's bundled font has no glyph (en dash, arrows)
    span = f"{_clock(slot.start)}-{_clock(slot.start + slot.duration)}"
    votes = slot.votes or {}
    score = votes.get("score", votes.get("up", 0) - votes.get("down", 0))
    return f"{span} · score {score:+d} ({votes.get('up', 0)} up, {votes.get('down', 0)} down)"


#: badge colours, drawn on the frame's top-left corner
MARK_COLOURS = {
    "POST DELETED": (200, 40, 40),
    "CONTINUITY BROKEN": (230, 140, 20),
    "PINNED": (40, 110, 220),
    "REUSED": (110, 110, 125),
}


def _badges(draw: ImageDraw.ImageDraw, slot: CutSlot, x: int, y: int, font: object) -> None:
    top = y + 4
    for mark in slot_marks(slot):
        width = int(draw.textlength(mark, font=font)) + 10
        draw.rectangle((x + 4, top, x + 4 + width, top + 18), fill=MARK_COLOURS[mark])
        draw.text((x + 9, top + 2), mark, font=font, fill=(255, 255, 255))
        top += 22


def _render(slots: list[CutSlot], dest: Path, columns: int) -> Path:
    ordered = sorted(slots, key=lambda s: s.index)
    columns = max(1, min(columns, len(ordered)))
    rows = math.ceil(len(ordered) / columns)
    width = GAP + columns * (CELL_WIDTH + GAP)
    height = GAP + rows * (CELL_HEIGHT + LABEL_HEIGHT + GAP)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    small = ImageFont.load_default(size=13)
    frames: dict[tuple[Path, float], Image.Image] = {}  # a reused clip is decoded once
    for i, slot in enumerate(ordered):
        row, col = divmod(i, columns)
        x = GAP + col * (CELL_WIDTH + GAP)
        y = GAP + row * (CELL_HEIGHT + LABEL_HEIGHT + GAP)
        path = Path(slot.clip_path)
        # the middle of the clip, or of what the slot shows when a moderator set an in-point
        at = slot.in_point + slot.duration / 2 if slot.in_point > 0 else -1.0
        if (path, at) not in frames:
            frames[path, at] = _cell(frame_at(path, at if at >= 0 else None))
        sheet.paste(frames[path, at], (x, y))
        _badges(draw, slot, x, y, small)
        draw.text(
            (x + 4, y + CELL_HEIGHT + 5),
            truncate(draw, cell_label(slot), font, CELL_WIDTH - 8),
            font=font,
            fill=LABEL_COLOUR,
        )
        draw.text(
            (x + 4, y + CELL_HEIGHT + 26),
            truncate(draw, cell_detail(slot), small, CELL_WIDTH - 8),
            font=small,
            fill=DETAIL_COLOUR,
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
    number, author, time range in the song and score, and marked (a coloured badge on the
    frame) when pinned, reused, its continuity broke or its post was deleted. A clip that
    cannot be decoded gets a grey cell instead of failing the whole board. Returns ``dest``.
    """
    if not slots:
        raise ValueError("storyboard needs at least one slot")
    return await asyncio.to_thread(_render, list(slots), Path(dest), columns)
