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


@dataclass(frozen=True)
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
    generator: str = _setting("local", "Video generator backend.", choices=("local",))
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

    # --- process ---
    log_level: str = _setting(
        "INFO", "Logging level.", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )

    # ------------------------------------------------------------------ helpers
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
        return cls(**kwargs)

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
