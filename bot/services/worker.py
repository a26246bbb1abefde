"""The generation worker: jobs wait in SQLite and are generated here.

One loop dispatches queued jobs in fair order (``bot.core.queue``) within the global
limit and each backend's own (``bot.services.routing`` picks the backend); each
dispatched job is driven by its own task: submit, follow, download, validate, store.
State lives in the database, so the process can die at any line.

**Never pay twice.** A generation costs the operator money, so the rules are:

- A *submission* gets a UUID (``submit_key``) stored with the claim, before anything is
  sent; the request carries it (an idempotency key, ComfyUI's ``prompt_id``).
- Once the provider confirmed a submission, its job id is stored (with its ledger row)
  and ``attempts`` counts it. From then on every failure to poll or download (429, 5xx,
  timeouts, a truncated or garbled download) is retried with capped backoff **on that
  same job id**; the job is never submitted again for it. A provider that stops
  answering for ``JOB_STALL_SECONDS`` fails the job, still without a second submission.
- A submit whose outcome is unknown (the request went out, no answer came back), or one
  cut short by a crash, is resolved with the backend's ``find`` before anything is sent
  again: found, the job goes on with that id; certainly absent, the same submission is
  sent again; a backend that cannot tell fails the job and says why.
- A submit the provider refused with a 429 or 5xx *answer*, or that never connected, did
  not create a job: it goes back to the queue with backoff, up to ``RETRY_MAX_ATTEMPTS``
  claims.
- A generation the provider reports failed (a transient kind) is submitted anew, up to
  ``RETRY_MAX_ATTEMPTS`` submissions (or the error's own ``max_submissions``).
- An output whose URL has expired is looked up again for a fresh one; only when it is
  gone for good is the clip generated again, and the member's status message says why.
- A clip row is unique per job, so a finished job yields exactly one clip.

What members read about a failure is a fixed sentence per kind (:func:`failure_text`);
the provider's own words go to the operator's log, with the job id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bot.app import App
from bot.core.costs import cost_of
from bot.core.queue import Position, estimate_run_seconds, next_jobs, queue_position
from bot.errors import (
    CrowdcutError,
    GeneratorError,
    GeneratorErrorKind,
    InvalidClip,
    MediaError,
    StorageFull,
)
from bot.generators.base import GenerationRequest, Generator, JobState
from bot.media.clips import check_clip
from bot.media.probe import ProbeResult
from bot.services.durable import DurableWorker
from bot.services.routing import BackendRouter
from storage.models import CANCELED, QUEUED, RUNNING, SUBMITTED, Charge, Clip, Job

log = logging.getLogger(__name__)

K = GeneratorErrorKind


class WorkerEvents(Protocol):
    """What the worker tells the outside world (the Discord front end, the demo)."""

    async def job_changed(self, job: Job) -> None: ...

    async def clip_ready(self, clip: Clip, job: Job) -> None: ...


class NoEvents:
    async def job_changed(self, job: Job) -> None:
        return None

    async def clip_ready(self, clip: Clip, job: Job) -> None:
        return None


class _Done(Exception):
    """Internal: the job reached a terminal state (or was canceled); stop driving it."""


class _FailForGood(Exception):
    """Internal: fail the job without submitting it again (its generation may be paid)."""

    def __init__(self, error: GeneratorError) -> None:
        super().__init__(error.message)
        self.error = error


class GenerationWorker(DurableWorker):
    """Runs the queue. ``start()`` recovers and begins; ``stop()`` leaves jobs resumable.

    The durable-work pattern (:mod:`bot.services.durable`) with the jobs table as its rows
    and the fair queue as its claim order."""

    name = "generation"

    def __init__(
        self,
        app: App,
        *,
        events: WorkerEvents | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.app = app
        self.store = app.store
        self.settings = app.settings
        self.generators = app.generators
        self.router = BackendRouter(
            app.generators, failover_seconds=app.settings.failover_seconds, clock=clock
        )
        self.events: WorkerEvents = events or NoEvents()
        self.clock = clock
        self._checks: list[asyncio.Task[None]] = []
        #: reference images the dispatcher started reading while it claimed their jobs
        self._images: dict[int, asyncio.Future[bytes]] = {}

    @property
    def generator(self) -> Generator:
        """The first configured backend."""
        return self.app.generator

    # ------------------------------------------------------------------ limits
    @property
    def concurrency(self) -> int:
        """Jobs generating at once over all backends."""
        total = sum(max(1, g.max_concurrency or 1) for g in self.generators.values())
        return max(1, min(self.settings.generator_concurrency, total))

    @property
    def capacity(self) -> int:
        return self.concurrency

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await super().start()
        self._checks = [
            asyncio.create_task(self._check(gen), name=f"crowdcut-check-{gen.name}")
            for gen in self.generators.values()
        ]

    async def _check(self, gen: Generator) -> None:
        """Say at start-up, in the log, whether each backend answers and is set up right
        (a ComfyUI workflow naming an input the server does not have, a bad key)."""
        try:
            said = await asyncio.wait_for(gen.check(), 30)
            log.info("generator %s ready: %s", gen.name, said)
        except TimeoutError:
            log.warning("generator %s did not answer its start-up check in 30 s", gen.name)
        except CrowdcutError as e:
            log.error("generator %s is not usable: %s", gen.name, e)
        except Exception:
            log.exception("generator %s's start-up check failed", gen.name)

    async def stop(self) -> None:
        """Stop dispatching and polling. Jobs in flight stay submitted, to be resumed."""
        for t in self._checks:
            t.cancel()
        self._checks = []
        await super().stop()

    async def recover(self) -> int:
        """Resume what a previous process left in flight. Returns how many jobs resumed."""
        resumed = 0
        for job in await self.store.jobs_by_state(SUBMITTED, RUNNING):
            if job.id in self._tasks:
                continue
            if job.provider_job_id or job.submit_key:
                # with an id: poll it; with only a key: the send may have happened, so
                # _drive looks it up before sending anything
                log.info(
                    "resuming job %s (provider id %s) after a restart",
                    job.id,
                    job.provider_job_id or f"unknown, key {job.submit_key}",
                )
                self._spawn(job, maybe_sent=True)
                resumed += 1
            else:
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
        job = await self.store.get_job(job_id)
        if job is None:
            return None
        backend = job.backend or self.generator.name
        recent = await self.store.recent_run_seconds(backend)
        run_seconds = estimate_run_seconds(recent, default=self._default_run_seconds(backend))
        generating = Position(position=0, ahead=0, eta_seconds=max(1.0, run_seconds))
        if job.state in (SUBMITTED, RUNNING):
            left = run_seconds * (1 - (job.progress or 0))
            return Position(position=0, ahead=0, eta_seconds=max(1.0, left))
        waiting = await self.store.dispatchable_jobs()
        last = await self.store.last_dispatch_by_member(j.member_id for j in waiting)
        place = queue_position(
            job_id,
            waiting,
            running=self.in_flight,
            concurrency=self.concurrency,
            run_seconds=run_seconds,
            last_served=last,
        )
        if place is None and job.moderation != "pending":
            # claimed between the two reads: it is generating now
            again = await self.store.get_job(job_id)
            if again is not None and again.state in (SUBMITTED, RUNNING):
                return generating
        return place

    def _default_run_seconds(self, backend: str) -> float:
        gen = self.generators.get(backend) or self.generator
        return float(getattr(gen, "clip_seconds", self.settings.clip_seconds)) * 2

    # ------------------------------------------------------------------ dispatch
    async def dispatch(self) -> list[int]:
        """Start as many waiting jobs as the limits allow; returns their ids."""
        free = self.free
        if free <= 0:
            return []
        # each member's next few jobs are enough to choose from: not the whole queue
        waiting = await self.store.next_dispatchable_jobs(self.clock(), free)
        if not waiting:
            return []
        last = await self.store.last_dispatch_by_member(j.member_id for j in waiting)
        running_by_member: Counter[int] = Counter()
        for t in self._tasks.values():
            m = getattr(t, "crowdcut_member", None)
            if m is not None:
                running_by_member[m] += 1
        busy = Counter(getattr(t, "crowdcut_backend", None) for t in self._tasks.values())
        preferred = await self.store.project_backends(j.project_id for j in waiting)
        started = []
        for job in next_jobs(
            waiting,
            now=self.clock(),
            slots_free=free,
            last_served=last,
            running_by_member=running_by_member,
        ):
            backend = self.router.choose(preferred.get(job.project_id), busy)
            if backend is None:
                continue  # its backend is busy: it waits for a free place there
            gen = self.generators[backend]
            want = job.duration or self.settings.clip_seconds
            seconds = gen.capabilities.duration_for(want) or gen.capabilities.longest
            # the reference image is read while the claim is written, not after it
            if job.image_key:
                self._images[job.id] = asyncio.ensure_future(
                    asyncio.to_thread(self.app.media.read_bytes, job.image_key)
                )
            claimed = await self.store.claim_job(
                job.id,
                backend,
                submit_key=str(uuid.uuid4()),
                model=gen.model,
                requested_seconds=seconds,
            )
            if claimed is None:
                self._drop_image(job.id)
                continue  # canceled in the meantime
            busy[backend] += 1
            self._spawn(claimed)
            started.append(claimed.id)
            await self._notify(claimed)
        return started

    def _drop_image(self, job_id: int) -> None:
        """Forget (and stop) the reference image being read for a job, if any."""
        image = self._images.pop(job_id, None)
        if image is not None:
            image.cancel()

    def _spawn(self, job: Job, *, maybe_sent: bool = False) -> None:
        task = self.spawn(
            job.id,
            self._drive(job, maybe_sent),
            crowdcut_member=job.member_id,
            crowdcut_backend=job.backend or self.generator.name,
        )
        if job.id in self._images:  # not read when the job ended or was canceled first
            task.add_done_callback(lambda _: self._drop_image(job.id))

    async def cancel(self, job: Job) -> None:
        """Tell the provider a job was canceled (the database already says so)."""
        task = self._tasks.get(job.id)
        gen = self.generators.get(job.backend or "")
        if job.provider_job_id and gen is not None:
            try:
                await gen.cancel(job.provider_job_id)
            except GeneratorError as e:
                log.warning("could not cancel job %s at the provider: %s", job.id, e.message)
        if task is not None:
            task.cancel()
        self.wake()

    # ------------------------------------------------------------------ one job
    async def _drive(self, job: Job, maybe_sent: bool = False) -> None:
        """Drive one job to its end. When the database cannot record its progress (its disk
        is full) the job stays as stored and is driven again once writes work, looking the
        provider's job up first: it may have been sent, and is never sent twice."""
        delay = self.settings.retry_base_seconds
        while True:
            try:
                await self._drive_once(job, maybe_sent)
                return
            except StorageFull:
                log.warning("job %s waits: the database is full (again in %.1fs)", job.id, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.retry_max_seconds)
            fresh = await self.store.get_job(job.id)
            if fresh is None or fresh.state not in (SUBMITTED, RUNNING):
                return  # gone, finished, or still queued: the dispatcher claims it again
            job, maybe_sent = fresh, True

    async def _drive_once(self, job: Job, maybe_sent: bool) -> None:
        gen = self.generators.get(job.backend or "")
        try:
            if gen is None:
                raise _FailForGood(
                    GeneratorError(
                        K.INVALID_INPUT,
                        f"backend {job.backend!r} is no longer configured (GENERATORS)",
                    )
                )
            pid = job.provider_job_id or await self._submit(job, gen, maybe_sent)
            await self._follow(job, gen, pid)
        except asyncio.CancelledError:
            raise
        except _Done:
            return
        except StorageFull:
            raise  # nothing to record it in: ``_drive`` waits for room
        except _FailForGood as e:
            await self._fail(job, gen, e.error)
        except GeneratorError as e:
            await self._generation_failed(job, gen, e)
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            await self._fail(job, gen, GeneratorError(K.UNKNOWN, "unexpected error (see the log)"))

    async def _submit(self, job: Job, gen: Generator, maybe_sent: bool) -> str:
        """Send the job's current submission once and return the provider's job id,
        resolving a lost answer (or, with ``maybe_sent``, a crash mid-send) by looking
        it up first."""
        request = await self._request(job, gen)
        since = (job.submitted_at or self.clock()) - 60  # clocks differ
        for _ in range(3):
            pid = await self._find(job, gen, request, since) if maybe_sent else None
            if pid is None:
                try:
                    pid = await gen.submit(request)
                except GeneratorError as e:
                    self._health(gen, e)
                    if e.kind != K.OUTCOME_UNKNOWN:
                        raise
                    log.warning("job %s: %s; looking it up before anything else", job.id, e)
                    maybe_sent = True
                    continue
            self.router.succeeded(gen.name)
            await self._confirmed(job, gen, pid)
            return pid
        raise _FailForGood(
            GeneratorError(K.OUTCOME_UNKNOWN, "the generator kept dropping the submission")
        )

    async def _find(
        self, job: Job, gen: Generator, request: GenerationRequest, since: float
    ) -> str | None:
        """The provider's id for the submission, or None when it certainly has none."""
        failures = 0
        first = self.clock()
        while True:
            await self._check_canceled(job, gen, None)
            try:
                found = await gen.find(request, since=since)
                self.router.succeeded(gen.name)
                if found:
                    log.info("job %s: the generator had the submission (id %s)", job.id, found)
                return found
            except GeneratorError as e:
                self._health(gen, e)
                if e.kind == K.OUTCOME_UNKNOWN or not e.transient:
                    raise _FailForGood(GeneratorError(K.OUTCOME_UNKNOWN, e.message)) from None
                failures += 1
                await self._stall_wait(job, e, failures, first)

    async def _confirmed(self, job: Job, gen: Generator, pid: str) -> None:
        charge = self._charge(job, gen, "generation")
        await self.store.set_provider_job_id(job.id, pid, charge=charge)
        log.info("job %s submitted to %s as %s", job.id, gen.name, pid)

    async def _follow(self, job: Job, gen: Generator, pid: str) -> None:
        """Poll (and download) one provider job until it ends. Transient trouble is
        retried here, on this id, with backoff: never a second submission."""
        last_progress = -1.0
        last_written = -1e18
        failures = 0
        first_failure: float | None = None
        expired_once = False
        downloads = 0
        current, checked = job, -1e18
        while True:
            try:
                status = await gen.poll(pid)
            except GeneratorError as e:
                self._health(gen, e)
                if not e.transient:
                    raise  # refused, gone for good, bad credentials: not worth polling again
                await self._check_canceled(job, gen, pid)
                failures += 1
                first_failure = first_failure or self.clock()
                await self._stall_wait(job, e, failures, first_failure)
                continue
            self.router.succeeded(gen.name)
            failures, first_failure = 0, None
            if status.state in (JobState.QUEUED, JobState.RUNNING):
                # a job canceled by the other process (``crowdcut worker`` beside the bot)
                # is seen here, once per POLL_SECONDS: not on every progress frame. One
                # canceled in this process has its task canceled; one that is done is not
                # checked first: complete_job keeps a canceled job canceled.
                if self.clock() - checked >= self.settings.poll_seconds:
                    current = await self._check_canceled(job, gen, pid)
                    checked = self.clock()
                p = status.progress
                # progress is written (and so shown) at most once per STATUS_EDIT_SECONDS
                if status.state == JobState.RUNNING and (
                    current.state != RUNNING
                    or (
                        (p is None or p - last_progress >= 0.05)
                        and self.clock() - last_written >= self.settings.status_edit_seconds
                    )
                ):
                    await self.store.mark_running(job.id, p)
                    last_progress = p if p is not None else last_progress
                    last_written = self.clock()
                    current = await self.store.get_job(job.id) or current
                    await self._notify(current)
                await gen.wait(pid, self.settings.poll_seconds)
            elif status.state == JobState.DONE:
                try:
                    await self._finish(job, gen, pid)
                    return
                except GeneratorError as e:
                    if e.kind == K.OUTPUT_EXPIRED:
                        if expired_once:
                            raise  # gone for good: _generation_failed makes it again
                        expired_once = True
                        log.info("job %s: output URL expired; asking for a fresh one", job.id)
                        continue
                    downloads += 1
                    if not e.transient or downloads >= self.settings.retry_max_attempts:
                        raise _FailForGood(e) from None
                    log.warning("job %s: download try %d failed: %s", job.id, downloads, e)
                    await asyncio.sleep(self._delay(downloads, e))
            elif status.state == JobState.FAILED:
                raise status.error or GeneratorError(K.UNKNOWN, "the generator reported a failure")
            elif status.state == JobState.CANCELED:
                await self.store.cancel_job(job.id)
                await self._notify(await self.store.get_job(job.id))
                return

    async def _check_canceled(self, job: Job, gen: Generator, pid: str | None) -> Job:
        current = await self.store.get_job(job.id)
        if current is None or current.state == CANCELED:
            pid = pid or (current.provider_job_id if current else None)
            if pid:
                with contextlib.suppress(GeneratorError):
                    await gen.cancel(pid)
            raise _Done
        return current

    async def _stall_wait(
        self, job: Job, error: GeneratorError, failures: int, first: float
    ) -> None:
        """Back off after a failed poll, download or lookup; fail the job (without a new
        submission) once the provider has not answered for ``JOB_STALL_SECONDS``."""
        if self.clock() - first >= self.settings.job_stall_seconds:
            raise _FailForGood(
                GeneratorError(K.UNAVAILABLE, f"no answer for too long: {error.message}")
            )
        delay = self._delay(failures, error)
        log.warning(
            "job %s: %s (%s); trying the same job again in %.1fs",
            job.id,
            error.message,
            error.kind.value,
            delay,
        )
        await asyncio.sleep(delay)

    def _delay(self, failures: int, error: GeneratorError) -> float:
        return self.delay(
            failures,
            base=self.settings.retry_base_seconds,
            cap=self.settings.retry_max_seconds,
            retry_after=error.retry_after,
        )

    def _health(self, gen: Generator, error: GeneratorError) -> None:
        self.router.failed(gen.name, error)

    async def _request(self, job: Job, gen: Generator) -> GenerationRequest:
        """What is sent to the provider. Its reference image is the one the dispatcher
        started reading, or is read here (a job resumed after a restart)."""
        image = None
        if job.image_key:
            read = self._images.pop(job.id, None)
            image = await (read or asyncio.to_thread(self.app.media.read_bytes, job.image_key))
        seconds = job.requested_seconds
        if seconds is None:
            want = job.duration or self.settings.clip_seconds
            seconds = gen.capabilities.duration_for(want) or gen.capabilities.longest
        return GenerationRequest(
            prompt=job.prompt,
            duration=seconds,
            aspect=job.aspect or "16:9",
            seed=job.seed or 0,
            image=image,
            idempotency_key=job.submit_key,
        )

    async def _finish(self, job: Job, gen: Generator, pid: str) -> None:
        tmp = Path(self.app.tmp_dir) / f"job-{job.id}-{uuid.uuid4().hex[:8]}.mp4"
        try:
            await gen.download(pid, tmp)

            def check_and_store() -> tuple[ProbeResult, str]:
                # one thread hop for both: the clip is checked, then moved into the store
                info = check_clip(tmp)
                return info, self.app.media.put_file(tmp, "mp4", move=True)

            try:
                info, key = await asyncio.to_thread(check_and_store)
            except (InvalidClip, MediaError) as e:
                log.warning("job %s: the downloaded output is not usable video: %s", job.id, e)
                raise GeneratorError(K.NOT_VIDEO, "the output is not a usable video") from None
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

    # ------------------------------------------------------------------ failures
    async def _generation_failed(
        self, job: Job, gen: Generator | None, error: GeneratorError
    ) -> None:
        """The submission did not make a clip: submit anew if that is worth it, else fail."""
        current = await self.store.get_job(job.id)
        if current is None or current.state not in (SUBMITTED, RUNNING):
            return
        if gen is not None:
            self._health(gen, error)
        refund = self._refund(current, gen) if current.provider_job_id else None
        if error.kind == K.OUTPUT_EXPIRED:
            refund = None  # the generation succeeded and was paid; only its file is gone
        limit = self.settings.retry_max_attempts
        if error.max_submissions is not None:
            limit = min(limit, error.max_submissions)
        retry = error.transient or error.kind == K.OUTPUT_EXPIRED
        used = max(current.attempts, current.tries)
        if retry and used < limit:
            delay = self._delay(max(1, used), error)
            log.warning(
                "job %s try %d on %s failed (%s: %s); submitting again in %.1fs",
                job.id,
                used,
                current.backend,
                error.kind.value,
                error.message,
                delay,
            )
            await self.store.requeue_job(
                job.id,
                next_attempt_at=self.clock() + delay,
                error=retry_text(error),
                error_kind=error.kind.value,
                refund=refund,
            )
            await self._notify(await self.store.get_job(job.id))
            return
        await self._fail(job, gen, error, refund=refund)

    async def _fail(
        self,
        job: Job,
        gen: Generator | None,
        error: GeneratorError,
        *,
        refund: Charge | None = None,
    ) -> None:
        current = await self.store.get_job(job.id)
        if current is None or current.state not in (SUBMITTED, RUNNING):
            return
        log.warning(
            "job %s failed for good on %s (%s: %s)",
            job.id,
            current.backend,
            error.kind.value,
            error.message,
        )
        await self.store.fail_job(
            job.id,
            error=failure_text(error, max(current.attempts, current.tries)),
            error_kind=error.kind.value,
            refund=refund,
            refused=error.kind == K.CONTENT_POLICY,
        )
        await self._notify(await self.store.get_job(job.id))

    def _refund(self, job: Job, gen: Generator | None) -> Charge | None:
        """A negative ledger row when the provider does not bill a failed generation."""
        if gen is None or gen.charges_failures:
            return None
        return self._charge(job, gen, "refund")

    def _charge(self, job: Job, gen: Generator, kind: str) -> Charge:
        """The ledger row of one submission of ``job`` (a refund is its negative)."""
        seconds = job.requested_seconds or job.duration or self.settings.clip_seconds
        price = cost_of(self.settings, gen.name, seconds)
        return Charge(
            backend=gen.name,
            model=gen.model,
            kind=kind,
            seconds=seconds,
            amount=-price if kind == "refund" else price,
            currency=self.settings.currency,
        )

    async def _notify(self, job: Job | None) -> None:
        if job is None:
            return
        try:
            await self.events.job_changed(job)
        except Exception:
            log.exception("reporting job %s's state failed", job.id)


