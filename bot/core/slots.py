"""Slot plans: how a song is split into the slots clips fill.

v1 is the even plan: N slots of equal length near the generator's clip length.
"""

from __future__ import annotations

from storage.models import Slot


def even_slot_plan(song_seconds: float, clip_seconds: float) -> list[Slot]:
    """Split ``song_seconds`` into N equal slots, N = the whole number of clips that fit
    best (at least one). Slot lengths stay within half a clip of ``clip_seconds``."""
    if song_seconds <= 0:
        raise ValueError("song length must be positive")
    if clip_seconds <= 0:
        raise ValueError("clip length must be positive")
    n = max(1, round(song_seconds / clip_seconds))
    length = song_seconds / n
    return [Slot(index=i, start=round(i * length, 6), duration=round(length, 6)) for i in range(n)]


def slot_for_time(plan: list[Slot], seconds: float) -> Slot | None:
    for s in plan:
        if s.start <= seconds < s.end:
            return s
    return None
