"""The embedded local generator: real H.264 clips, deterministic looks, provider-like jobs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw

from bot.errors import TRANSIENT_KINDS, ConfigError, GeneratorError, GeneratorErrorKind
from bot.generators import create_generator
from bot.generators.base import GenerationRequest, Generator, JobState, JobStatus
from bot.generators.local import LocalGenerator, choose_look
from bot.media.probe import probe

SMALL = {"16:9": (320, 180), "9:16": (180, 320), "1:1": (240, 240)}


def make_generator(work_dir: Path, **kwargs: object) -> LocalGenerator:
    options: dict[str, object] = {
        "sizes": SMALL,
        "max_concurrency": 2,
        "threads": 1,
        "test_hooks": True,
    }
    options.update(kwargs)
    return LocalGenerator(work_dir, **options)  # type: ignore[arg-type]


@pytest.fixture
async def gen(tmp_path: Path):
    generator = make_generator(tmp_path / "work")
    yield generator
    await generator.aclose()


def request(prompt: str, *, duration: float = 1.0, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, duration=duration, **kwargs)  # type: ignore[arg-type]


async def wait_for(
    generator: LocalGenerator, job_id: str, states: set[JobState], timeout: float = 30
) -> JobStatus:
    async with asyncio.timeout(timeout):
        while True:
            status = await generator.poll(job_id)
            if status.state in states:
                return status
            await asyncio.sleep(0.02)


async def finish(generator: LocalGenerator, job_id: str) -> JobStatus:
    return await wait_for(generator, job_id, {JobState.DONE, JobState.FAILED, JobState.CANCELED})


async def render(generator: LocalGenerator, req: GenerationRequest, dest: Path) -> Path:
    job_id = await generator.submit(req)
    status = await finish(generator, job_id)
    assert status.state == JobState.DONE, status.error
    return await generator.download(job_id, dest)


def frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def frame_hashes(path: Path) -> list[str]:
    return [hashlib.sha256(f.tobytes()).hexdigest() for f in frames(path)]


def picture_png(width: int = 400, height: int = 225) -> bytes:
    """A bold picture: a red disc, a navy block and a black diagonal on white."""
    im = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(im)
    draw.ellipse((40, 30, 190, 180), fill="red")
    draw.rectangle((230, 40, 370, 210), fill="navy")
    draw.line((0, height - 1, width - 1, 0), fill="black", width=10)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    grey_a = a.astype(float).mean(axis=2).ravel()
    grey_b = b.astype(float).mean(axis=2).ravel()
    return float(np.corrcoef(grey_a, grey_b)[0, 1])


# --- the clips --------------------------------------------------------------------------


async def test_clips_are_h264_yuv420p_with_audio_at_the_size_of_their_aspect(gen, tmp_path):
    jobs = {aspect: await gen.submit(request("a cat", aspect=aspect)) for aspect in SMALL}
    for aspect, job_id in jobs.items():
        assert (await finish(gen, job_id)).state == JobState.DONE
        info = probe(await gen.download(job_id, tmp_path / f"{job_id}.mp4"))
        assert (info.video_codec, info.pix_fmt) == ("h264", "yuv420p")
        assert (info.width, info.height) == SMALL[aspect]
        assert info.frame_rate == 24 and info.frame_count == 24
        assert info.duration == pytest.approx(1.0, abs=0.05)
        assert (info.has_audio, info.audio_codec, info.sample_rate) == (True, "aac", 48000)


async def test_clips_can_be_silent(tmp_path):
    generator = make_generator(tmp_path / "work", audio=False)
    try:
        clip = await render(generator, request("a cat"), tmp_path / "c.mp4")
    finally:
        await generator.aclose()
    assert not probe(clip).has_audio


async def test_the_default_sizes_are_640x360_360x640_and_480x480(tmp_path):
    generator = LocalGenerator(tmp_path / "work")
    assert generator.sizes == {"16:9": (640, 360), "9:16": (360, 640), "1:1": (480, 480)}
    assert generator.fps == 24


async def test_distinct_prompts_give_visibly_different_clips(gen, tmp_path):
    prompts = ["a cat on the moon", "neon city at night", "waves crashing on rocks"]
    clips = [await render(gen, request(p), tmp_path / f"{i}.mp4") for i, p in enumerate(prompts)]
    middle = [frames(c)[12].astype(float) for c in clips]
    for i in range(len(middle)):
        for j in range(i + 1, len(middle)):
            assert np.abs(middle[i] - middle[j]).mean() > 20, (prompts[i], prompts[j])


async def test_the_same_prompt_and_seed_give_identical_frames(gen, tmp_path):
    a = await render(gen, request("a forest in autumn", seed=7), tmp_path / "a.mp4")
    b = await render(gen, request("  A Forest   in AUTUMN ", seed=7), tmp_path / "b.mp4")
    other_seed = await render(gen, request("a forest in autumn", seed=8), tmp_path / "c.mp4")
    assert frame_hashes(a) == frame_hashes(b)
    assert frame_hashes(a) != frame_hashes(other_seed)


def test_looks_depend_only_on_the_normalized_prompt_and_the_seed():
    assert choose_look("Dancing robots", 3) == choose_look("dancing   robots", 3)
    assert choose_look("dancing robots", 3) != choose_look("dancing robots", 4)


async def test_a_reference_image_is_visibly_used(gen, tmp_path):
    image = picture_png()
    with_image = await render(gen, request("glitter rain", image=image), tmp_path / "i.mp4")
    without = await render(gen, request("glitter rain"), tmp_path / "n.mp4")
    # the first frame is the whole picture (zoom 1), scaled to 320x180
    target = np.asarray(Image.open(io.BytesIO(image)).convert("RGB").resize((320, 180)))
    assert correlation(frames(with_image)[0], target) > 0.6
    assert abs(correlation(frames(without)[0], target)) < 0.4
    # ...and the camera moves: the last frame is zoomed in
    first, last = frames(with_image)[0], frames(with_image)[-1]
    assert np.abs(first.astype(float) - last.astype(float)).mean() > 5


# --- provider-like behaviour ------------------------------------------------------------


async def test_a_job_goes_from_queued_or_running_to_done_with_progress(tmp_path):
    generator = make_generator(tmp_path / "work", max_concurrency=1)
    try:
        first = await generator.submit(request("a slow one [slow]", duration=1.5))
        second = await generator.submit(request("waiting its turn"))
        running = await wait_for(generator, first, {JobState.RUNNING})
        assert running.progress is not None and 0 <= running.progress < 1
        assert (await generator.poll(second)).state == JobState.QUEUED  # one at a time
        seen = set()
        while (status := await generator.poll(first)).state == JobState.RUNNING:
            seen.add(round(status.progress or 0, 1))
            await asyncio.sleep(0.05)
        assert status == JobStatus(JobState.DONE, progress=1.0)
        assert len(seen) >= 2  # progress moved
        assert (await finish(generator, second)).state == JobState.DONE
    finally:
        await generator.aclose()


async def test_download_copies_the_clip_into_a_new_folder(gen, tmp_path):
    job_id = await gen.submit(request("a cat"))
    await finish(gen, job_id)
    dest = await gen.download(job_id, tmp_path / "out" / "deeper" / "clip.mp4")
    assert dest.read_bytes() == (tmp_path / "work" / job_id / "output.mp4").read_bytes()
    assert not [p for p in dest.parent.iterdir() if p.name != "clip.mp4"]  # no temp left


async def test_downloading_an_unfinished_job_is_refused(tmp_path):
    generator = make_generator(tmp_path / "work")
    try:
        job_id = await generator.submit(request("a slow one [slow]", duration=2))
        with pytest.raises(GeneratorError) as info:
            await generator.download(job_id, tmp_path / "x.mp4")
        assert info.value.kind == GeneratorErrorKind.INVALID_INPUT
        assert not (tmp_path / "x.mp4").exists()
    finally:
        await generator.aclose()


async def test_a_fresh_instance_resumes_a_job_it_did_not_start(tmp_path):
    work = tmp_path / "work"
    first = make_generator(work)
    job_id = await first.submit(request("bubbles underwater [slow]", duration=1.5))
    await wait_for(first, job_id, {JobState.RUNNING})
    await first.aclose()  # the bot stops mid-render
    job_dir = work / job_id
    assert not (job_dir / "output.mp4").exists()
    (job_dir / ".output-deadbeef.tmp").write_bytes(b"half a clip")  # as a crash would leave

    second = make_generator(work)
    try:
        assert (await second.poll(job_id)).state in (JobState.QUEUED, JobState.RUNNING)
        assert (await finish(second, job_id)).state == JobState.DONE
        clip = await second.download(job_id, tmp_path / "resumed.mp4")
        normal = await render(
            second, request("bubbles underwater", duration=1.5), tmp_path / "n.mp4"
        )
    finally:
        await second.aclose()
    assert frame_hashes(clip) == frame_hashes(normal)  # the [slow] hook does not change the look
    assert sorted(p.name for p in job_dir.iterdir()) == ["output.mp4", "request.json"]

    third = make_generator(work)  # a finished job is reported done, not rendered again
    try:
        assert (await third.poll(job_id)).state == JobState.DONE
        assert not third._tasks
    finally:
        await third.aclose()


async def test_the_stored_request_keeps_the_image(tmp_path):
    work = tmp_path / "work"
    first = make_generator(work)
    job_id = await first.submit(request("slow picture [slow]", duration=2, image=picture_png()))
    await first.aclose()
    record = json.loads((work / job_id / "request.json").read_text())
    assert record["has_image"] and record["prompt"] == "slow picture [slow]"
    assert (work / job_id / "image.png").read_bytes() == picture_png()


async def test_cancel_stops_a_running_render(tmp_path):
    work = tmp_path / "work"
    generator = make_generator(work)
    try:
        job_id = await generator.submit(request("a slow one [slow]", duration=2))
        await wait_for(generator, job_id, {JobState.RUNNING})
        await generator.cancel(job_id)
        assert (await generator.poll(job_id)).state == JobState.CANCELED
        assert not generator._tasks
        await generator.cancel(job_id)  # cancelling twice is fine
    finally:
        await generator.aclose()
    assert not (work / job_id / "output.mp4").exists()
    assert not list((work / job_id).glob(".output-*"))

    fresh = make_generator(work)  # a canceled job is not resumed
    try:
        assert (await fresh.poll(job_id)).state == JobState.CANCELED
        assert not fresh._tasks
    finally:
        await fresh.aclose()


async def test_a_queued_job_can_be_canceled_before_it_starts(tmp_path):
    generator = make_generator(tmp_path / "work", max_concurrency=1)
    try:
        busy = await generator.submit(request("a slow one [slow]", duration=1))
        waiting = await generator.submit(request("never made"))
        await generator.cancel(waiting)
        assert (await generator.poll(waiting)).state == JobState.CANCELED
        assert (await finish(generator, busy)).state == JobState.DONE
    finally:
        await generator.aclose()
    assert not (tmp_path / "work" / waiting / "output.mp4").exists()


async def test_cancelling_a_finished_job_leaves_it_done(gen):
    job_id = await gen.submit(request("a cat"))
    await finish(gen, job_id)
    await gen.cancel(job_id)
    assert (await gen.poll(job_id)).state == JobState.DONE


async def test_the_same_idempotency_key_gives_the_same_job(gen):
    a = await gen.submit(request("a cat", idempotency_key="crowdcut-job-1-0"))
    b = await gen.submit(request("a cat", idempotency_key="crowdcut-job-1-0"))
    c = await gen.submit(request("a cat", idempotency_key="crowdcut-job-1-1"))
    assert a == b != c
    with pytest.raises(GeneratorError) as info:
        await gen.submit(request("a dog", idempotency_key="crowdcut-job-1-0"))
    assert info.value.kind == GeneratorErrorKind.INVALID_INPUT
    await finish(gen, a)
    await finish(gen, c)


@pytest.mark.parametrize(
    "bad",
    [
        request("a cat", aspect="4:3"),
        request("a cat", duration=0),
        request("a cat", duration=600),
        request("   "),
        request("a cat", image=b"GIF89a not a png"),
    ],
)
async def test_bad_requests_are_refused_as_invalid_input(gen, bad):
    with pytest.raises(GeneratorError) as info:
        await gen.submit(bad)
    assert info.value.kind == GeneratorErrorKind.INVALID_INPUT


@pytest.mark.parametrize("job_id", ["loc-0123456789abcdef0000", "../../etc", "", "loc-../x"])
async def test_unknown_or_malformed_job_ids_are_refused(gen, job_id):
    with pytest.raises(GeneratorError) as info:
        await gen.poll(job_id)
    assert info.value.kind == GeneratorErrorKind.INVALID_INPUT


# --- test hooks -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(GeneratorErrorKind))
async def test_a_fail_hook_fails_the_job_with_that_kind(gen, kind):
    job_id = await gen.submit(request(f"a cat [fail:{kind.value}]"))
    status = await finish(gen, job_id)
    assert status.state == JobState.FAILED
    assert status.error is not None and status.error.kind == kind
    assert status.error.transient == (kind in TRANSIENT_KINDS)


async def test_a_failure_is_remembered_across_restarts(tmp_path):
    first = make_generator(tmp_path / "work")
    job_id = await first.submit(request("[fail:content_policy] a cat"))
    await finish(first, job_id)
    await first.aclose()
    second = make_generator(tmp_path / "work")
    try:
        status = await second.poll(job_id)
        assert status.state == JobState.FAILED
        assert status.error.kind == GeneratorErrorKind.CONTENT_POLICY
        with pytest.raises(GeneratorError):
            await second.download(job_id, tmp_path / "x.mp4")
    finally:
        await second.aclose()


async def test_a_reject_hook_makes_submit_raise(gen):
    with pytest.raises(GeneratorError) as info:
        await gen.submit(request("a cat [reject:rate_limited]"))
    assert info.value.kind == GeneratorErrorKind.RATE_LIMITED
    assert info.value.retry_after == 1.0


async def test_a_fail_once_hook_fails_only_the_first_try(gen):
    first = await gen.submit(request("a cat [fail-once:unavailable]"))
    assert (await finish(gen, first)).error.kind == GeneratorErrorKind.UNAVAILABLE
    retry = await gen.submit(request("a cat [fail-once:unavailable]"))
    assert (await finish(gen, retry)).state == JobState.DONE


async def test_hooks_are_plain_text_when_test_hooks_are_off(tmp_path):
    generator = make_generator(tmp_path / "work", test_hooks=False)
    try:
        job_id = await generator.submit(request("a cat [fail:content_policy] [reject:auth]"))
        assert (await finish(generator, job_id)).state == JobState.DONE
    finally:
        await generator.aclose()


# --- the factory ------------------------------------------------------------------------


async def test_create_generator_builds_the_local_backend_from_settings(tmp_path):
    generator = create_generator(
        "local", {"DATA_DIR": tmp_path, "CLIP_SECONDS": 5, "LOCAL_TEST_HOOKS": "false"}
    )
    try:
        assert isinstance(generator, LocalGenerator)
        assert isinstance(generator, Generator)
        assert generator.name == "local"
        assert generator.work_dir == tmp_path / "local-generator"
        assert generator.clip_seconds == 5.0 and not generator.test_hooks
        assert generator.max_concurrency >= 1
    finally:
        await generator.aclose()


async def test_create_generator_reads_crowdcut_settings(tmp_path):
    from bot.settings import Settings

    settings = Settings.load(env={}, env_file=None, data_dir=tmp_path)
    generator = create_generator(settings.generator, settings)
    try:
        assert generator.work_dir == settings.generator_work_dir
        # on a real server no member may drive the failure hooks
        assert not settings.local_test_hooks and not generator.test_hooks
    finally:
        await generator.aclose()


def test_an_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="GENERATOR='dream'.*local"):
        create_generator("dream", {})
