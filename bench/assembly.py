"""Benchmark: crowdcut's segment cache vs moviepy vs a bare stream-copy join.

Usage::

    python bench/assembly.py [--clips 55] [--sizes 10,55,200] [--quick] [--cache DIR]
                             [--moviepy-path DIR] [--skip-moviepy] [--skip-quality]

It makes (once, cached in ``--cache``) ``--clips + 1`` clips of 3.5–4.5 s at 1280x720
(24, 30 and 25 fps, some without audio) and a synthesized song, then measures on those same
inputs a cut of 4 s slots with 0.5 s crossfades centred on the boundaries, output 1280x720
at 24 fps:

cold       ``render_segments`` into an empty cache, then ``assemble_master`` and
           ``make_preview`` (10 MiB): the whole cut from nothing;
approve    the same cut again with every segment cached: approval -> master, -> preview;
recut      one slot's clip swapped (two segments change), then the master;
moviepy    moviepy 2.x doing the same cut: every clip on a ``CompositeVideoClip`` timeline,
           each (but the first) with ``CrossFadeIn``, the credits, the song,
           ``write_videofile`` at our x264 preset and CRF;
copy       ``ffmpeg -f concat -c copy`` of the raw clips plus the song: the floor (its output
           is not a valid cut: no fitting, no transitions, mixed frame rates);
reference  the same cut rendered losslessly (x264 ``-qp 0``), against which the SSIM and PSNR
           of crowdcut's master and moviepy's output are measured over the slots (the
           credits, drawn differently by each, are left out).

Each run is its own subprocess. Wall time is measured around it and, for crowdcut, inside
it around the calls (the worker is a running process in production: no interpreter start);
CPU time is the ``RUSAGE_CHILDREN`` delta; peak memory is the largest sum of PSS over the
run's process tree (psutil ``memory_full_info``), sampled every 100 ms: PSS shares each
shared page among the processes mapping it, where RSS would count it once per process.
Then the cold render alone runs at each of ``--sizes`` clip counts (slots past the unique
clips reuse them through hard links, so every segment is really rendered).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.media.assembly import (  # noqa: E402
    X264_CRF,
    X264_PRESET,
    CutOptions,
    CutSlot,
    SegmentRenderer,
    assemble_master,
    frame_plan,
    make_preview,
    render_segments,
    segment_preview,
)
from bot.media.credits import Credits  # noqa: E402
from bot.media.ffmpeg import resolve_ffmpeg  # noqa: E402
from bot.media.segments import SegmentCache, plan_segments  # noqa: E402

log = logging.getLogger("bench.assembly")

WIDTH, HEIGHT, FPS = 1280, 720, 24
SLOT_SECONDS = 4.0
CROSSFADE = 0.5
CREDITS_SECONDS = 4.0
PREVIEW_LIMIT = 10 * 1024 * 1024
TITLE = "Benchmark cut"
SWAP_SLOT = 27

#: (width, height, fps, audio) cycled over the clips
KINDS: tuple[tuple[int, int, int, bool], ...] = (
    (1280, 720, 24, True),
    (1280, 720, 30, True),
    (1280, 720, 25, False),
)
PATTERNS = ("testsrc2", "testsrc", "smptehdbars", "rgbtestsrc")


# ---------------------------------------------------------------- inputs


def _ffmpeg(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [resolve_ffmpeg(), "-nostdin", "-hide_banner", "-y", *args],
        check=True,
        capture_output=True,
        text=True,
    )


def clip_seconds(i: int, base: float) -> float:
    """Clip lengths around the slot length: some are trimmed, some hold their last frame."""
    return round(base - 0.5 + (i % 5) * 0.25, 2)


def make_inputs(cache: Path, count: int, base_seconds: float) -> list[Path]:
    """Generate (or reuse) ``count`` unique source clips in ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(count):
        w, h, fps, audio = KINDS[i % len(KINDS)]
        seconds = clip_seconds(i, base_seconds)
        path = cache / f"clip-{i:03d}-{w}x{h}-{fps}-{'a' if audio else 'n'}-{seconds}.mp4"
        if not path.exists():
            pattern = PATTERNS[i % len(PATTERNS)]
            # grain makes the clips cost what real footage costs to encode
            args = ["-f", "lavfi", "-i", f"{pattern}=s={w}x{h}:r={fps}:d={seconds}"]
            if audio:
                args += ["-f", "lavfi", "-i", f"sine=frequency={220 + 20 * i}:d={seconds}"]
            args += ["-vf", "noise=alls=3:allf=t", "-c:v", "libx264", "-preset", "veryfast",
                     "-crf", "23", "-pix_fmt", "yuv420p"]  # fmt: skip
            if audio:
                args += ["-c:a", "aac", "-b:a", "128k"]
            tmp = path.with_suffix(".part.mp4")
            _ffmpeg([*args, "-t", str(seconds), str(tmp)])
            tmp.replace(path)
        clips.append(path)
    return clips


