"""The ComfyUI hosts crowdcut sends jobs to: one websocket each, health, load, and where
each job is.

A :class:`Host` is one ComfyUI server (an entry of ``COMFYUI_URLS``): its HTTP client
(:class:`~bot.generators.http.ProviderHTTP`, retries and error kinds included), one
websocket (``/ws?clientId=<ours>``, reconnecting) that tells the queue length of the host
(``status`` frames, sent to every client) and the progress of our prompts (every other
frame, sent only to the client that queued the prompt), and whether it is up.

A host is **down** when it stops answering: its websocket closes and ``GET
/system_stats`` gets no answer (a request that times out or cannot connect triggers the
same probe). It is **up again** as soon as ``/system_stats`` answers.

:class:`Pool` holds the hosts and a :class:`PoolJob` per prompt of ours: which host has
it now, where older copies may still be (``stale``), what the websocket said about it,
and the graph and image needed to queue it somewhere else. It applies the pool's rules,
written out in :mod:`bot.generators.comfyui`'s docstring: least-loaded host first, a
waiting job moved at once off a host that went down, a running one after the grace,
copies removed when the old host returns, a result it had already made kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from bot.errors import GeneratorError, GeneratorErrorKind
from bot.generators.base import JobState, JobStatus
from bot.generators.comfyui_workflow import history_failure, video_outputs
from bot.generators.http import ProviderHTTP

K = GeneratorErrorKind

log = logging.getLogger(__name__)


def host_label(url: str) -> str:
    """``http://user:pw@gpu1:8188/`` -> ``gpu1:8188``: a name for logs without credentials."""
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "host"


#: how often a prompt waiting in a host's queue is looked up over HTTP although the
#: websocket would announce its start: the safety net for a prompt removed from the queue
#: by hand, which no frame reports
RECHECK_SECONDS = 10.0


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
    #: what ``executed`` frames said each output node wrote, and whether
    #: ``execution_success`` came: the job's outputs without a ``GET /history``
    ws_outputs: dict[str, Any] = field(default_factory=dict)
    succeeded: bool = False
    #: queued on ``host`` while its websocket was connected, and it has not dropped since:
    #: the websocket will say when the prompt starts, so waiting needs no HTTP lookups
    watched: bool = False
    #: when ``host`` was last asked over HTTP where the prompt is (monotonic)
    looked_at: float = 0.0
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
            self.succeeded = kind == "execution_success"
        elif kind == "executed":
            node, output = data.get("node"), data.get("output")
            if isinstance(node, str | int) and isinstance(output, Mapping):
                self.ws_outputs[str(node)] = output
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


#: finished job records are forgotten after this long (a later poll looks them up again)
KEEP_FINISHED_SECONDS = 3600.0


