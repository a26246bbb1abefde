"""The outbox: every effect crowdcut has on Discord, as rows, before it happens.

A row is written in the same transaction as the change that causes it (a clip recorded,
a job's state moved, a member forgotten) and drained by the outbox worker
(:mod:`bot.services.outbox`), which retries it with capped backoff until it is done.
Rows with the same ``key`` coalesce while they wait: a job's status message is edited to
its latest state once, not once per state it went through.

States: ``pending`` (waiting, maybe for ``next_attempt_at``) → ``running`` (claimed) →
``done`` | ``failed`` (given up, with the reason). A ``running`` row found at start-up was
cut short by a kill: it goes back to ``pending`` and its handler runs again, which is why
every handler is idempotent (message creates carry a nonce and look for their own post
before sending again; edits, reactions and deletes can be repeated).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"

# kinds of effect
POST_CLIP = "post_clip"  # payload: clip_id
STATUS = "status"  # payload: job_id (the text is rendered from the job when sent)
REACT = "react"  # payload: clip_id (add the vote reactions to its post)
DELETE_MESSAGE = "delete_message"  # payload: channel_id, message_id
POST_CUT = "post_cut"  # payload: cut_id, final (bool)


@dataclass
class Effect:
    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    state: str
    attempts: int
    created_at: float
    next_attempt_at: float | None = None
    last_error: str | None = None


def _effect(row: Any) -> Effect:
    return Effect(
        id=row[0],
        kind=row[1],
        key=row[2],
        payload=json.loads(row[3] or "{}"),
        state=row[4],
        attempts=row[5],
        created_at=row[6],
        next_attempt_at=row[7],
        last_error=row[8],
    )


_COLUMNS = "id, kind, key, payload, state, attempts, created_at, next_attempt_at, last_error"


class OutboxMixin:
    """The outbox methods of :class:`storage.Store` (kept here, one concern per file)."""

    db: Any
    _now: Any  # Store's clock

    def _enqueue(self, kind: str, key: str, payload: dict[str, Any], *, delay: float = 0) -> None:
        """Queue an effect inside the caller's transaction. A pending row with the same
        ``key`` takes the new payload instead (the effect happens once, up to date)."""
        now = self._now()
        self.db.execute(
            "insert into outbox (kind, key, payload, state, attempts, created_at, "
            "next_attempt_at) values (?, ?, ?, ?, 0, ?, ?) "
            "on conflict(key) where state = 'pending' do update set payload = excluded.payload",
            [kind, key, json.dumps(payload), PENDING, now, now + delay],
        )

    def _drop_effects(self, keys: list[str]) -> None:
        """Pending effects for things that no longer exist are done with (forget-me)."""
        if keys:
            self.db.execute(
                f"update outbox set state = ?, last_error = 'forgotten' where state = ? "
                f"and key in ({','.join('?' * len(keys))})",
                [DONE, PENDING, *keys],
            )

    def enqueue_effect(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Queue one effect on its own (the change that causes it is already stored)."""
        with self.db.atomic():
            self._enqueue(kind, key, payload)

    def claim_effects(self, now: float, limit: int, *, busy_keys: list[str]) -> list[Effect]:
        """Up to ``limit`` due effects, oldest first, now ``running``; none whose key is
        in flight (two edits of one message never race)."""
        marks = ",".join("?" * len(busy_keys)) or "''"
        with self.db.atomic():
            rows = self.db.execute(
                f"select {_COLUMNS} from outbox where state = ? and "
                f"coalesce(next_attempt_at, 0) <= ? and key not in ({marks}) "
                "order by next_attempt_at, id limit ?",
                [PENDING, now, *busy_keys, limit],
            ).fetchall()
            effects = [_effect(r) for r in rows]
            for e in effects:
                self.db.execute(
                    "update outbox set state = ?, attempts = attempts + 1 where id = ?",
                    [RUNNING, e.id],
                )
                e.state, e.attempts = RUNNING, e.attempts + 1
        return effects

    def finish_effect(self, effect_id: int) -> None:
        self.db.execute(
            "update outbox set state = ?, last_error = null where id = ?", [DONE, effect_id]
        )

    def retry_effect(
        self, effect_id: int, *, next_attempt_at: float, error: str, count: bool = True
    ) -> None:
        """Back to ``pending`` until ``next_attempt_at``. A newer pending row with the same
        key (a later state) wins: this one is then dropped as done."""
        with self.db.atomic():
            row = self.db.execute(
                "select key, attempts from outbox where id = ?", [effect_id]
            ).fetchone()
            if row is None:
                return
            newer = self.db.execute(
                "select 1 from outbox where key = ? and state = ? and id != ?",
                [row[0], PENDING, effect_id],
            ).fetchone()
            if newer:
                self.db.execute(
                    "update outbox set state = ?, last_error = ? where id = ?",
                    [DONE, "superseded", effect_id],
                )
                return
            self.db.execute(
                "update outbox set state = ?, next_attempt_at = ?, last_error = ?, "
                "attempts = attempts - ? where id = ?",
                [PENDING, next_attempt_at, error[:500], 0 if count else 1, effect_id],
            )

    def fail_effect(self, effect_id: int, *, error: str) -> None:
        self.db.execute(
            "update outbox set state = ?, last_error = ? where id = ?",
            [FAILED, error[:500], effect_id],
        )

    def requeue_running_effects(self) -> int:
        """At start-up: effects a killed process had claimed run again (idempotently)."""
        with self.db.atomic():
            cur = self.db.execute(
                "update outbox set state = ? where state = ? and key not in "
                "(select key from outbox where state = ?)",
                [PENDING, RUNNING, PENDING],
            )
            n = cur.rowcount
            # a later pending row already carries the newest state of that key; it inherits
            # the cut-short try, so that its handler knows an earlier send may have landed
            self.db.execute(
                "update outbox set attempts = max(attempts, (select max(r.attempts) from "
                "outbox r where r.key = outbox.key and r.state = ?)) where state = ? and key in "
                "(select key from outbox where state = ?)",
                [RUNNING, PENDING, RUNNING],
            )
            self.db.execute(
                "update outbox set state = ?, last_error = 'superseded' where state = ?",
                [DONE, RUNNING],
            )
        return n

    def hasten_effects(self, error_prefix: str) -> int:
        """Make pending effects that last failed with ``error_prefix`` due now (a permission
        they waited for may have come back); returns how many."""
        cur = self.db.execute(
            "update outbox set next_attempt_at = ? where state = ? and last_error like ?",
            [self._now(), PENDING, error_prefix.replace("%", "") + "%"],
        )
        return cur.rowcount

    def effects(self, state: str | None = None, kind: str | None = None) -> list[Effect]:
        """Rows of the outbox (tests, the operator's report)."""
        where, args = ["1=1"], []
        if state:
            where.append("state = ?")
            args.append(state)
        if kind:
            where.append("kind = ?")
            args.append(kind)
        rows = self.db.execute(
            f"select {_COLUMNS} from outbox where {' and '.join(where)} order by id", args
        ).fetchall()
        return [_effect(r) for r in rows]

    def outbox_counts(self) -> dict[str, int]:
        return {
            r[0]: r[1]
            for r in self.db.execute("select state, count(*) from outbox group by state").fetchall()
        }
