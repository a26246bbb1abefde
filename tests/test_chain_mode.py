"""Chain mode and lineage: a prompt for slot N continues slot N−1's current winner from its
last frame, the clip records its parent, a change of that winner marks the continuity
broken; the project's style (/project style) and the transition length the render gets
from the song's tempo. Real SQLite, the real local generator, real ffmpeg."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
from PIL import Image, ImageChops

from bot.errors import InvalidState
from bot.media import beats
from bot.media.clips import last_frame_png
from bot.services import cuts as cuts_module
from bot.services.cuts import CutService, style_options
from bot.services.projects import ProjectService
from bot.services.submissions import Author, SubmissionService
from bot.services.worker import GenerationWorker
from storage.models import Clip, Job

ALICE, BOB, CAROL, MOD = Author(1, "alice"), Author(2, "bob"), Author(3, "carol"), Author(9, "mod")


class Recorder:
    def __init__(self) -> None:
        self.clips: list[Clip] = []

    async def job_changed(self, job: Job) -> None:
        pass

    async def clip_ready(self, clip: Clip, job: Job) -> None:
        self.clips.append(clip)


@pytest.fixture
async def env(app):
    rec = Recorder()
    worker = GenerationWorker(app, events=rec)
    subs = SubmissionService(app, worker)
    projects = ProjectService(app)
    project = await projects.create(guild_id=1, channel_id=2, title="t", by=MOD.id, slots=4)
    await worker.start()
    try:
        yield app, rec, worker, subs, projects, project
    finally:
        await worker.stop()


async def generated(app, worker, rec, sub) -> Clip:
    """Wait for the job's clip."""
    await worker.wait_idle(timeout=60)
    return next(c for c in rec.clips if c.job_id == sub.job.id)


def pixels_equal(a: bytes, b: bytes) -> bool:
    ia, ib = (Image.open(io.BytesIO(x)).convert("RGB") for x in (a, b))
    return ia.size == ib.size and ImageChops.difference(ia, ib).getbbox() is None


# ------------------------------------------------------------------ chain mode
async def test_a_chained_prompt_starts_from_the_previous_winners_last_frame(env, tmp_path):
    app, rec, worker, subs, projects, project = env
    project = await projects.set_style(project.id, by=MOD.id, chain=True)
    first = await generated(app, worker, rec, await subs.submit(project, ALICE, "a hall", slot=0))

    sub = await subs.submit(project, BOB, "the corridor opens onto a beach", slot=1)
    job = sub.job
    assert job.extends_clip_id == first.id and job.lineage == "chain"
    assert f"continues clip #{first.id}" in sub.note
    frame = tmp_path / "last.png"
    await last_frame_png(app.media.path(first.media_key), frame)
    assert pixels_equal(app.media.path(job.image_key).read_bytes(), frame.read_bytes())

    second = await generated(app, worker, rec, sub)
    assert second.parent_clip_id == first.id and second.lineage == "chain"
    chosen = {s.index: s for s in await CutService(app).choose(project)}
    assert chosen[1].clip_id == second.id and chosen[1].lineage == "chain"
    assert chosen[1].parent_clip_id == first.id and not chosen[1].continuity_broken


async def test_a_new_winner_before_a_chained_clip_marks_its_continuity_broken(env):
    app, rec, worker, subs, projects, project = env
    project = await projects.set_style(project.id, by=MOD.id, chain=True)
    cuts = CutService(app)
    first = await generated(app, worker, rec, await subs.submit(project, ALICE, "a door", slot=0))
    chained = await generated(app, worker, rec, await subs.submit(project, BOB, "it opens", slot=1))
    assert chained.parent_clip_id == first.id
    rival = await generated(app, worker, rec, await subs.submit(project, CAROL, "a window", slot=0))

    await cuts.pin(project, rival.id, 0, by=MOD.id)  # slot 1's winner changes
    chosen = {s.index: s for s in await cuts.choose(project)}
    assert chosen[0].clip_id == rival.id
    assert chosen[1].clip_id == chained.id and chosen[1].continuity_broken
    assert not chosen[0].continuity_broken
    assert cuts_module._slot_record(chosen[1])["continuity_broken"] is True

    await cuts.clear_override(project, rival.id, by=MOD.id)
    await cuts.pin(project, first.id, 0, by=MOD.id)  # the parent is back: continuity holds
    chosen = {s.index: s for s in await cuts.choose(project)}
    assert not chosen[1].continuity_broken


async def test_without_a_winner_for_the_previous_slot_the_prompt_goes_on_from_text(env):
    app, rec, worker, subs, projects, project = env
    project = await projects.set_style(project.id, by=MOD.id, chain=True)
    sub = await subs.submit(project, BOB, "a beach", slot=1)
    assert sub.job.image_key is None and sub.job.extends_clip_id is None
    assert "slot 1 has no winner yet; it starts from your text" in sub.note
    await generated(app, worker, rec, sub)
    # the cut fills slot 3 by reusing that clip: a stand-in, not slot 3's winner
    chosen = {s.index: s for s in await CutService(app).choose(project)}
    assert chosen[2].reused
    sub = await subs.submit(project, CAROL, "a sunset", slot=3)
    assert sub.job.extends_clip_id is None and "slot 3 has no winner yet" in sub.note