def slot_clips(cache: Path, base: list[Path], count: int) -> list[Path]:
    """``count`` distinct paths: the base clips, then hard links to them cycled."""
    if count <= len(base):
        return base[:count]
    links = cache / "links"
    links.mkdir(exist_ok=True)
    paths = list(base)
    for i in range(len(base), count):
        link = links / f"slot-{i:03d}{base[i % len(base)].suffix}"
        if not link.exists():
            os.link(base[i % len(base)], link)
        paths.append(link)
    return paths


def make_song(cache: Path, seconds: float) -> Path:
    from bot.media.song import synthesize_song

    path = cache / f"song-{seconds:g}s.m4a"
    if not path.exists():
        asyncio.run(synthesize_song(path, seconds, bpm=120, seed=1))
    return path


def build_slots(clips: list[Path]) -> list[CutSlot]:
    return [
        CutSlot(
            index=i,
            start=i * SLOT_SECONDS,
            duration=SLOT_SECONDS,
            clip_path=clip,
            clip_id=i,
            author=f"member{i % 23}",
            prompt=f"benchmark prompt {i}: a city at night in the rain, neon, slow dolly",
            backend="bench",
            model="testsrc",
            votes={"up": i % 7, "down": i % 3, "score": i % 7 - i % 3},
        )
        for i, clip in enumerate(clips)
    ]


OPTIONS = CutOptions(width=WIDTH, height=HEIGHT, fps=FPS, transition="crossfade",
                     transition_seconds=CROSSFADE, fit="hold")  # fmt: skip
CREDITS = Credits(song_credit="Benchmark song (synthesized)", moderators=("mod",))
#: what an approval adds: the approving moderator on the end card (rendered at approval)
APPROVED = Credits(song_credit="Benchmark song (synthesized)", moderators=("mod", "approver"))


# ---------------------------------------------------------------- workers (run in a child)


async def _master(slots, song, out, renderer, options=OPTIONS, credits=CREDITS):
    return await assemble_master(slots, song, out, renderer, options=options, title=TITLE,
                                 credits=credits, credits_seconds=CREDITS_SECONDS)  # fmt: skip


