"""The generation worker: jobs wait in SQLite and are generated here.

One loop dispatches queued jobs in fair order (``bot.core.queue``) within the global
and per-backend limits; each dispatched job is driven by its own task: submit,
poll, download, validate, store. State lives in the database, so the process can
die at any moment:

- a job that was *queued* stays queued;
- a job that was *submitted* with a stored provider job id is resumed by polling
  that id (never submitted again);
- a job claimed but not yet acknowledged by the provider (no id stored) is queued
  again;
- a clip row is unique per job, so a finished job yields exactly one clip.

Transient failures (rate limits, outages, garbage answers) are retried with
exponential backoff up to ``RETRY_MAX_ATTEMPTS``; permanent ones (refused content,
invalid input, auth) fail at once with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bot.app import App
from bot.core.queue import Position, backoff_delay, estimate_run_seconds, next_jobs, queue_position
from bot.errors import GeneratorError, GeneratorErrorKind, InvalidClip, MediaError
from bot.generators.base import GenerationRequest, JobState
from bot.media.clips import validate_clip
from storage.models import CANCELED, QUEUED, RUNNING, SUBMITTED, Clip, Job

log = logging.getLogger(__name__)


class WorkerEvents(Protocol):
    """What the worker tells the outside world (the Discord front end, the demo)."""

    async def job_changed(self, job: Job) -> None: ...

    async def clip_ready(self, clip: Clip, job: Job) -> None: ...


class NoEvents:
    async def job_changed(self, job: Job) -> None:
        return None

    async def clip_ready(self, clip: Clip, job: Job) -> None:
        return None


class GenerationWorker:
    """Runs the queue. ``start()`` recovers and begins; ``stop()`` leaves jobs resumable."""

    def __init__(
        self,
        app: App,
        *,
        events: WorkerEvents | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.store = app.store
        self.generator = app.generator
        self.settings = app.settings
        self.events: WorkerEvents = events or NoEvents()
        self.clock = clock
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ limits
    @property
    def concurrency(self) -> int:
        return max(
            1,
            min(
                self.settings.generator_concurrency,
                self.settings.backend_concurrency,
                getattr(self.generator, "max_concurrency", 1) or 1,
            ),
        )

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.recover()
        self._loop_task = asyncio.create_task(self._run(), name="crowdcut-worker")

    async def stop(self) -> None:
        """Stop dispatching and polling. Jobs in flight stay submitted, to be resumed."""
        tasks = list(self._tasks.values())
        if self._loop_task:
            tasks.append(self._loop_task)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        self._loop_task = None

    def wake(self) -> None:
        """A job was queued, approved or canceled: look at the queue now."""
        self._wake.set()

    async def recover(self) -> int:
        """Resume what a previous process left in flight. Returns how many jobs resumed."""
        resumed = 0
        for job in await self.store.jobs_by_state(SUBMITTED, RUNNING):
            if job.id in self._tasks:
                continue
            if job.provider_job_id:
                log.info(
                    "resuming job %s (provider id %s) after a restart", job.id, job.provider_job_id
                )
                self._spawn(job)
                resumed += 1
            else:
                # claimed, but the provider never acknowledged it: submit it again
                await self.store.requeue_job(
                    job.id,
                    next_attempt_at=self.clock(),
                    error="interrupted before the generator accepted it",
                    error_kind="interrupted",
                )
        return resumed

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until nothing is queued or in flight (used by the demo and tests)."""

        async def _poll() -> None:
            while True:
                counts = await self.store.job_counts()
                if not self._tasks and not any(counts.get(s) for s in (QUEUED, SUBMITTED, RUNNING)):
                    return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(_poll(), timeout)

    # ------------------------------------------------------------------ queue info
    async def position(self, job_id: int) -> Position | None:
        """Where a queued job stands and when its clip should be ready."""
        waiting = await self.store.dispatchable_jobs()
        last = await self.store.last_dispatch_by_member()
        recent = await self.store.recent_run_seconds(self.generator.name)
        run_seconds = estimate_run_seconds(recent, default=self._default_run_seconds())
        job = await self.store.get_job(job_id)
        if job is None:
            return None
        if job.state in (SUBMITTED, RUNNING):
            left = run_seconds * (1 - (job.progress or 0))
            return Position(position=0, ahead=0, eta_seconds=max(1.0, left))
        return queue_position(
            job_id,
            waiting,
            running=self.in_flight,
            concurrency=self.concurrency,
            run_seconds=run_seconds,
            last_served=last,
        )

    def _default_run_seconds(self) -> float:
        return float(getattr(self.generator, "clip_seconds", self.settings.clip_seconds)) * 2

    # ------------------------------------------------------------------ dispatch
    async def _run(self) -> None:
        while True:
            try:
                await self.dispatch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the dispatch loop failed; trying again shortly")
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)

    async def dispatch(self) -> list[int]:
        """Start as many waiting jobs as the limits allow; returns their ids."""
        free = self.concurrency - self.in_flight
        if free <= 0:
            return []
        waiting = await self.store.dispatchable_jobs()
        if not waiting:
            return []
        last = await self.store.last_dispatch_by_member()
        running_by_member: dict[int, int] = {}
        for t in self._tasks.values():
            m = getattr(t, "crowdcut_member", None)
            if m is not None:
                running_by_member[m] = running_by_member.get(m, 0) + 1
        started = []
        for job in next_jobs(
            waiting,
            now=self.clock(),
            slots_free=free,
            last_served=last,
            running_by_member=running_by_member,
        ):
            claimed = await self.store.claim_job(job.id, self.generator.name)
            if claimed is None:
                continue  # canceled in the meantime
            self._spawn(claimed)
            started.append(claimed.id)
            await self._notify(claimed)
        return started

    def _spawn(self, job: Job) -> None:
        task = asyncio.create_task(self._drive(job), name=f"crowdcut-job-{job.id}")
        task.crowdcut_member = job.member_id  # type: ignore[attr-defined]
        self._tasks[job.id] = task

        def _done(t: asyncio.Task[None], job_id: int = job.id) -> None:
            self._tasks.pop(job_id, None)
            self._wake.set()

        task.add_done_callback(_done)

    async def cancel(self, job: Job) -> None:
        """Tell the provider a job was canceled (the database already says so)."""
        task = self._tasks.get(job.id)
        if job.provider_job_id:
            try:
                await self.generator.cancel(job.provider_job_id)
            except GeneratorError as e:
                log.warning("could not cancel job %s at the provider: %s", job.id, e)
        if task is not None:
            task.cancel()
        self.wake()

    # ------------------------------------------------------------------ one job
    async def _drive(self, job: Job) -> None:
        try:
            await self._drive_inner(job)
        except asyncio.CancelledError:
            raise
        except GeneratorError as e:
            await self._failed(job, e)
        except (InvalidClip, MediaError) as e:
            await self._failed(
                job,
                GeneratorError(
                    GeneratorErrorKind.UNKNOWN,
                    f"the generator returned a file that is not a usable video ({e})",
                ),
            )
        except Exception as e:
            log.exception("job %s failed unexpectedly", job.id)
            await self._failed(
                job, GeneratorError(GeneratorErrorKind.UNKNOWN, f"unexpected error: {e}")
            )

    async def _drive_inner(self, job: Job) -> None:
        pid = job.provider_job_id
        if pid is None:
            pid = await self.generator.submit(await self._request(job))
            await self.store.set_provider_job_id(job.id, pid)
        last_progress = -1.0
        while True:
            current = await self.store.get_job(job.id)
            if current is None or current.state == CANCELED:
                with contextlib.suppress(GeneratorError):
                    await self.generator.cancel(pid)
                return
            status = await self.generator.poll(pid)
            if status.state in (JobState.QUEUED, JobState.RUNNING):
                p = status.progress if status.progress is not None else None
                if status.state == JobState.RUNNING and (
                    p is None or p - last_progress >= 0.05 or current.state != RUNNING
                ):
                    await self.store.mark_running(job.id, p)
                    last_progress = p if p is not None else last_progress
                    await self._notify(await self.store.get_job(job.id))
            elif status.state == JobState.DONE:
                await self._finish(job, pid)
                return
            elif status.state == JobState.FAILED:
                raise status.error or GeneratorError(
                    GeneratorErrorKind.UNKNOWN, "the generator reported a failure"
                )
            elif status.state == JobState.CANCELED:
                await self.store.cancel_job(job.id)
                await self._notify(await self.store.get_job(job.id))
                return
            await asyncio.sleep(self.settings.poll_seconds)

    async def _request(self, job: Job) -> GenerationRequest:
        image = None
        if job.image_key:
            image = await asyncio.to_thread(self.app.media.read_bytes, job.image_key)
        return GenerationRequest(
            prompt=job.prompt,
            duration=job.duration or self.settings.clip_seconds,
            aspect=job.aspect or "16:9",
            seed=job.seed or 0,
            image=image,
            idempotency_key=f"crowdcut-job-{job.id}-{job.attempts}",
        )

    async def _finish(self, job: Job, pid: str) -> None:
        tmp = Path(self.app.tmp_dir) / f"job-{job.id}-{pid.replace('/', '_')}.mp4"
        try:
            await self.generator.download(pid, tmp)
            info = await validate_clip(tmp)
            key = await asyncio.to_thread(self.app.media.put_file, tmp, "mp4", move=True)
        finally:
            tmp.unlink(missing_ok=True)
        clip = await self.store.complete_job(
            job.id,
            media_key=key,
            duration=info.duration,
            width=info.width or 0,
            height=info.height or 0,
            fps=float(info.frame_rate or 0),
            has_audio=info.has_audio,
            size_bytes=info.size_bytes,
        )
        done = await self.store.get_job(job.id)
        if clip is None or done is None:
            return  # canceled while downloading
        log.info("job %s done: clip %s", job.id, clip.id)
        await self._notify(done)
        try:
            await self.events.clip_ready(clip, done)
        except Exception:
            log.exception("posting clip %s failed; it will be posted on the next start", clip.id)

    async def _failed(self, job: Job, error: GeneratorError) -> None:
        current = await self.store.get_job(job.id)
        if current is None or current.state not in (SUBMITTED, RUNNING):
            return
        if error.transient and current.attempts < self.settings.retry_max_attempts:
            delay = backoff_delay(
                current.attempts,
                base=self.settings.retry_base_seconds,
                cap=self.settings.retry_max_seconds,
                retry_after=error.retry_after,
            )
            log.warning(
                "job %s try %d failed (%s: %s); retrying in %.1fs",
                job.id,
                current.attempts,
                error.kind.value,
                error.message,
                delay,
            )
            await self.store.requeue_job(
                job.id,
                next_attempt_at=self.clock() + delay,
                error=error.message,
                error_kind=error.kind.value,
            )
        else:
            log.warning("job %s failed for good (%s: %s)", job.id, error.kind.value, error.message)
            await self.store.fail_job(
                job.id, error=_failure_text(error, current.attempts), error_kind=error.kind.value
            )
        await self._notify(await self.store.get_job(job.id))

    async def _notify(self, job: Job | None) -> None:
        if job is None:
            return
        try:
            await self.events.job_changed(job)
        except Exception:
            log.exception("reporting job %s's state failed", job.id)


def _failure_text(error: GeneratorError, attempts: int) -> str:
    """A reason a member can read."""
    kind = error.kind
    if kind == GeneratorErrorKind.CONTENT_POLICY:
        return f"The generator refused this prompt under its content policy: {error.message}"
    if kind == GeneratorErrorKind.INVALID_INPUT:
        return f"The generator could not use this input: {error.message}"
    if kind == GeneratorErrorKind.AUTH:
        return (
            "The generator rejected crowdcut's credentials; the operator has been told in the logs."
        )
    return f"Generation failed after {attempts} tries: {error.message}"
