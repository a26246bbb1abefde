"""Transitions and fitting: every clip fills its slot exactly and every transition is
centred on the slot boundary, so the cut lands on the beat."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from bot.media.assembly import CutSlot, assemble
from bot.media.probe import probe
from bot.media.segments import ClipUse, CutOptions, fitted_window, plan_segments
from tests.media_helpers import make_clip, run

W, H, FPS = 160, 90, 24
RED, BLUE = (255, 0, 0), (0, 0, 255)


def colour_clip(path: Path, colour: str, seconds: float = 2.0, fps: int = 24) -> Path:
    run(["-f", "lavfi", "-i", f"color=c={colour}:s={W}x{H}:r={fps}:d={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)])  # fmt: skip
    return path


def frames_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]


def mean(frame: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round(v)) for v in frame.reshape(-1, 3).mean(axis=0))  # type: ignore[return-value]


def near(colour: tuple[int, int, int], want: tuple[int, int, int], tol: int = 24) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(colour, want, strict=True))


def slots_of(clips: list[Path], seconds: float = 1.0, **extra) -> list[CutSlot]:
    return [
        CutSlot(index=i, start=i * seconds, duration=seconds, clip_path=c, clip_id=i + 1,
                author=f"m{i}", prompt="", backend="fake", **extra)
        for i, c in enumerate(clips)
    ]  # fmt: skip


async def cut(tmp_path: Path, clips: list[Path], **kwargs) -> list[np.ndarray]:
    options = {"transition": "cut", "transition_seconds": 0.0} | kwargs
    slots = options.pop("slots", None) or slots_of(clips)
    result = await assemble(
        slots, None, tmp_path / "out", title="", width=W, height=H, fps=FPS,
        credits_seconds=0, preview_limit_bytes=10_000_000, **options,
    )  # fmt: skip
    assert probe(result.master).frame_count == len(slots) * FPS
    return frames_rgb(result.master)


@pytest.fixture
def red_blue(tmp_path):
    return [colour_clip(tmp_path / "red.mp4", "red"), colour_clip(tmp_path / "blue.mp4", "blue")]


async def test_a_hard_cut_lands_exactly_on_the_boundary(tmp_path, red_blue):
    frames = await cut(tmp_path, red_blue)
    assert near(mean(frames[FPS - 1]), RED) and near(mean(frames[FPS]), BLUE)


async def test_a_crossfade_is_centred_on_the_boundary(tmp_path, red_blue):
    frames = await cut(tmp_path, red_blue, transition="crossfade", transition_seconds=1 / 3)
    half = 4  # 8 frames in all
    assert near(mean(frames[FPS - half - 1]), RED)  # before it starts: the outgoing clip
    assert near(mean(frames[FPS + half]), BLUE)  # once it ends: the incoming one
    r0, _, b0 = mean(frames[FPS - 1])
    r1, _, b1 = mean(frames[FPS])
    # the two frames either side of the boundary are the middle of the blend
    assert 80 < r0 < 200 and 60 < b0 < 180 and 60 < r1 < 180 and 80 < b1 < 200
    reds = [mean(f)[0] for f in frames[FPS - half - 1 : FPS + half + 1]]
    assert reds == sorted(reds, reverse=True)  # one steady blend, red giving way to blue


async def test_a_dip_to_black_is_darkest_on_the_boundary(tmp_path, red_blue):
    frames = await cut(tmp_path, red_blue, transition="dip", transition_seconds=0.5)
    brightness = [sum(mean(f)) for f in frames]
    darkest = min(range(len(frames)), key=brightness.__getitem__)
    assert abs(darkest - FPS) <= 1
    assert brightness[darkest] < 60
    assert near(mean(frames[FPS - 7]), RED) and near(mean(frames[FPS + 6]), BLUE)


async def test_a_zoom_through_pushes_into_the_outgoing_clip(tmp_path):
    a = make_clip(tmp_path / "a.mp4", width=W, height=H, seconds=2, audio=False)
    b = colour_clip(tmp_path / "blue.mp4", "blue")
    plain = await cut(tmp_path / "plain", [a, b])
    zoom = await cut(tmp_path / "zoom", [a, b], transition="zoom", transition_seconds=0.5)
    assert len(zoom) == len(plain) == 2 * FPS
    # well before the transition both show the same picture; during it the zoom differs
    assert np.abs(zoom[5] - plain[5]).mean() < 4
    assert np.abs(zoom[FPS - 3] - plain[FPS - 3]).mean() > 10
    assert near(mean(zoom[FPS + 6]), BLUE)


async def test_a_short_clip_holds_its_last_frame_to_fill_the_slot(tmp_path):
    short = make_clip(tmp_path / "s.mp4", width=W, height=H, seconds=0.5, audio=False)
    frames = await cut(tmp_path, [short], fit="hold")
    assert len(frames) == FPS  # no gap
    assert np.abs(frames[-1] - frames[13]).max() < 12  # held since the clip ran out
    assert np.abs(frames[6] - frames[1]).mean() > 1  # but moving while it lasted


async def test_a_short_clip_is_slowed_down_to_fill_the_slot(tmp_path):
    short = make_clip(tmp_path / "s.mp4", width=W, height=H, seconds=0.5, audio=False)
    frames = await cut(tmp_path, [short], fit="slow")
    assert len(frames) == FPS
    assert np.abs(frames[-1] - frames[-5]).mean() > 1  # still moving at the end of the slot


async def test_a_long_clip_is_trimmed_from_its_in_point(tmp_path):
    colour_clip(tmp_path / "r.mp4", "red", seconds=1)
    colour_clip(tmp_path / "b.mp4", "blue", seconds=2)
    both = tmp_path / "rb.mp4"
    (tmp_path / "l.txt").write_text("file 'r.mp4'\nfile 'b.mp4'\n")
    run(["-f", "concat", "-safe", "0", "-i", str(tmp_path / "l.txt"), "-c", "copy", str(both)])
    from_start = await cut(tmp_path / "a", [both])
    assert near(mean(from_start[0]), RED) and len(from_start) == FPS
    from_in_point = await cut(tmp_path / "b", [both], slots=slots_of([both], in_point=1.0))
    assert near(mean(from_in_point[0]), BLUE) and near(mean(from_in_point[-1]), BLUE)


def test_the_plan_covers_every_frame_and_keeps_boundaries():
    frames = [24, 24, 10, 24]
    plan = plan_segments(frames, [(Path(f"{i}.mp4"), str(i), 0.0) for i in range(4)], 12)
    assert sum(s.frames for s in plan) == sum(frames)
    assert [s.start for s in plan] == [0, 24 - 6, 48 - 4, 58 - 4]
    # a short slot shortens the transitions at its edges so it still shows its own clip
    assert [s.blend for s in plan] == [0, 12, 8, 8]
    assert all(s.frames - s.blend >= 1 for s in plan)
    # each clip is fitted to what is seen of it: its slot plus half of each transition
    assert [s.clip.length for s in plan] == [30, 34, 18, 28]
    assert plan[1].prev == plan[0].clip and plan[0].prev is None


def test_a_hard_cut_needs_no_previous_clip():
    plan = plan_segments([24, 24], [(Path("a"), "a", 0.0), (Path("b"), "b", 0.0)], 0)
    assert [s.blend for s in plan] == [0, 0] and plan[1].prev is None


def test_the_fitted_window_seeks_near_what_it_needs():
    use = ClipUse(Path("x"), "x", 0.0, 96)  # 4 s at 24 fps
    tail = fitted_window(4.5, 30, use, 84, 12, 24, "hold")
    assert tail.seek == pytest.approx(3.5) and tail.skip == 0 and tail.speed == 1
    short = fitted_window(2.0, 30, use, 84, 12, 24, "hold")
    assert short.seek == pytest.approx(1.0) and short.skip == 84 - 24  # held frames
    slow = fitted_window(2.0, 30, use, 84, 12, 24, "slow")
    assert slow.speed == pytest.approx(2.0) and slow.seek == pytest.approx(1.0)
    assert slow.skip == 36  # 1.5 s of slowed clip past the seek


def test_transition_lengths_are_whole_even_frames():
    def frames(kind: str, seconds: float) -> int:
        return CutOptions(fps=24, transition=kind, transition_seconds=seconds).transition_frames

    assert (frames("crossfade", 0.5), frames("crossfade", 0.3), frames("cut", 0.5)) == (12, 8, 0)
    with pytest.raises(ValueError):
        CutOptions(transition="wipe")
    with pytest.raises(ValueError):
        CutOptions(fit="stretch")