def worker_cold(ctx: dict) -> dict[str, object]:
    """Empty cache: render every segment (background path), join the master, then the
    preview (every segment encoded again for it, then joined)."""
    renderer = SegmentRenderer(ctx["segments"])

    async def go() -> dict[str, object]:
        t0 = time.perf_counter()
        # the master's segments first (what moviepy's run makes: the master), then the
        # preview's, which segment_preview encodes from them
        await render_segments(ctx["slots"], renderer, options=OPTIONS, title=TITLE,
                              song=ctx["song"], credits=CREDITS,
                              credits_seconds=CREDITS_SECONDS, background=False)  # fmt: skip
        t1 = time.perf_counter()
        master = await _master(ctx["slots"], ctx["song"], ctx["out"], renderer)
        t2 = time.perf_counter()
        preview = await segment_preview(master, ctx["out"] / "preview.mp4", renderer,
                                        limit_bytes=PREVIEW_LIMIT)  # fmt: skip
        t3 = time.perf_counter()
        return {"segments_s": t1 - t0, "master_s": t2 - t0, "preview_s": t3 - t2,
                "total_s": t3 - t0, "master": str(master.master),
                "preview": str(preview.path),
                "master_bytes": master.size_bytes, "preview_bytes": preview.size_bytes,
                "preview_size": f"{preview.width}x{preview.height}",
                "rendered": renderer.rendered, "duration": master.duration}  # fmt: skip

    return asyncio.run(go())


def worker_approve(ctx: dict) -> dict[str, object]:
    """Every segment and its preview encode cached (what the background renders leave):
    approval -> master, then -> preview. The approving moderator's name is new on the end
    card, so that card is rendered, for both."""
    renderer = SegmentRenderer(ctx["segments"])

    async def go() -> dict[str, object]:
        t0 = time.perf_counter()
        master = await _master(ctx["slots"], ctx["song"], ctx["out"], renderer,
                               credits=APPROVED)  # fmt: skip
        t1 = time.perf_counter()
        preview = await segment_preview(master, ctx["out"] / "preview.mp4", renderer,
                                        limit_bytes=PREVIEW_LIMIT)  # fmt: skip
        t2 = time.perf_counter()
        return {"master_s": t1 - t0, "preview_s": t2 - t1, "total_s": t2 - t0,
                "master": str(master.master), "master_bytes": master.size_bytes,
                "preview": str(preview.path), "preview_bytes": preview.size_bytes,
                "preview_size": f"{preview.width}x{preview.height}",
                "preview_of_limit": preview.size_bytes / PREVIEW_LIMIT,
                "rendered": master.segments_rendered}  # fmt: skip

    return asyncio.run(go())


def worker_twopass(ctx: dict) -> dict[str, object]:
    """The alternative to preview segments: the master (segments cached) encoded whole,
    two-pass, at approval (what crowdcut did before)."""
    renderer = SegmentRenderer(ctx["segments"])

    async def go() -> dict[str, object]:
        master = await _master(ctx["slots"], ctx["song"], ctx["out"], renderer,
                               credits=APPROVED)  # fmt: skip
        t0 = time.perf_counter()
        preview = await make_preview(master.master, ctx["out"] / "preview.mp4",
                                     limit_bytes=PREVIEW_LIMIT)  # fmt: skip
        t1 = time.perf_counter()
        return {"preview_s": t1 - t0, "total_s": t1 - t0, "preview": str(preview.path),
                "preview_bytes": preview.size_bytes,
                "preview_size": f"{preview.width}x{preview.height}",
                "preview_of_limit": preview.size_bytes / PREVIEW_LIMIT}  # fmt: skip

    return asyncio.run(go())


def worker_recut(ctx: dict) -> dict[str, object]:
    """One slot's clip swapped for another: only its segment and the next are rendered."""
    renderer = SegmentRenderer(ctx["segments"])
    slots = ctx["slots"]
    swap = min(SWAP_SLOT, len(slots) - 1)
    slots[swap].clip_path = ctx["spare"]
    slots[swap].clip_id = 9999

    async def go() -> dict[str, object]:
        t0 = time.perf_counter()
        master = await _master(slots, ctx["song"], ctx["out"], renderer)
        t1 = time.perf_counter()
        return {"master_s": t1 - t0, "total_s": t1 - t0, "master_bytes": master.size_bytes,
                "rendered": master.segments_rendered}  # fmt: skip

    return asyncio.run(go())


