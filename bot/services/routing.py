"""Which backend a new job goes to: the configured order, a project's own choice, failover.

``GENERATORS=comfyui,fal`` lists backends in order of preference. A new job goes to the
project's backend when a moderator set one, else to the first in the order; a backend
that has been unavailable (no answer, 5xx) for longer than ``FAILOVER_SECONDS`` is passed
over for the next, until it answers again. A busy backend is not "down": its jobs wait
for it rather than spill over to a backend that costs more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from bot.errors import GeneratorError, GeneratorErrorKind
from bot.generators.base import Generator

log = logging.getLogger(__name__)

#: failures that say the backend itself is unreachable, not that one job was bad
_DOWN_KINDS = frozenset({GeneratorErrorKind.UNAVAILABLE})


class BackendRouter:
    """Tracks each backend's health and picks one for each new job."""

    def __init__(
        self,
        generators: Mapping[str, Generator],
        *,
        failover_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.generators = generators
        self.order = list(generators)
        self.failover_seconds = failover_seconds
        self.clock = clock
        self._down_since: dict[str, float] = {}

    # ------------------------------------------------------------------ health
    def succeeded(self, backend: str) -> None:
        """The backend answered."""
        if self._down_since.pop(backend, None) is not None:
            log.info("generator %s answers again", backend)

    def failed(self, backend: str, error: GeneratorError) -> None:
        """The backend did not answer (only unreachability counts, not a refused prompt)."""
        if error.kind in _DOWN_KINDS and backend not in self._down_since:
            log.warning("generator %s is not answering: %s", backend, error.message)
            self._down_since[backend] = self.clock()

    def is_down(self, backend: str) -> bool:
        """Unavailable for longer than ``failover_seconds``."""
        since = self._down_since.get(backend)
        return since is not None and self.clock() - since >= self.failover_seconds

    def down_for(self, backend: str) -> float | None:
        since = self._down_since.get(backend)
        return None if since is None else self.clock() - since

    # ------------------------------------------------------------------ choice
    def candidates(self, preferred: str | None = None) -> list[str]:
        """Backends to try for a new job, best first: the project's choice (when it is
        configured), then the order; those down for too long go last."""
        names = list(self.order)
        if preferred in self.generators:
            names.remove(preferred)  # type: ignore[arg-type]
            names.insert(0, preferred)  # type: ignore[arg-type]
        up = [n for n in names if not self.is_down(n)]
        return up + [n for n in names if n not in up]

    def choose(self, preferred: str | None, busy: Mapping[str, int]) -> str | None:
        """The backend for a new job now, or ``None`` when the right one is busy (the job
        waits for it). ``busy`` is how many jobs each backend is running."""
        for name in self.candidates(preferred):
            limit = max(1, getattr(self.generators[name], "max_concurrency", 1) or 1)
            if busy.get(name, 0) < limit:
                return name
            if not self.is_down(name):
                return None  # the backend to use is up but full: wait for it
        return None

    def primary(self, preferred: str | None = None) -> Generator:
        """The backend a new prompt will most likely go to (for its capabilities)."""
        return self.generators[self.candidates(preferred)[0]]
