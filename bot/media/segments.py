"""Segments: each slot of a cut rendered as its own normalized, cached piece of video.

The timeline, for slot boundaries ``B0=0 < B1 < ... < Bn`` (whole frames) and a transition of
``T`` frames centred on every inner boundary (``h = T/2`` on each side)::

    video   |---- slot 0 ----|---- slot 1 ----|---- slot 2 ----|-- credits --|
    clip 0  [================ h]                                     (fitted to F0 + h)
    clip 1                  [h ===============  h]                  (fitted to F1 + 2h)
    segment 0 [0, B1-h)  segment 1 [B1-h, B2-h)  segment 2 [B2-h, B3)   credits

A segment starts where its transition starts: its first ``T`` frames blend the previous
clip's last ``T`` fitted frames into its own first ``T``, so the middle of every transition
(and every hard cut) lands exactly on a slot boundary, on the beat. Each clip is *fitted*
to the frames it is seen for: trimmed from its in-point when longer, slowed down
(``fit="slow"``) or held on its last frame (``fit="hold"``) when shorter; never a gap.

A segment depends only on its own clip, the previous clip, their in-points and fitted
lengths, the transition, the fit mode and the frame format, so it is cached under the
SHA-256 of exactly those (:func:`slot_segment_key`): a vote that changes one slot's
leader invalidates that slot's segment and the next one, nothing else. Every segment is
encoded with identical x264 settings (profile, level, time base, GOP), which is what lets
:mod:`bot.media.assembly` join them by stream copy; :func:`check_segment` verifies it for
each segment it writes.

Renders run through :class:`SegmentRenderer`: at most ``concurrency`` ffmpeg processes
(2 by default), each with ``cpu_count // concurrency`` threads, optionally niced so that
background renders yield to generation and to interactive work. Two requests for the same
segment share one render; files are written atomically, so two processes rendering the
same key at once both leave a complete file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import InvalidClip, MediaError
from bot.media.ffmpeg import part_path, publish, run_ffmpeg
from bot.media.probe import ProbeResult, probe_async

log = logging.getLogger(__name__)

#: bump when the rendering of a segment changes, so stale cache entries are never used
SEGMENT_VERSION = 1
#: segments rendered at once; each is one ffmpeg process
SEGMENT_CONCURRENCY = 2
#: x264 speed/quality trade-off for every segment (the preview has its own)
X264_PRESET = "veryfast"
X264_CRF = 20
#: x264 preset of preview segments (small frames: a slower preset costs little)
PREVIEW_PRESET = "medium"
AUDIO_RATE = 48000
AUDIO_BITRATE = "192k"
#: niceness of background renders (0: same priority as the bot)
BACKGROUND_NICE = 10

#: transition name -> ffmpeg ``xfade`` transition (``None``: hard cut)
TRANSITIONS: dict[str, str | None] = {
    "cut": None,
    "crossfade": "fade",
    "dip": "fadeblack",  # dip to black (drawn with two fades, see _render_slot)
    "zoom": "zoomin",  # the outgoing clip pushes in while the incoming one starts
}
FITS = ("hold", "slow")


@dataclass(frozen=True)
class CutOptions:
    """How a cut is rendered: frame format, transition, and how short clips fill a slot.

    ``transition_seconds`` is the whole transition (the caller gives a fraction of a beat in
    seconds); it is rounded to an even number of frames so it can be centred on a boundary,
    and shortened where a slot is too short to hold it. ``lossless`` renders a reference
    (x264 ``-qp 0``) for quality measurements.
    """

    width: int = 1280
    height: int = 720
    fps: int = 24
    transition: str = "cut"
    transition_seconds: float = 0.0
    fit: str = "hold"
    lossless: bool = False

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2 or self.width < 16 or self.height < 16:
            raise ValueError(
                f"width and height must be even and at least 16, not {self.width}x{self.height}"
            )
        if self.fps <= 0:
            raise ValueError("fps must be positive")
        if self.transition not in TRANSITIONS:
            raise ValueError(f"unknown transition {self.transition!r}; one of {list(TRANSITIONS)}")
        if self.fit not in FITS:
            raise ValueError(f"unknown fit {self.fit!r}; one of {list(FITS)}")
        if self.transition_seconds < 0:
            raise ValueError("transition_seconds cannot be negative")

    @property
    def transition_frames(self) -> int:
        """Frames of a full transition (even; 0 for a hard cut)."""
        if TRANSITIONS[self.transition] is None:
            return 0
        return 2 * round(self.transition_seconds * self.fps / 2)

    def encoder_key(self) -> list[object]:
        return ["lossless"] if self.lossless else [X264_PRESET, X264_CRF]


# ---------------------------------------------------------------------- the plan (pure)


@dataclass(frozen=True)
class ClipUse:
    """One slot's clip on its fitted timeline: ``length`` frames from ``in_point``."""

    path: Path
    media: str  # content id: the media store key, or a stand-in for a loose file
    in_point: float
    length: int


