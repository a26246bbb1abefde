"""Slot plans: how a song is split into the slots clips fill.

Two plans, both pure functions of numbers (no I/O):

- **On bars** (:func:`bar_slot_plan`): slot boundaries on downbeats, each slot as close
  as possible to the backend's natural clip length (or, with a set count, to an equal
  share of the song). Dynamic programming over the bar times: the plan minimizes the sum
  of squared relative differences between each slot's length and the target, so one slot
  of 7 s next to one of 3 s loses to two of 5 s. The lead-in before the first downbeat
  belongs to the first slot and the tail after the last one to the last slot, so the
  plan always covers the whole song.
- **Even** (:func:`even_slot_plan`): N equal slots, for a song with no beat to follow
  (speech, ambient) or no song at all.

The bar grid comes from the song analysis (:mod:`bot.media.beats`): beats grouped 4 or 8
at a time. :func:`bar_grid` checks the grouping against the clip length: a "bar" longer
than 1.5 clips (an 8-beat group that was really two bars, or a half-tempo reading) is
split in half, down to groups of 2 beats, so slots can still be near one clip long.

Moderators edit a plan with :func:`split_slot`, :func:`merge_slots` and
:func:`with_hint`; each returns a new plan numbered 0..N-1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from bot.errors import InvalidState
from storage.models import Slot

#: longest slot hint (a lyric line, a mood)
HINT_MAX = 200
#: a bar this close to the start or the end of the song is not a slot boundary
EDGE = 0.05
#: a bar longer than this many clips is split in half (see :func:`bar_grid`)
LONG_BAR_CLIPS = 1.5
#: slots longer than this many targets are not considered (keeps the search linear)
MAX_SLOT_TARGETS = 3.0


def even_slot_plan(song_seconds: float, clip_seconds: float) -> list[Slot]:
    """Split ``song_seconds`` into N equal slots, N = the whole number of clips that fit
    best (at least one). Slot lengths stay within half a clip of ``clip_seconds``."""
    if song_seconds <= 0:
        raise ValueError("song length must be positive")
    if clip_seconds <= 0:
        raise ValueError("clip length must be positive")
    return even_slots(song_seconds, max(1, round(song_seconds / clip_seconds)))


def even_slots(song_seconds: float, count: int) -> list[Slot]:
    """Split ``song_seconds`` into ``count`` equal slots."""
    if song_seconds <= 0:
        raise ValueError("song length must be positive")
    if count < 1:
        raise ValueError("a plan has at least one slot")
    length = song_seconds / count
    return [
        Slot(index=i, start=round(i * length, 6), duration=round(length, 6)) for i in range(count)
    ]


def bar_grid(
    beats: Sequence[float], first_downbeat: int, beats_per_bar: int, clip_seconds: float
) -> tuple[list[float], int]:
    """The downbeat times to plan on, and how many beats a bar of them holds.

    Bars are ``beats_per_bar`` beats from ``beats[first_downbeat]`` (with any earlier whole
    bar of the new grouping); while a bar is longer than :data:`LONG_BAR_CLIPS` clips and
    more than 2 beats long, the grouping is halved."""
    if not beats:
        return [], beats_per_bar
    per_bar = max(1, beats_per_bar)
    while per_bar > 2:
        grid = list(beats[first_downbeat % per_bar :: per_bar])
        if len(grid) < 2 or _median_step(grid) <= LONG_BAR_CLIPS * clip_seconds:
            break
        per_bar //= 2
    return [float(t) for t in beats[first_downbeat % per_bar :: per_bar]], per_bar


def _median_step(times: Sequence[float]) -> float:
    steps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    return steps[len(steps) // 2]


def bar_slot_plan(
    song_seconds: float,
    bars: Sequence[float],
    clip_seconds: float,
    *,
    count: int | None = None,
) -> list[Slot]:
    """Slots on the downbeats ``bars``, each near ``clip_seconds`` long (or, with
    ``count``, exactly ``count`` slots, each near ``song_seconds / count``).

    Raises ``InvalidState`` when ``count`` is more than the song has bars."""
    if song_seconds <= 0:
        raise ValueError("song length must be positive")
    if clip_seconds <= 0:
        raise ValueError("clip length must be positive")
    points = [0.0]
    points += [float(b) for b in bars if EDGE < b < song_seconds - EDGE]
    points.append(float(song_seconds))
    if count is not None:
        if count < 1:
            raise InvalidState("A plan needs at least one slot.")
        if count > len(points) - 1:
            raise InvalidState(
                f"This song has {len(points) - 1} bars; it cannot have more slots than that."
            )
        cuts = _best_cuts_fixed(points, count, song_seconds / count)
    else:
        cuts = _best_cuts_free(points, clip_seconds)
    return _slots(points, cuts, bars)


def _cost(length: float, target: float) -> float:
    return ((length - target) / target) ** 2


def _best_cuts_free(points: list[float], target: float) -> list[int]:
    """Indexes into ``points`` of the boundaries (0 and the end included) minimizing the
    summed cost, with any number of slots."""
    n = len(points)
    best = [0.0] + [math.inf] * (n - 1)
    back = [0] * n
    for j in range(1, n):
        i = j - 1
        while i >= 0:
            length = points[j] - points[i]
            if length > MAX_SLOT_TARGETS * target and i < j - 1:
                break
            c = best[i] + _cost(length, target)
            if c < best[j]:
                best[j], back[j] = c, i
            i -= 1
    return _walk_back(back, n - 1)


def _best_cuts_fixed(points: list[float], count: int, target: float) -> list[int]:
    """As :func:`_best_cuts_free`, with exactly ``count`` slots."""
    n = len(points)
    inf = math.inf
    # best[k][j]: the cost of covering points[0..j] with k slots
    best = [[inf] * n for _ in range(count + 1)]
    back = [[0] * n for _ in range(count + 1)]
    best[0][0] = 0.0
    for k in range(1, count + 1):
        prev, row, brow = best[k - 1], best[k], back[k]
        # j needs k slots before it and room for the count - k after it
        for j in range(k, n - (count - k)):
            i = j - 1
            while i >= k - 1:
                length = points[j] - points[i]
                if length > MAX_SLOT_TARGETS * target and i < j - 1:
                    break
                if prev[i] < inf:
                    c = prev[i] + _cost(length, target)
                    if c < row[j]:
                        row[j], brow[j] = c, i
                i -= 1
    if best[count][n - 1] == inf:  # only when the window was too tight: plan evenly by bars
        step = (n - 1) / count
        return [round(k * step) for k in range(count + 1)]
    cuts = [n - 1]
    j = n - 1
    for k in range(count, 0, -1):
        j = back[k][j]
        cuts.append(j)
    return cuts[::-1]


def _walk_back(back: list[int], last: int) -> list[int]:
    cuts = [last]
    while cuts[-1] != 0:
        cuts.append(back[cuts[-1]])
    return cuts[::-1]


def _slots(points: list[float], cuts: list[int], bars: Sequence[float]) -> list[Slot]:
    out = []
    for k, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        start, end = points[a], points[b]
        out.append(
            Slot(
                index=k,
                start=round(start, 6),
                duration=round(end - start, 6),
                **_bar_span(start, end, bars, last=b == len(points) - 1),
            )
        )
    return out


def _bar_span(start: float, end: float, bars: Sequence[float], *, last: bool) -> dict[str, int]:
    """``bar`` (0-based index of the first downbeat in the slot) and ``bars`` (how many
    downbeats fall inside it)."""
    inside = [
        i
        for i, t in enumerate(bars)
        if start - EDGE <= t < end - EDGE or (last and t >= start - EDGE)
    ]
    if not inside:
        return {}
    return {"bar": inside[0], "bars": len(inside)}


# ------------------------------------------------------------------ moderators' edits
def _renumbered(plan: Sequence[Slot]) -> list[Slot]:
    return [replace(s, index=i) for i, s in enumerate(plan)]


def check_slot(plan: Sequence[Slot], index: int) -> Slot:
    """Slot ``index`` of ``plan``; ``InvalidState`` naming the range when there is none."""
    if not 0 <= index < len(plan):
        raise InvalidState(f"Slot {index + 1} does not exist; the plan has slots 1 to {len(plan)}.")
    return plan[index]


def split_slot(plan: Sequence[Slot], index: int, bars: Sequence[float] | None) -> list[Slot]:
    """Split slot ``index`` in two: on the downbeat nearest its middle when ``bars`` are
    known, else in the middle. Later slots move up by one; both halves keep the hint."""
    s = check_slot(plan, index)
    if bars:
        inner = [t for t in bars if s.start + EDGE < t < s.end - EDGE]
        if not inner:
            raise InvalidState(
                f"Slot {index + 1} holds a single bar ({s.start:.1f}–{s.end:.1f} s); "
                "it cannot be split on a bar."
            )
        cut = min(inner, key=lambda t: abs(t - (s.start + s.end) / 2))
    else:
        cut = s.start + s.duration / 2
    cut = round(cut, 6)
    first = replace(s, duration=round(cut - s.start, 6))
    second = replace(s, start=cut, duration=round(s.end - cut, 6))
    if s.bar is not None and s.bars is not None and bars:
        in_first = sum(1 for t in bars if s.start - EDGE <= t < cut - EDGE)
        first = replace(first, bars=in_first)
        second = replace(second, bar=s.bar + in_first, bars=s.bars - in_first)
    return _renumbered([*plan[:index], first, second, *plan[index + 1 :]])


def merge_slots(plan: Sequence[Slot], index: int) -> list[Slot]:
    """Merge slot ``index`` with the next one. Later slots move down by one; the hints are
    kept, joined with " / " when both slots had one."""
    a = check_slot(plan, index)
    if index + 1 >= len(plan):
        raise InvalidState(f"Slot {index + 1} is the last slot; there is no next slot to merge.")
    b = plan[index + 1]
    hints = [h for h in (a.hint, b.hint) if h]
    hint = " / ".join(dict.fromkeys(hints))[:HINT_MAX] or None
    bars = a.bars + b.bars if a.bars is not None and b.bars is not None else None
    merged = replace(a, duration=round(b.end - a.start, 6), bars=bars, hint=hint)
    return _renumbered([*plan[:index], merged, *plan[index + 2 :]])


def clean_hint(text: str | None) -> str | None:
    """A hint as stored: one line, spaces collapsed, at most :data:`HINT_MAX` characters;
    None (no hint) when empty."""
    text = " ".join("".join(c for c in (text or "") if c.isprintable()).split())
    if len(text) > HINT_MAX:
        raise InvalidState(f"A slot hint can be at most {HINT_MAX} characters.")
    return text or None


def with_hint(plan: Sequence[Slot], index: int, hint: str | None) -> list[Slot]:
    """The plan with slot ``index``'s hint set (``None`` or empty: removed)."""
    s = check_slot(plan, index)
    return [*plan[:index], replace(s, hint=clean_hint(hint)), *plan[index + 1 :]]


def slot_for_time(plan: list[Slot], seconds: float) -> Slot | None:
    for s in plan:
        if s.start <= seconds < s.end:
            return s
    return None
