"""A provider answering garbage: the job gets a clear reason, the worker keeps running, the
other jobs are not affected."""

from __future__ import annotations

from pathlib import Path

from bot.app import build_app
from bot.generators.base import GenerationRequest
from bot.generators.local import LocalGenerator
from bot.services.projects import ProjectService
from bot.services.submissions import Author, SubmissionService
from bot.services.worker import GenerationWorker
from tests.conftest import make_settings


class GarbageProvider(LocalGenerator):
    """The local generator, except that a finished job whose prompt says "garbage" downloads
    as an HTML error page — what a provider's CDN returns on a bad day."""

    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir, max_concurrency=2, clip_seconds=1.0)
        self.garbage: set[str] = set()
        self.submissions: list[str] = []
        self.downloads: list[str] = []

    async def submit(self, request: GenerationRequest) -> str:
        job_id = await super().submit(request)
        self.submissions.append(request.prompt)
        if "garbage" in request.prompt:
            self.garbage.add(job_id)
        return job_id

    async def download(self, job_id: str, dest: Path) -> Path:
        self.downloads.append(job_id)
        if job_id in self.garbage:
            dest.write_bytes(b"<html><body>502 Bad Gateway</body></html>")
            return dest
        return await super().download(job_id, dest)


async def test_a_garbage_download_is_retried_then_failed_with_a_reason_and_others_go_on(tmp_path):
    settings = make_settings(tmp_path, retry_max_attempts=2)
    provider = GarbageProvider(tmp_path / "provider")
    app = build_app(settings, generator=provider)
    worker = GenerationWorker(app)
    try:
        subs = SubmissionService(app, worker)
        project = await ProjectService(app).create(
            guild_id=1, channel_id=2, title="t", by=9, slots=2
        )
        bad = await subs.submit(project, Author(1, "alice"), "garbage please")
        good = await subs.submit(project, Author(2, "bob"), "a calm lake")
        await worker.start()
        await worker.wait_idle(timeout=60)
        bad_job = await app.store.get_job(bad.job.id)
        assert bad_job.state == "failed" and "not a usable video" in bad_job.error
        # the download was tried again on the same provider job; the clip was paid once
        assert bad_job.attempts == 1 and provider.submissions.count("garbage please") == 1
        assert provider.downloads.count(bad_job.provider_job_id) == 2
        assert (await app.store.get_job(good.job.id)).state == "done"
        assert [c.job_id for c in await app.store.project_clips(project.id)] == [good.job.id]
    finally:
        await worker.stop()
        await app.aclose()
