"""Assembly v1: cut the winning clips to the song.

The pipeline, each step its own small ffmpeg process so memory stays flat however many
slots there are::

    slot clips ─ normalize, 2 at a time ─▶ parts: WxH, SAR 1, fps, yuv420p, H.264 (+AAC)
    credits card (Pillow) ─ still to clip ─▶ one more part, same parameters
    parts ─ concat demuxer, stream copy ─┬─▶ master.mp4 (moov first) ─ two-pass ─▶ preview.mp4
    song ─ trim, pad, fade, AAC once ────┘   (song encoded while the parts are)    manifest.json

Normalizing first is what makes the stream-copy join valid: the concat demuxer copies
packets and keeps the first file's codec parameters, so clips that differ in size, frame
rate, pixel format or time base give a broken file (``tests/test_assembly.py`` shows it).
:func:`bot.media.probe.stream_copy_compatible` is checked on every normalized part before
joining.

When a song is given, the clips' own audio is dropped and the song is the soundtrack. With
no song the clips' audio is kept, and clips without audio get silence, so the joined file
has one continuous audio track.

Slot lengths are rounded to whole frames on cumulative boundaries (``round(t * fps)``) so
the cut never drifts from the song however many slots there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import InvalidClip, MediaError
from bot.media.credits import render_credits_card
from bot.media.ffmpeg import publish, run_ffmpeg
from bot.media.probe import ProbeResult, copy_mismatches, probe_async

log = logging.getLogger(__name__)

#: clips normalized at once; each is one ffmpeg process
NORMALIZE_CONCURRENCY = 2
#: threads each normalizing ffmpeg may use for decoding and for x264; the processes run
#: side by side, so together they fill the machine without each holding many frame buffers
PART_THREADS = max(1, (os.cpu_count() or 2) // NORMALIZE_CONCURRENCY)
#: x264 speed/quality trade-off for the master parts and the preview
X264_PRESET = "veryfast"
X264_CRF = 20
AUDIO_RATE = 48000
AUDIO_BITRATE = "192k"
#: seconds of fade at the end of the song
FADE_SECONDS = 2.0
#: fraction of the preview byte limit aimed at (the muxer and rate control need room)
PREVIEW_HEADROOM = 0.90
PREVIEW_MAX_SIDE = 640

MASTER_NAME = "master.mp4"
PREVIEW_NAME = "preview.mp4"
MANIFEST_NAME = "manifest.json"

Progress = Callable[[str, float], None]


@dataclass
class CutSlot:
    """One slot of the cut: which clip plays when, and who made it."""

    index: int  # 0-based slot number
    start: float  # seconds into the song
    duration: float  # seconds this slot lasts
    clip_path: Path
    clip_id: int | None
    author: str  # display name, or "anonymous"
    prompt: str
    backend: str
    votes: dict[str, int] = field(default_factory=dict)  # {"up":..,"down":..,"score":..}
    model: str = ""  # what made the clip (the backend's model or workflow)
    reused: bool = False  # slot filled by reusing a clip
    post_deleted: bool = False  # a moderator deleted its post: out of the vote, here by a pin


@dataclass
class AssemblyResult:
    """The files :func:`assemble` wrote, and the length of the video in seconds."""

    master: Path
    preview: Path
    manifest: Path
    duration: float


@dataclass
class _Part:
    """One normalized piece of the master, in join order."""

    key: tuple[str, int]
    frames: int
    path: Path
    source: Path | None  # None for the credits card
    label: str


def frame_plan(durations: list[float], fps: int) -> list[int]:
    """Frames per slot, rounded on cumulative boundaries so the total never drifts.

    Every slot gets at least one frame.
    """
    frames: list[int] = []
    elapsed = 0.0
    previous = 0
    for duration in durations:
        elapsed += duration
        boundary = max(previous + 1, round(elapsed * fps))
        frames.append(boundary - previous)
        previous = boundary
    return frames


def _timescale(fps: int) -> int:
    # one mp4 timescale for every part: the concat copy needs identical time bases
    return 90000 if 90000 % fps == 0 else fps * 1000


def _video_encode_args(fps: int) -> list[str]:
    """Encoder settings shared by every part, so their H.264 parameter sets are identical."""
    return [
        "-c:v", "libx264", "-preset", X264_PRESET, "-crf", str(X264_CRF),
        "-profile:v", "high", "-level:v", "4.1", "-pix_fmt", "yuv420p",
        "-g", str(fps * 2), "-keyint_min", str(fps),
        "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-color_range", "tv", "-fps_mode", "cfr", "-r", str(fps),
        "-video_track_timescale", str(_timescale(fps)),
    ]  # fmt: skip


def _audio_encode_args() -> list[str]:
    return ["-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ar", str(AUDIO_RATE), "-ac", "2"]


#: ffprobe colour-space names to swscale's matrix names
_SWS_MATRIX = {
    "bt709": "bt709",
    "smpte170m": "smpte170m",
    "bt470bg": "bt470",
    "fcc": "fcc",
    "smpte240m": "smpte240m",
    "bt2020nc": "bt2020",
}


def _matrix_options(info: ProbeResult) -> str:
    """swscale options converting the source's YUV matrix and range to BT.709 limited.

    An untagged source is taken as BT.709 when it is HD and BT.601 otherwise (what players
    assume); when the source already is BT.709 limited, swscale does no colour work.
    """
    hd = (info.width or 0) >= 1280 or (info.height or 0) >= 720
    matrix = _SWS_MATRIX.get(info.color_space or "", "bt709" if hd else "bt601")
    in_range = info.color_range or "tv"
    return f"in_color_matrix={matrix}:out_color_matrix=bt709:in_range={in_range}:out_range=tv"


def _fit_filter(info: ProbeResult, width: int, height: int, fps: int, frames: int) -> str:
    """The video filter chain that turns any clip into exactly ``frames`` frames of WxH."""
    seconds = frames / fps
    chain = ["setpts=PTS-STARTPTS"]
    sar = info.sample_aspect_ratio
    if sar and sar != 1:
        # make pixels square first so the fit below keeps the picture's true shape
        chain.append("scale=trunc(iw*sar/2)*2:ih,setsar=1")
    chain += [
        f"scale={width}:{height}:force_original_aspect_ratio=decrease:force_divisible_by=2"
        f":{_matrix_options(info)}",
        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black",
        "setsar=1",
        f"fps={fps}",
        "format=yuv420p",
        # a clip shorter than its slot holds its last frame
        f"tpad=stop_mode=clone:stop_duration={seconds:.6f}",
        f"trim=end_frame={frames}",
    ]
    return ",".join(chain)


def _audio_filter(frames: int, fps: int) -> str:
    seconds = frames / fps
    return (
        f"aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,"
        f"apad,atrim=duration={seconds:.6f},asetpts=PTS-STARTPTS"
    )


async def _normalize(
    source: Path,
    dest: Path,
    *,
    frames: int,
    width: int,
    height: int,
    fps: int,
    keep_audio: bool,
    binary: str | None,
    on_progress: Callable[[float], None],
) -> None:
    info = await probe_async(source)
    if not info.has_video:
        raise InvalidClip(f"{source.name} has no video")
    args = ["-threads", str(PART_THREADS), "-i", str(source)]
    if keep_audio and not info.has_audio:
        args += ["-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=stereo"]
    graph = f"[0:v:0]{_fit_filter(info, width, height, fps, frames)}[v]"
    if keep_audio:
        audio_in = "[0:a:0]" if info.has_audio else "[1:a:0]"
        graph += f";{audio_in}{_audio_filter(frames, fps)}[a]"
    args += ["-filter_complex", graph, "-map", "[v]"]
    if keep_audio:
        args += ["-map", "[a]", *_audio_encode_args()]
    args += [*_video_encode_args(fps), "-threads", str(PART_THREADS)]
    args += ["-frames:v", str(frames), "-f", "mp4", str(dest)]
    await run_ffmpeg(args, binary=binary, duration=frames / fps, progress=on_progress)


async def _credits_part(
    card: Path,
    dest: Path,
    *,
    frames: int,
    fps: int,
    keep_audio: bool,
    binary: str | None,
    on_progress: Callable[[float], None],
) -> None:
    seconds = frames / fps
    args = ["-loop", "1", "-framerate", str(fps), "-i", str(card)]
    if keep_audio:
        args += ["-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=stereo"]
    vf = (
        "scale=out_color_matrix=bt709:out_range=tv,setsar=1,format=yuv420p,"
        f"fade=t=in:d={min(0.5, seconds / 4):.3f}"
    )
    args += ["-filter_complex", f"[0:v]{vf}[v]", "-map", "[v]"]
    if keep_audio:
        args += ["-map", "1:a", *_audio_encode_args(), "-t", f"{seconds:.6f}"]
    args += [*_video_encode_args(fps), "-threads", str(PART_THREADS)]
    args += ["-frames:v", str(frames), "-f", "mp4", str(dest)]
    await run_ffmpeg(args, binary=binary, duration=seconds, progress=on_progress)


async def _encode_song(
    song: Path,
    dest: Path,
    *,
    offset: float,
    seconds: float,
    binary: str | None,
    on_progress: Callable[[float], None],
) -> None:
    info = await probe_async(song)
    if not info.has_audio:
        raise MediaError(f"the song {song.name} has no audio stream")
    fade = min(FADE_SECONDS, seconds / 4)
    args = []
    if offset > 0:
        args += ["-ss", f"{offset:.6f}"]
    args += [
        "-i", str(song), "-map", "0:a:0", "-vn",
        # apad: a song shorter than the cut ends in silence rather than a short audio track
        "-af", f"aresample={AUDIO_RATE},apad,afade=t=out:st={seconds - fade:.6f}:d={fade:.6f}",
        *_audio_encode_args(), "-t", f"{seconds:.6f}", "-f", "mp4", str(dest),
    ]  # fmt: skip
    await run_ffmpeg(args, binary=binary, duration=seconds, progress=on_progress)


def _concat_list(parts: list[_Part], path: Path) -> None:
    lines = ["ffconcat version 1.0"]
    for part in parts:
        name = part.path.name.replace("'", "'\\''")
        lines.append(f"file '{name}'")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _preview_size(width: int, height: int, video_kbps: float) -> tuple[int, int]:
    """Preview frame size: at most 640 on the long side, less when the bitrate is thin."""
    long_side = PREVIEW_MAX_SIDE
    for kbps, side in ((400, 640), (200, 480), (100, 320)):
        if video_kbps >= kbps:
            long_side = side
            break
    else:
        long_side = 256
    scale = min(1.0, long_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


async def _make_preview(
    master: Path,
    dest: Path,
    work: Path,
    *,
    duration: float,
    width: int,
    height: int,
    limit_bytes: int,
    binary: str | None,
    on_progress: Callable[[float], None],
    attempts: int = 4,
) -> None:
    """Two-pass encode of ``master`` aimed at ``limit_bytes``, measured and retried if over.

    Two-pass bitrate targeting lands close to the size asked for; ``-fs`` would instead
    cut the video off when the limit is reached.
    """
    total_kbps = limit_bytes * 8 * PREVIEW_HEADROOM / 1000 / duration
    audio_kbps = 96 if total_kbps >= 400 else (64 if total_kbps >= 160 else 32)
    video_kbps = total_kbps - audio_kbps
    if video_kbps < 30:
        raise MediaError(
            f"a {duration:.0f} s preview cannot fit in {limit_bytes} bytes "
            f"({total_kbps:.0f} kbit/s available)"
        )
    pw, ph = _preview_size(width, height, video_kbps)
    vf = f"scale={pw}:{ph}:flags=bicubic,setsar=1,format=yuv420p"
    passlog = str(work / "preview-pass")
    common = ["-i", str(master), "-vf", vf, "-c:v", "libx264", "-preset", X264_PRESET,
              "-passlogfile", passlog]  # fmt: skip

    def rate(kbps: int) -> list[str]:
        return ["-b:v", f"{kbps}k", "-maxrate", f"{int(kbps * 1.5)}k", "-bufsize", f"{kbps * 2}k"]

    await run_ffmpeg(
        [*common, *rate(int(video_kbps)), "-pass", "1", "-an", "-f", "null", "-"],
        binary=binary,
        duration=duration,
        progress=lambda f: on_progress(f * 0.5),
    )
    for attempt in range(1, attempts + 1):
        kbps = int(video_kbps)
        await run_ffmpeg(
            [
                *common,
                *rate(kbps),
                "-pass",
                "2",
                "-c:a",
                "aac",
                "-b:a",
                f"{audio_kbps}k",
                "-ac",
                "2",
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
                str(dest),
            ],  # fmt: skip
            binary=binary,
            duration=duration,
            progress=lambda f: on_progress(0.5 + f * 0.5),
        )
        size = dest.stat().st_size
        log.info("preview attempt %d: %d kbit/s video, %d bytes of %d", attempt, kbps, size,
                 limit_bytes)  # fmt: skip
        if size <= limit_bytes:
            return
        video_kbps = video_kbps * limit_bytes / size * 0.93
        if video_kbps < 30:
            break
    raise MediaError(f"the preview stayed over {limit_bytes} bytes after {attempts} tries")


def _manifest(
    slots: list[CutSlot],
    *,
    title: str,
    duration: float,
    frames: list[int],
    fps: int,
    width: int,
    height: int,
    song: Path | None,
    credits_seconds: float,
) -> dict[str, object]:
    cursor = 0
    entries = []
    for slot, n in zip(slots, frames, strict=True):
        entries.append(
            {
                "index": slot.index,
                "start": slot.start,
                "duration": slot.duration,
                "video_start": round(cursor / fps, 6),
                "video_frames": n,
                "clip_id": slot.clip_id,
                "author": slot.author,
                "prompt": slot.prompt,
                "backend": slot.backend,
                "model": slot.model,
                "votes": dict(slot.votes),
                "reused": slot.reused,
            }
        )
        cursor += n
    return {
        "title": title,
        "duration": round(duration, 6),
        "width": width,
        "height": height,
        "fps": fps,
        "credits_seconds": credits_seconds,
        "song": song.name if song else None,
        "files": {"master": MASTER_NAME, "preview": PREVIEW_NAME, "manifest": MANIFEST_NAME},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "slots": entries,
    }


async def assemble(
    slots: list[CutSlot],
    song: Path | None,
    out_dir: Path,
    *,
    title: str,
    width: int = 1280,
    height: int = 720,
    fps: int = 24,
    preview_limit_bytes: int = 10 * 1024 * 1024,
    credits_seconds: float = 4.0,
    ffmpeg_binary: str | None = None,
    progress: Progress | None = None,
) -> AssemblyResult:
    """Cut ``slots`` (joined in slot ``index`` order) to ``song`` and write the results.

    Writes ``master.mp4`` (H.264 High/yuv420p + AAC, WxH at ``fps``, moov atom first),
    ``preview.mp4`` (smaller, at most ``preview_limit_bytes``) and ``manifest.json`` into
    ``out_dir``, each atomically. ``progress(stage, fraction)`` is called with the stages
    ``"normalize"``, ``"song"``, ``"join"``, ``"preview"`` and ``"done"``. Work files live
    in a temporary folder inside ``out_dir``, removed at the end, also on failure or
    cancellation (which stops every ffmpeg process).

    Raises :class:`InvalidClip` for a slot whose clip is not usable video and
    :class:`MediaError` when ffmpeg fails.
    """
    if not slots:
        raise ValueError("assemble needs at least one slot")
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"width and height must be even and at least 16, not {width}x{height}")
    if fps <= 0:
        raise ValueError("fps must be positive")
    if any(slot.duration <= 0 for slot in slots):
        raise ValueError("every slot needs a positive duration")

    report: Progress = progress or (lambda stage, fraction: None)
    slots = sorted(slots, key=lambda s: s.index)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".assembly-", dir=out_dir))
    started = time.monotonic()
    keep_audio = song is None

    frames = frame_plan([s.duration for s in slots], fps)
    credit_frames = round(credits_seconds * fps) if credits_seconds > 0 else 0
    total_frames = sum(frames) + credit_frames
    total_seconds = total_frames / fps
    log.info(
        "assembling %r: %d slots, %.2f s + %.2f s credits at %dx%d@%d",
        title, len(slots), sum(frames) / fps, credit_frames / fps, width, height, fps,
    )  # fmt: skip

    # one normalized part per distinct (clip, length): a reused clip of the same length
    # is encoded once and listed twice
    parts: list[_Part] = []
    unique: dict[tuple[str, int], _Part] = {}
    for slot, n in zip(slots, frames, strict=True):
        key = (str(Path(slot.clip_path).resolve()), n)
        if key not in unique:
            unique[key] = _Part(key, n, work / f"part-{len(unique):04d}.mp4",
                                Path(slot.clip_path), f"slot {slot.index + 1}")  # fmt: skip
        parts.append(unique[key])
    credits_part = None
    if credit_frames:
        credits_part = _Part(("credits", credit_frames), credit_frames,
                             work / "part-credits.mp4", None, "credits")  # fmt: skip
        unique[credits_part.key] = credits_part
        parts.append(credits_part)

    encode_frames = sum(p.frames for p in unique.values())
    done_frames: dict[tuple[str, int], float] = {}

    def part_progress(part: _Part) -> Callable[[float], None]:
        def update(fraction: float) -> None:
            done_frames[part.key] = fraction * part.frames
            report("normalize", min(1.0, sum(done_frames.values()) / encode_frames))

        return update

    semaphore = asyncio.Semaphore(NORMALIZE_CONCURRENCY)

    async def make_part(part: _Part) -> None:
        async with semaphore:
            if part.source is None:
                card = work / "credits.png"
                lines = [
                    (
                        f"{s.index + 1}. {s.author or 'anonymous'}",
                        f"{s.prompt} (reused)" if s.reused else s.prompt,
                    )
                    for s in slots
                ]
                await asyncio.to_thread(render_credits_card, card, title, lines, width, height)
                await _credits_part(card, part.path, frames=part.frames, fps=fps,
                                    keep_audio=keep_audio, binary=ffmpeg_binary,
                                    on_progress=part_progress(part))  # fmt: skip
                return
            try:
                await _normalize(part.source, part.path, frames=part.frames, width=width,
                                 height=height, fps=fps, keep_audio=keep_audio,
                                 binary=ffmpeg_binary, on_progress=part_progress(part))  # fmt: skip
            except InvalidClip as exc:
                raise InvalidClip(f"The clip of {part.label} is unusable: {exc.message}") from exc

    song_part = work / "song.m4a"

    async def make_song() -> None:
        if song is None:
            return
        await _encode_song(Path(song), song_part, offset=max(0.0, slots[0].start),
                           seconds=total_seconds, binary=ffmpeg_binary,
                           on_progress=lambda f: report("song", f))  # fmt: skip

    try:
        report("normalize", 0.0)
        # the song encodes alongside the video parts (it is one light audio process)
        tasks = [asyncio.ensure_future(make_song())]
        tasks += [asyncio.ensure_future(make_part(p)) for p in unique.values()]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        report("normalize", 1.0)

        # the invariant that makes a stream-copy join valid
        infos = await asyncio.gather(*(probe_async(p.path) for p in unique.values()))
        reference = infos[0]
        for part, info in zip(unique.values(), infos, strict=True):
            diffs = copy_mismatches(reference, info)
            if diffs or not info.has_video:
                raise MediaError(f"normalized {part.label} cannot be joined: {'; '.join(diffs)}")

        report("join", 0.0)
        listing = work / "parts.ffconcat"
        _concat_list(parts, listing)
        master_tmp = work / MASTER_NAME
        args = ["-f", "concat", "-safe", "0", "-i", str(listing)]
        if song is not None:
            args += ["-i", str(song_part), "-map", "0:v:0", "-map", "1:a:0"]
        else:
            args += ["-map", "0:v:0", "-map", "0:a:0"]
        args += ["-c", "copy", "-movflags", "+faststart", "-f", "mp4", str(master_tmp)]
        await run_ffmpeg(args, binary=ffmpeg_binary, duration=total_seconds,
                         progress=lambda f: report("join", f))  # fmt: skip
        master_info = await probe_async(master_tmp)
        duration = master_info.duration

        report("preview", 0.0)
        preview_tmp = work / PREVIEW_NAME
        await _make_preview(master_tmp, preview_tmp, work, duration=duration, width=width,
                            height=height, limit_bytes=preview_limit_bytes,
                            binary=ffmpeg_binary,
                            on_progress=lambda f: report("preview", f))  # fmt: skip

        manifest_tmp = work / MANIFEST_NAME
        manifest = _manifest(slots, title=title, duration=duration, frames=frames, fps=fps,
                             width=width, height=height, song=Path(song) if song else None,
                             credits_seconds=credit_frames / fps)  # fmt: skip
        manifest_tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                encoding="utf-8")  # fmt: skip

        result = AssemblyResult(
            master=await publish(master_tmp, out_dir / MASTER_NAME),
            preview=await publish(preview_tmp, out_dir / PREVIEW_NAME),
            manifest=await publish(manifest_tmp, out_dir / MANIFEST_NAME),
            duration=duration,
        )
        report("done", 1.0)
        log.info("assembled %r: %.2f s of video in %.1f s", title, duration,
                 time.monotonic() - started)  # fmt: skip
        return result
    finally:
        # a few files; removing them is quick enough not to bother the loop
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
