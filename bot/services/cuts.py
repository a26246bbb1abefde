"""The cut: which clip stands in which slot, rendered to a video, approved.

Selection is ``bot.core.cut`` over the vote tallies and the moderators' pins and
exclusions; rendering is ``bot.media.assembly``. Renders are kept in the media
store (content-addressed) and recorded as a ``Cut`` row; the approved one is what
gets published with its credits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bot.app import App
from bot.core.cut import Candidate, Choice, select_cut
from bot.core.voting import Tally, rank
from bot.errors import InvalidState, NotFound
from bot.media.assembly import AssemblyResult, CutSlot, assemble
from bot.media.beats import cached
from bot.media.credits import Credits
from bot.media.segments import CutOptions
from bot.media.storyboard import storyboard
from bot.services import scope
from storage.models import APPROVED, CLOSED, OPEN, Clip, Cut, Job, Project

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

#: a transition's length when the project names none, in beats
DEFAULT_TRANSITION_BEATS = 0.5
#: the length of a beat when the song has no tempo (or there is no song): 120 BPM
SECONDS_PER_BEAT_WITHOUT_TEMPO = 0.5


@dataclass(frozen=True)
class Rendered:
    cut: Cut
    result: AssemblyResult


class CutService:
    def __init__(self, app: App) -> None:
        self.app = app
        self.store = app.store
        self.settings = app.settings

    # ------------------------------------------------------------------ selection
    async def choose(self, project: Project) -> list[CutSlot]:
        """The current winners, one ``CutSlot`` per slot (empty: no clips yet)."""
        clips = {c.id: c for c in await self.store.project_clips(project.id)}
        tallies = await self.store.vote_tallies(project.id)
        pins: dict[int, int] = {}
        excluded: set[int] = set()
        for o in await self.store.overrides(project.id):
            if o.action == "pin" and o.slot is not None:
                pins[o.clip_id] = o.slot
            elif o.action == "exclude":
                excluded.add(o.clip_id)
        # a clip whose post a moderator deleted is out of the vote; only a pin puts it in
        candidates = [
            Candidate(c.id, c.slot, *tallies.get(c.id, (0, 0)))
            for c in clips.values()
            if c.post_deleted_at is None or c.id in pins
        ]
        choices = select_cut(len(project.slot_plan), candidates, pins=pins, excluded=excluded)
        names = await self.store.member_names(c.member_id for c in clips.values())
        jobs = await self.store.get_jobs(clips[ch.clip_id].job_id for ch in choices)
        chosen = [
            self._cut_slot(
                project, ch, clips[ch.clip_id], jobs.get(clips[ch.clip_id].job_id), tallies, names
            )
            for ch in choices
        ]
        return mark_broken_continuity(chosen, clips)

    def _cut_slot(
        self,
        project: Project,
        ch: Choice,
        clip: Clip,
        job: Job | None,
        tallies: dict[int, tuple[int, int]],
        names: dict[int, str],
    ) -> CutSlot:
        slot = project.slot_plan[ch.slot]
        up, down = tallies.get(clip.id, (0, 0))
        return CutSlot(
            index=slot.index,
            start=slot.start,
            duration=slot.duration,
            clip_path=self.app.media.path(clip.media_key),
            clip_id=clip.id,
            author="anonymous" if clip.anonymous else names.get(clip.member_id, "anonymous"),
            prompt=job.prompt if job else "",
            backend=(job.backend or "") if job else "",
            model=(job.model or "") if job else "",
            votes={"up": up, "down": down, "score": up - down},
            reused=ch.reason == "reused",
            post_deleted=clip.post_deleted_at is not None,
            media_key=clip.media_key,
            pinned=ch.reason == "pinned",
            parent_clip_id=clip.parent_clip_id,
            lineage=(clip.lineage or "extend") if clip.parent_clip_id is not None else "",
            in_point=clip.in_point or 0.0,
        )

    async def slots_of(self, records: list[dict[str, object]]) -> list[CutSlot]:
        """The ``CutSlot``s a cut's slot records describe (to render that cut again, as it
        was chosen: same clips, votes and credits as recorded)."""
        slots = []
        for r in records:
            clip = await self.store.get_clip(int(r["clip_id"]))  # type: ignore[arg-type]
            if clip is None:
                raise NotFound(f"Clip #{r['clip_id']} of this cut no longer exists.")
            parent = r.get("parent_clip_id")
            slots.append(
                CutSlot(
                    index=int(r["index"]),  # type: ignore[arg-type]
                    start=float(r["start"]),  # type: ignore[arg-type]
                    duration=float(r["duration"]),  # type: ignore[arg-type]
                    clip_path=self.app.media.path(clip.media_key),
                    clip_id=clip.id,
                    author=str(r.get("author") or "anonymous"),
                    prompt=str(r.get("prompt") or ""),
                    backend=str(r.get("backend") or ""),
                    model=str(r.get("model") or ""),
                    votes=dict(r.get("votes") or {}),  # type: ignore[call-overload]
                    reused=bool(r.get("reused")),
                    post_deleted=bool(r.get("post_deleted")),
                    media_key=clip.media_key,
                    pinned=bool(r.get("pinned")),
                    parent_clip_id=int(parent) if parent is not None else None,  # type: ignore[call-overload]
                    lineage=str(r.get("lineage") or ""),
                    in_point=float(r.get("in_point") or 0.0),  # type: ignore[arg-type]
                    continuity_broken=bool(r.get("continuity_broken")),
                )
            )
        return slots

    async def leaderboard(self, project: Project) -> tuple[list[Tally], dict[int, list[Tally]]]:
        """Overall ranking and the ranking within each named slot."""
        clips = {c.id: c for c in await self.store.project_clips(project.id)}
        tallies = [
            Tally(cid, up, down)
            for cid, (up, down) in (await self.store.vote_tallies(project.id)).items()
        ]
        per_slot: dict[int, list[Tally]] = {}
        for t in tallies:
            s = clips[t.clip_id].slot
            if s is not None:
                per_slot.setdefault(s, []).append(t)
        return rank(tallies), {s: rank(ts) for s, ts in sorted(per_slot.items())}

    # ------------------------------------------------------------------ overrides
    async def pin(self, project: Project, clip_id: int, slot: int, *, by: int) -> Clip:
        clip = await self._clip_of(project, clip_id)
        if not 0 <= slot < len(project.slot_plan):
            raise InvalidState(
                f"Slot {slot + 1} does not exist; this project has slots 1 to "
                f"{len(project.slot_plan)}."
            )
        await self.store.set_override(project.id, clip.id, "pin", by=by, slot=slot)
        await self.store.audit(
            "pin_clip",
            actor_id=by,
            project_id=project.id,
            target=f"clip:{clip_id}",
            details={"slot": slot},
        )
        return clip

    async def exclude(self, project: Project, clip_id: int, *, by: int) -> None:
        clip = await self._clip_of(project, clip_id)
        await self.store.set_override(project.id, clip.id, "exclude", by=by)
        await self.store.audit(
            "exclude_clip",
            actor_id=by,
            project_id=project.id,
            target=f"clip:{clip_id}",
        )

    async def trim(self, project: Project, clip_id: int, seconds: float, *, by: int) -> Clip:
        """Start ``clip_id`` at ``seconds`` into it wherever the cut uses it (0: from its
        first frame). What is left of the clip fills the slot as usual: trimmed at the
        end, or slowed down or held when it is shorter than the slot."""
        clip = await self._clip_of(project, clip_id)
        if project.state == APPROVED:
            raise InvalidState("This project's cut is already approved.")
        if not seconds >= 0:  # also refuses NaN
            raise InvalidState("The start must be 0 seconds or more.")
        length = clip.duration or 0.0
        if length and seconds >= length - 0.1:
            raise InvalidState(
                f"Clip #{clip_id} is only {length:.1f} s long: start it before "
                f"{max(0.0, length - 0.1):.1f} s."
            )
        seconds = round(seconds, 2)
        await self.store.set_in_point(clip.id, seconds)
        await self.store.audit(
            "trim_clip",
            actor_id=by,
            project_id=project.id,
            target=f"clip:{clip_id}",
            details={"in_point": seconds},
        )
        clip.in_point = seconds or None
        return clip

    async def clear_override(self, project: Project, clip_id: int, *, by: int) -> Clip:
        """Undo a pin or an exclusion. A clip whose post was deleted does not go back to
        the vote: its reactions went with the post, and it is not posted again."""
        clip = await self._clip_of(project, clip_id)
        await self.store.clear_override(project.id, clip_id)
        await self.store.audit(
            "clear_override",
            actor_id=by,
            project_id=project.id,
            target=f"clip:{clip_id}",
        )
        return clip

    async def _clip_of(self, project: Project, clip_id: int) -> Clip:
        # another server's clip reads as a missing one; this server's other projects' as such
        clip = await scope.clip_in(self.store, clip_id, project.guild_id)
        if clip.project_id != project.id:
            raise NotFound(f"Clip #{clip_id} is not part of “{project.title}”.")
        return clip

    # ------------------------------------------------------------------ rendering
    async def render(
        self, project: Project, *, by: int | None, progress: Progress | None = None
    ) -> Rendered:
        """Render the current winners: master, preview, manifest. Recorded as a preview cut."""
        if project.state not in (OPEN, CLOSED, APPROVED):
            raise InvalidState(f"The project is {project.state}; nothing to cut yet.")
        slots = await self.choose(project)
        if not slots:
            raise InvalidState("There are no clips to cut yet.")
        out_dir = self.settings.renders_dir / f"project-{project.id}"
        out_dir.mkdir(parents=True, exist_ok=True)
        song = self.app.media.path(project.song_key) if project.song_key else None
        s = self.settings
        style = await self.cut_options(project)
        result = await assemble(
            slots,
            song,
            out_dir,
            title=project.title,
            width=s.video_width,
            height=s.video_height,
            fps=s.video_fps,
            preview_limit_bytes=s.preview_max_bytes,
            ffmpeg_binary=self.app.ffmpeg,
            progress=progress,
            song_key=project.song_key,
            credits_seconds=None,  # as long as the roll needs to be read
            credits=song_credits(project),
            transition=style.transition,
            transition_seconds=style.transition_seconds,
            fit=style.fit,
            # segments are kept between renders: a re-cut renders only what changed
            cache_dir=s.data_dir / "segments",
        )
        media = self.app.media
        master_key = await asyncio.to_thread(media.put_file, result.master, "mp4")
        preview_key = await asyncio.to_thread(media.put_file, result.preview, "mp4")
        manifest_key = await asyncio.to_thread(media.put_file, result.manifest, "json")
        cut = await self.store.save_cut(
            project_id=project.id,
            slots=[_slot_record(s) for s in slots],
            master_key=master_key,
            preview_key=preview_key,
            manifest_key=manifest_key,
            created_by=by,
        )
        return Rendered(cut, result)

    async def cut_options(self, project: Project) -> CutOptions:
        """The project's style as the render takes it: its transition, that many beats long
        at the song's tempo (from its stored analysis; 0.5 s a beat without one), its fit."""
        tempo = None
        if project.song_key:
            analysis = await asyncio.to_thread(cached, self.app.media, project.song_key)
            tempo = analysis.tempo if analysis is not None else None
        s = self.settings
        return style_options(project, tempo, width=s.video_width, height=s.video_height,
                             fps=s.video_fps)  # fmt: skip

    async def storyboard(self, project: Project, dest: Path) -> Path:
        slots = await self.choose(project)
        if not slots:
            raise InvalidState("There are no clips to show yet.")
        return await storyboard(slots, dest)

    async def preview(
        self, project: Project, *, by: int, progress: Progress | None = None
    ) -> Rendered:
        """Render the current winners for the moderators to look at (audited)."""
        rendered = await self.render(project, by=by, progress=progress)
        await self.store.audit(
            "preview_cut", actor_id=by, project_id=project.id, target=f"cut:{rendered.cut.id}"
        )
        return rendered

    async def pending_decision(self, cut_id: int, guild_id: int | None) -> tuple[Project, Cut]:
        """The cut under an Approve / Not yet button pressed in the server ``guild_id``, if
        it can still be decided on (another server's cut reads as a missing one)."""
        project, cut = await scope.cut_in(self.store, cut_id, guild_id)
        if project.state == APPROVED:
            raise InvalidState("This project's cut is already approved.")
        latest = await self.store.latest_cut(project.id)
        if latest is not None and latest.id != cut.id:
            raise InvalidState(f"A newer cut (#{latest.id}) exists; approve that one.")
        return project, cut

    async def reject(self, project: Project, cut: Cut, *, by: int) -> None:
        """A moderator wants changes before approving (audited; nothing else changes)."""
        await self.store.audit(
            "reject_cut", actor_id=by, project_id=project.id, target=f"cut:{cut.id}"
        )

    async def approve(
        self, project: Project, cut: Cut, *, by: int, message_id: int | None = None
    ) -> Cut:
        if project.state == APPROVED:
            raise InvalidState("This project's cut is already approved.")
        if cut.project_id != project.id:
            raise InvalidState("That cut belongs to another project.")
        if project.state == OPEN:
            project = await self.store.set_project_state(project.id, CLOSED, by=by)
        approved = await self.store.approve_cut(cut.id, by=by, message_id=message_id)
        await self.store.audit(
            "approve_cut",
            actor_id=by,
            project_id=project.id,
            target=f"cut:{cut.id}",
            details={"clips": [s.get("clip_id") for s in cut.slots]},
        )
        return approved


