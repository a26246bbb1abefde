"""Spend: budgets that refuse a prompt before anything is spent, and the moderators' report.

The ledger (written by the worker, see :mod:`bot.services.worker`) has one row per charge:
a confirmed submission at its price, a negative row for a failure the provider does not
bill. A budget counts the ledger *and* the estimated price of the jobs that are waiting
but not charged yet, so a burst of prompts cannot queue more than the budget can pay for:

- ``PROJECT_BUDGET``: everything a project cost, refused content included (the money is
  gone either way);
- ``MEMBER_DAILY_BUDGET``: what a member's prompts cost since 00:00 UTC, leaving out
  content the provider refused (a refusal is not the member's spend to carry).

The arithmetic is in :mod:`bot.core.costs`; this module only gathers the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bot.app import App
from bot.core.costs import (
    budget_allows,
    cost_of,
    describe_clip,
    format_money,
    format_wait,
    until_next_utc_day,
    utc_day_start,
)
from bot.errors import BudgetExceeded, UserFacingError
from storage.models import Job, Project

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpendLine:
    """One row of the report: a project, a member or a backend."""

    key: Any  # project id, member id or backend name
    label: str
    amount: float
    generations: int
    refused: float = 0.0  # part of ``amount`` spent on content the provider refused
    seconds: float = 0.0  # of video asked of the provider (backends)


@dataclass(frozen=True)
class UsageReport:
    """What ``/usage`` shows. ``members`` and ``backends`` cover ``project`` (or the whole
    guild when it is None); ``projects`` covers the guild. All from ``since`` on (None:
    all time), except ``project_spent`` which, like the budget, is all time."""

    currency: str
    project: Project | None
    since: float | None
    projects: list[SpendLine]
    members: list[SpendLine]
    backends: list[SpendLine]
    project_spent: float = 0.0
    project_waiting: float = 0.0  # estimated price of the project's jobs not charged yet
    waiting_jobs: int = 0
    project_budget: float = 0.0
    member_daily_budget: float = 0.0
    total: float = field(init=False)

    def __post_init__(self) -> None:
        lines = self.members if self.project is not None else self.projects
        object.__setattr__(self, "total", sum(line.amount for line in lines))

    def money(self, amount: float) -> str:
        return format_money(amount, self.currency)


class UsageService:
    """Budget checks for new prompts, and the spend report for moderators."""

    def __init__(self, app: App, *, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.store = app.store
        self.settings = app.settings
        self.clock = clock
        # a check and the insert of the job it allowed must not interleave with another's
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ prices
    def estimate(self, backend: str, seconds: float | None) -> float:
        """The price of one generation of ``seconds`` on ``backend``."""
        return cost_of(self.settings, backend, seconds)

    def _provider_seconds(self, backend: str, wanted: float | None) -> float | None:
        """What the backend will be asked for a clip of ``wanted`` seconds (it may round up
        to a length it accepts); ``wanted`` when the backend is not configured here."""
        caps = getattr(self.app.generators.get(backend), "capabilities", None)
        if caps is None or wanted is None:
            return wanted
        return caps.duration_for(wanted) or wanted

    def job_estimate(self, job: Job, backend: str) -> float:
        """The estimated price of a job not charged yet: on the backend it was last sent
        to, else ``backend``; for the length it was asked for, else its own."""
        name = job.backend or backend
        seconds = getattr(job, "requested_seconds", None) or self._provider_seconds(
            name, job.duration
        )
        return self.estimate(name, seconds)

    def _waiting(self, jobs: Iterable[Job], backend: str) -> float:
        return sum(self.job_estimate(j, backend) for j in jobs)

    # ------------------------------------------------------------------ budgets
    @property
    def budgets_set(self) -> bool:
        s = self.settings
        return s.project_budget > 0 or s.member_daily_budget > 0

    async def check_budget(
        self, project: Project, member_id: int, backend: str, seconds: float | None
    ) -> float:
        """Refuse a new prompt that its project's budget or its member's daily budget
        cannot pay for, counting the ledger and the jobs waiting to be charged. Returns
        the prompt's estimated price. Raises :class:`BudgetExceeded` with the numbers.

        ``backend`` is where the prompt would go, ``seconds`` the length it would ask for
        (after ``Capabilities.duration_for``). Wrap the check and the job's insert in
        :meth:`reserve` so that concurrent prompts are checked one after another."""
        s = self.settings
        cost = self.estimate(backend, seconds)
        if cost <= 0 or not self.budgets_set:
            return cost
        now = self.clock()
        waiting = await self.store.uncharged_jobs(
            project_id=project.id if s.project_budget > 0 else None,
            member_id=member_id if s.member_daily_budget > 0 else None,
        )
        clip = describe_clip(backend, seconds)
        money = self._money
        if s.project_budget > 0:
            spent = await self.store.spent(project_id=project.id)
            pending = self._waiting((j for j in waiting if j.project_id == project.id), backend)
            if not budget_allows(spent=spent, pending=pending, cost=cost, budget=s.project_budget):
                raise BudgetExceeded(
                    f"This project has spent {money(spent)} of its {money(s.project_budget)} "
                    f"budget{_promised(pending, money)}; {clip} costs about {money(cost)}. "
                    "The bot's operator can raise PROJECT_BUDGET.",
                    scope="project",
                )
        if s.member_daily_budget > 0:
            spent = await self.store.spent(
                member_id=member_id, since=utc_day_start(now), count_refused=False
            )
            pending = self._waiting((j for j in waiting if j.member_id == member_id), backend)
            if not budget_allows(
                spent=spent, pending=pending, cost=cost, budget=s.member_daily_budget
            ):
                raise BudgetExceeded(
                    f"Your prompts have used {money(spent)} of your "
                    f"{money(s.member_daily_budget)} for today{_promised(pending, money)}; "
                    f"{clip} costs about {money(cost)}. Your budget starts again at 00:00 UTC, "
                    f"in {format_wait(until_next_utc_day(now))}.",
                    scope="member",
                )
        return cost

    @contextlib.asynccontextmanager
    async def reserve(
        self, project: Project, member_id: int, backend: str, seconds: float | None
    ) -> AsyncIterator[float]:
        """``check_budget``, holding the budget lock until the block ends: queue the job
        inside it, and a burst of prompts cannot all pass the check before any is queued.
        Yields the estimated price. Free prompts and unlimited budgets skip the lock."""
        if not self.budgets_set or self.estimate(backend, seconds) <= 0:
            yield await self.check_budget(project, member_id, backend, seconds)
            return
        async with self._lock:
            yield await self.check_budget(project, member_id, backend, seconds)

    def _money(self, amount: float) -> str:
        return format_money(amount, self.settings.currency)

    # ------------------------------------------------------------------ report
    async def report(
        self, guild_id: int, project: Project | None, *, days: float | None = None
    ) -> UsageReport:
        """Spend per project of the guild, and per member and per backend of ``project``
        (of the whole guild when None), over the last ``days`` (None: all time)."""
        if days is not None and days <= 0:
            raise UserFacingError("`days` must be at least 1.")
        since = None if days is None else self.clock() - days * 86400
        totals = await self.store.ledger_totals(
            guild_id, project_id=project.id if project else None, since=since
        )
        projects = {p.id: p for p in await self.store.list_projects(guild_id)}
        names = await self.store.member_names(
            r["member_id"] for r in totals["members"] if r["member_id"] is not None
        )

        def line(row: dict[str, Any], key: str, label: str) -> SpendLine:
            return SpendLine(
                key=row[key],
                label=label,
                amount=float(row["amount"] or 0),
                generations=int(row["generations"] or 0),
                refused=float(row["refused"] or 0),
                seconds=float(row["seconds"] or 0),
            )

        def project_label(pid: int | None) -> str:
            p = projects.get(pid) if pid is not None else None
            return p.title if p else f"project #{pid}" if pid is not None else "no project"

        project_spent = waiting_amount = 0.0
        waiting_jobs = 0
        if project is not None:
            project_spent = await self.store.spent(project_id=project.id)
            waiting = await self.store.uncharged_jobs(project_id=project.id)
            backend = getattr(project, "backend", None) or self.app.generator.name
            waiting_amount = self._waiting(waiting, backend)
            waiting_jobs = len(waiting)
        return UsageReport(
            currency=self.settings.currency,
            project=project,
            since=since,
            projects=[
                line(r, "project_id", project_label(r["project_id"])) for r in totals["projects"]
            ],
            members=[
                line(r, "member_id", names.get(r["member_id"], str(r["member_id"])))
                for r in totals["members"]
            ],
            backends=[line(r, "backend", r["backend"]) for r in totals["backends"]],
            project_spent=project_spent,
            project_waiting=waiting_amount,
            waiting_jobs=waiting_jobs,
            project_budget=self.settings.project_budget,
            member_daily_budget=self.settings.member_daily_budget,
        )


def _promised(pending: float, money: Callable[[float], str]) -> str:
    if pending < 0.005:
        return ""
    return f", and {money(pending)} more is promised to prompts still waiting"
