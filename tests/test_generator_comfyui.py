"""The ComfyUI backend against a fake ComfyUI that answers what a real 0.3.64 answered
(``shared/comfyui/``): a job's whole life, cancelling, and every fault we know of."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import pytest

from bot.errors import ConfigError, GeneratorError, GeneratorErrorKind
from bot.generators import BACKENDS, create_generator
from bot.generators.base import GenerationRequest, JobState, JobStatus
from bot.generators.comfyui import ComfyUIGenerator, from_settings, prompt_id_for
from bot.generators.comfyui_workflow import (
    Workflow,
    frames_for,
    history_failure,
    parse_inputs,
    video_outputs,
    without_node,
)
from bot.generators.http import RetryPolicy, sniff_video
from tests.discord_env import until
from tests.fakes.comfyui import FakeComfyUI, recorded

K = GeneratorErrorKind
SHARED = Path(__file__).parents[2] / "shared" / "comfyui"
DOCS = Path(__file__).parents[1] / "docs" / "workflows"
REFERENCE = (SHARED / "reference.png").read_bytes()
POLICY = RetryPolicy(
    tries=2, base_seconds=0.01, cap_seconds=0.05, timeout=0.6, connect_timeout=0.3, read_timeout=0.6
)
INPUTS_C = "image=10.image,seed=12.seed,frames=11.amount,fps=13.fps"
INPUTS_A = "seed=2.seed,frames=1.batch_size,width=1.width,height=1.height,fps=3.fps"
SECRET = "sk-TEST-SECRET-1234"


def workflow(name: str, inputs: str) -> Workflow:
    return Workflow(
        json.loads((SHARED / f"workflow_{name}.json").read_text()), parse_inputs(inputs)
    )


def make(urls: list[str], wf: Workflow | None = None, **kw: Any) -> ComfyUIGenerator:
    kw.setdefault("policy", POLICY)
    kw.setdefault("health_seconds", 0.05)
    kw.setdefault("probe_timeout", 0.3)
    return ComfyUIGenerator(urls, wf or workflow("C_loadimage", INPUTS_C), **kw)


def request(**kw: Any) -> GenerationRequest:
    kw.setdefault("idempotency_key", str(uuid.uuid4()))
    kw.setdefault("image", REFERENCE)
    return GenerationRequest(
        kw.pop("prompt", "a lighthouse at dusk"), kw.pop("duration", 1.0), **kw
    )


async def run_to_end(gen: ComfyUIGenerator, pid: str, limit: float = 10.0) -> list[JobStatus]:
    """Poll like the worker does until the job ends; every status seen."""
    seen = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = await gen.poll(pid)
        seen.append(status)
        if status.state.finished:
            return seen
        await gen.wait(pid, 0.5)
    raise AssertionError(f"job {pid} did not end: {seen[-3:]}")


def is_video(path: Path) -> bool:
    with av.open(str(path)) as c:
        return c.streams.video[0].frames > 0 or c.duration is not None


@pytest.fixture
async def fake() -> AsyncIterator[FakeComfyUI]:
    f = await FakeComfyUI(job_seconds=0.1).start()
    yield f
    f.clear_faults()
    await f.stop()


@pytest.fixture
async def gen(fake: FakeComfyUI) -> AsyncIterator[ComfyUIGenerator]:
    g = make([fake.url])
    yield g
    await g.aclose()


# ------------------------------------------------------------------------ the happy path


async def test_a_job_runs_with_progress_and_downloads_as_mp4(fake, gen, tmp_path):
    req = request(seed=77, duration=1.5)
    pid = await gen.submit(req)
    assert pid == req.idempotency_key
    seen = await run_to_end(gen, pid)
    assert seen[-1] == JobStatus(JobState.DONE, 1.0)
    progress = [s.progress for s in seen if s.state == JobState.RUNNING and s.progress]
    assert progress and progress == sorted(progress) and all(0 < p < 1 for p in progress)
    out = await gen.download(pid, tmp_path / "clip.mp4")
    assert sniff_video(out.read_bytes()[:16]) == "mp4" and is_video(out)
    graph = fake.history[pid]["prompt"][2]
    assert graph["12"]["inputs"]["seed"] == 77
    assert graph["11"]["inputs"]["amount"] == 36  # 1.5 s at the workflow's 24 fps
    assert fake.executed[pid] == 1 and fake.submissions == 1


async def test_the_reference_image_is_uploaded_and_named_in_the_load_image_node(fake, gen):
    pid = await gen.submit(request())
    await run_to_end(gen, pid)
    name = fake.history[pid]["prompt"][2]["10"]["inputs"]["image"]
    assert name == f"crowdcut-{pid}.png"
    assert fake.uploads[name] == REFERENCE


async def test_prompt_and_client_id_are_sent_and_frames_of_other_clients_are_ignored(fake, gen):
    other = await gen.submit(request())
    await run_to_end(gen, other)
    queued = fake.history[other]["prompt"]
    assert queued[1] == other and queued[3] == {"client_id": gen.client_id}


async def test_a_workflow_that_needs_an_image_refuses_a_request_without_one(gen):
    with pytest.raises(GeneratorError) as e:
        await gen.submit(request(image=None))
    assert e.value.kind == K.INVALID_INPUT


async def test_the_same_submission_sent_twice_is_queued_once(fake, gen):
    req = request()
    assert await gen.submit(req) == await gen.submit(req)
    await run_to_end(gen, req.idempotency_key)
    assert fake.submissions == 1


async def test_a_non_uuid_key_becomes_a_stable_canonical_uuid():
    a, b = prompt_id_for("crowdcut-job-3-1"), prompt_id_for("crowdcut-job-3-1")
    assert a == b and str(uuid.UUID(a)) == a
    assert prompt_id_for("0E8D1B9C-5B0E-4F3A-9D43-4B2A1F0C7E11") == (
        "0e8d1b9c-5b0e-4f3a-9d43-4b2a1f0c7e11"
    )


async def test_webm_output_is_converted_to_mp4(fake, tmp_path):
    wf = workflow("B_webm_webp", "seed=2.seed")
    g = make([fake.url], wf)
    try:
        pid = await g.submit(request(image=None))
        assert (await run_to_end(g, pid))[-1].state == JobState.DONE
        out = await g.download(pid, tmp_path / "b.mp4")
        assert sniff_video(out.read_bytes()[:16]) == "mp4" and is_video(out)
    finally:
        await g.aclose()


async def test_animated_webp_and_videohelpersuite_gifs_are_found_and_converted(fake, tmp_path):
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 8, "color": 0},
        },
        "2": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["1", 0],
                "filename_prefix": "w",
                "fps": 6.0,
                "lossless": False,
                "quality": 80,
                "method": "default",
            },
        },
        "3": {
            "class_type": "VHS_VideoCombine",
            "inputs": {
                "images": ["1", 0],
                "frame_rate": 8,
                "loop_count": 0,
                "filename_prefix": "vhs/v",
                "format": "image/gif",
                "pingpong": False,
                "save_output": True,
            },
        },
    }
    g = make([fake.url], Workflow(graph, parse_inputs("frames=1.batch_size")))
    try:
        pid = await g.submit(request(image=None))
        await run_to_end(g, pid)
        files = video_outputs(fake.history[pid]["outputs"])
        assert [f.ext for f in files] == [".gif", ".webp"]  # VHS's gif before the webp
        assert files[0].subfolder == "vhs"
        out = await g.download(pid, tmp_path / "v.mp4")
        assert sniff_video(out.read_bytes()[:16]) == "mp4" and is_video(out)
    finally:
        await g.aclose()


# ------------------------------------------------------------------------ the recordings


async def test_a_recorded_transcript_replayed_gives_the_recorded_progress_and_result(
    fake, gen, tmp_path
):
    fake.replay("C_loadimage", speed=0.2)
    pid = await gen.submit(request())
    seen = await run_to_end(gen, pid)
    assert seen[-1].state == JobState.DONE
    running = [s.progress for s in seen if s.state == JobState.RUNNING]
    assert running == sorted(running)
    # the recording ran 5 nodes; the websocket moved the job through them
    assert gen._jobs[pid].node_progress == {n: 1.0 for n in ("10", "11", "12", "13", "14")}
    ((recorded_pid, entry),) = recorded("history_C_loadimage.json").items()
    # the job ended on the websocket's execution_success; the server writes its history
    # just after sending it (as ComfyUI does), and the client did not need to read it
    await until(lambda: pid in fake.history, timeout=10)
    assert fake.history[pid]["outputs"] == json.loads(
        json.dumps(entry["outputs"]).replace(recorded_pid, pid)
    )
    out = await gen.download(pid, tmp_path / "c.mp4")
    assert is_video(out)


async def test_a_recorded_runtime_error_fails_the_job_as_invalid_input(fake, gen):
    fake.replay("X_runtime_error", speed=0.1)
    pid = await gen.submit(request())
    last = (await run_to_end(gen, pid))[-1]
    assert last.state == JobState.FAILED and last.error.kind == K.INVALID_INPUT
    assert "not a valid VideoContainer" in last.error.message
    assert "Traceback" not in last.error.message and "execution.py" not in last.error.message


async def test_a_bad_option_value_accepted_at_submit_fails_when_it_runs(fake):
    g = make([fake.url], workflow("X_runtime_error", "seed=2.seed"))
    try:
        pid = await g.submit(request(image=None))
        last = (await run_to_end(g, pid))[-1]
        assert last.state == JobState.FAILED and last.error.kind == K.INVALID_INPUT
        assert "node 4 (SaveVideo)" in last.error.message
    finally:
        await g.aclose()


def test_history_failures_from_the_recordings_are_read_without_paths():
    ((_, entry),) = recorded("history_X_runtime_error.json").items()
    event, kind, message = history_failure(entry)
    assert (event, kind) == ("execution_error", K.INVALID_INPUT)
    ((_, entry),) = recorded("history_long_interrupted.json").items()
    assert history_failure(entry)[0] == "execution_interrupted"


async def test_a_validation_error_at_submit_names_the_node(fake, gen):
    with pytest.raises(GeneratorError) as e:
        await gen.submit(request(duration=200.0))  # 4800 frames; RepeatImageBatch takes 4096
    assert e.value.kind == K.INVALID_INPUT
    assert "node 11 (RepeatImageBatch)" in e.value.message and "bigger than max" in e.value.message


# ------------------------------------------------------------------------ cancel


async def test_cancel_while_queued_deletes_the_prompt(fake):
    fake.job_seconds = 1.0
    g = make([fake.url], per_host_jobs=2)
    try:
        first = await g.submit(request())
        second = await g.submit(request())
        assert (await g.poll(second)).state == JobState.QUEUED
        await g.cancel(second)
        assert (await run_to_end(g, second))[-1].state == JobState.CANCELED
        assert fake.deleted[second] == 1 and fake.started[second] == 0
        await g.cancel(first)
    finally:
        await g.aclose()


async def test_cancel_while_running_interrupts_it(fake, gen):
    fake.job_seconds = 2.0
    pid = await gen.submit(request())
    while (await gen.poll(pid)).state != JobState.RUNNING:
        await gen.wait(pid, 0.2)
    await gen.cancel(pid)
    assert (await run_to_end(gen, pid))[-1].state == JobState.CANCELED
    assert fake.interrupted[pid] == 1 and fake.executed[pid] == 0
    await gen.cancel(pid)  # again, after the end: no error


async def test_a_recorded_interrupt_after_our_cancel_is_canceled(fake, gen):
    fake.replay("long_interrupted", speed=0.05)
    pid = await gen.submit(request())
    while (await gen.poll(pid)).state != JobState.RUNNING:
        await gen.wait(pid, 0.2)
    await gen.cancel(pid)
    assert (await run_to_end(gen, pid))[-1].state == JobState.CANCELED


# ------------------------------------------------------------------------ faults


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_refused_submit_is_retryable_and_says_when(fake, gen, status):
    fake.fail("POST /prompt", status, retry_after=7)
    with pytest.raises(GeneratorError) as e:
        await gen.submit(request())
    assert e.value.kind == (K.RATE_LIMITED if status == 429 else K.UNAVAILABLE)
    assert e.value.retry_after == 7
    assert fake.queue_remaining == 0
    pid = await gen.submit(request())  # the host is still up: the next one goes through
    assert (await run_to_end(gen, pid))[-1].state == JobState.DONE


@pytest.mark.parametrize(
    "route",
    ["GET /history", "GET /queue", "GET /view", "POST /upload/image", "GET /ws"],
)
async def test_one_failed_answer_on_a_safe_request_is_retried(fake, gen, tmp_path, route):
    fake.fail(route, 503, retry_after=0)
    pid = await gen.submit(request())
    assert (await run_to_end(gen, pid))[-1].state == JobState.DONE
    assert is_video(await gen.download(pid, tmp_path / "x.mp4"))
    assert fake.executed[pid] == 1


async def test_a_submit_whose_answer_is_lost_is_found_and_not_sent_again(fake, gen):
    req = request()
    fake.hang("POST /prompt", after=True)
    with pytest.raises(GeneratorError) as e:
        await gen.submit(req)
    assert e.value.kind == K.OUTCOME_UNKNOWN
    fresh = make([fake.url])  # as after a crash of crowdcut
    try:
        assert await fresh.find(req, since=time.time() - 60) == req.idempotency_key
        assert (await run_to_end(fresh, req.idempotency_key))[-1].state == JobState.DONE
    finally:
        await fresh.aclose()
    assert fake.submissions == 1 and fake.executed[req.idempotency_key] == 1


async def test_a_submit_that_never_arrived_is_not_found(fake, gen):
    req = request()
    fake.hang("POST /prompt")
    with pytest.raises(GeneratorError) as e:
        await gen.submit(req)
    assert e.value.kind == K.OUTCOME_UNKNOWN
    assert await gen.find(req, since=time.time() - 60) is None


async def test_malformed_json_from_prompt_is_an_unknown_outcome(fake, gen):
    fake.malformed("POST /prompt")
    with pytest.raises(GeneratorError) as e:
        await gen.submit(request())
    assert e.value.kind == K.OUTCOME_UNKNOWN


@pytest.mark.parametrize("route", ["GET /history", "GET /queue"])
async def test_malformed_json_on_polls_is_malformed(fake, gen, route):
    fake.job_seconds = 0.5
    pid = await gen.submit(request())
    gen._jobs.clear()  # as after a restart: the poll must ask the queue and the history
    fake.malformed(route, times=None)
    with pytest.raises(GeneratorError) as e:
        await gen.poll(pid)
    assert e.value.kind == K.MALFORMED
    fake.clear_faults()
    assert (await run_to_end(gen, pid))[-1].state == JobState.DONE


@pytest.mark.parametrize(
    ("route", "call"),
    [
        ("GET /history", "poll"),
        ("GET /view", "download"),
        ("POST /upload/image", "submit"),
        ("POST /queue", "cancel"),
        ("GET /object_info", "check"),
    ],
)
async def test_a_request_without_answer_times_out_as_unavailable(fake, tmp_path, route, call):
    g = make([fake.url], per_host_jobs=2)
    try:
        fake.job_seconds = 0.5 if call == "cancel" else 0.05
        pid = await g.submit(request())
        if call == "cancel":
            await g.submit(request())
        else:
            await run_to_end(g, pid)
        g._jobs.clear()  # nothing known: every call has to ask
        fake.hang(route, times=None)
        started = time.monotonic()
        with pytest.raises(GeneratorError) as e:
            if call == "poll":
                await g.poll(pid)
            elif call == "download":
                await g.download(pid, tmp_path / "x.mp4")
            elif call == "submit":
                await g.submit(request())
            elif call == "cancel":
                await g.cancel(fake.queue[0].pid)
            else:
                await g.check()
        assert e.value.kind == K.UNAVAILABLE
        assert time.monotonic() - started < 5
        assert all(h.up for h in g.hosts)  # it answers /system_stats: not down
    finally:
        await g.aclose()


async def test_a_truncated_download_is_truncated(fake, gen, tmp_path):
    pid = await gen.submit(request())
    await run_to_end(gen, pid)
    fake.truncate_view = True
    with pytest.raises(GeneratorError) as e:
        await gen.download(pid, tmp_path / "x.mp4")
    assert e.value.kind == K.TRUNCATED
    assert not (tmp_path / "x.mp4").exists()


async def test_an_html_page_instead_of_the_video_is_not_video(fake, gen, tmp_path):
    pid = await gen.submit(request())
    await run_to_end(gen, pid)
    fake.view_html = True
    with pytest.raises(GeneratorError) as e:
        await gen.download(pid, tmp_path / "x.mp4")
    assert e.value.kind == K.NOT_VIDEO


async def test_an_output_removed_from_the_output_folder_is_expired(fake, gen, tmp_path):
    pid = await gen.submit(request())
    await run_to_end(gen, pid)
    fake.delete_outputs()
    with pytest.raises(GeneratorError) as e:
        await gen.download(pid, tmp_path / "x.mp4")
    assert e.value.kind == K.OUTPUT_EXPIRED
    # the worker polls again: still done, and the history is read afresh
    assert (await gen.poll(pid)).state == JobState.DONE


async def test_a_job_followed_on_the_websocket_needs_no_lookups(fake, gen, tmp_path):
    # once the websocket is up, a prompt's start, progress, end and video all come as
    # frames: neither waiting in the host's queue nor finishing asks GET /history
    fake.job_seconds = 0.3
    warm = await gen.submit(request())
    await run_to_end(gen, warm)
    pid = await gen.submit(request())
    assert (await run_to_end(gen, pid))[-1].state == JobState.DONE
    assert is_video(await gen.download(pid, tmp_path / "x.mp4"))
    assert fake.history_reads[pid] == 0 and fake.executed[pid] == 1


async def test_a_history_without_outputs_is_expired_and_a_later_poll_reads_it_again(
    fake, gen, tmp_path
):
    fake.drop_outputs = True
    pid = await gen.submit(request())
    assert (await run_to_end(gen, pid))[-1].state == JobState.DONE
    with pytest.raises(GeneratorError) as e:
        await gen.download(pid, tmp_path / "x.mp4")
    assert e.value.kind == K.OUTPUT_EXPIRED
    fake.drop_outputs = False
    assert (await gen.poll(pid)).state == JobState.DONE
    assert is_video(await gen.download(pid, tmp_path / "x.mp4"))


async def test_a_job_gone_from_a_restarted_host_is_queued_again(fake, gen):
    fake.job_seconds = 1.0
    pid = await gen.submit(request())
    await fake.kill()
    await fake.restart()
    assert (await run_to_end(gen, pid))[-1].state == JobState.DONE
    assert fake.executed[pid] == 1 and fake.submissions == 2


async def test_after_a_crowdcut_restart_a_lost_job_is_reported_failed(fake, gen):
    pid = await gen.submit(request())
    await fake.kill()
    await fake.restart()
    fresh = make([fake.url])
    try:
        status = await fresh.poll(pid)
        assert status.state == JobState.FAILED and status.error.transient
        assert await fresh.find(request(idempotency_key=pid), since=0) is None
    finally:
        await fresh.aclose()


async def test_find_cannot_tell_while_a_host_is_down(fake):
    g = make([fake.url])
    await fake.stop()
    try:
        with pytest.raises(GeneratorError) as e:
            await g.find(request(), since=time.time())
        assert e.value.kind == K.UNAVAILABLE
    finally:
        await g.aclose()


async def test_secrets_stay_out_of_logs_and_errors(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    f = await FakeComfyUI(job_seconds=0.05, token=SECRET).start()
    g = make([f.url], token=SECRET)
    errors: list[GeneratorError] = []
    try:
        pid = await g.submit(request())
        assert (await run_to_end(g, pid))[-1].state == JobState.DONE
        assert g.hosts[0].ws_connected  # the websocket authenticated too
        for route, status in [("POST /prompt", 500), ("POST /prompt", 429), ("GET /view", 401)]:
            f.fail(route, status, times=None, body=f"bad token {SECRET}")
            try:
                if route == "GET /view":
                    await g.download(pid, tmp_path / "x.mp4")
                else:
                    await g.submit(request())
            except GeneratorError as e:
                errors.append(e)
            f.clear_faults()
        f.hang("GET /history", times=None)
        g._jobs.clear()
        try:
            await g.poll(pid)
        except GeneratorError as e:
            errors.append(e)
        f.clear_faults()
        f.truncate_view = True
        try:
            await g.download(pid, tmp_path / "y.mp4")
        except GeneratorError as e:
            errors.append(e)
        f.truncate_view = False
    finally:
        f.clear_faults()
        await g.aclose()
        await f.stop()
    assert len(errors) == 5
    assert {e.kind for e in errors} >= {K.UNAVAILABLE, K.RATE_LIMITED, K.AUTH, K.TRUNCATED}
    for e in errors:
        assert SECRET not in str(e) and SECRET not in e.message
    for record in caplog.records:
        assert SECRET not in record.getMessage()


async def test_a_wrong_token_is_an_auth_error(fake):
    f = await FakeComfyUI(token=SECRET).start()
    g = make([f.url], token="sk-wrong-token")
    try:
        with pytest.raises(GeneratorError) as e:
            await g.submit(request())
        assert e.value.kind == K.AUTH
    finally:
        await g.aclose()
        await f.stop()


# ------------------------------------------------------------------------ check and settings


async def test_check_says_which_hosts_answer_and_that_the_workflow_fits(fake, gen):
    line = await gen.check()
    assert "1 of 1 host(s) up" in line and "0.3.64" in line


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ("image=10.image,frames=11.frames", "node 11 (RepeatImageBatch) has no input 'frames'"),
        ("image=10.picture", "node 10 (LoadImage) has no input 'picture'"),
    ],
)
async def test_check_names_an_input_the_server_does_not_have(fake, inputs, message):
    g = make([fake.url], workflow("C_loadimage", inputs))
    try:
        with pytest.raises(ConfigError) as e:
            await g.check()
        assert message in str(e.value)
    finally:
        await g.aclose()


async def test_check_names_a_node_class_the_server_does_not_have(fake):
    graph = json.loads((SHARED / "workflow_C_loadimage.json").read_text())
    graph["12"]["class_type"] = "WanVideoSampler"
    g = make([fake.url], Workflow(graph, parse_inputs("image=10.image")))
    try:
        with pytest.raises(ConfigError) as e:
            await g.check()
        assert "node 12 is a WanVideoSampler" in str(e.value)
    finally:
        await g.aclose()


async def test_check_fails_when_no_host_answers():
    g = make(["http://127.0.0.1:9"])
    try:
        with pytest.raises(GeneratorError) as e:
            await g.check()
        assert e.value.kind == K.UNAVAILABLE
    finally:
        await g.aclose()


def test_inputs_that_are_not_in_the_workflow_are_refused_at_start():
    with pytest.raises(ConfigError, match="names node 99"):
        workflow("C_loadimage", "image=99.image")
    with pytest.raises(ConfigError, match="linked to node 10"):
        workflow("C_loadimage", "image=11.image")
    with pytest.raises(ConfigError, match="not a value crowdcut fills in"):
        parse_inputs("colour=1.color")
    with pytest.raises(ConfigError, match="expected name=node_id.input_name"):
        parse_inputs("prompt=6")


def test_a_ui_format_workflow_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(ConfigError, match="Export \\(API\\)"):
        from_settings(
            {
                "COMFYUI_URLS": "http://127.0.0.1:8188",
                "COMFYUI_WORKFLOW": str(path),
                "COMFYUI_INPUTS": "prompt=1.text",
            }
        )


def test_settings_build_the_backend_with_its_capabilities(tmp_path):
    path = tmp_path / "wf.json"
    graph = json.loads((SHARED / "workflow_C_loadimage.json").read_text())
    graph["20"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": ""}}
    path.write_text(json.dumps(graph))
    settings = {
        "COMFYUI_URLS": "http://127.0.0.1:8188, http://127.0.0.1:8189",
        "COMFYUI_WORKFLOW": str(path),
        "COMFYUI_INPUTS": "prompt=20.value,image=10.image,frames=11.amount",
        "COMFYUI_FRAME_STEP": 4,
        "COMFYUI_MAX_SECONDS": 5.0,
        "COMFYUI_PER_HOST_JOBS": 2,
        "COMFYUI_MODEL": "Wan 2.2 TI2V 5B",
    }
    g = from_settings(settings)
    assert "comfyui" in BACKENDS and isinstance(create_generator("comfyui", settings), type(g))
    assert g.max_concurrency == 4 and g.model == "Wan 2.2 TI2V 5B"
    caps = g.capabilities
    assert caps.fps == 24.0 and caps.image_input and caps.image_required
    assert caps.duration_for(10.0) is None and caps.duration_for(2.0) == 2.0
    assert frames_for(2.0, 24.0, 4) == 49 and frames_for(2.0, 16.0, 8) == 33


def test_the_image_branch_is_cut_only_where_the_image_is_optional():
    info = recorded("object_info_all.json")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "CreateVideo", "inputs": {"images": ["4", 0], "audio": ["2", 0]}},
        "4": {"class_type": "EmptyImage", "inputs": {}},
        "5": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0]}},
    }
    pruned = without_node(graph, "1", info)
    assert set(pruned) == {"3", "4", "5"} and "audio" not in pruned["3"]["inputs"]
    graph["3"]["inputs"]["images"] = ["2", 0]
    with pytest.raises(ValueError):
        without_node(graph, "1", info)


# ------------------------------------------------------------------------ shipped workflows


def documented_settings() -> dict[str, dict[str, str]]:
    """The settings blocks of docs/generators.md's ComfyUI section, by workflow file."""
    text = (Path(__file__).parents[1] / "docs" / "generators.md").read_text(encoding="utf-8")
    section = text.split("## ComfyUI", 1)[1]
    out: dict[str, dict[str, str]] = {}
    for block in section.split("```")[1::2]:
        pairs = dict(line.strip().split("=", 1) for line in block.strip().splitlines())
        out[Path(pairs["COMFYUI_WORKFLOW"]).name] = pairs
    return out