_KIND_WORDS = {
    K.RATE_LIMITED: "the generator is busy",
    K.UNAVAILABLE: "the generator is not answering",
    K.UNKNOWN: "the generator failed",
    K.MALFORMED: "the generator's answer was unreadable",
    K.TRUNCATED: "the download broke off",
    K.NOT_VIDEO: "the generator returned a file that is not a usable video",
    K.OUTPUT_EXPIRED: "the generator deleted the finished clip before crowdcut could fetch it",
}


def retry_text(error: GeneratorError) -> str:
    """What the status message says while the job waits for another try."""
    if error.kind == K.OUTPUT_EXPIRED:
        return f"{_KIND_WORDS[error.kind]}; making it again"
    return _KIND_WORDS.get(error.kind, "the generator failed")


def failure_text(error: GeneratorError, attempts: int) -> str:
    """A reason a member can read: fixed words per kind, never the provider's own text
    (which can carry URLs, paths or worse); the detail is in the operator's log."""
    kind = error.kind
    if kind == K.CONTENT_POLICY:
        return "The generator refused this prompt (content policy)."
    if kind == K.INVALID_INPUT:
        return "The generator could not use this prompt or image."
    if kind == K.AUTH:
        return "The generator rejected crowdcut's credentials; the operator has been told."
    if kind == K.OUTCOME_UNKNOWN:
        return (
            "The connection to the generator broke while this prompt was being sent, and "
            "crowdcut cannot check whether it arrived; it was not sent again, so that it is "
            "not paid for twice. Prompt it again if no clip appears."
        )
    if kind == K.NOT_VIDEO:
        return "The generator returned a file that is not a usable video."
    words = _KIND_WORDS.get(kind, "the generator failed")
    tries = f"after {attempts} tries" if attempts > 1 else "after 1 try"
    return f"Generation failed {tries}: {words}."
