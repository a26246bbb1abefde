"""A retry never pays for a second generation: the real worker against fake providers
(Replicate, which lists its predictions, and Runway, which cannot be asked), each counting
the create requests it received."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from bot.app import App, build_app
from bot.core.costs import cost_of
from bot.generators.http import RetryPolicy
from bot.generators.replicate import ReplicateGenerator
from bot.generators.runway import RunwayGenerator
from bot.services.projects import ProjectService
from bot.services.submissions import Author, SubmissionService
from bot.services.worker import GenerationWorker
from storage.models import Clip, Job
from tests.conftest import make_settings
from tests.discord_env import png_bytes
from tests.fakes import ThreadedServer
from tests.fakes.replicate import FakeReplicate
from tests.fakes.runway import FakeRunway

KLING = "kwaivgi/kling-v1.6-standard"
POLICY = RetryPolicy(
    tries=2, base_seconds=0.01, cap_seconds=0.05, timeout=1.0, connect_timeout=0.5, read_timeout=0.5
)
ALICE = Author(1, "alice")


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def job_changed(self, job: Job) -> None:
        self.seen.append((job.state, job.error))

    async def clip_ready(self, clip: Clip, job: Job) -> None:
        return None


@dataclass
class Rig:
    app: App
    worker: GenerationWorker
    subs: SubmissionService
    events: Recorder
    fake: Any

    async def one_clip(self, prompt: str = "a lighthouse at dusk") -> Job:
        project = await ProjectService(self.app).create(
            guild_id=1, channel_id=2, title="t", by=9, slots=2
        )
        sub = await self.subs.submit(project, ALICE, prompt, image=png_bytes((64, 36)))
        await self.worker.start()
        await self.worker.wait_idle(timeout=60)
        return await self.app.store.get_job(sub.job.id)


async def rig(tmp_path, fake, generator) -> AsyncIterator[Rig]:
    settings = make_settings(tmp_path, retry_base_seconds=0.02, retry_max_seconds=0.1)
    app = build_app(settings, generator=generator)
    events = Recorder()
    worker = GenerationWorker(app, events=events)
    try:
        yield Rig(app, worker, SubmissionService(app, worker), events, fake)
    finally:
        await worker.stop()
        await app.aclose()


@pytest.fixture
async def replicate(tmp_path) -> AsyncIterator[Rig]:
    fake = FakeReplicate("r8_token", start_polls=1, steps=2)
    server = ThreadedServer(fake.app)
    fake.base = server.url
    with server:
        gen = ReplicateGenerator(
            "r8_token", model=KLING, api_base=server.url + "/v1", policy=POLICY
        )
        async for r in rig(tmp_path, fake, gen):
            yield r


@pytest.fixture
async def runway(tmp_path) -> AsyncIterator[Rig]:
    fake = FakeRunway("key_test")
    with ThreadedServer(fake.app) as server:
        gen = RunwayGenerator("key_test", base_url=server.url, policy=POLICY)
        async for r in rig(tmp_path, fake, gen):
            yield r


def predictions(fake: FakeReplicate) -> int:
    return len(fake.predictions)


@pytest.mark.parametrize("fault", ["503", "429", "hang", "malformed"])
async def test_a_failing_poll_keeps_polling_the_same_prediction(replicate, fault):
    replicate.fake.fail_next("get", fault, count=3, retry_after="0" if fault == "429" else None)
    job = await replicate.one_clip()
    assert job.state == "done" and job.attempts == 1
    assert replicate.fake.submissions == 1 and predictions(replicate.fake) == 1
    assert [p for p in replicate.fake.predictions] == [job.provider_job_id]


@pytest.mark.parametrize("fault", ["truncated", "html", "503"])
async def test_a_failing_download_is_tried_again_on_the_same_prediction(replicate, fault):
    replicate.fake.fail_next("download", fault, count=3)
    job = await replicate.one_clip()
    assert job.state == "done" and job.attempts == 1
    assert replicate.fake.submissions == 1


async def test_a_create_that_lost_its_answer_is_found_in_the_list_not_sent_again(replicate):
    replicate.fake.fail_next("create", "drop")  # created, then the connection closes
    job = await replicate.one_clip()
    assert job.state == "done" and job.attempts == 1
    assert replicate.fake.submissions == 1 and predictions(replicate.fake) == 1


async def test_a_create_that_never_arrived_is_looked_up_then_sent_once_more(replicate):
    replicate.fake.fail_next("create", "lost")  # closed before anything was created
    job = await replicate.one_clip()
    assert job.state == "done" and job.attempts == 1
    assert replicate.fake.submissions == 2 and predictions(replicate.fake) == 1


async def test_a_create_answered_503_is_sent_again_later(replicate):
    replicate.fake.fail_next("create", "503")  # an answer: nothing was created
    job = await replicate.one_clip()
    assert job.state == "done" and job.attempts == 1 and job.tries == 2
    assert predictions(replicate.fake) == 1


async def test_an_expired_output_url_is_read_again_not_generated_again(replicate):
    replicate.fake.fail_next("download", "404")
    job = await replicate.one_clip()
    assert job.state == "done" and job.attempts == 1
    assert replicate.fake.submissions == 1


async def test_an_output_gone_for_good_is_generated_again_and_the_member_is_told_why(replicate):
    replicate.fake.fail_next("download", "404", count=2)
    job = await replicate.one_clip()
    assert job.state == "done" and job.attempts == 2
    assert replicate.fake.submissions == 2
    said = [err for state, err in replicate.events.seen if state == "queued" and err]
    assert any("deleted the finished clip" in e and "making it again" in e for e in said)
    # both generations were made and paid for; the first one's file is what was lost
    one = cost_of(replicate.app.settings, "replicate", job.requested_seconds)
    assert one > 0
    assert await replicate.app.store.spent(project_id=job.project_id) == pytest.approx(2 * one)


async def test_a_lost_create_on_a_provider_that_cannot_be_asked_fails_instead_of_paying_twice(
    runway,
):
    runway.fake.fail("create", drop=True)  # Runway has no list and no idempotency key
    job = await runway.one_clip()
    assert job.state == "failed" and job.error_kind == "outcome_unknown"
    assert "not sent again" in job.error and "Prompt it again" in job.error
    assert runway.fake.submissions == 1


async def test_a_refused_prompt_is_not_retried_and_reads_plainly(replicate):
    replicate.fake.outcomes.append("nsfw")
    job = await replicate.one_clip()
    assert job.state == "failed" and job.error_kind == "content_policy"
    assert job.error == "The generator refused this prompt (content policy)."
    assert replicate.fake.submissions == 1
