"""The embedded default generator: procedural clips from ffmpeg, no GPU and no API key.

**This is a stand-in for a real video model.** It does not understand the prompt; it hashes
it. What it does do is behave like a remote provider in every way the rest of crowdcut can
observe, so the queue, retries, restarts, voting and the cut can all be exercised for real:

- ``submit`` stores the request under ``work_dir/<job_id>/`` (``request.json``, and
  ``image.png`` when there is a reference image) and renders in the background, at most
  ``max_concurrency`` clips at a time;
- ``poll`` says queued / running (with ffmpeg's progress) / done / failed / canceled;
- ``download`` copies the finished clip; ``cancel`` kills the render;
- it is **restart-safe**: a new ``LocalGenerator`` on the same ``work_dir`` that is asked
  to ``poll`` a job it did not start sees the stored request and renders it again (or
  reports it done when the output is there), the way a provider keeps a job across our
  restart. The output is written to a temporary name and renamed, so a half-rendered file
  is never reported done;
- the same ``idempotency_key`` gives back the same job (with a different request it is
  refused), like providers that honour such keys.

What it makes: an H.264 (yuv420p) MP4 at 24 fps, 640x360 for 16:9, 360x640 for 9:16 and
480x480 for 1:1 (configurable), **with a quiet AAC stereo tone** (48 kHz) whose chord also
comes from the prompt. Audio is included on purpose: some real models return sound and
some do not, and the cut must handle clips that have it (``audio=False`` makes silent clips).

The look is deterministic in (normalized prompt, seed): the prompt (NFKC, case-folded,
whitespace collapsed) and the seed are hashed into a palette and one of six procedural
sources with its own parameters (``gradients``, ``mandelbrot`` zoom, ``cellauto``,
``life``, a ``geq`` plasma, ``sierpinski``), so different prompts give visibly different
clips and the same prompt and seed give the same frames (the encode is bit-exact). With a
reference image the clip is a slow Ken-Burns zoom into the image, blended with the
prompt's procedural clip.

Test hooks (only when ``test_hooks=True``, which ``LOCAL_TEST_HOOKS`` turns on for the demo
and the tests; otherwise these are plain prompt text). They are removed from the prompt
before it is hashed:

- ``[fail:<kind>]``: the job fails with that :class:`~bot.errors.GeneratorErrorKind`
  (``content_policy``, ``invalid_input``, ``rate_limited``, ``unavailable``, ``auth``,
  ``unknown``) when it starts rendering;
- ``[fail-once:<kind>]``: the first job with this prompt and seed fails that way, later
  ones (a retry) render normally; remembered in ``work_dir/.test-hooks/``;
- ``[reject:<kind>]``: ``submit`` itself raises, as an HTTP 4xx/429 at job creation would;
- ``[slow]``: the render runs at real-time speed (ffmpeg ``-re``), for watching progress
  and for cancelling mid-render.

One process per ``work_dir``: two live processes polling the same job would both render it
(the result is still correct, thanks to the atomic rename, just wasteful).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ffmpeg

from bot.errors import GeneratorError, GeneratorErrorKind, MediaError
from bot.generators.base import (
    Capabilities,
    GenerationRequest,
    GeneratorBase,
    JobState,
    JobStatus,
    get_setting,
)
from bot.media.ffmpeg import resolve_ffmpeg, run_ffmpeg

log = logging.getLogger(__name__)

DEFAULT_SIZES: Mapping[str, tuple[int, int]] = {
    "16:9": (640, 360),
    "9:16": (360, 640),
    "1:1": (480, 480),
}
DEFAULT_FPS = 24
FORMAT_VERSION = 1

_JOB_ID_RE = re.compile(r"^loc-[0-9a-f]{16,40}$")
_HOOK_RE = re.compile(r"\[(fail|fail-once|reject):([a-z_]+)\]|\[slow\]", re.IGNORECASE)

REQUEST_FILE = "request.json"
IMAGE_FILE = "image.png"
OUTPUT_FILE = "output.mp4"
ERROR_FILE = "error.json"
CANCELED_FILE = "canceled"
_TMP_PREFIX = ".output-"


# ------------------------------------------------------------------------------ hooks


@dataclass(frozen=True)
class _TestHooks:
    """What the test-only tags in a prompt asked for."""

    fail: GeneratorErrorKind | None = None
    fail_once: GeneratorErrorKind | None = None
    reject: GeneratorErrorKind | None = None
    slow: bool = False


def _parse_test_hooks(prompt: str) -> tuple[str, _TestHooks]:
    """Return the prompt without its hook tags, and the hooks found."""
    found: dict[str, Any] = {}
    kinds = {k.value for k in GeneratorErrorKind}

    def take(match: re.Match[str]) -> str:
        tag, kind = match.group(1), match.group(2)
        if tag is None:
            found["slow"] = True
            return " "
        kind = kind.lower()
        if kind not in kinds:
            return match.group(0)  # not a hook: leave the text alone
        found[tag.lower().replace("-", "_")] = GeneratorErrorKind(kind)
        return " "

    return _HOOK_RE.sub(take, prompt), _TestHooks(**found)


def _hook_error(kind: GeneratorErrorKind, where: str) -> GeneratorError:
    retry_after = 1.0 if kind == GeneratorErrorKind.RATE_LIMITED else None
    return GeneratorError(
        kind, f"local generator test hook: {where} with {kind.value}", retry_after=retry_after
    )


# ------------------------------------------------------------------------------ looks


def normalize_prompt(prompt: str) -> str:
    """The form of a prompt that decides the look: NFKC, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", prompt).casefold().split())


