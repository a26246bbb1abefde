"""The ffmpeg runner: progress, errors with stderr, cancellation, chatty stderr."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import ffmpeg
import psutil
import pytest

from bot.errors import ConfigError, MediaError
from bot.media.ffmpeg import (
    ffmpeg_version,
    filter_script_args,
    has_encoders,
    resolve_ffmpeg,
    run_ffmpeg,
)
from tests.media_helpers import ffmpeg_children


def test_resolve_finds_a_binary_without_a_setting():
    assert Path(resolve_ffmpeg()).is_file()


def test_resolve_refuses_a_setting_that_is_not_executable(tmp_path):
    not_exe = tmp_path / "ffmpeg"
    not_exe.write_text("#!/bin/sh\n")
    not_exe.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(ConfigError, match="FFMPEG_BINARY"):
        resolve_ffmpeg(str(not_exe))
    with pytest.raises(ConfigError, match="FFMPEG_BINARY"):
        resolve_ffmpeg(str(tmp_path / "missing"))


def test_resolve_uses_the_setting_when_it_is_executable():
    real = resolve_ffmpeg()
    assert resolve_ffmpeg(real) == real


def test_doctor_helpers_report_version_and_encoders():
    binary = resolve_ffmpeg()
    assert ffmpeg_version(binary)[0].isalnum()
    found = has_encoders(binary, ["libx264", "aac", "no_such_encoder"])
    assert found == {"libx264": True, "aac": True, "no_such_encoder": False}


async def test_progress_reaches_one(tmp_path):
    out = tmp_path / "out.mp4"
    args = (
        ffmpeg.input("testsrc2=s=160x90:r=24:d=2", f="lavfi")
        .output(str(out), vcodec="libx264", preset="ultrafast")
        .get_args()
    )
    seen: list[float] = []
    await run_ffmpeg(args, duration=2.0, progress=seen.append)
    assert out.stat().st_size > 0
    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    assert all(0.0 <= f <= 1.0 for f in seen)


async def test_failure_raises_media_error_with_stderr_tail(tmp_path):
    with pytest.raises(MediaError) as info:
        await run_ffmpeg(["-i", str(tmp_path / "does-not-exist.mp4"), str(tmp_path / "o.mp4")])
    assert "ffmpeg failed (exit" in str(info.value)
    assert "does-not-exist.mp4" in info.value.stderr_tail
    assert "No such file or directory" in str(info.value)


async def test_cancellation_kills_the_process(tmp_path):
    # an endless source: only a kill ends it
    args = ["-re", "-f", "lavfi", "-i", "testsrc2=s=160x90:r=24", "-f", "null", "-"]
    task = asyncio.create_task(run_ffmpeg(args))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if ffmpeg_children():
            break
    children = ffmpeg_children()
    assert children, "ffmpeg did not start"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for pid in children:
        assert not psutil.pid_exists(pid)  # killed and reaped, not even a zombie
    assert ffmpeg_children() == []


async def test_timeout_stops_ffmpeg_with_media_error():
    args = ["-re", "-f", "lavfi", "-i", "testsrc2=s=160x90:r=24", "-f", "null", "-"]
    with pytest.raises(MediaError, match="timed out"):
        await run_ffmpeg(args, timeout=0.5)
    assert ffmpeg_children() == []


async def test_lots_of_stderr_does_not_hang(tmp_path):
    # -loglevel debug writes far more than a pipe buffer (64 KiB) to stderr
    args = [
        "-loglevel", "debug",
        "-f", "lavfi", "-i", "testsrc2=s=160x90:r=24:d=2",
        "-c:v", "libx264", "-preset", "ultrafast", str(tmp_path / "o.mp4"),
    ]  # fmt: skip
    await asyncio.wait_for(run_ffmpeg(args), timeout=60)
    assert (tmp_path / "o.mp4").stat().st_size > 0


async def test_filter_graph_can_come_from_a_file(tmp_path):
    graph = "[0:v]scale=80:46,setsar=1[v]"
    args = [
        "-f", "lavfi", "-i", "testsrc2=s=160x90:r=24:d=0.5",
        *filter_script_args(graph, tmp_path / "graph.txt"),
        "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", str(tmp_path / "o.mp4"),
    ]  # fmt: skip
    await run_ffmpeg(args)
    from bot.media.probe import probe

    result = probe(tmp_path / "o.mp4")
    assert (result.width, result.height) == (80, 46)


async def test_cancelling_twice_still_reaps_the_process():
    args = ["-re", "-f", "lavfi", "-i", "testsrc2=s=160x90:r=24", "-f", "null", "-"]
    task = asyncio.create_task(run_ffmpeg(args))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if ffmpeg_children():
            break
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()  # e.g. a gather cancelling it, then its owner
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ffmpeg_children() == []


async def test_an_ffmpeg_that_writes_nothing_is_stopped_and_run_again(tmp_path):
    # ffmpeg opening a FIFO nobody writes to blocks without a word, as a deadlocked one does
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    args = ["-f", "mpegts", "-i", str(fifo), "-f", "null", "-"]
    with pytest.raises(MediaError, match="wrote nothing for 0.5 s, 2 times"):
        await run_ffmpeg(args, stall=0.5)
    assert ffmpeg_children() == []


async def test_a_stuck_first_run_is_retried_and_the_second_makes_the_file(tmp_path):
    # the first run hangs silently (as ffmpeg 9 now and then does at the end of a render);
    # the second is the real ffmpeg
    marker = tmp_path / "ran-once"
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ ! -e "{marker}" ]; then touch "{marker}"; exec sleep 60; fi\n'
        f'exec "{resolve_ffmpeg()}" "$@"\n'
    )
    wrapper.chmod(0o755)
    out = tmp_path / "out.mp4"
    args = ["-f", "lavfi", "-i", "testsrc2=s=160x90:r=24:d=1", "-c:v", "libx264", str(out)]
    seen: list[float] = []
    await run_ffmpeg(args, binary=str(wrapper), duration=1.0, progress=seen.append, stall=0.5)
    assert marker.exists() and out.stat().st_size > 0
    assert seen[-1] == 1.0
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "sleep"]
