"""The Runway backend against a fake Runway API on 127.0.0.1 (tests/fakes/runway.py)."""

from __future__ import annotations

import asyncio
import email.utils
import io
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from PIL import Image

from bot.errors import ConfigError, GeneratorError, GeneratorErrorKind
from bot.generators import create_generator
from bot.generators.base import GenerationRequest, JobState, JobStatus
from bot.generators.http import RetryPolicy
from bot.generators.runway import MODELS, REFUSED, RunwayGenerator, fit_image
from tests.conftest import make_settings
from tests.fakes import ThreadedServer, free_port, tiny_mp4
from tests.fakes.runway import FakeRunway

K = GeneratorErrorKind
KEY = "sk-TEST-SECRET-1234"
FAST = RetryPolicy(
    tries=3, base_seconds=0.01, cap_seconds=0.05, timeout=2.0, connect_timeout=0.5, read_timeout=0.5
)


def png(width: int = 64, height: int = 36, noise: bool = False) -> bytes:
    if noise:
        im = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        im = Image.new("RGB", (width, height), (200, 40, 10))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def req(prompt: str = "a red fox runs through snow", **kw: object) -> GenerationRequest:
    base: dict[str, object] = {"duration": 5.0, "aspect": "16:9", "seed": 7, "image": png()}
    base.update(kw)
    return GenerationRequest(prompt, **base)  # type: ignore[arg-type]


