"""Cut selection: which clip stands in which slot.

For each slot, the best-scoring clip submitted for that slot. Slots nobody named
are filled with the best unslotted clips, placed in submission order. Moderator
overrides win over votes: a pinned clip takes its slot, an excluded clip is never
used. A slot that still has no clip reuses the chosen clips in order (marked
``reused``), so the video always covers the whole song.
"""

from __future__ import annotations

import hashlib
import json
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


# ---------------------------------------------------------------------- identity

#: bump when the meaning of the fields below changes, so old identities never match new cuts
IDENTITY_VERSION = 1


@dataclass(frozen=True)
class SlotPick:
    """What the video shows in one slot, as far as the cut's identity is concerned.

    ``media_key`` is the clip's content key (its bytes), ``clip_id`` the row it came from;
    ``in_point`` the second of the clip the slot starts at (a moderator's trim).
    """

    slot: int
    clip_id: int | None
    media_key: str
    start: float
    duration: float
    in_point: float = 0.0


def cut_identity(
    picks: Sequence[SlotPick],
    *,
    fit: str = "hold",
    transition: str = "cut",
    transition_seconds: float = 0.0,
    width: int = 1280,
    height: int = 720,
    fps: int = 24,
    song_key: str | None = None,
    credits: Sequence[str] = (),
) -> str:
    """A content hash (64 hex digits) of everything that decides what a cut looks like.

    Two calls give the same identity exactly when the same clips stand in the same slots,
    with the same in-points and slot times, fit mode, transition and length, frame
    format, song and credit lines (``credits``: the text the roll shows, so a forget-me
    that turns a name into "anonymous" changes the cut). Times are rounded to the
    millisecond so float noise never changes an identity. Pure: no I/O.
    """
    payload = {
        "v": IDENTITY_VERSION,
        "slots": [
            [
                p.slot,
                p.clip_id,
                p.media_key,
                round(p.start, 3),
                round(p.duration, 3),
                round(max(0.0, p.in_point), 3),
            ]
            for p in sorted(picks, key=lambda p: p.slot)
        ],  # fmt: skip
        "fit": fit,
        "transition": transition if transition_seconds > 0 else "cut",
        "transition_seconds": round(transition_seconds, 3) if transition != "cut" else 0.0,
        "format": [width, height, fps],
        "song": song_key,
        "credits": list(credits),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
