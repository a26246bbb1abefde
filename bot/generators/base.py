"""The one protocol every video generator backend speaks, and the helpers they share.

A backend behaves like a remote job API, even when it runs in-process: ``submit`` returns
a provider job id at once, ``poll`` reports its state, ``download`` fetches the finished
clip, ``cancel`` stops it. The worker stores the provider job id, so after a restart it
polls the same id again instead of paying for a second generation.

Money rules every backend helps keep (the worker applies them, see
:mod:`bot.services.worker`):

- ``submit`` raises ``OUTCOME_UNKNOWN`` when the create request may have reached the
  provider but no answer came back (a timeout, a connection dropped after sending). The
  worker then calls ``find`` with the same request (same ``idempotency_key``, chosen and
  stored before the first send) to learn whether the job exists, and only submits again
  when ``find`` says it certainly does not. A backend that cannot look jobs up inherits
  :meth:`GeneratorBase.find`, which says so, and the job fails rather than pay twice.
- ``download`` raises ``OUTPUT_EXPIRED`` when the output URL is gone (404, 410, an
  expired signature); the worker polls again for a fresh URL, and only when the output is
  gone for good generates the clip again.
- ``capabilities`` says what the backend can make, so ``/prompt`` refuses at once what it
  cannot, and the request asks for the shortest accepted length that covers the slot.

Every failure a backend reports is a :class:`~bot.errors.GeneratorError` with a normalized
``kind``; :func:`classify_http_error` and :func:`classify_transport_error` do that mapping
for HTTP providers, so each backend module only has to call them.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bot.errors import GeneratorError, GeneratorErrorKind

log = logging.getLogger(__name__)

#: aspect ratios every backend must accept
ASPECTS: tuple[str, ...] = ("16:9", "9:16", "1:1")


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate. ``image`` is already sanitized PNG (see :mod:`bot.media.images`).

    ``duration`` is already one the backend accepts (``Capabilities.duration_for``).
    """

    prompt: str
    duration: float  # seconds
    aspect: str = "16:9"  # "16:9" | "9:16" | "1:1"
    seed: int = 0
    image: bytes | None = None
    #: a canonical UUID the worker chose and stored before the first send of this
    #: submission; the same for every retry of it. Backends pass it on as an idempotency
    #: key, use it as their job id where the API lets the client choose one (ComfyUI's
    #: ``prompt_id``), or match it in ``find``.
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can make. ``durations`` lists the accepted clip lengths when the
    model takes only some (e.g. ``(5.0, 10.0)``); empty means any length from
    ``min_seconds`` to ``max_seconds`` (in whole frames at ``fps`` when that is set)."""

    durations: tuple[float, ...] = ()
    min_seconds: float = 1.0
    max_seconds: float = 10.0
    fps: float | None = None
    aspects: tuple[str, ...] = ASPECTS
    image_input: bool = True  # takes a reference image
    image_required: bool = False  # cannot work from text alone
    max_prompt_chars: int = 2000
    #: the clip length the model is made for: slot plans aim at it
    natural_seconds: float = 5.0

    @property
    def longest(self) -> float:
        return max(self.durations) if self.durations else self.max_seconds

    def duration_for(self, wanted: float) -> float | None:
        """The shortest accepted length that covers ``wanted`` seconds (the cut trims the
        rest); ``None`` when the backend cannot make a clip that long."""
        if self.durations:
            fits = [d for d in sorted(self.durations) if d >= wanted - 1e-6]
            return fits[0] if fits else None
        if wanted > self.max_seconds + 1e-6:
            return None
        seconds = max(self.min_seconds, wanted)
        if self.fps:
            seconds = math.ceil(seconds * self.fps - 1e-6) / self.fps
        return min(seconds, self.max_seconds)

    def describe(self) -> str:
        """One line for ``crowdcut doctor`` and the docs."""
        if self.durations:
            lengths = " or ".join(f"{d:g}" for d in sorted(self.durations)) + " s"
        else:
            lengths = f"{self.min_seconds:g}–{self.max_seconds:g} s"
            if self.fps:
                lengths += f" (frames at {self.fps:g} fps)"
        image = (
            "needs a reference image"
            if self.image_required
            else ("takes a reference image" if self.image_input else "text only")
        )
        return (
            f"clips of {lengths}, natural {self.natural_seconds:g} s; "
            f"aspects {', '.join(self.aspects)}; {image}; prompts up to "
            f"{self.max_prompt_chars} characters"
        )


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        """True for the states a job never leaves."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELED)


@dataclass(frozen=True)
class JobStatus:
    """One answer to ``poll``. ``error`` is set when ``state`` is ``FAILED``."""

    state: JobState
    progress: float | None = None  # 0..1 when known
    error: GeneratorError | None = None


