"""The foundation's restart test, against each backend's fake (ComfyUI, fal, Replicate,
Runway): SIGKILL the worker's
process group while the provider is generating, start it again, and every job ends done
exactly once — the provider saw exactly one submission per job, and there is one clip per
job (the fakes run in this process; the worker is a real ``crowdcut worker`` process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from storage import MediaStore, Store
from storage.models import Slot
from tests.discord_env import png_bytes
from tests.fakes import ThreadedServer

ROOT = Path(__file__).parents[1]
JOBS = 4


def fal() -> tuple[Any, Callable[[str], dict[str, str]]]:
    from tests.fakes.fal import FakeFal

    fake = FakeFal("fal-key-restart", queue_polls=2, run_polls=25)
    return fake, lambda url: {
        "GENERATOR": "fal",
        "FAL_KEY": "fal-key-restart",
        "FAL_QUEUE_URL": url,
        "FAL_API_URL": url + "/v1",
        "FAL_CONCURRENCY": str(JOBS),
    }


def replicate() -> tuple[Any, Callable[[str], dict[str, str]]]:
    from tests.fakes.replicate import FakeReplicate

    fake = FakeReplicate("r8_restart_token", start_polls=2, steps=25)
    return fake, lambda url: {
        "GENERATOR": "replicate",
        "REPLICATE_API_TOKEN": "r8_restart_token",
        "REPLICATE_API_BASE": url + "/v1",
    }


def runway() -> tuple[Any, Callable[[str], dict[str, str]]]:
    from tests.fakes.runway import FakeRunway

    script = ("PENDING", *(f"RUNNING:{i / 25:.2f}" for i in range(25)), "SUCCEEDED")
    fake = FakeRunway("key_restart", script=script)
    return fake, lambda url: {
        "GENERATOR": "runway",
        "RUNWAYML_API_SECRET": "key_restart",
        "RUNWAY_API_BASE": url,
    }


def comfyui() -> tuple[Any, Callable[[str], dict[str, str]]]:
    from tests.fakes.comfyui import FakeComfyUI

    fake = FakeComfyUI(job_seconds=1.5, progress_steps=6)
    return fake, lambda url: {
        "GENERATOR": "comfyui",
        "COMFYUI_URLS": url,
        "COMFYUI_WORKFLOW": str(ROOT / "docs" / "workflows" / "comfyui_check_api.json"),
        "COMFYUI_INPUTS": "prompt=1.value,image=2.image,width=3.width,height=3.height,"
        "frames=4.amount,seed=5.seed,fps=6.fps",
        "COMFYUI_PER_HOST_JOBS": str(JOBS),
    }


def start_worker(data: Path, log: Path, env_extra: dict[str, str], *args: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        DATA_DIR=str(data),
        POLL_SECONDS="0.1",
        GENERATOR_CONCURRENCY=str(JOBS),
        BACKEND_CONCURRENCY=str(JOBS),
        RETRY_BASE_SECONDS="0.1",
        LOG_LEVEL="INFO",
        **env_extra,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "--env-file", str(data / "no.env"), "worker", *args],
        cwd=ROOT,
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.parametrize("backend", [comfyui, fal, replicate, runway], ids=lambda f: f.__name__)
def test_a_killed_worker_resumes_each_backends_jobs_and_pays_for_each_once(tmp_path, backend):
    fake, settings_for = backend()
    make_app = getattr(fake, "make_app", None) or fake.app
    data = tmp_path / "data"
    store = Store(data / "crowdcut.db")
    media = MediaStore(data / "media")
    p = store.create_project(
        guild_id=1,
        channel_id=2,
        title="restart",
        created_by=9,
        slot_plan=[Slot(i, 5 * i, 5) for i in range(JOBS)],
        state="open",
    )
    image = media.put_bytes(png_bytes((64, 36), "teal"), "png")
    jobs = [
        store.add_job(
            project_id=p.id,
            member_id=100 + i,
            prompt=f"shot {i}: a lighthouse at dusk",
            channel_id=2,
            duration=5.0,
            aspect="16:9",
            seed=i + 1,
            image_key=image,
        ).id
        for i in range(JOBS)
    ]
    log = tmp_path / "worker.log"
    server = ThreadedServer(make_app)
    if hasattr(fake, "base"):
        fake.base = server.url  # the fake names its own output URLs
    with server:
        env = settings_for(server.url)
        proc = start_worker(data, log, env)
        # kill once the provider has accepted every job and none has finished
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [store.get_job(j) for j in jobs]
            if all(s.provider_job_id for s in states):
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        before = {j: store.get_job(j) for j in jobs}
        assert all(b.provider_job_id for b in before.values()), log.read_text()
        assert any(b.state in ("submitted", "running") for b in before.values())

        proc = start_worker(data, log, env, "--until-idle")
        assert proc.wait(timeout=120) == 0, log.read_text()

    after = {j: store.get_job(j) for j in jobs}
    assert all(a.state == "done" for a in after.values()), {j: a.state for j, a in after.items()}
    for j in jobs:
        assert after[j].provider_job_id == before[j].provider_job_id
        assert after[j].attempts == 1
    assert fake.submissions == JOBS  # the provider was asked once per job
    if hasattr(fake, "executed"):  # and a GPU box ran each job once
        assert sorted(fake.executed.values()) == [1] * JOBS
    clips = store.project_clips(p.id)
    assert sorted(c.job_id for c in clips) == sorted(jobs)
    assert "resuming job" in log.read_text()
    assert len(store.db.execute("select * from ledger").fetchall()) == JOBS  # one charge each
