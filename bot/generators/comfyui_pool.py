"""The ComfyUI hosts crowdcut sends jobs to: one websocket each, health, load, and where
each job is.

A :class:`Host` is one ComfyUI server (an entry of ``COMFYUI_URLS``): its HTTP client
(:class:`~bot.generators.http.ProviderHTTP`, retries and error kinds included), one
websocket (``/ws?clientId=<ours>``, reconnecting) that tells the queue length of the host
(``status`` frames, sent to every client) and the progress of our prompts (every other
frame, sent only to the client that queued the prompt), and whether it is up.

A host is **down** when it stops answering: its websocket closes and ``GET
/system_stats`` gets no answer (a request that times out or cannot connect triggers the
same probe). It is **up again** as soon as ``/system_stats`` answers. What happens to
the jobs of a host that goes down is decided in :mod:`bot.generators.comfyui` (see its
docstring); this module only keeps the facts: :class:`PoolJob` records which host has a
job now, where older copies may still be (``stale``), what the websocket said about it,
and the graph and image needed to queue it somewhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.errors import GeneratorErrorKind
from bot.generators.base import JobState, JobStatus
from bot.generators.http import ProviderHTTP

log = logging.getLogger(__name__)


def host_label(url: str) -> str:
    """``http://user:pw@gpu1:8188/`` -> ``gpu1:8188``: a name for logs without credentials."""
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "host"


@dataclass
class QueueView:
    """``GET /queue`` reduced to prompt ids (and the graphs, to adopt jobs after a restart)."""

    running: dict[str, Any] = field(default_factory=dict)  # prompt_id -> queue item
    pending: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.running) + len(self.pending)


def parse_queue(body: Any) -> QueueView | None:
    """A :class:`QueueView` of a ``GET /queue`` answer, ``None`` when it is not one."""
    if not isinstance(body, Mapping):
        return None
    view = QueueView()
    for key, target in (("queue_running", view.running), ("queue_pending", view.pending)):
        items = body.get(key, [])
        if not isinstance(items, list):
            return None
        for item in items:
            if isinstance(item, list) and len(item) >= 3 and isinstance(item[1], str):
                target[item[1]] = item
    return view


@dataclass(eq=False)
class PoolJob:
    """What crowdcut knows about one prompt it queued (``pid`` is ComfyUI's prompt_id)."""

    pid: str
    host: Host
    graph: dict[str, Any] | None = None  # kept until the job ends, to queue it elsewhere
    image: bytes | None = None
    image_name: str | None = None
    nodes: int = 1
    state: JobState = JobState.QUEUED
    progress: float = 0.0
    #: the websocket of ``host`` saw this prompt start / end (``executing`` node null)
    started: bool = False
    ended: bool = False
    node_progress: dict[str, float] = field(default_factory=dict)
    sampler: float | None = None
    final: JobStatus | None = None
    outputs: Any = None
    cancel_requested: bool = False
    #: hosts where an earlier copy of this prompt may still be queued or running
    stale: set[Host] = field(default_factory=set)
    moves: int = 0
    created: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def status(self) -> JobStatus:
        if self.final is not None:
            return self.final
        if self.state == JobState.RUNNING:
            return JobStatus(JobState.RUNNING, round(self.progress, 4))
        return JobStatus(JobState.QUEUED, None)

    def on_frame(self, kind: str, data: Mapping[str, Any]) -> None:
        """Apply one websocket frame about this prompt."""
        if kind == "execution_start":
            self.started = True
            self.state = JobState.RUNNING
        elif kind == "execution_cached":
            nodes = data.get("nodes")
            for n in nodes if isinstance(nodes, list) else []:
                self.node_progress[str(n)] = 1.0
        elif kind == "progress_state":
            nodes = data.get("nodes")
            if isinstance(nodes, Mapping):
                for nid, st in nodes.items():
                    if isinstance(st, Mapping):
                        self.node_progress[str(nid)] = _fraction(st.get("value"), st.get("max"))
        elif kind == "progress":
            frac = _fraction(data.get("value"), data.get("max"))
            mx = data.get("max")
            if isinstance(mx, int | float) and mx > 1:
                self.sampler = frac
        elif kind == "executing":
            if data.get("node") is None:
                self.ended = True
            else:
                self.started = True
                self.state = JobState.RUNNING
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            self.ended = True
        elif kind == "executed":
            pass
        else:
            return
        self._update_progress()

    def _update_progress(self) -> None:
        if self.sampler is not None:
            value = 0.05 + 0.9 * self.sampler  # the sampler is nearly all of a video job
        else:
            done = sum(self.node_progress.values())
            value = done / max(1, self.nodes)
        self.progress = max(self.progress, min(0.99, value))


def _fraction(value: Any, maximum: Any) -> float:
    try:
        v, m = float(value), float(maximum)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if m <= 0 else max(0.0, min(1.0, v / m))


