"""The segment cache: a re-cut renders only the segments whose inputs changed, and a cut's
identity changes exactly when what it shows does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.core.cut import SlotPick, cut_identity
from bot.media.assembly import (
    PREVIEW_TARGET,
    CutOptions,
    CutSlot,
    SegmentRenderer,
    assemble_master,
    cut_identity_of,
    render_segments,
    segment_preview,
)
from bot.media.credits import Credits
from bot.media.probe import probe
from bot.media.segments import SegmentCache
from bot.media.song import synthesize_song
from tests.media_helpers import ffmpeg_children, make_clip

W, H, FPS = 160, 90, 24
CROSSFADE = CutOptions(width=W, height=H, fps=FPS, transition="crossfade", transition_seconds=0.25)


@pytest.fixture
def clips(tmp_path):
    return [
        make_clip(tmp_path / f"c{i}.mp4", width=W, height=H, seconds=1, audio=False,
                  pattern=("testsrc2", "smptebars", "rgbtestsrc", "testsrc")[i])
        for i in range(4)
    ]  # fmt: skip


def slots_of(clips: list[Path]) -> list[CutSlot]:
    return [
        CutSlot(index=i, start=i * 0.5, duration=0.5, clip_path=c, clip_id=i + 1,
                author=f"m{i}", prompt="", backend="fake", media_key=f"key-{c.name}")
        for i, c in enumerate(clips)
    ]  # fmt: skip


async def master(slots, renderer, out: Path, options: CutOptions = CROSSFADE, song=None):
    return await assemble_master(slots, song, out, renderer, options=options, title="t",
                                 credits_seconds=0.5, title_seconds=0)  # fmt: skip


async def test_a_recut_renders_only_the_swapped_slot_and_the_next(tmp_path, clips):
    renderer = SegmentRenderer(tmp_path / "cache")
    slots = slots_of(clips[:3])
    first = await master(slots, renderer, tmp_path / "a")
    assert first.segments_rendered == 5  # three slots, the roll and the end card
    again = await master(slots, renderer, tmp_path / "b")
    assert again.segments_rendered == 0 and again.identity == first.identity
    slots[1].clip_path, slots[1].media_key = clips[3], "key-c3.mp4"
    recut = await master(slots, renderer, tmp_path / "c")
    # slot 2's segment and slot 3's (which opens with slot 2's tail); the rest is kept
    assert recut.segments_rendered == 2 and recut.identity != first.identity
    info = probe(recut.master)
    assert info.frame_count == round((1.5 + 0.5) * FPS)


async def test_approving_renders_only_the_end_card(tmp_path, clips):
    renderer = SegmentRenderer(tmp_path / "cache")
    slots = slots_of(clips[:3])
    preview = await master(slots, renderer, tmp_path / "a")
    approved = await assemble_master(slots, None, tmp_path / "b", renderer, options=CROSSFADE,
                                     title="t", credits_seconds=0.5, title_seconds=0,
                                     credits=Credits(moderators=("mona",)))  # fmt: skip
    assert approved.segments_rendered == 1 and approved.duration == preview.duration
    assert approved.identity != preview.identity


async def test_with_hard_cuts_a_swap_renders_one_segment(tmp_path, clips):
    renderer = SegmentRenderer(tmp_path / "cache")
    hard = CutOptions(width=W, height=H, fps=FPS)
    slots = slots_of(clips[:3])
    await master(slots, renderer, tmp_path / "a", hard)
    slots[1].clip_path, slots[1].media_key = clips[3], "key-c3.mp4"
    assert (await master(slots, renderer, tmp_path / "b", hard)).segments_rendered == 1


async def test_background_renders_make_approval_a_join(tmp_path, clips):
    song = await synthesize_song(tmp_path / "song.m4a", 4)
    renderer = SegmentRenderer(tmp_path / "cache")
    slots = slots_of(clips)
    identity = await render_segments(slots, renderer, options=CROSSFADE, title="t", song=song,
                                     credits_seconds=0.5, title_seconds=0)  # fmt: skip
    result = await master(slots, renderer, tmp_path / "out", song=song)
    assert result.segments_rendered == 0 and result.identity == identity
    info = probe(result.master)
    assert info.has_audio and info.frame_count == round(2.5 * FPS)


async def test_background_renders_make_the_preview_of_an_approval_a_join_too(tmp_path):
    """The master does not fit the limit: the background pass encodes every segment for the
    preview; the approval then renders only its end card (the moderator's name), for the
    master and for the preview, and the preview lands within 5 % of its target."""
    src = [make_clip(tmp_path / f"p{i}.mp4", width=320, height=180, seconds=1.5, audio=False,
                     pattern=("testsrc2", "smptebars", "rgbtestsrc", "testsrc")[i])
           for i in range(4)]  # fmt: skip
    song = await synthesize_song(tmp_path / "song.m4a", 6)
    options = CutOptions(width=320, height=180, fps=FPS, transition="crossfade",
                         transition_seconds=0.25)  # fmt: skip
    slots = [CutSlot(index=i, start=i * 1.0, duration=1.0, clip_path=c, clip_id=i + 1,
                     author=f"m{i}", prompt="", backend="fake", media_key=f"key-{c.name}")
             for i, c in enumerate(src)]  # fmt: skip
    renderer = SegmentRenderer(tmp_path / "cache")
    limit = 60_000
    await render_segments(slots, renderer, options=options, title="t", song=song,
                          credits_seconds=1.0, title_seconds=0,
                          preview_limit_bytes=limit)  # fmt: skip
    before = renderer.rendered
    approved = await assemble_master(slots, song, tmp_path / "out", renderer, options=options,
                                     title="t", credits_seconds=1.0, title_seconds=0,
                                     credits=Credits(moderators=("mona",)))  # fmt: skip
    assert approved.size_bytes > limit  # so the preview had to be made
    preview = await segment_preview(approved, tmp_path / "out" / "preview.mp4", renderer,
                                    limit_bytes=limit)  # fmt: skip
    assert renderer.rendered - before == 2  # the end card, then its preview encode
    info = probe(preview.path)
    assert 0.95 * PREVIEW_TARGET * limit <= info.size_bytes <= limit
    assert not preview.is_master and info.width < 320
    assert info.frame_count == probe(approved.master).frame_count and info.has_audio
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p"
    await decode_all(preview.path)  # the joined encodes play through


async def test_a_preview_from_segments_without_a_song_keeps_the_clips_audio(tmp_path):
    """No song: each segment carries its clip's audio (or silence), and so does each of its
    preview encodes; the joined preview has one audio track the length of the video."""
    src = [make_clip(tmp_path / f"a{i}.mp4", width=320, height=180, seconds=1.5,
                     audio=(i % 2 == 0), pattern=("testsrc2", "smptebars", "testsrc")[i])
           for i in range(3)]  # fmt: skip
    options = CutOptions(width=320, height=180, fps=FPS)
    slots = [CutSlot(index=i, start=i * 1.0, duration=1.0, clip_path=c, clip_id=i + 1,
                     author=f"m{i}", prompt="", backend="fake", media_key=f"key-{c.name}")
             for i, c in enumerate(src)]  # fmt: skip
    renderer = SegmentRenderer(tmp_path / "cache")
    master = await assemble_master(slots, None, tmp_path / "out", renderer, options=options,
                                   title="t", credits_seconds=1.0, title_seconds=0)  # fmt: skip
    limit = int(master.size_bytes * 0.5)
    preview = await segment_preview(master, tmp_path / "out" / "preview.mp4", renderer,
                                    limit_bytes=limit)  # fmt: skip
    info = probe(preview.path)
    assert not preview.is_master and info.size_bytes <= limit
    assert info.has_audio and info.audio_codec == "aac"
    assert info.frame_count == probe(master.master).frame_count
    assert abs(info.duration - master.duration) < 0.1
    await decode_all(preview.path)


async def decode_all(path: Path) -> None:
    """Decode every frame; raises on a frame the joined parameter sets cannot decode."""
    import av

    def run() -> int:
        with av.open(str(path)) as container:
            container.streams.video[0].codec_context.options = {"err_detect": "explode"}
            return sum(1 for _ in container.decode(video=0))

    assert await asyncio.to_thread(run) > 0


async def test_two_renders_of_the_same_cut_at_once_share_the_work(tmp_path, clips):
    renderer = SegmentRenderer(tmp_path / "cache")
    slots = slots_of(clips[:2])
    await asyncio.gather(
        render_segments(slots, renderer, options=CROSSFADE, title="t", credits_seconds=0.5),
        render_segments(slots, renderer, options=CROSSFADE, title="t", credits_seconds=0.5),
    )
    assert renderer.rendered == 4  # two slots, roll, end card: each once
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and ".part" in p.name]
    assert leftovers == []


async def test_a_cancelled_background_render_leaves_no_ffmpeg_and_no_half_file(tmp_path):
    clips = [make_clip(tmp_path / f"{i}.mp4", width=320, height=180, seconds=2) for i in range(4)]
    renderer = SegmentRenderer(tmp_path / "cache")
    started = asyncio.Event()
    task = asyncio.create_task(
        render_segments(
            slots_of(clips),
            renderer,
            options=CutOptions(width=1280, height=720),
            title="t",
            progress=lambda stage, f: f > 0 and started.set(),
        )  # fmt: skip
    )
    await asyncio.wait_for(started.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ffmpeg_children() == []
    assert [p for p in (tmp_path / "cache").rglob("*.mp4") if p.name.startswith(".")] == []


def test_the_cache_drops_the_least_recently_used_first(tmp_path):
    import os

    cache = SegmentCache(tmp_path)
    paths = []
    for i, key in enumerate(["aa" + "0" * 62, "bb" + "0" * 62, "cc" + "0" * 62]):
        path = cache.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + i, 1000 + i))
        paths.append(path)
    assert cache.prune(250, keep=[paths[0]]) == 1
    assert [p.exists() for p in paths] == [True, False, True]


# ---------------------------------------------------------------------- identity

PICKS = [SlotPick(0, 7, "a.mp4", 0.0, 2.5), SlotPick(1, 9, "b.mp4", 2.5, 2.5)]


def test_the_identity_is_stable_and_ignores_order_and_float_noise():
    assert cut_identity(PICKS) == cut_identity(list(reversed(PICKS)))
    noisy = [SlotPick(0, 7, "a.mp4", 0.0, 2.5000000001), PICKS[1]]
    assert cut_identity(noisy) == cut_identity(PICKS)
    assert len(cut_identity(PICKS)) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"picks": [PICKS[0], SlotPick(1, 8, "c.mp4", 2.5, 2.5)]},  # another clip
        {"picks": [PICKS[1], SlotPick(0, 9, "b.mp4", 0.0, 2.5)]},  # clips swapped
        {"picks": [SlotPick(0, 7, "a.mp4", 0.0, 2.5, in_point=1.0), PICKS[1]]},  # a trim
        {"fit": "slow"},
        {"transition": "crossfade", "transition_seconds": 0.25},
        {"width": 640, "height": 360},
        {"song_key": "song.m4a"},
        {"credits": ["#1 anonymous"]},  # a forget-me
    ],
)
def test_the_identity_changes_with_what_the_cut_shows(change):
    kwargs = {"picks": PICKS, **change}
    assert cut_identity(**kwargs) != cut_identity(PICKS)


def test_a_hard_cut_ignores_a_transition_length():
    assert cut_identity(PICKS, transition="cut", transition_seconds=0.5) == cut_identity(PICKS)


def test_a_forgotten_author_changes_the_cut(tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    slots = [CutSlot(index=0, start=0, duration=1, clip_path=clip, clip_id=1, author="alice",
                     prompt="", backend="fake", media_key="k.mp4")]  # fmt: skip
    before = cut_identity_of(slots, CROSSFADE, title="t", credits=Credits())
    slots[0].author = "anonymous"
    assert cut_identity_of(slots, CROSSFADE, title="t", credits=Credits()) != before


async def test_a_render_shared_with_a_cancelled_caller_still_finishes(tmp_path, clips):
    renderer = SegmentRenderer(tmp_path / "cache")
    started = asyncio.Event()
    slots = slots_of(clips[:1])

    def progress(stage: str, fraction: float) -> None:
        if fraction > 0:
            started.set()

    owner = asyncio.create_task(
        render_segments(
            slots, renderer, options=CROSSFADE, title="t", credits_seconds=0, progress=progress
        )  # fmt: skip
    )
    await asyncio.wait_for(started.wait(), timeout=30)
    sharer = asyncio.create_task(
        render_segments(slots, renderer, options=CROSSFADE, title="t", credits_seconds=0)
    )
    await asyncio.sleep(0)  # let the sharer find the render in flight
    owner.cancel()
    await sharer  # not cancelled: it renders the segment itself
    with pytest.raises(asyncio.CancelledError):
        await owner
    assert len(list(renderer.cache.root.glob("*/*.mp4"))) == 1