@dataclass(frozen=True)
class SlotSegment:
    """One segment of the plan: ``frames`` frames starting at video frame ``start``."""

    index: int  # slot position in the cut (0-based, join order)
    start: int
    frames: int
    clip: ClipUse
    prev: ClipUse | None  # the clip blended in over the first ``blend`` frames
    blend: int  # frames of transition at the start (0: hard cut)
    title: str | None = None  # the title card overlaid on the opening (first segment only)
    title_frames: int = 0


def media_id(path: Path, key: str | None = None) -> str:
    """The content id of a clip: its media store key, else its path, size and mtime."""
    if key:
        return key
    st = Path(path).stat()
    return f"file:{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def plan_segments(
    frames: Sequence[int],
    clips: Sequence[tuple[Path, str, float]],
    transition_frames: int,
    *,
    title: str | None = None,
    title_frames: int = 0,
) -> list[SlotSegment]:
    """Lay out one segment per slot. ``frames[i]`` is slot i's length, ``clips[i]`` its
    clip as ``(path, media id, in-point)``; ``transition_frames`` the full (even) length of
    every transition. Each half transition is shortened where a slot could not hold it and
    still show its own clip alone for at least one frame. Pure."""
    if len(frames) != len(clips):
        raise ValueError("one clip per slot")
    n = len(frames)
    half = [0] * (n + 1)  # half[i]: half transition at the boundary before slot i
    for i in range(1, n):
        half[i] = max(0, min(transition_frames // 2, (min(frames[i - 1], frames[i]) - 1) // 2))
    uses = [
        ClipUse(Path(path), media, max(0.0, in_point), frames[i] + half[i] + half[i + 1])
        for i, (path, media, in_point) in enumerate(clips)
    ]
    plan = []
    boundary = 0
    for i in range(n):
        plan.append(
            SlotSegment(
                index=i,
                start=boundary - half[i],
                frames=frames[i] + half[i] - half[i + 1],
                clip=uses[i],
                prev=uses[i - 1] if half[i] else None,
                blend=2 * half[i],
                title=title if i == 0 and title_frames > 0 else None,
                # never longer than the first segment, so its fade-out is always seen
                title_frames=min(title_frames, frames[0] - half[1]) if i == 0 and title else 0,
            )
        )
        boundary += frames[i]
    return plan


def _digest(fields: dict[str, object]) -> str:
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def slot_segment_key(seg: SlotSegment, options: CutOptions, *, keep_audio: bool) -> str:
    """The cache key of a slot segment: a hash of every input that decides its frames."""

    def use(u: ClipUse | None) -> list[object] | None:
        return None if u is None else [u.media, round(u.in_point, 3), u.length]

    return _digest(
        {
            "v": SEGMENT_VERSION,
            "kind": "slot",
            "clip": use(seg.clip),
            "prev": use(seg.prev),
            "frames": seg.frames,
            "blend": [TRANSITIONS[options.transition], seg.blend] if seg.blend else None,
            "fit": options.fit,
            "format": [options.width, options.height, options.fps],
            "encoder": options.encoder_key(),
            "audio": keep_audio,
            "title": [seg.title, seg.title_frames] if seg.title else None,
        }
    )


def credits_segment_key(
    roll_digest: str, frames: int, options: CutOptions, *, keep_audio: bool
) -> str:
    """The cache key of the closing roll (``roll_digest``: a hash of its text)."""
    return _digest(
        {
            "v": SEGMENT_VERSION,
            "kind": "credits",
            "roll": roll_digest,
            "frames": frames,
            "format": [options.width, options.height, options.fps],
            "encoder": options.encoder_key(),
            "audio": keep_audio,
        }
    )


def song_key(song: Path, song_media: str | None, offset: float, seconds: float, fade: float) -> str:
    """The cache key of the encoded soundtrack."""
    return _digest(
        {
            "v": SEGMENT_VERSION,
            "kind": "song",
            "song": media_id(song, song_media),
            "offset": round(offset, 6),
            "seconds": round(seconds, 6),
            "fade": round(fade, 6),
        }
    )


def preview_segment_key(
    source: Path,
    width: int,
    height: int,
    fps: int,
    video_kbps: int,
    audio_kbps: int,
    first_pass_kbps: int,
) -> str:
    """The cache key of a segment's preview encode (``source``: a cached segment, whose name
    is its own key)."""
    return _digest(
        {
            "v": SEGMENT_VERSION,
            "kind": "preview",
            "source": Path(source).stem,
            "format": [width, height, fps],
            "video_kbps": video_kbps,
            "audio_kbps": audio_kbps,
            "first_pass_kbps": first_pass_kbps,
            "preset": PREVIEW_PRESET,
        }
    )


# ---------------------------------------------------------------------- the cache


class SegmentCache:
    """Content-addressed segment files under ``root``: ``root/ab/<key>.mp4`` (or ``.m4a``).

    A file is only ever complete (written to a temporary name, fsynced, renamed). Using a
    file refreshes its mtime, so :meth:`prune` drops the least recently used first.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, key: str, ext: str = "mp4") -> Path:
        return self.root / key[:2] / f"{key}.{ext}"

    def has(self, key: str, ext: str = "mp4") -> bool:
        return self.path(key, ext).is_file()

    def touch(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            os.utime(path)

    def size(self) -> int:
        """Bytes held (blocking: a directory walk)."""
        return sum(p.stat().st_size for p in self.root.glob("*/*.*") if p.is_file())

    def prune(self, max_bytes: int, *, keep: Sequence[Path] = ()) -> int:
        """Delete least recently used files until at most ``max_bytes`` are held, never one in
        ``keep``; return the number deleted. Blocking: run it in a thread."""
        keep_set = {Path(p).resolve() for p in keep}
        files = []
        for p in self.root.glob("*/*.*"):
            with contextlib.suppress(OSError):
                st = p.stat()
                if not p.name.startswith("."):
                    files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        removed = 0
        for _, size, p in sorted(files):
            if total <= max_bytes:
                break
            if p.resolve() in keep_set:
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                total -= size
                removed += 1
        return removed


# ---------------------------------------------------------------------- encoding


def timescale(fps: int) -> int:
    # one mp4 timescale for every segment: the concat copy needs identical time bases
    return 90000 if 90000 % fps == 0 else fps * 1000


def video_encode_args(options: CutOptions, threads: int) -> list[str]:
    """Encoder settings shared by every segment, so their H.264 parameter sets match."""
    fps = options.fps
    if options.lossless:
        codec = ["-c:v", "libx264", "-preset", "ultrafast", "-qp", "0"]
    else:
        codec = ["-c:v", "libx264", "-preset", X264_PRESET, "-crf", str(X264_CRF),
                 "-profile:v", "high", "-level:v", "4.1"]  # fmt: skip
    return [
        *codec, "-pix_fmt", "yuv420p", "-threads", str(threads),
        "-g", str(fps * 2), "-keyint_min", str(fps),
        "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-color_range", "tv", "-fps_mode", "cfr", "-r", str(fps),
        "-video_track_timescale", str(timescale(fps)),
    ]  # fmt: skip


def audio_encode_args() -> list[str]:
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


@dataclass(frozen=True)
class Window:
    """How to read ``count`` fitted frames of a clip starting at fitted frame ``first``."""

    seek: float  # input seek, seconds of source
    speed: float  # fitted seconds per source second (1: trim/hold, >1: slowed down)
    skip: int  # fitted frames to drop after the seek
    count: int


def fitted_window(
    duration: float, src_fps: float, use: ClipUse, first: int, count: int, fps: int, fit: str
) -> Window:
    """Where fitted frames ``[first, first + count)`` of ``use`` come from. Pure.

    The clip plays from its in-point; when what is left of it is shorter than
    ``use.length`` it is slowed down to fill it (``fit="slow"``) or holds its last frame
    (``"hold"``). The seek never goes past the last second of the clip, so there is always
    a frame to hold.
    """
    frame = 1 / max(1.0, src_fps)
    in_point = min(max(0.0, use.in_point), max(0.0, duration - frame))
    available = max(frame, duration - in_point)
    needed = use.length / fps
    speed = needed / available if fit == "slow" and available < needed else 1.0
    start = first / fps  # fitted seconds
    source = in_point + start / speed
    seek = max(0.0, min(source, max(in_point, duration - 1.0)))
    skip = max(0, round((start - (seek - in_point) * speed) * fps))
    return Window(seek=seek, speed=speed, skip=skip, count=count)


def _window_chain(info: ProbeResult, win: Window, options: CutOptions) -> str:
    """The filter chain turning a clip (seeked to ``win.seek``) into the window's frames."""
    w, h, fps = options.width, options.height, options.fps
    chain = ["setpts=PTS-STARTPTS"]
    if win.speed != 1.0:
        chain.append(f"setpts={win.speed:.6f}*PTS")
    chain.append(f"fps={fps}")
    sar = info.sample_aspect_ratio
    if sar and sar != 1:
        # make pixels square first so the fit below keeps the picture's true shape
        chain.append("scale=trunc(iw*sar/2)*2:ih,setsar=1")
    end = win.skip + win.count
    chain += [
        f"scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2"
        f":{_matrix_options(info)}",
        f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black",
        "setsar=1",
        "format=yuv420p",
        # a clip shorter than its window holds its last frame
        f"tpad=stop_mode=clone:stop_duration={end / fps + 1:.6f}",
        f"trim=start_frame={win.skip}:end_frame={end}",
        "setpts=PTS-STARTPTS",
    ]
    return ",".join(chain)


def _audio_chain(frames: int, fps: int) -> str:
    return (
        f"aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,"
        f"apad,atrim=duration={frames / fps:.6f},asetpts=PTS-STARTPTS"
    )


def _silence(frames: int, fps: int) -> str:
    """A filter-graph chain ``[a]`` of silence as long as ``frames``.

    Made inside the graph, not read from a ``-f lavfi -i anullsrc`` input: with such an
    input the ffmpeg 9 static build deadlocks at the end of about 1 render in 100.
    """
    return f"anullsrc=r={AUDIO_RATE}:cl=stereo,{_audio_chain(frames, fps)}[a]"


async def check_segment(path: Path, options: CutOptions, frames: int, *, audio: bool) -> None:
    """Raise :class:`MediaError` unless ``path`` has exactly the joinable format and
    ``frames`` frames (the invariant that makes the stream-copy join valid)."""
    info = await probe_async(path)
    expected = {
        "video_codec": "h264",
        "pix_fmt": "yuv420p",
        "width": options.width,
        "height": options.height,
        "frame_rate": options.fps,
        "frame_count": frames,
    }
    wrong = [f"{k}={getattr(info, k)!r} (want {v!r})" for k, v in expected.items()
             if getattr(info, k) != v]  # fmt: skip
    if info.time_base is None or info.time_base.denominator != timescale(options.fps):
        wrong.append(f"time_base={info.time_base}")
    if audio and (info.audio_codec, info.sample_rate, info.channels) != ("aac", AUDIO_RATE, 2):
        wrong.append(f"audio={info.audio_codec}/{info.sample_rate}/{info.channels}")
    if not audio and info.has_audio:
        wrong.append("has audio")
    if wrong:
        raise MediaError(f"segment {path.name} cannot be joined: {'; '.join(wrong)}")


Progress = Callable[[float], None]


class SegmentRenderer:
    """Renders segments into a :class:`SegmentCache`, ``concurrency`` at a time.

    One instance per process (the worker's), shared by background and approval renders:
    it holds the concurrency limit and the renders in flight. ``nice`` is added to the
    niceness of every ffmpeg it starts for renders asked with ``background=True``.
    """

    def __init__(
        self,
        cache: SegmentCache | Path | str,
        *,
        concurrency: int = SEGMENT_CONCURRENCY,
        ffmpeg_binary: str | None = None,
        nice: int = BACKGROUND_NICE,
    ) -> None:
        self.cache = cache if isinstance(cache, SegmentCache) else SegmentCache(cache)
        self.concurrency = max(1, concurrency)
        self.threads = max(1, (os.cpu_count() or 2) // self.concurrency)
        self.binary = ffmpeg_binary
        self.nice = nice
        self._limits: dict[int, asyncio.Semaphore] = {}
        self._inflight: dict[str, asyncio.Future[Path]] = {}
        self._probes: dict[Path, ProbeResult] = {}
        #: segments this renderer actually encoded (not found in the cache)
        self.rendered = 0

    def _limit(self) -> asyncio.Semaphore:
        # one semaphore per event loop (tests run several loops in one process)
        loop = asyncio.get_running_loop()
        sem = self._limits.get(id(loop))
        if sem is None:
            sem = self._limits[id(loop)] = asyncio.Semaphore(self.concurrency)
        return sem

    async def probe(self, path: Path) -> ProbeResult:
        path = Path(path)
        info = self._probes.get(path)
        if info is None:
            info = self._probes[path] = await probe_async(path)
        return info

    async def ensure(
        self,
        key: str,
        make: Callable[[Path, int, float | None], object],
        *,
        ext: str = "mp4",
        background: bool = False,
    ) -> Path:
        """The cached file for ``key``, rendering it with ``make(tmp, threads, nice)`` when
        missing. Concurrent calls for one key share one render."""
        dest = self.cache.path(key, ext)
        if dest.is_file():
            self.cache.touch(dest)
            return dest
        while (pending := self._inflight.get(key)) is not None and not pending.done():
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                # the caller whose render we shared was cancelled, we were not: go on
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            async with self._limit():
                if not dest.is_file():  # another process may have made it meanwhile
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    tmp = part_path(dest)
                    try:
                        await make(tmp, self.threads, self.nice if background else None)  # type: ignore[misc]
                        await publish(tmp, dest)
                        self.rendered += 1
                    finally:
                        tmp.unlink(missing_ok=True)
            future.set_result(dest)
            return dest
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    # ------------------------------------------------------------------ slot segments
    async def slot_segment(
        self,
        seg: SlotSegment,
        options: CutOptions,
        *,
        keep_audio: bool,
        title_png: Callable[[], object] | None = None,
        background: bool = False,
        progress: Progress | None = None,
    ) -> Path:
        """Ensure the segment ``seg`` is in the cache; return its path.

        ``title_png`` is an async callable returning the title card PNG, called only when
        the segment has a title and must be rendered.
        """
        key = slot_segment_key(seg, options, keep_audio=keep_audio)

        async def make(tmp: Path, threads: int, nice: float | None) -> None:
            started = time.monotonic()
            try:
                await self._render_slot(seg, tmp, options, keep_audio=keep_audio,
                                        title_png=title_png, threads=threads, nice=nice,
                                        progress=progress)  # fmt: skip
            except InvalidClip as exc:
                raise InvalidClip(
                    f"The clip of slot {seg.index + 1} is unusable: {exc.message}"
                ) from exc
            await check_segment(tmp, options, seg.frames, audio=keep_audio)
            log.debug("segment %d (%d frames) in %.1f s", seg.index, seg.frames,
                      time.monotonic() - started)  # fmt: skip

        return await self.ensure(key, make, background=background)

    async def _render_slot(
        self,
        seg: SlotSegment,
        dest: Path,
        options: CutOptions,
        *,
        keep_audio: bool,
        title_png: Callable[[], object] | None,
        threads: int,
        nice: float | None,
        progress: Progress | None,
    ) -> None:
        fps = options.fps
        info = await self.probe(seg.clip.path)
        if not info.has_video:
            raise InvalidClip(f"{seg.clip.path.name} has no video")

        def window(i: ProbeResult, use: ClipUse, first: int, count: int) -> Window:
            duration = i.video_duration or i.duration
            return fitted_window(duration, float(i.frame_rate or fps), use, first, count,
                                 fps, options.fit)  # fmt: skip

        def src(path: Path, win: Window) -> list[str]:
            seek = ["-ss", f"{win.seek:.6f}"] if win.seek > 0 else []
            return ["-threads", str(threads), *seek, "-i", str(path)]

        cur = window(info, seg.clip, 0, seg.frames)
        args = src(seg.clip.path, cur)
        graph = [f"[0:v:0]{_window_chain(info, cur, options)}[cur]"]
        label, n_inputs = "cur", 1
        if seg.prev is not None and seg.blend:
            pinfo = await self.probe(seg.prev.path)
            if not pinfo.has_video:
                raise InvalidClip(f"{seg.prev.path.name} has no video")
            tail = window(pinfo, seg.prev, seg.prev.length - seg.blend, seg.blend)
            args += src(seg.prev.path, tail)
            graph.append(f"[{n_inputs}:v:0]{_window_chain(pinfo, tail, options)}[prev]")
            kind = TRANSITIONS[options.transition]
            half = seg.blend // 2
            if kind == "fadeblack":
                # xfade's fadeblack is darkest well before its middle; fading the outgoing
                # clip out over the first half and the incoming in over the second puts
                # the black frame on the boundary
                graph.append(f"[prev]trim=end_frame={half},fade=t=out:s=0:n={half}[p]")
                fade_in = f"fade=t=in:s=0:n={half}"
                graph.append(f"[cur]trim=start_frame={half},setpts=PTS-STARTPTS,{fade_in}[c]")
                graph.append("[p][c]concat=n=2:v=1:a=0[x]")
            else:
                xfade = f"xfade=transition={kind}:duration={seg.blend / fps:.6f}:offset=0"
                graph.append(f"[prev][cur]{xfade}[x]")
            label, n_inputs = "x", n_inputs + 1
        if seg.title and seg.title_frames:
            png = await title_png()  # type: ignore[misc]
            seconds = seg.title_frames / fps
            fade = min(0.6, seconds / 3)
            args += ["-loop", "1", "-framerate", str(fps), "-t", f"{seconds:.6f}", "-i", str(png)]
            graph.append(
                f"[{n_inputs}:v:0]format=yuva420p,"
                f"fade=t=out:st={seconds - fade:.6f}:d={fade:.6f}:alpha=1[title]"
            )
            graph.append(f"[{label}][title]overlay=0:0:eof_action=pass:format=yuv420[t]")
            label, n_inputs = "t", n_inputs + 1
        graph.append(f"[{label}]format=yuv420p,setsar=1[v]")
        maps = ["-map", "[v]"]
        if keep_audio:
            if info.has_audio:
                graph.append(f"[0:a:0]{_audio_chain(seg.frames, fps)}[a]")
            else:
                graph.append(_silence(seg.frames, fps))
            maps += ["-map", "[a]", *audio_encode_args()]
        args += ["-filter_complex", ";".join(graph), *maps]
        args += [*video_encode_args(options, threads), "-frames:v", str(seg.frames)]
        args += ["-f", "mp4", str(dest)]
        await run_ffmpeg(args, binary=self.binary, duration=seg.frames / fps,
                         progress=progress, nice=nice)  # fmt: skip

    # ------------------------------------------------------------------ credits
    async def credits_segment(
        self,
        roll_png: Callable[[], object],
        roll_digest: str,
        frames: int,
        options: CutOptions,
        *,
        keep_audio: bool,
        background: bool = False,
        progress: Progress | None = None,
    ) -> Path:
        """Ensure the closing roll segment (a tall PNG scrolled over ``frames``) is cached.

        ``roll_png`` is an async callable returning ``(path, height)`` of the roll image.
        """
        key = credits_segment_key(roll_digest, frames, options, keep_audio=keep_audio)

        async def make(tmp: Path, threads: int, nice: float | None) -> None:
            png, height = await roll_png()  # type: ignore[misc]
            await self._render_roll(png, height, tmp, frames, options, keep_audio=keep_audio,
                                    threads=threads, nice=nice, progress=progress)  # fmt: skip
            await check_segment(tmp, options, frames, audio=keep_audio)

        return await self.ensure(key, make, background=background)

    async def _render_roll(
        self,
        png: Path,
        height: int,
        dest: Path,
        frames: int,
        options: CutOptions,
        *,
        keep_audio: bool,
        threads: int,
        nice: float | None,
        progress: Progress | None,
    ) -> None:
        w, h, fps = options.width, options.height, options.fps
        travel = max(0, height - h)
        # hold the top and the bottom of the roll a moment; scroll evenly in between
        hold = min(round(1.5 * fps), frames // 4) if travel else 0
        moving = max(1, frames - 2 * hold)
        y = f"min({travel},max(0,(n-{hold})*{travel / moving:.6f}))"
        fade = min(0.5, frames / fps / 4)
        vf = (
            f"[0:v]loop=loop={frames}:size=1:start=0,setpts=N/({fps}*TB),"
            f"crop={w}:{h}:0:'{y}',"
            "scale=out_color_matrix=bt709:out_range=tv,setsar=1,format=yuv420p,"
            f"fade=t=in:d={fade:.3f},trim=end_frame={frames}[v]"
        )
        args = ["-framerate", str(fps), "-i", str(png)]
        maps = ["-map", "[v]"]
        if keep_audio:
            vf += ";" + _silence(frames, fps)
            maps += ["-map", "[a]", *audio_encode_args()]
        args += ["-filter_complex", vf, *maps, *video_encode_args(options, threads)]
        args += ["-frames:v", str(frames), "-f", "mp4", str(dest)]
        await run_ffmpeg(args, binary=self.binary, duration=frames / fps, progress=progress,
                         nice=nice)  # fmt: skip

    # ------------------------------------------------------------------ the song
    async def song(
        self,
        song: Path,
        *,
        offset: float,
        seconds: float,
        fade: float,
        song_media: str | None = None,
        background: bool = False,
        progress: Progress | None = None,
    ) -> Path:
        """Ensure the soundtrack (``seconds`` of ``song`` from ``offset``, faded out, padded
        with silence when the song is shorter) is encoded to AAC once and cached."""
        key = song_key(song, song_media, offset, seconds, fade)

        async def make(tmp: Path, threads: int, nice: float | None) -> None:
            info = await probe_async(song)
            if not info.has_audio:
                raise MediaError(f"the song {song.name} has no audio stream")
            fade_s = min(fade, seconds / 4)
            args = ["-ss", f"{offset:.6f}"] if offset > 0 else []
            args += [
                "-i", str(song), "-map", "0:a:0", "-vn",
                # apad: a song shorter than the cut ends in silence, not a short track
                "-af",
                f"aresample={AUDIO_RATE},apad,afade=t=out:st={seconds - fade_s:.6f}"
                f":d={fade_s:.6f}",
                *audio_encode_args(), "-t", f"{seconds:.6f}", "-f", "mp4", str(tmp),
            ]  # fmt: skip
            await run_ffmpeg(args, binary=self.binary, duration=seconds, progress=progress,
                             nice=nice)  # fmt: skip

        return await self.ensure(key, make, ext="m4a", background=background)

    # ------------------------------------------------------------------ previews
    async def preview_segment(
        self,
        source: Path,
        *,
        width: int,
        height: int,
        fps: int,
        frames: int,
        video_kbps: int,
        audio_kbps: int = 0,
        first_pass_kbps: int | None = None,
        background: bool = False,
    ) -> Path:
        """Ensure the preview encode of the cached segment ``source`` is cached: scaled to
        ``width``x``height``, two-pass at ``video_kbps`` (and its audio at ``audio_kbps``
        when non-zero, else none), with x264's ``stitchable`` parameter sets so that preview
        segments join by stream copy like the master's. The first pass runs at
        ``first_pass_kbps`` (default: ``video_kbps``) and its statistics are cached: encodes
        of one segment at other bitrates run the second pass only."""
        first = first_pass_kbps or video_kbps
        key = preview_segment_key(source, width, height, fps, video_kbps, audio_kbps, first)
        stats = self.cache.path(preview_segment_key(source, width, height, fps, 0, 0, first), "log")

        async def make(tmp: Path, threads: int, nice: float | None) -> None:
            passlog = tmp.with_name(tmp.name + ".pass")
            own = passlog.with_name(passlog.name + "-0.log")  # what x264 reads and writes
            vf = f"scale={width}:{height}:flags=bicubic,setsar=1,format=yuv420p"

            def encode(kbps: int) -> list[str]:
                return [
                    "-vf", vf, "-c:v", "libx264", "-preset", PREVIEW_PRESET,
                    "-b:v", f"{kbps}k", "-profile:v", "high", "-level:v", "4.1",
                    "-x264-params", "ratetol=0.1:mbtree=0:stitchable=1",
                    "-pix_fmt", "yuv420p", "-threads", str(threads),
                    "-g", str(fps * 2), "-keyint_min", str(fps),
                    "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
                    "-color_range", "tv", "-fps_mode", "cfr", "-r", str(fps),
                    "-passlogfile", str(passlog),
                ]  # fmt: skip

            src = ["-i", str(source), "-map", "0:v:0"]
            try:
                if stats.is_file():
                    await asyncio.to_thread(shutil.copyfile, stats, own)
                    self.cache.touch(stats)
                else:
                    await run_ffmpeg([*src, "-an", *encode(first), "-pass", "1", "-f", "null",
                                      "-"], binary=self.binary, nice=nice)  # fmt: skip
                    stats.parent.mkdir(parents=True, exist_ok=True)
                    kept = part_path(stats)
                    await asyncio.to_thread(shutil.copyfile, own, kept)
                    await publish(kept, stats)
                audio = ["-an"]
                if audio_kbps:
                    audio = ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{audio_kbps}k",
                             "-ar", str(AUDIO_RATE), "-ac", "2"]  # fmt: skip
                await run_ffmpeg(
                    [*src, *audio, *encode(video_kbps), "-pass", "2", "-frames:v", str(frames),
                     "-video_track_timescale", str(timescale(fps)), "-f", "mp4", str(tmp)],
                    binary=self.binary, duration=frames / fps, nice=nice,
                )  # fmt: skip
            finally:
                for log_file in tmp.parent.glob(passlog.name + "*"):
                    log_file.unlink(missing_ok=True)

        return await self.ensure(key, make, background=background)

    async def preview_audio(self, soundtrack: Path, *, kbps: int, background: bool = False) -> Path:
        """Ensure the cached soundtrack ``soundtrack`` re-encoded at ``kbps`` is cached."""
        key = _digest({"v": SEGMENT_VERSION, "kind": "preview-audio",
                       "source": Path(soundtrack).stem, "kbps": kbps})  # fmt: skip

        async def make(tmp: Path, threads: int, nice: float | None) -> None:
            await run_ffmpeg(["-i", str(soundtrack), "-map", "0:a:0", "-vn", "-c:a", "aac",
                              "-b:a", f"{kbps}k", "-ac", "2", "-f", "mp4", str(tmp)],
                             binary=self.binary, nice=nice)  # fmt: skip

        return await self.ensure(key, make, ext="m4a", background=background)
