"""The ffmpeg pitfalls measured with the wheel's ffmpeg 9 — each shown happening, and each
shown avoided by crowdcut's own code."""

from __future__ import annotations

import subprocess
import time

import ffmpeg as ffmpeg_python
import pytest

from bot.errors import MediaError
from bot.media.ffmpeg import run_ffmpeg
from bot.media.probe import probe
from tests.media_helpers import ffmpeg_exe, make_clip


def raw(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-hide_banner", "-y", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_xfade_can_leave_the_output_in_444_which_players_refuse(tmp_path):
    a = make_clip(tmp_path / "a.mp4", seconds=1, audio=False)
    b = make_clip(tmp_path / "b.mp4", seconds=1, audio=False, pattern="smptebars")
    out = tmp_path / "x.mp4"
    # the transition after an RGB step: nothing asks for 4:2:0 again
    graph = (
        "[0:v]format=gbrp[a];[1:v]format=gbrp[b];"
        "[a][b]xfade=transition=fade:duration=0.5:offset=0.5[v]"
    )
    proc = raw(
        [
            "-i",
            str(a),
            "-i",
            str(b),
            "-filter_complex",
            graph,
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert probe(out).pix_fmt != "yuv420p"  # x264 picked 4:4:4 silently


def test_filter_complex_script_is_gone_and_the_file_form_works(tmp_path):
    script = tmp_path / "graph.txt"
    script.write_text("[0:v]scale=80:46[v]")
    src = make_clip(tmp_path / "s.mp4", audio=False)
    old = raw(
        [
            "-i",
            str(src),
            "-filter_complex_script",
            str(script),
            "-map",
            "[v]",
            str(tmp_path / "old.mp4"),
        ]
    )
    assert old.returncode != 0
    new = raw(
        [
            "-i",
            str(src),
            "-/filter_complex",
            str(script),
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            str(tmp_path / "new.mp4"),
        ]
    )
    assert new.returncode == 0, new.stderr
    assert probe(tmp_path / "new.mp4").width == 80


def test_fs_truncates_the_video_instead_of_fitting_it(tmp_path):
    src = make_clip(tmp_path / "s.mp4", width=320, height=180, seconds=3, pattern="testsrc2")
    out = tmp_path / "fs.mp4"
    proc = raw(
        [
            "-i",
            str(src),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "10",
            "-fs",
            "20000",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    # the end of the video is simply gone (the audio, interleaved, may run a little longer)
    assert probe(out).video_duration < 2.5


def chatty(out):
    """A small encode whose stderr (-debug_ts, debug log) is far over a 64 KiB pipe."""
    return (
        ffmpeg_python.input("testsrc2=d=4:s=160x90", f="lavfi")
        .output(str(out), vcodec="libx264", preset="ultrafast")
        .global_args("-debug_ts", "-loglevel", "debug", "-y")
    )


def test_ffmpeg_python_run_async_quiet_hangs_once_stderr_fills_its_pipe(tmp_path):
    proc = chatty(tmp_path / "o.mp4").run_async(cmd=ffmpeg_exe(), quiet=True)
    try:
        deadline = time.monotonic() + 8
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, "ffmpeg finished: the pipe did not fill this time"
    finally:
        proc.kill()
        proc.communicate()


async def test_our_runner_drains_the_same_command_and_finishes(tmp_path):
    await run_ffmpeg(chatty(tmp_path / "o.mp4").get_args(), timeout=60)
    assert probe(tmp_path / "o.mp4").duration == pytest.approx(4, abs=0.2)


async def test_our_runner_reports_the_missing_option_with_ffmpegs_own_words(tmp_path):
    with pytest.raises(MediaError) as e:
        await run_ffmpeg(
            [
                "-f",
                "lavfi",
                "-i",
                "testsrc2=d=0.1",
                "-filter_complex_script",
                "nope.txt",
                str(tmp_path / "x.mp4"),
            ]
        )
    assert "filter_complex_script" in str(e.value)
