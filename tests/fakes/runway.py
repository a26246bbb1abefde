"""A fake Runway API on 127.0.0.1, following Runway's published contract.

Sources it follows:

- the official Python SDK, github.com/runwayml/sdk-python (``src/runwayml/_client.py``:
  ``Authorization: Bearer <key>`` and ``X-Runway-Version: 2024-11-06``;
  ``resources/image_to_video.py``, ``resources/text_to_video.py`` and their
  ``types/*_create_params.py``: models, ``ratio`` and ``duration`` per model, prompts of
  up to 1000 UTF-16 code units, ``promptImage`` as an HTTPS URL or a data URI;
  ``types/task_retrieve_response.py``: ``GET /v1/tasks/{id}`` answers ``{id, createdAt,
  status}`` plus ``progress`` while RUNNING, ``output`` (URLs that expire in 24–48 hours)
  when SUCCEEDED, ``failure`` and ``failureCode`` when FAILED; ``resources/tasks.py``:
  ``DELETE /v1/tasks/{id}`` cancels a PENDING/THROTTLED/RUNNING task and deletes any
  other, answering 204; ``types/organization_retrieve_response.py``: ``GET
  /v1/organization``);
- docs.dev.runwayml.com: ``/errors/errors`` (error bodies ``{"error": "..."}``; 400, 401,
  404, 429, 502–504), ``/errors/task-failures`` (``SAFETY.INPUT.*``,
  ``SAFETY.OUTPUT.*``, ``INTERNAL.BAD_OUTPUT.*`` failure codes), ``/assets/inputs``
  (image data URIs up to 5 MB).

Behaviour is driven by polls, not clocks: each ``GET /v1/tasks/{id}`` moves a task one step
along :attr:`FakeRunway.script` (by default PENDING → THROTTLED → RUNNING 0.3 → RUNNING
0.7 → SUCCEEDED); a script that ends in PENDING, THROTTLED or RUNNING holds the task there.
The output is :func:`tests.fakes.tiny_mp4`, served by the fake itself under a token that
each read of the task renews (like a freshly signed URL).

Misbehaviour, each switched on by a method or an attribute:

- :meth:`fail` queues a fault for an endpoint (``create``, ``task``, ``delete``,
  ``organization``, ``output``): an HTTP status (with ``Retry-After`` in seconds or as an
  HTTP date; ``echo_auth`` quotes the Authorization header in the message), ``hang`` (no
  answer), ``drop`` (accept, then close the connection with no answer: a create still
  creates the task), ``malformed`` (broken JSON), ``no_id`` (a 200
  without a task id), ``truncated`` (an output shorter than its Content-Length), ``html``
  (an HTML page instead of the video);
- :meth:`expire_outputs` makes every output URL issued so far answer 403, as an expired
  signed URL does; the next read of the task hands out a fresh one;
- :meth:`forget` removes a task (its GET answers 404);
- :attr:`failure_codes` makes the next created tasks fail with those codes (e.g.
  ``SAFETY.INPUT.TEXT``, ``INTERNAL.BAD_OUTPUT.CODE01``) once they would have run.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes import tiny_mp4

API_VERSION = "2024-11-06"
DATA_URI_LIMIT = 5 * 1024 * 1024
#: what a storage bucket answers for a signed URL past its expiry
_EXPIRED_XML = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"

_GEN4 = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
_VEO = ("1280:720", "720:1280", "1080:1920", "1920:1080")
_TWO_TO_TEN = tuple(range(2, 11))

#: model -> (accepted ratios, accepted durations, prompt text required) per endpoint
IMAGE_TO_VIDEO: dict[str, tuple[tuple[str, ...], tuple[int, ...], bool]] = {
    "gen4_turbo": (_GEN4, _TWO_TO_TEN, False),
    "gen4.5": (_GEN4, _TWO_TO_TEN, True),
    "veo3.1": (_VEO, (4, 6, 8), False),
    "veo3.1_fast": (_VEO, (4, 6, 8), False),
    "veo3": (_VEO, (8,), False),
}
TEXT_TO_VIDEO: dict[str, tuple[tuple[str, ...], tuple[int, ...], bool]] = {
    "gen4.5": (("1280:720", "720:1280"), _TWO_TO_TEN, True),
    "veo3.1": (_VEO, (4, 6, 8), True),
    "veo3.1_fast": (_VEO, (4, 6, 8), True),
    "veo3": (_VEO, (8,), True),
}

DEFAULT_SCRIPT: tuple[str, ...] = (
    "PENDING",
    "THROTTLED",
    "RUNNING:0.3",
    "RUNNING:0.7",
    "SUCCEEDED",
)


@dataclass
class Fault:
    status: int | None = None
    retry_after: str | None = None
    hang: bool = False
    drop: bool = False
    malformed: bool = False
    no_id: bool = False
    truncated: bool = False
    html: bool = False
    #: the error message quotes the request's Authorization header, as careless proxies do
    echo_auth: bool = False


@dataclass
class FakeTask:
    id: str
    endpoint: str
    body: dict[str, Any]
    script: list[str]
    created: float = field(default_factory=time.time)
    step: int = 0
    state: str = "PENDING"
    progress: float | None = None
    failure_code: str | None = None
    cancelled: bool = False
    reads: int = 0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class FakeRunway:
    """The Runway API's task endpoints, on the real paths. See the module docstring."""

    def __init__(
        self,
        api_key: str = "key_test",
        *,
        script: tuple[str, ...] = DEFAULT_SCRIPT,
        data_uri_limit: int = DATA_URI_LIMIT,
        credit_balance: int = 1000,
    ) -> None:
        self.api_key = api_key
        self.script = script
        self.data_uri_limit = data_uri_limit
        self.credit_balance = credit_balance
        self.tasks: dict[str, FakeTask] = {}
        self.failure_codes: deque[str] = deque()
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        #: create requests received (accepted or not)
        self.submissions = 0
        self.deletes = 0
        self.task_reads = 0
        self.output_requests = 0
        self.last_headers: dict[str, str] = {}
        self.bodies: list[dict[str, Any]] = []
        self._tokens: dict[str, str] = {}  # output token -> task id
        self._expired: set[str] = set()
        self._counter = itertools.count(1)
        self._hanging: list[asyncio.Event] = []

    # ------------------------------------------------------------------ switches
    def fail(self, endpoint: str, times: int = 1, **fault: Any) -> None:
        """Queue ``times`` faults for ``endpoint`` (``create``, ``task``, ``delete``,
        ``organization``, ``output``). Keywords are :class:`Fault`'s fields."""
        for _ in range(times):
            self.faults[endpoint].append(Fault(**fault))

    def expire_outputs(self) -> None:
        """Every output URL handed out so far now answers 403 (an expired signature)."""
        self._expired.update(self._tokens)

    def forget(self, task_id: str) -> None:
        """The task is gone: its GET answers 404."""
        self.tasks.pop(task_id, None)

    def output_tokens(self) -> list[str]:
        return list(self._tokens)

    # ------------------------------------------------------------------ app
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/image_to_video", self._image_to_video)
        app.router.add_post("/v1/text_to_video", self._text_to_video)
        app.router.add_get("/v1/tasks/{id}", self._get_task)
        app.router.add_delete("/v1/tasks/{id}", self._delete_task)
        app.router.add_get("/v1/organization", self._organization)
        app.router.add_get("/_outputs/{token}/output.mp4", self._output)
        app.on_shutdown.append(self._release_hangs)
        return app

    async def _release_hangs(self, _app: web.Application) -> None:
        for event in self._hanging:
            event.set()

    def _check_headers(self, request: web.Request) -> web.Response | None:
        self.last_headers = dict(request.headers)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Invalid API key")
        version = request.headers.get("X-Runway-Version")
        if not version:
            return _error(400, "The X-Runway-Version header is required")
        if version != API_VERSION:
            return _error(400, f"Unsupported API version: {version!r}")
        return None

    async def _fault(
        self, request: web.Request, endpoint: str
    ) -> Fault | web.StreamResponse | None:
        """The next queued fault for ``endpoint``: an answer to send now, a ``Fault`` the
        handler applies after doing its work (``drop``, ``malformed``, ``no_id``), or None."""
        queue = self.faults.get(endpoint)
        if not queue:
            return None
        fault = queue.popleft()
        if fault.status is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            message = f"fake fault: HTTP {fault.status}"
            if fault.echo_auth:
                message += f" for {request.headers.get('Authorization')}"
            return _error(fault.status, message, **headers)
        if fault.hang and endpoint != "create":
            await self._hang()
        return fault

    async def _hang(self) -> None:
        event = asyncio.Event()
        self._hanging.append(event)
        await event.wait()

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=500)

    # ------------------------------------------------------------------ creates
    async def _image_to_video(self, request: web.Request) -> web.StreamResponse:
        return await self._create(request, "image_to_video", IMAGE_TO_VIDEO)

    async def _text_to_video(self, request: web.Request) -> web.StreamResponse:
        return await self._create(request, "text_to_video", TEXT_TO_VIDEO)

    async def _create(
        self,
        request: web.Request,
        endpoint: str,
        models: dict[str, tuple[tuple[str, ...], tuple[int, ...], bool]],
    ) -> web.StreamResponse:
        refused = self._check_headers(request)
        if refused is not None:
            return refused
        self.submissions += 1
        fault = await self._fault(request, "create")
        if isinstance(fault, web.StreamResponse):
            return fault
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "Request body must be an object")
        problem = self._validate(body, endpoint, models)
        if problem:
            return _error(400, problem)
        self.bodies.append(body)
        task_id = str(uuid.uuid4())
        task = FakeTask(task_id, endpoint, body, list(self.script))
        task.state = task.script[0].split(":")[0]
        if self.failure_codes:
            task.failure_code = self.failure_codes.popleft()
        self.tasks[task_id] = task
        if fault is not None:
            if fault.hang:
                await self._hang()
            if fault.drop:
                return self._drop(request)
            if fault.malformed:
                return web.Response(text='{"id": "' + task_id[:8], content_type="application/json")
            if fault.no_id:
                return web.json_response({"status": "PENDING"})
        return web.json_response({"id": task_id})

    def _validate(
        self,
        body: dict[str, Any],
        endpoint: str,
        models: dict[str, tuple[tuple[str, ...], tuple[int, ...], bool]],
    ) -> str | None:
        model = body.get("model")
        if model not in models:
            return f"Invalid model for {endpoint}: {model!r}"
        ratios, durations, text_required = models[model]
        if body.get("ratio") not in ratios:
            return f"Invalid ratio for {model}: {body.get('ratio')!r}"
        duration = body.get("duration")
        if duration is not None and (
            not isinstance(duration, int) or isinstance(duration, bool) or duration not in durations
        ):
            return f"Invalid duration for {model}: {duration!r}"
        text = body.get("promptText")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            return "promptText must be a non-empty string"
        if text_required and text is None:
            return f"promptText is required for {model}"
        if isinstance(text, str) and _utf16_len(text) > 1000:
            return "promptText is longer than 1000 characters"
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or not 0 <= seed <= 4294967295):
            return "seed must be an integer from 0 to 4294967295"
        if endpoint == "image_to_video":
            return self._validate_image(body.get("promptImage"))
        if "promptImage" in body:
            return "promptImage is not accepted by text_to_video"
        return None

    def _validate_image(self, image: Any) -> str | None:
        if not isinstance(image, str) or not image:
            return "promptImage is required"
        if image.startswith("https://"):
            return None
        if not image.startswith("data:"):
            return "promptImage: Invalid URL. Only HTTPS URLs are allowed."
        if len(image) > self.data_uri_limit:
            return "promptImage: data URI is larger than 5MB"
        head, sep, payload = image.partition(",")
        if not sep or not head.endswith(";base64"):
            return "promptImage: Invalid data URI."
        mime = head[5:-7]
        if mime not in ("image/png", "image/jpeg", "image/webp"):
            return f"promptImage: Unsupported asset type {mime!r}."
        try:
            base64.b64decode(payload, validate=True)
        except ValueError:
            return "promptImage: Invalid data URI."
        return None

    # ------------------------------------------------------------------ tasks
    async def _get_task(self, request: web.Request) -> web.StreamResponse:
        refused = self._check_headers(request)
        if refused is not None:
            return refused
        self.task_reads += 1
        fault = await self._fault(request, "task")
        if isinstance(fault, web.StreamResponse):
            return fault
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return _error(404, "Task not found")
        self._advance(task)
        answer: dict[str, Any] = {
            "id": task.id,
            "createdAt": _iso(task.created),
            "status": task.state,
        }
        if task.state == "RUNNING":
            answer["progress"] = task.progress
        elif task.state == "SUCCEEDED":
            token = f"tok{next(self._counter)}-{uuid.uuid4().hex}"
            self._tokens[token] = task.id
            answer["output"] = [f"http://{request.host}/_outputs/{token}/output.mp4"]
        elif task.state == "FAILED":
            answer["failure"] = f"fake failure ({task.failure_code})"
            answer["failureCode"] = task.failure_code
        if fault is not None and fault.drop:
            return self._drop(request)
        if fault is not None and fault.malformed:
            return web.Response(text=json.dumps(answer)[:25], content_type="application/json")
        return web.json_response(answer)

    def _advance(self, task: FakeTask) -> None:
        """Show the task's current step, then move it one step along its script."""
        if task.cancelled or task.state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return
        step = task.script[min(task.step, len(task.script) - 1)]
        state, _, progress = step.partition(":")
        if state == "SUCCEEDED" and task.failure_code:
            state = "FAILED"
        task.state = state
        task.progress = float(progress) if progress else (0.0 if state == "RUNNING" else None)
        task.step += 1

    async def _delete_task(self, request: web.Request) -> web.StreamResponse:
        refused = self._check_headers(request)
        if refused is not None:
            return refused
        self.deletes += 1
        fault = await self._fault(request, "delete")
        if isinstance(fault, web.StreamResponse):
            return fault
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return _error(404, "Task not found")
        # running, pending or throttled: canceled; anything else: deleted. Either way the
        # SDK's task type says a later GET shows it as CANCELLED.
        task.cancelled = True
        task.state = "CANCELLED"
        for token, owner in list(self._tokens.items()):
            if owner == task.id:
                self._expired.add(token)
        return web.Response(status=204)

    async def _organization(self, request: web.Request) -> web.StreamResponse:
        refused = self._check_headers(request)
        if refused is not None:
            return refused
        fault = await self._fault(request, "organization")
        if isinstance(fault, web.StreamResponse):
            return fault
        models = {
            m: {"maxConcurrentGenerations": 2, "maxDailyGenerations": 50} for m in IMAGE_TO_VIDEO
        }
        return web.json_response(
            {
                "creditBalance": self.credit_balance,
                "tier": {"maxMonthlyCreditSpend": 10000, "models": models},
                "usage": {"models": {}},
            }
        )

    # ------------------------------------------------------------------ outputs
    async def _output(self, request: web.Request) -> web.StreamResponse:
        self.output_requests += 1
        token = request.match_info["token"]
        fault = await self._fault(request, "output")
        if isinstance(fault, web.StreamResponse):
            return fault
        if token not in self._tokens or token in self._expired:
            return web.Response(
                status=403,
                text=_EXPIRED_XML,
                content_type="application/xml",
            )
        data = tiny_mp4()
        if fault is not None and fault.html:
            return web.Response(
                text="<html><body>Service unavailable</body></html>", content_type="text/html"
            )
        if fault is not None and fault.truncated:
            resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.Response(body=data, content_type="video/mp4")
