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


def test_a_job_claimed_but_never_acknowledged_is_queued_again(tmp_path):
    data = tmp_path / "data"
    store = Store(data / "crowdcut.db")
    p = store.create_project(
        guild_id=1, channel_id=2, title="r", created_by=9, slot_plan=[Slot(0, 0, 1)], state="open"
    )
    job = store.add_job(
        project_id=p.id,
        member_id=1,
        prompt="never acked",
        channel_id=2,
        duration=1.0,
        aspect="16:9",
        seed=1,
    )
    store.claim_job(job.id, "local")  # the process died before the provider answered
    proc = start_worker(data, tmp_path / "w.log", "--until-idle")
    assert proc.wait(timeout=120) == 0, (tmp_path / "w.log").read_text()
    done = store.get_job(job.id)
    assert done.state == "done" and done.attempts == 2
    assert len(store.project_clips(p.id)) == 1
