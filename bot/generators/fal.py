"""fal.ai video models through fal's queue API (Kling, Wan, Veo, Hailuo, LTX endpoints).

The contract followed here, from fal's own client and docs:

- ``POST {queue}/{endpoint_id}`` with the model's input as JSON and the header
  ``Authorization: Key <FAL_KEY>`` adds a request to the queue and answers
  ``{"request_id", "response_url", "status_url", "cancel_url"}``;
- ``GET {queue}/{app}/requests/{id}/status?logs=1`` answers ``IN_QUEUE`` (with
  ``queue_position``), ``IN_PROGRESS`` (with ``logs``) or ``COMPLETED`` (with ``logs`` and,
  for a failed request, ``error`` / ``error_type``);
- ``GET {queue}/{app}/requests/{id}`` answers the model's output (``{"video": {"url"}}``),
  or the request's own error (a 422 ``detail`` list, a request error with ``error_type``);
- ``PUT {queue}/{app}/requests/{id}/cancel`` answers 202 ``CANCELLATION_REQUESTED``, or 400
  ``ALREADY_COMPLETED``.

``{app}`` is the endpoint id *without* its subpath: a request submitted to
``fal-ai/kling-video/v2.1/standard/image-to-video`` is read at
``fal-ai/kling-video/requests/{id}/status`` (fal_client ``AppId.from_endpoint_id`` and
``AsyncRequestHandle.from_request_id``; fal docs "Queue API": "the subpath should be used
when making the request, but not when getting request status or results"). The ``workflows``
and ``comfy`` namespaces keep one more part, as in fal_client. URLs are built here from the
endpoint id rather than taken from the submit answer, so a job is found again after a restart
from its stored id alone, which is ``"<app>|<request_id>"``.

Errors (fal docs "Model Errors" and "Request Errors"): a model error is a ``detail`` list of
``{"loc", "msg", "type"}``; ``type == "content_policy_violation"`` (HTTP 422) is a refusal
and becomes ``CONTENT_POLICY``. Every error answer carries ``X-Fal-Retryable``: ``false`` on
a 429/5xx makes it final here (``INVALID_INPUT``), ``true`` on any other status makes it
``UNAVAILABLE`` (transient). Request errors (``{"detail": str, "error_type": str}``, also in
``X-Fal-Error-Type``) keep the status-code mapping of :func:`classify_http_error`.

Images go inline as ``data:image/png;base64,...`` URIs (fal accepts data URIs wherever it
takes a file URL). Progress: fal reports no percentage; a queued request is at 0, a running
one has a progress only when its logs show one (``40%`` or ``12/30`` steps), a finished one 1.

``find`` (after a create whose answer was lost) asks fal's Platform API
``GET /v1/models/requests/by-endpoint`` (fal docs "List requests by endpoint(s)"), which lists
the account's requests of an endpoint with their inputs (``expand=payloads``). That list is
sorted by end time and filters only finished statuses, so a request still queued or running
may be missing from it: a match is the job, but no match proves nothing, and ``find`` then
says it cannot tell (the job fails rather than pay twice).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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
    parse_retry_after,
)
from bot.generators.http import ProviderHTTP, RetryPolicy, data_uri

log = logging.getLogger(__name__)

K = GeneratorErrorKind

DEFAULT_MODEL = "fal-ai/kling-video/v2.1/standard/image-to-video"
DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_API_URL = "https://api.fal.ai/v1"
#: fal's namespaces whose app id has three parts (fal_client ``APP_NAMESPACES``)
NAMESPACES = ("workflows", "comfy")
#: our request's fields that can be mapped to a model's input names
FIELDS = ("prompt", "image", "duration", "aspect", "seed", "negative_prompt")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_PERCENT_RE = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
_STEPS_RE = re.compile(r"\b(\d{1,6})\s*/\s*(\d{1,6})\b")


# ------------------------------------------------------------------------------ presets


@dataclass(frozen=True)
class Preset:
    """How to talk to one family of fal endpoints: input names and what it accepts.

    ``durations`` maps an accepted length in seconds to the value sent in the
    ``duration`` input (fal's video models take enums such as ``"5"`` or ``"8s"``, or a
    frame count); ``frames_fps`` instead sends ``round(seconds * fps) + 1`` frames for any
    length from ``min_seconds`` to ``max_seconds``.
    """

    family: str
    inputs: Mapping[str, str]
    durations: Mapping[float, Any] = field(default_factory=dict)
    frames_fps: float | None = None
    min_seconds: float = 1.0
    max_seconds: float = 10.0
    aspects: tuple[str, ...] = ASPECTS
    max_prompt_chars: int = 2000
    natural_seconds: float = 5.0
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def duration_value(self, seconds: float) -> Any:
        if self.frames_fps:
            return int(round(seconds * self.frames_fps)) + 1
        for length, value in self.durations.items():
            if abs(length - seconds) < 1e-6:
                return value
        raise GeneratorError(
            K.INVALID_INPUT,
            f"fal {self.family}: a {seconds:g} s clip is not offered "
            f"(accepted: {', '.join(f'{d:g}' for d in sorted(self.durations))} s)",
        )


_I2V = {"prompt": "prompt", "image": "image_url", "duration": "duration"}

#: (substring of the endpoint id, preset); the first match wins. Sources: each model's
#: page on fal.ai (``fal.ai/models/<endpoint>/llms.txt``, "Input Schema").
PRESETS: tuple[tuple[str, Preset], ...] = (
    (
        # fal-ai/kling-video/v2.x/{standard,pro}/{image,text}-to-video: duration "5" | "10";
        # aspect_ratio on text-to-video only (image-to-video takes the image's shape)
        "kling-video/",
        Preset(
            "kling",
            {**_I2V, "aspect": "aspect_ratio", "negative_prompt": "negative_prompt"},
            durations={5.0: "5", 10.0: "10"},
            aspects=("16:9", "9:16", "1:1"),
            max_prompt_chars=2500,
            natural_seconds=5.0,
        ),
    ),
    (
        # fal-ai/veo3, fal-ai/veo3/fast, .../image-to-video: duration "4s" | "6s" | "8s";
        # aspect_ratio "16:9" | "9:16"
        "veo3",
        Preset(
            "veo",
            {**_I2V, "aspect": "aspect_ratio", "negative_prompt": "negative_prompt"},
            durations={4.0: "4s", 6.0: "6s", 8.0: "8s"},
            aspects=("16:9", "9:16"),
            natural_seconds=8.0,
        ),
    ),
    (
        # fal-ai/minimax/hailuo-02/{standard,pro}/{image,text}-to-video: duration "6" | "10";
        # no aspect input (16:9 from text, the image's shape from an image)
        "hailuo",
        Preset(
            "hailuo",
            dict(_I2V),
            durations={6.0: "6", 10.0: "10"},
            aspects=("16:9",),
            natural_seconds=6.0,
        ),
    ),
    (
        # fal-ai/wan-i2v, fal-ai/wan-t2v (Wan 2.1): num_frames 81..100 at frames_per_second;
        # 81 frames at 16 fps is the model's 5 s clip
        "wan-",
        Preset(
            "wan",
            {
                "prompt": "prompt",
                "image": "image_url",
                "duration": "num_frames",
                "aspect": "aspect_ratio",
                "seed": "seed",
                "negative_prompt": "negative_prompt",
            },
            durations={5.0: 81},
            aspects=("16:9", "9:16", "1:1"),
            natural_seconds=5.0,
            fixed={"frames_per_second": 16},
        ),
    ),
    (
        # fal-ai/ltx-video-13b-distilled/image-to-video and relatives: num_frames at
        # frame_rate; aspect_ratio "16:9" | "9:16" | "1:1"
        "ltx",
        Preset(
            "ltx",
            {
                "prompt": "prompt",
                "image": "image_url",
                "duration": "num_frames",
                "aspect": "aspect_ratio",
                "seed": "seed",
                "negative_prompt": "negative_prompt",
            },
            frames_fps=24.0,
            min_seconds=1.0,
            max_seconds=5.0,
            aspects=("16:9", "9:16", "1:1"),
            natural_seconds=5.0,
            fixed={"frame_rate": 24},
        ),
    ),
)


def app_base(endpoint: str) -> str:
    """The app part of an endpoint id, where its status, result and cancel live:
    ``fal-ai/kling-video/v2.1/standard/image-to-video`` -> ``fal-ai/kling-video``."""
    parts = [p for p in endpoint.strip("/").split("/") if p]
    keep = 3 if parts and parts[0] in NAMESPACES else 2
    if len(parts) < keep:
        raise ConfigError(
            f"FAL_MODEL={endpoint!r} is not valid: expected an endpoint id such as "
            f"{DEFAULT_MODEL!r}."
        )
    return "/".join(parts[:keep])


def wants_image(endpoint: str) -> bool:
    """Whether an endpoint cannot work from text alone, by fal's naming."""
    low = endpoint.lower()
    return "image-to-video" in low or "i2v" in low


