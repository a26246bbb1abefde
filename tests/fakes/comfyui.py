"""A fake ComfyUI server, following ComfyUI 0.3.64 (``server.py``, ``execution.py`` and
``main.py`` of Comfy-Org/ComfyUI at a125cd84) and what a real one answered, recorded in
``shared/comfyui/`` (its ``README.md`` lists the files).

Routes: ``GET /ws?clientId=``, ``POST /prompt``, ``GET /prompt``, ``GET /queue``,
``POST /queue`` (``delete``, ``clear``), ``POST /interrupt``, ``GET /history``,
``GET /history/{id}``, ``POST /history``, ``GET /view``, ``POST /upload/image``,
``GET /object_info``, ``GET /object_info/{class}``, ``GET /system_stats``.

Like the real server it keeps one queue executed one prompt at a time; sends ``status``
frames to every websocket and every other frame only to the client that queued the prompt
(``client_id``), in the recorded order (``execution_start``, ``execution_cached``, then per
node ``progress_state`` and ``executing``, ``progress`` from samplers, ``executed`` from
output nodes, ``execution_success`` / ``execution_error`` / ``execution_interrupted``, a
``status``, and ``executing`` with ``node: null`` last); validates a prompt at submit
(unknown node, no output node, a missing required input, a number out of range, a missing
LoadImage file: the recorded 400 bodies) and fails at run time on a bad option value of a
newer-style (``COMBO``) input, as 0.3.64 does; honours an interrupt only between nodes and
sampler steps; keeps history and outputs in memory. It also insists on a canonical UUID
``prompt_id`` when one is sent (newer servers do).

Counters for tests: ``submissions`` (``POST /prompt`` requests), ``executed`` (prompt id ->
runs that finished successfully), ``started``, ``interrupted``, ``deleted``.

Faults: :meth:`fail` (an HTTP status, with ``Retry-After``, for the next N requests of a
route), :meth:`hang` (no answer), :meth:`malformed` (200 with broken JSON),
``truncate_view`` / ``view_html`` (a cut-off or an HTML ``/view``), ``drop_outputs``
(history and ``executed`` frames without outputs), :meth:`delete_outputs` (``/view``
answers 404), :meth:`kill` /
:meth:`restart` (the process dies, losing its in-memory queue and history, and comes back
on the same port), :meth:`freeze` / :meth:`thaw` (stops answering and working, keeps state).

Usable in the test's loop (``await fake.start()``) or in a thread
(``ThreadedServer(fake.make_app)``). :meth:`replay` plays a recorded websocket transcript
and history for the next prompt instead of simulating it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import heapq
import json
import random
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes import free_port, tiny_mp4

SHARED = Path(__file__).resolve().parents[3] / "shared" / "comfyui"
_EXECUTOR = web.AppKey("executor", asyncio.Task)


@functools.cache
def recorded(name: str) -> Any:
    """A recorded JSON file of ``shared/comfyui/`` (cached; do not mutate)."""
    return json.loads((SHARED / name).read_text(encoding="utf-8"))


#: VideoHelperSuite's combine node is no core node; the recordings' server did not have
#: it. Its inputs as VHS declares them, so the fake can stand in for a server that has it.
VHS_VIDEO_COMBINE = {
    "input": {
        "required": {
            "images": ["IMAGE"],
            "frame_rate": ["FLOAT", {"default": 8, "min": 1, "step": 1}],
            "loop_count": ["INT", {"default": 0, "min": 0, "max": 100, "step": 1}],
            "filename_prefix": ["STRING", {"default": "AnimateDiff"}],
            "format": [["image/gif", "image/webp", "video/h264-mp4", "video/webm"]],
            "pingpong": ["BOOLEAN", {"default": False}],
            "save_output": ["BOOLEAN", {"default": True}],
        },
        "optional": {"audio": ["AUDIO"]},
    },
    "output": ["VHS_FILENAMES"],
    "name": "VHS_VideoCombine",
    "output_node": True,
    "category": "Video Helper Suite",
}

_MEDIA: dict[str, bytes] = {}


def _media(ext: str) -> bytes:
    """A real tiny file of each kind a video node writes (made once with ffmpeg)."""
    if ext in (".mp4", ".mov"):
        return tiny_mp4()
    if ext not in _MEDIA:
        from tests.media_helpers import run

        args = {
            ".webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-b:v", "200k"],
            ".webp": ["-c:v", "libwebp_anim", "-loop", "0"],
            ".gif": [],
            ".png": ["-frames:v", "1"],
        }[ext]
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / f"out{ext}"
            run(["-f", "lavfi", "-i", "testsrc2=s=160x90:r=12:d=1", *args, str(out)])
            _MEDIA[ext] = out.read_bytes()
    return _MEDIA[ext]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_link(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


@dataclass(order=True)
class _Item:
    number: float
    pid: str = field(compare=False)
    prompt: dict[str, Any] = field(compare=False)
    extra: dict[str, Any] = field(compare=False)
    outputs: list[str] = field(compare=False)

    def as_list(self) -> list[Any]:
        return [self.number, self.pid, self.prompt, self.extra, self.outputs]


@dataclass
class _Fault:
    method: str
    path: str
    kind: str  # "status" | "hang" | "malformed"
    times: int | None
    status: int = 500
    retry_after: float | None = None
    body: Any = None


class FakeComfyUI:
    """One fake ComfyUI host (see the module docstring)."""

    def __init__(
        self,
        *,
        job_seconds: float | tuple[float, float] = 0.05,
        progress_steps: int = 4,
        rng: random.Random | None = None,
        extra_nodes: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> None:
        self.job_seconds = job_seconds
        self.token = token  # when set, every request needs "Authorization: Bearer <token>"
        self.progress_steps = progress_steps
        self.rng = rng or random.Random(1)
        self.object_info: dict[str, Any] = {
            **recorded("object_info_all.json"),
            "VHS_VideoCombine": VHS_VIDEO_COMBINE,
            **(extra_nodes or {}),
        }
        self.system_stats = recorded("system_stats.json")
        self.port: int | None = None
        self.url = ""
        # counters survive kill/restart: they are the test's view of the world
        self.submissions = 0
        self.executed: Counter[str] = Counter()
        self.started: Counter[str] = Counter()
        self.interrupted: Counter[str] = Counter()
        self.deleted: Counter[str] = Counter()
        self.history_reads: Counter[str] = Counter()  # GET /history/{id} per prompt id
        self.uploads: dict[str, bytes] = {}  # the input folder (survives a restart)
        self.files: dict[tuple[str, str, str], bytes] = {}  # (type, subfolder, filename)
        self.faults: list[_Fault] = []
        self.truncate_view = False
        self.view_html = False
        self.drop_outputs = False
        self.frozen = False
        self._replays: list[tuple[list[dict[str, Any]], dict[str, Any], float]] = []
        self._runner: web.AppRunner | None = None
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._wake: asyncio.Event | None = None
        self._thawed: asyncio.Event | None = None
        self._release: asyncio.Event | None = None
        self._counters: Counter[str] = Counter()
        self.lose_state()

    # ------------------------------------------------------------------ state
    def lose_state(self) -> None:
        """What a ComfyUI restart forgets: the queue, the running prompt, the history."""
        self.queue: list[_Item] = []
        self.running: _Item | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.number = 0
        self._interrupt = False

    @property
    def queue_remaining(self) -> int:
        return len(self.queue) + (1 if self.running else 0)

    # ------------------------------------------------------------------ faults
    def _add(self, route: str, kind: str, times: int | None, **kw: Any) -> None:
        method, _, path = route.partition(" ")
        self.faults.append(_Fault(method.upper(), path, kind, times, **kw))

    def fail(
        self,
        route: str,
        status: int,
        *,
        times: int | None = 1,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        """Answer ``status`` to the next ``times`` requests of ``route`` ("GET /history")."""
        self._add(route, "status", times, status=status, retry_after=retry_after, body=body)

    def hang(self, route: str, *, times: int | None = 1, after: bool = False) -> None:
        """Never answer the next ``times`` requests of ``route`` (``None``: all of them);
        with ``after`` the request is carried out first (the answer is what gets lost)."""
        self._add(route, "hang_after" if after else "hang", times)

    def malformed(self, route: str, *, times: int | None = 1) -> None:
        """Answer 200 with a body that is not JSON."""
        self._add(route, "malformed", times)

    def clear_faults(self) -> None:
        self.faults.clear()
        self.truncate_view = self.view_html = self.drop_outputs = False
        if self._release is not None:
            self._release.set()

    def delete_outputs(self) -> None:
        """Empty the output folder (``/view`` answers 404 from now on)."""
        for key in [k for k in self.files if k[0] == "output"]:
            del self.files[key]

    def _fault_for(self, request: web.Request) -> _Fault | None:
        for fault in self.faults:
            if fault.method == request.method and request.path.startswith(fault.path):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self._counters[f"{request.method} {request.path.split('/')[1]}"] += 1
        if self.frozen:
            return await self._hang()
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="Unauthorized")
        fault = self._fault_for(request)
        if fault is not None:
            if fault.kind == "hang":
                return await self._hang()
            if fault.kind == "hang_after":
                await handler(request)
                return await self._hang()
            if fault.kind == "malformed":
                return web.Response(text='{"prompt_id": ', content_type="application/json")
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            if fault.body is None:
                return web.Response(status=fault.status, headers=headers)
            if isinstance(fault.body, str):
                return web.Response(status=fault.status, text=fault.body, headers=headers)
            return web.json_response(fault.body, status=fault.status, headers=headers)
        return await handler(request)

    async def _hang(self) -> web.Response:
        """No answer until released (by :meth:`thaw`, :meth:`clear_faults` or shutdown);
        whoever asked gave up long before."""
        assert self._release is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), 120)
        return web.Response(status=503)

    # ------------------------------------------------------------------ lifecycle
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024**2)
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/prompt", self._post_prompt)
        app.router.add_get("/prompt", self._get_prompt)
        app.router.add_get("/queue", self._get_queue)
        app.router.add_post("/queue", self._post_queue)
        app.router.add_post("/interrupt", self._post_interrupt)
        app.router.add_get("/history", self._get_history_all)
        app.router.add_get("/history/{prompt_id}", self._get_history)
        app.router.add_post("/history", self._post_history)
        app.router.add_get("/view", self._view)
        app.router.add_post("/upload/image", self._upload)
        app.router.add_get("/object_info", self._object_info_all)
        app.router.add_get("/object_info/{node_class}", self._object_info_one)
        app.router.add_get("/system_stats", self._system_stats)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._wake = asyncio.Event()
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._release = asyncio.Event()
        app[_EXECUTOR] = asyncio.get_running_loop().create_task(self._executor())
        if self.queue:
            self._wake.set()

    async def _on_shutdown(self, app: web.Application) -> None:
        task = app.get(_EXECUTOR)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._release is not None:
            self._release.set()
        for ws in list(self._sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close()
        self._sockets.clear()

    async def start(self, port: int | None = None) -> FakeComfyUI:
        """Serve on 127.0.0.1 from the running loop (the same port again after a kill)."""
        self.port = port or self.port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner = web.AppRunner(self.make_app(), shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.running is not None:  # the job that was running dies with the process
            self.running = None

    async def kill(self) -> None:
        """The ComfyUI process dies: connections refused, queue and history gone."""
        await self.stop()
        self.lose_state()

    async def restart(self) -> None:
        await self.start(self.port)

    async def freeze(self, *, working: bool = False) -> None:
        """Stop answering (requests hang, websockets close) and stop working; keep state.
        With ``working`` the host goes on running its queue (a network split)."""
        self.frozen = True
        if self._release is not None:
            self._release.clear()
        if self._thawed is not None and not working:
            self._thawed.clear()
        for ws in list(self._sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close()

    def thaw(self) -> None:
        self.frozen = False
        if self._release is not None:
            self._release.set()
        if self._thawed is not None:
            self._thawed.set()

    def replay(self, name: str, *, speed: float = 0.02) -> None:
        """Play ``ws_<name>.json`` and ``history_<name>.json`` for the next prompt run,
        with the recorded prompt_id replaced by the submitted one; times x ``speed``."""
        frames = recorded(f"ws_{name}.json")
        history = recorded(f"history_{name}.json")
        self._replays.append((frames, history, speed))

    # ------------------------------------------------------------------ websocket
    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "") or uuid.uuid4().hex
        old = self._sockets.pop(sid, None)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        self._sockets[sid] = ws
        try:
            await ws.send_json(
                {
                    "type": "status",
                    "data": {
                        "status": {"exec_info": {"queue_remaining": self.queue_remaining}},
                        "sid": sid,
                    },
                }
            )
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self._sockets.get(sid) is ws:
                del self._sockets[sid]
        return ws

    async def _send(self, kind: str, data: dict[str, Any], sid: str | None = None) -> None:
        message = json.dumps({"type": kind, "data": data})
        targets = list(self._sockets.values()) if sid is None else [self._sockets.get(sid)]
        for ws in targets:
            if ws is None or ws.closed:
                continue
            with contextlib.suppress(Exception):
                await ws.send_str(message)

    async def _status(self) -> None:
        await self._send(
            "status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining}}}
        )

    # ------------------------------------------------------------------ prompts
    def _error(self, kind: str, message: str, details: str = "") -> dict[str, Any]:
        return {"type": kind, "message": message, "details": details, "extra_info": {}}

    def _validate(self, prompt: dict[str, Any]) -> tuple[dict[str, Any] | None, dict, list]:
        """(error, node_errors, output node ids), like ``execution.validate_prompt``."""
        for nid, node in prompt.items():
            cls = node.get("class_type") if isinstance(node, dict) else None
            if cls not in self.object_info:
                return (
                    self._error(
                        "invalid_prompt",
                        f"Cannot execute because node {cls} does not exist.",
                        f"Node ID '#{nid}'",
                    ),
                    {},
                    [],
                )
        outputs = [
            nid for nid, n in prompt.items() if self.object_info[n["class_type"]].get("output_node")
        ]
        if not outputs:
            return self._error("prompt_no_outputs", "Prompt has no outputs"), {}, []
        node_errors: dict[str, Any] = {}
        for nid, node in prompt.items():
            errors = self._node_errors(prompt, node)
            if errors:
                node_errors[nid] = {
                    "errors": errors,
                    "dependent_outputs": outputs,
                    "class_type": node["class_type"],
                }
        if node_errors:
            return (
                self._error("prompt_outputs_failed_validation", "Prompt outputs failed validation"),
                node_errors,
                outputs,
            )
        return None, {}, outputs

    def _node_errors(self, prompt: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
        spec = self.object_info[node["class_type"]].get("input", {})
        inputs = node.get("inputs", {})
        errors = []
        for name, conf in spec.get("required", {}).items():
            value = inputs.get(name)
            if name not in inputs:
                errors.append(
                    {
                        **self._error("required_input_missing", "Required input is missing", name),
                        "extra_info": {"input_name": name},
                    }
                )
                continue
            if _is_link(value):
                if value[0] not in prompt:
                    errors.append(self._error("bad_linked_input", "Bad linked input", name))
                continue
            kind = conf[0] if conf else None
            opts = conf[1] if len(conf) > 1 and isinstance(conf[1], dict) else {}
            if kind in ("INT", "FLOAT") and isinstance(value, int | float):
                if "min" in opts and value < opts["min"]:
                    errors.append(
                        self._error(
                            "value_smaller_than_min",
                            f"Value {value} smaller than min of {opts['min']}",
                            name,
                        )
                    )
                if "max" in opts and value > opts["max"]:
                    errors.append(
                        self._error(
                            "value_bigger_than_max",
                            f"Value {value} bigger than max of {opts['max']}",
                            name,
                        )
                    )
            if node["class_type"] == "LoadImage" and name == "image":
                if value not in self.uploads:
                    errors.append(
                        self._error(
                            "custom_validation_failed",
                            "Custom validation failed for node",
                            f"image - Invalid image file: {value}",
                        )
                    )
            elif isinstance(kind, list) and value not in kind:
                errors.append(
                    self._error(
                        "value_not_in_list", "Value not in list", f"{name}: '{value}' not in list"
                    )
                )
        return errors

    async def _post_prompt(self, request: web.Request) -> web.Response:
        self.submissions += 1
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400)
        if "prompt" not in body:
            error = self._error("no_prompt", "No prompt provided", "No prompt provided")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        pid = str(body.get("prompt_id") or uuid.uuid4())
        try:
            if str(uuid.UUID(pid)) != pid:
                raise ValueError
        except ValueError:
            error = self._error("invalid_prompt", "Invalid prompt_id", "not a canonical UUID")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            error = self._error("invalid_prompt", "Invalid prompt", "prompt is not an object")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        error, node_errors, outputs = self._validate(prompt)
        if error is not None:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        if "number" in body:
            number = float(body["number"])
        else:
            number = self.number
            if body.get("front"):
                number = -number
            self.number += 1
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        heapq.heappush(self.queue, _Item(number, pid, prompt, extra, outputs))
        await self._status()
        assert self._wake is not None
        self._wake.set()
        return web.json_response({"prompt_id": pid, "number": number, "node_errors": {}})

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self.queue_remaining}})

    async def _get_queue(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "queue_running": [self.running.as_list()] if self.running else [],
                "queue_pending": [i.as_list() for i in self.queue],
            }
        )

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.queue.clear()
            await self._status()
        for pid in body.get("delete", []):
            for item in self.queue:
                if item.pid == pid:
                    self.queue.remove(item)
                    heapq.heapify(self.queue)
                    self.deleted[pid] += 1
                    await self._status()
                    break
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        pid = body.get("prompt_id") if isinstance(body, dict) else None
        if not pid or (self.running is not None and self.running.pid == pid):
            self._interrupt = self.running is not None
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.Response:
        pid = request.match_info["prompt_id"]
        self.history_reads[pid] += 1
        if pid not in self.history:
            return web.json_response({})
        return web.json_response({pid: self._history_entry(pid)})

    def _history_entry(self, pid: str) -> dict[str, Any]:
        entry = copy.deepcopy(self.history[pid])
        if self.drop_outputs:
            entry["outputs"] = {}
        return entry

    async def _get_history_all(self, request: web.Request) -> web.Response:
        keys = list(self.history)
        max_items = request.query.get("max_items")
        if max_items is not None:
            keys = keys[-int(max_items) :]
        return web.json_response({k: self._history_entry(k) for k in keys})

    async def _post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.history.clear()
        for pid in body.get("delete", []):
            self.history.pop(pid, None)
        return web.Response(status=200)

    # ------------------------------------------------------------------ files
    async def _view(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("filename", "")
        if not name or name.startswith("/") or ".." in name:
            return web.Response(status=400)
        kind = request.query.get("type", "output")
        sub = request.query.get("subfolder", "")
        data = self.uploads.get(name) if kind == "input" else self.files.get((kind, sub, name))
        if data is None:
            return web.Response(status=404)
        if self.view_html:
            return web.Response(
                text="<html><body>502 Bad Gateway</body></html>", content_type="text/html"
            )
        ctype = {
            ".mp4": "video/mp4",
            ".webm": "video/webm",
            ".webp": "image/webp",
            ".gif": "image/gif",
            ".png": "image/png",
        }.get(Path(name).suffix.lower(), "application/octet-stream")
        headers = {"Content-Disposition": f'filename="{name}"'}
        if self.truncate_view:
            resp = web.StreamResponse(headers={**headers, "Content-Type": ctype})
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.Response(body=data, headers={**headers, "Content-Type": ctype})

    async def _upload(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if image is None or not hasattr(image, "file") or not image.filename:
            return web.Response(status=400)
        name = image.filename
        data = image.file.read()
        overwrite = post.get("overwrite") in ("true", "1")
        if not overwrite and name in self.uploads and self.uploads[name] != data:
            stem, dot, ext = name.rpartition(".")
            i = 1
            while f"{stem} ({i}).{ext}" in self.uploads:
                i += 1
            name = f"{stem} ({i}).{ext}"
        self.uploads[name] = data
        return web.json_response(
            {
                "name": name,
                "subfolder": post.get("subfolder", ""),
                "type": post.get("type", "input"),
            }
        )

    async def _object_info_all(self, request: web.Request) -> web.Response:
        return web.json_response(self.object_info)

    async def _object_info_one(self, request: web.Request) -> web.Response:
        cls = request.match_info["node_class"]
        return web.json_response({cls: self.object_info[cls]} if cls in self.object_info else {})

    async def _system_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.system_stats)

    # ------------------------------------------------------------------ execution
    def _duration(self) -> float:
        if isinstance(self.job_seconds, tuple):
            return self.rng.uniform(*self.job_seconds)
        return float(self.job_seconds)

    async def _executor(self) -> None:
        assert self._wake is not None and self._thawed is not None
        while True:
            await self._thawed.wait()
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            item = heapq.heappop(self.queue)
            self.running = item
            self._interrupt = False
            await self._status()
            try:
                if self._replays:
                    await self._run_replay(item, *self._replays.pop(0))
                else:
                    await self._run(item)
            finally:
                if self.running is item:
                    self.running = None
            await self._status()
            client = item.extra.get("client_id")
            if client:
                await self._send("executing", {"node": None, "prompt_id": item.pid}, client)

    def _order(self, prompt: dict[str, Any]) -> list[str]:
        """Nodes in an order where every node comes after the nodes it links to."""
        done: list[str] = []
        seen: set[str] = set()

        def visit(nid: str) -> None:
            if nid in seen or nid not in prompt:
                return
            seen.add(nid)
            for v in prompt[nid].get("inputs", {}).values():
                if _is_link(v):
                    visit(v[0])
            done.append(nid)

        for nid in sorted(prompt, key=lambda n: (len(n), n)):
            visit(nid)
        return done

    async def _pause_point(self) -> bool:
        """Between nodes and sampler steps: wait while frozen; True when interrupted."""
        assert self._thawed is not None
        await self._thawed.wait()
        if self._interrupt:
            self._interrupt = False
            return True
        return False

    async def _run(self, item: _Item) -> None:
        pid, client = item.pid, item.extra.get("client_id")
        self.started[pid] += 1
        messages: list[list[Any]] = []

        async def say(kind: str, data: dict[str, Any], keep: bool = False) -> None:
            data = {**data, "prompt_id": pid} if kind != "progress_state" else data
            if keep:
                messages.append([kind, {**data, "timestamp": _now_ms()}])
                data = messages[-1][1]
            if client:
                await self._send(kind, data, client)

        await say("execution_start", {}, keep=True)
        await say("execution_cached", {"nodes": []}, keep=True)
        order = self._order(item.prompt)
        total = self._duration()
        samplers = [n for n in order if "sampler" in item.prompt[n]["class_type"].lower()]
        per_node = total / max(1, len(order)) if not samplers else 0.0
        states: dict[str, dict[str, Any]] = {}
        executed: list[str] = []
        outputs: dict[str, Any] = {}

        async def progress_state() -> None:
            await say("progress_state", {"prompt_id": pid, "nodes": copy.deepcopy(states)})

        for nid in order:
            node = item.prompt[nid]
            if await self._pause_point():
                self.interrupted[pid] += 1
                await say(
                    "execution_interrupted",
                    {"node_id": nid, "node_type": node["class_type"], "executed": executed},
                    keep=True,
                )
                self._finish(item, {}, "error", messages)
                return
            states[nid] = {
                "value": 0.0,
                "max": 1.0,
                "state": "running",
                "node_id": nid,
                "prompt_id": pid,
                "display_node_id": nid,
                "parent_node_id": None,
                "real_node_id": nid,
            }
            await progress_state()
            await say("executing", {"node": nid, "display_node": nid})
            bad = self._runtime_error(node)
            if bad is not None:
                await say(
                    "execution_error",
                    {
                        "node_id": nid,
                        "node_type": node["class_type"],
                        "executed": list(executed),
                        "exception_message": bad,
                        "exception_type": "ValueError",
                        "traceback": ['  File "COMFYUI/execution.py", line 496, in execute\n'],
                        "current_inputs": {},
                        "current_outputs": {},
                    },
                    keep=True,
                )
                self._finish(item, {}, "error", messages)
                return
            if nid in samplers:
                steps = max(1, self.progress_steps)
                for step in range(1, steps + 1):
                    await asyncio.sleep(total / len(samplers) / steps)
                    if await self._pause_point():
                        self._interrupt = True  # stop at the next node boundary
                        break
                    await say("progress", {"value": step, "max": steps, "node": nid})
            elif per_node:
                await asyncio.sleep(per_node)
            if nid in item.outputs:
                ui = self._write_output(node)
                outputs[nid] = ui
                # ComfyUI sends ``executed`` only for a node with UI output
                # (execution.py: ``if len(output_ui) > 0``)
                if not self.drop_outputs:
                    await say("executed", {"node": nid, "display_node": nid, "output": ui})
            executed.append(nid)
            states[nid].update(value=1.0, state="finished")
            await progress_state()
        await say("execution_success", {}, keep=True)
        self.executed[pid] += 1
        self._finish(item, outputs, "success", messages)

    def _runtime_error(self, node: dict[str, Any]) -> str | None:
        """A newer-style COMBO input with a value not among its options fails when run."""
        spec = self.object_info[node["class_type"]].get("input", {})
        for section in ("required", "optional"):
            for name, conf in spec.get(section, {}).items():
                value = node.get("inputs", {}).get(name)
                if (
                    conf
                    and conf[0] == "COMBO"
                    and len(conf) > 1
                    and isinstance(value, str)
                    and value not in conf[1].get("options", [value])
                ):
                    if node["class_type"] == "SaveVideo" and name == "format":
                        return f"'{value}' is not a valid VideoContainer\n"
                    return f"'{value}' is not a valid {name}\n"
        return None

    def _write_output(self, node: dict[str, Any]) -> dict[str, Any]:
        cls, inputs = node["class_type"], node.get("inputs", {})
        prefix = str(inputs.get("filename_prefix", "ComfyUI"))
        sub, _, base = prefix.rpartition("/")
        if cls == "VHS_VideoCombine":
            fmt = str(inputs.get("format", "video/h264-mp4"))
            ext = {"image/gif": ".gif", "image/webp": ".webp", "video/webm": ".webm"}.get(
                fmt, ".mp4"
            )
        else:
            ext = {"SaveWEBM": ".webm", "SaveAnimatedWEBP": ".webp", "SaveAnimatedPNG": ".png"}.get(
                cls, ".mp4" if "Video" in cls else ".png"
            )
        self._counters[f"file {sub}/{base}"] += 1
        name = f"{base}_{self._counters[f'file {sub}/{base}']:05d}_{ext}"
        self.files[("output", sub, name)] = _media(ext)
        item = {"filename": name, "subfolder": sub, "type": "output"}
        if cls == "VHS_VideoCombine":
            return {"gifs": [{**item, "format": fmt, "frame_rate": inputs.get("frame_rate", 8)}]}
        if ext == ".png" and cls != "SaveAnimatedPNG":
            return {"images": [item]}
        return {"images": [item], "animated": [True]}

    def _finish(
        self, item: _Item, outputs: dict[str, Any], status: str, messages: list[list[Any]]
    ) -> None:
        meta = {
            nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
            for nid in outputs
        }
        self.history[item.pid] = {
            "prompt": item.as_list(),
            "outputs": outputs,
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": messages,
            },
            "meta": meta,
        }

    async def _run_replay(
        self, item: _Item, frames: list[dict[str, Any]], history: dict[str, Any], speed: float
    ) -> None:
        recorded_pid, entry = next(iter(history.items()))
        client = item.extra.get("client_id")
        self.started[item.pid] += 1
        previous = None
        for frame in frames:
            if frame.get("kind") != "text" or frame["type"] == "feature_flags":
                continue
            if frame["type"] == "status" and "sid" in frame["data"]:
                continue  # sent when a client connects, not part of the job
            if frame["type"] == "executing" and frame["data"].get("node") is None:
                continue  # the executor sends it after the history is written, as ComfyUI
            if previous is not None:
                await asyncio.sleep(max(0.0, frame["t"] - previous) * speed)
            previous = frame["t"]
            data = json.loads(frame["raw"].replace(recorded_pid, item.pid))["data"]
            if frame["type"] == "status":
                await self._send("status", data)
            elif client:
                await self._send(frame["type"], data, client)
        entry = json.loads(json.dumps(entry).replace(recorded_pid, item.pid))
        entry["prompt"] = item.as_list()
        for out in entry.get("outputs", {}).values():
            for f in out.get("images", []) + out.get("gifs", []):
                ext = Path(f["filename"]).suffix.lower()
                self.files[(f.get("type", "output"), f.get("subfolder", ""), f["filename"])] = (
                    _media(ext)
                )
        if entry.get("status", {}).get("status_str") == "success":
            self.executed[item.pid] += 1
        self.history[item.pid] = entry
