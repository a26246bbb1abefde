"""Runway's hosted video models (gen4_turbo, gen4.5, veo3.1, ...) through its task API.

The contract, from Runway's SDK (github.com/runwayml/sdk-python) and docs
(docs.dev.runwayml.com):

- every request carries ``Authorization: Bearer <RUNWAYML_API_SECRET>`` and
  ``X-Runway-Version: 2024-11-06``;
- ``POST /v1/image_to_video`` ``{model, promptImage, promptText, ratio, duration, seed}``
  or ``POST /v1/text_to_video`` (models that can work from text alone) answers ``{id}``;
- ``GET /v1/tasks/{id}`` answers ``status`` PENDING | THROTTLED | RUNNING (with
  ``progress`` 0..1) | SUCCEEDED (with ``output``: URLs that expire within 24–48 hours;
  reading the task again gives fresh ones) | FAILED (``failure``, ``failureCode``) |
  CANCELLED;
- ``DELETE /v1/tasks/{id}`` cancels a waiting or running task and deletes a finished one
  (204);
- errors are ``{"error": "..."}`` with 400/401/404/429/502/503/504.

How this backend maps it:

- THROTTLED (the organisation is at its concurrency limit) is waiting, not failing:
  ``JobState.QUEUED``;
- ``SAFETY.*`` failure codes are refusals: ``CONTENT_POLICY``, never retried;
  ``INTERNAL.BAD_OUTPUT.*`` (rejected by Runway's own quality checks) is ``UNKNOWN`` with
  ``max_submissions=2``: worth exactly one more generation; ``INPUT_PREPROCESSING.*`` and
  ``ASSET.INVALID`` are ``INVALID_INPUT``;
- a reference image goes as a data URI; Runway takes image data URIs up to 5 MB, so a
  PNG over that is re-encoded as JPEG (smaller, then downscaled, until it fits);
- an output URL that answers 403/404 is ``OUTPUT_EXPIRED``: the next ``poll`` reads the
  task again and so has a fresh URL; a task that is gone (404) is reported FAILED with
  ``OUTPUT_EXPIRED``, so the worker generates it again;
- Runway has no list of tasks and documents no idempotency key (its SDK sends none), so
  ``find`` cannot tell whether a lost create made a task: it keeps
  :meth:`GeneratorBase.find`'s answer and the job fails rather than pay twice;
- ``charges_failures`` is False: Runway returns the credits of a failed generation
  (help.runwayml.com, "Why am I getting an error when I'm trying to generate").
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bot.errors import ConfigError, GeneratorError, GeneratorErrorKind
from bot.generators.base import (
    Capabilities,
    GenerationRequest,
    GeneratorBase,
    JobState,
    JobStatus,
    classify_http_error,
    get_setting,
)
from bot.generators.http import ProviderHTTP, RetryPolicy, data_uri

log = logging.getLogger(__name__)

K = GeneratorErrorKind

DEFAULT_BASE = "https://api.dev.runwayml.com"
DEFAULT_VERSION = "2024-11-06"
DEFAULT_MODEL = "gen4_turbo"
#: Runway's limit on an image sent as a data URI (docs: /assets/inputs); kept a little
#: under 5 MB so that neither reading of "MB" can refuse it
DATA_URI_LIMIT = 5_000_000
#: prompts are measured in UTF-16 code units
MAX_PROMPT = 1000
REFUSED = "the generator refused this prompt (content policy)"

_TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


@dataclass(frozen=True)
class RunwayModel:
    """What one Runway model takes, from the SDK's ``*_create_params.py``."""

    name: str
    durations: tuple[int, ...]
    #: our aspect -> Runway's ``ratio`` for image_to_video
    image_ratios: Mapping[str, str]
    #: the same for text_to_video; None when the model needs an image
    text_ratios: Mapping[str, str] | None
    seed: bool  # takes a ``seed``
    natural_seconds: float

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            durations=tuple(float(d) for d in self.durations),
            min_seconds=float(min(self.durations)),
            max_seconds=float(max(self.durations)),
            aspects=tuple(self.image_ratios),
            image_input=True,
            image_required=self.text_ratios is None,
            max_prompt_chars=MAX_PROMPT,
            natural_seconds=self.natural_seconds,
        )