def worker_reference(ctx: dict) -> dict[str, object]:
    """The same cut, lossless: the yardstick for the quality figures."""
    options = CutOptions(width=WIDTH, height=HEIGHT, fps=FPS, transition="crossfade",
                         transition_seconds=CROSSFADE, fit="hold", lossless=True)  # fmt: skip
    renderer = SegmentRenderer(ctx["out"] / "segments")
    t0 = time.perf_counter()
    master = asyncio.run(_master(ctx["slots"], ctx["song"], ctx["out"], renderer, options))
    return {"total_s": time.perf_counter() - t0, "master": str(master.master),
            "master_bytes": master.size_bytes}  # fmt: skip


def worker_moviepy(ctx: dict) -> dict[str, object]:
    from moviepy import AudioFileClip, CompositeVideoClip, ImageClip, VideoFileClip, vfx

    from bot.media.credits import render_credits_card

    slots = ctx["slots"]
    frames = frame_plan([s.duration for s in slots], FPS)
    plan = plan_segments(frames, [(s.clip_path, str(s.clip_path), 0.0) for s in slots],
                         OPTIONS.transition_frames)  # fmt: skip
    t0 = time.perf_counter()
    layers = []
    for seg in plan:
        seconds = seg.clip.length / FPS
        video = VideoFileClip(str(seg.clip.path), audio=False, target_resolution=(WIDTH, HEIGHT))
        if video.duration >= seconds:
            video = video.subclipped(0, seconds)
        else:
            video = video.with_effects([vfx.Freeze(t="end", total_duration=seconds)])
        video = video.with_start(seg.start / FPS).with_position("center")
        if seg.blend:
            video = video.with_effects([vfx.CrossFadeIn(seg.blend / FPS)])
        layers.append(video)
    body = sum(frames) / FPS
    card = ctx["out"] / "credits.png"
    render_credits_card(card, TITLE, [(f"{s.index + 1}. {s.author}", "bench · testsrc")
                                      for s in slots], WIDTH, HEIGHT)  # fmt: skip
    layers.append(ImageClip(str(card)).with_duration(CREDITS_SECONDS).with_start(body))
    final = CompositeVideoClip(layers, size=(WIDTH, HEIGHT)).with_duration(body + CREDITS_SECONDS)
    audio = AudioFileClip(str(ctx["song"]))
    final = final.with_audio(audio.subclipped(0, min(audio.duration, final.duration)))
    target = ctx["out"] / "moviepy.mp4"
    final.write_videofile(
        str(target), fps=FPS, codec="libx264", audio_codec="aac", preset=X264_PRESET,
        ffmpeg_params=["-crf", str(X264_CRF), "-pix_fmt", "yuv420p"], logger=None,
    )  # fmt: skip
    final.close()
    for layer in layers:
        layer.close()
    return {"total_s": time.perf_counter() - t0, "master": str(target),
            "master_bytes": target.stat().st_size}  # fmt: skip


def worker_copy(ctx: dict) -> dict[str, object]:
    listing = ctx["out"] / "list.txt"
    listing.write_text("".join(f"file '{s.clip_path.resolve()}'\n" for s in ctx["slots"]))
    target = ctx["out"] / "copy.mp4"
    t0 = time.perf_counter()
    _ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-i", str(ctx["song"]),
             "-map", "0:v", "-map", "1:a", "-c", "copy", "-shortest", str(target)])  # fmt: skip
    return {"total_s": time.perf_counter() - t0, "master_bytes": target.stat().st_size}


WORKERS = {
    "cold": worker_cold,
    "approve": worker_approve,
    "recut": worker_recut,
    "twopass": worker_twopass,
    "reference": worker_reference,
    "moviepy": worker_moviepy,
    "copy": worker_copy,
}


# ---------------------------------------------------------------- measuring (in the parent)


@dataclass
class Measure:
    name: str
    clips: int
    wall: float
    cpu: float
    peak_pss: int
    peak_procs: int
    info: dict[str, object]


def _tree_pss(proc: psutil.Process) -> tuple[int, int]:
    total, count = 0, 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for member in members:
        try:
            total += member.memory_full_info().pss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total, count