class Pool:
    """The hosts and where each of our jobs is: the pool's rules (see
    :mod:`bot.generators.comfyui`) applied when a job is refreshed or a host comes back.

    ``hosts`` are built here around their :class:`ProviderHTTP` clients (one per URL).
    """

    def __init__(
        self,
        clients: Sequence[tuple[str, ProviderHTTP]],
        *,
        client_id: str,
        per_host_jobs: int = 1,
        resubmit_grace: float = 300.0,
        health_seconds: float = 2.0,
        probe_timeout: float = 3.0,
        image_node: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.per_host_jobs = max(1, int(per_host_jobs))
        self.resubmit_grace = float(resubmit_grace)
        self.image_node = image_node
        self.hosts = [
            Host(
                url,
                i,
                http=http,
                client_id=client_id,
                health_seconds=health_seconds,
                probe_timeout=probe_timeout,
                on_frame=self.on_frame,
                on_change=self.on_host_change,
                on_ws=self.on_ws,
            )
            for i, (url, http) in enumerate(clients)
        ]
        self.jobs: dict[str, PoolJob] = {}
        self._started = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._move_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Open the websockets (needs the running loop; called by every entry point)."""
        if not self._started:
            self._started = True
            for host in self.hosts:
                host.start()

    async def aclose(self) -> None:
        for host in self.hosts:
            await host.aclose()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._started = False

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ events
    def on_frame(self, host: Host, kind: str, data: Mapping[str, Any]) -> None:
        pid = data.get("prompt_id")
        job = self.jobs.get(pid) if isinstance(pid, str) else None
        if job is None or job.host is not host or job.final is not None:
            return  # not ours, or a stale copy's frames
        job.on_frame(kind, data)
        job.event.set()

    def on_ws(self, host: Host, connected: bool) -> None:
        # frames may have been missed: the next poll of each job asks over HTTP
        for job in self.jobs.values():
            if job.host is host and job.final is None:
                job.started = job.ended = job.watched = job.succeeded = False
                job.ws_outputs = {}
                job.event.set()

    async def on_host_change(self, host: Host, up: bool) -> None:
        for job in self.jobs.values():
            if job.final is None and (job.host is host or host in job.stale):
                job.event.set()
        if up:
            self.spawn(self._reconcile(host))

    # ------------------------------------------------------------------ capacity
    def live(self) -> list[Host]:
        return [h for h in self.hosts if h.up]

    def choose(self, *, exclude: Host | None = None, limit: bool = True) -> list[Host]:
        """Live hosts, least loaded first (ties: the one that got a job longest ago)."""
        hosts = [h for h in self.live() if h is not exclude]
        if limit:
            hosts = [h for h in hosts if len(h.active) < self.per_host_jobs]
        return sorted(hosts, key=lambda h: (h.load, len(h.active), h.last_assigned, h.index))

    def assign(self, job: PoolJob, host: Host) -> None:
        if job.host is not host:
            job.host.active.discard(job.pid)
        job.host = host
        host.active.add(job.pid)
        host.last_assigned = time.monotonic()

    def finish(self, job: PoolJob, status: JobStatus) -> JobStatus:
        job.final = status
        job.state = status.state
        job.finished_at = time.monotonic()
        job.graph = None
        job.image = None
        job.host.active.discard(job.pid)
        return status

    def prune(self) -> None:
        now = time.monotonic()
        for pid, job in list(self.jobs.items()):
            if job.finished_at is not None and now - job.finished_at > KEEP_FINISHED_SECONDS:
                if not job.stale:
                    del self.jobs[pid]

    async def upload(self, host: Host, name: str, image: bytes) -> None:
        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("image", image, filename=name, content_type="image/png")
            data.add_field("type", "input")
            data.add_field("overwrite", "true")
            return data

        body = await host.http.post_json("/upload/image", data=form)
        if not isinstance(body, Mapping) or body.get("name") != name:
            raise host.http.error(
                K.MALFORMED, "POST /upload/image: the answer does not name the uploaded file"
            )

    async def queue_on(self, host: Host, job: PoolJob) -> None:
        """Upload the job's image (if any) and ``POST /prompt`` it on ``host``."""
        if job.image is not None and job.image_name:
            await self.upload(host, job.image_name, job.image)
        body = await host.http.post_json(
            "/prompt",
            {"prompt": job.graph, "client_id": self.client_id, "prompt_id": job.pid},
            create=True,
        )
        if not isinstance(body, Mapping) or not isinstance(body.get("prompt_id"), str):
            raise host.http.error(
                K.OUTCOME_UNKNOWN, "POST /prompt: the answer has no prompt_id; the job may exist"
            )
        if body["prompt_id"] != job.pid:
            raise host.http.error(
                K.INVALID_INPUT,
                "POST /prompt: the server ignored the prompt_id crowdcut chose; ComfyUI "
                "0.3.45 or newer is needed",
            )
        job.watched, job.looked_at = host.ws_connected, time.monotonic()
        host.forget_queue()

    # ------------------------------------------------------------------ lookups
    async def lookup(self, host: Host, pid: str) -> tuple[str, Any] | None:
        """Where ``pid`` is on ``host``: ("history", entry) / ("running"|"pending", item)."""
        entry = await host.history(pid)
        if entry is not None:
            return "history", entry
        view = await host.queue()
        if pid in view.running:
            return "running", view.running[pid]
        if pid in view.pending:
            return "pending", view.pending[pid]
        entry = await host.history(pid)  # it may have finished between the two
        return ("history", entry) if entry is not None else None

    async def locate(self, pid: str) -> PoolJob | None:
        """Find ``pid`` on every host (after a restart of crowdcut, or for ``find``).

        ``None`` when every host answered and none has it; ``UNAVAILABLE`` when a host
        that might have it did not answer."""
        results = await asyncio.gather(
            *(self.lookup(h, pid) for h in self.hosts), return_exceptions=True
        )
        found: list[tuple[int, Host, str, Any]] = []
        failed: list[Host] = []
        garbage: GeneratorError | None = None
        for host, res in zip(self.hosts, results, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, GeneratorError):
                    raise res
                if res.kind in (K.UNAVAILABLE, K.RATE_LIMITED):
                    await host.check_alive()
                else:
                    garbage = garbage or res
                failed.append(host)
            elif res is not None:
                where, body = res
                rank = {"running": 1, "pending": 2}.get(where, 3)
                if where == "history":
                    ok = (body.get("status") or {}).get("status_str") == "success"
                    rank = 0 if ok else 3
                found.append((rank, host, where, body))
        known = self.jobs.get(pid)
        if not found:
            if garbage is not None:
                raise garbage
            if failed:
                raise GeneratorError(
                    K.UNAVAILABLE,
                    f"comfyui: cannot tell whether job {pid} exists: "
                    f"{', '.join(h.label for h in failed)} did not answer",
                )
            return None
        found.sort(key=lambda f: (f[0], f[1].index))
        _, host, where, body = found[0]
        job = known or PoolJob(pid, host)
        self.jobs[pid] = job
        self.assign(job, host)
        for _, other, other_where, _ in found[1:]:
            if other_where in ("running", "pending"):
                job.stale.add(other)  # a duplicate: the reconcile step cancels it
                self.spawn(self._clean_stale(job, other))
        if where == "history":
            self.settle(job, body)
        else:
            job.graph = body[2] if isinstance(body[2], Mapping) else None
            job.nodes = len(job.graph or {}) or 1
            if where == "running":
                job.state = JobState.RUNNING
            await self.recover_image(job, host)
        return job

    async def recover_image(self, job: PoolJob, host: Host) -> None:
        """Read back the reference image a job uses, so it can be queued elsewhere."""
        node = self.image_node
        if not node or not job.graph or node not in job.graph:
            return
        name = job.graph[node].get("inputs", {}).get("image")
        if not isinstance(name, str) or not name.startswith("crowdcut-"):
            return
        query = urlencode({"filename": name, "type": "input", "subfolder": ""})
        with contextlib.suppress(GeneratorError):
            resp = await host.http.request("GET", f"/view?{query}", expect_json=False)
            if isinstance(resp.body, bytes) and resp.body[:8] == b"\x89PNG\r\n\x1a\n":
                job.image, job.image_name = resp.body, name

    def settle(self, job: PoolJob, entry: Mapping[str, Any]) -> JobStatus:
        status = entry.get("status")
        if not isinstance(status, Mapping):
            raise job.host.http.error(K.MALFORMED, "GET /history: the entry has no status")
        if job.cancel_requested:
            return self.finish(job, JobStatus(JobState.CANCELED))
        if status.get("status_str") == "success":
            job.outputs = entry.get("outputs")
            return self.finish(job, JobStatus(JobState.DONE, 1.0))
        event, kind, message = history_failure(entry)
        error = GeneratorError(kind, f"comfyui {job.host.label}: {message}")
        return self.finish(job, JobStatus(JobState.FAILED, error=error))

    async def refresh(self, job: PoolJob) -> JobStatus:
        """The job's state now, by the rules in the module docstring: from the websocket
        while it runs, from ``/queue`` and ``/history`` otherwise; moved when its host is
        down (or lost it)."""
        job.event.clear()
        for _ in range(3):
            if job.final is not None:
                return job.final
            host = job.host
            if not host.up:
                return await self._poll_down(job)
            if host.ws_connected and job.started and not job.ended:
                return job.status()  # the websocket keeps us up to date
            if job.succeeded and not job.cancel_requested and video_outputs(job.ws_outputs):
                # the websocket saw it succeed and name its video: no history needed (a
                # file gone by the download is output_expired, which reads the history)
                job.outputs = dict(job.ws_outputs)
                return self.finish(job, JobStatus(JobState.DONE, 1.0))
            if (
                host.ws_connected
                and job.watched
                and not job.ended
                and not job.cancel_requested
                and time.monotonic() - job.looked_at < RECHECK_SECONDS
            ):
                return job.status()  # waiting on the host: its start comes on the websocket
            try:
                job.looked_at = time.monotonic()
                found = await self.lookup(host, job.pid)
            except GeneratorError as e:
                if e.kind == K.UNAVAILABLE and not await host.check_alive():
                    continue  # now down: decide by the rules for down hosts
                raise
            if found is None:
                if job.cancel_requested:
                    return self.finish(job, JobStatus(JobState.CANCELED))
                if not await self._lost(job):
                    return job.status()
                continue
            where, body = found
            if where == "history":
                return self.settle(job, body)
            job.state = JobState.RUNNING if where == "running" else JobState.QUEUED
            return job.status()
        return job.status()

    async def _poll_down(self, job: PoolJob) -> JobStatus:
        """The job's host is down: move it, or wait for the host, by the pool's rules."""
        down_for = time.monotonic() - (job.host.down_since or time.monotonic())
        running = job.state == JobState.RUNNING
        if running and down_for < self.resubmit_grace:
            return job.status()  # polled again when the host returns
        if job.graph is None:
            raise GeneratorError(
                K.UNAVAILABLE, f"comfyui: {job.host.label} is down and has job {job.pid}"
            )
        if await self.move(job):
            return job.status()
        if not self.live():
            raise GeneratorError(K.UNAVAILABLE, "comfyui: no host answers", retry_after=5.0)
        return job.status()

    async def _lost(self, job: PoolJob) -> bool:
        """The job is on no queue and in no history of its live host: queue it again.
        Returns whether it was queued again; raises when it cannot be (no graph)."""
        if job.graph is None:
            error = GeneratorError(
                K.UNKNOWN, f"comfyui {job.host.label}: job {job.pid} is gone from the host"
            )
            self.finish(job, JobStatus(JobState.FAILED, error=error))
            return True
        return await self.move(job, allow_same=True)

    async def move(self, job: PoolJob, *, allow_same: bool = False) -> bool:
        """Queue ``job`` on the least-loaded live host (another one unless ``allow_same``)."""
        async with self._move_lock:
            if job.final is not None:
                return True
            old = job.host
            targets = self.choose(exclude=None if allow_same else old, limit=False)
            for target in targets:
                try:
                    await self.queue_on(target, job)
                except GeneratorError as e:
                    if e.kind in (K.UNAVAILABLE, K.RATE_LIMITED):
                        await target.check_alive()
                        continue
                    if e.kind != K.OUTCOME_UNKNOWN:
                        raise
                    # maybe queued: the next poll looks there, and queues again if not
                if target is not old:
                    job.stale.add(old)
                self.assign(job, target)
                job.state = JobState.QUEUED
                job.started = job.ended = False
                job.moves += 1
                log.warning("comfyui: job %s moved from %s to %s", job.pid, old.label, target.label)
                return True
            return False

    # ------------------------------------------------------------------ the pool's repairs
    async def _reconcile(self, host: Host) -> None:
        """``host`` is back: remove copies of moved jobs, keep a result it already has."""
        for job in list(self.jobs.values()):
            if host in job.stale or (job.cancel_requested and job.host is host):
                with contextlib.suppress(GeneratorError):
                    await self._clean_stale(job, host)

    async def _clean_stale(self, job: PoolJob, host: Host) -> None:
        found = await self.lookup(host, job.pid)
        if job.host is host:  # canceled while the host was down
            await self._remove_from(host, job.pid, found)
            return
        if found is not None and found[0] == "history" and job.final is None:
            entry = found[1]
            if (entry.get("status") or {}).get("status_str") == "success":
                newer = job.host
                log.warning(
                    "comfyui: %s had already finished job %s; keeping that result",
                    host.label,
                    job.pid,
                )
                job.stale.discard(host)
                job.stale.add(newer)
                self.assign(job, host)
                self.settle(job, entry)
                job.event.set()
                with contextlib.suppress(GeneratorError):
                    await self._remove_from(newer, job.pid, await self.lookup(newer, job.pid))
                    job.stale.discard(newer)
                return
        await self._remove_from(host, job.pid, found)
        job.stale.discard(host)

    async def _remove_from(self, host: Host, pid: str, found: tuple[str, Any] | None) -> None:
        if found is None or found[0] == "history":
            return
        if found[0] == "pending":
            await host.delete(pid)
            found = await self.lookup(host, pid)  # it may have started meanwhile
        if found is not None and found[0] == "running":
            await host.interrupt(pid)
        log.info("comfyui: removed a copy of job %s from %s", pid, host.label)

    async def cancel(self, job: PoolJob) -> None:
        """Delete the job where it waits, interrupt it where it runs (and any older copy);
        on a host that is down, when it comes back."""
        job.cancel_requested = True
        if job.final is not None:
            return
        failed: GeneratorError | None = None
        for host in {job.host, *job.stale}:
            if not host.up:
                continue  # done when it comes back (see _reconcile)
            try:
                view: QueueView = await host.queue()
                if job.pid in view.pending:
                    await host.delete(job.pid)
                    view = await host.queue()
                if job.pid in view.running:
                    await host.interrupt(job.pid)
            except GeneratorError as e:
                if e.kind in (K.UNAVAILABLE, K.RATE_LIMITED) and not await host.check_alive():
                    continue  # down now: done when it comes back
                failed = failed or e
        job.event.set()
        if failed is not None:
            raise failed
