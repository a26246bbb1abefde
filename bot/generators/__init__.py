"""Where clips are made: the video generator backends and the one protocol they share.

Each backend is one module exposing ``from_settings(settings) -> Generator``, registered
by name in :data:`BACKENDS`; :func:`create_generator` imports only the one asked for, so a
backend's optional dependencies are needed only when it is used. Adding one (replicate,
fal, runway, comfyui...) means writing ``bot/generators/<name>.py`` and adding a line here.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any

from bot.errors import ConfigError
from bot.generators.base import (
    ASPECTS,
    GenerationRequest,
    Generator,
    JobState,
    JobStatus,
    classify_http_error,
    classify_transport_error,
    get_setting,
    parse_retry_after,
)

log = logging.getLogger(__name__)

#: backend name -> "module:factory"; the factory takes the settings and returns a Generator
BACKENDS: Mapping[str, str] = {
    "local": "bot.generators.local:from_settings",
    "comfyui": "bot.generators.comfyui:from_settings",
    "fal": "bot.generators.fal:from_settings",
    "replicate": "bot.generators.replicate:from_settings",
    "runway": "bot.generators.runway:from_settings",
}


def create_generator(name: str, settings_like: Mapping[str, Any] | object) -> Generator:
    """Build the backend called ``name`` (the ``GENERATOR`` setting) from ``settings_like``.

    ``settings_like`` is crowdcut's ``Settings`` or any object or mapping with the
    settings the backend reads (see its ``from_settings``). Raises :class:`ConfigError`
    for an unknown name.
    """
    key = (name or "").strip().lower()
    target = BACKENDS.get(key)
    if target is None:
        raise ConfigError(
            f"GENERATOR={name!r} is not valid: allowed values are {', '.join(sorted(BACKENDS))}"
            " (GENERATORS takes several, comma-separated)."
        )
    module_name, _, factory_name = target.partition(":")
    module = importlib.import_module(module_name)
    generator = getattr(module, factory_name)(settings_like)
    log.info("video generator: %s", generator.name)
    return generator


def create_generators(
    names: list[str], settings_like: Mapping[str, Any] | object
) -> dict[str, Generator]:
    """Build every backend in ``names`` (the ``GENERATORS`` order), keyed by name."""
    return {name: create_generator(name, settings_like) for name in names}


__all__ = [
    "ASPECTS",
    "BACKENDS",
    "GenerationRequest",
    "Generator",
    "JobState",
    "JobStatus",
    "classify_http_error",
    "classify_transport_error",
    "create_generator",
    "create_generators",
    "get_setting",
    "parse_retry_after",
]
