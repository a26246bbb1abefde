"""A fake fal.ai queue on 127.0.0.1, following fal's published queue contract.

Sources: the ``fal_client`` package (github.com/fal-ai/fal, ``projects/fal_client/src/
fal_client/client.py``: ``AppId.from_endpoint_id``, ``AsyncRequestHandle.from_request_id``,
``_BaseRequestHandle._parse_status``, the ``Authorization: Key <key>`` header, ``logs`` on the
status request); fal docs "Queue API" (submit at ``{model_id}/{subpath}``, status / result /
cancel at ``{model_id}/requests/{request_id}...`` without the subpath; cancel answers 202
``CANCELLATION_REQUESTED`` or 400 ``ALREADY_COMPLETED``); "Model Errors" (a ``detail`` list
of ``{loc, msg, type}``, ``X-Fal-Retryable`` on every error answer, 422
``content_policy_violation``); "Request Errors" (``{"detail", "error_type"}`` and
``X-Fal-Error-Type``); Platform APIs "List requests by endpoint(s)"
(``GET /v1/models/requests/by-endpoint`` with ``expand=payloads``, finished requests only).

Behaviour, all deterministic (no timers unless ``run_seconds`` is set):

- a submitted request waits ``queue_polls`` status polls in ``IN_QUEUE`` (its
  ``queue_position`` counts down to 0), then runs for ``run_polls`` polls in ``IN_PROGRESS``
  with logs ``"step k/N"``, then is ``COMPLETED``; its result is ``{"video": {"url"}}`` with a
  URL served by this fake (a real small MP4 from :func:`tests.fakes.tiny_mp4`);
- a request to the wrong path (status under the subpath, say) answers 404 as fal does;
  no key or a wrong key answers 401;
- faults, each for the next ``times`` matching requests (kinds ``submit``, ``status``,
  ``result``, ``cancel``, ``video``, ``list``): :meth:`inject` (any status, with
  ``Retry-After`` in seconds or as an HTTP date and ``X-Fal-Retryable``), :meth:`hang` (no
  answer; a hung submit has created its request first, like an answer lost on the way
  back), :meth:`garbage` (a 200 whose JSON is cut off); and per request: ``refuse_next``
  (422 ``content_policy_violation`` at submit), ``fail_next`` (the request ends failed with
  that error body), ``truncate_video``, ``html_video``, :meth:`expire_video` (the current URL
  answers 404 until the result is read again, which gives a new one), ``stale_urls`` (the
  next results give URLs that have already expired).

Counters: ``submissions`` (create requests that made a request), ``status_polls``,
``result_reads``, ``cancels``, ``video_gets``; ``jobs`` holds every request with its input.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import tiny_mp4

NAMESPACES = ("workflows", "comfy")


@dataclass
class FakeRequest:
    request_id: str
    endpoint: str
    app: str
    input: dict[str, Any]
    sent_at: float
    queue_left: int
    run_left: int
    run_polls: int
    state: str = "IN_QUEUE"  # IN_QUEUE | IN_PROGRESS | COMPLETED
    started_at: float | None = None
    ended_at: float | None = None
    error: tuple[int, Any] | None = None  # (HTTP status, body) of a failed request
    error_type: str | None = None
    error_retryable: bool | None = False
    canceled: bool = False
    logs: list[dict[str, Any]] = field(default_factory=list)
    video_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    expired_tokens: set[str] = field(default_factory=set)


def app_base(endpoint: str) -> str:
    parts = endpoint.strip("/").split("/")
    keep = 3 if parts[0] in NAMESPACES else 2
    return "/".join(parts[:keep])


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeFal:
    """See the module docstring. ``key`` is the one API key it accepts."""

    def __init__(
        self,
        key: str = "fal-test-key",
        *,
        queue_polls: int = 2,
        run_polls: int = 3,
        run_seconds: float = 0.0,
        video: bytes | None = None,
    ) -> None:
        self.key = key
        self.queue_polls = queue_polls
        self.run_polls = run_polls
        self.run_seconds = run_seconds
        self.video = video if video is not None else tiny_mp4()
        self.jobs: dict[str, FakeRequest] = {}
        self.submissions = 0
        self.status_polls = 0
        self.result_reads = 0
        self.cancels = 0
        self.video_gets = 0
        self.auth_failures = 0
        self.refuse_next = 0
        self.fail_next: list[tuple[int, Any, str | None, bool | None]] = []
        self.truncate_video = 0
        self.html_video = 0
        self.stale_urls = 0
        self._faults: list[tuple[str, str, dict[str, Any]]] = []
        self._hung: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ switches
    def inject(
        self,
        kind: str,
        status: int,
        *,
        body: Any = None,
        retry_after: float | str | None = None,
        retryable: bool | None = None,
        error_type: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` ``kind`` requests with ``status`` (and ``body``)."""
        for _ in range(times):
            self._faults.append(
                (
                    kind,
                    "status",
                    dict(
                        status=status,
                        body=body,
                        retry_after=retry_after,
                        retryable=retryable,
                        error_type=error_type,
                    ),
                )
            )

    def hang(self, kind: str, *, times: int = 1) -> None:
        """Never answer the next ``times`` ``kind`` requests."""
        self._faults.extend((kind, "hang", {}) for _ in range(times))

    def garbage(self, kind: str, *, times: int = 1) -> None:
        """Answer the next ``times`` ``kind`` requests 200 with broken JSON."""
        self._faults.extend((kind, "garbage", {}) for _ in range(times))

    def fail(
        self,
        status: int = 500,
        body: Any = None,
        error_type: str | None = None,
        *,
        retryable: bool | None = False,
    ) -> None:
        """The next submitted request ends failed with this error answer (its
        ``X-Fal-Retryable`` header is ``retryable``; ``None`` leaves it out)."""
        if body is None:
            body = {"detail": "Internal server error", "error_type": "runner_server_error"}
        self.fail_next.append((status, body, error_type, retryable))

    def expire_video(self, request_id: str | None = None) -> None:
        """The current output URL of a finished request answers 404 from now on; reading
        the result again gives a fresh one (as fal re-signs its media URLs)."""
        for job in self.jobs.values():
            if request_id in (None, job.request_id):
                job.expired_tokens.add(job.video_token)
                job.video_token = uuid.uuid4().hex

    def finish(self, request_id: str | None = None) -> None:
        """Finish requests now, as if their model had run (without anyone polling)."""
        for job in self.jobs.values():
            if request_id in (None, job.request_id) and job.state != "COMPLETED":
                job.started_at = job.started_at or time.time()
                self._complete(job)

    @property
    def only_job(self) -> FakeRequest:
        (job,) = self.jobs.values()
        return job

    # ------------------------------------------------------------------ plumbing
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._route)
        app.on_shutdown.append(self._release_hung)
        return app

    async def _hang(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._hung.add(task)
        try:
            await asyncio.sleep(3600)
        finally:
            self._hung.discard(task)

    async def _release_hung(self, app: web.Application) -> None:
        for task in list(self._hung):
            task.cancel()

    def _take_fault(self, kind: str) -> tuple[str, dict[str, Any]] | None:
        for i, (k, what, args) in enumerate(self._faults):
            if k == kind:
                del self._faults[i]
                return what, args
        return None

    async def _fault_answer(self, kind: str) -> web.StreamResponse | None:
        fault = self._take_fault(kind)
        if fault is None:
            return None
        what, args = fault
        if what == "hang":
            await self._hang()
        if what == "garbage":
            return web.Response(
                status=200, body=b'{"status": "IN_PR', content_type="application/json"
            )
        headers: dict[str, str] = {}
        retry_after = args["retry_after"]
        if isinstance(retry_after, int | float):
            headers["Retry-After"] = f"{retry_after:g}"
        elif isinstance(retry_after, str):
            headers["Retry-After"] = retry_after
        if args["retryable"] is not None:
            headers["X-Fal-Retryable"] = "true" if args["retryable"] else "false"
        if args["error_type"]:
            headers["X-Fal-Error-Type"] = args["error_type"]
        body = args["body"]
        if body is None:
            body = {"detail": f"injected HTTP {args['status']}"}
        return web.json_response(body, status=args["status"], headers=headers)

    @staticmethod
    def http_date(seconds_from_now: float) -> str:
        return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)

    def _authorized(self, request: web.Request) -> bool:
        ok = request.headers.get("Authorization") == f"Key {self.key}"
        if not ok:
            self.auth_failures += 1
        return ok

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response(
            {"detail": "No user found for Key ID and Secret"},
            status=401,
            headers={"X-Fal-Retryable": "false"},
        )

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response({"detail": "Not Found"}, status=404)

    # ------------------------------------------------------------------ routes
    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p]
        if parts[:1] == ["files"] and request.method == "GET":
            return await self._video(request, parts)
        if parts[:4] == ["v1", "models", "requests", "by-endpoint"] and request.method == "GET":
            if not self._authorized(request):
                return self._unauthorized()
            return await self._list(request)
        if "requests" in parts:
            k = parts.index("requests")
            base, rest = "/".join(parts[:k]), parts[k + 1 :]
            if not rest:
                return self._not_found()
            if not self._authorized(request):
                return self._unauthorized()
            job = self.jobs.get(rest[0])
            if job is None or job.app != base:
                return self._not_found()  # unknown request, or asked under the subpath
            if rest[1:] == ["status"] and request.method == "GET":
                return await self._status(request, job)
            if rest[1:] == [] and request.method == "GET":
                return await self._result(request, job)
            if rest[1:] == ["cancel"] and request.method == "PUT":
                return await self._cancel(job)
            return web.json_response({"detail": "Method Not Allowed"}, status=405)
        if request.method == "POST" and len(parts) >= 2:
            if not self._authorized(request):
                return self._unauthorized()
            return await self._submit(request, "/".join(parts))
        return self._not_found()

    async def _submit(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        fault = self._take_fault("submit")
        if fault is not None and fault[0] != "hang":
            self._faults.insert(0, ("submit", *fault))
            answer = await self._fault_answer("submit")
            assert answer is not None
            return answer
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"detail": "Invalid JSON"}, status=400)
        if self.refuse_next:
            self.refuse_next -= 1
            return web.json_response(
                {
                    "detail": [
                        {
                            "loc": ["body", "prompt"],
                            "msg": "The content was flagged by a content checker.",
                            "type": "content_policy_violation",
                            "url": "https://docs.fal.ai/errors#content_policy_violation",
                            "input": body.get("prompt"),
                        }
                    ]
                },
                status=422,
                headers={"X-Fal-Retryable": "false"},
            )
        request_id = str(uuid.uuid4())
        job = FakeRequest(
            request_id=request_id,
            endpoint=endpoint,
            app=app_base(endpoint),
            input=body,
            sent_at=time.time(),
            queue_left=self.queue_polls,
            run_left=self.run_polls,
            run_polls=max(1, self.run_polls),
        )
        if self.fail_next:
            status, error_body, error_type, job.error_retryable = self.fail_next.pop(0)
            job.error = (status, error_body)
            job.error_type = error_type or (
                error_body.get("error_type") if isinstance(error_body, dict) else None
            )
        self.jobs[request_id] = job
        self.submissions += 1
        if fault is not None:  # the request exists, but its answer never leaves
            await self._hang()
        base = f"{request.scheme}://{request.host}/{job.app}/requests/{request_id}"
        return web.json_response(
            {
                "request_id": request_id,
                "response_url": base,
                "status_url": f"{base}/status",
                "cancel_url": f"{base}/cancel",
                "queue_position": len([j for j in self.jobs.values() if j.state == "IN_QUEUE"]) - 1,
            }
        )

    def _advance(self, job: FakeRequest) -> None:
        if job.state == "IN_QUEUE":
            if job.queue_left > 0:
                job.queue_left -= 1
                return
            job.state = "IN_PROGRESS"
            job.started_at = time.time()
            job.logs.append(self._log("starting"))
            return
        if job.state == "IN_PROGRESS":
            if job.run_left > 0:
                done = job.run_polls - job.run_left + 1
                job.logs.append(self._log(f"step {done}/{job.run_polls}"))
                job.run_left -= 1
                return
            if job.started_at and time.time() - job.started_at < self.run_seconds:
                return
            self._complete(job)

    def _complete(self, job: FakeRequest) -> None:
        job.state = "COMPLETED"
        job.ended_at = time.time()

    @staticmethod
    def _log(message: str) -> dict[str, Any]:
        return {
            "message": message,
            "level": "INFO",
            "source": "user",
            "timestamp": _iso(time.time()),
        }

    async def _status(self, request: web.Request, job: FakeRequest) -> web.StreamResponse:
        self.status_polls += 1
        answer = await self._fault_answer("status")
        if answer is not None:
            return answer
        self._advance(job)
        base = f"{request.scheme}://{request.host}/{job.app}/requests/{job.request_id}"
        with_logs = request.query.get("logs", "0").lower() in ("1", "true")
        body: dict[str, Any] = {"status": job.state, "response_url": base}
        if job.state == "IN_QUEUE":
            body["queue_position"] = job.queue_left
        else:
            body["logs"] = list(job.logs) if with_logs else None
        if job.state == "COMPLETED":
            body["metrics"] = {"inference_time": 1.0}
            if job.canceled:
                body["error"] = "Request was cancelled"
                body["error_type"] = "client_cancelled"
            elif job.error is not None:
                detail = job.error[1].get("detail") if isinstance(job.error[1], dict) else None
                body["error"] = detail if isinstance(detail, str) else "Request failed"
                body["error_type"] = job.error_type
        return web.json_response(body)

    async def _result(self, request: web.Request, job: FakeRequest) -> web.StreamResponse:
        self.result_reads += 1
        answer = await self._fault_answer("result")
        if answer is not None:
            return answer
        if job.state != "COMPLETED":
            return web.json_response({"detail": "Request is still in progress"}, status=400)
        if job.canceled:
            return web.json_response(
                {"detail": "Request was cancelled", "error_type": "client_cancelled"},
                status=499,
                headers={"X-Fal-Retryable": "false", "X-Fal-Error-Type": "client_cancelled"},
            )
        if job.error is not None:
            status, body = job.error
            headers = {}
            if job.error_retryable is not None:
                headers["X-Fal-Retryable"] = "true" if job.error_retryable else "false"
            if job.error_type:
                headers["X-Fal-Error-Type"] = job.error_type
            return web.json_response(body, status=status, headers=headers)
        url = f"{request.scheme}://{request.host}/files/{job.video_token}/output.mp4"
        if self.stale_urls:  # this URL has expired by the time it is fetched
            self.stale_urls -= 1
            self.expire_video(job.request_id)
        return web.json_response(
            {
                "video": {
                    "url": url,
                    "content_type": "video/mp4",
                    "file_name": "output.mp4",
                    "file_size": len(self.video),
                }
            }
        )

    async def _cancel(self, job: FakeRequest) -> web.StreamResponse:
        self.cancels += 1
        answer = await self._fault_answer("cancel")
        if answer is not None:
            return answer
        if job.state == "COMPLETED":
            return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
        job.canceled = True
        self._complete(job)
        return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)

    async def _video(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        self.video_gets += 1
        answer = await self._fault_answer("video")
        if answer is not None:
            return answer
        token = parts[1] if len(parts) > 1 else ""
        job = next((j for j in self.jobs.values() if j.video_token == token), None)
        if job is None:
            return web.Response(status=404, text="Not Found")
        if self.html_video:
            self.html_video -= 1
            return web.Response(
                status=200,
                text="<!doctype html><html><body>Oops</body></html>",
                content_type="text/html",
            )
        if self.truncate_video:
            self.truncate_video -= 1
            resp = web.StreamResponse(status=200, headers={"Content-Type": "video/mp4"})
            resp.content_length = len(self.video)
            await resp.prepare(request)
            await resp.write(self.video[: len(self.video) // 3])
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.Response(status=200, body=self.video, content_type="video/mp4")

    async def _list(self, request: web.Request) -> web.StreamResponse:
        answer = await self._fault_answer("list")
        if answer is not None:
            return answer
        endpoints = set(",".join(request.query.getall("endpoint_id", [])).split(","))
        start = request.query.get("start")
        since = (
            dt.datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
            if start
            else time.time() - 86400
        )
        payloads = "payloads" in request.query.get("expand", "")
        items = []
        for job in sorted(self.jobs.values(), key=lambda j: j.ended_at or 0, reverse=True):
            if job.ended_at is None or job.endpoint not in endpoints or job.sent_at < since:
                continue  # only finished requests are listed, by end time
            item: dict[str, Any] = {
                "request_id": job.request_id,
                "endpoint_id": job.endpoint,
                "sent_at": _iso(job.sent_at),
                "started_at": _iso(job.started_at),
                "ended_at": _iso(job.ended_at),
                "status_code": job.error[0] if job.error else 200,
                "duration": (job.ended_at - (job.started_at or job.sent_at)),
            }
            if payloads:
                item["json_input"] = job.input
            items.append(item)
        return web.json_response({"items": items, "next_cursor": None, "has_more": False})

    def dump(self) -> str:
        return json.dumps({k: v.state for k, v in self.jobs.items()})
