"""Kill the worker process mid-job (SIGKILL, no warning), start it again: every job reaches
exactly one terminal state, every clip exists once, and a job the provider had accepted is
resumed by its provider job id rather than submitted again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from storage import Store
from storage.models import Slot

ROOT = Path(__file__).parents[1]


def worker_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATA_DIR=str(data_dir),
        POLL_SECONDS="0.1",
        CLIP_SECONDS="1",
        GENERATOR_CONCURRENCY="2",
        BACKEND_CONCURRENCY="2",
        RETRY_BASE_SECONDS="0.1",
        LOG_LEVEL="INFO",
        LOCAL_TEST_HOOKS="true",
    )
    return env


def start_worker(data_dir: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "--env-file", str(data_dir / "no.env"), "worker", *extra],
        cwd=ROOT,
        env=worker_env(data_dir),
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # its own process group: the kill takes ffmpeg down too


def test_a_killed_worker_resumes_and_nothing_is_lost_or_doubled(tmp_path):
    data = tmp_path / "data"
    store = Store(data / "crowdcut.db")
    p = store.create_project(
        guild_id=1,
        channel_id=2,
        title="restart",
        created_by=9,
        slot_plan=[Slot(i, i, 1) for i in range(6)],
        state="open",
    )
    jobs = []
    for i, member in enumerate([1, 1, 2, 2, 3, 3]):
        slow = " [slow]" if i < 2 else ""
        jobs.append(
            store.add_job(
                project_id=p.id,
                member_id=member,
                prompt=f"shot {i}{slow}",
                channel_id=2,
                duration=2.0,
                aspect="16:9",
                seed=i,
            ).id
        )
    log = tmp_path / "worker.log"

    proc = start_worker(data, log)
    # wait until the provider has accepted a job that is still rendering
    deadline = time.monotonic() + 60
    in_flight = {}
    while time.monotonic() < deadline:
        in_flight = {
            j.id: j.provider_job_id
            for j in store.jobs_by_state("submitted", "running")
            if j.provider_job_id
        }
        if in_flight:
            break
        time.sleep(0.05)
    assert in_flight, log.read_text()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    before = {j: store.get_job(j) for j in jobs}
    assert any(b.state in ("submitted", "running") for b in before.values())

    proc = start_worker(data, log, "--until-idle")
    assert proc.wait(timeout=180) == 0, log.read_text()

    after = {j: store.get_job(j) for j in jobs}
    assert all(a.state == "done" for a in after.values()), {j: a.state for j, a in after.items()}
    for job_id, provider_id in in_flight.items():
        # resumed by the stored provider job id: not submitted again, not a second try
        assert after[job_id].provider_job_id == provider_id
        assert after[job_id].attempts == before[job_id].attempts == 1
    clips = store.project_clips(p.id)
    assert sorted(c.job_id for c in clips) == sorted(jobs)
    keys = [c.media_key for c in clips]
    assert len(set(keys)) == len(keys)
    for key in keys:
        digest = key.split(".")[0]
        assert (data / "media" / digest[:2] / key).is_file()
    assert "resuming job" in log.read_text()
    assert not list((data / "media").rglob("*.tmp"))


def _one_job(store: Store, prompt: str) -> tuple[int, int]:
    p = store.create_project(
        guild_id=1, channel_id=2, title="r", created_by=9, slot_plan=[Slot(0, 0, 1)], state="open"
    )
    job = store.add_job(
        project_id=p.id,
        member_id=1,
        prompt=prompt,
        channel_id=2,
        duration=1.0,
        aspect="16:9",
        seed=1,
    )
    return p.id, job.id


def _submissions(data: Path) -> int:
    """How many jobs the local generator (the provider here) received."""
    work = data / "local-generator"
    return sum(1 for d in work.iterdir() if d.name.startswith("loc-")) if work.is_dir() else 0


def test_a_job_claimed_before_submission_keys_existed_is_queued_again(tmp_path):
    data = tmp_path / "data"
    store = Store(data / "crowdcut.db")
    project_id, job_id = _one_job(store, "never acked")
    store.claim_job(job_id, "local")  # no key: nothing can have been sent with it
    proc = start_worker(data, tmp_path / "w.log", "--until-idle")
    assert proc.wait(timeout=120) == 0, (tmp_path / "w.log").read_text()
    done = store.get_job(job_id)
    assert done.state == "done" and done.attempts == 1 and done.tries == 2
    assert len(store.project_clips(project_id)) == 1
    assert _submissions(data) == 1


def test_a_crash_after_the_provider_accepted_but_before_its_id_was_stored_pays_once(tmp_path):
    import asyncio

    from bot.generators.base import GenerationRequest
    from bot.generators.local import LocalGenerator

    data = tmp_path / "data"
    store = Store(data / "crowdcut.db")
    project_id, job_id = _one_job(store, "sent, then the process died")
    key = "7d6f8a52-3f0e-4c1b-9a77-0e2f7c1d5b10"
    store.claim_job(job_id, "local", submit_key=key, requested_seconds=1.0)

    async def the_send_that_got_through() -> str:
        gen = LocalGenerator(data / "local-generator")
        try:
            return await gen.submit(
                GenerationRequest(
                    prompt="sent, then the process died", duration=1.0, seed=1, idempotency_key=key
                )
            )
        finally:
            await gen.aclose()

    provider_id = asyncio.run(the_send_that_got_through())
    assert store.get_job(job_id).provider_job_id is None  # what the crash left

    proc = start_worker(data, tmp_path / "w.log", "--until-idle")
    assert proc.wait(timeout=120) == 0, (tmp_path / "w.log").read_text()
    done = store.get_job(job_id)
    assert done.state == "done" and done.provider_job_id == provider_id
    assert done.attempts == 1 and _submissions(data) == 1
    assert len(store.project_clips(project_id)) == 1
    assert "the generator had the submission" in (tmp_path / "w.log").read_text()


def test_a_crash_before_the_send_is_looked_up_then_sent_once(tmp_path):
    data = tmp_path / "data"
    store = Store(data / "crowdcut.db")
    project_id, job_id = _one_job(store, "claimed, never sent")
    store.claim_job(job_id, "local", submit_key="0b8e1f0c-5a7d-4e44-8f5e-2c9d3b7a6e11")
    proc = start_worker(data, tmp_path / "w.log", "--until-idle")
    assert proc.wait(timeout=120) == 0, (tmp_path / "w.log").read_text()
    done = store.get_job(job_id)
    assert done.state == "done" and done.attempts == 1 and done.tries == 1
    assert _submissions(data) == 1
    assert len(store.project_clips(project_id)) == 1
