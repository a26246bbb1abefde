"""``crowdcut demo``: a simulated community session on the embedded defaults.

A synthesized song (no copyrighted audio), simulated members prompting (some with
reference images drawn on the fly, one extending another's clip), the queue
generating clips with the local stand-in generator, simulated votes, cut selection
and assembly. By default everything goes through the real bot connected to the
Discord emulator on 127.0.0.1; ``--direct`` calls the services instead.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

from bot.app import build_app
from bot.demo_scenario import community, reference_image, votes
from bot.media.song import synthesize_song
from bot.services.cuts import CutService
from bot.services.projects import ProjectService
from bot.services.submissions import Author, SubmissionService
from bot.services.voting import VotingService
from bot.services.worker import GenerationWorker
from bot.settings import Settings
from storage import Store
from storage.models import Clip, Job

log = logging.getLogger(__name__)


def demo_settings(out: Path) -> Settings:
    """Embedded defaults, in the demo's own folder, with no .env read."""
    return Settings.load(
        env={},
        env_file=None,
        data_dir=out / "data",
        generator_concurrency=2,
        backend_concurrency=2,
        poll_seconds=0.2,
        max_jobs_per_member=10,
        video_width=640,
        video_height=360,
        clip_seconds=4.0,
        status_edit_seconds=1.0,
        local_test_hooks=True,  # a demo, not a server: [fail:…] and [slow] work here
    )


def _say(msg: str) -> None:
    print(msg, flush=True)


class _Progress:
    def __init__(self) -> None:
        self.last = ""

    def __call__(self, stage: str, fraction: float) -> None:
        key = f"{stage}:{int(fraction * 4)}"
        if key != self.last:
            self.last = key
            _say(f"    render {stage:<10} {fraction * 100:5.1f}%")


async def run_demo(
    out: Path,
    *,
    direct: bool = False,
    members: int = 6,
    seconds: float = 32.0,
    keep: bool = False,
    serve: bool = False,
) -> int:
    started = time.monotonic()
    out = out.resolve()
    if out.exists() and not keep:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("discord.client").setLevel(logging.ERROR)  # "no voice support" notes
    settings = demo_settings(out)
    song = out / "song.m4a"
    route = "direct" if direct else "through the Discord emulator"
    _say(f"crowdcut demo — a simulated community session ({route})")
    _say(f"  synthesizing a {seconds:.0f} s song (no copyrighted audio) …")
    # 92 BPM: a bar (2.6 s) does not divide the clip length, so the slots sit on the bars
    await synthesize_song(song, seconds, bpm=92, seed=3)
    if direct:
        result = await _direct(settings, song, members)
    else:
        from bot.demo_discord import run_discord_demo

        result = await run_discord_demo(settings, song, members)
    _say("")
    _say(f"done in {time.monotonic() - started:.0f} s")
    for k, v in result.items():
        _say(f"  {k:<9} {v}")
    await _page(settings, serve)
    return 0


async def _page(settings: Settings, serve: bool) -> None:
    """Say where the project's page is; with ``serve``, serve it until Ctrl-C."""
    from bot.web.server import WebServer, serve_until_stopped

    def newest() -> tuple[int, str | None]:
        store = Store.open_readonly(settings.db_path)
        try:
            project = store.list_projects()[-1]
            return project.id, store.project_web_token(project.id)
        finally:
            store.close()

    project_id, token = await asyncio.to_thread(newest)
    if not serve:
        _say(f"  page      http://{settings.web_host}:{settings.web_port}/p/{token}/")
        _say(
            "            (served by `crowdcut demo --serve`, or by "
            f"`crowdcut web --data-dir {settings.data_dir}`)"
        )
        return
    server = WebServer(settings)
    try:
        await server.start()
    except OSError:  # the port is taken: any free one will do for a demo
        await server.stop()
        server = WebServer(settings, port=0)
        await server.start()
    _say(f"  page      {await server.page_url(project_id)}")
    _say("  serving the page until Ctrl-C …")
    await serve_until_stopped(server)