async def test_chain_mode_is_off_by_default_and_an_attached_image_wins(env, tmp_path):
    app, rec, worker, subs, projects, project = env
    first = await generated(app, worker, rec, await subs.submit(project, ALICE, "a door", slot=0))
    sub = await subs.submit(project, BOB, "it opens", slot=1)
    assert sub.job.extends_clip_id is None and sub.job.image_key is None and sub.note is None

    project = await projects.set_style(project.id, by=MOD.id, chain=True)
    own = tmp_path / "own.png"
    Image.new("RGB", (64, 36), (200, 30, 30)).save(own)
    sub = await subs.submit(project, BOB, "a red room", slot=1, image=own.read_bytes())
    assert sub.job.extends_clip_id is None and sub.job.lineage is None and sub.note is None
    assert first.id  # the winner was there, and not used


async def test_extend_records_its_lineage(env):
    app, rec, worker, subs, projects, project = env
    first = await generated(app, worker, rec, await subs.submit(project, ALICE, "a hall", slot=0))
    sub = await subs.extend(project, BOB, first.id, "the corridor opens")
    assert sub.job.lineage == "extend" and sub.job.extends_clip_id == first.id
    clip = await generated(app, worker, rec, sub)
    assert clip.parent_clip_id == first.id and clip.lineage == "extend"


# ------------------------------------------------------------------ /project style
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transition": "wipe"}, "not a transition"),
        ({"beats": 0}, "fraction of a beat"),
        ({"beats": -0.5}, "fraction of a beat"),
        ({"beats": 9}, "fraction of a beat"),
        ({"beats": math.nan}, "fraction of a beat"),
        ({"fit": "stretch"}, "not a fit"),
    ],
)
async def test_a_style_outside_the_choices_is_refused_and_nothing_changes(app, kwargs, message):
    projects = ProjectService(app)
    project = await projects.create(guild_id=1, channel_id=2, title="t", by=MOD.id, slots=2)
    with pytest.raises(InvalidState, match=message):
        await projects.set_style(project.id, by=MOD.id, **{"transition": "crossfade", **kwargs})
    again = await projects.get(project.id)
    assert again.transition is None and again.transition_beats is None
    assert not any(e.action == "set_style" for e in await app.store.audit_log(1))


async def test_a_style_change_is_stored_and_audited(app):
    projects = ProjectService(app)
    project = await projects.create(guild_id=1, channel_id=2, title="t", by=MOD.id, slots=2)
    p = await projects.set_style(
        project.id, by=MOD.id, transition="Crossfade", beats=0.5, fit="slow", chain=True
    )
    assert (p.transition, p.transition_beats, p.fit) == ("crossfade", 0.5, "slow")
    assert p.chain_mode
    p = await projects.set_style(project.id, by=MOD.id, chain=False)  # the rest is kept
    assert (p.transition, p.fit, p.chain_mode) == ("crossfade", "slow", False)
    entries = [e for e in await app.store.audit_log(1) if e.action == "set_style"]
    assert [e.details for e in reversed(entries)] == [
        {"transition": "crossfade", "transition_beats": 0.5, "fit": "slow", "chain_mode": True},
        {"chain_mode": False},
    ]
    assert all(e.actor_id == MOD.id and e.target == f"project:{p.id}" for e in entries)


# ------------------------------------------------------------------ the render's options
def test_the_transition_lasts_its_beats_at_the_songs_tempo():
    base = dict(width=320, height=180, fps=24)
    project = _project(transition="dip", transition_beats=1.0, fit="slow")
    opts = style_options(project, 92.0, **base)
    assert opts.transition == "dip" and opts.fit == "slow"
    assert opts.transition_seconds == pytest.approx(60 / 92)
    assert style_options(project, None, **base).transition_seconds == pytest.approx(0.5)
    hard = style_options(_project(), 92.0, **base)
    assert (hard.transition, hard.transition_seconds, hard.fit) == ("cut", 0.0, "hold")


async def test_the_render_gets_the_transition_length_from_the_stored_tempo(env, monkeypatch):
    app, rec, worker, subs, projects, project = env
    await generated(app, worker, rec, await subs.submit(project, ALICE, "a door", slot=0))
    project = await projects.set_style(project.id, by=MOD.id, transition="crossfade", beats=0.5)
    song_key = app.media.put_bytes(b"not really a song", "bin")
    analysis = beats.SongAnalysis(duration=8.0, rms_db=-12.0, peak_db=-1.0, tempo=140.0)
    app.media.put_derived(song_key, beats.DERIVED_NAME, analysis.to_json())
    project = dataclasses.replace(project, song_key=song_key)

    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    async def fake_assemble(slots, song, out_dir, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(cuts_module, "assemble", fake_assemble)
    with pytest.raises(Stop):
        await CutService(app).render(project, by=MOD.id)
    assert seen["transition"] == "crossfade" and seen["fit"] == "hold"
    assert seen["transition_seconds"] == pytest.approx(0.5 * 60 / 140)


def _project(**style):
    from storage.models import Project

    return Project(
        id=1, guild_id=1, channel_id=2, title="t", state="open", created_by=9, created_at=0.0,
        **style,
    )  # fmt: skip
