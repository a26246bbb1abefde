"""Tiny media files for tests, made with the real ffmpeg.

Import these from any test that needs a clip::

    from tests.media_helpers import make_clip
    clip = make_clip(tmp_path / "a.mp4", width=160, height=90, seconds=1)

Everything here is synchronous (``subprocess.run``) and fast: clips are small, short and
encoded with ``-preset ultrafast``. Keep it that way so the suite stays quick on 2 cores.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bot.media.ffmpeg import resolve_ffmpeg


def ffmpeg_exe() -> str:
    """The ffmpeg binary the tests use (same lookup as the bot)."""
    return resolve_ffmpeg()


def run(args: list[str]) -> None:
    """Run ffmpeg synchronously with ``args``; raise with stderr if it fails."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed:\n{proc.stderr}")


def make_clip(
    path: Path,
    *,
    width: int = 160,
    height: int = 90,
    fps: float = 24,
    seconds: float = 1.0,
    audio: bool = True,
    pattern: str = "testsrc2",
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write an H.264 MP4 test pattern of ``width``x``height`` at ``fps``.

    With ``audio`` a 440 Hz AAC tone of the same length is added. ``pattern`` is any lavfi
    video source taking ``s``/``r``/``d`` (``testsrc2``, ``smptebars``, ``rgbtestsrc``...).
    """
    args = ["-f", "lavfi", "-i", f"{pattern}=s={width}x{height}:r={fps}:d={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:d={seconds}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", pix_fmt]
    if audio:
        args += ["-c:a", "aac", "-b:a", "64k"]
    args += ["-t", str(seconds), str(path)]
    run(args)
    return path


def make_audio_only(path: Path, *, seconds: float = 1.0) -> Path:
    """Write an ``.mp4`` holding only an AAC tone: a "video" with no frames at all."""
    run(["-f", "lavfi", "-i", f"sine=d={seconds}", "-c:a", "aac", "-t", str(seconds), str(path)])
    return path


def make_not_a_video(path: Path) -> Path:
    """Write a text file under a video name, as a broken generator might."""
    path.write_text("this is not a video, it is a text file renamed to .mp4\n" * 20)
    return path


def make_empty_mp4(path: Path) -> Path:
    """Write an ``.mp4`` container with no frames and no streams (``-t 0``)."""
    run(
        ["-f", "lavfi", "-i", "testsrc2=s=160x90:r=24:d=1", "-c:v", "libx264", "-t", "0", str(path)]
    )
    return path


def ffmpeg_children() -> list[int]:
    """Pids of the live (non-zombie) ffmpeg processes started by this test process."""
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "ffmpeg" in child.name():
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue  # ended while we looked: not running
    return found
