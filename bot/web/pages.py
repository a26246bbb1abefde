"""What a page shows, built from the rows: pure functions, no HTTP and no HTML.

The names come from the rows as they are *now*: a member forgotten after the cut was
approved is "anonymous" here even though the cut's record (and its manifest) was written
with their name; a clip that forget-me deleted is not there at all, so nothing links to
it and its media is not served.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bot.core.voting import Tally, rank
from storage.models import APPROVED, CLOSED, DRAFT, OPEN, Cut, Project
from storage.pages import PageClip


@dataclass(frozen=True)
class SlotStanding:
    """One slot's candidates, best first."""

    index: int
    start: float
    duration: float
    clips: list[PageClip]


@dataclass(frozen=True)
class CreditLine:
    """One slot of the approved cut, as the credits show it."""

    index: int
    start: float
    duration: float
    clip: PageClip | None  # None: the clip is gone (forgotten): no name, no prompt, no link
    backend: str
    model: str
    up: int
    down: int
    reused: bool = False
    parent: PageClip | None = None  # the clip it continues, when still there
    lineage: str = "extend"  # how: "extend" (/extend) or "chain" (chain mode)

    @property
    def author(self) -> str:
        return self.clip.author if self.clip else "anonymous"

    @property
    def prompt(self) -> str:
        return self.clip.prompt if self.clip else ""

    @property
    def score(self) -> int:
        return self.up - self.down


@dataclass
class ProjectPage:
    project: Project
    token: str
    clips: dict[int, PageClip]
    cuts: list[Cut]
    approved_by: str | None = None
    approved: Cut | None = None
    credits: list[CreditLine] = field(default_factory=list)
    standings: list[SlotStanding] = field(default_factory=list)
    unslotted: list[PageClip] = field(default_factory=list)

    @property
    def live(self) -> bool:
        """Standings still move: voting is open."""
        return self.project.state == OPEN

    @property
    def master_key(self) -> str | None:
        return self.approved.master_key if self.approved else None

    @property
    def preview_key(self) -> str | None:
        return self.approved.preview_key if self.approved else None

    @property
    def storyboard_key(self) -> str | None:
        # recorded on the cut once renders keep their storyboard in the media store
        return getattr(self.approved, "storyboard_key", None) if self.approved else None

    def servable_keys(self) -> set[str]:
        """The media this page may serve: its clips still in the vote or in the approved
        cut, and the approved cut's master, preview and storyboard. Nothing else (not the
        song, not reference images, not a preview cut nobody approved)."""
        in_cut = {line.clip.id for line in self.credits if line.clip}
        keys = {
            c.media_key for c in self.clips.values() if c.post_deleted_at is None or c.id in in_cut
        }
        for key in (self.master_key, self.preview_key, self.storyboard_key):
            if key:
                keys.add(key)
        return keys

    def visible_clip(self, clip_id: int | None) -> PageClip | None:
        """A clip of this project a page may show (None: gone, or its post was deleted
        by a moderator and it is not in the approved cut)."""
        if clip_id is None:
            return None
        clip = self.clips.get(clip_id)
        if clip is None:
            return None
        if clip.post_deleted_at is not None and clip.media_key not in self.servable_keys():
            return None
        return clip


def standings(project: Project, clips: list[PageClip]) -> tuple[list[SlotStanding], list[PageClip]]:
    """Each slot's candidates ranked by the voting rules, and the clips for any slot.
    A clip whose post a moderator deleted is out of the vote, so out of the standings."""
    by_id = {c.id: c for c in clips if c.post_deleted_at is None}
    ranked = [by_id[t.clip_id] for t in rank([Tally(c.id, c.up, c.down) for c in by_id.values()])]
    per_slot: dict[int, list[PageClip]] = {s.index: [] for s in project.slot_plan}
    unslotted = []
    for c in ranked:
        if c.slot is not None and c.slot in per_slot:
            per_slot[c.slot].append(c)
        else:
            unslotted.append(c)
    slots = [
        SlotStanding(s.index, s.start, s.duration, per_slot[s.index]) for s in project.slot_plan
    ]
    return slots, unslotted


