"""Assembly: cut the winning clips to the song, from cached segments.

The pipeline (each step a small ffmpeg process, so memory stays flat however many slots)::

    slot i's clip + slot i-1's tail ─ fit, transition, normalize ─▶ segment i   (cached,
    closing roll (Pillow, one tall PNG) ─ scrolled ─────────────────▶ credits     content-
    song ─ trim, pad, fade, AAC once ───────────────────────────────▶ soundtrack  addressed)
    segments ─ concat demuxer, stream copy ─┬─▶ master.mp4 (moov first, title/artist/comment)
    soundtrack ─────────────────────────────┘      ─ two-pass, or the master itself ─▶ preview

:func:`render_segments` makes every segment, the roll and the soundtrack of a cut, at most
two at a time, at low priority: the worker calls it whenever a slot's leader (or its
neighbour) changes, while the vote goes on. :func:`assemble_master` then renders only
what is missing and joins by stream copy, which takes about as long as copying the bytes;
:func:`make_preview` gives the file to post under an upload limit. :func:`assemble` does
all three in one call (what ``CutService.render`` uses).

The timeline, fitting and transitions are described in :mod:`bot.media.segments`: every
clip fills its slot exactly (trimmed from its in-point, slowed down or held), and every
transition is centred on its slot boundary, so the cut lands on the beat. Slot lengths are
rounded to whole frames on cumulative boundaries (``round(t * fps)``) so the cut never
drifts from the song however many slots there are.

When a song is given, the clips' own audio is dropped and the song is the soundtrack. With
no song the clips' audio is kept (clips without audio get silence), so the joined file has
one continuous audio track.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import av

from bot.core.cut import SlotPick, cut_identity
from bot.errors import MediaError
from bot.media.credits import (
    END_CARD_SECONDS,
    Credits,
    end_card_lines,
    render_credits_roll,
    render_title_card,
    roll_digest,
    roll_lines,
    roll_seconds,
    slot_credit,
)
from bot.media.ffmpeg import publish, run_ffmpeg
from bot.media.probe import probe_async
from bot.media.segments import (
    AUDIO_RATE,
    X264_CRF,
    X264_PRESET,
    CutOptions,
    SegmentCache,
    SegmentRenderer,
    SlotSegment,
    media_id,
    plan_segments,
)

__all__ = [
    "X264_CRF",
    "X264_PRESET",
    "AssemblyResult",
    "CutOptions",
    "CutSlot",
    "MasterResult",
    "Preview",
    "SegmentRenderer",
    "assemble",
    "assemble_master",
    "cut_identity_of",
    "frame_plan",
    "make_preview",
    "render_segments",
    "segment_preview",
]

log = logging.getLogger(__name__)

#: seconds of fade at the end of the song
FADE_SECONDS = 2.0
#: seconds the title card stays over the opening (never longer than the first slot)
TITLE_SECONDS = 3.0
#: the preview aims at this fraction of its byte limit: two-pass lands within about 2 %
#: of what it is asked, so the file ends between 95 % and 100 % of the limit
PREVIEW_TARGET = 0.98
#: second passes run again, at a bitrate cut by the overshoot, when one came out over the limit
PREVIEW_RETRIES = 1
#: the least bits per pixel and frame a preview keeps before it drops to a smaller size:
#: 300 kbit/s at 640x360, 24 fps
PREVIEW_MIN_BPP = 300_000 / (640 * 360 * 24)
PREVIEW_SHORT_SIDES = (1080, 720, 540, 360, 270, 180, 144)
#: a preview made from segments: the bytes that simple segments leave over go to the
#: others in steps of this fraction of the bitrate, at most this many times, until the
#: segments fill this fraction of what they may take
PREVIEW_STEP = 0.04
PREVIEW_ROUNDS = 2
PREVIEW_FULL = 0.97

MASTER_NAME = "master.mp4"
PREVIEW_NAME = "preview.mp4"
MANIFEST_NAME = "manifest.json"

Progress = Callable[[str, float], None]
T = TypeVar("T")


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
    #: the clip's media store key (its content id); None for a loose file (tests, bench)
    media_key: str | None = None
    in_point: float = 0.0  # second of the clip the slot starts at (a moderator's trim)
    #: lineage: the clip this one extends (/extend) or continues (chain mode)
    parent_clip_id: int | None = None
    lineage: str = ""  # "extend" | "chain" (with parent_clip_id)
    pinned: bool = False  # a moderator pinned the clip to this slot
    continuity_broken: bool = False  # chained from a clip that is no longer slot N-1's


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


@dataclass
class AssemblyResult:
    """The files :func:`assemble` wrote, and the length of the video in seconds."""

    master: Path
    preview: Path
    manifest: Path
    duration: float
    identity: str = ""
    #: the preview is the master itself (it fit the limit)
    preview_is_master: bool = False


@dataclass
class MasterResult:
    """What :func:`assemble_master` wrote."""

    master: Path
    manifest: Path
    duration: float
    identity: str
    size_bytes: int
    segments_rendered: int  # segments not found in the cache
    #: the joined segments (in order) and their frames, and the soundtrack: what
    #: :func:`segment_preview` encodes again, segment by segment
    segments: list[Path] = field(default_factory=list)
    segment_frames: list[int] = field(default_factory=list)
    soundtrack: Path | None = None
    options: CutOptions = field(default_factory=CutOptions)
    tags: list[str] = field(default_factory=list)


@dataclass
class Preview:
    """What :func:`make_preview` wrote: ``path`` of ``size_bytes`` at ``width``x``height``."""

    path: Path
    size_bytes: int
    width: int
    height: int
    is_master: bool  # the master fit the limit and is the preview
    video_kbps: float = 0.0


@dataclass
class _Cut:
    """Everything derived from the inputs of a cut before anything is rendered."""

    slots: list[CutSlot]
    options: CutOptions
    frames: list[int]
    plan: list[SlotSegment]
    lines: list[tuple[str, str, str]]
    roll: str  # roll digest
    end: list[tuple[str, str, str]]  # the end card's lines
    end_digest: str
    end_frames: int  # of credit_frames, the end card's
    credit_frames: int  # roll and end card
    keep_audio: bool
    identity: str

    @property
    def total_frames(self) -> int:
        return sum(self.frames) + self.credit_frames

    @property
    def seconds(self) -> float:
        return self.total_frames / self.options.fps

    @property
    def segment_frames(self) -> list[int]:
        """Frames of each segment in join order (what :func:`_ensure_all` returns)."""
        roll = self.credit_frames - self.end_frames
        return [seg.frames for seg in self.plan] + [n for n in (roll, self.end_frames) if n]


def cut_identity_of(
    slots: list[CutSlot],
    options: CutOptions,
    *,
    song_key: str | None = None,
    title: str = "",
    credits: Credits | None = None,
) -> str:
    """The identity (:func:`bot.core.cut.cut_identity`) of rendering ``slots`` so."""
    picks = [
        SlotPick(s.index, s.clip_id, media_id(Path(s.clip_path), s.media_key), s.start,
                 s.duration, s.in_point)
        for s in slots
    ]  # fmt: skip
    lines = roll_lines(title, slots, credits or Credits()) + end_card_lines(credits or Credits())
    return cut_identity(
        picks,
        fit=options.fit,
        transition=options.transition,
        transition_seconds=options.transition_seconds,
        width=options.width,
        height=options.height,
        fps=options.fps,
        song_key=song_key,
        credits=["\t".join(line) for line in lines],
    )


def _prepare(
    slots: list[CutSlot],
    song: Path | None,
    options: CutOptions,
    *,
    title: str,
    credits: Credits | None,
    credits_seconds: float | None,
    title_seconds: float,
    song_key: str | None,
) -> _Cut:
    if not slots:
        raise ValueError("a cut needs at least one slot")
    if any(slot.duration <= 0 for slot in slots):
        raise ValueError("every slot needs a positive duration")
    credits = credits or Credits()
    slots = sorted(slots, key=lambda s: s.index)
    fps = options.fps
    frames = frame_plan([s.duration for s in slots], fps)
    clips = [(Path(s.clip_path), media_id(Path(s.clip_path), s.media_key), s.in_point)
             for s in slots]  # fmt: skip
    title_frames = round(title_seconds * fps) if title and title_seconds > 0 else 0
    plan = plan_segments(frames, clips, options.transition_frames, title=title or None,
                         title_frames=title_frames)  # fmt: skip
    lines = roll_lines(title, slots, credits)
    end = end_card_lines(credits)
    if credits_seconds is None:
        credits_seconds = roll_seconds(len(lines), options.width, options.height)
        credits_seconds += END_CARD_SECONDS
    credit_frames = round(credits_seconds * fps) if credits_seconds > 0 else 0
    end_frames = min(round(END_CARD_SECONDS * fps), credit_frames // 3)
    return _Cut(
        slots=slots,
        options=options,
        frames=frames,
        plan=plan,
        lines=lines,
        roll=roll_digest(lines, options.width, options.height),
        end=end,
        end_digest=roll_digest(end, options.width, options.height),
        end_frames=end_frames,
        credit_frames=credit_frames,
        keep_audio=song is None,
        identity=cut_identity_of(
            slots, options, song_key=song_key, title=title, credits=credits
        ),  # fmt: skip
    )


def _subtitle(credits: Credits) -> str:
    return credits.song_credit or "a crowdcut music video"


async def _all_or_none(jobs: list[Awaitable[T]]) -> list[T]:
    """Run ``jobs`` together; if one fails (or the caller is cancelled), cancel the others
    (their ffmpeg processes stop) before raising."""
    tasks = [asyncio.ensure_future(j) for j in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _write_listing(work: Path, paths: list[Path]) -> Path:
    """The ffconcat file that joins ``paths`` in order (what the concat demuxer reads)."""
    listing = work / "segments.ffconcat"
    body = ["ffconcat version 1.0"]
    body += ["file '" + str(p.resolve()).replace("'", "'\\''") + "'" for p in paths]
    listing.write_text("\n".join(body) + "\n", encoding="utf-8")
    return listing


async def _ensure_all(
    cut: _Cut,
    renderer: SegmentRenderer,
    *,
    song: Path | None,
    song_key: str | None,
    title: str,
    credits: Credits,
    background: bool,
    report: Progress,
) -> tuple[list[Path], Path | None]:
    """Every segment (in join order) and the soundtrack, rendering what is missing."""
    options = cut.options
    scratch = renderer.cache.root / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)

    async def title_png() -> Path:
        dest = scratch / f"title-{os.getpid()}-{id(cut)}.png"
        return await asyncio.to_thread(render_title_card, dest, title, _subtitle(credits),
                                       options.width, options.height)  # fmt: skip

    async def roll_png() -> tuple[Path, int]:
        dest = scratch / f"roll-{os.getpid()}-{id(cut)}.png"
        return await asyncio.to_thread(render_credits_roll, dest, cut.lines, options.width,
                                       options.height)  # fmt: skip

    total = max(1, sum(seg.frames for seg in cut.plan) + cut.credit_frames)
    done: dict[int, float] = {}

    def part(i: int, frames: int) -> Callable[[float], None]:
        def update(fraction: float) -> None:
            done[i] = fraction * frames
            report("normalize", min(1.0, sum(done.values()) / total))

        return update

    jobs = [
        renderer.slot_segment(seg, options, keep_audio=cut.keep_audio, title_png=title_png,
                              background=background, progress=part(seg.index, seg.frames))
        for seg in cut.plan
    ]  # fmt: skip

    async def end_png() -> tuple[Path, int]:
        dest = scratch / f"end-{os.getpid()}-{id(cut)}.png"
        return await asyncio.to_thread(render_credits_roll, dest, cut.end, options.width,
                                       options.height)  # fmt: skip

    roll_frames = cut.credit_frames - cut.end_frames
    for png, digest, frames, tag in ((roll_png, cut.roll, roll_frames, -1),
                                     (end_png, cut.end_digest, cut.end_frames, -2)):  # fmt: skip
        if frames:
            jobs.append(
                renderer.credits_segment(
                    png,
                    digest,
                    frames,
                    options,
                    keep_audio=cut.keep_audio,
                    background=background,
                    progress=part(tag, frames),
                )  # fmt: skip
            )

    async def soundtrack() -> Path | None:
        if song is None:
            return None
        # the song encodes alongside the segments (one light audio process)
        return await renderer.song(Path(song), offset=max(0.0, cut.slots[0].start),
                                   seconds=cut.seconds, fade=FADE_SECONDS, song_media=song_key,
                                   background=background,
                                   progress=lambda f: report("song", f))  # fmt: skip

    try:
        results = await _all_or_none([soundtrack(), *jobs])
    finally:
        for png in scratch.glob(f"*-{os.getpid()}-{id(cut)}.png"):
            png.unlink(missing_ok=True)
    report("normalize", 1.0)
    if song is not None:
        report("song", 1.0)
    return list(results[1:]), results[0]


async def render_segments(
    slots: list[CutSlot],
    renderer: SegmentRenderer,
    *,
    options: CutOptions,
    title: str,
    song: Path | None = None,
    song_key: str | None = None,
    credits: Credits | None = None,
    credits_seconds: float | None = None,
    title_seconds: float = TITLE_SECONDS,
    background: bool = True,
    progress: Progress | None = None,
    preview_limit_bytes: int | None = None,
) -> str:
    """Make sure every segment of this cut, its roll and its soundtrack are cached.

    What the worker runs in the background while the vote goes on (low priority, at most
    ``renderer.concurrency`` ffmpeg processes). Segments already cached are not touched, so
    calling it again after a vote costs one or two segments. With ``preview_limit_bytes``,
    when the master would not fit that limit, the preview encodes of the segments
    (:func:`segment_preview`) are made too, so that an approval only joins them. Returns the
    cut's identity.
    """
    cut = _prepare(slots, song, options, title=title, credits=credits,
                   credits_seconds=credits_seconds, title_seconds=title_seconds,
                   song_key=song_key)  # fmt: skip
    report = progress or (lambda stage, f: None)
    segments, soundtrack = await _ensure_all(cut, renderer, song=song, song_key=song_key,
                                             title=title, credits=credits or Credits(),
                                             background=background, report=report)  # fmt: skip
    if preview_limit_bytes is not None:
        files = [*segments, *([soundtrack] if soundtrack else [])]
        size = await asyncio.to_thread(lambda: sum(p.stat().st_size for p in files))
        if size > preview_limit_bytes:  # the master would not fit: its preview is needed
            plan = await plan_segment_preview(renderer, options=options,
                                              frames=cut.total_frames, soundtrack=soundtrack,
                                              keep_audio=cut.keep_audio,
                                              limit_bytes=preview_limit_bytes,
                                              background=background)  # fmt: skip
            await _preview_segments(renderer, plan, segments, cut.segment_frames,
                                    options.fps, background=background)  # fmt: skip
    return cut.identity


def _default_artist(slots: list[CutSlot]) -> str:
    names: list[str] = []
    for s in slots:
        if s.author and s.author != "anonymous" and s.author not in names:
            names.append(s.author)
    text = ", ".join(names) or "crowdcut"
    return text if len(text) <= 200 else text[:197] + "..."


async def assemble_master(
    slots: list[CutSlot],
    song: Path | None,
    out_dir: Path,
    renderer: SegmentRenderer,
    *,
    options: CutOptions,
    title: str,
    song_key: str | None = None,
    credits: Credits | None = None,
    credits_seconds: float | None = None,
    title_seconds: float = TITLE_SECONDS,
    artist: str | None = None,
    comment: str | None = None,
    progress: Progress | None = None,
) -> MasterResult:
    """Write ``out_dir/master.mp4`` and ``out_dir/manifest.json`` for this cut.

    Segments missing from the cache are rendered first (at normal priority); then the
    segments are joined by stream copy with the soundtrack muxed in, moov atom first,
    tagged with ``title``, ``artist`` (default: the authors) and ``comment`` (default: the
    song's credit and the cut's identity). Both files are written atomically.
    """
    report: Progress = progress or (lambda stage, fraction: None)
    credits = credits or Credits()
    cut = _prepare(slots, song, options, title=title, credits=credits,
                   credits_seconds=credits_seconds, title_seconds=title_seconds,
                   song_key=song_key)  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rendered_before = renderer.rendered
    segments, soundtrack = await _ensure_all(cut, renderer, song=song, song_key=song_key,
                                             title=title, credits=credits, background=False,
                                             report=report)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix=".master-", dir=out_dir))
    try:
        report("join", 0.0)
        listing = _write_listing(work, segments)
        master_tmp = work / MASTER_NAME
        if comment is None:
            bits = [credits.song_credit, "made with crowdcut", f"cut {cut.identity[:16]}"]
            comment = " · ".join(b for b in bits if b)
        args = ["-f", "concat", "-safe", "0", "-i", str(listing)]
        if soundtrack is not None:
            args += ["-i", str(soundtrack), "-map", "0:v:0", "-map", "1:a:0"]
        else:
            args += ["-map", "0:v:0", "-map", "0:a:0"]
        tags = [
            "-map_metadata", "-1",
            "-metadata", f"title={title}",
            "-metadata", f"artist={artist if artist is not None else _default_artist(cut.slots)}",
            "-metadata", f"comment={comment}",
        ]  # fmt: skip
        args += ["-c", "copy", *tags, "-movflags", "+faststart", "-f", "mp4", str(master_tmp)]
        await run_ffmpeg(args, binary=renderer.binary, duration=cut.seconds,
                         progress=lambda f: report("join", f))  # fmt: skip
        duration = cut.seconds
        manifest_tmp = work / MANIFEST_NAME
        manifest = _manifest(cut, title=title, duration=duration, song=song, credits=credits)
        manifest_tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                encoding="utf-8")  # fmt: skip
        size = master_tmp.stat().st_size
        result = MasterResult(
            master=await publish(master_tmp, out_dir / MASTER_NAME),
            manifest=await publish(manifest_tmp, out_dir / MANIFEST_NAME),
            duration=duration,
            identity=cut.identity,
            size_bytes=size,
            segments_rendered=renderer.rendered - rendered_before,
            segments=segments,
            segment_frames=cut.segment_frames,
            soundtrack=soundtrack,
            options=cut.options,
            tags=tags,
        )
        log.info("master of %r: %.2f s of video, %d segments rendered, in %.1f s", title,
                 duration, result.segments_rendered, time.monotonic() - started)  # fmt: skip
        return result
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


def preview_size(width: int, height: int, fps: float, video_kbps: float) -> tuple[int, int]:
    """The largest frame (master size or a standard smaller one) the bitrate can carry with
    at least :data:`PREVIEW_MIN_BPP` bits per pixel: below about 300 kbit/s a 360p picture
    goes to 270p, and so on. Pure."""
    short = min(width, height)
    sides = [short, *(s for s in PREVIEW_SHORT_SIDES if s < short)]
    for side in sides:
        scale = side / short
        w, h = max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
        if video_kbps * 1000 >= PREVIEW_MIN_BPP * w * h * fps:
            return w, h
    return w, h


async def make_preview(
    master: Path,
    dest: Path,
    *,
    limit_bytes: int,
    ffmpeg_binary: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> Preview:
    """Write to ``dest`` the file to post where at most ``limit_bytes`` may be uploaded.

    When the master fits, the preview *is* the master (a hard link, or a copy). Otherwise a
    two-pass encode from the master's known duration aims at :data:`PREVIEW_TARGET` of the
    limit: the audio is encoded first and measured, the container's overhead estimated,
    and the rest goes to the video, at a smaller size when the bitrate would be too thin
    for the master's. A preview is never larger than its master. Raises
    :class:`MediaError` when even the smallest preview cannot fit or the result is over
    the limit (a 413 from Discord: call again with a smaller limit).
    """
    on_progress = progress or (lambda f: None)
    master, dest = Path(master), Path(dest)
    info = await probe_async(master)
    if info.size_bytes <= limit_bytes:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
        tmp.unlink(missing_ok=True)
        try:
            await asyncio.to_thread(os.link, master, tmp)
        except OSError:
            await asyncio.to_thread(shutil.copyfile, master, tmp)
        await publish(tmp, dest)
        on_progress(1.0)
        return Preview(dest, info.size_bytes, info.width or 0, info.height or 0, True)
    duration = info.duration
    if not info.has_video or duration <= 0:
        raise MediaError(f"cannot make a preview of {master.name}: not a video with a duration")
    fps = float(info.frame_rate or 24)
    target = limit_bytes * PREVIEW_TARGET
    total_kbps = target * 8 / 1000 / duration
    audio_kbps = 0
    if info.has_audio:
        audio_kbps = _audio_kbps(total_kbps)
    work = Path(tempfile.mkdtemp(prefix=".preview-", dir=dest.parent))
    try:
        audio = work / "audio.m4a"
        audio_bytes, audio_packets = 0, 0
        if audio_kbps:
            await run_ffmpeg(["-i", str(master), "-map", "0:a:0", "-vn", "-c:a", "aac",
                              "-b:a", f"{audio_kbps}k", "-ac", "2", "-f", "mp4", str(audio)],
                             binary=ffmpeg_binary)  # fmt: skip
            audio_bytes, audio_packets = await asyncio.to_thread(_payload, audio)
        frames = round(duration * fps)
        # the mp4 tables cost about 11 bytes a packet (size, offset, times), plus headers
        overhead = 1024 + 11 * (frames + audio_packets)
        video_bytes = target - audio_bytes - overhead
        video_kbps = video_bytes * 8 / 1000 / duration
        if video_kbps < 30:
            raise MediaError(
                f"a {duration:.0f} s preview cannot fit in {limit_bytes} bytes "
                f"({total_kbps:.0f} kbit/s available)"
            )
        pw, ph = preview_size(info.width or 2, info.height or 2, fps, video_kbps)
        vf = f"scale={pw}:{ph}:flags=bicubic,setsar=1,format=yuv420p"
        passlog = str(work / "pass")
        kbps = max(1, int(video_kbps))
        # a tight rate tolerance and no macroblock tree: on short videos x264's two-pass
        # otherwise overshoots by up to 8 % (within 1 % on minutes-long ones either way)
        encode = ["-vf", vf, "-c:v", "libx264", "-preset", X264_PRESET, "-b:v", f"{kbps}k",
                  "-x264-params", "ratetol=0.1:mbtree=0", "-passlogfile", passlog]  # fmt: skip
        await run_ffmpeg(
            ["-i", str(master), *encode, "-pass", "1", "-an", "-f", "null", "-"],
            binary=ffmpeg_binary,
            duration=duration,
            progress=lambda f: on_progress(f * 0.5),
        )
        out = work / "preview.mp4"
        for again in range(PREVIEW_RETRIES + 1):
            second = ["-i", str(master)]
            if audio_kbps:
                second += ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "copy"]
            second += [*encode, "-pass", "2", "-movflags", "+faststart", "-f", "mp4", str(out)]
            await run_ffmpeg(
                second,
                binary=ffmpeg_binary,
                duration=duration,
                progress=lambda f: on_progress(0.5 + f * 0.5),
            )
            size = out.stat().st_size
            log.info("preview %dx%d at %d kbit/s: %d bytes of %d (%.1f %%)", pw, ph, kbps,
                     size, limit_bytes, 100 * size / limit_bytes)  # fmt: skip
            if size <= limit_bytes:
                break
            if again == PREVIEW_RETRIES:
                raise MediaError(f"the preview came out at {size} bytes, over {limit_bytes}")
            # over the limit (a few seconds of busy video can overshoot by 10 %): pass 2
            # again from the same first pass, the video's bitrate cut by what was over
            over = size - min(target, limit_bytes * 0.97)
            kbps = max(1, int(kbps * (1 - over / max(1, size - audio_bytes)) * 0.98))
            encode[encode.index("-b:v") + 1] = f"{kbps}k"
        await publish(out, dest)
        return Preview(dest, size, pw, ph, False, video_kbps)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


def _audio_kbps(total_kbps: float) -> int:
    """The preview's audio bitrate for ``total_kbps`` available in all."""
    return 96 if total_kbps >= 600 else (64 if total_kbps >= 250 else 32)


