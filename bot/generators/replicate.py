"""Replicate: video models run as *predictions* over Replicate's HTTP API.

The contract (replicate-python ``replicate/prediction.py``, ``replicate/file.py``,
``replicate/client.py``; replicate.com/docs: prediction lifecycle, input files, data
retention):

- ``POST /v1/models/{owner}/{name}/predictions`` (``REPLICATE_MODEL``) or
  ``POST /v1/predictions`` with ``version`` (``REPLICATE_VERSION``, which wins), body
  ``{"input": {...}}``, ``Authorization: Bearer <token>``. ``Prefer: wait`` (sync mode) is
  never sent: a held-open create that times out is exactly the unknown outcome we avoid;
- the prediction: ``id``, ``status`` (``starting`` | ``processing`` | ``succeeded`` |
  ``failed`` | ``canceled`` | ``aborted``), ``input``, ``output`` (a URL or a list of
  them), ``error``, ``logs``, ``created_at``, ``urls.get``/``urls.cancel``;
- ``GET /v1/predictions`` lists the account's predictions newest first, paginated by
  ``next``; ``POST /v1/predictions/{id}/cancel``; ``POST /v1/files`` (multipart, field
  ``content``) stores an input file and answers its ``urls.get``.

How crowdcut uses it:

- **inputs**: each model names its inputs differently (``start_image`` for Kling,
  ``first_frame_image`` for Hailuo, ``num_frames`` for Wan), so a preset per known model
  maps the request onto them (:data:`PRESETS`); ``REPLICATE_INPUTS`` overrides the mapping
  and ``REPLICATE_DURATIONS``/``REPLICATE_FPS``/``REPLICATE_ASPECTS`` describe an unknown
  model. A reference image goes as a ``data:`` URI when it is at most
  ``REPLICATE_DATA_URI_MAX_BYTES``, else through the files API;
- **progress** comes from the last tqdm line (``45%|████▌ | 9/20 [...]``) in ``logs``,
  as replicate-python's ``Prediction.progress`` reads it, kept monotonic per job;
- **unknown outcome**: Replicate documents no idempotency key for predictions, so a create
  whose answer was lost is looked up in ``GET /v1/predictions``: :meth:`find` pages back to
  ``since`` (minus a clock-skew margin) and matches our exact input (prompt, seed and the
  other fields we send; a reference image by presence, as the stored form of a ``data:``
  URI is not documented). It answers ``None`` only when the listing covered the window;
- **outputs** are removed an hour after an API prediction finishes, so the clip is
  downloaded at once; a 404/410/403 on the file is ``output_expired``, the cached URL is
  dropped and the next :meth:`poll` re-reads the prediction. When the prediction no longer
  names an output (``data_removed``) the poll reports FAILED with ``output_expired`` and
  the worker generates the clip again;
- ``failed`` with an NSFW/safety/sensitive-content message is ``content_policy`` (never
  retried); ``aborted`` (its deadline passed before it started: nothing generated, not
  billed) is FAILED with the transient ``unavailable``; ``canceled`` is CANCELED.

Replicate bills the compute time a prediction used, failed ones included
(replicate.com/docs/billing: "You are billed for the compute time used"), so
``charges_failures`` is true.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.errors import ConfigError, GeneratorError, GeneratorErrorKind
from bot.generators.base import (
    ASPECTS,
    Capabilities,
    GenerationRequest,
    GeneratorBase,
    JobState,
    JobStatus,
    get_setting,
)
from bot.generators.http import ProviderHTTP, RetryPolicy, data_uri, sniff_video

log = logging.getLogger(__name__)

K = GeneratorErrorKind

DEFAULT_API_BASE = "https://api.replicate.com/v1"
DEFAULT_DATA_URI_MAX_BYTES = 256 * 1024

#: our request fields a model input can be mapped from
FIELDS = ("prompt", "image", "duration", "frames", "fps", "aspect", "seed")

#: how far before ``since`` a listed prediction still counts (clock skew between us and
#: Replicate); small, so that an earlier submission of the same request is not adopted
FIND_MARGIN_SECONDS = 15.0
#: pages of ``GET /v1/predictions`` (100 each) read before giving up on a lookup
FIND_MAX_PAGES = 20

# replicate-python's Prediction.Progress pattern, anchored on the percentage; then N/M.
_PROGRESS_RE = re.compile(r"^\s*(\d+)%\s*\|.*?\|\s*(\d+)\s*/\s*(\d+)")
# Refusals as Replicate's models word them ("NSFW content detected", Kling's "flagged as
# sensitive", "safety checker"): whole words only.
_POLICY_RE = re.compile(
    r"\bnsfw\b|\bsafety\b|\bsensitive\b|content[ _-]?polic(?:y|ies)|\bmoderat(?:ion|ed)\b"
    r"|\bflagged\b|\binappropriate\b",
    re.IGNORECASE,
)
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_VIDEO_EXT_RE = re.compile(r"\.(mp4|webm|mov|m4v|mkv)(?:$|\?)", re.IGNORECASE)


@dataclass(frozen=True)
class ModelPreset:
    """How one model takes a request: ``inputs`` maps our fields (:data:`FIELDS`) to the
    model's input names; ``fixed`` inputs are sent as they are."""

    inputs: Mapping[str, str]
    capabilities: Capabilities
    fixed: Mapping[str, Any] = field(default_factory=dict)