@runtime_checkable
class Generator(Protocol):
    """A video generator backend. Methods raise :class:`~bot.errors.GeneratorError` only."""

    name: str  # backend name stored with each job, e.g. "local"
    model: str  # what makes the clips, for /clip, credits and the manifest
    max_concurrency: int  # per-backend limit
    clip_seconds: float  # its natural clip length (used for slot plans)
    capabilities: Capabilities
    #: whether the provider bills a generation that fails or is refused
    charges_failures: bool

    async def submit(self, request: GenerationRequest) -> str:
        """Start generating; return the provider's job id. Raises ``OUTCOME_UNKNOWN`` when
        the request may have been accepted without an answer reaching us."""
        ...

    async def find(self, request: GenerationRequest, *, since: float) -> str | None:
        """After ``OUTCOME_UNKNOWN`` (or a crash mid-submit): the provider job id of the job
        that ``request`` (same ``idempotency_key``) created at or after ``since`` (epoch
        seconds), or ``None`` when the provider certainly has no such job. Raises
        ``OUTCOME_UNKNOWN`` when the backend has no way to tell, a transient kind when the
        lookup itself failed."""
        ...

    async def wait(self, job_id: str, timeout: float) -> None:
        """Return when the job may have changed, at most ``timeout`` seconds from now (a
        backend with push events returns early; a polled one sleeps)."""
        ...

    async def check(self) -> str:
        """Check the backend answers and is set up right without spending money; return
        one line for ``crowdcut doctor``. Raises ``GeneratorError`` or ``ConfigError``."""
        ...

    async def poll(self, job_id: str) -> JobStatus:
        """Report the job's state (and progress, when the provider tells it)."""
        ...

    async def download(self, job_id: str, dest: Path) -> Path:
        """Write the finished clip to ``dest`` and return ``dest``."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Stop the job; no error when it already finished."""
        ...

    async def aclose(self) -> None:
        """Release sessions, tasks and processes. Jobs stay on the provider's side."""
        ...


class GeneratorBase:
    """Defaults for the optional parts of :class:`Generator`; backends subclass it."""

    name = "base"
    model = "unknown"
    max_concurrency = 1
    clip_seconds = 5.0
    capabilities = Capabilities()
    charges_failures = False

    async def find(self, request: GenerationRequest, *, since: float) -> str | None:
        raise GeneratorError(
            GeneratorErrorKind.OUTCOME_UNKNOWN,
            f"{self.name} cannot look up a job it may have accepted",
        )

    async def wait(self, job_id: str, timeout: float) -> None:
        await asyncio.sleep(timeout)

    async def check(self) -> str:
        return f"{self.name}: {self.model}"

    async def aclose(self) -> None:
        return None


def get_setting(settings_like: Any, name: str, default: Any = None) -> Any:
    """Read one setting from crowdcut's ``Settings``, another object, or a mapping.

    Tries ``name`` as an attribute or key as given, lower-cased and upper-cased (so both
    ``settings.clip_seconds`` and ``{"CLIP_SECONDS": ...}`` work). ``None`` counts as unset.
    """
    if settings_like is None:
        return default
    for key in dict.fromkeys((name, name.lower(), name.upper())):
        if isinstance(settings_like, Mapping):
            value = settings_like.get(key)
        else:
            value = getattr(settings_like, key, None)
        if value is not None:
            return value
    return default


# ---------------------------------------------------------------------------- HTTP errors

# Whole words only: "safety_tolerance must be <= 6" is a bad parameter, not a refusal.
_POLICY_RE = re.compile(
    r"\bnsfw\b|\bsafety\b|content[ _-]?polic(?:y|ies)|\bmoderat(?:ion|ed)\b|\bflagged\b",
    re.IGNORECASE,
)
_MESSAGE_KEYS = ("message", "detail", "error", "msg", "title", "reason", "description", "errors")
_MAX_MESSAGE = 300


def _header(headers: Any, name: str) -> str | None:
    """Case-insensitive header lookup in a dict, a multidict or a list of pairs."""
    if not headers:
        return None
    items = headers.items() if hasattr(headers, "items") else headers
    try:
        for key, value in items:
            if str(key).lower() == name:
                return str(value)
    except (TypeError, ValueError):
        return None
    return None