@pytest.mark.parametrize("name", ["wan22_ti2v_5b_api.json", "comfyui_check_api.json"])
def test_the_shipped_workflows_fit_a_real_server_with_their_documented_inputs(name):
    settings = documented_settings()[name]
    graph = json.loads((DOCS / name).read_text())
    wf = Workflow(graph, parse_inputs(settings["COMFYUI_INPUTS"]))
    required = settings.get("COMFYUI_IMAGE_REQUIRED", "true") == "true"
    assert wf.problems(recorded("object_info_all.json"), image_required=required) == []
    g = from_settings({**settings, "COMFYUI_WORKFLOW": str(DOCS / name)})
    assert g.capabilities.image_input and g.capabilities.image_required == required


async def test_the_no_weights_check_workflow_makes_a_clip(fake, tmp_path):
    settings = documented_settings()["comfyui_check_api.json"]
    g = from_settings(
        {
            **settings,
            "COMFYUI_URLS": fake.url,
            "COMFYUI_WORKFLOW": str(DOCS / settings["COMFYUI_WORKFLOW"].split("/")[-1]),
        }
    )
    try:
        assert "fits" in await g.check()
        pid = await g.submit(request(aspect="9:16", seed=5, duration=2.0))
        assert (await run_to_end(g, pid))[-1].state == JobState.DONE
        graph = fake.history[pid]["prompt"][2]
        assert (graph["3"]["inputs"]["width"], graph["3"]["inputs"]["height"]) == (192, 320)
        assert graph["4"]["inputs"]["amount"] == 48 and graph["1"]["inputs"]["value"]
        assert is_video(await g.download(pid, tmp_path / "check.mp4"))
    finally:
        await g.aclose()


