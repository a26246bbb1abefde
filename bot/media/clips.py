"""Checking and reshaping single clips a generator returned.

:func:`validate_clip` is the gate every generated file passes before it is stored: what it
refuses raises :class:`InvalidClip` with a reason safe to show the member. Clips without
audio and portrait clips are accepted (assembly adds silence and pads to the frame).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from bot.errors import InvalidClip, MediaError
from bot.media.ffmpeg import part_path, publish, run_ffmpeg
from bot.media.probe import ProbeResult, probe, probe_async

log = logging.getLogger(__name__)

#: longest clip accepted from a generator, in seconds
MAX_CLIP_SECONDS = 120.0
#: largest frame side accepted (8K); anything bigger is a broken or hostile file
MAX_SIDE = 8192
#: fraction of an upload limit :func:`fit_to_size` aims at, leaving room for the muxer
FIT_HEADROOM = 0.92


def check_clip(path: Path) -> ProbeResult:
    """Check that ``path`` is a usable video clip and describe it.

    Refuses, with :class:`InvalidClip`: a file that is not media, one without a video
    stream (audio only, or an empty container), a still image, a video whose frames do
    not decode, a zero duration, a duration over :data:`MAX_CLIP_SECONDS`, and absurd
    frame sizes. A clip without audio is accepted (``has_audio`` is False); so is a
    portrait clip.

    Blocks (it opens and decodes the file): call :func:`validate_clip` from async code,
    or run it in a thread together with what follows it.
    """
    try:
        info = probe(path, decode=True)
    except InvalidClip as exc:
        raise InvalidClip(f"The generated clip is unusable. {exc.message}") from exc
    if not info.has_video:
        what = "only audio" if info.has_audio else "no video or audio at all"
        raise InvalidClip(f"The generated file is not a video: it holds {what}.")
    if info.format_name == "image2" or info.format_name.endswith("_pipe"):
        raise InvalidClip("The generated file is a still image, not a video.")
    if not info.width or not info.height:
        raise InvalidClip("The generated video has no picture size.")
    if max(info.width, info.height) > MAX_SIDE:
        raise InvalidClip(
            f"The generated video is {info.width}x{info.height}, larger than {MAX_SIDE} pixels."
        )
    if info.frame_count == 0:
        raise InvalidClip("The generated video has no frames.")
    duration = info.video_duration or info.duration
    if duration <= 0:
        raise InvalidClip("The generated video has zero duration.")
    if duration > MAX_CLIP_SECONDS:
        raise InvalidClip(
            f"The generated video lasts {duration:.0f} s; clips may last at most "
            f"{MAX_CLIP_SECONDS:.0f} s."
        )
    if not info.decodes:
        raise InvalidClip("The generated video has no frames that can be decoded.")
    log.debug(
        "clip %s ok: %dx%d %s fps %.2f s audio=%s",
        path, info.width, info.height, info.frame_rate, duration, info.has_audio,
    )  # fmt: skip
    return info


async def validate_clip(path: Path) -> ProbeResult:
    """:func:`check_clip` in a worker thread."""
    return await asyncio.to_thread(check_clip, path)


async def last_frame_png(path: Path, dest: Path, *, binary: str | None = None) -> Path:
    """Write the last frame of the video ``path`` to ``dest`` as a PNG; return ``dest``.

    Used to extend a clip: the last frame becomes the next generation's start image.
    """
    dest = Path(dest)
    tmp = part_path(dest, ".png")
    # -sseof seeks near the end so only the last second is decoded; -update 1 keeps
    # overwriting the one image, leaving the final frame
    args = [
        "-sseof", "-1", "-i", str(path), "-map", "0:v:0", "-an",
        "-update", "1", "-c:v", "png", "-f", "image2", str(tmp),
    ]  # fmt: skip
    try:
        await run_ffmpeg(args, binary=binary)
        if not tmp.exists():
            raise MediaError(f"ffmpeg wrote no frame for {Path(path).name}")
        await publish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _fit_height(video_kbps: float) -> int:
    """The shorter frame side a bitrate can carry without turning to mush."""
    for kbps, side in ((2500, 1080), (1200, 720), (600, 480), (300, 360)):
        if video_kbps >= kbps:
            return side
    return 240


async def fit_to_size(
    path: Path,
    dest: Path,
    limit_bytes: int,
    *,
    binary: str | None = None,
    attempts: int = 4,
) -> Path:
    """Write ``path`` to ``dest`` re-encoded to at most ``limit_bytes``; return ``dest``.

    A clip already under the limit is copied unchanged. Otherwise the bitrate is computed
    from the duration and the limit (with ~8% headroom), the picture is scaled down when
    that bitrate is too low for its size, and the result is measured: if it is still over,
    it is encoded again at a proportionally lower bitrate. Raises :class:`MediaError` when
    it cannot fit.
    """
    dest = Path(dest)
    info = await probe_async(path)
    if info.size_bytes <= limit_bytes:
        tmp = part_path(dest)
        try:
            await asyncio.to_thread(shutil.copyfile, path, tmp)
            await publish(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest
    if not info.has_video or not info.duration:
        raise MediaError(f"cannot fit {Path(path).name}: not a video with a duration")
    duration = info.duration
    total_kbps = limit_bytes * 8 * FIT_HEADROOM / 1000 / duration
    audio_kbps = 0 if not info.has_audio else (64 if total_kbps > 300 else 32)
    video_kbps = total_kbps - audio_kbps
    if video_kbps < 40:
        raise MediaError(
            f"cannot fit {duration:.0f} s of video into {limit_bytes} bytes "
            f"({total_kbps:.0f} kbit/s available)"
        )
    w, h = info.width or 2, info.height or 2
    short = min(w, h)
    target = min(short, _fit_height(video_kbps))
    scale = target / short
    out_w, out_h = _even(w * scale), _even(h * scale)
    tmp = part_path(dest, ".mp4")
    try:
        for attempt in range(1, attempts + 1):
            kbps = int(video_kbps)
            args = [
                "-i", str(path), "-map", "0:v:0",
                "-vf", f"scale={out_w}:{out_h},setsar=1,format=yuv420p",
                "-c:v", "libx264", "-preset", "veryfast",
                "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{2 * kbps}k",
            ]  # fmt: skip
            if audio_kbps:
                args += ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{audio_kbps}k"]
            args += ["-movflags", "+faststart", "-f", "mp4", str(tmp)]
            await run_ffmpeg(args, binary=binary, duration=duration)
            size = tmp.stat().st_size
            log.debug(
                "fit attempt %d: %d kbit/s -> %d bytes (limit %d)", attempt, kbps, size, limit_bytes
            )
            if size <= limit_bytes:
                await publish(tmp, dest)
                return dest
            video_kbps = video_kbps * limit_bytes / size * 0.9
            if video_kbps < 40:
                break
    finally:
        tmp.unlink(missing_ok=True)
    raise MediaError(f"could not fit {Path(path).name} into {limit_bytes} bytes")
