"""Slot plans of projects: planned from the song's analysis, edited by moderators.

The plan lives in the project's ``slot_plan`` JSON (each slot with its bars and hint), so
no schema change was needed; the song's analysis (tempo, beats, bars) is kept beside the
song in the media store (see :mod:`bot.media.beats`) and read again for a re-plan or a
split.

Slot numbers are what members name with ``/prompt slot:``, what pins record and what the
posted clips show, so an edit never changes the meaning of a number that is in use:
re-planning, splitting or merging is refused while a clip, a pin or an unfinished job
names any slot the edit would move or reshape (that slot and every later one). Clips for
no slot in particular fill whatever plan there is, so they never block an edit. Hints can
change at any time.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.app import App
from bot.core import slots as planning
from bot.errors import InvalidState, NotFound
from bot.media.beats import (
    NO_REGULAR_BEAT,
    TOO_FEW_BEATS,
    SongAnalysis,
    cached,
    song_analysis,
)
from storage.models import APPROVED, Project, Slot

log = logging.getLogger(__name__)

#: the most slots a moderator can ask for (and the most any plan makes)
MAX_SLOTS = 300


@dataclass(frozen=True)
class SongPlan:
    """A plan for a song, and how it was made (for the moderator's answer)."""

    slots: list[Slot]
    on_bars: bool
    tempo: float | None = None
    #: why the plan is even although there is a song ("no regular beat"), else None
    no_beat_reason: str | None = None


def plan_song(
    duration: float,
    analysis: SongAnalysis | None,
    clip_seconds: float,
    *,
    count: int | None = None,
) -> SongPlan:
    """Slots on the song's bars when it has a beat, else even ones (``count`` of them, or as
    many as fit clips of ``clip_seconds``)."""
    if analysis is not None and analysis.has_beat:
        grid, _ = planning.bar_grid(
            analysis.beats, analysis.first_downbeat, analysis.beats_per_bar, clip_seconds
        )
        if len(grid) >= 2:
            return SongPlan(
                planning.bar_slot_plan(duration, grid, clip_seconds, count=count),
                on_bars=True,
                tempo=analysis.tempo,
            )
    reason = analysis.no_beat_reason if analysis is not None else None
    slots = (
        planning.even_slots(duration, count)
        if count
        else planning.even_slot_plan(duration, clip_seconds)
    )
    return SongPlan(slots, on_bars=False, no_beat_reason=reason or NO_REGULAR_BEAT)


class SlotPlanService:
    """Moderators' edits of a project's slot plan (each audited)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.store = app.store
        # edits read the plan, change it and write it back: one at a time
        self._lock = asyncio.Lock()

    def clip_seconds(self, project: Project) -> float:
        """The natural clip length of the backend the project's prompts go to first."""
        gen = self.app.generators.get(project.backend or "") or self.app.generator
        return float(gen.capabilities.natural_seconds)

    async def analysis(self, project: Project) -> SongAnalysis | None:
        """The project's song analysis (None without a song); analysed now if it is not
        kept yet (a project made before songs were analysed)."""
        if not project.song_key:
            return None
        return await song_analysis(self.app.media, project.song_key)

    async def analysis_ready(self, project: Project) -> bool:
        """Whether :meth:`analysis` answers at once (no song, or its analysis is kept); a
        command defers first when it is not, since analysing takes seconds."""
        if not project.song_key:
            return True
        found = await asyncio.to_thread(cached, self.app.media, project.song_key)
        return found is not None

    async def _get(self, project_id: int) -> Project:
        p = await self.store.get_project(project_id)
        if p is None:
            raise NotFound(f"There is no project #{project_id}.")
        if p.state == APPROVED:
            raise InvalidState("This project's cut is approved; its slots can no longer change.")
        return p

    async def _refuse_if_used(self, project: Project, first: int, what: str) -> None:
        used = sorted(s for s in await self.store.slots_in_use(project.id) if s >= first)
        if used:
            named = ", ".join(str(s + 1) for s in used[:10]) + (" …" if len(used) > 10 else "")
            raise InvalidState(
                f"Cannot {what}: clips, pins or prompts already name slot(s) {named}, and "
                "their numbers would change. Slot edits are for before prompting starts "
                "(or only after the slots in use); hints can change any time."
            )

    async def _save(
        self, project: Project, plan: list[Slot], action: str, by: int, **details: object
    ) -> Project:
        p = await self.store.set_slot_plan(project.id, plan)
        await self.store.audit(
            action,
            actor_id=by,
            project_id=project.id,
            target=f"project:{project.id}",
            details={**details, "slots": len(plan)},
        )
        return p

    async def set_count(self, project_id: int, count: int, *, by: int) -> tuple[Project, SongPlan]:
        """Plan ``count`` slots again: on the song's bars (or evenly without a beat, or
        of the clip length without a song)."""
        if not 1 <= count <= MAX_SLOTS:
            raise InvalidState(f"A project has 1 to {MAX_SLOTS} slots.")
        async with self._lock:
            p = await self._get(project_id)
            await self._refuse_if_used(p, 0, "re-plan the slots")
            clip = self.clip_seconds(p)
            if p.song_seconds:
                plan = plan_song(p.song_seconds, await self.analysis(p), clip, count=count)
            else:
                plan = SongPlan([Slot(i, i * clip, clip) for i in range(count)], on_bars=False)
            # hints stay with their slot numbers where those still exist
            hints = {s.index: s.hint for s in p.slot_plan if s.hint}
            slots = [
                Slot(s.index, s.start, s.duration, s.bar, s.bars, hints.get(s.index))
                for s in plan.slots
            ]
            p = await self._save(p, slots, "set_slot_count", by, count=count)
            return p, plan

    async def split(self, project_id: int, slot: int, *, by: int) -> Project:
        """Split slot ``slot`` (0-based) in two, on the bar nearest its middle."""
        async with self._lock:
            p = await self._get(project_id)
            if len(p.slot_plan) >= MAX_SLOTS:
                raise InvalidState(f"A project has at most {MAX_SLOTS} slots.")
            planning.check_slot(p.slot_plan, slot)
            await self._refuse_if_used(p, slot, f"split slot {slot + 1}")
            bars = await self._bars(p)
            plan = planning.split_slot(p.slot_plan, slot, bars)
            return await self._save(p, plan, "split_slot", by, slot=slot)

    async def merge(self, project_id: int, slot: int, *, by: int) -> Project:
        """Merge slot ``slot`` (0-based) with the next one."""
        async with self._lock:
            p = await self._get(project_id)
            plan = planning.merge_slots(p.slot_plan, slot)  # refuses a missing/last slot
            await self._refuse_if_used(p, slot, f"merge slot {slot + 1} with slot {slot + 2}")
            return await self._save(p, plan, "merge_slots", by, slot=slot)

    async def set_hint(self, project_id: int, slot: int, hint: str | None, *, by: int) -> Project:
        """Give slot ``slot`` (0-based) a hint for prompters (empty: remove it)."""
        async with self._lock:
            p = await self._get(project_id)
            plan = planning.with_hint(p.slot_plan, slot, hint)
            return await self._save(p, plan, "set_slot_hint", by, slot=slot, hint=plan[slot].hint)

    async def describe(self, project: Project) -> str:
        """One line on the plan, for moderators: how many slots of what length, and how it
        was made (on the bars of a song of some tempo, or even, and why)."""
        plan = project.slot_plan
        if not plan:
            return "No slots."
        lengths = sorted(s.duration for s in plan)
        spread = (
            f"{lengths[0]:.1f}–{lengths[-1]:.1f}s"
            if lengths[-1] - lengths[0] > 0.05
            else f"{lengths[0]:.1f}s"
        )
        head = f"{len(plan)} slots of {spread}"
        if not project.song_key:
            return head + "."
        # only a kept analysis: this answers a command at once, it never analyses
        analysis = await asyncio.to_thread(cached, self.app.media, project.song_key)
        if any(s.bar is not None for s in plan):
            tempo = f"{analysis.tempo:.0f} BPM " if analysis and analysis.tempo else ""
            return f"{head}, on the bars of the {tempo}song."
        if analysis is not None and analysis.no_beat_reason == TOO_FEW_BEATS:
            return f"{head}, even: the song is too short or too sparse to find its beat."
        if analysis is not None and not analysis.has_beat:
            return (
                f"{head}, even: the song has no regular beat to cut on (speech, ambient?), "
                "so the slots do not follow its bars."
            )
        return f"{head}, even."

    async def _bars(self, project: Project) -> list[float] | None:
        """The bar grid the plan was made on, None for an even plan."""
        if not project.song_seconds or all(s.bar is None for s in project.slot_plan):
            return None
        analysis = await self.analysis(project)
        if analysis is None or not analysis.has_beat:
            return None
        grid, _ = planning.bar_grid(
            analysis.beats,
            analysis.first_downbeat,
            analysis.beats_per_bar,
            self.clip_seconds(project),
        )
        return grid