def measure(name: str, cache: Path, count: int, args: argparse.Namespace, *, tag: str = "",
            segments: Path | None = None) -> Measure:  # fmt: skip
    out = cache / "runs" / f"{name}{tag}-{count}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--worker", name, "--cache", str(args.cache),
           "--n", str(count), "--unique", str(args.unique), "--out", str(out),
           "--segments", str(segments or out / "segments"),
           "--clip-seconds", str(args.clip_seconds)]  # fmt: skip
    env = dict(os.environ)
    if name == "moviepy" and args.moviepy_path:
        env["PYTHONPATH"] = os.pathsep.join([args.moviepy_path, str(ROOT)])
        env["IMAGEIO_FFMPEG_EXE"] = resolve_ffmpeg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = {"pss": 0, "procs": 0}
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    ps = psutil.Process(child.pid)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pss, procs = _tree_pss(ps)
            peak["pss"] = max(peak["pss"], pss)
            peak["procs"] = max(peak["procs"], procs)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = child.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode != 0:
        raise SystemExit(f"{name} run failed (exit {child.returncode})")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    info = json.loads(stdout.strip().splitlines()[-1])
    m = Measure(name, count, wall, cpu, peak["pss"], peak["procs"], info)
    inner = info.get("total_s")
    print(f"  {name + tag:10s} {count:4d} clips: wall {wall:7.1f} s (inside {inner or 0:6.2f} s)"
          f"  cpu {cpu:7.1f} s  peak PSS {m.peak_pss / 2**20:7.0f} MiB ({m.peak_procs} procs)"
          f"  {json.dumps({k: v for k, v in info.items() if k != 'master'})}",
          flush=True)  # fmt: skip
    return m


def quality(master: str, reference: str, frames: int, size: str = "") -> dict[str, float]:
    """SSIM and PSNR (Y, U, V together: ffmpeg's "All") of ``master`` against ``reference``
    over their first ``frames`` frames; ``size`` ("WxH"): the reference scaled to it first
    (for a preview)."""
    scale = f"scale={size.replace('x', ':')}:flags=bicubic," if size else ""
    graph = (
        f"[0:v]trim=end_frame={frames},setpts=PTS-STARTPTS,format=yuv420p,split[a0][a1];"
        f"[1:v]trim=end_frame={frames},setpts=PTS-STARTPTS,{scale}format=yuv420p,split[b0][b1];"
        "[a0][b0]ssim;[a1][b1]psnr"
    )
    proc = _ffmpeg(["-i", master, "-i", reference, "-lavfi", graph, "-f", "null", "-"])
    ssim = re.search(r"SSIM .*All:([0-9.]+)", proc.stderr)
    psnr = re.search(r"PSNR .*average:([0-9.inf]+)", proc.stderr)
    return {"ssim": float(ssim.group(1)) if ssim else float("nan"),
            "psnr": float(psnr.group(1)) if psnr else float("nan")}  # fmt: skip


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    ram = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores, {model}, {ram:.0f} GiB RAM, Python {platform.python_version()}"