_WIDE, _TALL, _SQUARE = "1280:720", "720:1280", "960:960"
_TWO_TO_TEN = tuple(range(2, 11))
_VEO_RATIOS = {"16:9": _WIDE, "9:16": _TALL}

MODELS: Mapping[str, RunwayModel] = {
    m.name: m
    for m in (
        RunwayModel(
            "gen4_turbo",
            _TWO_TO_TEN,
            {"16:9": _WIDE, "9:16": _TALL, "1:1": _SQUARE},
            None,
            seed=True,
            natural_seconds=5.0,
        ),
        # gen4.5 makes square clips from an image only: its text_to_video takes 1280:720
        # and 720:1280
        RunwayModel(
            "gen4.5",
            _TWO_TO_TEN,
            {"16:9": _WIDE, "9:16": _TALL, "1:1": _SQUARE},
            {"16:9": _WIDE, "9:16": _TALL},
            seed=True,
            natural_seconds=5.0,
        ),
        RunwayModel("veo3.1", (4, 6, 8), _VEO_RATIOS, _VEO_RATIOS, seed=False, natural_seconds=8.0),
        RunwayModel(
            "veo3.1_fast", (4, 6, 8), _VEO_RATIOS, _VEO_RATIOS, seed=False, natural_seconds=8.0
        ),
        RunwayModel("veo3", (8,), _VEO_RATIOS, _VEO_RATIOS, seed=False, natural_seconds=8.0),
    )
}


class _TaskNotFound(GeneratorError):
    """A 404 from the API: for a task, it is gone (deleted, or past retention)."""


def _classify(status: int, body: Any, headers: Mapping[str, str]) -> GeneratorError | None:
    if status == 404:
        base = classify_http_error(status, body, headers, provider="runway")
        return _TaskNotFound(base.kind, base.message)
    return None


def utf16_len(text: str) -> int:
    """Length as Runway counts it (UTF-16 code units: an emoji counts two)."""
    return len(text.encode("utf-16-le")) // 2


