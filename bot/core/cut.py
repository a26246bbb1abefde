"""Cut selection: which clip stands in which slot.

For each slot, the best-scoring clip submitted for that slot. Slots nobody named
are filled with the best unslotted clips, placed in submission order. Moderator
overrides win over votes: a pinned clip takes its slot, an excluded clip is never
used. A slot that still has no clip reuses the chosen clips in order (marked
``reused``), so the video always covers the whole song.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.voting import Tally, rank_key


@dataclass(frozen=True)
class Candidate:
    clip_id: int
    slot: int | None  # the slot the member named, if any
    up: int = 0
    down: int = 0

    @property
    def tally(self) -> Tally:
        return Tally(self.clip_id, self.up, self.down)


@dataclass(frozen=True)
class Choice:
    slot: int
    clip_id: int
    reason: str  # "pinned" | "votes" | "unslotted" | "reused"


def select_cut(
    n_slots: int,
    candidates: Sequence[Candidate],
    *,
    pins: dict[int, int] | None = None,
    excluded: set[int] | None = None,
) -> list[Choice]:
    """One ``Choice`` per slot (empty list when there is no usable clip)."""
    pins = dict(pins or {})  # clip id → slot
    excluded = set(excluded or ())
    usable = [c for c in candidates if c.clip_id not in excluded]
    chosen: dict[int, Choice] = {}
    used: set[int] = set()

    # 1. pins (the latest pin of a slot wins; pins out of range are ignored)
    for clip_id, slot in pins.items():
        if (
            0 <= slot < n_slots
            and clip_id not in excluded
            and any(c.clip_id == clip_id for c in candidates)
        ):
            if slot in chosen:
                used.discard(chosen[slot].clip_id)
            chosen[slot] = Choice(slot, clip_id, "pinned")
            used.add(clip_id)

    # 2. the best clip named for each slot
    by_slot: dict[int, list[Candidate]] = {}
    for c in usable:
        if c.slot is not None and 0 <= c.slot < n_slots:
            by_slot.setdefault(c.slot, []).append(c)
    for slot, cands in by_slot.items():
        if slot in chosen:
            continue
        for c in sorted(cands, key=lambda c: rank_key(c.tally)):
            if c.clip_id not in used:
                chosen[slot] = Choice(slot, c.clip_id, "votes")
                used.add(c.clip_id)
                break

    # 3. open slots take the best unslotted clips, in submission order
    open_slots = [s for s in range(n_slots) if s not in chosen]
    unslotted = [
        c for c in usable if (c.slot is None or not 0 <= c.slot < n_slots) and c.clip_id not in used
    ]
    best = sorted(unslotted, key=lambda c: rank_key(c.tally))[: len(open_slots)]
    for slot, c in zip(open_slots, sorted(best, key=lambda c: c.clip_id), strict=False):
        chosen[slot] = Choice(slot, c.clip_id, "unslotted")
        used.add(c.clip_id)

    if not chosen:
        return []
    # 4. anything still empty reuses the chosen clips in slot order
    filled = [chosen[s].clip_id for s in sorted(chosen)]
    k = 0
    for slot in range(n_slots):
        if slot not in chosen:
            chosen[slot] = Choice(slot, filled[k % len(filled)], "reused")
            k += 1
    return [chosen[s] for s in range(n_slots)]