def _kling(image_required: bool = False) -> ModelPreset:
    # replicate.com/kwaivgi/kling-v1.6-standard/api: prompt, negative_prompt, start_image,
    # cfg_scale, aspect_ratio (16:9 | 9:16 | 1:1, ignored with start_image), duration 5 | 10
    return ModelPreset(
        inputs={
            "prompt": "prompt",
            "image": "start_image",
            "duration": "duration",
            "aspect": "aspect_ratio",
        },
        capabilities=Capabilities(
            durations=(5.0, 10.0),
            min_seconds=5.0,
            max_seconds=10.0,
            image_required=image_required,
            max_prompt_chars=2500,
            natural_seconds=5.0,
        ),
    )


def _seedance() -> ModelPreset:
    # replicate.com/bytedance/seedance-1-lite/api: prompt, image, duration (integer 2-12),
    # resolution, aspect_ratio (16:9, 4:3, 1:1, 3:4, 9:16, 21:9, 9:21), fps 24, seed
    return ModelPreset(
        inputs={
            "prompt": "prompt",
            "image": "image",
            "duration": "duration",
            "aspect": "aspect_ratio",
            "seed": "seed",
        },
        capabilities=Capabilities(
            durations=tuple(float(s) for s in range(2, 13)),
            min_seconds=2.0,
            max_seconds=12.0,
            natural_seconds=5.0,
        ),
    )


def _wan(image: bool) -> ModelPreset:
    # replicate.com/wan-video/wan-2.2-t2v-fast/api and wan-2.2-i2v-a14b/api: prompt,
    # (image), num_frames 81-100, frames_per_second 5-24 (16 is the model's own rate),
    # aspect_ratio 16:9 | 9:16 (t2v; i2v follows the image), resolution, seed
    inputs = {
        "prompt": "prompt",
        "frames": "num_frames",
        "fps": "frames_per_second",
        "seed": "seed",
    }
    if image:
        inputs["image"] = "image"
    else:
        inputs["aspect"] = "aspect_ratio"
    return ModelPreset(
        inputs=inputs,
        capabilities=Capabilities(
            min_seconds=81 / 16,
            max_seconds=100 / 16,
            fps=16.0,
            aspects=("16:9", "9:16"),
            image_input=image,
            image_required=image,
            natural_seconds=81 / 16,
        ),
    )


def _hailuo() -> ModelPreset:
    # replicate.com/minimax/hailuo-02/api: prompt, first_frame_image (the video takes its
    # aspect), duration 6 | 10, resolution, prompt_optimizer; text alone makes 16:9
    return ModelPreset(
        inputs={"prompt": "prompt", "image": "first_frame_image", "duration": "duration"},
        capabilities=Capabilities(
            durations=(6.0, 10.0),
            min_seconds=6.0,
            max_seconds=10.0,
            aspects=("16:9",),
            natural_seconds=6.0,
        ),
        fixed={"prompt_optimizer": False},
    )