def credits(
    cut: Cut, clips: dict[int, PageClip], manifest: dict[str, Any] | None = None
) -> list[CreditLine]:
    """The approved cut's slots with who made each clip *now* (forget-me applies), what
    made it and the clip it continues (from the clip's job, or the manifest's record)."""
    by_index = {s.get("index"): s for s in (manifest or {}).get("slots", [])}
    lines = []
    for s in sorted(cut.slots, key=lambda s: s.get("index", 0)):
        clip = clips.get(s.get("clip_id")) if s.get("clip_id") is not None else None
        record = by_index.get(s.get("index"), {})
        # the cut's record names the parent (extended or chained) once renders keep it;
        # the manifest too; else the clip's job, for an /extend
        parent_id = s.get("parent_clip_id", record.get("parent_clip_id"))
        if parent_id is None and clip is not None:
            parent_id = clip.parent_clip_id
        lineage = s.get("lineage") or record.get("lineage") or "extend"
        votes = s.get("votes") or {}
        lines.append(
            CreditLine(
                index=int(s.get("index", 0)),
                start=float(s.get("start", 0.0)),
                duration=float(s.get("duration", 0.0)),
                clip=clip,
                backend=str(s.get("backend") or (clip.backend if clip else "") or ""),
                model=str(s.get("model") or (clip.model if clip else "") or ""),
                up=int(votes.get("up", 0)),
                down=int(votes.get("down", 0)),
                reused=bool(s.get("reused")),
                parent=clips.get(parent_id) if parent_id is not None else None,
                lineage=str(lineage),
            )
        )
    return lines


def build_project_page(
    project: Project,
    token: str,
    clips: list[PageClip],
    cuts: list[Cut],
    *,
    names: dict[int, str] | None = None,
    manifest: dict[str, Any] | None = None,
) -> ProjectPage:
    approved = next((c for c in reversed(cuts) if c.state == APPROVED), None)
    by_id = {c.id: c for c in clips}
    page = ProjectPage(project=project, token=token, clips=by_id, cuts=cuts, approved=approved)
    if project.approved_by is not None:
        # "anonymous" once forgotten; None for a moderator crowdcut never recorded
        page.approved_by = (names or {}).get(project.approved_by)
    if approved is not None:
        page.credits = credits(approved, by_id, manifest)
    page.standings, page.unslotted = standings(project, clips)
    return page


def state_text(project: Project, *, approved_by: str | None, now: float | None = None) -> str:
    """The project's state in words: open (and when voting closes), closed, approved by …"""
    now = time.time() if now is None else now
    if project.state == OPEN:
        if project.voting_ends_at:
            left = project.voting_ends_at - now
            return (
                f"Voting is open: it closes in {duration_words(left)}."
                if left > 0
                else ("Voting is closing.")
            )
        return "Voting is open."
    if project.state == CLOSED:
        return "Voting is closed; the moderators are choosing the cut."
    if project.state == APPROVED:
        return f"Approved by {approved_by}." if approved_by else "Approved by the moderators."
    if project.state == DRAFT:
        return "Not open yet."
    return project.state


def duration_words(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return "less than a minute"


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` past an hour)."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def discord_url(guild_id: int, clip: PageClip) -> str | None:
    """The clip's post in Discord (None when it was never posted, or was deleted)."""
    if clip.message_id is None or clip.channel_id is None or clip.post_deleted_at is not None:
        return None
    return f"https://discord.com/channels/{guild_id}/{clip.channel_id}/{clip.message_id}"


def standings_data(page: ProjectPage) -> dict[str, Any]:
    """The live standings as JSON for the page's script (values are text, never HTML)."""

    def clip(c: PageClip) -> dict[str, Any]:
        return {
            "id": c.id,
            "author": c.author,
            "prompt": c.prompt,
            "up": c.up,
            "down": c.down,
            "score": c.score,
            "media": c.media_key,
        }

    return {
        "state": page.project.state,
        "live": page.live,
        "slots": [{"index": s.index, "clips": [clip(c) for c in s.clips]} for s in page.standings],
        "unslotted": [clip(c) for c in page.unslotted],
    }


def cuts_using(page: ProjectPage, clip_id: int) -> list[tuple[Cut, list[int]]]:
    """The cuts of the project that use a clip, with the slots it fills in each."""
    out = []
    for cut in page.cuts:
        slots = [int(s["index"]) for s in cut.slots if s.get("clip_id") == clip_id]
        if slots:
            out.append((cut, slots))
    return out
