"""Rows the project pages read (``bot/web``), as dataclasses. Plain data: no SQL.

Filled by the ``# ---- web`` section of ``Store``: one query each, joined where the
pages need the clip, its job and its author together.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageClip:
    """A clip as a page shows it: its prompt, its author (``"anonymous"`` once forgotten
    or anonymized), what made it, the clip it continues, and its votes."""

    id: int
    project_id: int
    member_id: int
    author: str
    prompt: str
    media_key: str
    created_at: float
    slot: int | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    backend: str | None = None
    model: str | None = None
    #: the clip this one continues (``/extend``), when its job records one
    parent_clip_id: int | None = None
    channel_id: int | None = None
    message_id: int | None = None
    post_deleted_at: float | None = None
    up: int = 0
    down: int = 0

    @property
    def score(self) -> int:
        return self.up - self.down


@dataclass(frozen=True)
class PublicProject:
    """A project listed on the index (its server made its projects public)."""

    id: int
    title: str
    state: str
    web_token: str
    created_at: float
    approved_at: float | None = None