def parse_retry_after(headers: Any, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or HTTP date) or ``retry-after-ms``.

    Returns ``None`` when neither header is present or readable; never a negative number.
    """
    raw_ms = _header(headers, "retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms):
            return max(0.0, ms / 1000.0)
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _parse_body(body: Any) -> tuple[Any, str]:
    """Return (parsed body, ``"ok"`` | ``"empty"`` | ``"garbage"``).

    Bytes and JSON text are decoded. Binary, broken JSON and HTML pages (a proxy's or a
    CDN's error page, not the provider's API) are garbage.
    """
    if body is None:
        return None, "empty"
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
        if b"\0" in raw[:1024]:
            return None, "garbage"
        body = raw.decode("utf-8", "replace")
        if body.count("\ufffd") > max(3, len(body) // 20):
            return None, "garbage"
    if isinstance(body, str):
        text = body.strip()
        if not text:
            return None, "empty"
        if text[:1] in ("{", "["):
            try:
                return json.loads(text), "ok"
            except ValueError:
                return None, "garbage"
        if text.startswith("<"):
            return None, "garbage"
        return text, "ok"
    if isinstance(body, Mapping | list | tuple | int | float):
        return body, "ok"
    return None, "garbage"


def _strings(value: Any, depth: int = 0) -> list[str]:
    """Every string value in a JSON-like structure (keys left out), depth-limited."""
    if depth > 6:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v, depth + 1)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v, depth + 1)]
    return []


def _message(value: Any, depth: int = 0) -> str | None:
    """The provider's own message: the usual fields of the usual error shapes."""
    if depth > 4 or value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, Mapping):
        for key in _MESSAGE_KEYS:
            if key in value:
                found = _message(value[key], depth + 1)
                if found:
                    return found
        return None
    if isinstance(value, list | tuple):
        parts = [m for m in (_message(v, depth + 1) for v in value[:5]) if m]
        return "; ".join(parts) or None
    return None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def classify_http_error(
    status: int, body: Any, headers: Any = None, *, provider: str | None = None
) -> GeneratorError:
    """Turn a provider's failed HTTP response into a :class:`GeneratorError` of the right kind.

    ``body`` may be the parsed JSON, text or raw bytes; ``headers`` a dict, a multidict
    (aiohttp's ``resp.headers``) or pairs. The mapping, first match wins:

    - 429: ``rate_limited``, with ``retry_after`` from ``Retry-After``;
    - 401, 407: ``auth``;
    - 408, 425 and every 5xx: ``unavailable`` (``retry_after`` too when sent);
    - any other 4xx whose body is garbage (binary, broken JSON, an HTML page): ``unknown``,
      because such an answer comes from a proxy or CDN in the way, not from the provider's
      API, and its status says little (a CDN's 403 bot-check page is not a bad API key);
    - 451, or a content-policy word in the body (``nsfw``, ``safety``, ``content policy``,
      ``moderation``, ``flagged``; whole words, so ``safety_tolerance`` does not count):
      ``content_policy``;
    - 402 (out of credits), 403: ``auth``;
    - 400, 422 and the other 4xx (404, 409, 413...): ``invalid_input``;
    - anything else (a 2xx/3xx that still failed, a nonsense status): ``unknown``.
    """
    parsed, quality = _parse_body(body)
    detail = _message(parsed) if quality == "ok" else None
    haystack = " ".join(_strings(parsed)) if quality == "ok" else ""
    retry_after = parse_retry_after(headers)
    if retry_after is None and isinstance(parsed, Mapping):
        value = parsed.get("retry_after")
        if isinstance(value, int | float) and math.isfinite(value):
            retry_after = max(0.0, float(value))

    if status == 429:
        kind = GeneratorErrorKind.RATE_LIMITED
    elif status in (401, 407):
        kind = GeneratorErrorKind.AUTH
    elif status in (408, 425) or 500 <= status < 600:
        kind = GeneratorErrorKind.UNAVAILABLE
    elif 400 <= status < 500 and quality == "garbage":
        kind = GeneratorErrorKind.UNKNOWN
    elif status == 451 or (400 <= status < 500 and _POLICY_RE.search(haystack)):
        kind = GeneratorErrorKind.CONTENT_POLICY
    elif status in (402, 403):
        kind = GeneratorErrorKind.AUTH
    elif 400 <= status < 500:
        kind = GeneratorErrorKind.INVALID_INPUT
    else:
        kind = GeneratorErrorKind.UNKNOWN

    who = f"{provider} " if provider else ""
    if detail:
        what = _short(detail)
    else:
        what = "unreadable response body" if quality == "garbage" else "no details"
    message = f"{who}HTTP {status} ({kind.value.replace('_', ' ')}): {what}"
    if kind not in (GeneratorErrorKind.RATE_LIMITED, GeneratorErrorKind.UNAVAILABLE):
        retry_after = None
    return GeneratorError(kind, message, retry_after=retry_after)


def classify_transport_error(exc: BaseException, *, provider: str | None = None) -> GeneratorError:
    """Turn a failure to get any HTTP answer (timeout, refused, reset, DNS) into a GeneratorError.

    Timeouts and connection errors are ``unavailable``; an ``aiohttp.ClientResponseError``
    goes through :func:`classify_http_error` with its status; anything else is ``unknown``.
    """
    if isinstance(exc, GeneratorError):
        return exc
    who = f"{provider} " if provider else ""
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp is a dependency
        aiohttp = None  # type: ignore[assignment]
    if aiohttp is not None and isinstance(exc, aiohttp.ClientResponseError):
        return classify_http_error(exc.status, exc.message, exc.headers, provider=provider)
    if isinstance(exc, TimeoutError):
        return GeneratorError(GeneratorErrorKind.UNAVAILABLE, f"{who}request timed out")
    connection_errors: tuple[type[BaseException], ...] = (ConnectionError, OSError)
    if aiohttp is not None:
        connection_errors += (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
    if isinstance(exc, connection_errors):
        return GeneratorError(
            GeneratorErrorKind.UNAVAILABLE, f"{who}connection failed: {type(exc).__name__}: {exc}"
        )
    return GeneratorError(GeneratorErrorKind.UNKNOWN, f"{who}{type(exc).__name__}: {exc}")
