"""Benchmark: assembling a cut with crowdcut vs moviepy vs a bare stream-copy concat.

Usage::

    python bench/assembly.py [--clips 55] [--sizes 10,55,200] [--quick] [--cache DIR]

It makes (once, cached in ``--cache``) ``--clips`` clips of about 4 s in mixed sizes and
frame rates (1280x720@24, 1920x1080@30, 1080x1920@30, 854x480@25; some without audio)
and a synthesized song as long as the cut, then measures on those same inputs:

(a) ``bot.media.assembly.assemble`` -> master + preview + manifest;
(b) moviepy 2.x: each clip opened at the fitted size, ``concatenate_videoclips(
    method="compose")``, the credits card as an ``ImageClip``, the song as audio,
    ``write_videofile`` with libx264 (same preset and CRF as ours) and AAC;
(c) ``ffmpeg -f concat -c copy`` of the raw clips plus the song: only a timing floor, its
    output is not valid video for mixed inputs.

Each run is its own subprocess. Wall time is measured around it; CPU time is the
``RUSAGE_CHILDREN`` delta (user + system of the run and every process it waited for);
peak memory is the largest sum of RSS over the run's whole process tree, sampled every
50 ms with psutil. Then ``assemble`` alone is run at each of ``--sizes`` clip counts
(clips reused by hard links, so every slot is really encoded) to show its peak memory
stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
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

from bot.media.assembly import X264_CRF, X264_PRESET, CutSlot, assemble  # noqa: E402
from bot.media.ffmpeg import resolve_ffmpeg  # noqa: E402

log = logging.getLogger("bench.assembly")

WIDTH, HEIGHT, FPS = 1280, 720, 24
SLOT_SECONDS = 4.0
CREDITS_SECONDS = 4.0
TITLE = "Benchmark cut"

#: (width, height, fps, audio) cycled over the clips
KINDS: tuple[tuple[int, int, int, bool], ...] = (
    (1280, 720, 24, True),
    (1920, 1080, 30, True),
    (1080, 1920, 30, False),
    (854, 480, 25, True),
    (1280, 720, 24, False),
)
PATTERNS = ("testsrc2", "testsrc", "smptehdbars", "rgbtestsrc")


# ---------------------------------------------------------------- inputs


def _ffmpeg(args: list[str]) -> None:
    subprocess.run(
        [resolve_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
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
            votes={"up": i % 7, "down": i % 3, "score": i % 7 - i % 3},
        )
        for i, clip in enumerate(clips)
    ]


# ---------------------------------------------------------------- workers (run in a child)


def worker_ours(clips: list[Path], song: Path, out: Path) -> dict[str, object]:
    marks: dict[str, float] = {}
    t0 = time.monotonic()

    def progress(stage: str, fraction: float) -> None:
        marks.setdefault(stage, time.monotonic() - t0)

    result = asyncio.run(
        assemble(build_slots(clips), song, out, title=TITLE, width=WIDTH, height=HEIGHT,
                 fps=FPS, credits_seconds=CREDITS_SECONDS, progress=progress)
    )  # fmt: skip
    return {
        "master": str(result.master),
        "master_bytes": result.master.stat().st_size,
        "preview_bytes": result.preview.stat().st_size,
        "duration": result.duration,
        "stage_starts": marks,
    }


def _fit(w: int, h: int) -> tuple[int, int]:
    scale = min(WIDTH / w, HEIGHT / h)
    return int(w * scale) // 2 * 2, int(h * scale) // 2 * 2


def worker_moviepy(clips: list[Path], song: Path, out: Path) -> dict[str, object]:
    from moviepy import (
        AudioFileClip,
        ImageClip,
        VideoFileClip,
        concatenate_videoclips,
        vfx,
    )

    from bot.media.credits import render_credits_card
    from bot.media.probe import probe

    parts = []
    for clip in clips:
        info = probe(clip)
        w, h = _fit(info.width or WIDTH, info.height or HEIGHT)
        # target_resolution makes moviepy's ffmpeg reader scale (kinder to moviepy than
        # resizing every frame in Python); the clip's own audio is not needed
        video = VideoFileClip(str(clip), audio=False, target_resolution=(w, h))
        if video.duration >= SLOT_SECONDS:
            video = video.subclipped(0, SLOT_SECONDS)
        else:
            video = video.with_effects([vfx.Freeze(t="end", total_duration=SLOT_SECONDS)])
        parts.append(video)
    card = out / "credits.png"
    render_credits_card(card, TITLE, [(f"{i + 1}. member{i % 23}", "prompt")
                                      for i in range(len(clips))], WIDTH, HEIGHT)  # fmt: skip
    parts.append(ImageClip(str(card)).with_duration(CREDITS_SECONDS))
    final = concatenate_videoclips(parts, method="compose")
    audio = AudioFileClip(str(song))
    final = final.with_audio(audio.subclipped(0, min(audio.duration, final.duration)))
    target = out / "moviepy.mp4"
    final.write_videofile(
        str(target), fps=FPS, codec="libx264", audio_codec="aac", preset=X264_PRESET,
        ffmpeg_params=["-crf", str(X264_CRF), "-pix_fmt", "yuv420p"], logger=None,
    )  # fmt: skip
    final.close()
    for part in parts:
        part.close()
    return {"master": str(target), "master_bytes": target.stat().st_size,
            "duration": final.duration}  # fmt: skip


def worker_copy(clips: list[Path], song: Path, out: Path) -> dict[str, object]:
    listing = out / "list.txt"
    listing.write_text("".join(f"file '{c.resolve()}'\n" for c in clips))
    target = out / "copy.mp4"
    _ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-i", str(song),
             "-map", "0:v", "-map", "1:a", "-c", "copy", "-shortest", str(target)])  # fmt: skip
    return {"master": str(target), "master_bytes": target.stat().st_size}


WORKERS = {"ours": worker_ours, "moviepy": worker_moviepy, "copy": worker_copy}


# ---------------------------------------------------------------- measuring (in the parent)


@dataclass
class Measure:
    name: str
    clips: int
    video_seconds: float
    wall: float
    cpu: float
    peak_rss: int
    peak_procs: int
    info: dict[str, object]

    @property
    def realtime_ratio(self) -> float:
        return self.wall / self.video_seconds


def _tree_rss(proc: psutil.Process) -> tuple[int, int]:
    total, count = 0, 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for member in members:
        try:
            total += member.memory_info().rss
            count += 1
        except psutil.NoSuchProcess:
            continue
    return total, count


def measure(name: str, cache: Path, count: int, args: argparse.Namespace) -> Measure:
    out = cache / "runs" / f"{name}-{count}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--worker", name, "--cache", str(args.cache),
           "--n", str(count), "--unique", str(args.unique), "--out", str(out),
           "--clip-seconds", str(args.clip_seconds)]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = {"rss": 0, "procs": 0}
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(child.pid)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, procs = _tree_rss(ps)
            peak["rss"] = max(peak["rss"], rss)
            peak["procs"] = max(peak["procs"], procs)
            done.wait(0.05)

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
    video_seconds = count * args.clip_seconds + CREDITS_SECONDS
    m = Measure(name, count, video_seconds, wall, cpu, peak["rss"], peak["procs"], info)
    print(f"  {name:8s} {count:4d} clips: wall {wall:7.1f} s  cpu {cpu:7.1f} s  "
          f"peak {m.peak_rss / 2**20:7.0f} MiB ({m.peak_procs} procs)", flush=True)  # fmt: skip
    if name != "ours":
        shutil.rmtree(out, ignore_errors=True)
    return m


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
    parser.add_argument("--skip-moviepy", action="store_true")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--unique", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--clip-seconds", type=float, default=SLOT_SECONDS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.quick:
        args.clips, args.sizes, args.clip_seconds = 8, "4,8", 2.0
    SLOT_SECONDS = args.clip_seconds
    cache = args.cache / f"{args.clip_seconds:g}s"

    if args.worker:  # a child: do one run, print its result as JSON
        logging.basicConfig(level=logging.WARNING, format="    %(name)s: %(message)s")
        logging.getLogger("bot.media.assembly").setLevel(logging.INFO)
        unique = make_inputs(cache, args.unique, args.clip_seconds)  # cached: no work
        clips = slot_clips(cache, unique, args.n)
        song = make_song(cache, args.n * args.clip_seconds + CREDITS_SECONDS)
        print(json.dumps(WORKERS[args.worker](clips, song, args.out)), flush=True)
        return

    sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    args.unique = max(args.clips, min(max(sizes), 55))
    print(f"machine: {machine()}")
    print(f"ffmpeg: {resolve_ffmpeg()}; x264 preset {X264_PRESET}, crf {X264_CRF}")
    t0 = time.perf_counter()
    make_inputs(cache, args.unique, args.clip_seconds)
    for n in {args.clips, *sizes}:
        make_song(cache, n * args.clip_seconds + CREDITS_SECONDS)
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s (cache {cache})\n")

    print(f"comparison, {args.clips} clips of ~{args.clip_seconds:g} s -> "
          f"{WIDTH}x{HEIGHT}@{FPS}:")  # fmt: skip
    runs = [measure("ours", cache, args.clips, args)]
    if not args.skip_moviepy:
        runs.append(measure("moviepy", cache, args.clips, args))
    runs.append(measure("copy", cache, args.clips, args))

    print("\nscaling (ours):")
    scaling = [runs[0] if n == args.clips else measure("ours", cache, n, args) for n in sizes]

    print("\n## results\n")
    print(f"- machine: {machine()}")
    print(f"- date: {time.strftime('%Y-%m-%d')}")
    print(f"- inputs: {args.clips} clips, ~{args.clip_seconds:g} s each, sizes/rates "
          f"{', '.join(f'{w}x{h}@{f}' for w, h, f, _ in KINDS[:4])}, 2 in 5 without audio; "
          f"video {runs[0].video_seconds:g} s with {CREDITS_SECONDS:g} s credits\n")  # fmt: skip
    print("| run | wall (s) | CPU (s) | peak RSS, tree (MiB) | wall / video length | output |")
    print("|---|---:|---:|---:|---:|---|")
    labels = {
        "ours": "crowdcut `assemble` (master + preview)",
        "moviepy": "moviepy 2 `concatenate_videoclips(compose)` (master only)",
        "copy": "`-f concat -c copy` floor (invalid for mixed inputs)",
    }
    for m in runs:
        size = int(m.info.get("master_bytes", 0)) / 2**20
        print(f"| {labels[m.name]} | {m.wall:.1f} | {m.cpu:.1f} | {m.peak_rss / 2**20:.0f} | "
              f"{m.realtime_ratio:.3f} | {size:.1f} MiB |")  # fmt: skip
    print("\n| clips | video (s) | wall (s) | CPU (s) | peak RSS, tree (MiB) | peak processes |")
    print("|---:|---:|---:|---:|---:|---:|")
    for m in scaling:
        print(f"| {m.clips} | {m.video_seconds:g} | {m.wall:.1f} | {m.cpu:.1f} | "
              f"{m.peak_rss / 2**20:.0f} | {m.peak_procs} |")  # fmt: skip
    stages = runs[0].info.get("stage_starts", {})
    print(f"\nours, stage start times (s): {json.dumps(stages)}")
    if not args.skip_moviepy:
        ours, mp = runs[0], runs[1]
        speed = mp.wall / ours.wall
        mem = mp.peak_rss / ours.peak_rss
        print(
            f"\ntarget 'no slower than moviepy': {'MET' if speed >= 1 else 'MISSED'} "
            f"(moviepy takes {speed:.2f}x our wall time)"
        )
        print(f"target '>= 8x less peak memory': {'MET' if mem >= 8 else 'MISSED'} "
              f"(moviepy peaks at {mem:.1f}x ours)")  # fmt: skip


if __name__ == "__main__":
    main()