async def test_the_wan_workflow_reports_sampler_progress_and_runs_without_an_image(tmp_path):
    info = recorded("object_info_all.json")
    installed = {  # a server with the model files in place
        "UNETLoader": "wan2.2_ti2v_5B_fp16.safetensors",
        "CLIPLoader": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "VAELoader": "wan2.2_vae.safetensors",
    }
    extra = {}
    for cls, file in installed.items():
        entry = json.loads(json.dumps(info[cls]))
        first = next(iter(entry["input"]["required"]))
        entry["input"]["required"][first][0] = [file]
        extra[cls] = entry
    f = await FakeComfyUI(job_seconds=0.3, progress_steps=10, extra_nodes=extra).start()
    settings = documented_settings()["wan22_ti2v_5b_api.json"]
    g = from_settings(
        {
            **settings,
            "COMFYUI_URLS": f.url,
            "COMFYUI_WORKFLOW": str(DOCS / "wan22_ti2v_5b_api.json"),
        }
    )
    g.hosts[0].health_seconds = 0.05
    try:
        await g.check()
        pid = await g.submit(request(image=None, duration=2.0, prompt="a red kite over dunes"))
        seen = await run_to_end(g, pid)
        assert seen[-1].state == JobState.DONE
        progress = [s.progress for s in seen if s.state == JobState.RUNNING and s.progress]
        assert len(set(progress)) >= 3 and progress == sorted(progress)
        graph = f.history[pid]["prompt"][2]
        assert "56" not in graph and "start_image" not in graph["55"]["inputs"]
        assert graph["55"]["inputs"]["length"] == 49
        assert (graph["55"]["inputs"]["width"], graph["55"]["inputs"]["height"]) == (1280, 704)
        assert graph["6"]["inputs"]["text"] == "a red kite over dunes"
        with_image = await g.submit(request(duration=5.0))
        await run_to_end(g, with_image)
        assert f.history[with_image]["prompt"][2]["55"]["inputs"]["start_image"] == ["56", 0]
        assert f.history[with_image]["prompt"][2]["55"]["inputs"]["length"] == 121
    finally:
        await g.aclose()
        await f.stop()


