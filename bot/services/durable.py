"""The one pattern for work that must happen: a row in storage, a worker that claims it,
retries with capped backoff, and survives a kill.

Generation jobs (:mod:`bot.services.worker`), Discord side effects (:mod:`bot.services.
outbox`) and renders follow it. Each keeps its rows in its own table, written in the same
transaction as the change that causes the work; a :class:`DurableWorker` subclass says
how to find what was cut short (:meth:`recover`), what to claim next (:meth:`dispatch`,
which calls :meth:`spawn` for each claimed item) and how to do one item. The base runs the
loop: wake on demand or every ``idle_seconds``, run claimed items as tasks within the
capacity, and on :meth:`stop` cancel them, leaving their rows to be picked up by the
next start. A kill at any line leaves a row that the next start finds.

Handlers report how an item went by raising :class:`Retry` (try again after a delay; the
provider's or Discord's ``retry_after`` wins over the backoff) or :class:`GiveUp` (done
trying, with the reason), or by returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Hashable

from bot.core.queue import backoff_delay
from bot.errors import StorageFull

log = logging.getLogger(__name__)


class Retry(Exception):
    """Try this item again later. ``delay`` None: the worker's capped backoff decides;
    ``count=False``: the wait was not a failure (a rate-limit window, a quiet period)."""

    def __init__(self, reason: str, *, delay: float | None = None, count: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.count = count


class GiveUp(Exception):
    """Stop trying this item; ``reason`` says why (for the operator's log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DurableWorker:
    """Runs claimed items as tasks, at most ``capacity`` at once (see the module doc)."""

    name = "durable"
    idle_seconds = 0.5

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ subclass parts
    @property
    def capacity(self) -> int:
        return 1

    async def recover(self) -> int:
        """Put back what a previous process left in flight; return how many items."""
        return 0

    async def dispatch(self) -> list[Hashable]:
        """Claim what may start now and :meth:`spawn` each; return their keys."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the loop
    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def free(self) -> int:
        return self.capacity - self.in_flight

    async def start(self) -> None:
        await self.recover()
        self._loop_task = asyncio.create_task(self._run(), name=f"crowdcut-{self.name}")

    async def stop(self) -> None:
        """Stop claiming and cancel what runs; the rows stay, to be resumed."""
        tasks = list(self._tasks.values())
        if self._loop_task:
            tasks.append(self._loop_task)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        self._loop_task = None

    def wake(self) -> None:
        """Work was queued: look now rather than at the next idle tick."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            # cleared before claiming: work that ends while we claim wakes the next round
            self._wake.clear()
            try:
                await self.dispatch()
            except asyncio.CancelledError:
                raise
            except StorageFull:
                pass  # the store has told the operator; claiming resumes when there is room
            except Exception:
                log.exception("the %s loop failed; trying again shortly", self.name)
            # not wait_for: on Python 3.11 it can swallow the cancellation of stop()
            # when the event is set in the same turn, and the loop would never end
            try:
                async with asyncio.timeout(self.idle_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def spawn(self, key: Hashable, work: Awaitable[None], **tags: object) -> asyncio.Task[None]:
        """Run one claimed item as a task; ``tags`` are set on it for the subclass."""
        task = asyncio.ensure_future(work)
        task.set_name(f"crowdcut-{self.name}-{key}")
        for k, v in tags.items():
            setattr(task, k, v)
        self._tasks[key] = task

        def _done(t: asyncio.Task[None]) -> None:
            if self._tasks.get(key) is t:
                del self._tasks[key]
            self._wake.set()

        task.add_done_callback(_done)
        return task

    def running(self, key: Hashable) -> asyncio.Task[None] | None:
        return self._tasks.get(key)

    @staticmethod
    def delay(failures: int, *, base: float, cap: float, retry_after: float | None) -> float:
        """Capped exponential backoff; a server's ``retry_after`` wins."""
        return backoff_delay(max(1, failures), base=base, cap=cap, retry_after=retry_after)