class _Dice:
    """Deterministic draws from a hash; stable across Python versions (unlike ``random``)."""

    def __init__(self, key: bytes) -> None:
        self._stream = hashlib.shake_256(key).digest(512)
        self._pos = 0

    def unit(self) -> float:
        """A number in [0, 1)."""
        chunk = self._stream[self._pos : self._pos + 4]
        self._pos = (self._pos + 4) % (len(self._stream) - 4)
        return int.from_bytes(chunk, "big") / 2**32

    def between(self, low: float, high: float) -> float:
        return low + (high - low) * self.unit()

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return low + min(high - low, int(self.unit() * (high - low + 1)))

    def pick(self, options: Sequence[Any]) -> Any:
        return options[self.integer(0, len(options) - 1)]


def _hsl(hue: float, sat: float, light: float) -> tuple[int, int, int]:
    """HSL (hue in degrees, 0..1, 0..1) to 8-bit RGB."""
    c = (1 - abs(2 * light - 1)) * sat
    h = (hue % 360) / 60
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = light - c / 2
    return tuple(max(0, min(255, round((v + m) * 255))) for v in (r, g, b))  # type: ignore[return-value]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "0x{:02x}{:02x}{:02x}".format(*rgb)


@dataclass(frozen=True)
class Look:
    """Everything the prompt and seed decide about a clip."""

    source: str
    hue: float
    palette: tuple[tuple[int, int, int], ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    chord: tuple[float, float, float] = (220.0, 277.18, 329.63)
    blend: tuple[str, float] = ("normal", 0.3)
    #: Ken-Burns move on a reference image: how far it zooms in, and towards which point
    zoom: float = 0.2
    focus: tuple[float, float] = (0.5, 0.5)


SOURCES: tuple[str, ...] = ("gradients", "mandelbrot", "cellauto", "life", "plasma", "sierpinski")

# points of the Mandelbrot set border that stay interesting while zooming in
_MANDEL_POINTS = (
    (-0.743643887037151, 0.131825904205330),
    (-0.761574, -0.0847596),
    (0.001643721971153, -0.822467633298876),
    (-1.25066, 0.02012),
    (-0.7453, 0.1127),
    (0.2549870375144766, -0.0005679790528465),
    (-0.10109636384562, 0.95628651080914),
    (-1.768778833, -0.001738996),
)
_CELLAUTO_RULES = (18, 22, 30, 45, 54, 60, 73, 90, 105, 110, 122, 126, 150, 182)
_LIFE_RULES = ("B3/S23", "B36/S23", "B3678/S34678", "B368/S245", "B34/S34", "B35678/S5678")
# (mode, opacity) for blending the procedural clip onto a reference image; "overlay",
# "softlight" and "screen" are left out because they leave white areas white, and the
# prompt's tint should show everywhere
_BLENDS = (("normal", 0.3), ("multiply", 0.45), ("hardlight", 0.4), ("normal", 0.4))
_SCALE = (0, 2, 3, 5, 7, 9, 10, 12, 14, 15)  # semitones: pentatonic-ish over two octaves


def choose_look(prompt: str, seed: int) -> Look:
    """Hash (normalized prompt, seed) into a :class:`Look`. Pure and deterministic."""
    key = f"crowdcut-local-v{FORMAT_VERSION}\0{normalize_prompt(prompt)}\0{int(seed)}"
    dice = _Dice(hashlib.sha256(key.encode("utf-8")).digest())
    source = dice.pick(SOURCES)
    hue = dice.between(0, 360)
    offsets = dice.pick(((0, 30, -30), (0, 180, 30), (0, 120, 240), (0, 150, 210), (0, 60, 180)))
    sat = dice.between(0.55, 0.95)
    palette = tuple(
        _hsl(hue + off, sat, light) for off, light in zip(offsets, (0.5, 0.35, 0.65), strict=True)
    ) + (_hsl(hue + 90, sat * 0.6, 0.12),)  # a dark ground colour
    params: dict[str, Any] = {"flip": dice.pick(("none", "h", "v", "hv"))}
    if source == "gradients":
        params.update(
            nb_colors=dice.integer(3, 4),
            seed=dice.integer(0, 2**31 - 1),
            speed=round(dice.between(0.01, 0.06), 4),
        )
    elif source == "mandelbrot":
        x, y = dice.pick(_MANDEL_POINTS)
        start = dice.between(1.5, 3.0)
        params.update(
            start_x=x + dice.between(-1e-4, 1e-4),
            start_y=y + dice.between(-1e-4, 1e-4),
            start_scale=start,
            end_scale=start * dice.between(0.02, 0.2),
            hue_shift=round(dice.between(0, 360), 2),
        )
    elif source == "cellauto":
        params.update(
            rule=dice.pick(_CELLAUTO_RULES),
            seed=dice.integer(0, 2**31 - 1),
            cell=dice.integer(3, 6),
            ratio=round(dice.between(0.2, 0.7), 3),
            across=dice.unit() < 0.5,
        )
    elif source == "life":
        params.update(
            rule=dice.pick(_LIFE_RULES),
            seed=dice.integer(0, 2**31 - 1),
            cell=dice.integer(2, 5),
            ratio=round(dice.between(0.15, 0.55), 3),
            mold=dice.integer(5, 40),
        )
    elif source == "plasma":
        params.update(
            a=round(dice.between(9, 40), 3),
            b=round(dice.between(9, 40), 3),
            r=round(dice.between(12, 60), 3),
            cx=round(dice.between(0.2, 0.8), 3),
            cy=round(dice.between(0.2, 0.8), 3),
            sx=round(dice.between(0.6, 3.0) * dice.pick((1, -1)), 3),
            sy=round(dice.between(0.6, 3.0) * dice.pick((1, -1)), 3),
            sr=round(dice.between(0.6, 3.0) * dice.pick((1, -1)), 3),
            phase=round(dice.between(0, 6.283), 3),
        )
    else:  # sierpinski
        params.update(
            seed=dice.integer(0, 2**31 - 1),
            jump=dice.integer(20, 200),
            type=dice.pick(("carpet", "triangle")),
            hue_shift=round(dice.between(0, 360), 2),
        )
    root = 110.0 * 2 ** (dice.integer(0, 11) / 12)
    chord = tuple(round(root * 2 ** (dice.pick(_SCALE) / 12) * mult, 2) for mult in (1.0, 1.5, 2.0))
    return Look(
        source=source,
        hue=hue,
        palette=palette,
        params=params,
        chord=chord,  # type: ignore[arg-type]
        blend=dice.pick(_BLENDS),
        zoom=round(dice.between(0.12, 0.3), 4),
        focus=(round(dice.between(0.2, 0.8), 4), round(dice.between(0.2, 0.8), 4)),
    )


def _lavfi(name: str, **options: Any) -> str:
    """``name=k=v:k=v`` for a lavfi input; values are numbers and hex colours only."""
    parts = []
    for key, value in options.items():
        if isinstance(value, float):
            value = f"{value:.12g}"
        parts.append(f"{key}={value}")
    return f"{name}=" + ":".join(parts)


def _colourize(stream: Any, dark: tuple[int, int, int], light: tuple[int, int, int]) -> Any:
    """Map black to ``dark`` and white to ``light`` on an RGB stream."""
    exprs = {ch: f"{lo}+({hi}-{lo})*val/255" for ch, lo, hi in zip("rgb", dark, light, strict=True)}
    return stream.filter("format", "rgb24").filter("lutrgb", **exprs)


def _flip(stream: Any, how: str) -> Any:
    if "h" in how:
        stream = stream.hflip()
    if "v" in how:
        stream = stream.vflip()
    return stream


def procedural_video(
    look: Look, width: int, height: int, fps: int, duration: float, *, realtime: bool = False
) -> Any:
    """The ffmpeg-python stream of the prompt's procedural clip, ``width``x``height`` RGB."""
    p = look.params
    extra: dict[str, Any] = {"re": None} if realtime else {}
    frames = max(1, round(duration * fps))
    c0, c1, c2, ground = look.palette

    def lavfi(spec: str) -> Any:
        return ffmpeg.input(spec, f="lavfi", **extra)

    if look.source == "gradients":
        colours = {f"c{i}": _hex(c) for i, c in enumerate((c0, c1, c2, ground)[: p["nb_colors"]])}
        stream = lavfi(
            _lavfi(
                "gradients",
                s=f"{width}x{height}",
                r=fps,
                nb_colors=p["nb_colors"],
                seed=p["seed"],
                speed=p["speed"],
                **colours,
            )
        )
    elif look.source == "mandelbrot":
        stream = lavfi(
            _lavfi(
                "mandelbrot",
                s=f"{width}x{height}",
                r=fps,
                maxiter=256,
                start_x=p["start_x"],
                start_y=p["start_y"],
                start_scale=p["start_scale"],
                end_scale=p["end_scale"],
                end_pts=frames,
                outer="normalized_iteration_count",
            )
        ).filter("hue", h=p["hue_shift"], s=1.2)
    elif look.source == "cellauto":
        cell = p["cell"]
        w, h = (height, width) if p["across"] else (width, height)
        stream = lavfi(
            _lavfi(
                "cellauto",
                s=f"{-(-w // cell)}x{-(-h // cell)}",
                r=fps,
                rule=p["rule"],
                random_seed=p["seed"],
                random_fill_ratio=p["ratio"],
                scroll=1,
                start_full=1,
            )
        ).filter("scale", w, h, flags="neighbor")
        if p["across"]:
            stream = stream.filter("transpose", 1)
        stream = _colourize(stream, ground, c0)
    elif look.source == "life":
        cell = p["cell"]
        stream = lavfi(
            _lavfi(
                "life",
                s=f"{-(-width // cell)}x{-(-height // cell)}",
                r=fps,
                rule=p["rule"],
                random_seed=p["seed"],
                ratio=p["ratio"],
                mold=p["mold"],
                life_color=_hex(c0),
                death_color=_hex(ground),
                mold_color=_hex(c2),
            )
        ).filter("scale", width, height, flags="neighbor")
    elif look.source == "plasma":
        # computed at half size and scaled up: geq is per-pixel maths and plasma is smooth
        hw, hh = max(2, width // 2), max(2, height // 2)
        cx, cy = p["cx"] * hw, p["cy"] * hh
        wave = (
            f"(sin(X/{p['a']}+T*{p['sx']})+sin(Y/{p['b']}+T*{p['sy']})"
            f"+sin(hypot(X-{cx:.2f},Y-{cy:.2f})/{p['r']}+T*{p['sr']}+{p['phase']}))*1.0472"
        )
        exprs = {}
        for ch, lo, hi in zip("rgb", ground, c0, strict=True):
            mid, amp = (lo + hi) / 2, (hi - lo) / 2
            exprs[ch] = f"{mid:.1f}+{amp:.1f}*sin({wave})"
        stream = (
            lavfi(_lavfi("nullsrc", s=f"{hw}x{hh}", r=fps))
            .filter("format", "gbrp")
            .filter("geq", **exprs)
            .filter("scale", width, height, flags="bicubic")
        )
    else:  # sierpinski
        stream = lavfi(
            _lavfi(
                "sierpinski",
                s=f"{width}x{height}",
                r=fps,
                seed=p["seed"],
                jump=p["jump"],
                type=p["type"],
            )
        )
        stream = _colourize(stream, ground, c1 if p["hue_shift"] < 180 else c2)
    stream = _flip(stream, p.get("flip", "none"))
    return stream.filter("setsar", 1)


def ken_burns_video(
    look: Look,
    image: Path,
    width: int,
    height: int,
    fps: int,
    duration: float,
    *,
    realtime: bool = False,
) -> Any:
    """A slow zoom into ``image``, blended with the prompt's procedural clip."""
    frames = max(1, round(duration * fps))
    extra: dict[str, Any] = {"re": None} if realtime else {}
    # zoompan moves in whole pixels: work at twice the size so the motion does not judder
    big_w, big_h = width * 2, height * 2
    zoom, (fx, fy) = look.zoom, look.focus
    picture = (
        ffmpeg.input(str(image), loop=1, framerate=fps, t=f"{duration:.3f}", **extra)
        .filter("scale", big_w, big_h, force_original_aspect_ratio="increase", flags="lanczos")
        .filter("crop", big_w, big_h)
        .filter("setsar", 1)
        .filter(
            "zoompan",
            z=f"1+{zoom}*on/{frames}",
            x=f"(iw-iw/zoom)*{fx}",
            y=f"(ih-ih/zoom)*{fy}",
            d=1,
            s=f"{width}x{height}",
            fps=fps,
        )
        .filter("format", "gbrp")
    )
    tint = procedural_video(look, width, height, fps, duration, realtime=realtime).filter(
        "format", "gbrp"
    )
    return ffmpeg.filter(
        [picture, tint], "blend", all_mode=look.blend[0], all_opacity=look.blend[1], shortest=1
    ).filter("setsar", 1)


def tone_audio(look: Look, duration: float, *, realtime: bool = False) -> Any:
    """A quiet stereo chord with a soft attack and release, ``duration`` seconds long."""
    f1, f2, f3 = look.chord
    env = f"min(1,t/0.25)*min(1,max(0,({duration:.3f}-t)/0.4))"
    # the right channel is detuned a little, which makes the chord sound wide, not flat
    left = f"{env}*(0.06*sin(2*PI*{f1}*t)+0.035*sin(2*PI*{f2}*t)+0.02*sin(2*PI*{f3}*t))"
    right = (
        f"{env}*(0.06*sin(2*PI*{f1 * 1.003:.3f}*t)"
        f"+0.035*sin(2*PI*{f2}*t+0.5)+0.02*sin(2*PI*{f3}*t+1))"
    )
    extra: dict[str, Any] = {"re": None} if realtime else {}
    return ffmpeg.input(
        _lavfi("aevalsrc", exprs=f"'{left}|{right}'", s=48000, d=f"{duration:.3f}"),
        f="lavfi",
        **extra,
    )


def build_render_args(
    prompt: str,
    seed: int,
    *,
    width: int,
    height: int,
    duration: float,
    output: Path,
    fps: int = DEFAULT_FPS,
    image: Path | None = None,
    audio: bool = True,
    realtime: bool = False,
    threads: int = 2,
) -> list[str]:
    """The ffmpeg arguments (without the binary) that render one clip to ``output``.

    Pure: building the list starts nothing. ``prompt`` should already be free of test hooks.
    """
    look = choose_look(prompt, seed)
    if image is not None:
        video = ken_burns_video(look, image, width, height, fps, duration, realtime=realtime)
    else:
        video = procedural_video(look, width, height, fps, duration, realtime=realtime)
    video = video.filter("format", "yuv420p")
    streams = [video]
    options: dict[str, Any] = {
        "c:v": "libx264",
        "preset": "veryfast",
        "crf": 20,
        "pix_fmt": "yuv420p",
        "profile:v": "high",
        "r": fps,
        "g": fps * 2,
        "threads": threads,
        "t": f"{duration:.3f}",
        "map_metadata": -1,
        "fflags": "+bitexact",
        "flags:v": "+bitexact",
        "movflags": "+faststart",
        "f": "mp4",
    }
    if audio:
        streams.append(tone_audio(look, duration, realtime=realtime))
        options.update({"c:a": "aac", "b:a": "96k", "ar": 48000, "ac": 2, "flags:a": "+bitexact"})
    # progress every quarter second (the default is every half), so short clips show it
    return ["-stats_period", "0.25", *ffmpeg.output(*streams, str(output), **options).get_args()]


# ------------------------------------------------------------------------------ disk


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fingerprint(request: GenerationRequest) -> str:
    h = hashlib.sha256()
    for part in (request.prompt, f"{request.duration:.6f}", request.aspect, str(request.seed)):
        h.update(part.encode("utf-8") + b"\0")
    h.update(hashlib.sha256(request.image or b"").digest())
    return h.hexdigest()


# ------------------------------------------------------------------------------ generator


class LocalGenerator(GeneratorBase):
    """The embedded procedural generator (a stand-in for a real model; see the module doc).

    ``work_dir`` holds one folder per job and must survive restarts. ``ffmpeg`` is the
    binary (default: :func:`~bot.media.ffmpeg.resolve_ffmpeg`). ``sizes`` maps each aspect
    to (width, height), both even. ``render_timeout`` bounds one render in seconds.
    """

    name = "local"
    model = "crowdcut procedural stand-in (no AI model)"
    charges_failures = False

    def __init__(
        self,
        work_dir: Path | str,
        *,
        ffmpeg: str | None = None,
        max_concurrency: int = 1,
        clip_seconds: float = 4.0,
        max_duration: float = 60.0,
        fps: int = DEFAULT_FPS,
        sizes: Mapping[str, tuple[int, int]] | None = None,
        audio: bool = True,
        test_hooks: bool = False,
        threads: int = 2,
        render_timeout: float | None = 600.0,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.max_concurrency = max(1, int(max_concurrency))
        self.clip_seconds = float(clip_seconds)
        self.max_duration = float(max_duration)
        self.fps = int(fps)
        self.sizes = dict(sizes or DEFAULT_SIZES)
        for aspect, (w, h) in self.sizes.items():
            if w < 16 or h < 16 or w % 2 or h % 2:
                raise ValueError(f"size for {aspect} must be even and at least 16: {w}x{h}")
        self.audio = audio
        self.test_hooks = test_hooks
        self.threads = max(1, int(threads))
        self.render_timeout = render_timeout
        self._ffmpeg = ffmpeg
        self._sem = asyncio.Semaphore(self.max_concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, float] = {}
        self._submit_lock = asyncio.Lock()
        self._closed = False
        self.capabilities = Capabilities(
            min_seconds=0.5,
            max_seconds=self.max_duration,
            fps=self.fps,
            aspects=tuple(self.sizes),
            image_input=True,
            max_prompt_chars=4000,
            natural_seconds=self.clip_seconds,
        )

    # -------------------------------------------------------------- protocol

    async def submit(self, request: GenerationRequest) -> str:
        """Store ``request`` and start rendering it in the background; return the job id."""
        if self._closed:
            raise GeneratorError(GeneratorErrorKind.UNAVAILABLE, "the local generator is closed")
        if self.test_hooks:
            _, hooks = _parse_test_hooks(request.prompt)
            if hooks.reject is not None:
                raise _hook_error(hooks.reject, "submit rejected")
        self._validate(request)
        async with self._submit_lock:
            if request.idempotency_key:
                job_id = self._job_id_for(request.idempotency_key)
            else:
                job_id = f"loc-{secrets.token_hex(10)}"
            fingerprint = _fingerprint(request)
            record = await asyncio.to_thread(self._store_request, job_id, request, fingerprint)
        if record.get("fingerprint") != fingerprint:
            raise GeneratorError(
                GeneratorErrorKind.INVALID_INPUT,
                f"idempotency key {request.idempotency_key!r} was already used for another request",
            )
        state = await asyncio.to_thread(self._disk_state, job_id)
        if state[0] == "pending" and job_id not in self._tasks:
            self._start(job_id, record)
        return job_id

    async def find(self, request: GenerationRequest, *, since: float) -> str | None:
        """The job a submit with this idempotency key stored, or None: the key decides the
        job id, so the lookup is exact."""
        if not request.idempotency_key:
            return await super().find(request, since=since)
        job_id = self._job_id_for(request.idempotency_key)
        state, _ = await asyncio.to_thread(self._disk_state, job_id)
        return None if state == "missing" else job_id

    @staticmethod
    def _job_id_for(key: str) -> str:
        return f"loc-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:24]}"

    async def poll(self, job_id: str) -> JobStatus:
        """Report the job; a stored job this process is not rendering is resumed."""
        state, detail = await asyncio.to_thread(self._disk_state, job_id)
        if state == "missing":
            raise GeneratorError(GeneratorErrorKind.INVALID_INPUT, f"no such local job {job_id}")
        if state == "canceled":
            return JobStatus(JobState.CANCELED)
        if state == "done":
            return JobStatus(JobState.DONE, progress=1.0)
        if state == "failed":
            return JobStatus(JobState.FAILED, error=detail)
        if job_id not in self._tasks:
            if self._closed:
                return JobStatus(JobState.QUEUED)
            log.info("resuming local job %s", job_id)
            self._start(job_id, detail)
        if job_id in self._progress:
            return JobStatus(JobState.RUNNING, progress=self._progress[job_id])
        return JobStatus(JobState.QUEUED)

    async def download(self, job_id: str, dest: Path) -> Path:
        """Copy the finished clip to ``dest`` (atomically) and return ``dest``."""
        state, detail = await asyncio.to_thread(self._disk_state, job_id)
        if state == "failed":
            raise detail
        if state != "done":
            raise GeneratorError(
                GeneratorErrorKind.INVALID_INPUT, f"local job {job_id} is {state}, not done"
            )
        dest = Path(dest)
        await asyncio.to_thread(self._copy_out, self._job_dir(job_id) / OUTPUT_FILE, dest)
        return dest

    async def cancel(self, job_id: str) -> None:
        """Stop the job. Unknown, finished or already canceled jobs are left as they are."""
        state, _ = await asyncio.to_thread(self._disk_state, job_id)
        if state == "pending":
            await asyncio.to_thread(self._mark_canceled, job_id)
        task = self._tasks.get(job_id)
        if task is not None and state == "pending":
            task.cancel()
            # wait() rather than awaiting the task: our own cancellation must still propagate
            await asyncio.wait([task])

    async def aclose(self) -> None:
        """Stop rendering. Unfinished jobs stay on disk and resume when polled again."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -------------------------------------------------------------- rendering

    def _validate(self, request: GenerationRequest) -> None:
        def bad(message: str) -> GeneratorError:
            return GeneratorError(GeneratorErrorKind.INVALID_INPUT, message)

        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise bad("the prompt is empty")
        if not (0 < request.duration <= self.max_duration):
            raise bad(f"duration must be above 0 and at most {self.max_duration:g} s")
        if request.aspect not in self.sizes:
            raise bad(f"aspect must be one of {', '.join(self.sizes)}, not {request.aspect!r}")
        if request.image is not None and not request.image.startswith(b"\x89PNG\r\n\x1a\n"):
            raise bad("the reference image must be PNG bytes (see bot.media.images)")

    def _start(self, job_id: str, record: Mapping[str, Any]) -> None:
        task = asyncio.create_task(self._run(job_id, record), name=f"local-render-{job_id}")
        self._tasks[job_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(job_id) is done:
                del self._tasks[job_id]

        task.add_done_callback(forget)

    async def _run(self, job_id: str, record: Mapping[str, Any]) -> None:
        async with self._sem:
            state, _ = await asyncio.to_thread(self._disk_state, job_id)
            if state != "pending":
                return
            self._progress[job_id] = 0.0
            started = time.monotonic()
            try:
                await self._render(job_id, record)
                log.info("local job %s rendered in %.1f s", job_id, time.monotonic() - started)
            except GeneratorError as exc:
                await asyncio.to_thread(self._write_error, job_id, exc)
            except MediaError as exc:
                log.warning("local job %s: ffmpeg failed: %s", job_id, exc)
                error = GeneratorError(
                    GeneratorErrorKind.UNKNOWN, f"local render failed: {exc.args[0][:500]}"
                )
                await asyncio.to_thread(self._write_error, job_id, error)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("local job %s failed", job_id)
                error = GeneratorError(GeneratorErrorKind.UNKNOWN, f"local render failed: {exc}")
                await asyncio.to_thread(self._write_error, job_id, error)
            finally:
                self._progress.pop(job_id, None)

    async def _render(self, job_id: str, record: Mapping[str, Any]) -> None:
        job_dir = self._job_dir(job_id)
        prompt = record["prompt"]
        hooks = _TestHooks()
        if self.test_hooks:
            prompt, hooks = _parse_test_hooks(prompt)
            if hooks.fail is not None:
                raise _hook_error(hooks.fail, "render failed")
            if hooks.fail_once is not None and await asyncio.to_thread(
                self._first_time, record["prompt"], record["seed"]
            ):
                raise _hook_error(hooks.fail_once, "render failed once")
        await asyncio.to_thread(self._remove_temps, job_dir)
        tmp = job_dir / f"{_TMP_PREFIX}{secrets.token_hex(4)}.tmp"
        args = build_render_args(
            prompt,
            record["seed"],
            width=record["width"],
            height=record["height"],
            duration=record["duration"],
            fps=record["fps"],
            output=tmp,
            image=job_dir / IMAGE_FILE if record["has_image"] else None,
            audio=record["audio"],
            realtime=hooks.slow,
            threads=self.threads,
        )

        def on_progress(fraction: float) -> None:
            if job_id in self._progress:
                self._progress[job_id] = min(0.99, fraction)

        try:
            await run_ffmpeg(
                args,
                binary=self._binary(),
                duration=record["duration"],
                progress=on_progress,
                timeout=self.render_timeout,
            )
            await asyncio.to_thread(self._publish, tmp, job_dir / OUTPUT_FILE)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _binary(self) -> str:
        if self._ffmpeg is None:
            self._ffmpeg = resolve_ffmpeg(None)
        return self._ffmpeg

    # -------------------------------------------------------------- disk (worker threads)

    def _job_dir(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
            raise GeneratorError(
                GeneratorErrorKind.INVALID_INPUT, f"not a local job id: {job_id!r}"
            )
        return self.work_dir / job_id

    def _store_request(
        self, job_id: str, request: GenerationRequest, fingerprint: str
    ) -> dict[str, Any]:
        """Write the job's folder (request.json last) or return the record already there."""
        job_dir = self._job_dir(job_id)
        existing = self._read_request(job_dir)
        if existing is not None:
            return existing
        job_dir.mkdir(parents=True, exist_ok=True)
        if request.image is not None:
            _write_atomic(job_dir / IMAGE_FILE, request.image)
        width, height = self.sizes[request.aspect]
        record = {
            "version": FORMAT_VERSION,
            "prompt": request.prompt,
            "duration": float(request.duration),
            "aspect": request.aspect,
            "seed": int(request.seed),
            "has_image": request.image is not None,
            "idempotency_key": request.idempotency_key,
            "fingerprint": fingerprint,
            "width": width,
            "height": height,
            "fps": self.fps,
            "audio": self.audio,
            "created": time.time(),
        }
        # request.json is written last: a folder without it is a submit that never finished
        _write_atomic(job_dir / REQUEST_FILE, json.dumps(record, indent=1).encode("utf-8"))
        return record

    @staticmethod
    def _read_request(job_dir: Path) -> dict[str, Any] | None:
        try:
            return json.loads((job_dir / REQUEST_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("unreadable %s: %s", job_dir / REQUEST_FILE, exc)
            return None

    def _disk_state(self, job_id: str) -> tuple[str, Any]:
        """("missing"|"canceled"|"done"|"failed"|"pending", detail) from the job's folder."""
        job_dir = self._job_dir(job_id)
        record = self._read_request(job_dir)
        if record is None:
            return "missing", None
        if (job_dir / CANCELED_FILE).exists():
            return "canceled", None
        if (job_dir / OUTPUT_FILE).exists():
            return "done", None
        try:
            saved = json.loads((job_dir / ERROR_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return "pending", record
        except (OSError, ValueError):
            saved = {"kind": "unknown", "message": "local job failed (unreadable error file)"}
        kind = saved.get("kind", "unknown")
        if kind not in {k.value for k in GeneratorErrorKind}:
            kind = "unknown"
        error = GeneratorError(
            GeneratorErrorKind(kind),
            str(saved.get("message", "local job failed")),
            retry_after=saved.get("retry_after"),
        )
        return "failed", error

    def _write_error(self, job_id: str, error: GeneratorError) -> None:
        payload = {"kind": error.kind.value, "message": error.message}
        if error.retry_after is not None:
            payload["retry_after"] = error.retry_after
        _write_atomic(self._job_dir(job_id) / ERROR_FILE, json.dumps(payload).encode("utf-8"))

    def _mark_canceled(self, job_id: str) -> None:
        _write_atomic(self._job_dir(job_id) / CANCELED_FILE, b"")

    def _first_time(self, prompt: str, seed: int) -> bool:
        """For ``[fail-once:...]``: True (and remember it) the first time this is asked."""
        marks = self.work_dir / ".test-hooks"
        marks.mkdir(parents=True, exist_ok=True)
        mark = marks / hashlib.sha256(f"{prompt}\0{seed}".encode()).hexdigest()[:32]
        try:
            mark.touch(exist_ok=False)
        except FileExistsError:
            return False
        return True

    @staticmethod
    def _remove_temps(job_dir: Path) -> None:
        for stale in job_dir.glob(f"{_TMP_PREFIX}*"):
            stale.unlink(missing_ok=True)

    @staticmethod
    def _publish(tmp: Path, final: Path) -> None:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    @staticmethod
    def _copy_out(src: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1024 * 1024)
                fout.flush()
                os.fsync(fout.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)


def from_settings(settings: Mapping[str, Any] | object) -> LocalGenerator:
    """Build a :class:`LocalGenerator` from crowdcut's settings (or any mapping of them).

    Reads ``generator_work_dir`` (else ``local_work_dir``, else ``DATA_DIR/local-generator``),
    ``ffmpeg_binary``, ``clip_seconds``, and the optional ``local_concurrency`` (default:
    half the CPU cores, at least 1) and ``local_test_hooks`` (default false: on a real
    server any member could type ``[fail:auth]``).
    """
    work_dir = get_setting(settings, "generator_work_dir") or get_setting(
        settings, "local_work_dir"
    )
    if not work_dir:
        work_dir = Path(get_setting(settings, "data_dir", "data")) / "local-generator"
    concurrency = (
        get_setting(settings, "local_concurrency")
        or get_setting(settings, "backend_concurrency")
        or max(1, (os.cpu_count() or 2) // 2)
    )
    return LocalGenerator(
        Path(work_dir),
        ffmpeg=resolve_ffmpeg(get_setting(settings, "ffmpeg_binary") or None),
        max_concurrency=int(concurrency),
        clip_seconds=float(get_setting(settings, "clip_seconds", 4.0)),
        test_hooks=_truthy(get_setting(settings, "local_test_hooks", False)),
    )


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


__all__ = [
    "DEFAULT_SIZES",
    "LocalGenerator",
    "Look",
    "build_render_args",
    "choose_look",
    "from_settings",
    "normalize_prompt",
]
