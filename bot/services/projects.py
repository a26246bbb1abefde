"""Projects: created with a title and optionally a song, opened, closed."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from pathlib import Path

from bot.app import App
from bot.core import projects as rules
from bot.errors import InvalidClip, InvalidState, NotFound, UserFacingError
from bot.media.beats import DERIVED_NAME, NotAudio, SongAnalysis, analyse_song
from bot.media.probe import probe_async
from bot.media.segments import FITS, TRANSITIONS
from bot.media.song import song_credit_from_tags
from bot.services.slot_plans import SlotPlanService, plan_song
from storage.models import Project, Slot

log = logging.getLogger(__name__)

MAX_SONG_SECONDS = 20 * 60
DEFAULT_SLOTS_WITHOUT_SONG = 8
MAX_TRANSITION_BEATS = 4.0


class InvalidSong(UserFacingError):
    """The song attachment was refused."""


class ProjectService:
    def __init__(self, app: App) -> None:
        self.app = app
        self.store = app.store
        self.settings = app.settings
        self.plans = SlotPlanService(app)

    async def create(
        self,
        *,
        guild_id: int,
        channel_id: int,
        title: str,
        by: int,
        song: bytes | None = None,
        song_name: str | None = None,
        slots: int | None = None,
        open_now: bool = True,
    ) -> Project:
        title = " ".join((title or "").split())
        if not title:
            raise InvalidState("A project needs a title.")
        if len(title) > 100:
            raise InvalidState("A project title can be at most 100 characters.")
        current = await self.store.current_project(guild_id, channel_id)
        if current is not None and current.state in (rules.DRAFT, rules.OPEN, rules.CLOSED):
            raise InvalidState(
                f"This channel already has the project “{current.title}” "
                f"({current.state}). Approve its cut before starting another."
            )
        song_key = song_seconds = None
        credit = ""
        # slots as long as the clips the backend is made for
        natural = self.app.generator.capabilities.natural_seconds
        if song is not None:
            # on the song's bars; a song with no beat gets even slots (the answer says so)
            song_key, song_seconds, analysis, credit = await self._store_song(
                song, clip_seconds=natural
            )
            plan = plan_song(song_seconds, analysis, natural).slots
        else:
            n = slots or DEFAULT_SLOTS_WITHOUT_SONG
            plan = [Slot(i, i * natural, natural) for i in range(n)]
        project = await self.store.create_project(
            guild_id=guild_id,
            channel_id=channel_id,
            title=title,
            created_by=by,
            slot_plan=plan,
            song_key=song_key,
            song_name=_safe_name(song_name),
            song_seconds=song_seconds,
            song_credit=credit,  # from the song's tags; /project credit changes it
        )
        await self.store.audit(
            "create_project",
            actor_id=by,
            project_id=project.id,
            target=f"project:{project.id}",
            details={"title": title, "slots": len(plan)},
        )
        if open_now:
            project = await self.open(project.id, by=by)
        return project

    async def _store_song(
        self, data: bytes, *, clip_seconds: float
    ) -> tuple[str, float, SongAnalysis, str]:
        """Check, analyse and store a song; its analysis is kept beside it. Returns its key,
        length, analysis and credit (from its tags). Refused: not audio, no audio track,
        silent, shorter than one slot, longer than the limit."""
        if len(data) > 100 * 1024 * 1024:
            raise InvalidSong("That song file is over 100 MB; send a compressed audio file.")
        tmp = Path(self.app.tmp_dir) / f"song-{secrets.token_hex(6)}.bin"
        await asyncio.to_thread(tmp.write_bytes, data)
        try:
            try:
                info = await probe_async(tmp)
            except InvalidClip:
                raise InvalidSong(
                    "That attachment is not an audio file crowdcut can read. "
                    "Send an MP3, M4A, WAV or OGG song."
                ) from None
            if not info.has_audio:
                raise InvalidSong("That file has no audio track.")
            if not info.duration or info.duration < 1:
                raise InvalidSong("That song is shorter than a second.")
            if info.duration < clip_seconds:
                raise InvalidSong(
                    f"That song lasts {info.duration:.1f} s, shorter than one slot: the "
                    f"video generator makes clips of {clip_seconds:g} s. Send a song of at "
                    f"least {clip_seconds:g} s."
                )
            if info.duration > MAX_SONG_SECONDS:
                raise InvalidSong(
                    f"That song lasts {info.duration / 60:.0f} minutes; "
                    f"the limit is {MAX_SONG_SECONDS // 60}."
                )
            try:
                analysis = await analyse_song(tmp)  # in a thread: a second or two
            except NotAudio:
                raise InvalidSong(
                    "That file's audio could not be decoded. Send an MP3, M4A, WAV or OGG song."
                ) from None
            if analysis.silent:
                raise InvalidSong(
                    f"That song is silent (its level is {analysis.rms_db:.0f} dBFS); "
                    "check the file and send it again."
                )
            credit = await asyncio.to_thread(song_credit_from_tags, tmp)
            key = await asyncio.to_thread(
                self.app.media.put_file,
                tmp,
                "m4a" if info.audio_codec == "aac" else "bin",
                move=True,
            )
            await asyncio.to_thread(
                self.app.media.put_derived, key, DERIVED_NAME, analysis.to_json()
            )
            return key, float(info.duration), analysis, credit
        finally:
            tmp.unlink(missing_ok=True)

    async def set_credit(self, project: Project, text: str | None, *, by: int) -> Project:
        """The song's credit on the roll and the pages ("“Title” by Artist, CC BY 4.0");
        empty: none. Until the cut is approved (the published video carries it)."""
        if project.state == rules.APPROVED:
            raise InvalidState("This project's cut is already approved.")
        credit = " ".join((text or "").split())
        if len(credit) > 200:
            raise InvalidState("A song credit can be at most 200 characters.")
        await self.store.set_song_credit(project.id, credit)
        await self.store.audit(
            "song_credit",
            actor_id=by,
            project_id=project.id,
            target=f"project:{project.id}",
            details={"credit": credit},
        )
        return await self.get(project.id)

    async def get(self, project_id: int) -> Project:
        p = await self.store.get_project(project_id)
        if p is None:
            raise NotFound(f"There is no project #{project_id}.")
        return p

    async def current(self, guild_id: int, channel_id: int | None = None) -> Project | None:
        return await self.store.current_project(guild_id, channel_id)

    async def open(self, project_id: int, *, by: int, hours: float | None = None) -> Project:
        p = await self.get(project_id)
        rules.check_transition(p.state, rules.OPEN)
        ends = None
        if hours:
            ends = time.time() + hours * 3600
        p = await self.store.set_project_state(project_id, rules.OPEN, by=by, voting_ends_at=ends)
        await self.store.audit(
            "open_project",
            actor_id=by,
            project_id=p.id,
            target=f"project:{p.id}",
            details={"voting_ends_at": ends},
        )
        return p

    async def close(self, project_id: int, *, by: int | None) -> Project:
        p = await self.get(project_id)
        rules.check_transition(p.state, rules.CLOSED)
        p = await self.store.set_project_state(project_id, rules.CLOSED, by=by)
        await self.store.audit(
            "close_project",
            actor_id=by,
            project_id=p.id,
            target=f"project:{p.id}",
        )
        return p

    async def set_backend(self, project_id: int, backend: str | None, *, by: int) -> Project:
        """Send the project's new jobs to ``backend`` first (``None``: the configured order).
        Only a configured backend can be chosen; jobs already sent stay where they are."""
        p = await self.get(project_id)
        name = (backend or "").strip().lower() or None
        configured = list(self.app.generators)
        if name is not None and name not in configured:
            raise InvalidState(
                f"“{backend}” is not one of this server's video generators "
                f"({', '.join(configured)})."
            )
        p = await self.store.set_project_backend(p.id, name)
        await self.store.audit(
            "set_backend",
            actor_id=by,
            project_id=p.id,
            target=f"project:{p.id}",
            details={"backend": name},
        )
        return p

    async def set_style(
        self,
        project_id: int,
        *,
        by: int,
        transition: str | None = None,
        beats: float | None = None,
        fit: str | None = None,
        chain: bool | None = None,
    ) -> Project:
        """Change the project's style: its transition (cut, crossfade, dip, zoom), the
        transition's length in beats, how a short clip fills its slot (hold, slow) and chain
        mode. What is not given keeps its value; every change is audited."""
        p = await self.get(project_id)
        changes: dict[str, object] = {}
        if transition is not None:
            name = transition.strip().lower()
            if name not in TRANSITIONS:
                raise InvalidState(
                    f"“{transition}” is not a transition; choose one of {', '.join(TRANSITIONS)}."
                )
            changes["transition"] = name
        if beats is not None:
            if not (math.isfinite(beats) and 0 < beats <= MAX_TRANSITION_BEATS):
                raise InvalidState(
                    f"A transition lasts a fraction of a beat up to {MAX_TRANSITION_BEATS:g} "
                    f"beats (0.5 is half a beat); {beats:g} is not."
                )
            changes["transition_beats"] = float(beats)
        if fit is not None:
            how = fit.strip().lower()
            if how not in FITS:
                raise InvalidState(
                    f"“{fit}” is not a fit; choose hold (the last frame is held) or slow "
                    "(the clip is slowed down to fill its slot)."
                )
            changes["fit"] = how
        if chain is not None:
            changes["chain_mode"] = bool(chain)
        if not changes:
            return p
        p = await self.store.set_project_style(p.id, changes)
        await self.store.audit(
            "set_style",
            actor_id=by,
            project_id=p.id,
            target=f"project:{p.id}",
            details=changes,
        )
        return p


def _safe_name(name: str | None) -> str | None:
    if not name:
        return None
    keep = "".join(c for c in name if c.isprintable())[:100]
    return keep or None
