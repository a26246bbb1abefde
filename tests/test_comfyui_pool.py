"""A pool of ComfyUI hosts: jobs go to the least-loaded live host, survive a host that
dies or stops answering, and are generated to the end exactly once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.errors import GeneratorError, GeneratorErrorKind
from bot.generators.base import GenerationRequest, JobState, JobStatus
from bot.generators.comfyui import ComfyUIGenerator
from bot.generators.comfyui_workflow import Workflow, parse_inputs
from bot.generators.http import RetryPolicy, sniff_video
from tests.fakes.comfyui import FakeComfyUI

K = GeneratorErrorKind
SHARED = Path(__file__).parents[2] / "shared" / "comfyui"
REFERENCE = (SHARED / "reference.png").read_bytes()
POLICY = RetryPolicy(
    tries=2, base_seconds=0.01, cap_seconds=0.05, timeout=0.6, connect_timeout=0.3, read_timeout=0.6
)


def make(fakes: list[FakeComfyUI], **kw: Any) -> ComfyUIGenerator:
    graph = json.loads((SHARED / "workflow_C_loadimage.json").read_text())
    wf = Workflow(graph, parse_inputs("image=10.image,seed=12.seed,frames=11.amount"))
    kw.setdefault("policy", POLICY)
    kw.setdefault("health_seconds", 0.05)
    kw.setdefault("probe_timeout", 0.3)
    return ComfyUIGenerator([f.url for f in fakes], wf, **kw)


def request(seed: int = 0) -> GenerationRequest:
    return GenerationRequest(
        "a river of light", 1.0, seed=seed, image=REFERENCE, idempotency_key=str(uuid.uuid4())
    )


async def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait for ``condition`` to hold (checked every few milliseconds)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.01)


async def drive(gen: ComfyUIGenerator, req: GenerationRequest) -> tuple[str, JobStatus]:
    """One job the way the worker runs it: submit (backing off while every host is busy
    or down), then poll and wait until it ends; transient poll errors are retried."""
    while True:
        try:
            pid = await gen.submit(req)
            break
        except GeneratorError as e:
            if e.kind not in (K.RATE_LIMITED, K.UNAVAILABLE):
                raise
            await asyncio.sleep(0.05)
    while True:
        try:
            status = await gen.poll(pid)
        except GeneratorError as e:
            if not e.transient:
                raise
            await asyncio.sleep(0.05)
            continue
        if status.state.finished:
            return pid, status
        await gen.wait(pid, 0.5)


def host_of(gen: ComfyUIGenerator, pid: str) -> int:
    return gen._jobs[pid].host.index


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeComfyUI]]:
    hosts = [await FakeComfyUI(job_seconds=0.25).start() for _ in range(3)]
    yield hosts
    for f in hosts:
        f.clear_faults()
        f.thaw()
        await f.stop()


async def test_a_host_killed_mid_run_and_brought_back_loses_no_job_and_repeats_none(
    fakes, tmp_path
):
    gen = make(fakes, per_host_jobs=2, resubmit_grace=0.3)
    a, b, c = fakes
    try:
        jobs = [request(seed=i) for i in range(12)]
        sem = asyncio.Semaphore(gen.max_concurrency)

        async def one(req: GenerationRequest) -> tuple[str, JobStatus]:
            async with sem:
                return await drive(gen, req)

        runs = [asyncio.create_task(one(r)) for r in jobs]
        # B is busy: one job of ours running there and one waiting behind it
        await until(lambda: b.running is not None and len(b.queue) >= 1)
        was_running, was_pending = b.running.pid, b.queue[0].pid
        killed_at = time.monotonic()
        await b.kill()
        # the waiting job goes elsewhere at once; the running one after the grace
        await until(lambda: host_of(gen, was_pending) != 1)
        assert time.monotonic() - killed_at < 0.3
        await until(lambda: host_of(gen, was_running) != 1)
        assert time.monotonic() - killed_at >= 0.3
        await b.restart()
        results = dict(await asyncio.gather(*runs))
        assert sorted(results) == sorted(r.idempotency_key for r in jobs)
        assert all(s.state == JobState.DONE for s in results.values())
        for pid in results:
            assert sum(f.executed[pid] for f in fakes) == 1, pid
        assert all(sum(f.executed.values()) >= 1 for f in (a, c))
        assert b.started[was_running] == 1 and b.executed[was_running] == 0
        for pid in list(results)[:3]:
            out = await gen.download(pid, tmp_path / f"{pid}.mp4")
            assert sniff_video(out.read_bytes()[:16]) == "mp4"
        # the pool put B back and uses it again
        await until(lambda: gen.hosts[1].up)
        pid, status = await drive(gen, request(seed=99))
        assert status.state == JobState.DONE
    finally:
        await gen.aclose()


async def test_jobs_go_to_the_host_with_the_shortest_queue(fakes):
    for f in fakes:
        f.job_seconds = 5.0
    gen = make(fakes, per_host_jobs=5)
    try:
        await gen.check()  # starts the websockets
        async with aiohttp.ClientSession() as s:
            for fake, n in zip(fakes, (3, 0, 1), strict=True):
                for _ in range(n):  # another client's prompts
                    graph = json.loads((SHARED / "workflow_A_mp4.json").read_text())
                    r = await s.post(f"{fake.url}/prompt", json={"prompt": graph, "client_id": "x"})
                    assert r.status == 200
        await until(lambda: [h.queue_remaining for h in gen.hosts] == [3, 0, 1])
        first = await gen.submit(request())
        assert host_of(gen, first) == 1
        others = [await gen.submit(request()) for _ in range(3)]
        assert sorted(host_of(gen, p) for p in others) == [1, 2, 2]
        # the busiest host gets work once it is no longer the busiest
        assert host_of(gen, await gen.submit(request())) in (0, 1, 2)
        for pid in [first, *others]:
            await gen.cancel(pid)
    finally:
        await gen.aclose()


async def test_a_host_that_comes_back_within_the_grace_keeps_its_running_job(fakes):
    gen = make(fakes, resubmit_grace=30.0)
    b = fakes[1]
    try:
        pids = [await gen.submit(request(seed=i)) for i in range(3)]
        on_b = next(p for p in pids if host_of(gen, p) == 1)
        await until(lambda: b.running is not None and b.running.pid == on_b)
        await gen.poll(on_b)
        await b.freeze()
        await until(lambda: not gen.hosts[1].up)
        assert (await gen.poll(on_b)).state == JobState.RUNNING  # waiting for the host
        b.thaw()
        results = dict(
            [await drive(gen, GenerationRequest("", 1, idempotency_key=p)) for p in pids]
        )
        assert all(s.state == JobState.DONE for s in results.values())
        assert b.executed[on_b] == 1 and gen._jobs[on_b].moves == 0
        assert sum(f.submissions for f in fakes) == 3
    finally:
        await gen.aclose()


async def test_a_cut_off_host_that_finished_a_moved_job_wins_and_the_copy_is_canceled(fakes):
    a, b, c = fakes
    a.job_seconds = c.job_seconds = 5.0
    b.job_seconds = 0.4
    gen = make(fakes, resubmit_grace=0.1)
    try:
        await gen.check()
        await until(lambda: all(h.ws_connected for h in gen.hosts))
        pids = [await gen.submit(request()) for _ in range(3)]
        pid = next(p for p in pids if host_of(gen, p) == 1)
        busy = [p for p in pids if p != pid]
        await until(lambda: b.running is not None)
        await gen.poll(pid)
        await b.freeze(working=True)  # a network split: B goes on working
        while host_of(gen, pid) == 1:  # after the grace the job is queued elsewhere
            await gen.poll(pid)
            await gen.wait(pid, 0.05)
        copy_host = fakes[host_of(gen, pid)]
        await until(lambda: b.executed[pid] == 1)
        b.thaw()
        _, status = await drive(gen, GenerationRequest("", 1, idempotency_key=pid))
        assert status.state == JobState.DONE and host_of(gen, pid) == 1
        await until(lambda: copy_host.deleted[pid] + copy_host.interrupted[pid] == 1)
        assert copy_host.executed[pid] == 0
        for p in busy:
            await gen.cancel(p)
    finally:
        await gen.aclose()


async def test_after_a_restart_a_job_is_found_on_whichever_host_has_it(fakes, tmp_path):
    gen = make(fakes)
    try:
        reqs = [request(seed=i) for i in range(3)]
        pids = [await gen.submit(r) for r in reqs]
        hosts = {p: host_of(gen, p) for p in pids}
    finally:
        await gen.aclose()
    fresh = make(fakes)  # crowdcut restarted: it knows only the prompt ids
    try:
        for req in reqs:
            assert await fresh.find(req, since=time.time() - 60) == req.idempotency_key
        for pid in pids:
            _, status = await drive(fresh, GenerationRequest("", 1, idempotency_key=pid))
            assert status.state == JobState.DONE and host_of(fresh, pid) == hosts[pid]
            out = await fresh.download(pid, tmp_path / f"{pid}.mp4")
            assert sniff_video(out.read_bytes()[:16]) == "mp4"
        assert await fresh.find(request(), since=time.time()) is None
        assert sum(f.submissions for f in fakes) == 3
    finally:
        await fresh.aclose()


async def test_after_a_restart_a_job_pending_on_a_host_that_dies_moves_with_its_image(fakes):
    for f in fakes:
        f.job_seconds = 0.5
    gen = make(fakes, per_host_jobs=2)
    try:
        pids = [await gen.submit(request(seed=i)) for i in range(6)]
        b = fakes[1]
        pending = next(p for p in pids if host_of(gen, p) == 1 and b.running.pid != p)
    finally:
        await gen.aclose()
    fresh = make(fakes)
    try:
        assert (await fresh.poll(pending)).state == JobState.QUEUED  # found, graph read back
        await b.kill()
        _, status = await drive(fresh, GenerationRequest("", 1, idempotency_key=pending))
        assert status.state == JobState.DONE and host_of(fresh, pending) != 1
        target = fakes[host_of(fresh, pending)]
        assert target.uploads[f"crowdcut-{pending}.png"] == REFERENCE
        assert sum(f.executed[pending] for f in fakes) == 1
    finally:
        await fresh.aclose()


async def test_with_every_host_busy_or_down_submit_says_so(fakes):
    for f in fakes:
        f.job_seconds = 5.0
    gen = make(fakes)
    try:
        pids = [await gen.submit(request()) for _ in range(3)]
        with pytest.raises(GeneratorError) as e:
            await gen.submit(request())
        assert e.value.kind == K.RATE_LIMITED and e.value.retry_after
        for f in fakes:
            await f.stop()
        await until(lambda: not any(h.up for h in gen.hosts))
        with pytest.raises(GeneratorError) as e:
            await gen.submit(request())
        assert e.value.kind == K.UNAVAILABLE
        assert gen.max_concurrency == 3 and len(pids) == 3
    finally:
        await gen.aclose()


async def test_a_host_that_is_down_from_the_start_is_skipped(fakes):
    dead = FakeComfyUI()
    dead.url = "http://127.0.0.1:9"
    gen = make([dead, fakes[0]])
    try:
        pid, status = await drive(gen, request())
        assert status.state == JobState.DONE and host_of(gen, pid) == 1
        assert not gen.hosts[0].up
        line = await gen.check()
        assert "1 of 2 host(s) up" in line and "down: 127.0.0.1:9" in line
    finally:
        await gen.aclose()


async def test_a_job_canceled_while_its_host_is_down_is_deleted_when_it_returns(fakes):
    for f in fakes:
        f.job_seconds = 1.0
    gen = make(fakes[:1], per_host_jobs=2, resubmit_grace=30.0)
    a = fakes[0]
    try:
        first = await gen.submit(request())
        second = await gen.submit(request())
        await a.freeze()
        await until(lambda: not gen.hosts[0].up)
        await gen.cancel(second)
        a.thaw()
        await until(lambda: a.deleted[second] == 1)
        assert (await gen.poll(second)).state == JobState.CANCELED
        await gen.cancel(first)
    finally:
        await gen.aclose()
