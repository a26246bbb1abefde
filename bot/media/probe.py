"""Reading what is inside a media file, with PyAV.

PyAV links the ffmpeg libraries directly, so probing needs no ``ffprobe`` binary (the
imageio-ffmpeg wheel ships none). PyAV calls block: on the event loop use
:func:`probe_async`, which runs :func:`probe` in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from bot.errors import InvalidClip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe` found in one file. Video/audio fields are ``None`` when absent."""

    path: Path
    size_bytes: int
    format_name: str
    duration: float
    has_video: bool
    has_audio: bool
    video_codec: str | None = None
    profile: str | None = None
    pix_fmt: str | None = None
    width: int | None = None
    height: int | None = None
    #: pixel shape; an unset SAR (0/1 in ffmpeg) means square and is reported as 1
    sample_aspect_ratio: Fraction | None = None
    frame_rate: Fraction | None = None
    time_base: Fraction | None = None
    #: number of video frames when the container records it (MP4 does), else ``None``
    frame_count: int | None = None
    video_duration: float | None = None
    #: YUV matrix the file is tagged with ("bt709", "smpte170m"...), ``None`` when untagged
    color_space: str | None = None
    #: "tv" (limited) or "pc" (full), ``None`` when untagged
    color_range: str | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    #: whether the first video frame decoded; ``None`` when not tried (see :func:`probe`)
    decodes: bool | None = None

    @property
    def is_portrait(self) -> bool:
        """True for a video taller than it is wide."""
        return bool(self.width and self.height and self.height > self.width)


#: AVColorSpace values to the names ffmpeg prints (2 is "unspecified")
_COLOR_SPACES = {1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc"}
_COLOR_RANGES = {1: "tv", 2: "pc"}


def _fraction(value: object) -> Fraction | None:
    if value is None:
        return None
    try:
        frac = Fraction(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return frac if frac > 0 else None


def probe(path: Path | str, *, decode: bool = False) -> ProbeResult:
    """Open ``path`` with PyAV and describe its first video and audio streams; with
    ``decode``, also try to decode the first video frame (``decodes``), in the same open.

    Blocks: call :func:`probe_async` from async code. Raises :class:`InvalidClip` with a
    reason safe to show a member when the file is missing, empty or not media at all.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidClip("The media file is missing.") from None
    if size == 0:
        raise InvalidClip("The media file is empty.")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        log.debug("av.open(%s) failed: %s", path, exc)
        raise InvalidClip("The file is not media: it could not be read as video or audio.") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidClip("The file is not media: it could not be read as video or audio.") from exc
    with container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = container.duration / 1_000_000 if container.duration else 0.0
        fields: dict[str, object] = {}
        if video is not None:
            cc = video.codec_context
            tb = _fraction(video.time_base)
            vdur = float(video.duration * tb) if video.duration and tb else None
            fields.update(
                video_codec=cc.name,
                profile=cc.profile or None,
                pix_fmt=cc.pix_fmt,
                width=cc.width or None,
                height=cc.height or None,
                sample_aspect_ratio=_fraction(video.sample_aspect_ratio) or Fraction(1),
                frame_rate=(
                    _fraction(video.average_rate)
                    or _fraction(video.guessed_rate)
                    or _fraction(video.base_rate)
                ),
                time_base=tb,
                frame_count=video.frames or None,
                video_duration=vdur,
                color_space=_COLOR_SPACES.get(int(getattr(cc, "colorspace", 2) or 2)),
                color_range=_COLOR_RANGES.get(int(getattr(cc, "color_range", 0) or 0)),
            )
            if not duration and vdur:
                duration = vdur
        if audio is not None:
            acc = audio.codec_context
            fields.update(
                audio_codec=acc.name,
                sample_rate=acc.sample_rate or None,
                channels=acc.layout.nb_channels if acc.layout else None,
            )
            if not duration and audio.duration and audio.time_base:
                duration = float(audio.duration * audio.time_base)
        if decode and video is not None:
            fields["decodes"] = _first_frame_decodes(container, video, path)
        return ProbeResult(
            path=path,
            size_bytes=size,
            format_name=container.format.name,
            duration=float(duration),
            has_video=video is not None,
            has_audio=audio is not None,
            **fields,  # type: ignore[arg-type]
        )


def _first_frame_decodes(container: Any, stream: Any, path: Path) -> bool:
    try:
        for _frame in container.decode(stream):
            return True
    except (av.FFmpegError, IndexError, ValueError) as exc:
        log.debug("decoding the first frame of %s failed: %s", path, exc)
    return False


async def probe_async(path: Path | str) -> ProbeResult:
    """:func:`probe` in a worker thread, so the event loop keeps running."""
    return await asyncio.to_thread(probe, path)


#: the properties two files must share for ``-f concat -c copy`` to give a valid stream
COPY_KEYS: tuple[str, ...] = (
    "video_codec",
    "profile",
    "pix_fmt",
    "width",
    "height",
    "sample_aspect_ratio",
    "frame_rate",
    "time_base",
)


def copy_mismatches(a: ProbeResult, b: ProbeResult) -> list[str]:
    """Name every property in :data:`COPY_KEYS` (and audio layout) where ``a`` and ``b`` differ."""
    diffs = [
        f"{key}: {getattr(a, key)} != {getattr(b, key)}"
        for key in COPY_KEYS
        if getattr(a, key) != getattr(b, key)
    ]
    if a.has_audio != b.has_audio:
        diffs.append(f"has_audio: {a.has_audio} != {b.has_audio}")
    elif a.has_audio and (a.audio_codec, a.sample_rate, a.channels) != (
        b.audio_codec,
        b.sample_rate,
        b.channels,
    ):
        diffs.append(
            f"audio: {a.audio_codec}/{a.sample_rate}/{a.channels} != "
            f"{b.audio_codec}/{b.sample_rate}/{b.channels}"
        )
    return diffs


def stream_copy_compatible(a: ProbeResult, b: ProbeResult) -> bool:
    """True only when ``a`` and ``b`` can be joined by stream copy.

    Codec, profile, pixel format, size, sample aspect ratio, frame rate and time base must
    all match (and both must have video); the concat demuxer copies packets and keeps the
    first file's parameters, so any difference gives a broken or wrongly timed result.
    Audio, when either has some, must match in codec, rate and channels too.
    """
    if not (a.has_video and b.has_video):
        return False
    return not copy_mismatches(a, b)
