"""Checking generated clips: what is refused, what is accepted, and the helpers around it."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from bot.errors import InvalidClip
from bot.media.clips import MAX_CLIP_SECONDS, fit_to_size, last_frame_png, validate_clip
from bot.media.probe import probe
from tests.media_helpers import (
    make_audio_only,
    make_clip,
    make_empty_mp4,
    make_not_a_video,
)


async def test_text_renamed_to_mp4_is_refused(tmp_path):
    with pytest.raises(InvalidClip, match="could not be read"):
        await validate_clip(make_not_a_video(tmp_path / "clip.mp4"))


async def test_empty_file_is_refused(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(InvalidClip, match="empty"):
        await validate_clip(tmp_path / "clip.mp4")


async def test_audio_only_mp4_is_refused(tmp_path):
    with pytest.raises(InvalidClip, match="only audio"):
        await validate_clip(make_audio_only(tmp_path / "clip.mp4"))


async def test_mp4_with_zero_frames_is_refused(tmp_path):
    with pytest.raises(InvalidClip, match="not a video"):
        await validate_clip(make_empty_mp4(tmp_path / "clip.mp4"))


async def test_still_image_is_refused(tmp_path):
    Image.new("RGB", (64, 36), (200, 30, 30)).save(tmp_path / "frame.png")
    (tmp_path / "clip.mp4").write_bytes((tmp_path / "frame.png").read_bytes())
    with pytest.raises(InvalidClip, match="still image"):
        await validate_clip(tmp_path / "clip.mp4")


async def test_truncated_download_is_refused(tmp_path):
    whole = make_clip(tmp_path / "whole.mp4", seconds=1).read_bytes()
    (tmp_path / "clip.mp4").write_bytes(whole[: len(whole) // 3])
    with pytest.raises(InvalidClip):
        await validate_clip(tmp_path / "clip.mp4")


async def test_overlong_clip_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("bot.media.clips.MAX_CLIP_SECONDS", 1.0)
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=36, seconds=2)
    with pytest.raises(InvalidClip, match="at most 1 s"):
        await validate_clip(clip)
    assert MAX_CLIP_SECONDS == 120.0


async def test_clip_without_audio_is_accepted_and_marked(tmp_path):
    info = await validate_clip(make_clip(tmp_path / "clip.mp4", audio=False))
    assert info.has_video and not info.has_audio
    assert info.audio_codec is None


async def test_portrait_clip_is_accepted(tmp_path):
    info = await validate_clip(make_clip(tmp_path / "clip.mp4", width=90, height=160, fps=30))
    assert info.is_portrait
    assert (info.width, info.height, info.frame_rate) == (90, 160, 30)
    assert info.frame_count == 30


async def test_last_frame_png_is_the_final_frame(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=1.5, pattern="testsrc")
    png = await last_frame_png(clip, tmp_path / "last.png")
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    got = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    diffs = [np.abs(got - f.astype(np.int16)).mean() for f in frames]
    # the closest decoded frame is the last one (testsrc draws a frame counter)
    assert int(np.argmin(diffs)) == len(frames) - 1
    assert diffs[-1] < 3


async def test_fit_to_size_gets_under_the_limit(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", width=640, height=360, seconds=2)
    limit = 120_000
    assert clip.stat().st_size > limit
    out = await fit_to_size(clip, tmp_path / "small.mp4", limit)
    info = probe(out)
    assert info.size_bytes <= limit
    assert info.has_audio and abs(info.duration - 2.0) < 0.1
    assert [p.name for p in tmp_path.iterdir() if ".part" in p.name] == []


async def test_fit_to_size_copies_a_clip_already_small_enough(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.5)
    out = await fit_to_size(clip, tmp_path / "same.mp4", 10_000_000)
    assert out.read_bytes() == clip.read_bytes()


async def test_portrait_clip_among_landscape_ones_assembles_to_the_frame(tmp_path):
    from bot.media.assembly import CutSlot, assemble

    sources = [
        make_clip(tmp_path / "land1.mp4", width=1280, height=720, fps=24, seconds=1),
        make_clip(tmp_path / "port.mp4", width=1080, height=1920, fps=30, seconds=0.5, audio=False),
        make_clip(tmp_path / "land2.mp4", width=1280, height=720, fps=24, seconds=1),
    ]
    for source in sources:
        await validate_clip(source)
    durations = [1.0, 1.25, 0.75]  # the portrait clip is shorter than its slot: held
    starts = [0.0, 1.0, 2.25]
    slots = [
        CutSlot(i, starts[i], durations[i], src, i, "anonymous", "p", "fake", {})
        for i, src in enumerate(sources)
    ]
    result = await assemble(
        slots, None, tmp_path / "out", title="mixed", width=320, height=180, fps=24,
        credits_seconds=1.0, preview_limit_bytes=2_000_000,
    )  # fmt: skip
    info = probe(result.master)
    assert (info.width, info.height) == (320, 180)
    assert info.pix_fmt == "yuv420p" and info.frame_rate == 24
    assert info.has_audio  # silence was added for the clip without audio
    assert info.frame_count == round((sum(durations) + 1.0) * 24)
    assert abs(info.duration - (sum(durations) + 1.0)) < 0.1
    # the portrait slot is pillarboxed: black at the sides, picture in the middle
    with av.open(str(result.master)) as container:
        frame = next(f for f in container.decode(video=0) if f.time >= 1.5)
        rgb = frame.to_ndarray(format="rgb24")
    assert rgb[:, :40].max() < 30
    assert rgb[:, 140:180].mean() > 30
