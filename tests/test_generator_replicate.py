"""The Replicate backend against a fake Replicate API on 127.0.0.1 (tests/fakes/replicate.py)."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from bot.errors import ConfigError, GeneratorError, GeneratorErrorKind
from bot.generators import create_generator
from bot.generators.base import GenerationRequest, JobState, JobStatus
from bot.generators.http import RetryPolicy
from bot.generators.replicate import (
    PRESETS,
    ReplicateGenerator,
    parse_durations,
    parse_inputs,
    parse_progress,
    parse_time,
)
from tests.conftest import make_settings
from tests.fakes import ThreadedServer
from tests.fakes.replicate import NSFW_ERROR, FakeReplicate

K = GeneratorErrorKind
TOKEN = "r8_TEST-SECRET-1234abcd"
KLING = "kwaivgi/kling-v1.6-standard"
WAN = "wan-video/wan-2.2-t2v-fast"
HAILUO = "minimax/hailuo-02"
POLICY = RetryPolicy(
    tries=3, base_seconds=0.01, cap_seconds=0.05, timeout=1.0, connect_timeout=0.5, read_timeout=0.5
)
QUICK = RetryPolicy(
    tries=2, base_seconds=0.01, cap_seconds=0.05, timeout=0.3, connect_timeout=0.3, read_timeout=0.3
)


@pytest.fixture
def fake() -> Iterator[FakeReplicate]:
    f = FakeReplicate(TOKEN, models=(KLING, WAN, HAILUO), hang_seconds=2.0)
    server = ThreadedServer(f.app).start()
    f.base = server.url
    try:
        yield f
    finally:
        server.call(f.release_hangs)
        server.stop()


@pytest.fixture
async def gen(fake: FakeReplicate) -> AsyncIterator[ReplicateGenerator]:
    g = make(fake)
    try:
        yield g
    finally:
        await g.aclose()


def make(fake: FakeReplicate, model: str = KLING, **kw) -> ReplicateGenerator:
    kw.setdefault("policy", POLICY)
    return ReplicateGenerator(TOKEN, model=model, api_base=fake.base + "/v1", **kw)


def req(prompt: str = "a fox in the snow", **kw) -> GenerationRequest:
    kw.setdefault("duration", 5.0)
    kw.setdefault("seed", 7)
    return GenerationRequest(prompt=prompt, **kw)


async def run_to_end(gen: ReplicateGenerator, pid: str, limit: int = 20) -> list[JobStatus]:
    """Poll (each poll moves the fake one step) until the prediction is finished."""
    seen = []
    for _ in range(limit):
        status = await gen.poll(pid)
        seen.append(status)
        if status.state.finished:
            return seen
    raise AssertionError(f"not finished after {limit} polls: {seen}")


def only(fake: FakeReplicate):
    (p,) = fake.predictions.values()
    return p


async def expect(kind: GeneratorErrorKind, coro) -> GeneratorError:
    with pytest.raises(GeneratorError) as info:
        await coro
    assert info.value.kind == kind, info.value.message
    return info.value


# ---------------------------------------------------------------------------- happy path


async def test_a_prompt_becomes_a_clip_with_progress_from_the_logs(gen, fake, tmp_path):
    pid = await gen.submit(req(aspect="9:16"))
    statuses = await run_to_end(gen, pid)
    assert statuses[0].state == JobState.RUNNING  # one poll in starting (start_polls=1)
    running = [s.progress for s in statuses if s.state == JobState.RUNNING]
    assert running == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert statuses[-1].state == JobState.DONE
    dest = await gen.download(pid, tmp_path / "clip.mp4")
    assert dest.read_bytes() == fake.video
    p = only(fake)
    assert p.input == {"prompt": "a fox in the snow", "duration": 5, "aspect_ratio": "9:16"}
    assert fake.submissions == 1
    create_headers = [h for h in fake.headers_seen if "Prefer" in h]
    assert create_headers == []  # sync mode is never asked for


async def test_a_new_prediction_is_queued_while_starting(fake):
    fake.start_polls = 3
    g = make(fake)
    try:
        pid = await g.submit(req())
        assert (await g.poll(pid)).state == JobState.QUEUED
    finally:
        await g.aclose()


async def test_a_configured_version_is_created_on_the_predictions_endpoint(fake, tmp_path):
    fake.add_version("abc123", KLING)
    g = make(fake, version="abc123")
    try:
        pid = await g.submit(req())
        assert only(fake).version == "abc123"
        assert (await run_to_end(g, pid))[-1].state == JobState.DONE
        assert g.model == f"{KLING}:abc123"
    finally:
        await g.aclose()


async def test_a_frame_count_model_gets_frames_fps_and_seed(fake):
    g = make(fake, model=WAN)
    try:
        duration = g.capabilities.duration_for(4.0)
        assert duration == pytest.approx(81 / 16)
        await g.submit(req(duration=duration, seed=2**40 + 5))
        assert only(fake).input == {
            "prompt": "a fox in the snow",
            "num_frames": 81,
            "frames_per_second": 16,
            "aspect_ratio": "16:9",
            "seed": 5,
        }
    finally:
        await g.aclose()


# ---------------------------------------------------------------------------- images


async def test_a_small_image_goes_inline_as_a_data_uri(gen, fake):
    image = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    await gen.submit(req(image=image))
    assert only(fake).input["start_image"].startswith("data:image/png;base64,")
    assert fake.files == {}


async def test_a_large_image_goes_through_the_files_api(fake):
    g = make(fake, data_uri_max_bytes=64)
    image = b"\x89PNG\r\n\x1a\n" + b"y" * 500
    try:
        await g.submit(req(image=image))
        ((fid, stored),) = fake.files.items()
        assert stored == image
        assert only(fake).input["start_image"] == f"{fake.base}/v1/files/{fid}"
    finally:
        await g.aclose()


async def test_a_model_without_image_input_refuses_an_image_before_sending(fake):
    g = make(fake, model=WAN)
    try:
        await expect(K.INVALID_INPUT, g.submit(req(image=b"\x89PNG")))
        assert fake.submissions == 0
    finally:
        await g.aclose()


# ---------------------------------------------------------------------------- cancel


async def test_cancel_while_queued(gen, fake):
    fake.hold = True
    pid = await gen.submit(req())
    assert (await gen.poll(pid)).state == JobState.QUEUED
    await gen.cancel(pid)
    assert (await gen.poll(pid)).state == JobState.CANCELED


async def test_cancel_while_running(gen, fake):
    pid = await gen.submit(req())
    assert (await gen.poll(pid)).state == JobState.RUNNING
    fake.hold = True
    await gen.cancel(pid)
    assert (await gen.poll(pid)).state == JobState.CANCELED
    assert fake.requests["cancel"] == 1


async def test_cancel_of_a_finished_or_unknown_prediction_is_no_error(gen, fake):
    pid = await gen.submit(req())
    await run_to_end(gen, pid)
    await gen.cancel(pid)
    await gen.cancel("nosuchprediction")
    assert (await gen.poll(pid)).state == JobState.DONE


# ---------------------------------------------------------------------------- faults


async def test_5xx_on_a_status_read_is_retried(gen, fake):
    pid = await gen.submit(req())
    fake.fail_next("get", "503", count=2)
    assert (await gen.poll(pid)).state in (JobState.QUEUED, JobState.RUNNING)
    assert fake.requests["get"] == 3


async def test_429_waits_as_long_as_retry_after_says_in_seconds(fake):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(tries=3, base_seconds=0.01, cap_seconds=5.0, timeout=1.0)
    g = make(fake, policy=policy, sleep=sleep)
    try:
        pid = await g.submit(req())
        fake.fail_next("get", "429", retry_after="2")
        await g.poll(pid)
        assert slept == [2.0]
    finally:
        await g.aclose()


async def test_429_waits_until_an_http_date_retry_after(fake):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(tries=3, base_seconds=0.01, cap_seconds=5.0, timeout=1.0)
    g = make(fake, policy=policy, sleep=sleep)
    try:
        pid = await g.submit(req())
        fake.fail_next(
            "get", "429", retry_after=email.utils.formatdate(time.time() + 3, usegmt=True)
        )
        await g.poll(pid)
        assert len(slept) == 1 and 1.0 <= slept[0] <= 3.0
    finally:
        await g.aclose()


async def test_a_retry_after_beyond_the_cap_goes_up_to_the_worker(gen, fake):
    pid = await gen.submit(req())
    fake.fail_next("get", "429", retry_after="30")
    error = await expect(K.RATE_LIMITED, gen.poll(pid))
    assert error.retry_after == 30.0
    assert fake.requests["get"] == 1


async def test_a_5xx_on_create_is_not_retried_and_creates_nothing(gen, fake):
    fake.fail_next("create", "503", retry_after="1")
    error = await expect(K.UNAVAILABLE, gen.submit(req()))
    assert error.retry_after == 1.0
    assert fake.submissions == 1 and fake.predictions == {}


async def test_a_status_read_that_never_answers_times_out(fake):
    g = make(fake, policy=QUICK)
    try:
        pid = await g.submit(req())
        fake.fail_next("get", "hang", count=2)
        started = time.monotonic()
        await expect(K.UNAVAILABLE, g.poll(pid))
        assert time.monotonic() - started < 1.9
    finally:
        await g.aclose()


async def test_malformed_json_is_a_malformed_response(gen, fake):
    pid = await gen.submit(req())
    fake.fail_next("get", "malformed", count=3)
    await expect(K.MALFORMED, gen.poll(pid))


async def test_a_truncated_download_is_truncated(gen, fake, tmp_path):
    pid = await gen.submit(req())
    await run_to_end(gen, pid)
    fake.fail_next("download", "truncated", count=3)
    await expect(K.TRUNCATED, gen.download(pid, tmp_path / "clip.mp4"))
    assert not (tmp_path / "clip.mp4").exists()


async def test_an_html_page_instead_of_the_video_is_not_video(gen, fake, tmp_path):
    pid = await gen.submit(req())
    await run_to_end(gen, pid)
    fake.fail_next("download", "html")
    await expect(K.NOT_VIDEO, gen.download(pid, tmp_path / "clip.mp4"))


async def test_a_bad_token_is_auth(fake):
    g = ReplicateGenerator("r8_wrong", model=KLING, api_base=fake.base + "/v1", policy=POLICY)
    try:
        await expect(K.AUTH, g.submit(req()))
        await expect(K.AUTH, g.check())
    finally:
        await g.aclose()


async def test_an_nsfw_failure_is_content_policy_and_not_retried(gen, fake):
    fake.outcomes.append("nsfw")
    pid = await gen.submit(req())
    final = (await run_to_end(gen, pid))[-1]
    assert final.state == JobState.FAILED
    assert final.error.kind == K.CONTENT_POLICY and not final.error.transient
    assert "NSFW" in final.error.message and NSFW_ERROR[:20] in final.error.message


async def test_a_model_crash_is_a_transient_failure(gen, fake):
    fake.outcomes.append("failed")
    pid = await gen.submit(req())
    final = (await run_to_end(gen, pid))[-1]
    assert final.state == JobState.FAILED and final.error.transient


async def test_an_aborted_prediction_fails_transiently(gen, fake):
    fake.outcomes.append("aborted")
    pid = await gen.submit(req())
    final = (await run_to_end(gen, pid))[-1]
    assert final.state == JobState.FAILED
    assert final.error.kind == K.UNAVAILABLE and "aborted" in final.error.message


async def test_an_unknown_status_is_malformed(gen, fake):
    pid = await gen.submit(req())
    fake.predictions[pid].extra["status"] = "exploded"
    await expect(K.MALFORMED, gen.poll(pid))


# ---------------------------------------------------------------------------- unknown outcome


async def test_a_create_dropped_after_acceptance_is_found_in_the_list(gen, fake):
    fake.fail_next("create", "drop")
    since = time.time()
    await expect(K.OUTCOME_UNKNOWN, gen.submit(req()))
    assert fake.submissions == 1
    found = await gen.find(req(), since=since)
    assert found == only(fake).id
    assert fake.submissions == 1  # found: no second submission
    assert (await run_to_end(gen, found))[-1].state == JobState.DONE


async def test_a_create_that_times_out_is_outcome_unknown_then_found(fake):
    g = make(fake, policy=QUICK)
    try:
        fake.fail_next("create", "accept_hang")
        since = time.time()
        await expect(K.OUTCOME_UNKNOWN, g.submit(req()))
        assert await g.find(req(), since=since) == only(fake).id
    finally:
        await g.aclose()


async def test_a_create_lost_before_acceptance_is_not_found_and_sent_again(gen, fake):
    fake.fail_next("create", "lost")
    since = time.time()
    await expect(K.OUTCOME_UNKNOWN, gen.submit(req()))
    assert fake.predictions == {}
    assert await gen.find(req(), since=since) is None
    pid = await gen.submit(req())
    assert fake.submissions == 2 and list(fake.predictions) == [pid]


async def test_find_follows_next_pages_and_matches_the_exact_input(gen, fake):
    fake.page_size = 2
    fake.fail_next("create", "drop")
    since = time.time()
    await expect(K.OUTCOME_UNKNOWN, gen.submit(req(seed=3)))
    ours = only(fake).id
    later = time.time() + 1
    fake.add_prediction(
        {"prompt": "a fox in the snow!", "duration": 5, "aspect_ratio": "16:9"}, created=later
    )
    fake.add_prediction(
        {"prompt": "a fox in the snow", "duration": 10, "aspect_ratio": "16:9"}, created=later
    )
    fake.add_prediction({"prompt": "another member's idea", "duration": 5}, created=later)
    fake.add_prediction(
        {"prompt": "a fox in the snow", "duration": 5, "aspect_ratio": "9:16"}, created=later
    )
    assert await gen.find(req(seed=3), since=since) == ours
    assert fake.requests["list"] == 3


async def test_find_stops_at_the_window_and_ignores_older_twins(gen, fake):
    fake.page_size = 1
    old = fake.add_prediction(
        {"prompt": "a fox in the snow", "duration": 5, "aspect_ratio": "16:9"},
        created=time.time() - 3600,
    )
    fake.add_prediction({"prompt": "older still"}, created=time.time() - 7200)
    assert await gen.find(req(), since=time.time()) is None
    assert fake.requests["list"] == 1
    assert old.id in fake.predictions


async def test_find_never_adopts_a_prediction_this_process_created(gen, fake):
    first = await gen.submit(req())
    fake.fail_next("create", "lost")
    await expect(K.OUTCOME_UNKNOWN, gen.submit(req()))
    assert await gen.find(req(), since=time.time() - 1) is None
    assert first in fake.predictions


async def test_find_that_cannot_read_the_list_raises_a_transient_error(gen, fake):
    fake.fail_next("list", "503", count=3)
    error = await expect(K.UNAVAILABLE, gen.find(req(), since=time.time()))
    assert error.transient


# ---------------------------------------------------------------------------- expired output


async def test_an_expired_output_still_listed_is_re_read_then_gone_for_good(gen, fake, tmp_path):
    pid = await gen.submit(req())
    await run_to_end(gen, pid)
    fake.expire_output(pid, listed=True)
    await expect(K.OUTPUT_EXPIRED, gen.download(pid, tmp_path / "clip.mp4"))
    reads = fake.requests["get"]
    assert (await gen.poll(pid)).state == JobState.DONE
    assert fake.requests["get"] == reads + 1
    await expect(K.OUTPUT_EXPIRED, gen.download(pid, tmp_path / "clip.mp4"))


async def test_an_output_removed_from_the_prediction_fails_as_expired(gen, fake, tmp_path):
    pid = await gen.submit(req())
    await run_to_end(gen, pid)
    fake.expire_output(pid, listed=False)
    await expect(K.OUTPUT_EXPIRED, gen.download(pid, tmp_path / "clip.mp4"))
    status = await gen.poll(pid)
    assert status.state == JobState.FAILED and status.error.kind == K.OUTPUT_EXPIRED


async def test_a_download_after_a_restart_reads_the_output_url_first(fake, tmp_path):
    first = make(fake)
    pid = await first.submit(req())
    await run_to_end(first, pid)
    await first.aclose()
    second = make(fake)
    try:
        assert (await second.download(pid, tmp_path / "c.mp4")).read_bytes() == fake.video
    finally:
        await second.aclose()


# ---------------------------------------------------------------------------- secrets


async def test_the_token_appears_in_no_log_and_no_error(fake, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    fake.echo_token = True
    g = make(fake, policy=QUICK)
    errors: list[GeneratorError] = []

    async def collect(coro) -> None:
        try:
            await coro
        except GeneratorError as e:
            errors.append(e)

    try:
        pid = await g.submit(req())
        for route, kind in [("get", "503"), ("get", "429"), ("get", "malformed"), ("get", "hang")]:
            fake.fail_next(route, kind, count=2)
            await collect(g.poll(pid))
        for kind in ["503", "429", "drop", "lost", "malformed"]:
            fake.fail_next("create", kind)
            await collect(g.submit(req()))
        fake.fail_next("list", "503", count=2)
        await collect(g.find(req(), since=time.time()))
        await run_to_end(g, pid)
        for kind in ["truncated", "html", "404"]:
            fake.fail_next("download", kind, count=2)
            await collect(g.download(pid, tmp_path / "c.mp4"))
        fake.outcomes.append("nsfw")
        nsfw = await g.submit(req())
        errors.append((await run_to_end(g, nsfw))[-1].error)
        wrong = ReplicateGenerator(
            "r8_wrong", model=KLING, api_base=fake.base + "/v1", policy=QUICK
        )
        await collect(wrong.check())
        await wrong.aclose()
    finally:
        await g.aclose()
    assert len(errors) >= 12
    for e in errors:
        assert TOKEN not in str(e) and TOKEN not in e.message
    assert any("[redacted]" in e.message for e in errors)  # the echo was there, and scrubbed
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in str(record.args)


# ---------------------------------------------------------------------------- check and settings


async def test_check_names_the_model_and_account(gen):
    line = await gen.check()
    assert KLING in line and "crowdcut" in line and "5 or 10 s" in line


async def test_check_of_a_model_replicate_does_not_have_is_a_config_error(fake):
    g = make(fake, model="nobody/nothing", preset=PRESETS[KLING])
    try:
        with pytest.raises(ConfigError, match="nobody/nothing"):
            await g.check()
    finally:
        await g.aclose()


async def test_the_backend_is_built_from_settings(fake, tmp_path):
    settings = make_settings(
        tmp_path,
        replicate_api_token=TOKEN,
        replicate_model=HAILUO,
        replicate_api_base=fake.base + "/v1",
    )
    g = create_generator("replicate", settings)
    try:
        assert g.name == "replicate" and g.model == HAILUO and g.charges_failures
        assert g.capabilities.durations == (6.0, 10.0) and g.clip_seconds == 6.0
        await g.submit(req(duration=6.0))
        assert only(fake).input == {
            "prompt": "a fox in the snow",
            "duration": 6,
            "prompt_optimizer": False,
        }
    finally:
        await g.aclose()


def test_an_unknown_model_needs_inputs_and_durations(tmp_path):
    base = dict(replicate_api_token=TOKEN, replicate_model="someone/new-video")
    with pytest.raises(ConfigError, match="REPLICATE_INPUTS"):
        create_generator("replicate", make_settings(tmp_path, **base))
    g = create_generator(
        "replicate",
        make_settings(
            tmp_path,
            **base,
            replicate_inputs="prompt=text,image=init_image,frames=length,seed=seed",
            replicate_durations="2-8",
            replicate_fps=24.0,
            replicate_aspects="16:9",
        ),
    )
    caps = g.capabilities
    assert (caps.min_seconds, caps.max_seconds, caps.fps, caps.aspects) == (2, 8, 24, ("16:9",))
    assert caps.image_input and g.preset.inputs["frames"] == "length"


def test_no_token_or_no_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="REPLICATE_API_TOKEN"):
        create_generator("replicate", make_settings(tmp_path))
    with pytest.raises(ConfigError, match="REPLICATE_MODEL"):
        create_generator(
            "replicate", make_settings(tmp_path, replicate_api_token=TOKEN, replicate_model="")
        )


async def test_a_prompt_over_the_model_limit_or_an_aspect_it_lacks_is_refused_unsent(fake):
    g = make(fake, model=HAILUO)
    try:
        await expect(K.INVALID_INPUT, g.submit(req(prompt="x" * 2001, duration=6.0)))
        await expect(K.INVALID_INPUT, g.submit(req(aspect="9:16", duration=6.0)))
        assert fake.submissions == 0
    finally:
        await g.aclose()


def test_capabilities_pick_the_shortest_accepted_length():
    kling = PRESETS[KLING].capabilities
    assert (kling.duration_for(3), kling.duration_for(7), kling.duration_for(12)) == (5, 10, None)
    assert PRESETS["bytedance/seedance-1-lite"].capabilities.duration_for(3.2) == 4
    assert PRESETS[WAN].capabilities.duration_for(6.5) is None


# ---------------------------------------------------------------------------- parsing


def test_progress_is_read_from_the_last_tqdm_line():
    logs = (
        "Using seed: 1\n 10%|█         | 2/20 [00:01<00:09]\n 45%|████▌     | 9/20 [00:04<00:05]\n"
    )
    assert parse_progress(logs) == pytest.approx(9 / 20)
    assert parse_progress("loading weights\n") is None
    assert parse_progress(None) is None
    assert parse_progress("100%|██████████| 50/50 [00:10<00:00]\r 20%|██ | 1/5") == 0.2


def test_replicate_timestamps_parse_with_any_fraction():
    assert parse_time("2024-04-22T11:15:01.04Z") == pytest.approx(1713784501.04)
    assert parse_time("2025-02-26T15:02:03.35548709Z") == pytest.approx(1740582123.355487)
    assert parse_time("yesterday") is None and parse_time(None) is None


def test_inputs_and_durations_settings_are_read_or_refused():
    assert parse_inputs("prompt=prompt, image=first_frame_image") == (
        {"prompt": "prompt", "image": "first_frame_image"},
        {},
    )
    assert parse_inputs('{"prompt": "text", "fixed": {"resolution": "720p"}}') == (
        {"prompt": "text"},
        {"resolution": "720p"},
    )
    for bad in ("image=img", "prompt", "colour=hue,prompt=p", "{nope"):
        with pytest.raises(ConfigError, match="REPLICATE_INPUTS"):
            parse_inputs(bad)
    assert parse_durations("10,5", None)["durations"] == (5.0, 10.0)
    with pytest.raises(ConfigError, match="REPLICATE_DURATIONS"):
        parse_durations("soon", None)