def main() -> None:
    global SLOT_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=55, help="clips in the comparison run")
    parser.add_argument("--sizes", default="10,55,200", help="clip counts for the memory run")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (8 clips of 2 s)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/crowdcut-bench-assembly"))
    parser.add_argument("--moviepy-path", default=os.environ.get("MOVIEPY_PATH", ""),
                        help="a folder with moviepy (pip install --target) put first on "
                             "PYTHONPATH for the moviepy run")  # fmt: skip
    parser.add_argument("--skip-moviepy", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--unique", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--segments", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--clip-seconds", type=float, default=SLOT_SECONDS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.quick:
        args.clips, args.sizes, args.clip_seconds = 8, "4,8", 2.0
    SLOT_SECONDS = args.clip_seconds
    cache = args.cache / f"{args.clip_seconds:g}s"

    if args.worker:  # a child: do one run, print its result as JSON
        logging.basicConfig(level=logging.WARNING, format="    %(name)s: %(message)s")
        unique = make_inputs(cache, args.unique + 1, args.clip_seconds)  # cached: no work
        clips = slot_clips(cache, unique[:-1], args.n)
        song = make_song(cache, args.n * args.clip_seconds + CREDITS_SECONDS)
        ctx = {"slots": build_slots(clips), "song": song, "out": args.out,
               "segments": SegmentCache(args.segments), "spare": unique[-1]}  # fmt: skip
        print(json.dumps(WORKERS[args.worker](ctx)), flush=True)
        return

    sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    args.unique = max(args.clips, min(max(sizes), 55))
    print(f"machine: {machine()}")
    print(f"ffmpeg: {resolve_ffmpeg()}; x264 preset {X264_PRESET}, crf {X264_CRF}")
    t0 = time.perf_counter()
    make_inputs(cache, args.unique + 1, args.clip_seconds)
    for n in {args.clips, *sizes}:
        make_song(cache, n * args.clip_seconds + CREDITS_SECONDS)
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s (cache {cache})\n")

    n = args.clips
    print(f"{n} clips of ~{args.clip_seconds:g} s, {CROSSFADE:g} s crossfades -> "
          f"{WIDTH}x{HEIGHT}@{FPS}:")  # fmt: skip
    shared = cache / "runs" / "segment-cache"
    shutil.rmtree(shared, ignore_errors=True)
    cold = measure("cold", cache, n, args, segments=shared)
    approve = measure("approve", cache, n, args, segments=shared)
    twopass = measure("twopass", cache, n, args, segments=shared)
    recut = measure("recut", cache, n, args, segments=shared)
    copy = measure("copy", cache, n, args)
    mp = None if args.skip_moviepy else measure("moviepy", cache, n, args)

    scores: dict[str, dict[str, float]] = {}
    if not args.skip_quality:
        ref = measure("reference", cache, n, args)
        body = sum(frame_plan([args.clip_seconds] * n, FPS))
        scores["crowdcut"] = quality(str(cold.info["master"]), str(ref.info["master"]), body)
        scores["crowdcut preview (from segments)"] = quality(
            str(approve.info["preview"]),
            str(ref.info["master"]),
            body,
            str(approve.info["preview_size"]),
        )
        scores["preview encoded whole, two-pass"] = quality(
            str(twopass.info["preview"]), str(ref.info["master"]), body,
            str(twopass.info["preview_size"]))  # fmt: skip
        if mp is not None:
            scores["moviepy"] = quality(str(mp.info["master"]), str(ref.info["master"]), body)
        print(f"  quality over the {body} frames of the slots: {json.dumps(scores)}")
        shutil.rmtree(Path(str(ref.info["master"])).parent, ignore_errors=True)
    if mp is not None:
        shutil.rmtree(Path(str(mp.info["master"])).parent, ignore_errors=True)

    print("\nscaling (cold render, empty cache each time):")
    scaling = [cold if s == n else measure("cold", cache, s, args, tag="-scale") for s in sizes]

    video = n * args.clip_seconds + CREDITS_SECONDS
    print("\n## results\n")
    print(f"- machine: {machine()}")
    print(f"- date: {time.strftime('%Y-%m-%d')}")
    print(f"- inputs: {n} clips of {clip_seconds(0, args.clip_seconds)}–"
          f"{clip_seconds(4, args.clip_seconds)} s at 1280x720 (24/30/25 fps, 1 in 3 without "
          f"audio), {args.clip_seconds:g} s slots, {CROSSFADE:g} s crossfades; video {video:g} s "
          f"with {CREDITS_SECONDS:g} s credits\n")  # fmt: skip
    print("| run | wall (s) | inside (s) | CPU (s) | peak PSS, tree (MiB) | procs | output |")
    print("|---|---:|---:|---:|---:|---:|---|")
    rows = [("cold: empty cache -> master + preview", cold),
            ("approval -> master + preview, segments current", approve),
            ("(before) approval -> preview encoded whole, two-pass", twopass),
            ("re-cut, one slot swapped -> master", recut),
            ("moviepy 2 CompositeVideoClip + CrossFadeIn", mp),
            ("`-f concat -c copy` floor", copy)]  # fmt: skip
    for label, m in rows:
        if m is None:
            continue
        inner = m.info.get("total_s", 0.0)
        files = [f"{int(m.info[k]) / 2**20:.1f} MiB{tag}"
                 for k, tag in (("master_bytes", ""), ("preview_bytes", " preview"))
                 if m.info.get(k)]  # fmt: skip
        print(f"| {label} | {m.wall:.1f} | {inner:.2f} | {m.cpu:.1f} | "
              f"{m.peak_pss / 2**20:.0f} | {m.peak_procs} | {' + '.join(files)} |")  # fmt: skip
    stages = {k: cold.info[k] for k in ("segments_s", "master_s", "preview_s")}
    print(f"\ncold stages: {json.dumps(stages)}")
    print(f"approve stages: master {approve.info['master_s']:.2f} s, preview "
          f"{approve.info['preview_s']:.2f} s ({approve.info['preview_size']}, "
          f"{100 * float(approve.info['preview_of_limit']):.1f} % of the limit); "
          f"whole two-pass {twopass.info['preview_s']:.2f} s ({twopass.info['preview_size']}, "
          f"{100 * float(twopass.info['preview_of_limit']):.1f} %)")  # fmt: skip
    if scores:
        print("\n| output | SSIM | PSNR (dB) |\n|---|---:|---:|")
        for who, s in scores.items():
            print(f"| {who} | {s['ssim']:.4f} | {s['psnr']:.2f} |")
    print("\n| clips | video (s) | wall (s) | CPU (s) | peak PSS, tree (MiB) | procs |")
    print("|---:|---:|---:|---:|---:|---:|")
    for m in scaling:
        print(f"| {m.clips} | {m.clips * args.clip_seconds + CREDITS_SECONDS:g} | {m.wall:.1f} | "
              f"{m.cpu:.1f} | {m.peak_pss / 2**20:.0f} | {m.peak_procs} |")  # fmt: skip

    floor = float(copy.info["total_s"])
    approve_master = float(approve.info["master_s"])
    print("\ntargets:")
    if mp is not None:
        mp_s, master_s = float(mp.info["total_s"]), float(cold.info["master_s"])
        speed, mem = mp_s / master_s, mp.peak_pss / cold.peak_pss
        print(
            f"- cold >= 3x faster than moviepy: {'MET' if speed >= 3 else 'MISSED'} "
            f"({speed:.1f}x: the master in {master_s:.1f} s against moviepy's {mp_s:.1f} s; "
            f"with the preview too, {mp_s / float(cold.info['total_s']):.1f}x)"
        )
        print(f"- >= 10x less peak memory: {'MET' if mem >= 10 else 'MISSED'} ({mem:.1f}x)")
    print(
        f"- approval -> master within 3x the copy floor: "
        f"{'MET' if approve_master <= 3 * floor else 'MISSED'} "
        f"({approve_master:.2f} s vs {floor:.2f} s = {approve_master / floor:.1f}x)"
    )
    ratio = float(recut.info["total_s"]) / float(cold.info["master_s"])
    print(
        f"- one-slot re-cut under 10 % of cold: {'MET' if ratio < 0.1 else 'MISSED'} "
        f"({100 * ratio:.1f} %)"
    )
    pss = [m.peak_pss for m in scaling]
    print(
        f"- memory flat {sizes[0]}->{sizes[-1]} clips: {min(pss) / 2**20:.0f}–"
        f"{max(pss) / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
