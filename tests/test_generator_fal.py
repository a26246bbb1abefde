"""The fal backend against a fake fal queue on 127.0.0.1 (tests/fakes/fal.py)."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from bot.errors import ConfigError, GeneratorError, GeneratorErrorKind
from bot.generators import create_generator
from bot.generators.base import GenerationRequest, JobState, JobStatus
from bot.generators.fal import FalGenerator, app_base, log_fraction
from bot.generators.http import RetryPolicy, sniff_video
from tests.conftest import make_settings
from tests.fakes import ThreadedServer
from tests.fakes.fal import FakeFal

K = GeneratorErrorKind
KEY = "sk-TEST-SECRET-1234"
KLING_I2V = "fal-ai/kling-video/v2.1/standard/image-to-video"
KLING_T2V = "fal-ai/kling-video/v2.1/standard/text-to-video"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg=="
)
FAST = RetryPolicy(
    tries=3, base_seconds=0.01, cap_seconds=0.05, timeout=0.5, connect_timeout=0.5, read_timeout=0.5
)


@pytest.fixture
def fake() -> FakeFal:
    return FakeFal(KEY)


@pytest.fixture
def server(fake: FakeFal) -> Iterator[ThreadedServer]:
    with ThreadedServer(fake.make_app) as s:
        yield s


def make_gen(server: ThreadedServer, **kw: object) -> FalGenerator:
    args: dict[str, object] = dict(
        key=KEY, queue_url=server.url, api_url=f"{server.url}/v1", policy=FAST
    )
    args.update(kw)
    return FalGenerator(**args)  # type: ignore[arg-type]


@pytest.fixture
async def gen(server: ThreadedServer) -> AsyncIterator[FalGenerator]:
    g = make_gen(server)
    try:
        yield g
    finally:
        await g.aclose()


def with_image(prompt: str = "a cat surfing", **kw: object) -> GenerationRequest:
    args: dict[str, object] = {"duration": 5.0, **kw}
    return GenerationRequest(prompt=prompt, image=PNG, **args)  # type: ignore[arg-type]


async def run_to_end(gen: FalGenerator, job_id: str, limit: int = 50) -> list[JobStatus]:
    """Poll until the job finishes (the fake moves one step per status poll)."""
    seen = []
    for _ in range(limit):
        status = await gen.poll(job_id)
        seen.append(status)
        if status.state.finished:
            return seen
    raise AssertionError(f"job did not finish: {seen[-1]}")


async def raises(kind: GeneratorErrorKind, coro: object) -> GeneratorError:
    with pytest.raises(GeneratorError) as info:
        await coro  # type: ignore[misc]
    assert info.value.kind == kind, info.value.message
    return info.value


# ---------------------------------------------------------------------------- happy path


async def test_an_image_prompt_becomes_a_clip_with_rising_progress(gen, fake, tmp_path):
    job_id = await gen.submit(with_image())
    assert job_id.startswith("fal-ai/kling-video|")

    seen = await run_to_end(gen, job_id)
    states = [s.state for s in seen]
    assert states[0] == JobState.QUEUED and states[-1] == JobState.DONE
    assert JobState.RUNNING in states
    progress = [s.progress for s in seen if s.state == JobState.RUNNING and s.progress is not None]
    assert progress == sorted(progress) and len(progress) >= 2 and 0 < progress[0] < 1

    out = await gen.download(job_id, tmp_path / "clip.mp4")
    assert out.read_bytes() == fake.video and sniff_video(out.read_bytes()[:16]) == "mp4"
    assert fake.submissions == 1


async def test_the_request_is_mapped_to_klings_input_names_with_the_image_as_a_data_uri(gen, fake):
    await gen.submit(with_image(duration=10.0, aspect="9:16"))
    job = fake.only_job
    assert job.endpoint == KLING_I2V
    assert job.input["prompt"] == "a cat surfing"
    assert job.input["duration"] == "10"
    assert job.input["image_url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert "aspect_ratio" not in job.input  # Kling image-to-video takes the image's shape


async def test_status_result_and_cancel_are_asked_without_the_models_subpath(gen, fake, server):
    job_id = await gen.submit(with_image())
    await run_to_end(gen, job_id)
    request_id = job_id.split("|")[1]
    assert fake.only_job.app == "fal-ai/kling-video" == app_base(KLING_I2V)
    async with aiohttp.ClientSession(headers={"Authorization": f"Key {KEY}"}) as s:
        wrong = f"{server.url}/{KLING_I2V}/requests/{request_id}/status"
        async with s.get(wrong) as resp:
            assert resp.status == 404
        right = f"{server.url}/fal-ai/kling-video/requests/{request_id}/status"
        async with s.get(right) as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "COMPLETED"


async def test_a_prompt_without_an_image_goes_to_the_text_model(server, fake):
    gen = make_gen(server, text_model=KLING_T2V)
    try:
        assert gen.capabilities.image_input and not gen.capabilities.image_required
        job_id = await gen.submit(GenerationRequest("a red door", 5.0, aspect="1:1"))
        job = fake.only_job
        assert job.endpoint == KLING_T2V and job.input["aspect_ratio"] == "1:1"
        assert "image_url" not in job.input
        assert (await run_to_end(gen, job_id))[-1].state == JobState.DONE
    finally:
        await gen.aclose()


async def test_an_image_model_alone_needs_an_image_and_refuses_before_sending(gen, fake):
    assert gen.capabilities.image_required
    await raises(K.INVALID_INPUT, gen.submit(GenerationRequest("no image", 5.0)))
    assert fake.submissions == 0


# ---------------------------------------------------------------------------- capabilities


def test_kling_takes_five_or_ten_seconds_only():
    caps = FalGenerator(key=KEY, model=KLING_I2V).capabilities
    assert caps.durations == (5.0, 10.0)
    assert caps.duration_for(3) == 5 and caps.duration_for(7) == 10
    assert caps.duration_for(11) is None
    assert caps.max_prompt_chars == 2500 and caps.natural_seconds == 5


@pytest.mark.parametrize(
    ("model", "durations", "aspects"),
    [
        ("fal-ai/veo3/fast", (4.0, 6.0, 8.0), ("16:9", "9:16")),
        ("fal-ai/minimax/hailuo-02/standard/text-to-video", (6.0, 10.0), ("16:9",)),
        ("fal-ai/wan-t2v", (5.0,), ("16:9", "9:16", "1:1")),
        (KLING_T2V, (5.0, 10.0), ("16:9", "9:16", "1:1")),
    ],
)
def test_each_preset_declares_what_its_endpoint_accepts(model, durations, aspects):
    caps = FalGenerator(key=KEY, model=model).capabilities
    assert caps.durations == durations and caps.aspects == aspects
    assert not caps.image_input  # text-to-video endpoints take no image


def test_ltx_takes_any_length_in_whole_frames():
    gen = FalGenerator(key=KEY, model="fal-ai/ltx-video-13b-distilled/image-to-video")
    caps = gen.capabilities
    assert caps.durations == () and caps.fps == 24 and caps.image_required
    _, body = gen.build_input(with_image(duration=2.0))
    assert body["num_frames"] == 49 and body["frame_rate"] == 24


def test_an_unknown_endpoint_needs_its_input_names_and_durations():
    with pytest.raises(ConfigError, match="FAL_INPUTS"):
        FalGenerator(key=KEY, model="someone/new-video-model")
    gen = FalGenerator(
        key=KEY,
        model="someone/new-video-model",
        inputs="prompt=text,duration=length,aspect=ratio",
        durations="4s,8s",
    )
    assert gen.capabilities.durations == (4.0, 8.0) and not gen.capabilities.image_input
    endpoint, body = gen.build_input(GenerationRequest("x", 8.0, aspect="9:16"))
    assert endpoint == "someone/new-video-model"
    assert body == {"text": "x", "length": "8s", "ratio": "9:16"}


def test_create_generator_builds_fal_from_settings(tmp_path):
    settings = make_settings(tmp_path, fal_key=KEY, fal_model="fal-ai/veo3/fast")
    gen = create_generator("fal", settings)
    assert isinstance(gen, FalGenerator) and gen.model == "fal-ai/veo3/fast"
    assert gen.clip_seconds == 8 and gen.max_concurrency == 2 and not gen.charges_failures
    with pytest.raises(ConfigError, match="FAL_KEY"):
        create_generator("fal", make_settings(tmp_path))


def test_progress_is_read_from_percentages_or_steps_in_the_logs():
    assert log_fraction([{"message": " 40%|████      | 12/30"}]) == 0.4
    assert log_fraction([{"message": "step 3/10"}, {"message": "saving"}]) == 0.3
    assert log_fraction([{"message": "loading model"}]) is None
    assert log_fraction(None) is None


# ---------------------------------------------------------------------------- check


async def test_check_answers_without_spending_and_names_the_model(gen, fake):
    line = await gen.check()
    assert KLING_I2V in line and "5 or 10 s" in line
    assert fake.submissions == 0


async def test_a_wrong_key_is_an_auth_error(server, fake):
    gen = make_gen(server, key="wrong-key-0000")
    try:
        await raises(K.AUTH, gen.check())
        await raises(K.AUTH, gen.submit(with_image()))
        assert fake.submissions == 0 and fake.auth_failures == 2
    finally:
        await gen.aclose()


# ---------------------------------------------------------------------------- cancel


async def test_cancel_while_queued(gen, fake):
    fake.queue_polls = 100
    job_id = await gen.submit(with_image())
    assert (await gen.poll(job_id)).state == JobState.QUEUED
    await gen.cancel(job_id)
    assert (await gen.poll(job_id)).state == JobState.CANCELED
    assert fake.cancels == 1


async def test_cancel_while_running(gen, fake):
    fake.queue_polls, fake.run_polls = 0, 100
    job_id = await gen.submit(with_image())
    assert (await gen.poll(job_id)).state == JobState.RUNNING
    await gen.cancel(job_id)
    assert (await gen.poll(job_id)).state == JobState.CANCELED


async def test_cancel_after_the_job_finished_is_no_error(gen, fake):
    job_id = await gen.submit(with_image())
    await run_to_end(gen, job_id)
    await gen.cancel(job_id)  # fal answers 400 ALREADY_COMPLETED
    assert fake.cancels == 1


# ---------------------------------------------------------------------------- faults


async def test_a_429_with_retry_after_seconds_is_waited_out(gen, fake):
    job_id = await gen.submit(with_image())
    fake.inject("status", 429, retry_after=0.01, times=2)
    assert (await gen.poll(job_id)).state == JobState.QUEUED
    assert fake.status_polls == 3


async def test_a_503_with_a_far_http_date_goes_back_to_the_worker_with_the_wait(gen, fake):
    job_id = await gen.submit(with_image())
    fake.inject("status", 503, retry_after=FakeFal.http_date(30))
    error = await raises(K.UNAVAILABLE, gen.poll(job_id))
    assert error.retry_after is not None and 20 < error.retry_after <= 31
    assert fake.status_polls == 1  # not slept here: the worker schedules it


async def test_repeated_5xx_are_retried_a_capped_number_of_times(gen, fake):
    job_id = await gen.submit(with_image())
    fake.inject("status", 502, times=10)
    t0 = time.monotonic()
    await raises(K.UNAVAILABLE, gen.poll(job_id))
    assert fake.status_polls == FAST.tries and time.monotonic() - t0 < 2


async def test_x_fal_retryable_false_makes_a_5xx_final(gen, fake):
    job_id = await gen.submit(with_image())
    fake.inject("status", 500, retryable=False, times=3)
    error = await raises(K.INVALID_INPUT, gen.poll(job_id))
    assert not error.transient and fake.status_polls == 1


async def test_x_fal_retryable_true_makes_another_status_transient(gen, fake):
    job_id = await gen.submit(with_image())
    fake.inject("status", 409, retryable=True)
    assert (await gen.poll(job_id)).state == JobState.QUEUED
    assert fake.status_polls == 2


async def test_a_create_answered_503_is_not_sent_again(gen, fake):
    fake.inject("submit", 503, retry_after=1)
    error = await raises(K.UNAVAILABLE, gen.submit(with_image()))
    assert error.retry_after == 1 and fake.submissions == 0


async def test_a_request_that_never_answers_times_out(gen, fake):
    job_id = await gen.submit(with_image())
    fake.hang("status", times=FAST.tries)
    t0 = time.monotonic()
    await raises(K.UNAVAILABLE, gen.poll(job_id))
    assert time.monotonic() - t0 < 3


async def test_malformed_status_json_is_malformed(gen, fake):
    job_id = await gen.submit(with_image())
    fake.garbage("status", times=FAST.tries)
    await raises(K.MALFORMED, gen.poll(job_id))


async def test_malformed_result_json_is_malformed(gen, fake):
    job_id = await gen.submit(with_image())
    fake.finish()
    fake.garbage("result", times=FAST.tries)
    await raises(K.MALFORMED, gen.poll(job_id))


async def test_a_truncated_download_is_truncated(gen, fake, tmp_path):
    job_id = await gen.submit(with_image())
    await run_to_end(gen, job_id)
    fake.truncate_video = FAST.tries
    await raises(K.TRUNCATED, gen.download(job_id, tmp_path / "clip.mp4"))
    assert not (tmp_path / "clip.mp4").exists()


async def test_an_output_that_is_not_a_video_is_not_video(gen, fake, tmp_path):
    job_id = await gen.submit(with_image())
    await run_to_end(gen, job_id)
    fake.html_video = 1
    await raises(K.NOT_VIDEO, gen.download(job_id, tmp_path / "clip.mp4"))


async def test_an_expired_url_is_replaced_by_reading_the_result_again(gen, fake, tmp_path):
    job_id = await gen.submit(with_image())
    await run_to_end(gen, job_id)
    fake.expire_video()
    await raises(K.OUTPUT_EXPIRED, gen.download(job_id, tmp_path / "clip.mp4"))
    reads = fake.result_reads
    assert (await gen.poll(job_id)).state == JobState.DONE
    assert fake.result_reads == reads + 1
    assert (await gen.download(job_id, tmp_path / "clip.mp4")).read_bytes() == fake.video
    assert fake.submissions == 1


async def test_a_content_policy_refusal_at_submit_is_not_retried(gen, fake):
    fake.refuse_next = 1
    error = await raises(K.CONTENT_POLICY, gen.submit(with_image("something flagged")))
    assert not error.transient and "flagged" in error.message
    assert fake.submissions == 0


async def test_a_request_refused_while_running_fails_with_content_policy(gen, fake):
    fake.fail(
        422,
        {
            "detail": [
                {"loc": ["body", "image_url"], "msg": "flagged", "type": "content_policy_violation"}
            ]
        },
    )
    job_id = await gen.submit(with_image())
    last = (await run_to_end(gen, job_id))[-1]
    assert last.state == JobState.FAILED and last.error is not None
    assert last.error.kind == K.CONTENT_POLICY


@pytest.mark.parametrize(("retryable", "transient"), [(False, False), (None, True)])
async def test_a_request_that_failed_on_fal_reports_its_error(gen, fake, retryable, transient):
    fake.fail(
        503,
        {"detail": "Runner disconnected", "error_type": "runner_disconnected"},
        retryable=retryable,
    )
    job_id = await gen.submit(with_image())
    last = (await run_to_end(gen, job_id))[-1]
    assert last.state == JobState.FAILED and last.error is not None
    assert "Runner disconnected" in last.error.message
    assert last.error.transient is transient
    assert fake.submissions == 1


async def test_a_submit_whose_answer_is_lost_is_found_once_it_finished(gen, fake):
    fake.hang("submit")
    since = time.time()
    request = with_image("a lighthouse at dusk")
    await raises(K.OUTCOME_UNKNOWN, gen.submit(request))
    assert fake.submissions == 1

    # still queued: fal's request list holds finished requests only, so it cannot tell
    await raises(K.OUTCOME_UNKNOWN, gen.find(request, since=since))

    fake.finish()
    job_id = await gen.find(request, since=since)
    assert job_id == f"fal-ai/kling-video|{fake.only_job.request_id}"
    assert (await gen.poll(job_id)).state == JobState.DONE
    assert fake.submissions == 1


async def test_find_never_claims_another_prompts_request(gen, fake):
    job_id = await gen.submit(with_image("a different prompt"))
    await run_to_end(gen, job_id)
    await raises(K.OUTCOME_UNKNOWN, gen.find(with_image("mine"), since=time.time() - 5))


# ---------------------------------------------------------------------------- secrets


async def test_the_key_appears_in_no_log_and_no_error(gen, fake, server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []

    async def collect(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except Exception as e:  # noqa: BLE001 - every error is inspected below
            errors.append(e)

    fake.inject("submit", 400, body={"detail": f"bad key {KEY}"})
    await collect(gen.submit(with_image()))
    job_id = await gen.submit(with_image())
    fake.inject("status", 429, retry_after=0.01, body={"detail": f"slow down {KEY}"})
    fake.inject("status", 500, retryable=False, body={"detail": f"Key {KEY} broke"})
    await collect(gen.poll(job_id))
    fake.hang("status", times=FAST.tries)
    await collect(gen.poll(job_id))
    fake.garbage("status", times=FAST.tries)
    await collect(gen.poll(job_id))
    await run_to_end(gen, job_id)
    fake.truncate_video = FAST.tries
    await collect(gen.download(job_id, tmp_path / "a.mp4"))
    fake.expire_video()
    await collect(gen.download(job_id, tmp_path / "a.mp4"))
    fake.refuse_next = 1
    await collect(gen.submit(with_image(KEY)))
    fake.hang("submit")
    await collect(gen.submit(with_image()))
    await collect(gen.find(with_image(), since=time.time() - 5))
    wrong = make_gen(server, key=KEY + "x")
    await collect(wrong.check())
    await wrong.aclose()

    assert len(errors) >= 8
    for e in errors:
        assert KEY not in str(e) and KEY not in repr(e.args)
    for record in caplog.records:
        assert KEY not in record.getMessage()


# ---------------------------------------------------------------------------- with the worker


async def test_the_worker_makes_a_clip_through_an_expired_url(fake, server, tmp_path):
    from bot.app import build_app
    from bot.services.projects import ProjectService
    from bot.services.submissions import Author, SubmissionService
    from bot.services.worker import GenerationWorker

    settings = make_settings(
        tmp_path,
        generator="fal",
        fal_key=KEY,
        fal_queue_url=server.url,
        fal_api_url=f"{server.url}/v1",
        fal_text_model=KLING_T2V,
    )
    fake.stale_urls = 1
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
    assert fake.submissions == 1
    assert fake.video_gets == 2  # 404, then the fresh URL from reading the result again
    assert fake.only_job.endpoint == KLING_T2V and fake.only_job.input["duration"] == "5"
