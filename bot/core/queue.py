"""The generation queue's rules: fair order, limits, retry backoff, ETA.

Fairness is round-robin across members: every member's first waiting job comes
before anyone's second, so one member's twenty prompts never starve another's
first. Within a round, the member served longest ago goes first (members never
served go by their oldest job). These functions are pure; ``bot.services.worker``
applies them to the jobs in the database.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


class QueuedJob(Protocol):
    id: int
    member_id: int
    queued_at: float
    next_attempt_at: float | None


def fair_order(
    jobs: Iterable[QueuedJob], last_served: dict[int, float] | None = None
) -> list[QueuedJob]:
    """All waiting jobs in the order they will be dispatched (round-robin by member)."""
    last_served = last_served or {}
    per_member: dict[int, list[QueuedJob]] = defaultdict(list)
    for j in sorted(jobs, key=lambda j: (j.queued_at, j.id)):
        per_member[j.member_id].append(j)

    def member_key(m: int) -> tuple[float, float, int]:
        first = per_member[m][0]
        # never served sorts before served; then by when; then by the first job's age
        return (last_served.get(m, -math.inf), first.queued_at, first.id)

    members = sorted(per_member, key=member_key)
    order: list[QueuedJob] = []
    depth = max((len(v) for v in per_member.values()), default=0)
    for round_ in range(depth):
        for m in members:
            if round_ < len(per_member[m]):
                order.append(per_member[m][round_])
    return order


def next_jobs(
    jobs: Sequence[QueuedJob],
    *,
    now: float,
    slots_free: int,
    last_served: dict[int, float] | None = None,
    running_by_member: dict[int, int] | None = None,
) -> list[QueuedJob]:
    """Up to ``slots_free`` jobs to dispatch now: eligible (backoff elapsed), fair order,
    and at most one new job per member per call while others are waiting."""
    if slots_free <= 0:
        return []
    running_by_member = running_by_member or {}
    eligible = [j for j in jobs if (j.next_attempt_at or 0) <= now]
    # members with fewer jobs in flight first; fair order within
    ordered = fair_order(eligible, last_served)
    ordered.sort(key=lambda j: running_by_member.get(j.member_id, 0))
    picked: list[QueuedJob] = []
    seen: set[int] = set()
    for j in ordered:
        if j.member_id in seen:
            continue
        picked.append(j)
        seen.add(j.member_id)
        if len(picked) == slots_free:
            return picked
    # capacity left and only members already picked have work: take their next jobs
    for j in ordered:
        if len(picked) == slots_free:
            break
        if j not in picked:
            picked.append(j)
    return picked


def backoff_delay(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None
) -> float:
    """Delay before try ``attempt + 1`` after ``attempt`` failed: base·2^(attempt-1),
    capped, and never shorter than what the provider asked for."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, max(cap, retry_after)))
    return delay


@dataclass(frozen=True)
class Position:
    position: int  # 1-based place among waiting jobs; 0 = generating now
    ahead: int  # jobs before it
    eta_seconds: float  # until its clip is expected


def estimate_run_seconds(recent: Sequence[float], default: float) -> float:
    """Typical time one job takes, from measured durations (median), else ``default``."""
    recent = [d for d in recent if d and d > 0]
    return statistics.median(recent) if recent else default


def queue_position(
    job_id: int,
    waiting: Sequence[QueuedJob],
    *,
    running: int,
    concurrency: int,
    run_seconds: float,
    last_served: dict[int, float] | None = None,
) -> Position | None:
    """Where ``job_id`` stands in the fair order and when it should be done."""
    order = fair_order(waiting, last_served)
    for i, j in enumerate(order):
        if j.id == job_id:
            concurrency = max(1, concurrency)
            # the running jobs finish (on average half-way done), then waves of `concurrency`
            waves_before = (i + running) // concurrency
            eta = run_seconds * (waves_before + 1)
            if running:
                eta -= run_seconds / 2 if waves_before else 0
            return Position(position=i + 1, ahead=i, eta_seconds=max(run_seconds, eta))
    return None


def format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"~{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"~{minutes}m {s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"~{hours}h {m:02d}m"