# ------------------------------------------------------------------------ a real server

REAL = os.environ.get("COMFYUI_TEST_URL", "")


@pytest.mark.skipif(not REAL, reason="set COMFYUI_TEST_URL to a ComfyUI server to run it")
async def test_a_real_comfyui_server_runs_the_check_workflow(tmp_path):
    """Against a real ComfyUI (COMFYUI_TEST_URL, and COMFYUI_TEST_TOKEN behind a proxy):
    the no-weights workflow, so any install will do, a CPU one too."""
    settings = documented_settings()["comfyui_check_api.json"]
    g = from_settings(
        {
            **settings,
            "COMFYUI_URLS": REAL,
            "COMFYUI_WORKFLOW": str(DOCS / "comfyui_check_api.json"),
            "COMFYUI_TOKEN": os.environ.get("COMFYUI_TEST_TOKEN", ""),
            "COMFYUI_PER_HOST_JOBS": 2,
        }
    )
    try:
        assert "fits" in await g.check()
        req = request(seed=int(time.time()) % 1000, duration=1.0)
        pid = await g.submit(req)
        assert await g.find(req, since=time.time() - 60) == pid
        seen = await run_to_end(g, pid, limit=300)
        assert seen[-1] == JobStatus(JobState.DONE, 1.0), seen[-1]
        out = await g.download(pid, tmp_path / "real.mp4")
        assert sniff_video(out.read_bytes()[:16]) == "mp4" and is_video(out)
        # a second job, cancelled while it waits behind a third
        running = await g.submit(request(seed=1, duration=4.0))
        waiting = await g.submit(request(seed=2, duration=4.0))
        await g.cancel(waiting)
        assert (await run_to_end(g, waiting, limit=300))[-1].state == JobState.CANCELED
        await g.cancel(running)
        assert (await run_to_end(g, running, limit=300))[-1].state in (
            JobState.CANCELED,
            JobState.DONE,  # it may end before the interrupt lands between nodes
        )
        # an unknown prompt id is on no host
        assert await g.find(request(), since=time.time()) is None
    finally:
        await g.aclose()


async def test_the_fake_also_runs_in_a_thread_for_tests_with_a_subprocess(tmp_path):
    from tests.fakes import ThreadedServer

    fake = FakeComfyUI(job_seconds=(0.05, 0.1))
    with ThreadedServer(fake.make_app) as server:
        g = make([server.url])
        try:
            pid = await g.submit(request())
            assert (await run_to_end(g, pid))[-1].state == JobState.DONE
            assert is_video(await g.download(pid, tmp_path / "t.mp4"))
        finally:
            await g.aclose()
    assert fake.executed[pid] == 1
