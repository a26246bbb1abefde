"""Slot plans: slots on the song's bars near the clip length, the even fallback, refused
songs, and the moderators' edits (slot count, split, merge, hint) that never change the
meaning of a slot number in use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot.app import build_app
from bot.core import slots as planning
from bot.errors import InvalidState
from bot.media import beats
from bot.services import projects as projects_module
from bot.services.projects import InvalidSong, ProjectService
from storage.models import Project, Slot, from_row
from tests.conftest import make_settings
from tests.media_helpers import make_clip
from tests.song_helpers import off_grid, song_async, speech_like, write_wav

CLIP = 4.0  # the local generator's natural clip length in these tests


def bars_every(period: float, start: float, end: float) -> list[float]:
    return [float(t) for t in np.arange(start, end, period)]


def boundaries(plan: list[Slot]) -> list[float]:
    return [s.start for s in plan[1:]]


# ------------------------------------------------------------------ planning, pure
@pytest.mark.parametrize("bpm", [92, 120, 140])
def test_slots_start_on_bars_cover_the_song_and_stay_near_the_clip_length(bpm):
    bar = 4 * 60 / bpm
    duration = 61.3
    bars = bars_every(bar, 0.4, duration)
    plan = planning.bar_slot_plan(duration, bars, CLIP)
    assert plan[0].start == 0 and plan[-1].end == pytest.approx(duration)
    for a, b in zip(plan, plan[1:], strict=False):
        assert b.start == pytest.approx(a.end)
    assert all(any(abs(t - b) < 1e-6 for b in bars) for t in boundaries(plan))
    # no slot is a bar or more from the clip length (the edges hold a part bar more), and
    # most are within half a bar: the plan trades a few longer slots to cover the song
    inner = [abs(s.duration - CLIP) for s in plan[1:-1]]
    assert max(inner) < bar
    assert sum(d <= bar / 2 + 1e-6 for d in inner) >= len(inner) / 2
    assert [s.index for s in plan] == list(range(len(plan)))
    assert sum(s.bars for s in plan) == len(bars)
    assert plan[0].bar == 0 and plan[1].bar == plan[0].bars


def test_a_set_count_gives_that_many_slots_on_bars():
    bars = bars_every(2.0, 0.0, 60.0)
    plan = planning.bar_slot_plan(60.0, bars, CLIP, count=7)
    assert len(plan) == 7
    assert all(any(abs(t - b) < 1e-6 for b in bars) for t in boundaries(plan))
    assert max(s.duration for s in plan) - min(s.duration for s in plan) <= 2.0 + 1e-6


def test_more_slots_than_bars_is_refused():
    with pytest.raises(InvalidState, match="has 5 bars"):
        planning.bar_slot_plan(10.0, bars_every(2.0, 0.0, 10.0), CLIP, count=6)


def test_bars_longer_than_one_and_a_half_clips_are_halved():
    beat = 60 / 92
    beat_times = [i * beat for i in range(64)]
    grid, per_bar = planning.bar_grid(beat_times, 0, 8, clip_seconds=3.0)  # 5.2 s > 4.5 s
    assert per_bar == 4 and grid[1] == pytest.approx(4 * beat)
    grid, per_bar = planning.bar_grid(beat_times, 3, 4, clip_seconds=1.0)
    assert per_bar == 2 and grid[0] == pytest.approx(beat)  # 3 % 2: the earlier half bar
    grid, per_bar = planning.bar_grid(beat_times, 0, 8, clip_seconds=4.0)  # 5.2 s <= 6 s
    assert per_bar == 8


def test_a_split_cuts_on_the_bar_nearest_the_middle_and_moves_later_slots_up():
    bars = bars_every(1.0, 0.0, 12.0)
    plan = planning.with_hint(planning.bar_slot_plan(12.0, bars, CLIP), 1, "chorus")
    assert [s.duration for s in plan] == [4.0, 4.0, 4.0]
    split = planning.split_slot(plan, 1, bars)
    assert [(s.start, s.duration, s.bar, s.bars) for s in split] == [
        (0.0, 4.0, 0, 4),
        (4.0, 2.0, 4, 2),
        (6.0, 2.0, 6, 2),
        (8.0, 4.0, 8, 4),
    ]
    assert [s.hint for s in split] == [None, "chorus", "chorus", None]
    assert [s.index for s in split] == [0, 1, 2, 3]


def test_a_slot_of_one_bar_cannot_be_split_on_a_bar():
    bars = bars_every(4.0, 0.0, 12.0)
    plan = planning.bar_slot_plan(12.0, bars, CLIP)
    with pytest.raises(InvalidState, match="single bar"):
        planning.split_slot(plan, 0, bars)


def test_an_even_slot_is_split_in_the_middle():
    split = planning.split_slot(planning.even_slots(12.0, 2), 0, None)
    assert [(s.start, s.duration) for s in split] == [(0.0, 3.0), (3.0, 3.0), (6.0, 6.0)]


def test_a_merge_joins_a_slot_with_the_next_and_keeps_both_hints():
    bars = bars_every(1.0, 0.0, 12.0)
    plan = planning.bar_slot_plan(12.0, bars, CLIP)
    plan = planning.with_hint(planning.with_hint(plan, 0, "intro"), 1, "verse")
    merged = planning.merge_slots(plan, 0)
    assert [(s.index, s.start, s.duration, s.bar, s.bars) for s in merged] == [
        (0, 0.0, 8.0, 0, 8),
        (1, 8.0, 4.0, 8, 4),
    ]
    assert merged[0].hint == "intro / verse"
    with pytest.raises(InvalidState, match="last slot"):
        planning.merge_slots(merged, 1)
    with pytest.raises(InvalidState, match="Slot 5 does not exist"):
        planning.merge_slots(merged, 4)


def test_a_hint_is_one_clean_line_and_an_empty_one_removes_it():
    plan = planning.even_slots(8.0, 2)
    plan = planning.with_hint(plan, 1, "  a lyric \n line\x07 ")
    assert plan[1].hint == "a lyric line"
    assert planning.with_hint(plan, 1, "  ")[1].hint is None
    with pytest.raises(InvalidState, match="at most 200"):
        planning.with_hint(plan, 0, "x" * 201)


def test_old_plans_still_load_and_new_fields_survive_json():
    row = {
        "id": 1, "guild_id": 1, "channel_id": 1, "title": "t", "state": "open",
        "created_at": 0.0,
        "slot_plan": json.dumps(
            [{"index": 0, "start": 0, "duration": 4}, {"index": 1, "start": 4, "duration": 4,
              "bar": 2, "bars": 2, "hint": "rain", "from_the_future": 1}]
        ),
    }  # fmt: skip
    p = from_row(Project, row)
    assert p.slot_plan[0] == Slot(0, 0, 4)
    assert p.slot_plan[1] == Slot(1, 4, 4, bar=2, bars=2, hint="rain")


# ------------------------------------------------------------------ projects with songs
@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("songs")


@pytest.fixture
async def app(tmp_path):
    a = build_app(make_settings(tmp_path, clip_seconds=CLIP))
    try:
        yield a
    finally:
        await a.aclose()


async def create(app, data: bytes | None, **kw) -> Project:
    return await ProjectService(app).create(
        guild_id=1, channel_id=10, title="Night", by=99, song=data, song_name="s.m4a", **kw
    )


async def test_a_project_with_a_song_gets_slots_on_its_bars(app, songs):
    bpm = 92
    p = await create(app, (await song_async(songs, bpm)).read_bytes())
    bar = 4 * 60 / bpm
    assert len(p.slot_plan) >= 4
    assert off_grid(boundaries(p.slot_plan), bar) < 0.05  # every cut on a downbeat
    assert all(s.bar is not None and s.bars for s in p.slot_plan)
    assert all(abs(s.duration - CLIP) < bar for s in p.slot_plan[1:-1])
    assert app.media.read_derived(p.song_key, beats.DERIVED_NAME) is not None
    note = await ProjectService(app).plans.describe(p)
    assert "on the bars of the 92 BPM song" in note


async def test_a_song_with_no_beat_gets_even_slots_and_says_so(app, tmp_path):
    wav = write_wav(tmp_path / "talk.wav", speech_like(16.0))
    p = await create(app, wav.read_bytes())
    assert len(p.slot_plan) == 4 and {s.duration for s in p.slot_plan} == {4.0}
    assert all(s.bar is None for s in p.slot_plan)
    note = await ProjectService(app).plans.describe(p)
    assert "even" in note and "no regular beat" in note


@pytest.mark.parametrize(
    "kind,message",
    [
        ("text", "not an audio file"),
        ("video without sound", "no audio track"),
        ("silence", "is silent"),
        ("shorter than a slot", "shorter than one slot"),
        ("too long", "the limit is"),
    ],
)
async def test_a_song_is_refused_for_a_specific_reason(app, tmp_path, kind, message, monkeypatch):
    if kind == "text":
        data = b"not really a song\n" * 200
    elif kind == "video without sound":
        data = make_clip(tmp_path / "v.mp4", seconds=2, audio=False).read_bytes()
    elif kind == "silence":
        data = write_wav(tmp_path / "quiet.wav", np.zeros(22050 * 8)).read_bytes()
    elif kind == "shorter than a slot":
        data = write_wav(tmp_path / "short.wav", speech_like(2.5)).read_bytes()
    else:
        monkeypatch.setattr(projects_module, "MAX_SONG_SECONDS", 6)
        data = write_wav(tmp_path / "long.wav", speech_like(8.0)).read_bytes()
    with pytest.raises(InvalidSong, match=message):
        await create(app, data)
    assert await app.store.current_project(1, 10) is None


# ------------------------------------------------------------------ moderators' edits
async def add_clip(app, project: Project, slot: int | None) -> int:
    job = await app.store.add_job(
        project_id=project.id, member_id=5, prompt="x", channel_id=10, duration=CLIP,
        aspect="16:9", seed=1, slot=slot,
    )  # fmt: skip
    await app.store.claim_job(job.id, "local")
    clip = await app.store.complete_job(
        job.id, media_key="0" * 64 + ".mp4", duration=CLIP, width=16, height=9, fps=24,
        has_audio=False, size_bytes=1,
    )  # fmt: skip
    return clip.id


async def test_the_slot_count_is_planned_again_on_bars_and_audited(app, songs):
    service = ProjectService(app)
    p = await create(app, (await song_async(songs, 120)).read_bytes())
    p = await service.plans.set_hint(p.id, 0, "the sun comes up", by=99)
    p, plan = await service.plans.set_count(p.id, 3, by=99)
    assert len(p.slot_plan) == 3 and plan.on_bars
    assert off_grid(boundaries(p.slot_plan), 2.0) < 0.05
    assert p.slot_plan[0].hint == "the sun comes up"  # hints keep their slot numbers
    actions = [e.action for e in await app.store.audit_log(1)]
    assert "set_slot_count" in actions and "set_slot_hint" in actions


async def test_edits_are_refused_once_a_clip_names_a_slot_they_would_move(app):
    service = ProjectService(app)
    p = await create(app, None, slots=4)
    await add_clip(app, p, slot=1)
    await add_clip(app, p, slot=None)  # a clip for any slot blocks nothing
    for edit in (
        service.plans.set_count(p.id, 6, by=99),
        service.plans.split(p.id, 1, by=99),
        service.plans.merge(p.id, 0, by=99),
    ):
        with pytest.raises(InvalidState, match=r"name slot\(s\) 2"):
            await edit
    # slots after the last one in use can still change; hints always can
    p = await service.plans.split(p.id, 2, by=99)
    assert [s.duration for s in p.slot_plan] == [4.0, 4.0, 2.0, 2.0, 4.0]
    p = await service.plans.merge(p.id, 3, by=99)
    assert [s.duration for s in p.slot_plan] == [4.0, 4.0, 2.0, 6.0]
    p = await service.plans.set_hint(p.id, 1, "slow motion", by=99)
    assert p.slot_plan[1].hint == "slow motion"


async def test_a_pin_or_a_waiting_prompt_also_holds_its_slot_number(app):
    service = ProjectService(app)
    p = await create(app, None, slots=4)
    clip = await add_clip(app, p, slot=None)
    await app.store.set_override(p.id, clip, "pin", by=99, slot=3)
    with pytest.raises(InvalidState, match=r"slot\(s\) 4"):
        await service.plans.merge(p.id, 2, by=99)
    await app.store.add_job(
        project_id=p.id, member_id=6, prompt="y", channel_id=10, duration=CLIP,
        aspect="16:9", seed=2, slot=2,
    )  # fmt: skip
    with pytest.raises(InvalidState, match=r"slot\(s\) 3, 4"):
        await service.plans.split(p.id, 1, by=99)