def parse_inputs(text: str) -> dict[str, str]:
    """``FAL_INPUTS``: ``prompt=prompt,image=image_url,duration=duration`` (an empty name
    leaves that field out of the request)."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, name = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in FIELDS:
            raise ConfigError(
                f"FAL_INPUTS={text!r} is not valid: expected field=input pairs with "
                f"fields among {', '.join(FIELDS)}."
            )
        out[key] = name.strip()
    return out


def parse_durations(text: str) -> dict[float, Any]:
    """``FAL_DURATIONS``: the values the model's duration input accepts, as sent
    (``5,10`` or ``4s,6s,8s``); the number at the start of each is its length in seconds."""
    out: dict[float, Any] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        m = re.match(r"^(\d+(?:\.\d+)?)", item)
        if not m or float(m.group(1)) <= 0:
            raise ConfigError(
                f"FAL_DURATIONS={text!r} is not valid: expected values such as 5,10 or 4s,8s."
            )
        out[float(m.group(1))] = item
    return out


def resolve_preset(endpoint: str, inputs: str = "", durations: str = "") -> Preset:
    """The preset for ``endpoint``, with ``FAL_INPUTS`` / ``FAL_DURATIONS`` applied."""
    low = endpoint.lower()
    preset = next((p for key, p in PRESETS if key in low), None)
    overrides = parse_inputs(inputs)
    lengths = parse_durations(durations)
    if preset is None:
        if not overrides or not lengths:
            raise ConfigError(
                f"FAL_MODEL={endpoint!r} has no built-in preset (known: "
                f"{', '.join(p.family for _, p in PRESETS)}): set FAL_INPUTS and FAL_DURATIONS."
            )
        preset = Preset("custom", {}, aspects=ASPECTS if "aspect" in overrides else ("16:9",))
    mapping = {k: v for k, v in {**preset.inputs, **overrides}.items() if v}
    if preset.family != "custom" and not wants_image(endpoint):
        # fal names its image endpoints ".../image-to-video" or "...-i2v"; the others
        # (".../text-to-video", "fal-ai/veo3/fast", "fal-ai/wan-t2v") take text only
        mapping.pop("image", None)
    elif wants_image(endpoint) and preset.family in ("kling", "hailuo"):
        # these image-to-video endpoints take the image's shape and have no aspect input
        mapping.pop("aspect", None)
    if "prompt" not in mapping:
        raise ConfigError(f"FAL_INPUTS={inputs!r} is not valid: the prompt must be mapped.")
    preset = replace(preset, inputs=mapping)
    if lengths:
        preset = replace(preset, durations=lengths, frames_fps=None)
    if not preset.frames_fps and not preset.durations:
        raise ConfigError(f"FAL_DURATIONS must list the lengths {endpoint!r} accepts.")
    return preset


def preset_capabilities(preset: Preset, endpoint: str) -> Capabilities:
    image_input = "image" in preset.inputs
    aspects = preset.aspects
    if image_input and wants_image(endpoint) and "aspect" not in preset.inputs:
        aspects = ASPECTS  # the reference image decides the shape
    if preset.frames_fps:
        return Capabilities(
            min_seconds=preset.min_seconds,
            max_seconds=preset.max_seconds,
            fps=preset.frames_fps,
            aspects=aspects,
            image_input=image_input,
            image_required=image_input and wants_image(endpoint),
            max_prompt_chars=preset.max_prompt_chars,
            natural_seconds=min(preset.natural_seconds, preset.max_seconds),
        )
    lengths = tuple(sorted(preset.durations))
    natural = preset.natural_seconds if preset.natural_seconds in lengths else lengths[0]
    return Capabilities(
        durations=lengths,
        min_seconds=lengths[0],
        max_seconds=lengths[-1],
        aspects=aspects,
        image_input=image_input,
        image_required=image_input and wants_image(endpoint),
        max_prompt_chars=preset.max_prompt_chars,
        natural_seconds=natural,
    )


def combine(main: Capabilities, text: Capabilities) -> Capabilities:
    """What a model pair offers: the image model with an image, the text model without."""
    if main.durations or text.durations:
        a = set(main.durations) if main.durations else None
        b = set(text.durations) if text.durations else None
        if a is None:
            a = {d for d in b or () if main.min_seconds <= d <= main.max_seconds}
        if b is None:
            b = {d for d in a if text.min_seconds <= d <= text.max_seconds}
        lengths = tuple(sorted(a & b))
        if not lengths:
            raise ConfigError("FAL_MODEL and FAL_TEXT_MODEL accept no clip length in common.")
        durations, lo, hi, fps = lengths, lengths[0], lengths[-1], None
    else:
        durations, fps = (), main.fps
        lo, hi = max(main.min_seconds, text.min_seconds), min(main.max_seconds, text.max_seconds)
    aspects = tuple(a for a in main.aspects if a in text.aspects) or main.aspects
    natural = main.natural_seconds
    if durations and natural not in durations:
        natural = durations[0]
    return Capabilities(
        durations=durations,
        min_seconds=lo,
        max_seconds=hi,
        fps=fps,
        aspects=aspects,
        image_input=main.image_input,
        image_required=False,
        max_prompt_chars=min(main.max_prompt_chars, text.max_prompt_chars),
        natural_seconds=natural,
    )


# ------------------------------------------------------------------------------ errors


def _detail_types(body: Any) -> list[str]:
    detail = body.get("detail") if isinstance(body, Mapping) else body
    if not isinstance(detail, list):
        return []
    return [str(d.get("type")) for d in detail[:20] if isinstance(d, Mapping) and d.get("type")]


def _json(body: Any) -> Any:
    if isinstance(body, bytes | bytearray):
        import json

        try:
            return json.loads(bytes(body).decode("utf-8", "replace") or "null")
        except ValueError:
            return None
    return body


def classify_fal(status: int, body: Any, headers: Mapping[str, str]) -> GeneratorError | None:
    """fal's own rules before the generic mapping: the content-policy refusal and
    ``X-Fal-Retryable``. ``None`` leaves the answer to :func:`classify_http_error`."""
    parsed = _json(body)
    if 400 <= status < 500 and "content_policy_violation" in _detail_types(parsed):
        messages = [
            str(d.get("msg"))
            for d in (parsed.get("detail") if isinstance(parsed, Mapping) else parsed) or []
            if isinstance(d, Mapping) and d.get("msg")
        ]
        what = "; ".join(messages[:3]) or "content policy violation"
        return GeneratorError(K.CONTENT_POLICY, f"fal HTTP {status} (content policy): {what}"[:400])
    error: GeneratorError | None = None
    retryable = next(
        (str(v).strip().lower() for k, v in headers.items() if k.lower() == "x-fal-retryable"),
        None,
    )
    if retryable == "false" and (status == 429 or status >= 500):
        error = GeneratorError(
            K.INVALID_INPUT,
            f"fal HTTP {status}: the provider marked this failure as not retryable"
            + _short_detail(parsed),
        )
    elif retryable == "true" and status != 429 and status < 500 and status not in (401, 403):
        error = GeneratorError(
            K.UNAVAILABLE,
            f"fal HTTP {status}: the provider marked this failure as retryable"
            + _short_detail(parsed),
            retry_after=parse_retry_after(headers),
        )
    return error


def _short_detail(parsed: Any) -> str:
    if isinstance(parsed, Mapping) and isinstance(parsed.get("detail"), str):
        return ": " + " ".join(parsed["detail"].split())[:200]
    return ""


def log_fraction(logs: Any) -> float | None:
    """The latest progress a model's logs show, ``40%`` or ``12/30`` (steps), as 0..1."""
    if not isinstance(logs, list):
        return None
    for entry in reversed(logs[-50:]):
        message = entry.get("message") if isinstance(entry, Mapping) else entry
        if not isinstance(message, str):
            continue
        m = _PERCENT_RE.search(message)
        if m and float(m.group(1)) <= 100:
            return float(m.group(1)) / 100.0
        m = _STEPS_RE.search(message)
        if m and 0 < int(m.group(2)) and int(m.group(1)) <= int(m.group(2)):
            return int(m.group(1)) / int(m.group(2))
    return None


