"""Dataclasses that database rows map to. Plain data: no behaviour, no SQL."""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# job states
QUEUED, SUBMITTED, RUNNING, DONE, FAILED, CANCELED = (
    "queued",
    "submitted",
    "running",
    "done",
    "failed",
    "canceled",
)
ACTIVE_JOB_STATES = (QUEUED, SUBMITTED, RUNNING)
TERMINAL_JOB_STATES = (DONE, FAILED, CANCELED)

# project states
DRAFT, OPEN, CLOSED, APPROVED = "draft", "open", "closed", "approved"


@dataclass(frozen=True)
class Slot:
    index: int
    start: float
    duration: float
    #: the first downbeat inside the slot (0-based, into the song's bars) and how many
    #: downbeats it holds; None on an even plan (no song, or a song with no beat)
    bar: int | None = None
    bars: int | None = None
    #: a moderator's hint for prompters: a lyric line, a mood
    hint: str | None = None

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class Project:
    id: int
    guild_id: int
    channel_id: int
    title: str
    state: str
    created_at: float
    slot_plan: list[Slot] = field(default_factory=list)
    song_key: str | None = None
    song_name: str | None = None
    song_credit: str | None = None  # "“Title” by Artist (licence)": on the roll and pages
    song_seconds: float | None = None
    created_by: int | None = None
    opened_at: float | None = None
    closed_at: float | None = None
    voting_ends_at: float | None = None
    approved_by: int | None = None
    approved_at: float | None = None
    backend: str | None = None  # a moderator's choice of generator; None: the configured order
    transition: str | None = None  # cut | crossfade | dip | zoom (None: cut)
    transition_beats: float | None = None  # its length in beats
    fit: str | None = None  # hold | slow: how a clip shorter than its slot fills it
    chain_mode: bool = False  # a prompt without an image continues the previous slot


@dataclass
class Member:
    id: int
    name: str
    is_bot: bool = False
    forgotten_at: float | None = None
    first_seen: float | None = None


@dataclass
class Job:
    id: int
    project_id: int
    member_id: int
    prompt: str
    state: str
    queued_at: float
    channel_id: int | None = None
    image_key: str | None = None
    slot: int | None = None
    duration: float | None = None
    aspect: str | None = None
    seed: int | None = None
    extends_clip_id: int | None = None
    moderation: str = "none"
    backend: str | None = None
    provider_job_id: str | None = None
    attempts: int = 0
    next_attempt_at: float | None = None
    progress: float | None = None
    error: str | None = None
    error_kind: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    status_message_id: int | None = None
    moderation_message_id: int | None = None
    #: UUID of the current submission, stored before it is sent (see the worker)
    submit_key: str | None = None
    #: times the job was claimed for a submission (drives the backoff of submit failures);
    #: ``attempts`` counts the submissions a provider confirmed
    tries: int = 0
    model: str | None = None
    requested_seconds: float | None = None  # the length asked of the provider
    lineage: str | None = None  # "extend" | "chain": how it continues extends_clip_id


@dataclass(frozen=True)
class Waiting:
    """A queued job as the dispatcher sees it: what fair order and routing need."""

    id: int
    project_id: int
    member_id: int
    queued_at: float
    next_attempt_at: float | None
    duration: float | None
    image_key: str | None


@dataclass(frozen=True)
class Charge:
    """One ledger row to write with a job's change (see ``Store.set_provider_job_id``)."""

    backend: str
    model: str | None
    kind: str  # "generation" | "refund"
    seconds: float
    amount: float
    currency: str


@dataclass
class Clip:
    id: int
    job_id: int
    project_id: int
    member_id: int
    media_key: str
    created_at: float
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    has_audio: bool = False
    size_bytes: int | None = None
    slot: int | None = None
    channel_id: int | None = None
    message_id: int | None = None
    posted_at: float | None = None
    anonymous: bool = False
    #: when crowdcut saw its post deleted (by a moderator): the clip is out of the vote
    post_deleted_at: float | None = None
    parent_clip_id: int | None = None  # the clip it continues (/extend or chain mode)
    lineage: str | None = None  # "extend" | "chain"
    in_point: float | None = None  # the second its slot starts at (a moderator's trim)


@dataclass
class Vote:
    clip_id: int
    voter_id: int
    value: int
    emoji: str
    voted_at: float


@dataclass
class Override:
    project_id: int
    clip_id: int
    action: str  # "pin" | "exclude"
    by: int
    at: float
    slot: int | None = None


@dataclass
class Cut:
    id: int
    project_id: int
    state: str  # "preview" | "approved"
    created_at: float
    slots: list[dict[str, Any]] = field(default_factory=list)
    master_key: str | None = None
    preview_key: str | None = None
    manifest_key: str | None = None
    created_by: int | None = None
    approved_by: int | None = None
    approved_at: float | None = None
    message_id: int | None = None
    identity: str | None = None  # the content hash of the cut (bot.media.assembly)
    storyboard_key: str | None = None
    preview_bytes: int | None = None


@dataclass
class Render:
    """A preview or final render waiting, running or done: durable work."""

    id: int
    project_id: int
    kind: str  # "preview" | "final"
    state: str  # pending | running | done | stale | failed
    created_at: float
    identity: str | None = None
    slots: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    next_attempt_at: float | None = None
    requested_by: int | None = None
    channel_id: int | None = None
    upload_limit: int | None = None
    cut_id: int | None = None
    progress: float | None = None
    error: str | None = None
    finished_at: float | None = None


@dataclass
class AuditEntry:
    id: int
    action: str
    at: float
    guild_id: int | None = None
    project_id: int | None = None
    actor_id: int | None = None
    target: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


_BOOL_FIELDS = {"is_bot", "has_audio", "anonymous", "chain_mode"}


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


@functools.lru_cache(maxsize=64)
def _slot_plan(text: str) -> tuple[Slot, ...]:
    """A project's slot plan from its JSON (cached: every read of a project parses it, and
    its Slots are frozen, so they can be shared)."""
    names = _field_names(Slot)
    return tuple(Slot(**{k: v for k, v in s.items() if k in names}) for s in json.loads(text))


def from_row(cls: type[T], row: dict[str, Any] | None) -> T | None:
    """Map a row dict onto ``cls``, decoding JSON and boolean columns."""
    if row is None:
        return None
    names = _field_names(cls)
    data = {k: v for k, v in row.items() if k in names}
    for k in _BOOL_FIELDS & data.keys():
        data[k] = bool(data[k])
    if cls is Project:
        data["slot_plan"] = list(_slot_plan(data.get("slot_plan") or "[]"))
    elif cls is Cut or cls is Render:
        data["slots"] = json.loads(data.get("slots") or "[]")
    elif cls is AuditEntry:
        data["details"] = json.loads(data.get("details") or "{}")
    return cls(**data)
