"""What a generation costs: prices per backend, from the settings. Pure functions."""

from __future__ import annotations

from typing import Any


def cost_of(settings: Any, backend: str, seconds: float) -> float:
    """The price of one generation of ``seconds`` on ``backend``, in the operator's currency."""
    return 0.0
