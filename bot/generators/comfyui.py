"""ComfyUI: a community's own GPUs running open video models, one host or a pool of them.

The operator exports a workflow in API format (Wan 2.x, LTX-Video, HunyuanVideo...) and
names, in ``COMFYUI_INPUTS``, the node inputs crowdcut fills in (see
:mod:`bot.generators.comfyui_workflow`). Per job crowdcut:

1. chooses the ``prompt_id`` itself: the worker's ``idempotency_key``, a canonical UUID
   stored before anything is sent (newer ComfyUI servers require a canonical UUID). That
   id is the provider job id, so a crash mid-submit is resolved by :meth:`find`, which
   looks the id up in ``GET /queue`` and ``GET /history/{id}`` on every host;
2. picks the least-loaded live host under ``COMFYUI_PER_HOST_JOBS`` (load: the host's
   queue length from its websocket ``status`` frames, or ``GET /queue``);
3. uploads the reference image (``POST /upload/image``, multipart ``image``,
   ``type=input``, ``overwrite=true``) as ``crowdcut-<prompt_id>.png`` and writes that
   name into the image node; without an image (and ``COMFYUI_IMAGE_REQUIRED=false``) the
   image branch is cut out of the graph;
4. queues the graph (``POST /prompt`` with ``prompt``, ``client_id`` and ``prompt_id``),
   sent once (``create=True``): a lost answer is ``outcome_unknown``;
5. follows it on the host's websocket (frames filtered by ``prompt_id``; ``executing``
   with ``node: null`` ends a job after success, error and interrupt alike; while a
   prompt queued during the current websocket connection waits, it is looked up over
   HTTP only every ``RECHECK_SECONDS``, 10 s, since its start will come as a frame) and
   reads ``GET /history/{id}``, the truth once it ended: ``status_str`` ``success`` is done, an
   ``execution_error`` fails the job (``invalid_input`` for a bad option value, which
   newer-style nodes accept at submit and refuse when they run), an
   ``execution_interrupted`` after our cancel is canceled;
6. downloads the video output (``images`` with ``animated: [true]`` for core nodes,
   ``gifs`` for VideoHelperSuite) with ``GET /view?filename=&subfolder=&type=``, and
   converts webm / animated webp / gif to mp4 with ffmpeg. ``/view`` answering 404 means
   the file is gone from the output folder: ``output_expired``.

``cancel`` deletes a pending prompt (``POST /queue {"delete": [id]}``) or interrupts a
running one (``POST /interrupt {"prompt_id": id}``; ComfyUI stops between nodes).

**The pool** (``COMFYUI_URLS`` with several hosts). The rules, applied when the worker
polls a job (and when a host comes back):

- a host that stops answering (its websocket closes and ``/system_stats`` gets no answer)
  is marked **down**; it is put back as soon as ``/system_stats`` answers again;
- a job **still pending** on a down host is queued at once on the least-loaded live host,
  with the same prompt_id (and its image uploaded there);
- a job that was **running** on a down host is left alone for
  ``COMFYUI_RESUBMIT_GRACE_SECONDS``: if the host returns in time the job is simply
  polled there again; after the grace it is queued elsewhere. Never both: the moment a
  job is queued elsewhere, the old host is remembered as *stale* for it;
- when a stale host comes back, whatever is left of the job there is deleted (pending)
  or interrupted (running). If the old host had already **finished** the job
  successfully, that result is kept and the newer copy is canceled instead;
- a job that is gone from a live host (the ComfyUI process restarted and lost its
  in-memory queue) is queued again, on the least-loaded live host;
- after crowdcut itself restarts, nothing of the above is kept on our side but the
  prompt ids the worker stored: a job polled for the first time is looked up on every
  host (its graph read back from ``/queue``, its image from ``/view?type=input``).

So a community grows past one GPU box by adding hosts to ``COMFYUI_URLS``; nothing else
changes. These are our own GPUs, so a job queued twice costs time, not money; even so a
job is generated to the end only once, except when a host that crowdcut cannot reach
keeps working (a network split) and finishes a job that was moved away meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.errors import ConfigError, GeneratorError, GeneratorErrorKind, MediaError
from bot.generators.base import (
    ASPECTS,
    Capabilities,
    GenerationRequest,
    GeneratorBase,
    JobState,
    JobStatus,
    get_setting,
)
from bot.generators.comfyui_pool import Host, Pool, PoolJob, host_label
from bot.generators.comfyui_workflow import (
    OutputFile,
    Workflow,
    frames_for,
    load_workflow,
    node_errors_message,
    parse_inputs,
    parse_sizes,
    sizes_for_aspects,
    video_outputs,
)
from bot.generators.http import ProviderHTTP, RetryPolicy, sniff_video
from bot.media.ffmpeg import resolve_ffmpeg, run_ffmpeg

log = logging.getLogger(__name__)

K = GeneratorErrorKind

_UUID_NAMESPACE = uuid.UUID("6f1d3c1e-6a4e-4c35-9a59-3f0d1f4f2c11")


def prompt_id_for(key: str | None) -> str:
    """The ComfyUI prompt_id of a submission: its ``idempotency_key`` when that is a UUID
    (in canonical form), a UUID derived from it otherwise, a fresh one when there is none."""
    if not key:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(key))
    except ValueError:
        return str(uuid.uuid5(_UUID_NAMESPACE, key))


def _classify_prompt_error(status: int, body: Any, headers: Mapping[str, str]) -> Any:
    """``POST /prompt`` 400s carry ``error`` and ``node_errors``: say which node and why."""
    if status != 400:
        return None
    import json

    try:
        parsed = json.loads(body) if isinstance(body, bytes | str) else body
    except ValueError:
        return None
    message = node_errors_message(parsed)
    if not message:
        return None
    return GeneratorError(K.INVALID_INPUT, f"comfyui HTTP 400 (invalid input): {message}")


class ComfyUIGenerator(GeneratorBase):
    """Jobs on one or more ComfyUI servers (see the module docstring for the rules)."""

    name = "comfyui"
    charges_failures = False

    def __init__(
        self,
        urls: Sequence[str],
        workflow: Workflow,
        *,
        model: str = "ComfyUI workflow",
        fps: float | None = None,
        frame_step: int = 1,
        min_seconds: float = 1.0,
        max_seconds: float = 5.0,
        durations: Sequence[float] = (),
        sizes: Mapping[str, tuple[int, int]] | None = None,
        negative_prompt: str = "",
        image_required: bool = True,
        per_host_jobs: int = 1,
        resubmit_grace: float = 300.0,
        token: str = "",
        policy: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        health_seconds: float = 2.0,
        probe_timeout: float | None = None,
        ffmpeg_binary: str | None = None,
        max_prompt_chars: int = 2000,
        client_id: str | None = None,
    ) -> None:
        if not urls:
            raise ConfigError("COMFYUI_URLS: give at least one ComfyUI base URL")
        self.workflow = workflow
        self.model = model
        self.fps = float(fps or workflow.own_fps() or 24.0)
        self.frame_step = max(1, int(frame_step))
        self.negative_prompt = negative_prompt
        self.client_id = client_id or uuid.uuid4().hex
        self._ffmpeg_setting = ffmpeg_binary
        self.policy = policy or RetryPolicy()
        own = workflow.own_size()
        if sizes:
            self.sizes = dict(sizes)
        elif own:
            self.sizes = sizes_for_aspects(*own, ASPECTS)
            self.sizes[_aspect_of(*own)] = own
        else:
            self.sizes = {}
        has_image = workflow.image_node is not None
        self.image_required = has_image and image_required
        natural = max(durations) if durations else max_seconds
        self.capabilities = Capabilities(
            durations=tuple(sorted(float(d) for d in durations)),
            min_seconds=float(min_seconds),
            max_seconds=float(max(durations) if durations else max_seconds),
            fps=self.fps if "frames" in workflow.refs else None,
            aspects=ASPECTS,
            image_input=has_image,
            image_required=self.image_required,
            max_prompt_chars=max_prompt_chars,
            natural_seconds=float(natural),
        )
        self.clip_seconds = self.capabilities.natural_seconds
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        clients = [
            (
                url,
                ProviderHTTP(
                    f"comfyui {host_label(url)}",
                    base_url=url,
                    headers=headers,
                    secrets=[token, *_url_secrets(url)],
                    policy=self.policy,
                    session=session,
                    classify=_classify_prompt_error,
                ),
            )
            for url in urls
        ]
        self.pool = Pool(
            clients,
            client_id=self.client_id,
            per_host_jobs=per_host_jobs,
            resubmit_grace=resubmit_grace,
            health_seconds=health_seconds,
            probe_timeout=probe_timeout or min(5.0, self.policy.timeout),
            image_node=workflow.image_node,
        )
        self.hosts = self.pool.hosts
        self._jobs = self.pool.jobs
        self.max_concurrency = len(self.hosts) * self.pool.per_host_jobs

    @property
    def per_host_jobs(self) -> int:
        return self.pool.per_host_jobs

    # ------------------------------------------------------------------ lifecycle
    def _start(self) -> None:
        self.pool.start()

    async def aclose(self) -> None:
        await self.pool.aclose()
        for host in self.hosts:
            await host.http.aclose()

    # ------------------------------------------------------------------ submit
    def _values(self, request: GenerationRequest, image_name: str | None) -> dict[str, Any]:
        size = self.sizes.get(request.aspect)
        return {
            "prompt": request.prompt,
            "negative": self.negative_prompt or None,  # None: the workflow's own
            "seed": int(request.seed) % (2**32),
            "frames": frames_for(request.duration, self.fps, self.frame_step),
            "seconds": float(request.duration),
            "width": size[0] if size else None,
            "height": size[1] if size else None,
            "fps": self.fps,
            "image": image_name,
        }

    async def _object_info(self, host: Host) -> dict[str, Any]:
        if self.workflow.object_info is None:
            body = await host.http.get_json("/object_info")
            if not isinstance(body, Mapping):
                raise host.http.error(K.MALFORMED, "GET /object_info: not an object")
            self.workflow.object_info = dict(body)
        return self.workflow.object_info

    async def _graph_for(
        self, request: GenerationRequest, pid: str, host: Host
    ) -> tuple[dict[str, Any], str | None]:
        image_name = None
        drop = False
        if self.workflow.image_node:
            if request.image is not None:
                image_name = f"crowdcut-{pid}.png"
            elif self.image_required:
                raise GeneratorError(
                    K.INVALID_INPUT, "this ComfyUI workflow needs a reference image"
                )
            else:
                drop = True
                await self._object_info(host)
        try:
            graph = self.workflow.build(self._values(request, image_name), drop_image=drop)
        except ValueError as e:
            raise GeneratorError(K.INVALID_INPUT, f"comfyui: {e}") from None
        return graph, image_name

    async def submit(self, request: GenerationRequest) -> str:
        self._start()
        self.pool.prune()
        pid = prompt_id_for(request.idempotency_key)
        known = self._jobs.get(pid)
        if known is not None and known.final is None:
            return pid  # the same submission again: it is queued already
        live = self.pool.live()
        if not live:
            raise GeneratorError(K.UNAVAILABLE, "comfyui: no host answers", retry_after=5.0)
        candidates = self.pool.choose()
        if not candidates:
            raise GeneratorError(
                K.RATE_LIMITED,
                f"comfyui: every host has {self.per_host_jobs} job(s) of ours",
                retry_after=1.0,
            )
        last: GeneratorError | None = None
        for host in candidates:
            graph, image_name = await self._graph_for(request, pid, host)
            job = PoolJob(
                pid,
                host,
                graph=graph,
                image=request.image if image_name else None,
                image_name=image_name,
                nodes=len(graph),
            )
            self._jobs[pid] = job
            self.pool.assign(job, host)
            try:
                await self.pool.queue_on(host, job)
                log.info("comfyui: queued %s on %s", pid, host.label)
                return pid
            except GeneratorError as e:
                if e.kind == K.OUTCOME_UNKNOWN:
                    raise  # the record stays: find() and poll() look on this host first
                host.active.discard(pid)
                del self._jobs[pid]
                last = e
                if e.kind not in (K.UNAVAILABLE, K.RATE_LIMITED):
                    raise
                await host.check_alive()
        raise last or GeneratorError(K.UNAVAILABLE, "comfyui: no host took the job")

    async def find(self, request: GenerationRequest, *, since: float) -> str | None:
        if not request.idempotency_key:
            return await super().find(request, since=since)
        self._start()
        pid = prompt_id_for(request.idempotency_key)
        job = await self.pool.locate(pid)
        return pid if job is not None else None

    # ------------------------------------------------------------------ poll
    # ------------------------------------------------------------------ poll
    async def poll(self, job_id: str) -> JobStatus:
        self._start()
        job = self._jobs.get(job_id) or await self.pool.locate(job_id)
        if job is None:
            return JobStatus(
                JobState.FAILED,
                error=GeneratorError(
                    K.UNKNOWN,
                    f"comfyui: no host has job {job_id} (a ComfyUI restart loses its queue)",
                ),
            )
        return await self.pool.refresh(job)

    async def wait(self, job_id: str, timeout: float) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.final is not None:
            await asyncio.sleep(0 if job is not None else timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.event.wait(), timeout)

    # ------------------------------------------------------------------ cancel
    # ------------------------------------------------------------------ cancel
    async def cancel(self, job_id: str) -> None:
        self._start()
        job = self._jobs.get(job_id) or await self.pool.locate(job_id)
        if job is not None:
            await self.pool.cancel(job)

    # ------------------------------------------------------------------ download
    async def download(self, job_id: str, dest: Path) -> Path:
        self._start()
        job = self._jobs.get(job_id)
        if job is None or job.final is None:
            status = await self.poll(job_id)
            job = self._jobs.get(job_id)
            if status.state != JobState.DONE or job is None:
                raise GeneratorError(K.UNKNOWN, f"comfyui: job {job_id} is not done")
        if job.final is None or job.final.state != JobState.DONE:
            raise GeneratorError(K.UNKNOWN, f"comfyui: job {job_id} is not done")
        files = video_outputs(job.outputs)
        if not files:
            # forget it, so that the poll that follows reads the history again
            self._jobs.pop(job_id, None)
            job.host.active.discard(job_id)
            raise GeneratorError(
                K.OUTPUT_EXPIRED, f"comfyui {job.host.label}: the job's history lists no video"
            )
        return await self._fetch(job, files[0], dest)

    async def _fetch(self, job: PoolJob, out: OutputFile, dest: Path) -> Path:
        host = job.host
        query = urlencode({"filename": out.filename, "subfolder": out.subfolder, "type": out.type})
        src = dest.with_name(f".{dest.stem}.source{out.ext or '.bin'}")
        try:
            await host.http.download(f"/view?{query}", src, auth=True)
        except GeneratorError as e:
            if e.kind == K.OUTPUT_EXPIRED:
                self._jobs.pop(job.pid, None)  # the next poll reads the history again
            if e.kind == K.UNAVAILABLE:
                await host.check_alive()
            raise
        try:
            with open(src, "rb") as f:
                container = sniff_video(f.read(16))
            if container == "mp4" and out.ext in (".mp4", ".mov", ""):
                src.replace(dest)
                return dest
            await self._to_mp4(src, dest)
            return dest
        finally:
            src.unlink(missing_ok=True)

    async def _to_mp4(self, src: Path, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.stem}.converting.mp4")
        args = [
            "-i",
            str(src),
            "-map",
            "0:v:0",
            "-map",
            "0:a?",
            "-vf",
            "scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "18",
            "-c:a",
            "aac",
            "-movflags",
            "+faststart",
            str(tmp),
        ]
        try:
            binary = resolve_ffmpeg(self._ffmpeg_setting or None)
            await run_ffmpeg(args, binary=binary, timeout=600)
        except (MediaError, ConfigError) as e:
            tmp.unlink(missing_ok=True)
            raise GeneratorError(
                K.NOT_VIDEO, f"comfyui: the output could not be converted to mp4 ({e})"[:400]
            ) from None
        tmp.replace(dest)

    # ------------------------------------------------------------------ check
    async def check(self) -> str:
        self._start()
        answers = await asyncio.gather(*(h.probe() for h in self.hosts))
        up = [h for h, ok in zip(self.hosts, answers, strict=True) if ok]
        down = [h for h, ok in zip(self.hosts, answers, strict=True) if not ok]
        if not up:
            raise GeneratorError(
                K.UNAVAILABLE,
                "comfyui: no host answers GET /system_stats: "
                + ", ".join(h.label for h in self.hosts),
            )
        for host in up:
            body = await host.http.get_json("/object_info")
            if not isinstance(body, Mapping):
                raise host.http.error(K.MALFORMED, "GET /object_info: not an object")
            problems = self.workflow.problems(body, image_required=self.image_required)
            if problems:
                where = f" (on {host.label})" if len(self.hosts) > 1 else ""
                raise ConfigError(problems[0] + where)
            self.workflow.object_info = dict(body)
        versions = sorted({h.version or "?" for h in up})
        line = (
            f"comfyui: {self.model}; {len(up)} of {len(self.hosts)} host(s) up "
            f"(ComfyUI {', '.join(versions)}); workflow {self.workflow.name} fits"
        )
        if down:
            line += f"; down: {', '.join(h.label for h in down)}"
        return line


# ---------------------------------------------------------------------------- settings


def _url_secrets(url: str) -> list[str]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return [s for s in (parts.password, parts.username) if s]


def _aspect_of(w: int, h: int) -> str:
    best = min(ASPECTS, key=lambda a: abs(int(a.split(":")[0]) / int(a.split(":")[1]) - w / h))
    return best


def _floats(text: str, setting: str) -> list[float]:
    out = []
    for part in re.split(r"[,\s]+", (text or "").strip()):
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise ConfigError(f"{setting}={text!r} is not valid: expected numbers") from None
    return out


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def from_settings(settings: Mapping[str, Any] | object) -> ComfyUIGenerator:
    """Build the ComfyUI backend from ``COMFYUI_*`` settings (see ``docs/generators.md``)."""
    urls = [
        u.strip()
        for u in str(get_setting(settings, "comfyui_urls", "http://127.0.0.1:8188")).split(",")
        if u.strip()
    ]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"COMFYUI_URLS: {host_label(url)!r} must start with http:// or https://"
            )
    path = get_setting(settings, "comfyui_workflow", "")
    if not path:
        raise ConfigError(
            "COMFYUI_WORKFLOW is empty: set it to an API-format workflow file "
            "(see docs/workflows/ and docs/generators.md)"
        )
    refs = parse_inputs(str(get_setting(settings, "comfyui_inputs", "")))
    if "prompt" not in refs:
        raise ConfigError("COMFYUI_INPUTS: name the prompt's node input, e.g. prompt=6.text")
    workflow = Workflow(load_workflow(path), refs, name=Path(str(path)).name)
    fps = float(get_setting(settings, "comfyui_fps", 0.0) or 0.0)
    return ComfyUIGenerator(
        urls,
        workflow,
        model=str(get_setting(settings, "comfyui_model", "") or "ComfyUI workflow"),
        fps=fps or None,
        frame_step=int(get_setting(settings, "comfyui_frame_step", 1)),
        min_seconds=float(get_setting(settings, "comfyui_min_seconds", 1.0)),
        max_seconds=float(get_setting(settings, "comfyui_max_seconds", 5.0)),
        durations=_floats(str(get_setting(settings, "comfyui_durations", "")), "COMFYUI_DURATIONS"),
        sizes=parse_sizes(str(get_setting(settings, "comfyui_sizes", ""))),
        negative_prompt=str(get_setting(settings, "comfyui_negative_prompt", "")),
        image_required=_truthy(get_setting(settings, "comfyui_image_required", True)),
        per_host_jobs=int(get_setting(settings, "comfyui_per_host_jobs", 1)),
        resubmit_grace=float(get_setting(settings, "comfyui_resubmit_grace_seconds", 300.0)),
        token=str(get_setting(settings, "comfyui_token", "") or ""),
        ffmpeg_binary=str(get_setting(settings, "ffmpeg_binary", "") or "") or None,
        max_prompt_chars=int(get_setting(settings, "prompt_max_chars", 2000)),
    )


__all__ = ["ComfyUIGenerator", "from_settings", "prompt_id_for"]