def video_url(body: Any) -> str | None:
    """The output URL of a fal video model's result (``video.url``; ``videos[0].url``)."""
    if not isinstance(body, Mapping):
        return None
    video = body.get("video")
    if video is None and isinstance(body.get("videos"), list) and body["videos"]:
        video = body["videos"][0]
    url = video.get("url") if isinstance(video, Mapping) else video
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return url
    return None


# ------------------------------------------------------------------------------ backend


class FalGenerator(GeneratorBase):
    """A fal.ai video endpoint behind fal's queue API. See the module docstring."""

    name = "fal"
    charges_failures = False  # fal docs "Pricing": "You pay only for successful outputs"

    def __init__(
        self,
        *,
        key: str,
        model: str = DEFAULT_MODEL,
        text_model: str = "",
        inputs: str = "",
        durations: str = "",
        queue_url: str = DEFAULT_QUEUE_URL,
        api_url: str = DEFAULT_API_URL,
        concurrency: int = 2,
        policy: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.key = (key or "").strip()
        self.model = model.strip().strip("/")
        self.text_model = (text_model or "").strip().strip("/")
        self.queue_url = (queue_url or DEFAULT_QUEUE_URL).rstrip("/")
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.max_concurrency = max(1, int(concurrency))
        self.preset = resolve_preset(self.model, inputs, durations)
        self.app = app_base(self.model)
        caps = preset_capabilities(self.preset, self.model)
        self.text_preset: Preset | None = None
        if self.text_model:
            self.text_preset = resolve_preset(self.text_model, inputs, durations)
            app_base(self.text_model)
            caps = combine(caps, preset_capabilities(self.text_preset, self.text_model))
        self.capabilities = caps
        self.clip_seconds = caps.natural_seconds
        self.http = ProviderHTTP(
            "fal",
            base_url=self.queue_url,
            headers={"Authorization": f"Key {self.key}"} if self.key else {},
            secrets=[self.key],
            policy=policy,
            session=session,
            classify=classify_fal,
        )
        self._outputs: dict[str, str] = {}  # job id -> output URL from the latest result

    # ------------------------------------------------------------------ helpers
    def _need_key(self) -> None:
        if not self.key:
            raise ConfigError("FAL_KEY is empty: set it to a key from fal.ai/dashboard/keys.")

    def _endpoint_for(self, request: GenerationRequest) -> tuple[str, Preset]:
        if request.image is None and self.text_preset is not None:
            return self.text_model, self.text_preset
        if request.image is not None and "image" not in self.preset.inputs:
            raise GeneratorError(K.INVALID_INPUT, f"fal {self.model} takes no reference image")
        if request.image is None and self.capabilities.image_required:
            raise GeneratorError(
                K.INVALID_INPUT,
                f"fal {self.model} needs a reference image (set FAL_TEXT_MODEL for prompts "
                "without one)",
            )
        return self.model, self.preset

    def build_input(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint and the model's input for ``request`` (names from the preset)."""
        endpoint, preset = self._endpoint_for(request)
        names = preset.inputs
        if len(request.prompt) > self.capabilities.max_prompt_chars:
            raise GeneratorError(
                K.INVALID_INPUT,
                f"fal {endpoint}: the prompt is over {self.capabilities.max_prompt_chars} "
                "characters",
            )
        body: dict[str, Any] = dict(preset.fixed)
        body[names["prompt"]] = request.prompt
        if "duration" in names:
            body[names["duration"]] = preset.duration_value(request.duration)
        if "aspect" in names:
            body[names["aspect"]] = request.aspect
        if "seed" in names and request.seed:
            body[names["seed"]] = int(request.seed)
        if request.image is not None and "image" in names:
            body[names["image"]] = data_uri(request.image, "image/png")
        return endpoint, body

    def _split(self, job_id: str) -> tuple[str, str]:
        app, sep, request_id = job_id.rpartition("|")
        if not sep:
            app, request_id = self.app, job_id
        if not _REQUEST_ID_RE.match(request_id) or not re.match(r"^[\w.-]+(/[\w.-]+){1,2}$", app):
            raise GeneratorError(K.INVALID_INPUT, "fal: not a fal job id")
        return app, request_id

    def _path(self, job_id: str, suffix: str = "") -> str:
        app, request_id = self._split(job_id)
        return f"{app}/requests/{request_id}{suffix}"

    # ------------------------------------------------------------------ protocol
    async def submit(self, request: GenerationRequest) -> str:
        self._need_key()
        endpoint, body = self.build_input(request)
        answer = await self.http.post_json(endpoint, body, create=True)
        request_id = answer.get("request_id") if isinstance(answer, Mapping) else None
        if not isinstance(request_id, str) or not _REQUEST_ID_RE.match(request_id):
            raise self.http.error(
                K.OUTCOME_UNKNOWN, "submit: the answer has no request_id; the job may exist"
            )
        log.info("fal: queued %s on %s", request_id, endpoint)
        return f"{app_base(endpoint)}|{request_id}"

    async def poll(self, job_id: str) -> JobStatus:
        self._need_key()
        body = await self.http.get_json(self._path(job_id, "/status"), params={"logs": "1"})
        if not isinstance(body, Mapping) or not isinstance(body.get("status"), str):
            raise self.http.error(K.MALFORMED, "status: the answer has no status")
        state = body["status"].upper()
        if state == "IN_QUEUE":
            return JobStatus(JobState.QUEUED, progress=0.0)
        if state == "IN_PROGRESS":
            return JobStatus(JobState.RUNNING, progress=log_fraction(body.get("logs")))
        if state in ("CANCELED", "CANCELLED"):
            return JobStatus(JobState.CANCELED)
        if state in ("COMPLETED", "FAILED", "ERROR"):
            failed = state != "COMPLETED" or bool(body.get("error"))
            error_type = str(body.get("error_type") or "")
            if failed and "cancel" in error_type.lower():
                return JobStatus(JobState.CANCELED)
            return await self._finished(job_id, failed, body)
        raise self.http.error(K.MALFORMED, f"status: unknown status {state[:40]!r}")

    async def _finished(self, job_id: str, failed: bool, status: Mapping[str, Any]) -> JobStatus:
        """Read the result of a finished request (again, so that an expired output URL is
        replaced by the one fal gives now)."""
        try:
            result = await self.http.get_json(self._path(job_id))
        except GeneratorError as e:
            if failed or not e.transient:
                # the request's own outcome (a refusal, a bad input, a model crash)
                return JobStatus(JobState.FAILED, error=e)
            raise
        url = video_url(result)
        if failed:
            detail = str(status.get("error") or "the request failed")[:300]
            return JobStatus(
                JobState.FAILED, error=self.http.error(K.UNKNOWN, f"request failed: {detail}")
            )
        if url is None:
            raise self.http.error(K.MALFORMED, "result: no video.url in the model's output")
        self._outputs[job_id] = url
        return JobStatus(JobState.DONE, progress=1.0)

    async def download(self, job_id: str, dest: Path) -> Path:
        self._need_key()
        url = self._outputs.get(job_id)
        if url is None:
            status = await self._finished(job_id, False, {})
            if status.state != JobState.DONE:
                raise status.error or self.http.error(K.UNKNOWN, "result: no output")
            url = self._outputs[job_id]
        try:
            # fal media URLs are public and signed by themselves: no auth header goes with them
            return await self.http.download(url, dest)
        except GeneratorError as e:
            if e.kind == K.OUTPUT_EXPIRED:
                self._outputs.pop(job_id, None)  # the next poll reads a fresh URL
            raise

    async def cancel(self, job_id: str) -> None:
        self._need_key()
        try:
            answer = await self.http.request("PUT", self._path(job_id, "/cancel"))
        except GeneratorError as e:
            if e.kind == K.INVALID_INPUT and re.search(r"\bHTTP (400|404)\b", e.message):
                # 400 ALREADY_COMPLETED, 404 NOT_FOUND: nothing left to stop
                log.info("fal: cancel of %s: %s", job_id, e.message)
                return
            raise
        word = answer.body.get("status") if isinstance(answer.body, Mapping) else None
        log.info("fal: cancel of %s: %s", job_id, word or answer.status)

    async def find(self, request: GenerationRequest, *, since: float) -> str | None:
        """Look the request up in fal's request history (see the module docstring): its id
        when exactly one finished request of the endpoint since ``since`` has our input;
        otherwise ``OUTCOME_UNKNOWN`` (a request still queued or running is not listed)."""
        self._need_key()
        endpoint, sent = self.build_input(request)
        start = dt.datetime.fromtimestamp(since - 60, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            answer = await self.http.get_json(
                f"{self.api_url}/models/requests/by-endpoint",
                params={
                    "endpoint_id": endpoint,
                    "start": start,
                    "expand": "payloads",
                    "limit": "100",
                },
            )
        except GeneratorError as e:
            if e.transient:
                raise
            raise self.http.error(
                K.OUTCOME_UNKNOWN, f"cannot look the request up ({e.kind.value})"
            ) from None
        items = answer.get("items") if isinstance(answer, Mapping) else None
        if not isinstance(items, list):
            raise self.http.error(K.MALFORMED, "request list: no items")
        keys = [k for k in sent if k != self.preset.inputs.get("image")]
        matches = [
            str(item["request_id"])
            for item in items
            if isinstance(item, Mapping)
            and isinstance(item.get("json_input"), Mapping)
            and isinstance(item.get("request_id"), str)
            and _REQUEST_ID_RE.match(item["request_id"])
            and all(item["json_input"].get(k) == sent[k] for k in keys)
        ]
        if len(set(matches)) == 1:
            log.info("fal: found request %s after an unknown outcome", matches[0])
            return f"{app_base(endpoint)}|{matches[0]}"
        raise self.http.error(
            K.OUTCOME_UNKNOWN,
            "the request is not among finished ones"
            if not matches
            else "several finished requests match; cannot tell which is ours",
        )

    async def check(self) -> str:
        """Ask the queue about a request that does not exist: fal checks the key first
        (401/403), then answers 404. Spends nothing."""
        self._need_key()
        probe = f"{self.app}/requests/00000000-0000-0000-0000-000000000000/status"
        try:
            await self.http.request("GET", probe)
        except GeneratorError as e:
            if e.kind != K.INVALID_INPUT:  # 404 is the expected answer
                raise
        models = self.model + (f" (text: {self.text_model})" if self.text_model else "")
        return f"fal: {models}; {self.capabilities.describe()}"

    async def aclose(self) -> None:
        await self.http.aclose()


def from_settings(settings: Mapping[str, Any] | object) -> FalGenerator:
    """Build a :class:`FalGenerator` from ``FAL_KEY``, ``FAL_MODEL``, ``FAL_TEXT_MODEL``,
    ``FAL_INPUTS``, ``FAL_DURATIONS``, ``FAL_QUEUE_URL``, ``FAL_API_URL`` and
    ``FAL_CONCURRENCY``."""
    key = str(get_setting(settings, "fal_key", "") or "")
    if not key:
        raise ConfigError("FAL_KEY is empty: set it to a key from fal.ai/dashboard/keys.")
    return FalGenerator(
        key=key,
        model=str(get_setting(settings, "fal_model", DEFAULT_MODEL) or DEFAULT_MODEL),
        text_model=str(get_setting(settings, "fal_text_model", "") or ""),
        inputs=str(get_setting(settings, "fal_inputs", "") or ""),
        durations=str(get_setting(settings, "fal_durations", "") or ""),
        queue_url=str(get_setting(settings, "fal_queue_url", DEFAULT_QUEUE_URL)),
        api_url=str(get_setting(settings, "fal_api_url", DEFAULT_API_URL)),
        concurrency=int(get_setting(settings, "fal_concurrency", 2)),
    )
