"""Typed settings, read from the environment and an optional ``.env`` file.

Every setting is declared once, below, with its type, default and help text;
``.env.example`` documents the same list (a test keeps the two in step). The
environment wins over ``.env``. A bad value stops start-up with a
``ConfigError`` that names the setting and says what is allowed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import ConfigError

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    secret: bool = False,
) -> Any:
    return field(
        default=default,
        metadata={"help": help, "choices": choices, "minimum": minimum, "secret": secret},
    )


@dataclass(frozen=True, repr=False)
class Settings:
    """All of crowdcut's configuration. Field names are the upper-cased env names."""

    # --- Discord ---
    discord_token: str = _setting(
        "",
        "The bot's token from the Discord developer portal. Needed by `crowdcut run`.",
        secret=True,
    )
    discord_api_base: str = _setting(
        "https://discord.com/api/v10",
        "REST base URL (a REST proxy in front of Discord, or the emulator).",
    )
    discord_gateway_url: str = _setting(
        "", "Gateway websocket URL; empty asks the REST API (GET /gateway/bot) as Discord intends."
    )
    command_prefix: str = _setting(
        "!", "Prefix for the typed form of commands (e.g. `!prompt a cat` with an image attached)."
    )
    moderator_role: str = _setting(
        "Moderator",
        "Name or id of the role whose members are "
        "moderators (Manage Server permission also counts).",
    )
    moderation_channel: str = _setting(
        "moderators",
        "Name or id of the channel where prompts wait for approval when PREMODERATION is on.",
    )
    premoderation: bool = _setting(
        False, "Hold every new prompt for a moderator's Approve / Reject before it is generated."
    )
    vote_up_emoji: str = _setting("👍", "Reaction that counts as an up vote.")
    vote_down_emoji: str = _setting("👎", "Reaction that counts as a down vote.")
    count_self_votes: bool = _setting(False, "Count a member's vote on their own clip.")
    count_bot_votes: bool = _setting(False, "Count votes from bot accounts.")
    status_edit_seconds: float = _setting(
        3.0, "Least time between two edits of a job's status message.", minimum=0.0
    )

    # --- storage ---
    data_dir: Path = _setting(Path("data"), "Where the database, media and renders live.")
    database_path: Path | None = _setting(None, "SQLite file; default DATA_DIR/crowdcut.db.")

    # --- generation ---
    generator: str = _setting(
        "local",
        "Video generator backend: local (the stand-in), comfyui, fal, replicate or runway. "
        "GENERATORS, when set, wins.",
    )
    generators: str = _setting(
        "",
        "Several backends in order of preference, comma-separated (e.g. comfyui,fal): new jobs "
        "go to the first, or to the next while the first is down; a project may name its own.",
    )
    failover_seconds: float = _setting(
        120.0,
        "How long a backend must be unavailable before new jobs go to the next one in GENERATORS.",
        minimum=0.0,
    )
    job_stall_seconds: float = _setting(
        3600.0,
        "How long a job the generator accepted may go without an answer about it before it "
        "fails (it is never submitted twice).",
        minimum=1.0,
    )
    generator_concurrency: int = _setting(
        2, "Jobs generating at once, over all backends.", minimum=1
    )
    backend_concurrency: int = _setting(2, "Jobs generating at once on one backend.", minimum=1)
    max_jobs_per_member: int = _setting(
        5, "Jobs one member may have waiting or generating.", minimum=1
    )
    clip_seconds: float = _setting(
        4.0, "Default clip length in seconds (and slot length of the even slot plan).", minimum=1.0
    )
    max_clip_seconds: float = _setting(10.0, "Longest clip a member may ask for.", minimum=1.0)
    retry_max_attempts: int = _setting(5, "Tries for a job that fails transiently.", minimum=1)
    retry_base_seconds: float = _setting(2.0, "First retry delay; doubles each try.", minimum=0.0)
    retry_max_seconds: float = _setting(300.0, "Cap on the retry delay.", minimum=0.0)
    poll_seconds: float = _setting(1.0, "How often a running job is polled.", minimum=0.05)
    local_work_dir: Path | None = _setting(
        None, "Work folder of the local generator; default DATA_DIR/local-generator."
    )
    local_test_hooks: bool = _setting(
        False,
        "Let prompts drive the local generator's failure hooks ([fail:auth], [slow], ...). "
        "For the demo and tests only: on a real server any member could trigger them.",
    )

    # --- costs and budgets ---
    prices: str = _setting(
        "fal=0.07/s,replicate=0.35/job,runway=0.05/s,comfyui=0,local=0",
        "What each backend charges, comma-separated: backend=price/s (per second of video "
        "asked of the provider) or backend=price/job; 0 is free, and so is a backend not listed.",
    )
    currency: str = _setting(
        "USD", "Currency of PRICES and the budgets (a code: USD, EUR, GBP...)."
    )
    project_budget: float = _setting(
        0.0, "Most one project may spend on generation; 0 = no limit.", minimum=0.0
    )
    member_daily_budget: float = _setting(
        0.0,
        "Most one member's prompts may spend per UTC day (refused content does not count); "
        "0 = no limit.",
        minimum=0.0,
    )

    def __post_init__(self) -> None:
        from bot.core.costs import parse_prices

        parse_prices(self.prices)  # a ConfigError names PRICES and the entry it cannot read

    # --- Runway ---
    runwayml_api_secret: str = _setting(
        "",
        "Runway API key (the name Runway's SDK reads), for the runway backend.",
        secret=True,
    )
    runway_model: str = _setting(
        "gen4_turbo",
        "Runway model: gen4_turbo (needs a reference image), gen4.5, veo3.1, veo3.1_fast or veo3.",
    )
    runway_api_base: str = _setting(
        "https://api.dev.runwayml.com", "Runway API base URL (a proxy, or a test server)."
    )
    runway_api_version: str = _setting(
        "2024-11-06", "Runway API version, sent as the X-Runway-Version header."
    )

    # --- Replicate ---
    replicate_api_token: str = _setting(
        "", "Replicate API token, for the replicate backend.", secret=True
    )
    replicate_model: str = _setting(
        "kwaivgi/kling-v1.6-standard",
        "Replicate video model as owner/name (kwaivgi/kling-v1.6-standard, "
        "bytedance/seedance-1-lite, wan-video/wan-2.2-t2v-fast, minimax/hailuo-02...).",
    )
    replicate_version: str = _setting(
        "", "Replicate model version id; when set it wins over REPLICATE_MODEL's latest."
    )
    replicate_inputs: str = _setting(
        "",
        "Override of how a request maps onto the model's inputs: field=input_name pairs "
        "(fields: prompt, image, duration, frames, fps, aspect, seed) or a JSON object; "
        "needed for a model without a built-in preset.",
    )
    replicate_durations: str = _setting(
        "",
        "Clip lengths the model accepts, in seconds: a list (5,10) or a range (2-12); "
        "needed for a model without a built-in preset.",
    )
    replicate_fps: float = _setting(
        0.0, "Frame rate of a model that takes a frame count; 0 = the preset's.", minimum=0.0
    )
    replicate_aspects: str = _setting(
        "", "Aspect ratios the model makes, comma-separated; empty = the preset's."
    )
    replicate_api_base: str = _setting(
        "https://api.replicate.com/v1", "Replicate API base URL (a proxy, or a test server)."
    )
    replicate_data_uri_max_bytes: int = _setting(
        256 * 1024,
        "Largest reference image sent inline as a data URI; larger ones go through "
        "Replicate's files API.",
        minimum=0,
    )

    # --- fal ---
    fal_key: str = _setting("", "fal.ai API key, for the fal backend.", secret=True)
    fal_model: str = _setting(
        "fal-ai/kling-video/v2.1/standard/image-to-video",
        "fal endpoint that makes the clips (a Kling, Wan, Veo, Hailuo or LTX endpoint id).",
    )
    fal_text_model: str = _setting(
        "",
        "fal endpoint for prompts without a reference image; empty: FAL_MODEL makes them "
        "(an image-to-video FAL_MODEL then needs an image).",
    )
    fal_inputs: str = _setting(
        "",
        "Input names of an endpoint without a built-in preset (or overrides), e.g. "
        "prompt=prompt,image=image_url,duration=duration,aspect=aspect_ratio.",
    )
    fal_durations: str = _setting(
        "",
        "Durations the endpoint's duration input accepts, as sent (e.g. 5,10 or 4s,8s); "
        "empty: the preset's.",
    )
    fal_queue_url: str = _setting(
        "https://queue.fal.run", "fal queue API base URL (a proxy, or a test server)."
    )
    fal_api_url: str = _setting(
        "https://api.fal.ai/v1",
        "fal Platform API base URL, used to look up a request whose submit answer was lost.",
    )
    fal_concurrency: int = _setting(
        2, "Requests the fal backend runs at once (fal starts new accounts at 2).", minimum=1
    )

    # --- ComfyUI ---
    comfyui_urls: str = _setting(
        "http://127.0.0.1:8188",
        "ComfyUI servers, comma-separated base URLs (a pool: each job goes to the "
        "least-loaded live one).",
    )
    comfyui_workflow: str = _setting(
        "",
        "API-format workflow file (ComfyUI: Workflow > Export (API)); see docs/workflows/.",
    )
    comfyui_inputs: str = _setting(
        "",
        "Where crowdcut writes each value: name=node_id.input, comma-separated, e.g. "
        "prompt=6.text,seed=3.seed,frames=55.length,image=56.image (names: prompt, "
        "negative, seed, frames or seconds, width, height, fps, image).",
    )
    comfyui_fps: float = _setting(
        0.0,
        "Frame rate the workflow renders at; 0: read it from the workflow (the fps input, "
        "or a CreateVideo/SaveWEBM/VHS node), else 24.",
        minimum=0.0,
    )
    comfyui_frame_step: int = _setting(
        1,
        "Frame counts the model takes are step*k+1 (Wan: 4, LTX-Video: 8); 1: any count.",
        minimum=1,
    )
    comfyui_min_seconds: float = _setting(
        1.0,
        "Shortest clip the workflow is asked for.",
        minimum=0.1,
    )
    comfyui_max_seconds: float = _setting(
        5.0,
        "Longest clip the workflow can make (and the natural clip length).",
        minimum=0.1,
    )
    comfyui_durations: str = _setting(
        "",
        "Clip lengths in seconds the workflow takes, comma-separated (e.g. 5,10); empty: "
        "any from COMFYUI_MIN_SECONDS to COMFYUI_MAX_SECONDS.",
    )
    comfyui_sizes: str = _setting(
        "",
        "Width x height per aspect ratio, e.g. 16:9=1280x704,9:16=704x1280,1:1=960x960; "
        "empty: the workflow's own size, reshaped to each aspect.",
    )
    comfyui_negative_prompt: str = _setting(
        "",
        "Negative prompt written into the negative input; empty: the workflow's own.",
    )
    comfyui_image_required: bool = _setting(
        True,
        "The workflow cannot run without a reference image; false: for a prompt without "
        "one the image branch is cut out (it must feed only optional inputs).",
    )
    comfyui_per_host_jobs: int = _setting(
        1,
        "Jobs crowdcut keeps queued or running on one ComfyUI host.",
        minimum=1,
    )
    comfyui_resubmit_grace_seconds: float = _setting(
        300.0,
        "How long a job running on a host that stopped answering waits for it before it "
        "is queued on another host.",
        minimum=0.0,
    )
    comfyui_model: str = _setting(
        "ComfyUI workflow",
        "What makes the clips, for /clip and the credits (e.g. Wan 2.2 TI2V 5B).",
    )
    comfyui_token: str = _setting(
        "",
        "Token sent as Authorization: Bearer to a reverse proxy in front of ComfyUI; empty: none.",
        secret=True,
    )

    # --- prompts and images ---
    prompt_max_chars: int = _setting(600, "Longest prompt accepted.", minimum=1)
    blocked_words: str = _setting(
        "", "Comma-separated words refused in prompts (case-insensitive, whole words)."
    )
    image_max_bytes: int = _setting(8 * 1024 * 1024, "Largest reference image file.", minimum=1)
    image_max_pixels: int = _setting(
        40_000_000,
        "Most pixels (width x height) in a reference image, checked before decoding.",
        minimum=1,
    )

    # --- the cut ---
    video_width: int = _setting(1280, "Width of the final video.", minimum=16)
    video_height: int = _setting(720, "Height of the final video.", minimum=16)
    video_fps: int = _setting(24, "Frame rate of the final video.", minimum=1)
    preview_max_bytes: int = _setting(
        10 * 1024 * 1024,
        "Byte limit of the preview video (Discord's default upload limit).",
        minimum=100_000,
    )
    ffmpeg_binary: str = _setting(
        "", "ffmpeg to use; empty: PATH, then the binary bundled with imageio-ffmpeg."
    )

    # --- project pages ---
    web_host: str = _setting(
        "127.0.0.1", "Address the project pages are served on (`crowdcut run`, `crowdcut web`)."
    )
    web_port: int = _setting(
        8080, "Port of the project pages; 0: `crowdcut run` serves no pages.", minimum=0
    )
    public_url: str = _setting(
        "",
        "The address the pages are reachable at from outside (your reverse proxy or tunnel, "
        "e.g. https://video.example.org); the bot links there. Empty: the bot links nothing.",
    )
    web_live_seconds: float = _setting(
        1.0, "How often a page's live standings are re-read while voting is open.", minimum=0.05
    )

    # --- process ---
    log_level: str = _setting(
        "INFO", "Logging level.", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        """Every setting, with secrets shown only as set or not set."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                shown = "'[set]'" if value else "''"
            else:
                shown = repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"

    @property
    def generator_names(self) -> list[str]:
        """The configured backends, in order of preference."""
        raw = self.generators or self.generator
        names = [n.strip().lower() for n in raw.split(",") if n.strip()]
        return list(dict.fromkeys(names)) or ["local"]

    @property
    def db_path(self) -> Path:
        return self.database_path or self.data_dir / "crowdcut.db"

    @property
    def generator_work_dir(self) -> Path:
        return self.local_work_dir or self.data_dir / "local-generator"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def renders_dir(self) -> Path:
        return self.data_dir / "renders"

    @property
    def blocked_word_list(self) -> list[str]:
        return [w.strip().lower() for w in self.blocked_words.split(",") if w.strip()]

    @classmethod
    def env_names(cls) -> list[str]:
        return [f.name.upper() for f in dataclasses.fields(cls)]

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        env_file: Path | str | None = ".env",
        **overrides: Any,
    ) -> Settings:
        """Read settings: ``overrides`` > ``env`` (default ``os.environ``) > ``env_file``."""
        values: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            values.update(read_env_file(Path(env_file)))
        values.update(os.environ if env is None else env)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.name.upper()
            if f.name in overrides:
                kwargs[f.name] = overrides[f.name]
            elif name in values:
                kwargs[f.name] = _parse(f, values[name])
        settings = cls(**kwargs)
        settings._check_generator_names()
        return settings

    def _check_generator_names(self) -> None:
        from bot.generators import BACKENDS  # the registry; imported late to keep this module light

        for name in self.generator_names:
            if name not in BACKENDS:
                which = "GENERATORS" if self.generators else "GENERATOR"
                raise ConfigError(
                    f"{which}={self.generators or self.generator!r} is not valid: allowed "
                    f"values are {', '.join(sorted(BACKENDS))}."
                )

    def problems(self) -> list[str]:
        """Settings that are valid alone but unusable together."""
        out = []
        if self.vote_up_emoji == self.vote_down_emoji:
            out.append("VOTE_UP_EMOJI and VOTE_DOWN_EMOJI must differ.")
        if self.backend_concurrency > self.generator_concurrency:
            out.append("BACKEND_CONCURRENCY is above GENERATOR_CONCURRENCY; the global limit wins.")
        return out


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes."""
    out: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{path}:{lineno}: expected KEY=value, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    name = f.name.upper()
    meta = f.metadata
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    raw = raw.strip()
    try:
        if kind == "bool":
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if kind == "int":
            value: Any = int(raw.replace("_", ""))
        elif kind == "float":
            value = float(raw)
        elif kind == "Path | None":
            return Path(raw) if raw else None
        elif kind == "Path":
            return Path(raw or ".")
        else:
            value = raw
    except ValueError:
        want = {"bool": "true or false", "int": "a whole number", "float": "a number"}[kind]
        raise ConfigError(f"{name}={raw!r} is not valid: expected {want}.") from None
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(
            f"{name}={raw!r} is not valid: allowed values are {', '.join(meta['choices'])}."
        )
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise ConfigError(f"{name}={raw!r} is not valid: must be at least {meta['minimum']}.")
    return value
