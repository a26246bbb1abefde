"""A fake Replicate HTTP API on 127.0.0.1, following Replicate's published contract.

Sources it follows:

- replicate-python (github.com/replicate/replicate-python): ``replicate/prediction.py``
  (the prediction object: ``id``, ``model``, ``version``, ``status``, ``input``,
  ``output``, ``logs``, ``error``, ``created_at``, ``urls.get``/``urls.cancel``; create on
  ``POST /v1/predictions`` with ``version`` or ``POST /v1/models/{owner}/{name}/predictions``;
  ``GET /v1/predictions`` paginated with ``next``/``previous``/``results``;
  ``POST /v1/predictions/{id}/cancel``; progress parsed from tqdm lines in ``logs``),
  ``replicate/file.py`` (``POST /v1/files`` multipart with a ``content`` field, answering a
  file object with ``urls.get``), ``replicate/account.py`` (``GET /v1/account``),
  ``replicate/client.py`` (``Authorization: Bearer <token>``) and its recorded cassettes
  (``tests/cassettes/*.yaml``: 201 on create, ``created_at`` like
  ``2024-04-22T11:15:01.04Z``).
- replicate.com/docs/topics/predictions/lifecycle (statuses ``starting``, ``processing``,
  ``succeeded``, ``failed``, ``canceled``, ``aborted``: a prediction whose deadline passed
  before it started), .../data-retention (API outputs are removed after an hour),
  the HTTP API reference ("List predictions": newest first, 100 per page).
- Errors use Replicate's problem-details shape: ``{"title", "detail", "status"}``.

Progress is driven by polls, not the clock, so tests never sleep: each ``GET`` of a
prediction moves it one step (``starting`` for ``start_polls`` reads, then one tqdm line per
read for ``steps`` reads, then ``succeeded``). ``hold`` freezes every prediction where it is.

Faults are queued per route with :meth:`FakeReplicate.fail_next` (routes: ``create``,
``get``, ``list``, ``cancel``, ``files``, ``download``, ``account``, ``model``):

- ``"500"``/``"503"``/``"429"`` (with ``retry_after``: seconds, or an HTTP date string),
- ``"hang"``: no answer until the client gives up,
- ``"drop"``: the connection is closed without an answer; on ``create`` the prediction
  *is* created first (the unknown-outcome case), ``"accept_hang"`` likewise then hangs;
  ``"lost"`` closes it before anything is created (the request never arrived),
- ``"malformed"``: a 200 whose body is not JSON,
- on ``download``: ``"truncated"`` (fewer bytes than Content-Length), ``"html"`` (an HTML
  page instead of the video), ``"404"``.

Outcomes of new predictions are taken from ``outcomes`` (default ``succeeded``):
``"nsfw"`` fails with Replicate's NSFW message, ``"failed"`` with a plain model error,
``"aborted"`` ends ``aborted`` before starting. :meth:`expire_output` deletes an output the
way the hour-long retention does (the prediction may still list its URL, or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes import tiny_mp4

NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."


def iso(ts: float) -> str:
    """Replicate's timestamp form: ISO 8601, UTC, ``Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FakePrediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    created: float
    outcome: str = "succeeded"
    status: str = "starting"
    polls: int = 0
    step: int = 0
    logs: str = ""
    error: str | None = None
    output_gone: bool = False  # the file answers 404
    output_removed: bool = False  # the prediction no longer names it
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fault:
    kind: str
    retry_after: str | None = None


