"""Prompts enter here: validated, checked against the quota, and queued as jobs."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from bot.app import App
from bot.core import projects as project_rules
from bot.core.prompts import validate_prompt
from bot.core.queue import Position
from bot.errors import InvalidPrompt, InvalidState, NotFound, PermissionDenied, QuotaExceeded
from bot.generators.base import Generator
from bot.media.clips import last_frame_png
from bot.media.images import check_reference_image_async
from bot.services import scope
from bot.services.cuts import CutService
from bot.services.usage import UsageService
from bot.services.worker import GenerationWorker
from storage.models import Clip, Job, Project
from storage.store import QuotaFull

log = logging.getLogger(__name__)

ASPECTS = ("16:9", "9:16", "1:1")


@dataclass(frozen=True)
class Submission:
    job: Job
    position: Position | None  # None while it waits for a moderator
    note: str | None = None  # for the receipt (chain mode: what the prompt continues)


@dataclass(frozen=True)
class Author:
    """Who submits: a Discord member (or a simulated one)."""

    id: int
    name: str
    is_bot: bool = False


class SubmissionService:
    def __init__(self, app: App, worker: GenerationWorker) -> None:
        self.app = app
        self.store = app.store
        self.worker = worker
        self.settings = app.settings
        self.usage = UsageService(app)

    async def submit(
        self,
        project: Project | None,
        author: Author,
        prompt: str | None,
        *,
        image: bytes | None = None,
        slot: int | None = None,
        duration: float | None = None,
        aspect: str | None = None,
        channel_id: int | None = None,
        extends_clip_id: int | None = None,
        seed: int | None = None,
        lineage: str | None = None,
    ) -> Submission:
        """Validate everything, then queue. Raises a ``UserFacingError`` saying what is wrong;
        nothing is stored unless everything passed.

        In chain mode a prompt for slot N ≥ 2 without an image continues slot N−1's current
        winner: that clip's last frame is its reference, and the job records it as its
        parent (lineage "chain"); with no winner there yet it goes on from text alone."""
        s = self.settings
        if project is None:
            raise NotFound("There is no open project here. A moderator can start one.")
        if not project_rules.accepts_prompts(project.state):
            raise InvalidState(
                f"The project “{project.title}” is {project.state}; "
                "it is not taking prompts right now."
            )
        text = validate_prompt(
            prompt, max_chars=s.prompt_max_chars, blocked_words=s.blocked_word_list
        )
        if author.is_bot:
            raise PermissionDenied("Bots cannot submit prompts.")
        if slot is not None and not 0 <= slot < max(1, len(project.slot_plan)):
            raise InvalidPrompt(
                f"Slot {slot + 1} does not exist; this project has slots "
                f"1 to {len(project.slot_plan)}."
            )
        if duration is None:
            duration = (
                project.slot_plan[slot].duration
                if slot is not None and project.slot_plan
                else s.clip_seconds
            )
        if not 1.0 <= duration <= s.max_clip_seconds:
            raise InvalidPrompt(
                f"A clip can last from 1 to {s.max_clip_seconds:g} seconds; "
                f"you asked for {duration:g}."
            )
        aspect = aspect or "16:9"
        if aspect not in ASPECTS:
            raise InvalidPrompt(
                f"Aspect {aspect!r} is not offered; choose one of {', '.join(ASPECTS)}."
            )
        generator = self.worker.router.primary(project.backend)
        note = None
        chain_from: Clip | None = None
        if project.chain_mode and image is None and extends_clip_id is None and slot:
            if not generator.capabilities.image_input:
                note = "Chain mode: this server's video generator works from text alone."
            elif (chain_from := await self._previous_winner(project, slot)) is not None:
                note = (
                    f"Chain mode: it continues clip #{chain_from.id}, slot {slot}'s winner "
                    "now, from its last frame."
                )
            else:
                note = f"Chain mode: slot {slot} has no winner yet; it starts from your text alone."
        has_image = image is not None or chain_from is not None
        seconds = _check_capabilities(generator, text, duration, aspect, has_image)
        # cheap check first, so a member over quota is told before an image upload is decoded
        active = await self.store.count_active_jobs(author.id)
        if active >= s.max_jobs_per_member:
            raise QuotaExceeded(_quota_text(active, s.max_jobs_per_member))
        # cheap check before the image is decoded and stored; repeated at the insert
        await self.usage.check_budget(project, author.id, generator.name, seconds)
        if chain_from is not None:
            image = await self._last_frame(chain_from)
            extends_clip_id, lineage = chain_from.id, "chain"
        image_key = None
        if image is not None:
            checked = await check_reference_image_async(
                image, max_bytes=s.image_max_bytes, max_pixels=s.image_max_pixels
            )
            image_key = await asyncio.to_thread(self.app.media.put_bytes, checked.png_bytes, "png")
        await self.store.upsert_member(author.id, author.name, is_bot=author.is_bot)
        moderation = "pending" if s.premoderation else "none"
        try:
            # the budget check and the insert are one step: a burst cannot overrun it
            async with self.usage.reserve(project, author.id, generator.name, seconds):
                job = await self.store.add_job(
                    project_id=project.id,
                    member_id=author.id,
                    prompt=text,
                    channel_id=channel_id if channel_id is not None else project.channel_id,
                    duration=float(duration),
                    aspect=aspect,
                    seed=seed if seed is not None else secrets.randbelow(2**31),
                    image_key=image_key,
                    slot=slot,
                    extends_clip_id=extends_clip_id,
                    lineage=lineage,
                    moderation=moderation,
                    max_active=s.max_jobs_per_member,
                )
        except QuotaFull as full:
            raise QuotaExceeded(_quota_text(full.active, s.max_jobs_per_member)) from None
        log.info("job %s queued for member %s (project %s)", job.id, author.id, project.id)
        if moderation == "pending":
            return Submission(job, None, note)
        self.worker.wake()
        return Submission(job, await self.worker.position(job.id), note)

    async def _previous_winner(self, project: Project, slot: int) -> Clip | None:
        """The clip the cut would take for slot ``slot - 1`` right now; None when that slot
        has no clip of its own (a stand-in reused from elsewhere is not its winner)."""
        # the cut's own choice, not a copy of it
        for chosen in await CutService(self.app).choose(project):
            if chosen.index == slot - 1 and chosen.clip_id is not None and not chosen.reused:
                return await self.store.get_clip(chosen.clip_id)
        return None

    async def _last_frame(self, clip: Clip) -> bytes:
        """The clip's last frame as PNG bytes (through a temporary file)."""
        src = self.app.media.path(clip.media_key)
        dest = Path(self.app.tmp_dir) / f"lastframe-{clip.id}-{secrets.token_hex(4)}.png"
        try:
            await last_frame_png(src, dest)
            return await asyncio.to_thread(dest.read_bytes)
        finally:
            dest.unlink(missing_ok=True)

    async def extend(
        self,
        project: Project | None,
        author: Author,
        clip_id: int,
        prompt: str | None,
        **kwargs: object,
    ) -> Submission:
        """A new prompt that continues from the last frame of an existing clip of this
        project's server (another server's clip reads as one that does not exist)."""
        if project is None:
            raise NotFound("There is no open project here. A moderator can start one.")
        clip = await scope.clip_in(self.store, clip_id, project.guild_id)
        if clip.project_id != project.id:
            raise InvalidState(f"Clip #{clip_id} belongs to another project.")
        frame = await self._last_frame(clip)
        kwargs.setdefault(
            "slot",
            None
            if clip.slot is None
            else min(clip.slot + 1, max(0, len(project.slot_plan if project else []) - 1)),
        )
        return await self.submit(
            project,
            author,
            prompt,
            image=frame,
            extends_clip_id=clip_id,
            lineage="extend",
            **kwargs,
        )  # type: ignore[arg-type]

    async def cancel(
        self, job_id: int, by: Author, *, is_moderator: bool, guild_id: int | None
    ) -> Job:
        """Cancel a job of the server ``guild_id``: the author's own, or any as a moderator."""
        job = await scope.job_in(self.store, job_id, guild_id)
        if job.member_id != by.id and not is_moderator:
            raise PermissionDenied("Only the job's author or a moderator can cancel it.")
        before = await self.store.cancel_job(job_id)
        if before is None:
            raise InvalidState(f"Job #{job_id} is already {job.state}; there is nothing to cancel.")
        await self.worker.cancel(before)
        if job.member_id != by.id:
            await self.store.audit(
                "cancel_job", actor_id=by.id, project_id=job.project_id, target=f"job:{job_id}"
            )
        return await self.store.get_job(job_id)  # type: ignore[return-value]

    async def my_jobs(
        self, member_id: int, guild_id: int | None = None
    ) -> list[tuple[Job, Position | None]]:
        """A member's active jobs with their places: in the server ``guild_id``, or
        everywhere (their own jobs, asked outside any server)."""
        jobs = await self.store.member_jobs(member_id, active_only=True)
        if guild_id is not None:
            here = await scope.guild_project_ids(self.store, guild_id)
            jobs = [j for j in jobs if j.project_id in here]
        return [(j, await self.worker.position(j.id)) for j in jobs]

    async def moderate(
        self, job_id: int, by: Author, *, approve: bool, guild_id: int | None
    ) -> Job:
        """A moderator of the server ``guild_id`` approves or rejects a waiting prompt."""
        await scope.job_in(self.store, job_id, guild_id)
        job = await self.store.set_moderation(job_id, "approved" if approve else "rejected")
        if job is None:
            current = await self.store.get_job(job_id)
            if current is None:
                raise NotFound(f"There is no job #{job_id}.")
            raise InvalidState(f"Job #{job_id} was already {current.moderation}.")
        await self.store.audit(
            "approve_prompt" if approve else "reject_prompt",
            actor_id=by.id,
            project_id=job.project_id,
            target=f"job:{job_id}",
        )
        if approve:
            self.worker.wake()
        return job