def fit_image(png: bytes, limit: int = DATA_URI_LIMIT) -> str:
    """``png`` as a data URI no longer than ``limit``: as is when it fits, else JPEG at
    falling quality, then smaller, until it does. Blocking (Pillow): run it in a thread."""
    uri = data_uri(png, "image/png")
    if len(uri) <= limit:
        return uri
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im.load()
        rgb = im.convert("RGB")
    for _ in range(12):
        for quality in (90, 80, 70, 60):
            out = io.BytesIO()
            rgb.save(out, "JPEG", quality=quality, optimize=True)
            uri = data_uri(out.getvalue(), "image/jpeg")
            if len(uri) <= limit:
                return uri
        w, h = rgb.size
        if min(w, h) <= 64:
            break
        rgb = rgb.resize((max(1, w * 3 // 4), max(1, h * 3 // 4)), Image.Resampling.LANCZOS)
    raise GeneratorError(K.INVALID_INPUT, "runway: the reference image cannot be made small enough")


class RunwayGenerator(GeneratorBase):
    """Runway's task API through :class:`ProviderHTTP`. See the module docstring."""

    name = "runway"
    charges_failures = False

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str = DEFAULT_BASE,
        version: str = DEFAULT_VERSION,
        max_concurrency: int = 2,
        policy: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        data_uri_limit: int = DATA_URI_LIMIT,
        sleep: Any = asyncio.sleep,
    ) -> None:
        if not api_key:
            raise ConfigError(
                "RUNWAYML_API_SECRET is empty: set it to a Runway API key to use GENERATOR=runway."
            )
        spec = MODELS.get(model)
        if spec is None:
            raise ConfigError(
                f"RUNWAY_MODEL={model!r} is not valid: allowed values are {', '.join(MODELS)}."
            )
        self.spec = spec
        self.model = model
        self.capabilities = spec.capabilities
        self.clip_seconds = spec.natural_seconds
        self.max_concurrency = max_concurrency
        self.version = version
        self.data_uri_limit = data_uri_limit
        self.http = ProviderHTTP(
            "runway",
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "X-Runway-Version": version},
            secrets=[api_key],
            policy=policy,
            session=session,
            classify=_classify,
            sleep=sleep,
        )
        self._outputs: dict[str, str] = {}  # task id -> latest output URL (a credential)
        self._canceled: set[str] = set()

    # ------------------------------------------------------------------ submit
    def _refuse(self, message: str) -> GeneratorError:
        return self.http.error(K.INVALID_INPUT, message)

    async def submit(self, request: GenerationRequest) -> str:
        spec = self.spec
        prompt = request.prompt.strip()
        if utf16_len(prompt) > MAX_PROMPT:
            raise self._refuse(f"prompts are limited to {MAX_PROMPT} characters")
        duration = self.capabilities.duration_for(request.duration)
        if duration is None:
            lengths = ", ".join(str(d) for d in spec.durations)
            raise self._refuse(f"{spec.name} makes clips of {lengths} seconds only")
        if request.image is not None:
            ratios, path = spec.image_ratios, "/v1/image_to_video"
        elif spec.text_ratios is not None:
            ratios, path = spec.text_ratios, "/v1/text_to_video"
        else:
            raise self._refuse(f"{spec.name} needs a reference image (it has no text-to-video)")
        ratio = ratios.get(request.aspect)
        if ratio is None:
            how = "from text alone" if request.image is None else "clips"
            raise self._refuse(f"{spec.name} makes no {request.aspect} {how}")
        if not prompt and path == "/v1/text_to_video":
            raise self._refuse("a prompt is needed without a reference image")
        body: dict[str, Any] = {"model": spec.name, "ratio": ratio, "duration": round(duration)}
        if prompt:
            body["promptText"] = prompt
        if spec.seed:
            body["seed"] = int(request.seed) % 2**32
        if request.image is not None:
            body["promptImage"] = await asyncio.to_thread(
                fit_image, request.image, self.data_uri_limit
            )
        answer = await self.http.request("POST", path, json_body=body, create=True)
        task_id = answer.body.get("id") if isinstance(answer.body, dict) else None
        if not isinstance(task_id, str) or not _TASK_ID_RE.match(task_id):
            raise self.http.error(
                K.OUTCOME_UNKNOWN, f"POST {path}: HTTP {answer.status} without a task id"
            )
        log.info(
            "runway task %s created (%s, %s, %ss)", task_id, spec.name, ratio, body["duration"]
        )
        return task_id

    # ------------------------------------------------------------------ poll
    def _path(self, job_id: str) -> str:
        if not isinstance(job_id, str) or not _TASK_ID_RE.match(job_id):
            raise self.http.error(K.INVALID_INPUT, f"not a Runway task id: {job_id!r}")
        return f"/v1/tasks/{job_id}"

    async def poll(self, job_id: str) -> JobStatus:
        path = self._path(job_id)
        try:
            task = await self.http.get_json(path)
        except _TaskNotFound:
            self._outputs.pop(job_id, None)
            if job_id in self._canceled:
                return JobStatus(JobState.CANCELED)
            return JobStatus(
                JobState.FAILED,
                error=self.http.error(
                    K.OUTPUT_EXPIRED, "task is gone (deleted or past retention); make it again"
                ),
            )
        if not isinstance(task, dict):
            raise self.http.error(K.MALFORMED, f"GET {path}: the answer is not a task")
        status = task.get("status")
        if status in ("PENDING", "THROTTLED"):
            return JobStatus(JobState.QUEUED, progress=0.0)
        if status == "RUNNING":
            return JobStatus(JobState.RUNNING, progress=_fraction(task.get("progress")))
        if status == "SUCCEEDED":
            output = task.get("output")
            if not (isinstance(output, list) and output and isinstance(output[0], str)):
                raise self.http.error(K.MALFORMED, f"GET {path}: SUCCEEDED without an output URL")
            if not output[0].startswith(("https://", "http://")):
                raise self.http.error(K.MALFORMED, f"GET {path}: the output is not a URL")
            self._outputs[job_id] = output[0]
            return JobStatus(JobState.DONE, progress=1.0)
        if status == "FAILED":
            return JobStatus(JobState.FAILED, error=self._failure(job_id, task))
        if status == "CANCELLED":
            return JobStatus(JobState.CANCELED)
        raise self.http.error(K.MALFORMED, f"GET {path}: unknown task status {str(status)[:40]!r}")

    def _failure(self, job_id: str, task: Mapping[str, Any]) -> GeneratorError:
        code = task.get("failureCode")
        code = code if isinstance(code, str) else ""
        reason = task.get("failure")
        reason = " ".join(reason.split())[:200] if isinstance(reason, str) else "no reason given"
        log.info(
            "runway task %s failed: %s (%s)", job_id, code or "no code", self.http.redact(reason)
        )
        if code.startswith("SAFETY"):
            return GeneratorError(K.CONTENT_POLICY, REFUSED)
        detail = f"task failed: {reason} ({code or 'no failure code'})"
        if code.startswith("INTERNAL.BAD_OUTPUT"):
            return self.http.error(K.UNKNOWN, detail, max_submissions=2)
        if code.startswith("INPUT_PREPROCESSING") or code.startswith("ASSET.INVALID"):
            return self.http.error(K.INVALID_INPUT, detail)
        return self.http.error(K.UNKNOWN, detail)

    # ------------------------------------------------------------------ download
    async def download(self, job_id: str, dest: Path) -> Path:
        url = self._outputs.get(job_id)
        if url is None:  # after a restart, or after an expired URL: read the task again
            status = await self.poll(job_id)
            if status.state == JobState.FAILED and status.error is not None:
                raise status.error
            url = self._outputs.get(job_id)
            if url is None:
                raise self.http.error(K.UNKNOWN, f"task is {status.state.value}, not finished")
        try:
            return await self.http.download(url, dest)
        except GeneratorError as e:
            if e.kind == K.OUTPUT_EXPIRED:
                self._outputs.pop(job_id, None)  # the next poll fetches a fresh URL
            raise

    # ------------------------------------------------------------------ cancel, check
    async def cancel(self, job_id: str) -> None:
        path = self._path(job_id)
        self._canceled.add(job_id)
        self._outputs.pop(job_id, None)
        try:
            await self.http.request("DELETE", path, expect_json=False)
        except _TaskNotFound:
            return  # already gone
        log.info("runway task %s canceled", job_id)

    async def check(self) -> str:
        """``GET /v1/organization``: the key works, the API answers, credits left (free)."""
        org = await self.http.get_json("/v1/organization")
        if not isinstance(org, dict):
            raise self.http.error(K.MALFORMED, "GET /v1/organization: not an organization")
        credits = org.get("creditBalance")
        tier = org.get("tier") if isinstance(org.get("tier"), dict) else {}
        models = tier.get("models") if isinstance(tier.get("models"), dict) else {}
        limits = models.get(self.model) if isinstance(models.get(self.model), dict) else None
        line = f"runway: {self.model} (API {self.version}); {credits} credits left"
        if limits is None:
            line += f"; {self.model} is not in this organization's tier"
        else:
            line += f"; up to {limits.get('maxConcurrentGenerations')} at once"
        return line

    async def aclose(self) -> None:
        await self.http.aclose()


def _fraction(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return min(1.0, max(0.0, float(value)))
    return None


def from_settings(settings: Mapping[str, Any] | object) -> RunwayGenerator:
    """Build a :class:`RunwayGenerator` from ``RUNWAYML_API_SECRET``, ``RUNWAY_MODEL``,
    ``RUNWAY_API_BASE``, ``RUNWAY_API_VERSION`` and ``BACKEND_CONCURRENCY``."""
    return RunwayGenerator(
        str(get_setting(settings, "runwayml_api_secret", "")),
        model=str(get_setting(settings, "runway_model", "") or DEFAULT_MODEL),
        base_url=str(get_setting(settings, "runway_api_base", "") or DEFAULT_BASE),
        version=str(get_setting(settings, "runway_api_version", "") or DEFAULT_VERSION),
        max_concurrency=int(get_setting(settings, "backend_concurrency", 2)),
    )


__all__ = ["MODELS", "RunwayGenerator", "RunwayModel", "fit_image", "from_settings", "utf16_len"]
