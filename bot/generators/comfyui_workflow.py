"""ComfyUI workflows as data: load an API-format graph, fill in a request, read results.

Pure functions only (no network), used by :mod:`bot.generators.comfyui`:

- :func:`load_workflow` reads the operator's API-format export (``Export (API)`` in
  ComfyUI's menu: a JSON object ``{node_id: {"class_type": ..., "inputs": {...}}}``) and
  refuses the UI format (``{"nodes": [...], "links": [...]}``) with a message that says so;
- :func:`parse_inputs` reads ``COMFYUI_INPUTS`` (``prompt=6.text,seed=3.seed,...``): which
  node input receives which value crowdcut fills in;
- :class:`Workflow` checks those against the graph and, at start-up, against the server's
  ``GET /object_info`` (:meth:`Workflow.problems`), builds the graph of one request
  (:meth:`Workflow.build`), and can drop the reference-image branch for a text-only
  request when every node it feeds takes the image on an optional input
  (:func:`without_node`);
- :func:`video_outputs` finds the video files in a ``GET /history/{id}`` entry: core nodes
  list them under ``images`` with ``"animated": [true]``, VideoHelperSuite's
  ``VHS_VideoCombine`` under ``gifs``;
- :func:`history_failure` turns an ``execution_error`` / ``execution_interrupted`` message
  of a history entry into a short message without paths or tracebacks.

The shapes are those of ComfyUI 0.3.64 (``server.py``, ``execution.py``), as recorded in
``shared/comfyui/``.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import ConfigError, GeneratorErrorKind

#: what crowdcut can write into a workflow, and what each value is
INPUT_NAMES: Mapping[str, str] = {
    "prompt": "the member's prompt (a text input, e.g. CLIPTextEncode.text)",
    "negative": "COMFYUI_NEGATIVE_PROMPT (a text input)",
    "seed": "the job's seed (e.g. KSampler.seed, RandomNoise.noise_seed)",
    "frames": "the clip length in frames at COMFYUI_FPS (e.g. EmptyLTXVLatentVideo.length)",
    "seconds": "the clip length in seconds (for nodes that take seconds)",
    "width": "the width for the job's aspect ratio",
    "height": "the height for the job's aspect ratio",
    "fps": "COMFYUI_FPS (e.g. CreateVideo.fps)",
    "image": "the uploaded reference image's file name (LoadImage.image)",
}

#: nodes whose ``fps`` / ``frame_rate`` input tells the rate a workflow renders at
_FPS_INPUTS = ("fps", "frame_rate")

#: output keys under which ComfyUI nodes list files; videos first
_VIDEO_EXTS = {".mp4": 0, ".mov": 1, ".mkv": 2, ".webm": 3, ".gif": 5, ".webp": 6}
_PATH_RE = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.\-~ ]+){2,}")


@dataclass(frozen=True)
class InputRef:
    """One node input crowdcut writes: ``node`` id and ``input`` name."""

    node: str
    input: str

    def __str__(self) -> str:
        return f"{self.node}.{self.input}"


def parse_inputs(text: str, *, setting: str = "COMFYUI_INPUTS") -> dict[str, list[InputRef]]:
    """``prompt=6.text,seed=3.seed,seed=57.noise_seed`` -> ``{"prompt": [6.text], ...}``.

    A name may be given more than once (two samplers that take the same seed). Raises
    :class:`ConfigError` naming the bad entry.
    """
    out: dict[str, list[InputRef]] = {}
    for raw in (text or "").replace("\n", ",").split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, target = entry.partition("=")
        name = name.strip().lower()
        node, dot, inp = target.strip().partition(".")
        if not sep or not dot or not node.strip() or not inp.strip():
            raise ConfigError(
                f"{setting}: {entry!r} is not valid: expected name=node_id.input_name, "
                "e.g. prompt=6.text"
            )
        if name not in INPUT_NAMES:
            raise ConfigError(
                f"{setting}: {name!r} is not a value crowdcut fills in: allowed names are "
                f"{', '.join(INPUT_NAMES)}"
            )
        out.setdefault(name, []).append(InputRef(node.strip(), inp.strip()))
    if "frames" in out and "seconds" in out:
        raise ConfigError(f"{setting}: give the length as frames or as seconds, not both")
    return out


def load_workflow(path: Path | str, *, setting: str = "COMFYUI_WORKFLOW") -> dict[str, Any]:
    """Read an API-format workflow file. Raises :class:`ConfigError` saying what is wrong."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{setting}={str(path)!r}: no such file") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{setting}={str(path)!r} is not readable JSON: {e}") from None
    return check_api_format(data, setting=f"{setting}={str(path)!r}")