class Sleeps:
    """Records the backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def fake() -> Iterator[FakeRunway]:
    f = FakeRunway(api_key=KEY)
    with ThreadedServer(f.app) as server:
        f.url = server.url  # type: ignore[attr-defined]
        yield f


def make(fake: FakeRunway, **kw: object) -> RunwayGenerator:
    options: dict[str, object] = {"base_url": fake.url, "policy": FAST}  # type: ignore[attr-defined]
    options.update(kw)
    key = str(options.pop("key", KEY))
    return RunwayGenerator(key, **options)  # type: ignore[arg-type]


@pytest.fixture
async def runway(fake: FakeRunway) -> AsyncIterator[RunwayGenerator]:
    gen = make(fake)
    yield gen
    await gen.aclose()


async def poll_until(gen: RunwayGenerator, job: str, *states: JobState) -> list[JobStatus]:
    seen = []
    for _ in range(50):
        status = await gen.poll(job)
        seen.append(status)
        if status.state in states:
            return seen
    raise AssertionError(f"never reached {states}: {seen}")


async def finished(gen: RunwayGenerator, fake: FakeRunway, **kw: object) -> str:
    fake.script = ("RUNNING:0.5", "SUCCEEDED")
    job = await gen.submit(req(**kw))
    await poll_until(gen, job, JobState.DONE)
    return job


# ---------------------------------------------------------------------------- capabilities


def test_each_model_declares_its_lengths_aspects_image_needs_and_prompt_limit():
    turbo = MODELS["gen4_turbo"].capabilities
    assert turbo.durations == tuple(float(d) for d in range(2, 11))
    assert turbo.aspects == ("16:9", "9:16", "1:1") and turbo.image_required
    assert turbo.max_prompt_chars == 1000 and turbo.natural_seconds == 5.0
    assert turbo.duration_for(4.2) == 5.0 and turbo.duration_for(11) is None
    gen45 = MODELS["gen4.5"].capabilities
    assert gen45.image_input and not gen45.image_required
    veo = MODELS["veo3.1"].capabilities
    assert veo.durations == (4.0, 6.0, 8.0) and veo.aspects == ("16:9", "9:16")
    assert veo.duration_for(5) == 6.0
    assert MODELS["veo3"].capabilities.durations == (8.0,)


def test_settings_build_the_backend_and_bad_ones_are_named(tmp_path):
    settings = make_settings(tmp_path, runwayml_api_secret=KEY)
    gen = create_generator("runway", settings)
    assert isinstance(gen, RunwayGenerator)
    assert (gen.name, gen.model, gen.clip_seconds) == ("runway", "gen4_turbo", 5.0)
    assert gen.http.base_url == "https://api.dev.runwayml.com"
    assert gen.http.headers["X-Runway-Version"] == "2024-11-06"
    assert gen.charges_failures is False
    with pytest.raises(ConfigError, match="RUNWAYML_API_SECRET"):
        create_generator("runway", make_settings(tmp_path))
    with pytest.raises(ConfigError, match="RUNWAY_MODEL='gen9'"):
        create_generator(
            "runway", make_settings(tmp_path, runwayml_api_secret=KEY, runway_model="gen9")
        )
    assert KEY not in repr(settings)


# ---------------------------------------------------------------------------- happy paths


async def test_an_image_prompt_reports_queue_throttle_progress_and_downloads_a_video(
    runway, fake, tmp_path
):
    job = await runway.submit(req())
    seen = await poll_until(runway, job, JobState.DONE)
    assert [(s.state, s.progress) for s in seen] == [
        (JobState.QUEUED, 0.0),  # PENDING
        (JobState.QUEUED, 0.0),  # THROTTLED is waiting, not failing
        (JobState.RUNNING, 0.3),
        (JobState.RUNNING, 0.7),
        (JobState.DONE, 1.0),
    ]
    out = await runway.download(job, tmp_path / "clip.mp4")
    assert out.read_bytes() == tiny_mp4()
    assert fake.submissions == 1
    assert fake.last_headers["Authorization"] == f"Bearer {KEY}"
    assert fake.last_headers["X-Runway-Version"] == "2024-11-06"
    body = fake.bodies[0]
    assert body["model"] == "gen4_turbo" and body["ratio"] == "1280:720"
    assert body["duration"] == 5 and body["seed"] == 7
    assert body["promptText"] == "a red fox runs through snow"
    assert body["promptImage"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(("aspect", "ratio"), [("9:16", "720:1280"), ("1:1", "960:960")])
async def test_aspects_map_to_the_models_ratios(runway, fake, aspect, ratio):
    await runway.submit(req(aspect=aspect, duration=10.0))
    assert fake.bodies[0]["ratio"] == ratio and fake.bodies[0]["duration"] == 10


async def test_an_image_over_the_data_uri_limit_is_sent_as_a_jpeg_that_fits(fake):
    fake.data_uri_limit = 60_000
    gen = make(fake, data_uri_limit=60_000)
    try:
        await gen.submit(req(image=png(320, 240, noise=True)))
    finally:
        await gen.aclose()
    uri = fake.bodies[0]["promptImage"]
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) <= 60_000
    assert fit_image(png()).startswith("data:image/png;")


async def test_a_text_only_prompt_uses_text_to_video_where_the_model_has_it(fake, tmp_path):
    gen = make(fake, model="gen4.5")
    try:
        job = await gen.submit(req(image=None, aspect="9:16"))
        await poll_until(gen, job, JobState.DONE)
        await gen.download(job, tmp_path / "t.mp4")
    finally:
        await gen.aclose()
    assert fake.tasks[job].endpoint == "text_to_video"
    assert "promptImage" not in fake.bodies[0] and fake.bodies[0]["ratio"] == "720:1280"


async def test_a_text_only_prompt_is_refused_before_sending_where_the_model_needs_an_image(
    runway, fake
):
    with pytest.raises(GeneratorError) as e:
        await runway.submit(req(image=None))
    assert e.value.kind == K.INVALID_INPUT and "needs a reference image" in e.value.message
    gen45 = make(fake, model="gen4.5")
    try:
        with pytest.raises(GeneratorError, match="no 1:1 .*from text alone"):
            await gen45.submit(req(image=None, aspect="1:1"))
    finally:
        await gen45.aclose()
    assert fake.submissions == 0


async def test_prompts_over_1000_utf16_units_and_unmade_lengths_are_refused_before_sending(
    runway, fake
):
    with pytest.raises(GeneratorError, match="1000 characters"):
        await runway.submit(req("🦊" * 501))  # 501 characters, 1002 UTF-16 units
    with pytest.raises(GeneratorError, match="2, 3, 4"):
        await runway.submit(req(duration=12.0))
    assert fake.submissions == 0


# ---------------------------------------------------------------------------- cancel


@pytest.mark.parametrize("held", ["PENDING", "THROTTLED", "RUNNING:0.4"])
async def test_cancel_stops_a_task_waiting_or_running(runway, fake, held):
    fake.script = (held,)
    job = await runway.submit(req())
    first = await runway.poll(job)
    assert first.state == (JobState.RUNNING if held.startswith("RUNNING") else JobState.QUEUED)
    await runway.cancel(job)
    assert fake.deletes == 1 and fake.tasks[job].state == "CANCELLED"
    assert (await runway.poll(job)).state == JobState.CANCELED


async def test_cancel_of_a_finished_or_vanished_task_is_no_error(runway, fake):
    job = await finished(runway, fake)
    await runway.cancel(job)
    fake.forget(job)
    await runway.cancel(job)  # 404: already gone
    assert (await runway.poll(job)).state == JobState.CANCELED
    assert fake.deletes == 2


# ---------------------------------------------------------------------------- task failures


async def test_a_safety_failure_is_a_content_policy_refusal(runway, fake):
    fake.failure_codes.append("SAFETY.INPUT.TEXT")
    job = await runway.submit(req())
    status = (await poll_until(runway, job, JobState.FAILED))[-1]
    assert status.error is not None and status.error.kind == K.CONTENT_POLICY
    assert status.error.message == REFUSED and not status.error.transient


async def test_a_bad_output_failure_allows_one_more_submission_which_succeeds(runway, fake):
    fake.failure_codes.append("INTERNAL.BAD_OUTPUT.CODE01")
    job = await runway.submit(req())
    status = (await poll_until(runway, job, JobState.FAILED))[-1]
    assert status.error is not None and status.error.kind == K.UNKNOWN
    assert (
        status.error.max_submissions == 2 and "INTERNAL.BAD_OUTPUT.CODE01" in status.error.message
    )
    again = await runway.submit(req())
    assert (await poll_until(runway, again, JobState.DONE))[-1].state == JobState.DONE


@pytest.mark.parametrize("code", ["ASSET.INVALID", "INPUT_PREPROCESSING.SAFETY.TEXT"])
async def test_unusable_input_failures_are_invalid_input(runway, fake, code):
    fake.failure_codes.append(code)
    job = await runway.submit(req())
    status = (await poll_until(runway, job, JobState.FAILED))[-1]
    assert status.error is not None and status.error.kind == K.INVALID_INPUT


# ---------------------------------------------------------------------------- HTTP faults


async def test_a_create_answered_503_is_not_resent_and_carries_retry_after(runway, fake):
    fake.fail("create", status=503, retry_after="7")
    with pytest.raises(GeneratorError) as e:
        await runway.submit(req())
    assert e.value.kind == K.UNAVAILABLE and e.value.retry_after == 7
    assert fake.submissions == 1 and not fake.tasks


async def test_a_create_answered_429_reads_retry_after_as_an_http_date(runway, fake):
    fake.fail(
        "create", status=429, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True)
    )
    with pytest.raises(GeneratorError) as e:
        await runway.submit(req())
    assert e.value.kind == K.RATE_LIMITED and 25 <= (e.value.retry_after or 0) <= 31


async def test_polls_retry_5xx_and_429_with_capped_backoff_honouring_retry_after(fake):
    sleeps = Sleeps()
    gen = make(fake, policy=RetryPolicy(tries=4, base_seconds=0.01, cap_seconds=5.0), sleep=sleeps)
    try:
        job = await gen.submit(req())
        fake.fail("task", status=502)
        fake.fail("task", status=503, retry_after="2")
        fake.fail(
            "task", status=429, retry_after=email.utils.formatdate(time.time() + 4, usegmt=True)
        )
        assert (await gen.poll(job)).state == JobState.QUEUED
        assert sleeps.delays[0] == 0.01 and sleeps.delays[1] == 2.0
        assert 2.5 <= sleeps.delays[2] <= 5.0
        fake.fail("task", status=429, retry_after="600")  # longer than the cap: the worker waits
        with pytest.raises(GeneratorError) as e:
            await gen.poll(job)
        assert e.value.kind == K.RATE_LIMITED and e.value.retry_after == 600
        assert len(sleeps.delays) == 3
    finally:
        await gen.aclose()


async def test_a_create_without_an_answer_is_outcome_unknown_and_never_resent(runway, fake):
    fake.fail("create", drop=True)  # accepted, then the connection closes
    since = time.time()
    with pytest.raises(GeneratorError) as e:
        await runway.submit(req())
    assert e.value.kind == K.OUTCOME_UNKNOWN
    assert fake.submissions == 1 and len(fake.tasks) == 1  # it did happen
    with pytest.raises(GeneratorError) as lookup:
        await runway.find(req(), since=since)
    assert lookup.value.kind == K.OUTCOME_UNKNOWN  # no task list, no idempotency key
    assert fake.submissions == 1


@pytest.mark.parametrize("fault", ["hang", "malformed", "no_id"])
async def test_a_create_answer_that_is_lost_or_unreadable_is_outcome_unknown(runway, fake, fault):
    fake.fail("create", **{fault: True})
    with pytest.raises(GeneratorError) as e:
        await runway.submit(req())
    assert e.value.kind == K.OUTCOME_UNKNOWN and fake.submissions == 1


async def test_a_create_that_cannot_connect_is_unavailable_and_safe_to_send_again():
    gen = RunwayGenerator(KEY, base_url=f"http://127.0.0.1:{free_port()}", policy=FAST)
    try:
        with pytest.raises(GeneratorError) as e:
            await gen.submit(req())
    finally:
        await gen.aclose()
    assert e.value.kind == K.UNAVAILABLE


async def test_a_poll_that_hangs_times_out_as_unavailable(runway, fake):
    job = await runway.submit(req())
    fake.fail("task", times=3, hang=True)
    with pytest.raises(GeneratorError) as e:
        await runway.poll(job)
    assert e.value.kind == K.UNAVAILABLE and fake.task_reads == 3


@pytest.mark.parametrize("fault", ["malformed", "drop"])
async def test_a_garbled_or_dropped_poll_is_a_named_error(runway, fake, fault):
    job = await runway.submit(req())
    # aiohttp itself sends an idempotent GET once more when a kept-alive connection drops
    fake.fail("task", times=10, **{fault: True})
    with pytest.raises(GeneratorError) as e:
        await runway.poll(job)
    assert e.value.kind == (K.MALFORMED if fault == "malformed" else K.UNAVAILABLE)


async def test_a_bad_key_is_an_auth_error_and_check_reports_credits(fake):
    good = make(fake)
    bad = make(fake, key="sk-WRONG-KEY-0000")
    try:
        line = await good.check()
        assert "gen4_turbo" in line and "1000 credits" in line and "up to 2 at once" in line
        with pytest.raises(GeneratorError) as e:
            await bad.check()
        assert e.value.kind == K.AUTH
    finally:
        await good.aclose()
        await bad.aclose()
    assert fake.submissions == 0


async def test_the_fake_refuses_a_request_without_the_version_header_or_with_a_bad_ratio(fake):
    async with aiohttp.ClientSession() as s:
        auth = {"Authorization": f"Bearer {KEY}"}
        async with s.get(f"{fake.url}/v1/organization", headers=auth) as r:
            assert r.status == 400 and "X-Runway-Version" in (await r.json())["error"]
        headers = {**auth, "X-Runway-Version": "2024-11-06"}
        body = {"model": "gen4_turbo", "ratio": "1920:1080", "promptImage": "https://x.test/a.png"}
        async with s.post(f"{fake.url}/v1/image_to_video", json=body, headers=headers) as r:
            assert r.status == 400 and "ratio" in (await r.json())["error"]


async def test_a_400_from_runway_is_invalid_input(fake):
    fake.data_uri_limit = 1000  # the fake is stricter than the backend thinks
    gen = make(fake)
    try:
        with pytest.raises(GeneratorError) as e:
            await gen.submit(req(image=png(64, 36, noise=True)))
    finally:
        await gen.aclose()
    assert e.value.kind == K.INVALID_INPUT and "5MB" in e.value.message


# ---------------------------------------------------------------------------- downloads


async def test_a_truncated_download_is_named_and_retried(runway, fake, tmp_path):
    job = await finished(runway, fake)
    fake.fail("output", truncated=True)
    assert (await runway.download(job, tmp_path / "a.mp4")).read_bytes() == tiny_mp4()
    fake.fail("output", times=3, truncated=True)
    with pytest.raises(GeneratorError) as e:
        await runway.download(job, tmp_path / "b.mp4")
    assert e.value.kind == K.TRUNCATED and not (tmp_path / "b.mp4").exists()


async def test_an_html_page_instead_of_the_video_is_not_video(runway, fake, tmp_path):
    job = await finished(runway, fake)
    fake.fail("output", html=True)
    with pytest.raises(GeneratorError) as e:
        await runway.download(job, tmp_path / "c.mp4")
    assert e.value.kind == K.NOT_VIDEO and not (tmp_path / "c.mp4").exists()


async def test_an_expired_output_url_is_fresh_after_the_next_poll(runway, fake, tmp_path):
    job = await finished(runway, fake)
    fake.expire_outputs()
    with pytest.raises(GeneratorError) as e:
        await runway.download(job, tmp_path / "d.mp4")
    assert e.value.kind == K.OUTPUT_EXPIRED
    assert (await runway.poll(job)).state == JobState.DONE
    assert (await runway.download(job, tmp_path / "d.mp4")).read_bytes() == tiny_mp4()


async def test_a_download_after_a_restart_reads_the_task_for_its_url(fake, tmp_path):
    first = make(fake)
    job = await finished(first, fake)
    await first.aclose()
    second = make(fake)
    try:
        assert (await second.download(job, tmp_path / "e.mp4")).read_bytes() == tiny_mp4()
    finally:
        await second.aclose()


async def test_a_task_gone_from_runway_fails_as_expired_so_it_is_made_again(runway, fake):
    job = await finished(runway, fake)
    fake.forget(job)
    status = await runway.poll(job)
    assert status.state == JobState.FAILED
    assert status.error is not None and status.error.kind == K.OUTPUT_EXPIRED


# ---------------------------------------------------------------------------- secrets


async def test_the_key_and_signed_urls_never_reach_logs_or_messages(fake, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    gen = make(fake)
    messages: list[str] = []

    async def expect_error(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except GeneratorError as e:
            messages.append(str(e))

    try:
        fake.fail("create", status=401, echo_auth=True)
        await expect_error(gen.submit(req()))
        fake.fail("create", status=503, retry_after="1", echo_auth=True)
        await expect_error(gen.submit(req()))
        fake.fail("create", drop=True)
        await expect_error(gen.submit(req()))
        fake.fail("create", malformed=True)
        await expect_error(gen.submit(req()))
        fake.failure_codes.extend(["SAFETY.OUTPUT.VIDEO", "INTERNAL.BAD_OUTPUT.CODE01"])
        for _ in range(2):
            job = await gen.submit(req())
            status = (await poll_until(gen, job, JobState.FAILED))[-1]
            messages.append(str(status.error))
        job = await finished(gen, fake)
        fake.fail("task", times=3, status=500, echo_auth=True)
        await expect_error(gen.poll(job))
        fake.fail("output", times=3, truncated=True)
        await expect_error(gen.download(job, tmp_path / "x.mp4"))
        fake.fail("output", html=True)
        await expect_error(gen.download(job, tmp_path / "x.mp4"))
        fake.expire_outputs()
        await expect_error(gen.download(job, tmp_path / "x.mp4"))
        bad = make(fake, key="sk-WRONG-KEY-0000")
        await expect_error(bad.check())
        await bad.aclose()
    finally:
        await gen.aclose()
    assert len(messages) == 11
    assert any("[redacted]" in m for m in messages)  # the echoed header was scrubbed
    # the fake server's own access log is the provider's side, not ours
    logged = [r.getMessage() for r in caplog.records if r.name != "aiohttp.access"]
    tokens = fake.output_tokens()
    assert tokens
    for text in messages + logged:
        assert KEY not in text and "sk-WRONG-KEY" not in text
        assert not any(token in text for token in tokens)


# ---------------------------------------------------------------------------- with the worker


async def test_the_worker_makes_a_clip_through_a_bad_output_retry_and_an_expired_url(
    fake, tmp_path
):
    from bot.app import build_app
    from bot.services.projects import ProjectService
    from bot.services.submissions import Author, SubmissionService
    from bot.services.worker import GenerationWorker

    settings = make_settings(
        tmp_path,
        generator="runway",
        runwayml_api_secret=KEY,
        runway_api_base=fake.url,
        runway_model="gen4.5",
    )
    fake.failure_codes.append("INTERNAL.BAD_OUTPUT.CODE01")
    fake.fail("output", status=404)  # the first URL has already expired
    app = build_app(settings)
    worker = GenerationWorker(app)
    try:
        project = await ProjectService(app).create(
            guild_id=1, channel_id=2, title="t", by=9, slots=1
        )
        sub = await SubmissionService(app, worker).submit(
            project, Author(1, "alice"), "a lighthouse in a storm"
        )
        await worker.start()
        await worker.wait_idle(timeout=60)
        job = await app.store.get_job(sub.job.id)
        assert job.state == "done", job.error
    finally:
        await worker.stop()
        await app.aclose()
    assert fake.submissions == 2  # the bad output was worth exactly one more
    assert fake.output_requests == 2  # 404, then the fresh URL from reading the task again
    assert [t.endpoint for t in fake.tasks.values()] == ["text_to_video", "text_to_video"]
    assert fake.bodies[0]["duration"] == 2 and fake.bodies[0]["ratio"] == "1280:720"