async def _direct(settings: Settings, song: Path, n_members: int) -> dict[str, Path]:
    app = build_app(settings)
    clips: list[Clip] = []

    class Events:
        async def job_changed(self, job: Job) -> None:
            if job.state in ("failed", "canceled"):
                _say(f"    job #{job.id} {job.state}: {job.error}")

        async def clip_ready(self, clip: Clip, job: Job) -> None:
            clips.append(clip)
            _say(
                f"    clip #{clip.id} ready (job #{job.id}, slot "
                f"{'-' if clip.slot is None else clip.slot + 1}): {job.prompt[:50]}"
            )

    worker = GenerationWorker(app, events=Events())
    subs = SubmissionService(app, worker)
    projects = ProjectService(app)
    voting = VotingService(app)
    cuts = CutService(app)
    moderator = Author(1000, "mod_mira")
    try:
        await worker.start()
        project = await projects.create(
            guild_id=1,
            channel_id=10,
            title="Crowdcut Demo Night",
            by=moderator.id,
            song=song.read_bytes(),
            song_name="demo-song.m4a",
        )
        project = await projects.set_credit(
            project, "“Demo Night” (92 BPM, synthesized by crowdcut, CC0)", by=moderator.id
        )
        # crossfades one beat long, centred on the bar lines; prompts continue the shot
        project = await projects.set_style(
            project.id, by=moderator.id, transition="crossfade", beats=1.0, chain=True
        )
        n_slots = len(project.slot_plan)
        _say(
            f"  project #{project.id} “{project.title}”: {n_slots} slots on the song's bars "
            f"(the first {project.slot_plan[0].duration:.1f} s), crossfades of one beat, "
            "chain mode on"
        )
        sim = community(n_members, n_slots)
        authors = {i: Author(2000 + i, m.name) for i, m in enumerate(sim)}
        rounds = max(len(m.prompts) for m in sim)
        for r in range(rounds):
            for i, m in enumerate(sim):
                if r < len(m.prompts):
                    text, slot, with_image = m.prompts[r]
                    image = reference_image(i * 100 + r) if with_image else None
                    sub = await subs.submit(project, authors[i], text, image=image, slot=slot)
                    pos = sub.position
                    _say(
                        f"  {m.name:>10} prompts{' (+image)' if image else ''}: {text[:48]}… "
                        f"→ job #{sub.job.id}, position {pos.position if pos else '-'}"
                    )
        # a refusal, as a member would meet it
        try:
            await subs.submit(project, authors[0], "\u200b  \u200b")
        except Exception as e:  # noqa: BLE001 - shown to the member
            _say(f"  {sim[0].name:>10} prompts an invisible prompt → refused: {e}")
        await worker.wait_idle(timeout=600)
        # one member extends another's clip
        if clips:
            sub = await subs.extend(
                project, authors[1], clips[0].id, "the same shot continues into a sunrise"
            )
            _say(f"  {sim[1].name:>10} extends clip #{clips[0].id} → job #{sub.job.id}")
            await worker.wait_idle(timeout=300)
        clip_rows = await app.store.project_clips(project.id)
        for c in clip_rows:  # the Discord front end does this when it posts the clip
            await app.store.mark_clip_posted(c.id, channel_id=10, message_id=900000 + c.id)
        voters = [a.id for a in authors.values()] + [moderator.id]
        counted = 0
        for voter, clip_id, emoji in votes(
            [c.id for c in clip_rows], {c.id: c.member_id for c in clip_rows}, voters
        ):
            outcome = await voting.on_reaction(
                message_id=900000 + clip_id,
                user_id=voter,
                emoji=emoji,
                added=True,
                user_is_bot=False,
            )
            counted += outcome.counted
        _say(f"  {counted} votes counted from {len(voters)} members")
        project = await projects.close(project.id, by=moderator.id)
        _say("  voting closed; cutting the winners to the song …")
        rendered = await cuts.render(project, by=moderator.id, progress=_Progress())
        await cuts.approve(project, rendered.cut, by=moderator.id)
        _say(f"  cut #{rendered.cut.id} approved by {moderator.name}")
        board = await cuts.storyboard(project, settings.renders_dir / "storyboard.png")
        return {
            "video": rendered.result.master,
            "preview": rendered.result.preview,
            "manifest": rendered.result.manifest,
            "storyboard": board,
        }
    finally:
        await worker.stop()
        await app.aclose()