class Host:
    """One ComfyUI server of the pool."""

    def __init__(
        self,
        url: str,
        index: int,
        *,
        http: ProviderHTTP,
        client_id: str,
        health_seconds: float = 2.0,
        probe_timeout: float = 3.0,
        on_frame: Callable[[Host, str, Mapping[str, Any]], None] | None = None,
        on_change: Callable[[Host, bool], Awaitable[None]] | None = None,
        on_ws: Callable[[Host, bool], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.index = index
        self.label = host_label(url)
        self.http = http
        self.client_id = client_id
        self.health_seconds = health_seconds
        self.probe_timeout = probe_timeout
        self._on_frame = on_frame
        self._on_change = on_change
        self._on_ws = on_ws
        self.up = True  # until it fails to answer
        self.down_since: float | None = None
        self.ws_connected = False
        self.queue_remaining = 0
        self.version: str | None = None
        self.active: set[str] = set()  # our unfinished prompt ids queued here
        self.last_assigned = 0.0
        self._task: asyncio.Task[None] | None = None
        self._queue_cache: tuple[float, QueueView] | None = None
        self._queue_lock = asyncio.Lock()
        self._probe_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<Host {self.label} {'up' if self.up else 'down'}>"

    # ------------------------------------------------------------------ load
    @property
    def load(self) -> int:
        """Prompts queued or running here, as far as we know (ours and other clients')."""
        others = 0
        if self.ws_connected:
            others = self.queue_remaining
        elif self._queue_cache and time.monotonic() - self._queue_cache[0] < 5:
            others = len(self._queue_cache[1])
        return max(others, len(self.active))

    # ------------------------------------------------------------------ health
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"comfyui-ws-{self.label}"
            )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def probe(self) -> bool:
        """``GET /system_stats`` once, with a short time limit: does the host answer?"""
        async with self._probe_lock:
            try:
                async with self.http.session.get(
                    self.http.url("/system_stats"),
                    headers=self.http.headers,
                    timeout=aiohttp.ClientTimeout(total=self.probe_timeout),
                ) as resp:
                    if resp.status != 200:
                        return False
                    body = json.loads(await resp.read())
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                return False
            if isinstance(body, Mapping) and isinstance(body.get("system"), Mapping):
                version = body["system"].get("comfyui_version")
                self.version = str(version) if version else self.version
            return True

    async def check_alive(self) -> bool:
        """After a request failed to get an answer: probe, and mark the host down if the
        probe gets none either. Returns whether the host is up."""
        if not self.up:
            return False
        if await self.probe():
            return True
        await self.set_up(False)
        return False

    async def set_up(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        self.down_since = None if up else time.monotonic()
        self._queue_cache = None
        log.warning("ComfyUI host %s is %s", self.label, "back up" if up else "down")
        if self._on_change is not None:
            await self._on_change(self, up)

    async def _run(self) -> None:
        backoff = 0.05
        url = self.http.url(f"/ws?clientId={self.client_id}")
        while True:
            if not self.up:
                if await self.probe():
                    await self.set_up(True)
                else:
                    await asyncio.sleep(self.health_seconds)
                    continue
            try:
                async with self.http.session.ws_connect(
                    url,
                    headers=self.http.headers,
                    heartbeat=max(1.0, self.health_seconds * 2),
                    max_msg_size=32 * 1024 * 1024,
                ) as ws:
                    self.ws_connected = True
                    backoff = 0.05
                    if self._on_ws is not None:
                        self._on_ws(self, True)
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self._frame(msg.data)
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                            break
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
                log.debug("ComfyUI %s websocket: %s", self.label, type(e).__name__)
            if self.ws_connected:
                self.ws_connected = False
                if self._on_ws is not None:
                    self._on_ws(self, False)
            if not await self.probe():
                await self.set_up(False)
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.health_seconds)

    def _frame(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        if not isinstance(msg, Mapping):
            return
        kind, data = msg.get("type"), msg.get("data")
        if not isinstance(kind, str) or not isinstance(data, Mapping):
            return
        if kind == "status":
            info = data.get("status")
            exec_info = info.get("exec_info") if isinstance(info, Mapping) else None
            remaining = exec_info.get("queue_remaining") if isinstance(exec_info, Mapping) else None
            if isinstance(remaining, int):
                self.queue_remaining = remaining
            return
        if self._on_frame is not None:
            self._on_frame(self, kind, data)

    # ------------------------------------------------------------------ requests
    async def queue(self, max_age: float = 0.0) -> QueueView:
        """``GET /queue`` (shared by concurrent callers; reused for ``max_age`` seconds)."""
        async with self._queue_lock:
            cached = self._queue_cache
            if cached is not None and time.monotonic() - cached[0] <= max_age:
                return cached[1]
            body = await self.http.get_json("/queue")
            view = parse_queue(body)
            if view is None:
                raise self.http.error(
                    GeneratorErrorKind.MALFORMED, "GET /queue: the answer is not a queue listing"
                )
            self._queue_cache = (time.monotonic(), view)
            return view

    def forget_queue(self) -> None:
        self._queue_cache = None

    async def history(self, pid: str) -> dict[str, Any] | None:
        """``GET /history/{pid}``: the entry, or ``None`` while it has none (``{}``)."""
        body = await self.http.get_json(f"/history/{pid}")
        if body is None or body == {}:
            return None
        if not isinstance(body, Mapping):
            raise self.http.error(
                GeneratorErrorKind.MALFORMED, "GET /history: the answer is not an object"
            )
        entry = body.get(pid)
        if entry is None:
            return None
        if not isinstance(entry, Mapping):
            raise self.http.error(
                GeneratorErrorKind.MALFORMED, "GET /history: the entry is not an object"
            )
        return dict(entry)

    async def delete(self, pid: str) -> None:
        await self.http.request("POST", "/queue", json_body={"delete": [pid]}, expect_json=False)
        self.forget_queue()

    async def interrupt(self, pid: str) -> None:
        await self.http.request(
            "POST", "/interrupt", json_body={"prompt_id": pid}, expect_json=False
        )