def check_api_format(data: Any, *, setting: str = "COMFYUI_WORKFLOW") -> dict[str, Any]:
    """The graph if ``data`` is an API-format workflow; :class:`ConfigError` otherwise."""
    if isinstance(data, Mapping) and "nodes" in data and "links" in data:
        raise ConfigError(
            f"{setting} is a UI-format workflow; crowdcut needs the API format: in ComfyUI "
            "use Workflow > Export (API)"
        )
    if isinstance(data, Mapping) and isinstance(data.get("prompt"), Mapping):
        data = data["prompt"]  # a saved POST /prompt body
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{setting} is not an API-format workflow (a JSON object of nodes)")
    for node_id, node in data.items():
        if (
            not isinstance(node, Mapping)
            or not isinstance(node.get("class_type"), str)
            or not isinstance(node.get("inputs", {}), Mapping)
        ):
            raise ConfigError(
                f"{setting}: node {node_id!r} has no class_type/inputs; is this an API-format "
                "export?"
            )
    return {str(k): dict(v) for k, v in data.items()}


def is_link(value: Any) -> bool:
    """A node input that is a link ``[node_id, output_index]`` rather than a value."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def frames_for(seconds: float, fps: float, step: int = 1) -> int:
    """Frames for ``seconds`` at ``fps``: at least that many, and of the form ``step*k + 1``
    when ``step > 1`` (Wan wants 4k+1 frames, LTX-Video 8k+1)."""
    frames = max(1, math.ceil(seconds * fps - 1e-6))
    if step > 1:
        k = max(0, math.ceil((frames - 1) / step - 1e-9))
        frames = step * k + 1
    return frames


def sizes_for_aspects(
    width: int, height: int, aspects: Iterable[str], multiple: int = 32
) -> dict[str, tuple[int, int]]:
    """Sizes of about the same area as ``width`` x ``height`` for each aspect ratio,
    in multiples of ``multiple`` (what video latents need)."""
    area = width * height
    out = {}
    for aspect in aspects:
        a, _, b = aspect.partition(":")
        ratio = float(a) / float(b)
        w = math.sqrt(area * ratio)
        h = w / ratio
        out[aspect] = (
            max(multiple, round(w / multiple) * multiple),
            max(multiple, round(h / multiple) * multiple),
        )
    return out


def parse_sizes(text: str, *, setting: str = "COMFYUI_SIZES") -> dict[str, tuple[int, int]]:
    """``16:9=1280x704,9:16=704x1280`` -> ``{"16:9": (1280, 704), ...}``."""
    out: dict[str, tuple[int, int]] = {}
    for raw in (text or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        m = re.fullmatch(r"(\d+:\d+)\s*=\s*(\d+)\s*[xX]\s*(\d+)", entry)
        if not m:
            raise ConfigError(
                f"{setting}: {entry!r} is not valid: expected aspect=WIDTHxHEIGHT, "
                "e.g. 16:9=1280x704"
            )
        out[m[1]] = (int(m[2]), int(m[3]))
    return out


def _all_inputs(info: Mapping[str, Any]) -> dict[str, str]:
    """input name -> "required" | "optional" | "hidden" for one ``/object_info`` entry."""
    out: dict[str, str] = {}
    spec = info.get("input") if isinstance(info, Mapping) else None
    if isinstance(spec, Mapping):
        for section in ("required", "optional", "hidden"):
            names = spec.get(section)
            if isinstance(names, Mapping):
                for name in names:
                    out.setdefault(str(name), section)
    return out


def without_node(
    graph: Mapping[str, Any], node_id: str, object_info: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``graph`` without ``node_id``: each input linked to a removed node is dropped when
    the server says that input is optional, and its node is removed too otherwise.

    Raises ``ValueError`` when no output node would be left (the image is needed).
    """
    out = copy.deepcopy(dict(graph))
    removed = {node_id}
    out.pop(node_id, None)
    changed = True
    while changed:
        changed = False
        for nid, node in list(out.items()):
            inputs = node.get("inputs", {})
            kinds = _all_inputs((object_info or {}).get(node.get("class_type"), {}))
            for name, value in list(inputs.items()):
                if is_link(value) and value[0] in removed:
                    if kinds.get(name) == "optional":
                        del inputs[name]
                    else:
                        removed.add(nid)
                        del out[nid]
                        changed = True
                        break
    outputs = [
        nid
        for nid, node in out.items()
        if (object_info or {}).get(node.get("class_type"), {}).get("output_node")
    ]
    if not outputs:
        raise ValueError("no output node is left without the image")
    return out