@dataclass(frozen=True)
class PreviewPlan:
    """How a preview is encoded segment by segment (:func:`plan_segment_preview`)."""

    width: int
    height: int
    video_kbps: int
    audio_kbps: int
    audio: Path | None  # the soundtrack at ``audio_kbps``; None: each segment carries audio
    video_bytes: int  # what the segments may take in all (with their audio when they carry it)


async def plan_segment_preview(
    renderer: SegmentRenderer,
    *,
    options: CutOptions,
    frames: int,
    soundtrack: Path | None,
    keep_audio: bool,
    limit_bytes: int,
    background: bool = False,
) -> PreviewPlan:
    """The bitrates and frame size of a preview of ``frames`` frames under ``limit_bytes``
    (the same arithmetic as :func:`make_preview`: the audio is encoded first and measured,
    the container's tables estimated, the rest goes to the video). Deterministic for a
    given cut length, soundtrack and limit, so the background renders and the approval
    arrive at the same preview segments."""
    fps = options.fps
    duration = frames / fps
    target = limit_bytes * PREVIEW_TARGET
    total_kbps = target * 8 / 1000 / duration
    audio_kbps = _audio_kbps(total_kbps) if (soundtrack is not None or keep_audio) else 0
    audio: Path | None = None
    if soundtrack is not None:
        audio = await renderer.preview_audio(soundtrack, kbps=audio_kbps, background=background)
        audio_bytes, audio_packets = await asyncio.to_thread(_payload, audio)
    else:  # each segment carries its own AAC at that rate
        audio_bytes = audio_kbps * 125 * duration
        audio_packets = round(duration * AUDIO_RATE / 1024) if audio_kbps else 0
    overhead = 1024 + 11 * (frames + audio_packets)
    video_kbps = (target - audio_bytes - overhead) * 8 / 1000 / duration
    if video_kbps < 30:
        raise MediaError(
            f"a {duration:.0f} s preview cannot fit in {limit_bytes} bytes "
            f"({total_kbps:.0f} kbit/s available)"
        )
    pw, ph = preview_size(options.width, options.height, fps, video_kbps)
    video_bytes = target - overhead - (audio_bytes if audio is not None else 0)
    return PreviewPlan(pw, ph, max(1, int(video_kbps)), audio_kbps, audio, int(video_bytes))


