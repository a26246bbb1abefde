"""The one HTTP client every hosted backend uses: aiohttp, one retry policy, one error
classification, secrets kept out of every message.

The providers' own SDKs retry requests by themselves, creates included, which can pay for
a generation twice. Here the rule is explicit:

- a **create** (``create=True``: the request that starts a paid generation) is sent once.
  If no connection could be made (refused, DNS, connect timeout) nothing reached the
  provider and the error is ``unavailable``; if the provider *answered* 429 or 5xx it did
  not accept the job and the error says so; if the request went out and no readable
  answer came back (read timeout, connection dropped, a 2xx whose body is not JSON) the
  error is ``outcome_unknown``, and the worker looks the job up before sending it again;
- every other request (status, result, cancel, list, upload, download) is safe to repeat
  and is retried here a few times with capped exponential backoff, honouring
  ``Retry-After``, before its error goes up to the worker (whose own backoff covers
  longer outages).

Messages never carry a URL (signed output URLs are credentials), a header, or any of the
backend's secrets: :meth:`ProviderHTTP.redact` scrubs them from the provider's own text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bot.core.queue import backoff_delay
from bot.errors import GeneratorError, GeneratorErrorKind
from bot.generators.base import classify_http_error

log = logging.getLogger(__name__)

K = GeneratorErrorKind

#: a finished clip larger than this is refused (no video model makes one)
DEFAULT_MAX_DOWNLOAD = 1024 * 1024 * 1024

Classifier = Callable[[int, Any, Mapping[str, str]], GeneratorError | None]


@dataclass(frozen=True)
class RetryPolicy:
    """How requests other than creates are retried, and every request's time limits."""

    tries: int = 3
    base_seconds: float = 0.5
    cap_seconds: float = 10.0
    #: the whole request, answer included (downloads use ``read_timeout`` per chunk instead)
    timeout: float = 60.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or text when the answer was not JSON


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:`` URI of ``data``, as fal and Replicate take small images."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# Magic numbers of the containers video models answer with.
def sniff_video(head: bytes) -> str | None:
    """The container of a file from its first bytes (``mp4``, ``webm``, ``gif``, ``webp``),
    or ``None`` when it is no video container (an HTML error page, JSON, an image)."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


class ProviderHTTP:
    """One provider's HTTP: an aiohttp session, its auth headers, and the rules above.

    ``secrets`` are the values to scrub from every message (API keys, tokens).
    ``session`` may be shared between backends; one is created (and closed by
    :meth:`aclose`) when none is given.
    """

    def __init__(
        self,
        provider: str,
        *,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        policy: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        classify: Classifier | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.secrets = [s for s in secrets if s and len(s) >= 4]
        self.policy = policy or RetryPolicy()
        self._session = session
        self._own_session = session is None
        self._classify_hook = classify
        self._sleep = sleep

    # ------------------------------------------------------------------ plumbing
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self.policy.timeout,
                    sock_connect=self.policy.connect_timeout,
                    sock_read=self.policy.read_timeout,
                ),
                raise_for_status=False,
            )
            self._own_session = True
        return self._session

    async def aclose(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def redact(self, text: str) -> str:
        """``text`` with every secret of this backend replaced by ``[redacted]``."""
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def error(self, kind: GeneratorErrorKind, message: str, **kw: Any) -> GeneratorError:
        """A ``GeneratorError`` naming this provider, with secrets scrubbed."""
        return GeneratorError(kind, self.redact(f"{self.provider} {message}"), **kw)

    def classify(self, status: int, body: Any, headers: Mapping[str, str]) -> GeneratorError:
        """A failed answer as a ``GeneratorError``: the backend's own rules first (fal's
        ``X-Fal-Retryable``, for example), then :func:`classify_http_error`."""
        error = self._classify_hook(status, body, headers) if self._classify_hook else None
        if error is None:
            error = classify_http_error(status, body, headers, provider=self.provider)
        error.message = self.redact(error.message)
        error.args = (error.message,)
        return error

    def _transport_error(self, exc: BaseException, *, create: bool, what: str) -> GeneratorError:
        if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            # nothing was sent: safe to send again
            return self.error(K.UNAVAILABLE, f"{what}: could not connect ({type(exc).__name__})")
        if isinstance(exc, TimeoutError):
            reason = "no answer in time"
        else:
            reason = f"connection lost ({type(exc).__name__})"
        if create:
            return self.error(
                K.OUTCOME_UNKNOWN, f"{what}: {reason} after the request was sent; outcome unknown"
            )
        return self.error(K.UNAVAILABLE, f"{what}: {reason}")

    # ------------------------------------------------------------------ requests
    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        create: bool = False,
        expect_json: bool = True,
    ) -> Response:
        """Send one request; return the 2xx answer or raise a classified ``GeneratorError``.

        ``create=True`` marks the request that starts a paid job: it is never repeated
        here, and an answer that does not come back is ``outcome_unknown``. ``data`` may
        be a callable returning a fresh body (an ``aiohttp.FormData`` cannot be re-sent).
        """
        what = f"{method} {path.split('?')[0] if not path.startswith('http') else '(url)'}"
        tries = 1 if create else max(1, self.policy.tries)
        last: GeneratorError | None = None
        for attempt in range(1, tries + 1):
            try:
                return await self._once(
                    method, path, json_body, data, params, headers, create, expect_json, what
                )
            except GeneratorError as e:
                last = e
                if create or not e.transient or attempt == tries:
                    raise
                delay = backoff_delay(
                    attempt,
                    base=self.policy.base_seconds,
                    cap=self.policy.cap_seconds,
                    retry_after=e.retry_after,
                )
                if e.retry_after is not None and e.retry_after > self.policy.cap_seconds:
                    raise  # a long wait is the worker's to schedule, not ours to sleep
                log.debug("%s: %s; trying again in %.1fs", self.provider, e.message, delay)
                await self._sleep(delay)
        raise last or self.error(K.UNKNOWN, f"{what}: failed")  # pragma: no cover

    async def _once(
        self,
        method: str,
        path: str,
        json_body: Any,
        data: Any,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        create: bool,
        expect_json: bool,
        what: str,
    ) -> Response:
        merged = {**self.headers, **(headers or {})}
        body = data() if callable(data) else data
        try:
            async with self.session.request(
                method, self.url(path), json=json_body, data=body, params=params, headers=merged
            ) as resp:
                raw = await resp.read()
                status, resp_headers = resp.status, resp.headers
        except GeneratorError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise self._transport_error(e, create=create, what=what) from None
        if status >= 400 or status < 200:
            raise self.classify(status, raw, resp_headers)
        if not expect_json:
            return Response(status, resp_headers, raw)
        try:
            parsed = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            parsed = ValueError
        if parsed is ValueError or (parsed is None and create):
            if create:
                raise self.error(
                    K.OUTCOME_UNKNOWN,
                    f"{what}: HTTP {status} with an unreadable body; the job may exist",
                )
            raise self.error(K.MALFORMED, f"{what}: HTTP {status} with an unreadable body")
        return Response(status, resp_headers, parsed)

    async def get_json(self, path: str, **kw: Any) -> Any:
        return (await self.request("GET", path, **kw)).body

    async def post_json(self, path: str, body: Any = None, **kw: Any) -> Any:
        return (await self.request("POST", path, json_body=body, **kw)).body

    # ------------------------------------------------------------------ downloads
    async def download(
        self,
        url: str,
        dest: Path,
        *,
        headers: Mapping[str, str] | None = None,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD,
        auth: bool = False,
    ) -> Path:
        """Stream ``url`` to ``dest`` (atomically: a temp name, then rename) and check it is
        a whole video file. Retried like any safe request. Raises ``output_expired`` for
        404/410 and for 403 on a URL without our credentials (an expired signature),
        ``truncated_download`` when the body ends early, ``not_video`` when the bytes are
        no video container (an HTML error page, JSON). ``auth=True`` sends the backend's
        own headers (ComfyUI's ``/view``); signed output URLs get none."""
        tries = max(1, self.policy.tries)
        for attempt in range(1, tries + 1):
            try:
                return await self._download_once(url, dest, headers, max_bytes, auth)
            except GeneratorError as e:
                if e.kind not in (K.UNAVAILABLE, K.RATE_LIMITED, K.TRUNCATED) or attempt == tries:
                    raise
                await self._sleep(
                    backoff_delay(
                        attempt,
                        base=self.policy.base_seconds,
                        cap=self.policy.cap_seconds,
                        retry_after=e.retry_after,
                    )
                )
        raise self.error(K.UNKNOWN, "download failed")  # pragma: no cover

    async def _download_once(
        self,
        url: str,
        dest: Path,
        headers: Mapping[str, str] | None,
        max_bytes: int,
        auth: bool,
    ) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        merged = {**(self.headers if auth else {}), **(headers or {})}
        written = 0
        head = b""
        try:
            timeout = aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.policy.connect_timeout,
                sock_read=self.policy.read_timeout,
            )
            async with self.session.get(self.url(url), headers=merged, timeout=timeout) as resp:
                if resp.status in (404, 410) or (resp.status == 403 and not auth):
                    raise self.error(
                        K.OUTPUT_EXPIRED, f"download: HTTP {resp.status}; the output is gone"
                    )
                if resp.status >= 400:
                    raise self.classify(resp.status, await resp.read(), resp.headers)
                expected = resp.content_length
                if expected is not None and expected > max_bytes:
                    raise self.error(K.NOT_VIDEO, f"download: {expected} bytes is over the limit")
                with open(tmp, "wb") as f:
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        if len(head) < 16:
                            head += chunk[: 16 - len(head)]
                        written += len(chunk)
                        if written > max_bytes:
                            raise self.error(K.NOT_VIDEO, "download: over the size limit")
                        f.write(chunk)
                # no fsync here (it would block the loop): the media store fsyncs the
                # copy it keeps, and a torn temp file is simply downloaded again
                if expected is not None and written < expected:
                    raise self.error(K.TRUNCATED, f"download: got {written} of {expected} bytes")
        except GeneratorError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        except aiohttp.ClientPayloadError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self.error(
                K.TRUNCATED, f"download: the body ended early after {written} bytes"
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._transport_error(e, create=False, what="download") from None
        if written == 0:
            tmp.unlink(missing_ok=True)
            raise self.error(K.TRUNCATED, "download: empty body")
        if sniff_video(head) is None:
            tmp.unlink(missing_ok=True)
            raise self.error(K.NOT_VIDEO, "download: the output is not a video file")
        os.replace(tmp, dest)
        return dest