def style_options(
    project: Project, tempo: float | None, *, width: int, height: int, fps: int
) -> CutOptions:
    """``CutOptions`` for ``project``'s style: ``transition_beats`` beats (default
    :data:`DEFAULT_TRANSITION_BEATS`) at ``tempo`` BPM, 0.5 s a beat without a tempo."""
    transition = project.transition or "cut"
    seconds = 0.0
    if transition != "cut":
        beats = project.transition_beats or DEFAULT_TRANSITION_BEATS
        beat = 60.0 / tempo if tempo else SECONDS_PER_BEAT_WITHOUT_TEMPO
        seconds = beats * beat
    return CutOptions(width=width, height=height, fps=fps, transition=transition,
                      transition_seconds=seconds, fit=project.fit or "hold")  # fmt: skip


def mark_broken_continuity(slots: list[CutSlot], clips: dict[int, Clip]) -> list[CutSlot]:
    """Flag each slot whose clip continues a clip that the slot before no longer plays: a
    chained clip whose slot N−1 now has another winner, or an extension of slot N−1's
    former clip. A reused clip (a stand-in) is not flagged."""
    by_index = {s.index: s for s in slots}
    out = []
    for s in slots:
        broken = False
        parent = clips.get(s.parent_clip_id) if s.parent_clip_id is not None else None
        before = by_index.get(s.index - 1)
        continues_previous = s.lineage == "chain" or (
            parent is not None and parent.slot is not None and parent.slot == s.index - 1
        )
        if s.parent_clip_id is not None and not s.reused and s.index > 0 and continues_previous:
            broken = before is None or before.clip_id != s.parent_clip_id
        out.append(replace(s, continuity_broken=broken) if broken else s)
    return out


def song_credits(project: Project, *moderators: str) -> Credits:
    """The credits of a cut of ``project``: its song's credit, and who approved it."""
    return Credits(song_credit=project.song_credit or "", moderators=tuple(moderators))


def _slot_record(s: CutSlot) -> dict[str, object]:
    return {
        "index": s.index,
        "start": s.start,
        "duration": s.duration,
        "clip_id": s.clip_id,
        "author": s.author,
        "prompt": s.prompt,
        "backend": s.backend,
        "model": s.model,
        "votes": s.votes,
        "reused": s.reused,
        "post_deleted": s.post_deleted,
        "pinned": s.pinned,
        "parent_clip_id": s.parent_clip_id,
        "lineage": s.lineage or None,
        "continuity_broken": s.continuity_broken,
        "in_point": s.in_point,
    }