#: built-in input mappings and capabilities of known video models, by ``owner/name``
PRESETS: Mapping[str, ModelPreset] = {
    "kwaivgi/kling-v1.6-standard": _kling(),
    "kwaivgi/kling-v1.6-pro": _kling(),
    "kwaivgi/kling-v2.1-master": _kling(),
    "bytedance/seedance-1-lite": _seedance(),
    "bytedance/seedance-1-pro": _seedance(),
    "wan-video/wan-2.2-t2v-fast": _wan(image=False),
    "wan-video/wan-2.2-i2v-a14b": _wan(image=True),
    "minimax/hailuo-02": _hailuo(),
}


# ------------------------------------------------------------------------------ parsing


def parse_progress(logs: str | None) -> float | None:
    """Progress 0..1 from the last tqdm-like ``N%|...| N/M`` line of ``logs``."""
    if not logs:
        return None
    for line in reversed(logs.replace("\r", "\n").split("\n")):
        m = _PROGRESS_RE.match(line)
        if m:
            current, total = int(m[2]), int(m[3])
            if total > 0:
                return max(0.0, min(1.0, current / total))
    return None


def parse_time(value: Any) -> float | None:
    """Epoch seconds from Replicate's ``created_at`` (ISO 8601 with ``Z``; any number of
    fraction digits), or None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    m = re.match(r"^(.*?\d{2}:\d{2}:\d{2})(\.\d+)?(.*)$", text)
    if m:
        frac = (m[2] or "")[:7]  # at most microseconds
        text = f"{m[1]}{frac}{m[3]}"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp()


def _output_url(output: Any, depth: int = 0) -> str | None:
    """The video among a prediction's outputs: a URL string, the video-looking one of a
    list (else its first), or the same inside an object."""
    if depth > 3 or output is None:
        return None
    if isinstance(output, str):
        text = output.strip()
        return text if text.startswith(("https://", "http://", "data:")) else None
    if isinstance(output, list):
        urls = [u for u in (_output_url(v, depth + 1) for v in output) if u]
        videos = [u for u in urls if _VIDEO_EXT_RE.search(u) or u.startswith("data:video/")]
        return (videos or urls or [None])[0]
    if isinstance(output, Mapping):
        return _output_url(list(output.values()), depth + 1)
    return None


def parse_inputs(text: str) -> tuple[dict[str, str], dict[str, Any]]:
    """``REPLICATE_INPUTS``: ``prompt=prompt,image=start_image,duration=duration`` (our
    field = the model's input name), or a JSON object of the same with an optional
    ``"fixed": {...}`` of inputs sent as they are. Returns (mapping, fixed)."""
    text = (text or "").strip()
    fixed: dict[str, Any] = {}
    if text.startswith("{"):
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"REPLICATE_INPUTS is not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError("REPLICATE_INPUTS must be a JSON object")
        extra = raw.pop("fixed", {}) or {}
        if not isinstance(extra, dict):
            raise ConfigError('REPLICATE_INPUTS: "fixed" must be an object')
        fixed = dict(extra)
        pairs = list(raw.items())
    else:
        pairs = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            ours, sep, theirs = part.partition("=")
            if not sep:
                raise ConfigError(
                    f"REPLICATE_INPUTS: {part!r} is not field=input_name "
                    f"(fields: {', '.join(FIELDS)})"
                )
            pairs.append((ours.strip(), theirs.strip()))
    mapping: dict[str, str] = {}
    for ours, theirs in pairs:
        if ours not in FIELDS:
            raise ConfigError(f"REPLICATE_INPUTS: {ours!r} is not one of {', '.join(FIELDS)}")
        if not isinstance(theirs, str) or not theirs:
            raise ConfigError(f"REPLICATE_INPUTS: the input name for {ours!r} is empty")
        mapping[ours] = theirs
    if "prompt" not in mapping:
        raise ConfigError("REPLICATE_INPUTS must map prompt (e.g. prompt=prompt)")
    return mapping, fixed


def parse_durations(text: str, fps: float | None) -> dict[str, Any]:
    """``REPLICATE_DURATIONS``: ``5,10`` (only these lengths) or ``2-12`` (any length in
    that range; whole frames when ``REPLICATE_FPS`` is set). Returns Capabilities fields."""
    text = (text or "").strip()
    try:
        if "-" in text.lstrip("-"):
            low, _, high = text.partition("-")
            lo, hi = float(low), float(high)
            if not 0 < lo <= hi:
                raise ValueError
            return {
                "durations": (),
                "min_seconds": lo,
                "max_seconds": hi,
                "fps": fps,
                "natural_seconds": min(hi, max(lo, 5.0)),
            }
        values = tuple(sorted({float(v) for v in text.split(",") if v.strip()}))
        if not values or values[0] <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"REPLICATE_DURATIONS={text!r} is not valid: give accepted lengths in seconds "
            "(5,10) or a range (2-12)."
        ) from None
    return {
        "durations": values,
        "min_seconds": values[0],
        "max_seconds": values[-1],
        "fps": fps,
        "natural_seconds": values[0],
    }


# ------------------------------------------------------------------------------ backend


class ReplicateGenerator(GeneratorBase):
    """Video clips from one Replicate model (or model version)."""

    name = "replicate"
    charges_failures = True

    def __init__(
        self,
        token: str,
        *,
        model: str | None = None,
        version: str | None = None,
        preset: ModelPreset | None = None,
        api_base: str = DEFAULT_API_BASE,
        data_uri_max_bytes: int = DEFAULT_DATA_URI_MAX_BYTES,
        max_concurrency: int = 2,
        policy: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        sleep: Any = None,
    ) -> None:
        if not token:
            raise ConfigError("REPLICATE_API_TOKEN is not set: the replicate backend needs it.")
        model = (model or "").strip() or None
        version = (version or "").strip() or None
        if version and ":" in version:  # "owner/name:version"
            named, _, version = version.partition(":")
            model = model or named
        if not model and not version:
            raise ConfigError(
                "Set REPLICATE_MODEL (owner/name) or REPLICATE_VERSION for the replicate backend."
            )
        if model and not re.fullmatch(r"[\w.-]+/[\w.-]+", model):
            raise ConfigError(f"REPLICATE_MODEL={model!r} is not owner/name.")
        if version and not re.fullmatch(r"[\w.-]+", version):
            raise ConfigError(f"REPLICATE_VERSION={version!r} is not a version id.")
        preset = preset or PRESETS.get((model or "").lower())
        if preset is None:
            raise ConfigError(
                f"REPLICATE_MODEL={model or version!r} has no built-in input mapping: set "
                "REPLICATE_INPUTS and REPLICATE_DURATIONS (known models: "
                f"{', '.join(sorted(PRESETS))})."
            )
        self.model_name = model
        self.version = version
        self.model = f"{model}:{version}" if model and version else (model or version or "")
        self.preset = preset
        self.capabilities = preset.capabilities
        self.clip_seconds = preset.capabilities.natural_seconds
        self.max_concurrency = max(1, int(max_concurrency))
        self.data_uri_max_bytes = int(data_uri_max_bytes)
        kw: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        self.http = ProviderHTTP(
            "replicate",
            base_url=api_base or DEFAULT_API_BASE,
            headers={"Authorization": f"Bearer {token}"},
            secrets=[token],
            policy=policy,
            session=session,
            **kw,
        )
        self._outputs: dict[str, str] = {}  # prediction id -> output URL seen by poll
        self._progress: dict[str, float] = {}
        self._uploads: dict[str, str] = {}  # sha256 of an image -> files API URL
        self._created: set[str] = set()  # ids our own submits got back

    # ------------------------------------------------------------------ input
    def _image_ref(self, image: bytes) -> str | None:
        if len(image) <= self.data_uri_max_bytes:
            return data_uri(image, "image/png")
        return self._uploads.get(hashlib.sha256(image).hexdigest())

    async def _upload(self, image: bytes) -> str:
        """Store a large image with the files API; its ``urls.get`` is the model input."""
        digest = hashlib.sha256(image).hexdigest()
        if digest in self._uploads:
            return self._uploads[digest]

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("content", image, filename="reference.png", content_type="image/png")
            return data

        body = (await self.http.request("POST", "files", data=form)).body
        url = body.get("urls", {}).get("get") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise self.http.error(K.MALFORMED, "POST /files: the answer names no file URL")
        self._uploads[digest] = url
        return url

    def _input(self, request: GenerationRequest, image_ref: str | None) -> dict[str, Any]:
        caps, names = self.capabilities, self.preset.inputs
        inp: dict[str, Any] = dict(self.preset.fixed)
        inp[names["prompt"]] = request.prompt
        fps = caps.fps
        if "duration" in names:
            seconds = request.duration
            whole = all(float(d).is_integer() for d in caps.durations) and caps.durations
            inp[names["duration"]] = int(round(seconds)) if whole else round(seconds, 3)
        if "frames" in names and fps:
            frames = round(request.duration * fps)
            low = round(caps.min_seconds * fps)
            high = round(caps.max_seconds * fps)
            inp[names["frames"]] = max(low, min(high, frames))
        if "fps" in names and fps:
            inp[names["fps"]] = int(fps) if float(fps).is_integer() else fps
        if "aspect" in names:
            inp[names["aspect"]] = request.aspect
        if "seed" in names:
            inp[names["seed"]] = int(request.seed) % 2**31  # every model takes an int32
        if image_ref is not None and "image" in names:
            inp[names["image"]] = image_ref
        return inp

    def _validate(self, request: GenerationRequest) -> None:
        caps = self.capabilities
        if len(request.prompt) > caps.max_prompt_chars:
            raise GeneratorError(
                K.INVALID_INPUT,
                f"the prompt is {len(request.prompt)} characters; {self.model} takes "
                f"{caps.max_prompt_chars}",
            )
        if request.aspect not in caps.aspects:
            raise GeneratorError(
                K.INVALID_INPUT,
                f"{self.model} makes {', '.join(caps.aspects)}, not {request.aspect}",
            )
        if request.image is not None and (
            not caps.image_input or "image" not in self.preset.inputs
        ):
            raise GeneratorError(K.INVALID_INPUT, f"{self.model} takes no reference image")
        if request.image is None and caps.image_required:
            raise GeneratorError(K.INVALID_INPUT, f"{self.model} needs a reference image")

    # ------------------------------------------------------------------ protocol
    async def submit(self, request: GenerationRequest) -> str:
        self._validate(request)
        image_ref = None
        if request.image is not None:
            image_ref = self._image_ref(request.image) or await self._upload(request.image)
        body: dict[str, Any] = {"input": self._input(request, image_ref)}
        if self.version:
            path = "predictions"
            body["version"] = self.version
        else:
            path = f"models/{self.model_name}/predictions"
        answer = await self.http.post_json(path, body, create=True)
        pid = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(pid, str) or not _ID_RE.match(pid):
            raise self.http.error(
                K.OUTCOME_UNKNOWN, f"POST /{path}: the answer names no prediction; it may exist"
            )
        self._created.add(pid)
        log.info("replicate: prediction %s created on %s", pid, self.model)
        return pid

    async def find(self, request: GenerationRequest, *, since: float) -> str | None:
        image_name = self.preset.inputs.get("image")
        want = self._input(request, None)
        want.pop(image_name or "", None)
        oldest = since - FIND_MARGIN_SECONDS
        cursor: str | None = "predictions"
        for _page in range(FIND_MAX_PAGES):
            if cursor is None:
                return None
            page = await self.http.get_json(cursor)
            results = page.get("results") if isinstance(page, dict) else None
            if not isinstance(results, list):
                raise self.http.error(K.MALFORMED, "GET /predictions: no results list")
            for item in results:
                if not isinstance(item, dict):
                    continue
                created = parse_time(item.get("created_at"))
                if created is not None and created < oldest:
                    return None  # newest first: the rest is older still
                if self._matches(item, want, image_name, request.image is not None):
                    pid = item["id"]
                    log.info("replicate: found prediction %s created by a lost submit", pid)
                    return pid
            nxt = page.get("next")
            cursor = nxt if isinstance(nxt, str) and nxt else None
        if cursor is None:
            return None
        raise self.http.error(
            K.OUTCOME_UNKNOWN,
            f"GET /predictions: {FIND_MAX_PAGES} pages did not reach back to the submission",
        )

    def _matches(
        self, item: Mapping[str, Any], want: Mapping[str, Any], image_name: str | None, image: bool
    ) -> bool:
        pid = item.get("id")
        if not isinstance(pid, str) or not _ID_RE.match(pid) or pid in self._created:
            return False
        if self.version and item.get("version") not in (None, "", "hidden", self.version):
            return False
        got = item.get("input")
        if not isinstance(got, dict):
            return False
        if any(got.get(k) != v for k, v in want.items()):
            return False
        return bool(image_name and got.get(image_name)) == image

    async def _read(self, job_id: str) -> dict[str, Any]:
        if not _ID_RE.match(job_id or ""):
            raise GeneratorError(K.INVALID_INPUT, "replicate: not a prediction id")
        body = await self.http.get_json(f"predictions/{quote(job_id)}")
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise self.http.error(K.MALFORMED, "GET /predictions/{id}: no status in the answer")
        return body

    async def poll(self, job_id: str) -> JobStatus:
        p = await self._read(job_id)
        status = p["status"]
        if status == "starting":
            return JobStatus(JobState.QUEUED)
        if status == "processing":
            logs = p.get("logs") if isinstance(p.get("logs"), str) else None
            found = parse_progress(logs)
            progress = max(found or 0.0, self._progress.get(job_id, 0.0))
            self._progress[job_id] = progress
            return JobStatus(JobState.RUNNING, progress if found is not None or progress else None)
        self._progress.pop(job_id, None)
        if status == "succeeded":
            url = _output_url(p.get("output"))
            if url is not None:
                self._outputs[job_id] = url
                return JobStatus(JobState.DONE, 1.0)
            self._outputs.pop(job_id, None)
            if p.get("output") is None or p.get("data_removed"):
                error = self.http.error(
                    K.OUTPUT_EXPIRED,
                    "prediction succeeded but its output was removed (API outputs are kept "
                    "an hour); it must be generated again",
                )
            else:
                error = self.http.error(K.MALFORMED, "prediction succeeded with no video URL")
            return JobStatus(JobState.FAILED, error=error)
        if status == "failed":
            return JobStatus(JobState.FAILED, error=self._failure(p.get("error")))
        if status == "canceled":
            return JobStatus(JobState.CANCELED)
        if status == "aborted":
            return JobStatus(
                JobState.FAILED,
                error=self.http.error(
                    K.UNAVAILABLE,
                    "prediction aborted before it started (its deadline passed); nothing was "
                    "generated",
                ),
            )
        raise self.http.error(K.MALFORMED, f"unknown prediction status {status[:40]!r}")

    def _failure(self, error: Any) -> GeneratorError:
        text = error if isinstance(error, str) else json.dumps(error)[:300] if error else ""
        text = " ".join(text.split())[:300] or "no details"
        if _POLICY_RE.search(text):
            return self.http.error(K.CONTENT_POLICY, f"refused the content: {text}")
        return self.http.error(K.UNKNOWN, f"prediction failed: {text}")

    async def download(self, job_id: str, dest: Path) -> Path:
        url = self._outputs.get(job_id)
        if url is None:
            status = await self.poll(job_id)
            if status.state != JobState.DONE:
                raise status.error or GeneratorError(
                    K.INVALID_INPUT, f"replicate: prediction {job_id} is {status.state.value}"
                )
            url = self._outputs[job_id]
        try:
            if url.startswith("data:"):
                return self._write_data_uri(url, dest)
            own = url.startswith(self.http.base_url + "/")  # files API: needs our token
            return await self.http.download(url, dest, auth=own)
        except GeneratorError as e:
            if e.kind == K.OUTPUT_EXPIRED:
                self._outputs.pop(job_id, None)  # the next poll fetches the current URL
            raise

    def _write_data_uri(self, url: str, dest: Path) -> Path:
        _, _, payload = url.partition(",")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise self.http.error(K.MALFORMED, "the output data URI is not base64") from None
        if sniff_video(data[:16]) is None:
            raise self.http.error(K.NOT_VIDEO, "the output is not a video file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        return dest

    async def cancel(self, job_id: str) -> None:
        if not _ID_RE.match(job_id or ""):
            return
        try:
            await self.http.post_json(f"predictions/{quote(job_id)}/cancel")
        except GeneratorError as e:
            if e.kind != K.INVALID_INPUT:  # 404/409/422: gone or finished, nothing to stop
                raise
            log.info("replicate: cancel %s: %s", job_id, e.message)
        self._outputs.pop(job_id, None)
        self._progress.pop(job_id, None)

    async def check(self) -> str:
        account = await self.http.get_json("account")
        who = account.get("username") if isinstance(account, dict) else None
        if self.model_name:
            path = f"models/{self.model_name}"
            if self.version:
                path += f"/versions/{self.version}"
            try:
                await self.http.get_json(path)
            except GeneratorError as e:
                if e.kind == K.INVALID_INPUT:
                    raise ConfigError(
                        f"REPLICATE_MODEL/REPLICATE_VERSION: Replicate has no {self.model} "
                        f"({e.message})"
                    ) from None
                raise
        return (
            f"replicate: {self.model} as {who or 'unknown account'}; {self.capabilities.describe()}"
        )

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.http.aclose()


# ------------------------------------------------------------------------------ settings


def from_settings(settings: Mapping[str, Any] | object) -> ReplicateGenerator:
    """Build a :class:`ReplicateGenerator` from crowdcut's settings (or any mapping of them).

    Reads ``replicate_api_token``, ``replicate_model`` / ``replicate_version``,
    ``replicate_inputs``, ``replicate_durations``, ``replicate_fps``, ``replicate_aspects``,
    ``replicate_api_base``, ``replicate_data_uri_max_bytes`` and ``backend_concurrency``.
    """
    model = str(get_setting(settings, "replicate_model", "") or "").strip()
    version = str(get_setting(settings, "replicate_version", "") or "").strip()
    key = model or (version.partition(":")[0] if ":" in version else "")
    preset = PRESETS.get(key.lower())
    inputs = str(get_setting(settings, "replicate_inputs", "") or "").strip()
    durations = str(get_setting(settings, "replicate_durations", "") or "").strip()
    fps_value = float(get_setting(settings, "replicate_fps", 0) or 0)
    fps = fps_value if fps_value > 0 else None
    aspects = str(get_setting(settings, "replicate_aspects", "") or "").strip()
    if preset is None:
        if not inputs or not durations:
            raise ConfigError(
                f"REPLICATE_MODEL={(model or version)!r} has no built-in input mapping: set "
                "REPLICATE_INPUTS and REPLICATE_DURATIONS (known models: "
                f"{', '.join(sorted(PRESETS))})."
            )
        preset = ModelPreset(inputs={"prompt": "prompt"}, capabilities=Capabilities())
    if inputs:
        mapping, fixed = parse_inputs(inputs)
        preset = replace(
            preset,
            inputs=mapping,
            fixed=fixed,
            capabilities=replace(preset.capabilities, image_input="image" in mapping),
        )
    if durations:
        preset = replace(
            preset, capabilities=replace(preset.capabilities, **parse_durations(durations, fps))
        )
    elif fps:
        preset = replace(preset, capabilities=replace(preset.capabilities, fps=fps))
    if aspects:
        wanted = tuple(a.strip() for a in aspects.split(",") if a.strip())
        bad = [a for a in wanted if a not in ASPECTS]
        if bad or not wanted:
            raise ConfigError(
                f"REPLICATE_ASPECTS={aspects!r} is not valid: allowed values are "
                f"{', '.join(ASPECTS)}."
            )
        preset = replace(preset, capabilities=replace(preset.capabilities, aspects=wanted))
    if "frames" in preset.inputs and not preset.capabilities.fps:
        raise ConfigError("REPLICATE_INPUTS maps frames: set REPLICATE_FPS too.")
    return ReplicateGenerator(
        str(get_setting(settings, "replicate_api_token", "") or ""),
        model=model or None,
        version=version or None,
        preset=preset,
        api_base=str(get_setting(settings, "replicate_api_base", DEFAULT_API_BASE)),
        data_uri_max_bytes=int(
            get_setting(settings, "replicate_data_uri_max_bytes", DEFAULT_DATA_URI_MAX_BYTES)
        ),
        max_concurrency=int(get_setting(settings, "backend_concurrency", 2)),
    )


__all__ = [
    "DEFAULT_API_BASE",
    "PRESETS",
    "ModelPreset",
    "ReplicateGenerator",
    "from_settings",
    "parse_durations",
    "parse_inputs",
    "parse_progress",
    "parse_time",
]
