"""The generation queue with the real local generator, real ffmpeg and real SQLite."""

from __future__ import annotations

import asyncio

import pytest

from bot.errors import InvalidState, PermissionDenied, QuotaExceeded
from bot.services.projects import ProjectService
from bot.services.submissions import Author, SubmissionService
from bot.services.worker import GenerationWorker
from storage.models import Clip, Job
from tests.conftest import make_settings

ALICE, BOB, MOD = Author(1, "alice"), Author(2, "bob"), Author(9, "mod")


class Recorder:
    def __init__(self) -> None:
        self.states: list[tuple[int, str]] = []
        self.clips: list[Clip] = []

    async def job_changed(self, job: Job) -> None:
        self.states.append((job.id, job.state))

    async def clip_ready(self, clip: Clip, job: Job) -> None:
        self.clips.append(clip)


async def setup(app, **kw):
    rec = Recorder()
    worker = GenerationWorker(app, events=rec)
    subs = SubmissionService(app, worker)
    project = await ProjectService(app).create(
        guild_id=1, channel_id=2, title="t", by=MOD.id, slots=4
    )
    return rec, worker, subs, project


async def test_a_prompt_becomes_exactly_one_clip(app):
    rec, worker, subs, project = await setup(app)
    sub = await subs.submit(project, ALICE, "a red balloon over the sea")
    assert sub.position.position == 1 and sub.position.eta_seconds > 0
    await worker.start()
    try:
        await worker.wait_idle(timeout=60)
    finally:
        await worker.stop()
    job = await app.store.get_job(sub.job.id)
    assert job.state == "done" and job.attempts == 1
    assert [c.job_id for c in rec.clips] == [job.id]
    clip = rec.clips[0]
    assert app.media.path(clip.media_key).is_file()
    assert clip.width == 640 and clip.height == 360 and clip.duration > 0.9
    assert ("submitted" in {s for _, s in rec.states}) and (job.id, "done") in rec.states


async def test_dispatch_is_round_robin_so_one_members_burst_does_not_starve_another(tmp_path):
    from bot.app import build_app

    app = build_app(make_settings(tmp_path, generator_concurrency=1, backend_concurrency=1))
    try:
        rec, worker, subs, project = await setup(app)
        alice_jobs = [
            (await subs.submit(project, ALICE, f"alice prompt {i}")).job.id for i in range(5)
        ]
        bob_first = (await subs.submit(project, BOB, "bob's first")).job.id
        pos = await worker.position(bob_first)
        assert pos.position == 2  # right after alice's first, not after all five
        started = []
        for _ in range(3):
            started += await worker.dispatch()
            await asyncio.wait_for(asyncio.gather(*worker._tasks.values()), 60)
        assert started == [alice_jobs[0], bob_first, alice_jobs[1]]
    finally:
        await worker.stop()
        await app.aclose()


async def test_a_transient_failure_is_retried_with_backoff_and_then_succeeds(app):
    rec, worker, subs, project = await setup(app)
    sub = await subs.submit(project, ALICE, "waves [fail-once:unavailable]")
    await worker.start()
    try:
        await worker.wait_idle(timeout=60)
    finally:
        await worker.stop()
    job = await app.store.get_job(sub.job.id)
    assert job.state == "done" and job.attempts == 2
    assert job.error is None and len(rec.clips) == 1


async def test_a_content_policy_refusal_fails_at_once_with_the_reason(app):
    rec, worker, subs, project = await setup(app)
    sub = await subs.submit(project, ALICE, "something [fail:content_policy]")
    await worker.start()
    try:
        await worker.wait_idle(timeout=60)
    finally:
        await worker.stop()
    job = await app.store.get_job(sub.job.id)
    assert job.state == "failed" and job.attempts == 1
    assert job.error_kind == "content_policy"
    assert "content policy" in job.error
    assert rec.clips == []


async def test_transient_failures_stop_after_the_retry_cap(tmp_path):
    from bot.app import build_app

    app = build_app(make_settings(tmp_path, retry_max_attempts=3))
    try:
        rec, worker, subs, project = await setup(app)
        sub = await subs.submit(project, ALICE, "storm [fail:rate_limited]")
        await worker.start()
        await worker.wait_idle(timeout=60)
        job = await app.store.get_job(sub.job.id)
        assert job.state == "failed" and job.attempts == 3
        assert job.error_kind == "rate_limited" and "after 3 tries" in job.error
    finally:
        await worker.stop()
        await app.aclose()


async def test_the_author_cancels_a_running_job_and_no_clip_appears(app):
    rec, worker, subs, project = await setup(app)
    sub = await subs.submit(project, ALICE, "a long take [slow]", duration=5)
    await worker.start()
    try:
        for _ in range(200):
            j = await app.store.get_job(sub.job.id)
            if j.provider_job_id:
                break
            await asyncio.sleep(0.05)
        canceled = await subs.cancel(sub.job.id, ALICE, is_moderator=False, guild_id=1)
        assert canceled.state == "canceled"
        await worker.wait_idle(timeout=30)
    finally:
        await worker.stop()
    assert (await app.store.get_job(sub.job.id)).state == "canceled"
    assert rec.clips == [] and await app.store.project_clips(project.id) == []


async def test_only_the_author_or_a_moderator_may_cancel(app):
    rec, worker, subs, project = await setup(app)
    sub = await subs.submit(project, ALICE, "mine")
    with pytest.raises(PermissionDenied):
        await subs.cancel(sub.job.id, BOB, is_moderator=False, guild_id=1)
    done = await subs.cancel(sub.job.id, MOD, is_moderator=True, guild_id=1)
    assert done.state == "canceled"
    with pytest.raises(InvalidState, match="already canceled"):
        await subs.cancel(sub.job.id, ALICE, is_moderator=False, guild_id=1)
    audit = await app.store.audit_log(1)
    assert audit[0].action == "cancel_job" and audit[0].actor_id == MOD.id


async def test_a_member_over_the_waiting_limit_is_told_so(tmp_path):
    from bot.app import build_app

    app = build_app(make_settings(tmp_path, max_jobs_per_member=2))
    try:
        rec, worker, subs, project = await setup(app)
        await subs.submit(project, ALICE, "one")
        await subs.submit(project, ALICE, "two")
        with pytest.raises(QuotaExceeded, match="already have 2 jobs"):
            await subs.submit(project, ALICE, "three")
        assert len(await app.store.member_jobs(ALICE.id)) == 2
    finally:
        await app.aclose()


async def test_prompts_into_a_closed_project_are_refused(app):
    rec, worker, subs, project = await setup(app)
    closed = await ProjectService(app).close(project.id, by=MOD.id)
    with pytest.raises(InvalidState, match="not taking prompts"):
        await subs.submit(closed, ALICE, "late")


async def test_extending_a_clip_uses_its_last_frame_as_the_reference(app):
    rec, worker, subs, project = await setup(app)
    await subs.submit(project, ALICE, "a corridor", slot=0)
    await worker.start()
    try:
        await worker.wait_idle(timeout=60)
        first = rec.clips[0]
        sub = await subs.extend(project, BOB, first.id, "the corridor opens onto a beach")
        assert sub.job.extends_clip_id == first.id and sub.job.image_key
        assert sub.job.slot == 1
        await worker.wait_idle(timeout=60)
    finally:
        await worker.stop()
    assert len(rec.clips) == 2
    assert worker._images == {}  # the reference image read for the job is not kept