async def _preview_segments(
    renderer: SegmentRenderer,
    plan: PreviewPlan,
    segments: list[Path],
    frames: list[int],
    fps: int,
    *,
    background: bool,
) -> list[Path]:
    """The preview encodes of ``segments``, spending the plan's bytes as a two-pass encode
    of the whole video would: every segment first gets the plan's bitrate; segments too
    simple to use it (a title, a still, the roll) leave bytes over, which go to the
    segments that used theirs, in steps of :data:`PREVIEW_STEP` of the bitrate (so that a
    vote, which changes a segment or two, mostly leaves the others' encodes cached)."""
    seconds = [n / fps for n in frames]
    kbps = [plan.video_kbps] * len(segments)
    audio_kbps = 0 if plan.audio else plan.audio_kbps
    done: dict[tuple[int, int], Path] = {}

    async def encode(wanted: list[int]) -> None:
        paths = await _all_or_none([
            renderer.preview_segment(segments[i], width=plan.width, height=plan.height,
                                     fps=fps, frames=frames[i], video_kbps=kbps[i],
                                     audio_kbps=audio_kbps, first_pass_kbps=plan.video_kbps,
                                     background=background)
            for i in wanted
        ])  # fmt: skip
        for i, path in zip(wanted, paths, strict=True):
            done[(i, kbps[i])] = path

    await encode(list(range(len(segments))))
    step = max(1, round(plan.video_kbps * PREVIEW_STEP))
    for _ in range(PREVIEW_ROUNDS):
        files = [done[(i, k)] for i, k in enumerate(kbps)]
        sizes = await asyncio.to_thread(lambda files=files: [_mdat_bytes(p) for p in files])
        # the last segment (the end card, which names the approving moderators) counts
        # for its nominal share, so that approving does not move the others' bitrates
        sizes[-1] = max(sizes[-1], round(kbps[-1] * 125 * seconds[-1]))
        left = plan.video_bytes - sum(sizes)
        log.debug("preview segments: %s kbit/s -> %s bytes, %d of %d bytes left", kbps,
                  sizes, left, plan.video_bytes)  # fmt: skip
        if left < plan.video_bytes * (1 - PREVIEW_FULL):
            break
        # a segment that came within 10 % of its bitrate could have used more
        hungry = [i for i, size in enumerate(sizes[:-1])
                  if size * 8 / 1000 / seconds[i] >= 0.9 * kbps[i]]  # fmt: skip
        if not hungry:
            break
        # x264 lands a little over on a few seconds: aim 10 % under what is left
        more = 0.9 * left * 8 / 1000 / sum(seconds[i] for i in hungry)
        raise_by = int(more // step) * step
        if raise_by <= 0:
            break
        for i in hungry:
            kbps[i] += raise_by
        await encode(hungry)
    return [done[(i, k)] for i, k in enumerate(kbps)]


async def segment_preview(
    master: MasterResult,
    dest: Path,
    renderer: SegmentRenderer,
    *,
    limit_bytes: int,
    progress: Callable[[float], None] | None = None,
) -> Preview:
    """Write to ``dest`` the file to post where at most ``limit_bytes`` may be uploaded,
    from the master's own segments.

    When the master fits, the preview *is* the master. Otherwise each segment is encoded
    again, two-pass, at the bitrate and size of :func:`plan_segment_preview` (cached: the
    background renders make them while the vote goes on, so an approval usually finds
    them all), and the encodes are joined by stream copy with the soundtrack at the
    preview's audio rate, tagged like the master. Should the join still come out over the
    limit, the whole master is encoded again by :func:`make_preview`.
    """
    on_progress = progress or (lambda f: None)
    if master.size_bytes <= limit_bytes or not master.segments:
        return await make_preview(master.master, dest, limit_bytes=limit_bytes,
                                  ffmpeg_binary=renderer.binary, progress=on_progress)  # fmt: skip
    o = master.options
    frames = sum(master.segment_frames)
    plan = await plan_segment_preview(renderer, options=o, frames=frames,
                                      soundtrack=master.soundtrack,
                                      keep_audio=master.soundtrack is None,
                                      limit_bytes=limit_bytes)  # fmt: skip
    parts = await _preview_segments(renderer, plan, master.segments, master.segment_frames,
                                    o.fps, background=False)  # fmt: skip
    on_progress(0.8)
    dest = Path(dest)
    work = Path(tempfile.mkdtemp(prefix=".preview-", dir=dest.parent))
    try:
        listing = _write_listing(work, parts)
        out = work / PREVIEW_NAME
        args = ["-f", "concat", "-safe", "0", "-i", str(listing)]
        if plan.audio is not None:
            args += ["-i", str(plan.audio), "-map", "0:v:0", "-map", "1:a:0"]
        else:
            args += ["-map", "0:v:0", *(["-map", "0:a:0"] if plan.audio_kbps else [])]
        args += ["-c", "copy", *master.tags, "-movflags", "+faststart", "-f", "mp4", str(out)]
        await run_ffmpeg(args, binary=renderer.binary, duration=frames / o.fps)
        size = out.stat().st_size
        log.info("preview from %d segments, %dx%d at %d kbit/s: %d bytes of %d (%.1f %%)",
                 len(parts), plan.width, plan.height, plan.video_kbps, size, limit_bytes,
                 100 * size / limit_bytes)  # fmt: skip
        if size > limit_bytes:
            log.warning("the segment preview came out over its limit; encoding it whole")
            return await make_preview(master.master, dest, limit_bytes=limit_bytes,
                                      ffmpeg_binary=renderer.binary,
                                      progress=on_progress)  # fmt: skip
        await publish(out, dest)
        on_progress(1.0)
        return Preview(dest, size, plan.width, plan.height, False, float(plan.video_kbps))
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


def _mdat_bytes(path: Path) -> int:
    """Bytes of the media data in the mp4 ``path`` (its top-level ``mdat`` boxes): what a
    stream-copy join carries of it, without its own tables."""
    total = 0
    with open(path, "rb") as f:
        while header := f.read(8):
            if len(header) < 8:
                break
            size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            skip = size - 8
            if size == 1:  # a 64-bit size follows
                size = int.from_bytes(f.read(8), "big")
                skip = size - 16
            elif size == 0:  # to the end of the file
                here = f.tell()
                skip = os.fstat(f.fileno()).st_size - here
                size = skip + 8
            if kind == b"mdat":
                total += size
            f.seek(skip, os.SEEK_CUR)
    return total


def _payload(path: Path) -> tuple[int, int]:
    """Bytes and count of the packets in ``path`` (what muxing it again will carry)."""
    with av.open(str(path)) as container:
        sizes = [packet.size for packet in container.demux() if packet.size]
    return sum(sizes), len(sizes)


def _manifest(
    cut: _Cut, *, title: str, duration: float, song: Path | None, credits: Credits
) -> dict[str, object]:
    fps = cut.options.fps
    entries = []
    cursor = 0
    for slot, n in zip(cut.slots, cut.frames, strict=True):
        entry = {
            "index": slot.index,
            "start": slot.start,
            "duration": slot.duration,
            "video_start": round(cursor / fps, 6),
            "video_frames": n,
            "clip_id": slot.clip_id,
            "author": slot.author or "anonymous",
            "prompt": slot.prompt,
            "backend": slot.backend,
            "model": slot.model,
            "votes": dict(slot.votes),
            "reused": slot.reused,
            "pinned": slot.pinned,
            "in_point": slot.in_point,
            "parent_clip_id": slot.parent_clip_id,
            "lineage": slot_credit(slot)["lineage"],
        }
        entries.append(entry)
        cursor += n
    o = cut.options
    return {
        "title": title,
        "identity": cut.identity,
        "duration": round(duration, 6),
        "width": o.width,
        "height": o.height,
        "fps": fps,
        "transition": {
            "type": o.transition,
            "frames": o.transition_frames,
            "seconds": o.transition_frames / fps,
        },  # fmt: skip
        "fit": o.fit,
        "credits_seconds": cut.credit_frames / fps,
        "song": song.name if song else None,
        "credits": {
            "song": credits.song_credit,
            "approved_by": list(credits.moderators),
            "slots": [slot_credit(s) for s in cut.slots],
        },
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
    credits_seconds: float | None = 4.0,
    ffmpeg_binary: str | None = None,
    progress: Progress | None = None,
    transition: str = "cut",
    transition_seconds: float = 0.0,
    fit: str = "hold",
    credits: Credits | None = None,
    song_key: str | None = None,
    title_seconds: float = TITLE_SECONDS,
    renderer: SegmentRenderer | None = None,
    cache_dir: Path | None = None,
) -> AssemblyResult:
    """Cut ``slots`` (joined in slot ``index`` order) to ``song`` and write the results.

    Writes ``master.mp4`` (H.264 High/yuv420p + AAC, WxH at ``fps``, moov atom first),
    ``preview.mp4`` (the master when it fits ``preview_limit_bytes``, else a smaller
    encode under it) and ``manifest.json`` into ``out_dir``, each atomically.
    ``credits_seconds=None`` gives the roll the time it needs to be read.
    ``progress(stage, fraction)`` is called with the stages ``"normalize"``, ``"song"``,
    ``"join"``, ``"preview"`` and ``"done"``. Segments go to ``renderer``'s cache, or
    ``cache_dir``'s, or (neither given) a temporary folder inside ``out_dir`` removed at the
    end, also on failure or cancellation (which stops every ffmpeg process).

    Raises :class:`InvalidClip` for a slot whose clip is not usable video and
    :class:`MediaError` when ffmpeg fails.
    """
    options = CutOptions(width=width, height=height, fps=fps, transition=transition,
                         transition_seconds=transition_seconds, fit=fit)  # fmt: skip
    if not slots:
        raise ValueError("assemble needs at least one slot")
    report: Progress = progress or (lambda stage, fraction: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = None
    if renderer is None:
        if cache_dir is None:
            scratch = Path(tempfile.mkdtemp(prefix=".assembly-", dir=out_dir))
        renderer = SegmentRenderer(SegmentCache(cache_dir or scratch / "segments"),  # type: ignore[operator]
                                   ffmpeg_binary=ffmpeg_binary)  # fmt: skip
    try:
        report("normalize", 0.0)
        master = await assemble_master(slots, song, out_dir, renderer, options=options,
                                       title=title, song_key=song_key, credits=credits,
                                       credits_seconds=credits_seconds,
                                       title_seconds=title_seconds, progress=report)  # fmt: skip
        report("preview", 0.0)
        preview = await segment_preview(master, out_dir / PREVIEW_NAME, renderer,
                                        limit_bytes=preview_limit_bytes,
                                        progress=lambda f: report("preview", f))  # fmt: skip
        report("done", 1.0)
        return AssemblyResult(master=master.master, preview=preview.path,
                              manifest=master.manifest, duration=master.duration,
                              identity=master.identity,
                              preview_is_master=preview.is_master)  # fmt: skip
    finally:
        if scratch is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(scratch)
