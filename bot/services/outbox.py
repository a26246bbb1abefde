"""The outbox worker: every Discord side effect, done exactly once, whatever fails.

The rows (:mod:`storage.outbox`) are written with the change that causes them; this
worker drains them with the durable-work pattern (:mod:`bot.services.durable`). Handlers
by kind come from the front end (:mod:`bot.frontend.effects`), which knows Discord; this
module does not. What the worker adds:

- one effect per key at a time, so two edits of one message never race;
- a quiet period per key (``spacing``): a job's status message is edited at most once per
  ``STATUS_EDIT_SECONDS``, with the latest state (the rows coalesce meanwhile);
- retries with capped backoff, the server's ``retry_after`` first; a handler that keeps
  failing for an unexpected reason gives up after ``max_attempts`` and says so in the log;
- members first: while ``hold()`` says interactions are pouring in (a burst of commands),
  no effect starts, so that every interaction is acknowledged before Discord's 3 s
  deadline; status messages and clip posts follow a moment later. A hold never lasts
  more than :data:`MAX_HOLD_SECONDS` at a stretch, so a steady stream of commands cannot
  starve the effects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from bot.app import App
from bot.errors import StorageFull
from bot.services.durable import DurableWorker, GiveUp, Retry
from storage.outbox import Effect

log = logging.getLogger(__name__)

Handler = Callable[[Effect], Awaitable[None]]

#: the longest the outbox waits, at a stretch, for a burst of interactions to pass
MAX_HOLD_SECONDS = 3.0


class OutboxWorker(DurableWorker):
    """Drains the outbox with ``handlers[kind]``."""

    name = "outbox"
    idle_seconds = 0.25
    max_attempts = 50

    def __init__(
        self,
        app: App,
        handlers: Mapping[str, Handler],
        *,
        spacing: Mapping[str, float] | None = None,
        concurrency: int = 4,
        clock: Callable[[], float] = time.time,
        hold: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.app = app
        self.store = app.store
        self.handlers = dict(handlers)
        self.spacing = dict(spacing or {})
        self.concurrency = concurrency
        self.clock = clock
        self._last_done: dict[str, float] = {}
        self.hold = hold or (lambda: 0.0)
        self._held_since: float | None = None

    @property
    def capacity(self) -> int:
        return self.concurrency

    async def recover(self) -> int:
        n = await self.store.requeue_running_effects()
        if n:
            log.info("%d Discord effects were cut short by a stop; doing them again", n)
        return n

    def _holding(self) -> bool:
        """Whether effects wait for a burst of interactions to pass (see the module doc)."""
        now = time.monotonic()
        if self.hold() <= 0:
            self._held_since = None
            return False
        if self._held_since is None:
            self._held_since = now
        return now - self._held_since < MAX_HOLD_SECONDS

    async def dispatch(self) -> list[str]:
        free = self.free
        if free <= 0 or self._holding():
            return []
        busy = [str(k) for k in self._tasks]
        effects = await self.store.claim_effects(self.clock(), free, busy_keys=busy)
        for e in effects:
            self.spawn(e.key, self._handle(e))
        return [e.key for e in effects]

    async def _handle(self, effect: Effect) -> None:
        try:
            await self._handle_once(effect)
        except StorageFull:
            await self._requeue_when_room(effect)

    async def _requeue_when_room(self, effect: Effect) -> None:
        """The database is full, so how the effect went cannot be recorded: once there is
        room its row goes back to pending and it runs again (idempotently: a post that was
        made is found and adopted, not made twice)."""
        s = self.app.settings
        delay = s.retry_base_seconds
        while True:
            await asyncio.sleep(delay)
            try:
                await self.store.retry_effect(
                    effect.id, next_attempt_at=self.clock(), error="the database is full"
                )
                return
            except StorageFull:
                delay = min(delay * 2, s.retry_max_seconds)

    async def _handle_once(self, effect: Effect) -> None:
        handler = self.handlers.get(effect.kind)
        if handler is None:
            await self.store.fail_effect(effect.id, error=f"no handler for {effect.kind}")
            return
        quiet = self.spacing.get(effect.kind, 0.0)
        since = self.clock() - self._last_done.get(effect.key, -1e18)
        if since < quiet:
            await self.store.retry_effect(
                effect.id,
                next_attempt_at=self.clock() + quiet - since,
                error="spacing",
                count=False,
            )
            return
        try:
            await handler(effect)
        except asyncio.CancelledError:
            raise  # stopping: the row stays running and is done again at the next start
        except Retry as r:
            failures = effect.attempts if r.count else 0
            delay = r.delay
            if delay is None:
                delay = self._backoff(failures)
            log.log(
                logging.INFO if not r.count else logging.WARNING,
                "%s %s: %s; again in %.1fs",
                effect.kind,
                effect.key,
                r.reason,
                delay,
            )
            await self.store.retry_effect(
                effect.id, next_attempt_at=self.clock() + delay, error=r.reason, count=r.count
            )
        except StorageFull:
            raise
        except GiveUp as g:
            log.warning("%s %s: giving up: %s", effect.kind, effect.key, g.reason)
            await self.store.fail_effect(effect.id, error=g.reason)
        except Exception as e:
            log.exception("%s %s failed", effect.kind, effect.key)
            if effect.attempts >= self.max_attempts:
                await self.store.fail_effect(effect.id, error=f"{type(e).__name__}")
                return
            delay = self._backoff(effect.attempts)
            await self.store.retry_effect(
                effect.id, next_attempt_at=self.clock() + delay, error=type(e).__name__
            )
        else:
            self._last_done[effect.key] = self.clock()
            await self.store.finish_effect(effect.id)

    def _backoff(self, failures: int) -> float:
        s = self.app.settings
        return self.delay(
            failures, base=s.retry_base_seconds, cap=s.retry_max_seconds, retry_after=None
        )

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Until every effect queued so far is done or given up (tests, the demo)."""

        async def settled() -> None:
            while True:
                counts = await self.store.outbox_counts()
                if not counts.get("pending") and not counts.get("running") and not self._tasks:
                    return
                self.wake()
                await asyncio.sleep(0.05)

        await asyncio.wait_for(settled(), timeout)