def _check_capabilities(
    generator: Generator, prompt: str, duration: float, aspect: str, has_image: bool
) -> float:
    """Refuse at once what the backend cannot make; return the length it will be asked
    for (the shortest it accepts that covers ``duration``: the cut trims the rest)."""
    caps = generator.capabilities
    who = f"This server's video generator ({generator.name})"
    if len(prompt) > caps.max_prompt_chars:
        raise InvalidPrompt(
            f"{who} takes prompts of up to {caps.max_prompt_chars} characters; "
            f"yours has {len(prompt)}."
        )
    seconds = caps.duration_for(duration)
    if seconds is None:
        raise InvalidPrompt(
            f"{who} makes clips of at most {caps.longest:g} seconds; you asked for {duration:g}."
        )
    if aspect not in caps.aspects:
        raise InvalidPrompt(f"{who} makes {', '.join(caps.aspects)} clips, not {aspect}.")
    if has_image and not caps.image_input:
        raise InvalidPrompt(f"{who} works from text only; send the prompt without an image.")
    if not has_image and caps.image_required:
        raise InvalidPrompt(
            f"{who} needs a reference image: attach one, or continue a clip with /extend."
        )
    return seconds


def _quota_text(active: int, limit: int) -> str:
    return (
        f"You already have {active} job{'s' if active != 1 else ''} waiting or generating "
        f"(the limit is {limit}). Wait for one to finish, or cancel one."
    )