@dataclass
class Workflow:
    """An operator's workflow and where crowdcut writes each value into it."""

    graph: dict[str, Any]
    refs: dict[str, list[InputRef]]
    name: str = "workflow"
    #: cached ``/object_info`` (set by the first check), for text-only pruning
    object_info: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name, refs in self.refs.items():
            for ref in refs:
                if ref.node not in self.graph:
                    raise ConfigError(
                        f"COMFYUI_INPUTS: {name}={ref} names node {ref.node}, which is not in "
                        f"the workflow {self.name} (its nodes: {', '.join(sorted(self.graph))})"
                    )
                current = self.graph[ref.node].get("inputs", {}).get(ref.input)
                if is_link(current):
                    raise ConfigError(
                        f"COMFYUI_INPUTS: {name}={ref}: that input is linked to node "
                        f"{current[0]} in the workflow; name the node that holds the value"
                    )

    # ------------------------------------------------------------------ facts
    @property
    def image_node(self) -> str | None:
        refs = self.refs.get("image")
        return refs[0].node if refs else None

    def value(self, name: str) -> Any:
        """The workflow's own value of the first input named ``name`` (or ``None``)."""
        refs = self.refs.get(name)
        if not refs:
            return None
        return self.graph[refs[0].node].get("inputs", {}).get(refs[0].input)

    def own_fps(self) -> float | None:
        """The frame rate the workflow renders at, read from the graph."""
        value = self.value("fps")
        if isinstance(value, int | float) and value > 0:
            return float(value)
        for node in self.graph.values():
            for key in _FPS_INPUTS:
                v = node.get("inputs", {}).get(key)
                if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
                    return float(v)
        return None

    def own_size(self) -> tuple[int, int] | None:
        w, h = self.value("width"), self.value("height")
        if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
            return w, h
        return None

    # ------------------------------------------------------------------ checks
    def problems(self, object_info: Mapping[str, Any], *, image_required: bool = True) -> list[str]:
        """What does not fit the server's ``/object_info``; empty when all is well."""
        out: list[str] = []
        for nid, node in sorted(self.graph.items()):
            cls = node.get("class_type")
            if cls not in object_info:
                out.append(
                    f"COMFYUI_WORKFLOW: node {nid} is a {cls}, which this ComfyUI server does "
                    "not have (a custom node that is not installed?)"
                )
        for name, refs in self.refs.items():
            for ref in refs:
                cls = self.graph[ref.node].get("class_type")
                info = object_info.get(cls)
                if info is None:
                    continue
                if ref.input not in _all_inputs(info):
                    known = ", ".join(sorted(_all_inputs(info))) or "none"
                    out.append(
                        f"COMFYUI_INPUTS: node {ref.node} ({cls}) has no input "
                        f"{ref.input!r} (for {name}; its inputs: {known})"
                    )
        if not any(
            object_info.get(n.get("class_type"), {}).get("output_node") for n in self.graph.values()
        ):
            out.append("COMFYUI_WORKFLOW: the workflow has no output node (SaveVideo, ...)")
        if self.image_node and not image_required and not out:
            try:
                without_node(self.graph, self.image_node, object_info)
            except ValueError:
                out.append(
                    f"COMFYUI_IMAGE_REQUIRED=false, but node {self.image_node}'s image feeds a "
                    "required input: the workflow cannot run without a reference image"
                )
        return out

    # ------------------------------------------------------------------ build
    def build(self, values: Mapping[str, Any], *, drop_image: bool = False) -> dict[str, Any]:
        """A copy of the graph with ``values`` (by input name) written in. Names without a
        value are left as the workflow has them. ``drop_image`` removes the image branch."""
        graph = copy.deepcopy(self.graph)
        for name, refs in self.refs.items():
            if name not in values or values[name] is None:
                continue
            for ref in refs:
                graph[ref.node].setdefault("inputs", {})[ref.input] = values[name]
        if drop_image and self.image_node:
            graph = without_node(graph, self.image_node, self.object_info)
        return graph


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class OutputFile:
    """A file a node wrote, as ``GET /view`` wants it named."""

    filename: str
    subfolder: str = ""
    type: str = "output"
    node: str = ""

    @property
    def ext(self) -> str:
        return Path(self.filename).suffix.lower()


