"""crowdcut: a Discord bot with which a whole community makes a music video together."""

from __future__ import annotations

__version__ = "0.1.0"
