"""Several backends at once: what each can make is refused at /prompt time, a project can
pick its own, and new jobs move to the next backend while the first is down."""

from __future__ import annotations

import pytest

from bot.app import build_app
from bot.errors import GeneratorError, GeneratorErrorKind, InvalidPrompt, InvalidState
from bot.generators.local import LocalGenerator
from bot.generators.runway import RunwayGenerator
from bot.services.projects import ProjectService
from bot.services.routing import BackendRouter
from bot.services.submissions import Author, SubmissionService
from bot.services.worker import GenerationWorker
from tests.conftest import make_settings

ALICE = Author(1, "alice")


def local(tmp_path, name: str) -> LocalGenerator:
    gen = LocalGenerator(tmp_path / name, max_concurrency=1, clip_seconds=1.0)
    gen.name = name
    return gen


async def test_a_prompt_the_backend_cannot_make_is_refused_at_once_and_specifically(tmp_path):
    runway = RunwayGenerator("key-not-used", model="gen4_turbo", base_url="http://127.0.0.1:9")
    app = build_app(
        make_settings(tmp_path, max_clip_seconds=30.0, prompt_max_chars=2000), generator=runway
    )
    worker = GenerationWorker(app)
    subs = SubmissionService(app, worker)
    try:
        project = await ProjectService(app).create(guild_id=1, channel_id=2, title="t", by=9)
        with pytest.raises(InvalidPrompt, match="needs a reference image"):
            await subs.submit(project, ALICE, "a lighthouse in a storm")
        with pytest.raises(InvalidPrompt, match="at most 10 seconds"):
            await subs.submit(project, ALICE, "a lighthouse", duration=12.0)
        with pytest.raises(InvalidPrompt, match="up to 1000 characters"):
            await subs.submit(project, ALICE, "a lighthouse " * 90)
        assert await app.store.job_counts() == {}  # nothing was queued
        # a 4.5 s slot asks for the shortest clip that covers it: 5 s (the cut trims it)
        assert runway.capabilities.duration_for(4.5) == 5.0
        assert project.slot_plan[0].duration == runway.capabilities.natural_seconds
    finally:
        await app.aclose()


async def test_new_jobs_go_to_the_next_backend_while_the_first_is_down(tmp_path):
    primary, backup = local(tmp_path, "primary"), local(tmp_path, "backup")
    await primary.aclose()  # it answers every submit with "unavailable"
    settings = make_settings(tmp_path, failover_seconds=0.0, retry_max_attempts=5)
    app = build_app(settings, generators={"primary": primary, "backup": backup})
    worker = GenerationWorker(app)
    subs = SubmissionService(app, worker)
    try:
        project = await ProjectService(app).create(guild_id=1, channel_id=2, title="t", by=9)
        sub = await subs.submit(project, ALICE, "a red kite")
        await worker.start()
        await worker.wait_idle(timeout=60)
        job = await app.store.get_job(sub.job.id)
        assert job.state == "done" and job.backend == "backup"
        assert job.attempts == 1 and job.tries == 2  # one refused claim, one submission
        assert worker.router.is_down("primary") and not worker.router.is_down("backup")
    finally:
        await worker.stop()
        await app.aclose()


async def test_a_project_sends_its_jobs_to_the_backend_a_moderator_chose(tmp_path):
    first, second = local(tmp_path, "first"), local(tmp_path, "second")
    app = build_app(make_settings(tmp_path), generators={"first": first, "second": second})
    worker = GenerationWorker(app)
    subs = SubmissionService(app, worker)
    projects = ProjectService(app)
    try:
        project = await projects.create(guild_id=1, channel_id=2, title="t", by=9)
        with pytest.raises(InvalidState, match="not one of this server's video generators"):
            await projects.set_backend(project.id, "fal", by=9)
        project = await projects.set_backend(project.id, "second", by=9)
        sub = await subs.submit(project, ALICE, "a paper lantern")
        await worker.start()
        await worker.wait_idle(timeout=60)
        job = await app.store.get_job(sub.job.id)
        assert job.state == "done" and job.backend == "second"
        assert job.model == second.model
        audit = await app.store.audit_log(1)
        assert audit[0].action == "set_backend" and audit[0].details == {"backend": "second"}
    finally:
        await worker.stop()
        await app.aclose()


def test_a_busy_backend_keeps_its_jobs_and_a_long_down_one_is_passed_over(tmp_path):
    now = [1000.0]
    first, second = local(tmp_path, "first"), local(tmp_path, "second")
    router = BackendRouter(
        {"first": first, "second": second}, failover_seconds=60, clock=lambda: now[0]
    )
    assert router.choose(None, {}) == "first"
    assert router.choose(None, {"first": 1}) is None  # busy, not down: wait for it
    router.failed("first", GeneratorError(GeneratorErrorKind.UNAVAILABLE, "connection refused"))
    assert router.choose(None, {}) == "first"  # down for less than FAILOVER_SECONDS
    router.failed("first", GeneratorError(GeneratorErrorKind.CONTENT_POLICY, "no"))
    now[0] += 61
    assert router.is_down("first") and router.choose(None, {}) == "second"
    router.succeeded("first")
    assert router.choose(None, {}) == "first"
    # a refused prompt says nothing about the backend's health
    router.failed("second", GeneratorError(GeneratorErrorKind.CONTENT_POLICY, "refused"))
    assert router.down_for("second") is None