def video_outputs(outputs: Any) -> list[OutputFile]:
    """The video files of a history entry's ``outputs``, best first: mp4 before webm before
    animated webp/gif, ``output`` files before ``temp`` previews."""
    found: list[tuple[tuple[int, int, str], OutputFile]] = []
    if not isinstance(outputs, Mapping):
        return []
    for nid, out in outputs.items():
        if not isinstance(out, Mapping):
            continue
        animated = out.get("animated")
        is_animated = isinstance(animated, list) and any(a is True for a in animated)
        for key in ("gifs", "videos", "video", "images"):
            items = out.get(key)
            if not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, Mapping) or not isinstance(item.get("filename"), str):
                    continue
                f = OutputFile(
                    filename=item["filename"],
                    subfolder=str(item.get("subfolder") or ""),
                    type=str(item.get("type") or "output"),
                    node=str(nid),
                )
                rank = _VIDEO_EXTS.get(f.ext)
                if rank is None:
                    continue
                if key == "images" and not is_animated and f.ext in (".gif", ".webp"):
                    continue  # a still image
                temp = 0 if f.type == "output" else 1
                found.append(((temp, rank, f"{int(nid) if str(nid).isdigit() else 0:09d}"), f))
    found.sort(key=lambda x: x[0])
    return [f for _, f in found]


_RUNTIME_INPUT_RE = re.compile(
    r"not a valid|invalid|not in (?:the )?list|must be|out of range|unsupported|"
    r"value not in|expected .* got|not allowed",
    re.IGNORECASE,
)


def scrub(text: str) -> str:
    """``text`` without file-system paths (ComfyUI's messages carry its install path)."""
    return _PATH_RE.sub("[path]", text)


def history_failure(entry: Mapping[str, Any]) -> tuple[str, GeneratorErrorKind, str]:
    """Why a history entry with ``status_str == "error"`` failed: ``(event, kind, message)``.

    ``event`` is ``execution_interrupted``, ``execution_error`` or ``unknown``. A run-time
    error that reads like a bad option value (a newer-style node accepts it at submit and
    fails when it runs) is ``invalid_input``; anything else ``unknown``.
    """
    status = entry.get("status") if isinstance(entry, Mapping) else None
    messages = status.get("messages") if isinstance(status, Mapping) else None
    for msg in messages if isinstance(messages, list) else []:
        if not (isinstance(msg, list | tuple) and len(msg) == 2 and isinstance(msg[1], Mapping)):
            continue
        event, data = msg
        where = f"node {data.get('node_id', '?')} ({data.get('node_type', '?')})"
        if event == "execution_interrupted":
            return event, GeneratorErrorKind.UNKNOWN, f"interrupted at {where}"
        if event == "execution_error":
            etype = str(data.get("exception_type") or "error")
            first = str(data.get("exception_message") or "").strip().splitlines()
            text = scrub(first[0] if first else "")[:200]
            kind = (
                GeneratorErrorKind.INVALID_INPUT
                if _RUNTIME_INPUT_RE.search(text)
                and etype.rsplit(".", 1)[-1] in ("ValueError", "KeyError", "TypeError")
                else GeneratorErrorKind.UNKNOWN
            )
            return event, kind, f"{where} failed: {etype.rsplit('.', 1)[-1]}: {text}"
    return "unknown", GeneratorErrorKind.UNKNOWN, "the workflow ended with an error"


def node_errors_message(body: Any) -> str | None:
    """A short message from a ``POST /prompt`` 400 answer (``error`` and ``node_errors``)."""
    if not isinstance(body, Mapping):
        return None
    parts: list[str] = []
    err = body.get("error")
    if isinstance(err, Mapping) and err.get("message"):
        head = str(err["message"])
        if err.get("details"):
            head += f" ({err['details']})"
        parts.append(head)
    nodes = body.get("node_errors")
    if isinstance(nodes, Mapping):
        for nid, ne in list(nodes.items())[:3]:
            if not isinstance(ne, Mapping):
                continue
            errs = ne.get("errors") if isinstance(ne.get("errors"), list) else []
            texts = [
                f"{e.get('message', '')}: {e.get('details', '')}".strip(": ")
                for e in errs[:3]
                if isinstance(e, Mapping)
            ]
            parts.append(f"node {nid} ({ne.get('class_type', '?')}): {'; '.join(texts)}")
    return scrub("; ".join(parts))[:400] if parts else None