class FakeReplicate:
    """Replicate's HTTP API, in memory. ``base`` must be set (to the server's URL) before
    the first request so that ``urls`` and output URLs point back at this server."""

    def __init__(
        self,
        token: str = "r8_fake_token",
        *,
        models: tuple[str, ...] = ("kwaivgi/kling-v1.6-standard",),
        start_polls: int = 1,
        steps: int = 3,
        page_size: int = 100,
        hang_seconds: float = 5.0,
    ) -> None:
        self.token = token
        self.models = set(models)
        self.versions: dict[str, str] = {}  # version id -> model
        self.start_polls = start_polls
        self.steps = steps
        self.page_size = page_size
        self.hang_seconds = hang_seconds
        self.base = ""
        self.hold = False
        self.echo_token = False
        self.predictions: dict[str, FakePrediction] = {}
        self.files: dict[str, bytes] = {}
        self.outcomes: deque[str] = deque()
        self.faults: dict[str, deque[Fault]] = {}
        self.submissions = 0  # create requests received (answered or not)
        self.requests: Counter[str] = Counter()
        self.headers_seen: list[dict[str, str]] = []
        self.video = tiny_mp4()
        self._ids = itertools.count(1)
        self._release: asyncio.Event | None = None

    def release_hangs(self) -> None:
        """End every hanging answer now (call on the server's loop: ``server.call``)."""
        if self._release is not None:
            self._release.set()

    # ------------------------------------------------------------------ test controls
    def fail_next(self, route: str, kind: str, count: int = 1, retry_after: str | None = None):
        """Make the next ``count`` requests on ``route`` misbehave as ``kind``."""
        queue = self.faults.setdefault(route, deque())
        for _ in range(count):
            queue.append(Fault(kind, retry_after))

    def add_version(self, version: str, model: str) -> None:
        self.versions[version] = model
        self.models.add(model)

    def add_prediction(
        self,
        input: dict[str, Any],
        *,
        model: str | None = None,
        created: float | None = None,
        status: str = "succeeded",
        version: str = "",
    ) -> FakePrediction:
        """A prediction made earlier (by us or anyone on the account)."""
        p = self._new(model or next(iter(self.models)), version, input, created or time.time())
        p.status = status
        return p

    def expire_output(self, prediction_id: str, *, listed: bool = True) -> None:
        """Delete the output file; with ``listed=False`` the prediction forgets it too."""
        p = self.predictions[prediction_id]
        p.output_gone = True
        p.output_removed = not listed

    # ------------------------------------------------------------------ model
    def _new(self, model: str, version: str, input: dict[str, Any], created: float):
        pid = f"fk{next(self._ids):04d}{secrets.token_hex(6)}"
        outcome = self.outcomes.popleft() if self.outcomes else "succeeded"
        p = FakePrediction(pid, model, version, input, created, outcome)
        self.predictions[pid] = p
        return p

    def _advance(self, p: FakePrediction) -> None:
        if self.hold or p.status not in ("starting", "processing"):
            return
        p.polls += 1
        if p.outcome == "aborted":
            p.status = "aborted"
            return
        if p.polls < self.start_polls:
            return
        if p.status == "starting":
            p.status = "processing"
            p.logs = "Using seed: 42\nGenerating video...\n"
        if p.step < self.steps:
            p.step += 1
            pct = int(100 * p.step / self.steps)
            bar = "█" * (pct // 10)
            p.logs += f"{pct:3d}%|{bar:<10}| {p.step}/{self.steps} [00:0{p.step}<00:00, 1.00it/s]\n"
            return
        if p.outcome == "nsfw":
            p.status, p.error = "failed", NSFW_ERROR
        elif p.outcome == "failed":
            p.status, p.error = "failed", "CUDA error: an illegal memory access was encountered"
        else:
            p.status = "succeeded"

    def _json(self, p: FakePrediction) -> dict[str, Any]:
        output = None
        if p.status == "succeeded" and not p.output_removed:
            output = f"{self.base}/delivery/{p.id}/output.mp4"
        body = {
            "id": p.id,
            "model": p.model,
            "version": p.version or "hidden",
            "input": p.input,
            "logs": p.logs,
            "output": output,
            "data_removed": p.output_removed,
            "error": p.error,
            "status": p.status,
            "source": "api",
            "created_at": iso(p.created),
            "urls": {
                "get": f"{self.base}/v1/predictions/{p.id}",
                "cancel": f"{self.base}/v1/predictions/{p.id}/cancel",
            },
        }
        body.update(p.extra)
        return body

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _problem(status: int, title: str, detail: str, **headers: str) -> web.Response:
        return web.json_response(
            {"title": title, "detail": detail, "status": status},
            status=status,
            headers=headers,
            content_type="application/problem+json",
        )

    async def _fault(self, route: str, request: web.Request) -> web.StreamResponse | None:
        """Apply a queued fault; returns the response to send, or None to go on normally.
        ``drop`` and ``accept_hang`` on create are handled by the create handler."""
        queue = self.faults.get(route)
        if not queue:
            return None
        fault = queue[0]
        if route == "create" and fault.kind in ("drop", "accept_hang"):
            return None
        queue.popleft()
        return await self._apply(fault, request)

    async def _apply(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        # a careless proxy echoing what it got: the client must scrub its own token
        echo = f" ({request.headers.get('Authorization')})" if self.echo_token else ""
        if fault.kind == "429":
            return self._problem(429, "Too Many Requests", "throttled" + echo, **headers)
        if fault.kind in ("500", "502", "503"):
            return self._problem(int(fault.kind), "Service Unavailable", "later" + echo, **headers)
        if fault.kind == "404":
            return self._problem(404, "Not found", "Not found.")
        if fault.kind == "hang":
            if self._release is None:
                self._release = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.hang_seconds)
            return self._problem(504, "Gateway Timeout", "too late")
        if fault.kind in ("drop", "lost"):
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=204)
        if fault.kind == "malformed":
            return web.Response(text='{"id": "oops", "status": ', content_type="application/json")
        if fault.kind == "html":
            return web.Response(
                text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                content_type="text/html",
            )
        raise AssertionError(f"unknown fault {fault.kind}")

    def _authorized(self, request: web.Request) -> bool:
        self.headers_seen.append(dict(request.headers))
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/v1/") and not self._authorized(request):
            return self._problem(
                401, "Unauthenticated", "You did not pass a valid authentication token"
            )
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/account", self.account)
        app.router.add_get("/v1/models/{owner}/{name}", self.model)
        app.router.add_get("/v1/models/{owner}/{name}/versions/{version}", self.model)
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self.create_for_model)
        app.router.add_post("/v1/predictions", self.create_for_version)
        app.router.add_get("/v1/predictions", self.list)
        app.router.add_get("/v1/predictions/{id}", self.get)
        app.router.add_post("/v1/predictions/{id}/cancel", self.cancel)
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{id}", self.file)
        app.router.add_get("/delivery/{id}/output.mp4", self.download)
        return app

    # ------------------------------------------------------------------ handlers
    async def account(self, request: web.Request) -> web.StreamResponse:
        self.requests["account"] += 1
        if (fault := await self._fault("account", request)) is not None:
            return fault
        return web.json_response({"type": "user", "username": "crowdcut", "name": "Crowdcut"})

    async def model(self, request: web.Request) -> web.StreamResponse:
        self.requests["model"] += 1
        if (fault := await self._fault("model", request)) is not None:
            return fault
        name = f"{request.match_info['owner']}/{request.match_info['name']}"
        version = request.match_info.get("version")
        if name not in self.models or (version and self.versions.get(version) != name):
            return self._problem(404, "Not found", "Not found.")
        owner, short = name.split("/")
        return web.json_response(
            {
                "url": f"https://replicate.com/{name}",
                "owner": owner,
                "name": short,
                "visibility": "public",
                "latest_version": {"id": "v" + "0" * 63},
            }
        )

    async def create_for_model(self, request: web.Request) -> web.StreamResponse:
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        return await self._create(request, model, None)

    async def create_for_version(self, request: web.Request) -> web.StreamResponse:
        return await self._create(request, None, "version")

    async def _create(self, request: web.Request, model: str | None, by: str | None):
        self.submissions += 1
        self.requests["create"] += 1
        if (fault := await self._fault("create", request)) is not None:
            return fault
        try:
            body = await request.json()
        except ValueError:
            return self._problem(400, "Bad request", "Invalid JSON body")
        version = ""
        if by == "version":
            version = str(body.get("version") or "")
            model = self.versions.get(version.split(":")[-1])
            if model is None:
                return self._problem(
                    422,
                    "Invalid version",
                    "The specified version does not exist (or perhaps you don't have "
                    "permission to use it?)",
                )
        elif model not in self.models:
            return self._problem(404, "Not found", "The requested resource could not be found.")
        if "Prefer" in request.headers:
            return self._problem(400, "Bad request", "this fake does not do sync mode")
        inp = body.get("input")
        if not isinstance(inp, dict) or not str(inp.get("prompt", "")).strip():
            return web.json_response(
                {
                    "title": "Input validation failed",
                    "status": 422,
                    "detail": "- input: prompt is required",
                    "invalid_fields": [
                        {"type": "required", "field": "input", "description": "prompt is required"}
                    ],
                },
                status=422,
            )
        p = self._new(model or "", version, inp, time.time())
        queue = self.faults.get("create")
        if queue and queue[0].kind in ("drop", "accept_hang"):
            return await self._apply(
                Fault("drop" if queue.popleft().kind == "drop" else "hang"), request
            )
        return web.json_response(self._json(p), status=201)

    async def get(self, request: web.Request) -> web.StreamResponse:
        self.requests["get"] += 1
        if (fault := await self._fault("get", request)) is not None:
            return fault
        p = self.predictions.get(request.match_info["id"])
        if p is None:
            return self._problem(404, "Not found", "Not found.")
        self._advance(p)
        return web.json_response(self._json(p))

    async def list(self, request: web.Request) -> web.StreamResponse:
        self.requests["list"] += 1
        if (fault := await self._fault("list", request)) is not None:
            return fault
        ordered = sorted(self.predictions.values(), key=lambda p: p.created, reverse=True)
        start = int(request.query.get("cursor", "0") or 0)
        page = ordered[start : start + self.page_size]
        nxt = start + self.page_size
        return web.json_response(
            {
                "previous": f"{self.base}/v1/predictions?cursor={max(0, start - self.page_size)}"
                if start
                else None,
                "next": f"{self.base}/v1/predictions?cursor={nxt}" if nxt < len(ordered) else None,
                "results": [self._json(p) for p in page],
            }
        )

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        self.requests["cancel"] += 1
        if (fault := await self._fault("cancel", request)) is not None:
            return fault
        p = self.predictions.get(request.match_info["id"])
        if p is None:
            return self._problem(404, "Not found", "Not found.")
        if p.status in ("starting", "processing"):
            p.status = "canceled"
        return web.json_response(self._json(p))

    async def upload(self, request: web.Request) -> web.StreamResponse:
        self.requests["files"] += 1
        if (fault := await self._fault("files", request)) is not None:
            return fault
        form = await request.post()
        content = form.get("content")
        if content is None or not hasattr(content, "file"):
            return self._problem(400, "Bad request", "content is required")
        data = content.file.read()
        fid = secrets.token_urlsafe(16)
        self.files[fid] = data
        now = time.time()
        return web.json_response(
            {
                "id": fid,
                "name": content.filename,
                "content_type": content.content_type,
                "size": len(data),
                "etag": "0" * 32,
                "checksums": {},
                "metadata": {},
                "created_at": iso(now),
                "expires_at": iso(now + 86400),
                "urls": {"get": f"{self.base}/v1/files/{fid}"},
            },
            status=201,
        )

    async def file(self, request: web.Request) -> web.StreamResponse:
        data = self.files.get(request.match_info["id"])
        if data is None:
            return self._problem(404, "Not found", "Not found.")
        return web.Response(body=data, content_type="application/octet-stream")

    async def download(self, request: web.Request) -> web.StreamResponse:
        self.requests["download"] += 1
        queue = self.faults.get("download")
        fault = queue.popleft() if queue else None
        p = self.predictions.get(request.match_info["id"])
        if p is None or p.output_gone or p.status != "succeeded":
            return web.Response(status=404, text="Not Found")
        if fault is not None and fault.kind == "truncated":
            resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
            resp.content_length = len(self.video)
            await resp.prepare(request)
            await resp.write(self.video[: len(self.video) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        if fault is not None:
            return await self._apply(fault, request)
        return web.Response(body=self.video, content_type="video/mp4")
