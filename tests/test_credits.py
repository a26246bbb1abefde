"""Credits: the title card, the closing roll, the MP4's tags, the manifest and the
storyboard name everyone who made the video, and what it came from."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from PIL import Image

from bot.media.assembly import CutOptions, CutSlot, SegmentRenderer, assemble_master
from bot.media.credits import (
    Credits,
    end_card_lines,
    render_credits_roll,
    render_title_card,
    roll_font_size,
    roll_lines,
    roll_seconds,
)
from bot.media.storyboard import MARK_COLOURS, cell_detail, cell_label, slot_marks, storyboard
from tests.media_helpers import make_clip

CREDITS = Credits(song_credit="“Night Drive” by Test Band (CC BY 4.0)", moderators=("mona", "max"))


def slot(i: int, clip: Path = Path("x.mp4"), **extra) -> CutSlot:
    values = {"index": i, "start": i * 4.0, "duration": 4.0, "clip_path": clip,
              "clip_id": 10 + i, "author": f"member{i}", "prompt": "p", "backend": "fal",
              "model": "kling-2.1"} | extra  # fmt: skip
    return CutSlot(**values)


def test_the_roll_names_every_slot_its_maker_lineage_song_and_moderators():
    slots = [
        slot(0),
        slot(1, author="anonymous", parent_clip_id=10, lineage="extend"),
        slot(2, parent_clip_id=11, lineage="chain", backend="local", model="wan2.2"),
    ]
    lines = roll_lines("Summer Jam", slots, CREDITS)
    text = "\n".join(" | ".join(line) for line in lines)
    assert lines[0][1] == "Summer Jam"
    assert ("music", CREDITS.song_credit, "") in lines
    assert ("#1  0:00", "member0", "fal · kling-2.1") in lines
    assert ("#2  0:04", "anonymous", "fal · kling-2.1 · extends clip #10") in lines
    assert ("#3  0:08", "member2", "local · wan2.2 · continues clip #11") in lines
    assert text.index("#1") < text.index("#2") < text.index("#3")
    # who approved is on the end card: approving renders that short still, not the roll
    end = end_card_lines(CREDITS)
    assert ("", "approved by", "") in end and ("", "mona, max", "") in end
    assert ("", "made with crowdcut", "") in end_card_lines(Credits())
    assert "approved by" not in text


def test_the_roll_is_tall_enough_to_read_on_a_phone(tmp_path):
    slots = [slot(i) for i in range(55)]
    lines = roll_lines("Summer Jam", slots, CREDITS)
    png, height = render_credits_roll(tmp_path / "roll.png", lines, 1280, 720)
    assert roll_font_size(720) >= 720 // 20  # a line is 1/20 of the frame high
    assert height > 55 * roll_font_size(720)  # so 55 slots scroll
    with Image.open(png) as image:
        assert image.size == (1280, height)
    seconds = roll_seconds(len(lines), 1280, 720)
    pixels_per_second = (height - 720) / (seconds - 3.0)
    assert pixels_per_second <= 720 / 5 + 1  # a screen every 5 s at most
    # a few slots fit on one still page
    short = roll_lines("t", [slot(0)], CREDITS)
    assert render_credits_roll(tmp_path / "s.png", short, 1280, 720)[1] == 720
    assert roll_seconds(len(short), 1280, 720) == 4.0


def test_the_title_card_is_a_band_over_a_transparent_frame(tmp_path):
    card = render_title_card(tmp_path / "t.png", "Summer Jam", CREDITS.song_credit, 640, 360)
    with Image.open(card) as image:
        assert image.mode == "RGBA" and image.size == (640, 360)
        assert image.getpixel((5, 5))[3] == 0  # the picture shows through
        assert image.getpixel((320, 180))[3] > 150  # the band holding the title does not


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    import asyncio

    tmp = tmp_path_factory.mktemp("credits")
    clips = [make_clip(tmp / f"{i}.mp4", width=160, height=90, seconds=1) for i in range(2)]
    slots = [
        CutSlot(index=0, start=0, duration=1, clip_path=clips[0], clip_id=5, author="alice",
                prompt="a", backend="fal", model="kling", pinned=True),
        CutSlot(index=1, start=1, duration=1, clip_path=clips[1], clip_id=6,
                author="anonymous", prompt="b", backend="local", model="wan",
                parent_clip_id=5, lineage="extend"),
    ]  # fmt: skip
    renderer = SegmentRenderer(tmp / "cache")
    options = CutOptions(width=160, height=90, fps=24)
    return asyncio.run(
        assemble_master(
            slots,
            None,
            tmp / "out",
            renderer,
            options=options,
            title="Summer Jam",
            credits=CREDITS,
            credits_seconds=1,
        )  # fmt: skip
    )


def test_the_mp4_carries_title_artist_and_comment(master):
    with av.open(str(master.master)) as container:
        tags = container.metadata
    assert tags["title"] == "Summer Jam"
    assert tags["artist"] == "alice"  # the named authors; "anonymous" is nobody's name
    assert "Night Drive" in tags["comment"] and master.identity[:16] in tags["comment"]


def test_the_manifest_lists_the_credits_machine_readably(master):
    manifest = json.loads(master.manifest.read_text())
    assert manifest["identity"] == master.identity
    credits = manifest["credits"]
    assert credits["song"] == CREDITS.song_credit
    assert credits["approved_by"] == ["mona", "max"]
    assert credits["slots"] == [
        {"slot": 1, "start": 0.0, "end": 1.0, "clip_id": 5, "author": "alice",
         "generator": "fal", "model": "kling", "parent_clip_id": None, "lineage": None},
        {"slot": 2, "start": 1.0, "end": 2.0, "clip_id": 6, "author": "anonymous",
         "generator": "local", "model": "wan", "parent_clip_id": 5, "lineage": "extend"},
    ]  # fmt: skip
    assert [s["pinned"] for s in manifest["slots"]] == [True, False]
    assert manifest["transition"] == {"type": "cut", "frames": 0, "seconds": 0.0}


# ---------------------------------------------------------------------- storyboard


def test_storyboard_labels_say_time_author_score_and_marks():
    s = slot(2, votes={"up": 7, "down": 2, "score": 5}, start=7.8, duration=5.2, pinned=True,
             reused=True, continuity_broken=True, post_deleted=True)  # fmt: skip
    assert slot_marks(s) == ["POST DELETED", "CONTINUITY BROKEN", "PINNED", "REUSED"]
    assert cell_label(s).startswith("#3 POST DELETED · member2 (reused)")
    assert "continuity broken" in cell_label(s) and "pinned" in cell_label(s)
    assert cell_detail(s) == "0:07.8-0:13.0 · score +5 (7 up, 2 down)"
    assert slot_marks(slot(0)) == [] and cell_label(slot(0)) == "#1 member0"


async def test_storyboard_draws_a_badge_for_each_mark(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", width=160, height=90, seconds=1, audio=False)
    slots = [slot(0, clip), slot(1, clip, pinned=True), slot(2, clip, continuity_broken=True)]
    board = await storyboard(slots, tmp_path / "b.png", columns=3)
    with Image.open(board) as image:
        rgb = image.convert("RGB")
        badge = [rgb.getpixel((6 + col * (320 + 6) + 6, 6 + 6)) for col in range(3)]
    assert badge[1] == MARK_COLOURS["PINNED"]
    assert badge[2] == MARK_COLOURS["CONTINUITY BROKEN"]
    assert badge[0] not in MARK_COLOURS.values()
