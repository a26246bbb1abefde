"""``Store``: the one object with named methods over crowdcut's SQLite database.

No SQL lives outside ``storage/``. ``Store`` is synchronous (SQLite is);
``AsyncStore`` wraps it for asyncio the way datasette does: every write goes to
one writer thread that owns the writing connection, in order, and reads run in a
small executor with a connection per thread (WAL lets them read while the
writer writes). Multi-step changes run in ``db.atomic()``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlite_utils import Database

from bot.errors import StorageFull
from storage.migrations import migrations
from storage.models import (
    ACTIVE_JOB_STATES,
    CANCELED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    SUBMITTED,
    AuditEntry,
    Charge,
    Clip,
    Cut,
    Job,
    Member,
    Override,
    Project,
    Render,
    Slot,
    Vote,
    Waiting,
    from_row,
)
from storage.outbox import DELETE_MESSAGE, POST_CLIP, POST_CUT, REACT, STATUS, OutboxMixin
from storage.pages import PageClip, PublicProject

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def reader(fn: Callable[P, R]) -> Callable[P, R]:
    """Mark a ``Store`` method as read-only: ``AsyncStore`` may run it on a reader thread."""
    fn.__crowdcut_reader__ = True  # type: ignore[attr-defined]
    return fn


def _connect(path: Path) -> Database:
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    db = Database(conn)
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=30000")
    return db


class Store(OutboxMixin):
    """Named methods over the database. Open with ``Store(path)``; migrations apply at once."""

    def __init__(self, path: Path | str, *, migrate: bool = True) -> None:
        self.path = Path(path)
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = _connect(self.path)
        if migrate:
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=NORMAL")
            migrations.apply(self.db)

    def close(self) -> None:
        self.db.close()

    def _now(self) -> float:
        return time.time()

    # ------------------------------------------------------------------ plumbing
    # Plain statements for the hot paths: sqlite-utils' table objects look the schema up
    # (table names, primary keys) on every call, which costs more than the query itself.
    def _rows(
        self,
        table: str,
        where: str,
        args: list[Any] | tuple[Any, ...] = (),
        *,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        sql = f"select * from {table} where {where}"
        if order_by:
            sql += f" order by {order_by}"
        if limit is not None:
            sql += f" limit {int(limit)}"
        return list(self.db.query(sql, list(args)))

    def _one(
        self,
        cls: type[T],
        table: str,
        where: str,
        args: list[Any] | tuple[Any, ...] = (),
        *,
        order_by: str | None = None,
    ) -> T | None:
        rows = self._rows(table, where, args, order_by=order_by, limit=1)
        return from_row(cls, rows[0]) if rows else None

    def _update(self, table: str, pk: int, changes: dict[str, Any]) -> None:
        cols = ", ".join(f"{k} = ?" for k in changes)
        self.db.execute(f"update {table} set {cols} where id = ?", [*changes.values(), pk])

    def _insert(self, table: str, row: dict[str, Any]) -> int:
        cols = ", ".join(row)
        marks = ", ".join("?" * len(row))
        cur = self.db.execute(f"insert into {table} ({cols}) values ({marks})", list(row.values()))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ schema
    @reader
    def applied_migrations(self) -> list[str]:
        return [m.name for m in migrations.applied(self.db)]

    # ------------------------------------------------------------------ projects
    def create_project(
        self,
        *,
        guild_id: int,
        channel_id: int,
        title: str,
        created_by: int | None,
        slot_plan: list[Slot],
        song_key: str | None = None,
        song_name: str | None = None,
        song_seconds: float | None = None,
        song_credit: str | None = None,
        state: str = "draft",
    ) -> Project:
        row = {
            "guild_id": guild_id,
            "channel_id": channel_id,
            "title": title,
            "state": state,
            "created_by": created_by,
            "created_at": self._now(),
            "slot_plan": json.dumps([s.__dict__ for s in slot_plan]),
            "song_key": song_key,
            "song_name": song_name,
            "song_seconds": song_seconds,
            "song_credit": song_credit or None,
        }
        pk = self._insert("projects", row)
        return self.get_project(pk)  # type: ignore[return-value]

    def set_song_credit(self, project_id: int, credit: str | None) -> None:
        self._update("projects", project_id, {"song_credit": credit or None})

    @reader
    def get_project(self, project_id: int) -> Project | None:
        return self._one(Project, "projects", "id = ?", [project_id])

    @reader
    def current_project(self, guild_id: int, channel_id: int | None = None) -> Project | None:
        """The newest project of a guild (in a channel if given) that is not yet approved."""
        where, args = "guild_id = ? and state != 'approved'", [guild_id]
        if channel_id is not None:
            where += " and channel_id = ?"
            args.append(channel_id)
        return self._one(Project, "projects", where, args, order_by="id desc")

    @reader
    def list_projects(
        self, guild_id: int | None = None, states: Iterable[str] | None = None
    ) -> list[Project]:
        where, args = ["1=1"], []
        if guild_id is not None:
            where.append("guild_id = ?")
            args.append(guild_id)
        if states:
            states = list(states)
            where.append(f"state in ({','.join('?' * len(states))})")
            args.extend(states)
        return [
            from_row(Project, r)
            for r in self._rows("projects", " and ".join(where), args, order_by="id")  # type: ignore[misc]
        ]

    def set_project_state(
        self,
        project_id: int,
        state: str,
        *,
        by: int | None = None,
        voting_ends_at: float | None = None,
    ) -> Project:
        now = self._now()
        changes: dict[str, Any] = {"state": state}
        if state == "open":
            changes["opened_at"] = now
            changes["closed_at"] = None
            changes["voting_ends_at"] = voting_ends_at
        elif state == "closed":
            changes["closed_at"] = now
        elif state == "approved":
            changes["approved_at"] = now
            changes["approved_by"] = by
        self._update("projects", project_id, changes)
        return self.get_project(project_id)  # type: ignore[return-value]

    def set_project_song(
        self,
        project_id: int,
        *,
        song_key: str,
        song_name: str,
        song_seconds: float,
        slot_plan: list[Slot],
    ) -> Project:
        self._update(
            "projects",
            project_id,
            {
                "song_key": song_key,
                "song_name": song_name,
                "song_seconds": song_seconds,
                "slot_plan": json.dumps([s.__dict__ for s in slot_plan]),
            },
        )
        return self.get_project(project_id)  # type: ignore[return-value]

    def set_slot_plan(self, project_id: int, slot_plan: list[Slot]) -> Project:
        """Replace a project's slot plan (a moderator's re-plan, split, merge or hint)."""
        self._update(
            "projects", project_id, {"slot_plan": json.dumps([s.__dict__ for s in slot_plan])}
        )
        return self.get_project(project_id)  # type: ignore[return-value]

    @reader
    def slots_in_use(self, project_id: int) -> set[int]:
        """The slots of a project that a clip, a pin or a job not yet finished names."""
        rows = self.db.execute(
            "select slot from clips where project_id = ? and slot is not null "
            "union select slot from overrides where project_id = ? and slot is not null "
            "union select slot from jobs where project_id = ? and slot is not null "
            "and state in (?,?,?)",
            [project_id, project_id, project_id, *ACTIVE_JOB_STATES],
        ).fetchall()
        return {int(r[0]) for r in rows}

    def set_project_backend(self, project_id: int, backend: str | None) -> Project:
        """A moderator's choice of generator for a project's new jobs (None: the default)."""
        self._update("projects", project_id, {"backend": backend})
        return self.get_project(project_id)  # type: ignore[return-value]

    @reader
    def project_backends(self, project_ids: Iterable[int]) -> dict[int, str | None]:
        ids = list(set(project_ids))
        if not ids:
            return {}
        rows = self.db.execute(
            f"select id, backend from projects where id in ({','.join('?' * len(ids))})", ids
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    @reader
    def projects_due_to_close(self, now: float) -> list[Project]:
        return [
            from_row(Project, r)
            for r in self._rows(
                "projects",  # type: ignore[misc]
                "state = 'open' and voting_ends_at is not null and voting_ends_at <= ?",
                [now],
            )
        ]

    # ---- project style
    # How a project's cut looks and how its prompts chain: the transition, its length in
    # beats, how a short clip fills its slot, and chain mode (m006).
    def set_project_style(self, project_id: int, changes: dict[str, Any]) -> Project:
        """Change some of ``transition``, ``transition_beats``, ``fit`` and ``chain_mode``
        (the caller validated them); the others keep their values."""
        allowed = {"transition", "transition_beats", "fit", "chain_mode"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"not a style setting: {sorted(unknown)}")
        if changes:
            row = {k: int(v) if k == "chain_mode" else v for k, v in changes.items()}
            self._update("projects", project_id, row)
        return self.get_project(project_id)  # type: ignore[return-value]

    # ------------------------------------------------------------------ members
    def upsert_member(self, member_id: int, name: str, *, is_bot: bool = False) -> Member:
        existing = self.get_member(member_id)
        if existing is None:
            self._insert(
                "members",
                {"id": member_id, "name": name, "is_bot": int(is_bot), "first_seen": self._now()},
            )
        elif existing.name != name or existing.is_bot != is_bot:
            self._update("members", member_id, {"name": name, "is_bot": int(is_bot)})
        return self.get_member(member_id)  # type: ignore[return-value]

    @reader
    def get_member(self, member_id: int) -> Member | None:
        return self._one(Member, "members", "id = ?", [member_id])

    @reader
    def forgotten_member_ids(self) -> set[int]:
        return {
            r[0] for r in self.db.execute("select id from members where forgotten_at is not null")
        }

    @reader
    def member_names(self, ids: Iterable[int]) -> dict[int, str]:
        ids = list(set(ids))
        if not ids:
            return {}
        q = f"select id, name, forgotten_at from members where id in ({','.join('?' * len(ids))})"
        return {
            r["id"]: ("anonymous" if r["forgotten_at"] else r["name"])
            for r in self.db.query(q, ids)
        }

    def forget_member(self, member_id: int, *, keep_clip_ids: Iterable[int] = ()) -> dict[str, Any]:
        """Delete a member's prompts, images, votes and unused clips.

        Clips in ``keep_clip_ids`` (those in an approved cut) stay, marked anonymous; their
        jobs stay with the prompt kept (it is credited in the published video) but the
        reference image link is dropped. Returns what was removed, including the media
        keys that no longer have a reference (the caller deletes those files) and the
        Discord messages that showed the deleted prompts and clips (``messages``: channel
        id, message id), for the caller to delete there too.
        """
        keep = set(keep_clip_ids)
        with self.db.atomic():
            clips = [from_row(Clip, r) for r in self._rows("clips", "member_id = ?", [member_id])]
            drop_clips = [c for c in clips if c.id not in keep]  # type: ignore[union-attr]
            kept_clips = [c for c in clips if c.id in keep]  # type: ignore[union-attr]
            jobs = [from_row(Job, r) for r in self._rows("jobs", "member_id = ?", [member_id])]
            kept_job_ids = {c.job_id for c in kept_clips}  # type: ignore[union-attr]
            media = {c.media_key for c in drop_clips}  # type: ignore[union-attr]
            media |= {j.image_key for j in jobs if j.image_key}  # type: ignore[union-attr]
            for c in drop_clips:
                self.db.execute("delete from reactions where clip_id = ?", [c.id])
                self.db.execute("delete from votes where clip_id = ?", [c.id])
                self.db.execute("delete from overrides where clip_id = ?", [c.id])
                self.db.execute("delete from clips where id = ?", [c.id])
            for c in kept_clips:
                self._update("clips", c.id, {"anonymous": 1})
            n_votes = self.db.execute(
                "select count(*) from votes where voter_id = ?", [member_id]
            ).fetchone()[0]
            self.db.execute("delete from votes where voter_id = ?", [member_id])
            self.db.execute("delete from reactions where user_id = ?", [member_id])
            dropped_jobs = 0
            for j in jobs:
                if j.id in kept_job_ids:  # type: ignore[union-attr]
                    self._update("jobs", j.id, {"image_key": None})  # type: ignore[union-attr]
                else:
                    self.db.execute("delete from jobs where id = ?", [j.id])  # type: ignore[union-attr]
                    dropped_jobs += 1
            self.db["members"].upsert(
                {"id": member_id, "name": "anonymous", "forgotten_at": self._now()}, pk="id"
            )
            # cuts not approved yet that show one of their clips are withdrawn (their
            # previews, manifests and storyboards name the member); renders of them are
            # stale. Approved cuts keep the clips, credited anonymously: their video, whose
            # credits roll names the member, is rendered again (RECREDIT) and its post edited
            withdrawn = self._withdraw_cuts_showing({c.id for c in clips})  # type: ignore[union-attr]
            recredited = self._recredit_cuts_showing({c.id for c in kept_clips})  # type: ignore[union-attr]
            for cut in withdrawn:
                media |= {
                    k
                    for k in (cut.master_key, cut.preview_key, cut.manifest_key, cut.storyboard_key)
                    if k
                }
            still_used = self._media_keys_in_use(media)
            messages = [
                (c.channel_id, c.message_id)
                for c in drop_clips  # type: ignore[union-attr]
                if c.channel_id and c.message_id
            ]
            messages += [
                (j.channel_id, j.status_message_id)
                for j in jobs  # type: ignore[union-attr]
                if j.id not in kept_job_ids and j.channel_id and j.status_message_id
            ]
            for cut in withdrawn:
                channel = self._project_channel(cut.project_id)
                if cut.message_id and channel:
                    messages.append((channel, cut.message_id))
            # the posts come down from the channel too, as durable work; effects still
            # waiting for what is gone are dropped
            gone = [f"{STATUS}:{j.id}" for j in jobs if j.id not in kept_job_ids]  # type: ignore[union-attr]
            gone += [f"{k}:{c.id}" for c in drop_clips for k in (POST_CLIP, REACT)]  # type: ignore[union-attr]
            self._drop_effects(gone)
            for channel_id, message_id in messages:
                self._enqueue(
                    DELETE_MESSAGE,
                    f"{DELETE_MESSAGE}:{message_id}",
                    {"channel_id": channel_id, "message_id": message_id},
                )
        return {
            "messages": messages,
            "jobs": dropped_jobs,
            "clips": len(drop_clips),
            "kept_clips": len(kept_clips),
            "votes": n_votes,
            "withdrawn_cuts": len(withdrawn),
            "recredited_cuts": recredited,
            "orphaned_media": sorted(media - still_used),
        }

    def _withdraw_cuts_showing(self, clip_ids: set[int]) -> list[Cut]:
        """Delete the unapproved cuts that show any of ``clip_ids``; mark waiting renders of
        them stale. Returns the cuts as they were (for their files and posts)."""
        if not clip_ids:
            return []
        gone = []
        for row in self._rows("cuts", "state != 'approved'"):
            cut = from_row(Cut, row)
            if any(s.get("clip_id") in clip_ids for s in cut.slots):  # type: ignore[union-attr]
                gone.append(cut)
                self.db.execute("delete from cuts where id = ?", [cut.id])  # type: ignore[union-attr]
        for row in self._rows("renders", "state in ('pending', 'running')"):
            slots = json.loads(row.get("slots") or "[]")
            if any(s.get("clip_id") in clip_ids for s in slots):
                self.db.execute(
                    "update renders set state = 'stale', error = 'a member was forgotten' "
                    "where id = ?",
                    [row["id"]],
                )
        return gone  # type: ignore[return-value]

    def _recredit_cuts_showing(self, clip_ids: set[int]) -> int:
        """Approved cuts that show any of ``clip_ids`` (kept, now anonymous): their slot
        records credit "anonymous", and a ``recredit`` render of each is queued (one per
        cut: a waiting one takes the new records). Returns how many."""
        if not clip_ids:
            return 0
        n = 0
        for row in self._rows("cuts", "state = 'approved'"):
            cut = from_row(Cut, row)
            slots = cut.slots  # type: ignore[union-attr]
            if not any(s.get("clip_id") in clip_ids for s in slots):
                continue
            for s in slots:
                if s.get("clip_id") in clip_ids:
                    s["author"] = "anonymous"
            self._update("cuts", cut.id, {"slots": json.dumps(slots)})  # type: ignore[union-attr]
            waiting = self._one(Render, "renders",
                                "kind = 'recredit' and cut_id = ? and state = 'pending'",
                                [cut.id])  # type: ignore[union-attr]  # fmt: skip
            if waiting is not None:
                self._update("renders", waiting.id, {"slots": json.dumps(slots)})
            else:
                now = self._now()
                self._insert(
                    "renders",
                    {
                        "project_id": cut.project_id,  # type: ignore[union-attr]
                        "kind": "recredit",
                        "identity": cut.identity,  # type: ignore[union-attr]
                        "slots": json.dumps(slots),
                        "state": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "requested_by": cut.approved_by,  # type: ignore[union-attr]
                        "channel_id": self._project_channel(cut.project_id),  # type: ignore[union-attr]
                        "upload_limit": self._latest_upload_limit(cut.project_id),  # type: ignore[union-attr]
                        "cut_id": cut.id,  # type: ignore[union-attr]
                        "created_at": now,
                    },
                )
            n += 1
        return n

    def _latest_upload_limit(self, project_id: int) -> int | None:
        row = self.db.execute(
            "select upload_limit from renders where project_id = ? and upload_limit is not null "
            "order by id desc limit 1",
            [project_id],
        ).fetchone()
        return row[0] if row else None

    @reader
    def latest_upload_limit(self, project_id: int) -> int | None:
        """The server's upload limit as of the project's latest render that recorded one."""
        return self._latest_upload_limit(project_id)

    def recredit_cut(
        self,
        render_id: int,
        *,
        identity: str,
        master_key: str,
        preview_key: str,
        manifest_key: str,
        storyboard_key: str | None,
        preview_bytes: int | None,
    ) -> list[str]:
        """A ``recredit`` render is done: the approved cut takes its files (and the identity
        of what they show) and its post is edited, in one transaction. Returns the media
        keys of the files it no longer uses that nothing else uses (to delete)."""
        with self.db.atomic():
            render = self.get_render(render_id)
            assert render is not None and render.cut_id is not None
            cut = self.get_cut(render.cut_id)
            assert cut is not None
            old = {cut.master_key, cut.preview_key, cut.manifest_key, cut.storyboard_key}
            self._update(
                "cuts",
                cut.id,
                {"master_key": master_key, "preview_key": preview_key,
                 "manifest_key": manifest_key, "storyboard_key": storyboard_key,
                 "preview_bytes": preview_bytes, "identity": identity,
                 "slots": json.dumps(render.slots)},
            )  # fmt: skip
            self._update(
                "renders",
                render_id,
                {"state": "done", "progress": 1.0, "error": None, "finished_at": self._now()},
            )
            self._enqueue(
                POST_CUT,
                f"cut:{cut.id}:recredit",
                {"cut_id": cut.id, "render_id": render_id, "final": True, "edit": True},
            )
            gone = {k for k in old if k}
            gone -= {master_key, preview_key, manifest_key, storyboard_key}
            return sorted(gone - self._media_keys_in_use(gone))

    def _media_keys_in_use(self, keys: set[str]) -> set[str]:
        if not keys:
            return set()
        ks = list(keys)
        marks = ",".join("?" * len(ks))
        used = {
            r[0]
            for r in self.db.execute(
                f"select media_key from clips where media_key in ({marks})", ks
            )
        }
        used |= {
            r[0]
            for r in self.db.execute(f"select image_key from jobs where image_key in ({marks})", ks)
        }
        used |= {
            r[0]
            for r in self.db.execute(
                f"select song_key from projects where song_key in ({marks})", ks
            )
        }
        for column in ("master_key", "preview_key", "manifest_key", "storyboard_key"):
            used |= {
                r[0]
                for r in self.db.execute(
                    f"select {column} from cuts where {column} in ({marks})", ks
                )
            }
        return used

    # ------------------------------------------------------------------ jobs
    def add_job(
        self,
        *,
        project_id: int,
        member_id: int,
        prompt: str,
        channel_id: int | None,
        duration: float,
        aspect: str,
        seed: int,
        image_key: str | None = None,
        slot: int | None = None,
        extends_clip_id: int | None = None,
        lineage: str | None = None,
        moderation: str = "none",
        max_active: int | None = None,
    ) -> Job:
        """Queue a job. With ``max_active``, raise ``QuotaFull`` when the member already has
        that many active jobs — checked in the same transaction as the insert."""
        with self.db.atomic():
            if max_active is not None:
                n = self._count_active(member_id)
                if n >= max_active:
                    raise QuotaFull(n)
            pk = self._insert(
                "jobs",
                {
                    "project_id": project_id,
                    "member_id": member_id,
                    "channel_id": channel_id,
                    "prompt": prompt,
                    "image_key": image_key,
                    "slot": slot,
                    "duration": duration,
                    "aspect": aspect,
                    "seed": seed,
                    "extends_clip_id": extends_clip_id,
                    "lineage": lineage or ("extend" if extends_clip_id else None),
                    "state": QUEUED,
                    "moderation": moderation,
                    "attempts": 0,
                    "queued_at": self._now(),
                },
            )
            self._status_changed(pk)  # the status message that follows the job
        return self.get_job(pk)  # type: ignore[return-value]

    def _status_changed(self, job_id: int) -> None:
        """Queue an update of the job's status message (coalesced: the newest state)."""
        self._enqueue(STATUS, f"{STATUS}:{job_id}", {"job_id": job_id})

    def _project_guild(self, project_id: int) -> int | None:
        row = self.db.execute("select guild_id from projects where id = ?", [project_id]).fetchone()
        return row[0] if row else None

    def _project_channel(self, project_id: int) -> int | None:
        row = self.db.execute(
            "select channel_id from projects where id = ?", [project_id]
        ).fetchone()
        return row[0] if row else None

    def _count_active(self, member_id: int) -> int:
        return self.db.execute(
            "select count(*) from jobs where member_id = ? and state in (?,?,?)",
            [member_id, *ACTIVE_JOB_STATES],
        ).fetchone()[0]

    @reader
    def count_active_jobs(self, member_id: int) -> int:
        return self._count_active(member_id)

    @reader
    def get_job(self, job_id: int) -> Job | None:
        return self._one(Job, "jobs", "id = ?", [job_id])

    @reader
    def get_jobs(self, job_ids: Iterable[int]) -> dict[int, Job]:
        ids = list(set(job_ids))
        if not ids:
            return {}
        rows = self._rows("jobs", f"id in ({','.join('?' * len(ids))})", ids)
        return {r["id"]: from_row(Job, r) for r in rows}  # type: ignore[misc]

    @reader
    def jobs_by_state(self, *states: str) -> list[Job]:
        marks = ",".join("?" * len(states))
        return [
            from_row(Job, r)
            for r in self._rows("jobs", f"state in ({marks})", list(states), order_by="id")  # type: ignore[misc]
        ]

    @reader
    def member_jobs(self, member_id: int, *, active_only: bool = True) -> list[Job]:
        where, args = "member_id = ?", [member_id]
        if active_only:
            where += " and state in (?,?,?)"
            args += list(ACTIVE_JOB_STATES)
        return [
            from_row(Job, r)
            for r in self._rows("jobs", where, args, order_by="id")  # type: ignore[misc]
        ]

    @reader
    def dispatchable_jobs(self) -> list[Job]:
        """Queued jobs cleared for generation (moderation none/approved), oldest first."""
        return [
            from_row(Job, r)
            for r in self._rows(
                "jobs",  # type: ignore[misc]
                "state = ? and moderation in ('none', 'approved')",
                [QUEUED],
                order_by="id",
            )
        ]

    @reader
    def next_dispatchable_jobs(self, now: float, per_member: int) -> list[Waiting]:
        """The dispatcher's view: each member's first ``per_member`` jobs that may start
        now (cleared, backoff over), oldest first — not the whole queue, and only the
        columns fair order and routing need (it runs at every dispatch)."""
        return [
            Waiting(*r)
            for r in self.db.execute(
                # ranked over idx_jobs_fair_order alone, then only the chosen rows are read
                "select id, project_id, member_id, queued_at, next_attempt_at, duration, image_key "
                "from jobs where id in (select id from (select id, row_number() "
                "over (partition by member_id order by queued_at, id) as rn from jobs "
                "where state = ? and moderation in ('none', 'approved') "
                "and coalesce(next_attempt_at, 0) <= ?) where rn <= ?) order by id",
                [QUEUED, now, per_member],
            ).fetchall()
        ]

    @reader
    def last_dispatch_by_member(self, member_ids: Iterable[int] | None = None) -> dict[int, float]:
        """When each member's last job was dispatched (of ``member_ids`` when given)."""
        where, args = "submitted_at is not null", []
        if member_ids is not None:
            ids = list(set(member_ids))
            if not ids:
                return {}
            where += f" and member_id in ({','.join('?' * len(ids))})"
            args = ids
        return {
            r["member_id"]: r["t"]
            for r in self.db.query(
                f"select member_id, max(submitted_at) as t from jobs where {where} "
                "group by member_id",
                args,
            )
        }

    def claim_job(
        self,
        job_id: int,
        backend: str,
        *,
        submit_key: str | None = None,
        model: str | None = None,
        requested_seconds: float | None = None,
    ) -> Job | None:
        """queued → submitted, only if still queued (a cancel may have won). None if not.

        ``submit_key`` is the UUID this submission will carry; it is stored here, before
        anything is sent, so that a crash mid-send can be resolved by looking it up."""
        with self.db.atomic():
            cur = self.db.execute(
                "update jobs set state = ?, backend = ?, tries = tries + 1, submitted_at = ?, "
                "provider_job_id = null, progress = 0, error = null, submit_key = ?, "
                "model = ?, requested_seconds = ? where id = ? and state = ?",
                [
                    SUBMITTED,
                    backend,
                    self._now(),
                    submit_key,
                    model,
                    requested_seconds,
                    job_id,
                    QUEUED,
                ],
            )
            if cur.rowcount != 1:
                return None
            self._status_changed(job_id)
        return self.get_job(job_id)

    def set_provider_job_id(
        self, job_id: int, provider_job_id: str, *, charge: Charge | None = None
    ) -> None:
        """The provider confirmed a submission: store its job id, count the submission, and
        write its ledger row, in one transaction. Stored whatever the job's state (a job
        canceled meanwhile still has to be canceled at the provider)."""
        with self.db.atomic():
            self.db.execute(
                "update jobs set provider_job_id = ?, attempts = attempts + 1 where id = ?",
                [provider_job_id, job_id],
            )
            if charge is not None:
                self._ledger_row(job_id, charge)

    def _ledger_row(self, job_id: int, charge: Charge) -> None:
        self.record_charge(
            job_id,
            backend=charge.backend,
            model=charge.model,
            kind=charge.kind,
            seconds=charge.seconds,
            amount=charge.amount,
            currency=charge.currency,
        )

    def mark_running(self, job_id: int, progress: float | None) -> None:
        with self.db.atomic():
            cur = self.db.execute(
                "update jobs set state = ?, progress = coalesce(?, progress), "
                "started_at = coalesce(started_at, ?) where id = ? and state in (?, ?)",
                [RUNNING, progress, self._now(), job_id, SUBMITTED, RUNNING],
            )
            if cur.rowcount == 1:
                self._status_changed(job_id)

    def requeue_job(
        self,
        job_id: int,
        *,
        next_attempt_at: float,
        error: str,
        error_kind: str,
        refund: Charge | None = None,
    ) -> bool:
        """Back to the queue for a *new* submission (the last one never reached the
        provider, or the provider reported it failed, or its output is gone for good).
        ``refund`` is written when the provider does not bill the failed generation."""
        with self.db.atomic():
            cur = self.db.execute(
                "update jobs set state = ?, next_attempt_at = ?, error = ?, error_kind = ?, "
                "provider_job_id = null, submit_key = null, progress = null "
                "where id = ? and state in (?, ?)",
                [QUEUED, next_attempt_at, error, error_kind, job_id, SUBMITTED, RUNNING],
            )
            if cur.rowcount == 1:
                self._status_changed(job_id)
                if refund is not None:
                    self._ledger_row(job_id, refund)
        return cur.rowcount == 1

    def fail_job(
        self,
        job_id: int,
        *,
        error: str,
        error_kind: str,
        refund: Charge | None = None,
        refused: bool = False,
    ) -> bool:
        """Fail an active job for good. ``refund`` as in :meth:`requeue_job`; ``refused``
        marks the job's ledger rows so refused content does not count against the member."""
        with self.db.atomic():
            cur = self.db.execute(
                "update jobs set state = ?, error = ?, error_kind = ?, finished_at = ? "
                "where id = ? and state in (?, ?, ?)",
                [FAILED, error, error_kind, self._now(), job_id, *ACTIVE_JOB_STATES],
            )
            if cur.rowcount == 1:
                self._status_changed(job_id)
                if refund is not None:
                    self._ledger_row(job_id, refund)
                if refused:
                    self.db.execute("update ledger set refused = 1 where job_id = ?", [job_id])
        return cur.rowcount == 1

    def cancel_job(self, job_id: int) -> Job | None:
        """Cancel an active job; returns the job as it was before, or None if not active."""
        with self.db.atomic():
            job = self.get_job(job_id)
            if job is None or job.state not in ACTIVE_JOB_STATES:
                return None
            self._update("jobs", job_id, {"state": CANCELED, "finished_at": self._now()})
            self._status_changed(job_id)
        return job

    def complete_job(
        self,
        job_id: int,
        *,
        media_key: str,
        duration: float,
        width: int,
        height: int,
        fps: float,
        has_audio: bool,
        size_bytes: int,
    ) -> Clip | None:
        """Record the job's clip and mark it done, in one transaction. At most one clip per
        job (unique index): a second completion returns the existing clip unchanged."""
        with self.db.atomic():
            existing = self.clip_for_job(job_id)
            if existing is not None:
                return existing
            job = self.get_job(job_id)
            if job is None or job.state not in (SUBMITTED, RUNNING):
                return None
            now = self._now()
            clip_id = self._insert(
                "clips",
                {
                    "job_id": job_id,
                    "project_id": job.project_id,
                    "member_id": job.member_id,
                    "media_key": media_key,
                    "duration": duration,
                    "width": width,
                    "height": height,
                    "fps": fps,
                    "has_audio": int(has_audio),
                    "size_bytes": size_bytes,
                    "slot": job.slot,
                    "parent_clip_id": job.extends_clip_id,
                    "lineage": job.lineage,
                    # clips are voted on in the project's channel, wherever the prompt came from
                    "channel_id": self._project_channel(job.project_id) or job.channel_id,
                    "created_at": now,
                },
            )
            self._update(
                "jobs", job_id, {"state": DONE, "progress": 1.0, "finished_at": now, "error": None}
            )
            self._enqueue(POST_CLIP, f"{POST_CLIP}:{clip_id}", {"clip_id": clip_id})
            self._status_changed(job_id)
        return self.clip_for_job(job_id)

    def set_status_message(self, job_id: int, message_id: int) -> None:
        self._update("jobs", job_id, {"status_message_id": message_id})

    def set_moderation(
        self, job_id: int, moderation: str, *, message_id: int | None = None
    ) -> Job | None:
        """pending → approved / rejected (a rejected job is canceled). None if not pending."""
        with self.db.atomic():
            job = self.get_job(job_id)
            if job is None:
                return None
            if moderation in ("approved", "rejected") and job.moderation != "pending":
                return None
            changes: dict[str, Any] = {"moderation": moderation}
            if message_id is not None:
                changes["moderation_message_id"] = message_id
            if moderation == "rejected" and job.state == QUEUED:
                changes.update(
                    state=CANCELED,
                    finished_at=self._now(),
                    error="rejected by a moderator",
                    error_kind="rejected",
                )
            self._update("jobs", job_id, changes)
            self._status_changed(job_id)
        return self.get_job(job_id)

    @reader
    def recent_run_seconds(self, backend: str | None = None, limit: int = 20) -> list[float]:
        where, args = "state = 'done' and submitted_at is not null", []
        if backend:
            where += " and backend = ?"
            args.append(backend)
        return [
            r["d"]
            for r in self.db.query(
                f"select finished_at - submitted_at as d from jobs where {where} "
                f"order by finished_at desc limit ?",
                [*args, limit],
            )
        ]

    # ------------------------------------------------------------------ clips
    @reader
    def get_clip(self, clip_id: int) -> Clip | None:
        return self._one(Clip, "clips", "id = ?", [clip_id])

    @reader
    def clip_for_job(self, job_id: int) -> Clip | None:
        return self._one(Clip, "clips", "job_id = ?", [job_id])

    @reader
    def clip_by_message(self, message_id: int) -> Clip | None:
        return self._one(Clip, "clips", "message_id = ?", [message_id])

    @reader
    def project_clips(self, project_id: int) -> list[Clip]:
        return [
            from_row(Clip, r)
            for r in self._rows("clips", "project_id = ?", [project_id], order_by="id")  # type: ignore[misc]
        ]

    @reader
    def unposted_clips(self) -> list[Clip]:
        return [
            from_row(Clip, r)
            for r in self._rows("clips", "message_id is null", order_by="id")  # type: ignore[misc]
        ]

    def mark_clip_posted(self, clip_id: int, *, channel_id: int, message_id: int) -> None:
        """Record the clip's post (as soon as Discord answered); its vote reactions and the
        job's status link follow as effects of the same transaction."""
        with self.db.atomic():
            self._update(
                "clips",
                clip_id,
                {"channel_id": channel_id, "message_id": message_id, "posted_at": self._now()},
            )
            self._enqueue(REACT, f"{REACT}:{clip_id}", {"clip_id": clip_id})
            row = self.db.execute("select job_id from clips where id = ?", [clip_id]).fetchone()
            if row:
                self._status_changed(row[0])

    def enqueue_unposted_clips(self) -> int:
        """Queue a post for every clip without one (clips made before the outbox existed,
        or whose post was given up); returns how many."""
        with self.db.atomic():
            ids = [r[0] for r in self.db.execute("select id from clips where message_id is null")]
            for clip_id in ids:
                self._enqueue(POST_CLIP, f"{POST_CLIP}:{clip_id}", {"clip_id": clip_id})
        return len(ids)

    # ------------------------------------------------------------------ reactions and votes
    def apply_reaction(
        self,
        clip_id: int,
        user_id: int,
        emoji: str,
        *,
        added: bool,
        values: dict[str, int],
        at: float | None = None,
    ) -> Vote | None:
        """Record a vote reaction added or removed, then recompute the member's one vote
        on the clip: the latest vote reaction still present counts. ``values`` maps each
        vote emoji to +1 / -1. Returns the vote that now counts (None: no vote)."""
        at = self._now() if at is None else at
        with self.db.atomic():
            self._apply_vote_event(("react", clip_id, user_id, emoji, added, at))
            return self._recompute_vote(clip_id, user_id, values)

    def apply_reactions(
        self, events: list[tuple[int, int, str, bool, float]], *, values: dict[str, int]
    ) -> int:
        """Apply many vote reactions — (clip id, user id, emoji, added, at) — in order, in
        one transaction (the bulk form of ``apply_reaction``). Returns how many counted:
        see ``apply_vote_events``."""
        return self.apply_vote_events([("react", *e) for e in events], values=values)

    # The vote events ``apply_vote_events`` takes, one tuple each, in the gateway's order:
    #   ("react", clip id, user id, emoji, added, at)  a vote reaction added or removed
    #   ("clear", clip id, emoji or None)              reactions cleared: one emoji's, or all
    #   ("deleted", clip id, at)                       the clip's post was deleted
    def apply_vote_events(self, events: list[tuple[Any, ...]], *, values: dict[str, int]) -> int:
        """Apply vote events in order, in one transaction, each in its own savepoint: an
        event for a clip that no longer exists (its member was forgotten) or whose post was
        deleted is skipped, and one that fails is rolled back alone, so it never costs the
        other events of the batch their votes. Returns how many were applied."""
        applied = 0
        with self.db.atomic():
            live: dict[int, bool] = {}
            touched: set[tuple[int, int]] = set()
            for ev in events:
                clip_id = ev[1]
                if clip_id not in live:
                    live[clip_id] = self._clip_in_vote(clip_id)
                if not live[clip_id]:
                    continue
                try:
                    with self.db.atomic():
                        touched |= self._apply_vote_event(ev)
                except sqlite3.Error:
                    log.exception("vote event %r failed; the rest of the batch still counts", ev)
                    continue
                if ev[0] == "deleted":
                    live[clip_id] = False
                applied += 1
            for clip_id, user_id in touched:
                if live[clip_id]:
                    self._recompute_vote(clip_id, user_id, values)
        return applied

    def _clip_in_vote(self, clip_id: int) -> bool:
        return (
            self.db.execute(
                "select 1 from clips where id = ? and post_deleted_at is null", [clip_id]
            ).fetchone()
            is not None
        )

    def _apply_vote_event(self, ev: tuple[Any, ...]) -> set[tuple[int, int]]:
        """One event of ``apply_vote_events``; returns the (clip, user) votes to recompute."""
        kind, clip_id = ev[0], ev[1]
        if kind == "react":
            _, _, user_id, emoji, added, at = ev
            if added:
                self.db.execute(
                    "insert into reactions (clip_id, user_id, emoji, at) values (?,?,?,?) "
                    "on conflict(clip_id, user_id, emoji) do nothing",
                    [clip_id, user_id, emoji, at],
                )
            else:
                self.db.execute(
                    "delete from reactions where clip_id = ? and user_id = ? and emoji = ?",
                    [clip_id, user_id, emoji],
                )
            return {(clip_id, user_id)}
        if kind == "clear":
            emoji = ev[2]
            where, args = ("clip_id = ?", [clip_id])
            if emoji is not None:
                where, args = ("clip_id = ? and emoji = ?", [clip_id, emoji])
            users = {
                r[0] for r in self.db.execute(f"select user_id from reactions where {where}", args)
            }
            self.db.execute(f"delete from reactions where {where}", args)
            return {(clip_id, u) for u in users}
        if kind == "deleted":
            # Discord drops a deleted message's reactions: the clip's votes go with them
            self.db.execute("delete from reactions where clip_id = ?", [clip_id])
            self.db.execute("delete from votes where clip_id = ?", [clip_id])
            self._update("clips", clip_id, {"post_deleted_at": ev[2]})
            return set()
        raise ValueError(f"unknown vote event {kind!r}")

    def mark_post_deleted(self, clip_id: int, *, at: float | None = None) -> bool:
        """The clip's post is gone (a moderator deleted it): the clip leaves the vote and
        its votes are dropped. False when it had already left (or no longer exists)."""
        at = self._now() if at is None else at
        return bool(self.apply_vote_events([("deleted", clip_id, at)], values={}))

    def _recompute_vote(self, clip_id: int, user_id: int, values: dict[str, int]) -> Vote | None:
        rows = [
            r
            for r in self.db.execute(
                "select emoji, at from reactions where clip_id = ? and user_id = ? "
                "order by at desc, rowid desc",
                [clip_id, user_id],
            )
            if r[0] in values
        ]
        if not rows:
            self.db.execute(
                "delete from votes where clip_id = ? and voter_id = ?", [clip_id, user_id]
            )
            return None
        emoji, at = rows[0]
        self.db.execute(
            "insert into votes (clip_id, voter_id, value, emoji, voted_at) values (?,?,?,?,?) "
            "on conflict(clip_id, voter_id) do update set value = excluded.value, "
            "emoji = excluded.emoji, voted_at = excluded.voted_at",
            [clip_id, user_id, values[emoji], emoji, at],
        )
        return Vote(clip_id, user_id, values[emoji], emoji, at)

    def replace_reactions(
        self,
        clip_id: int,
        present: dict[str, set[int]],
        *,
        values: dict[str, int],
        at: float | None = None,
    ) -> dict[str, int]:
        """Reconcile: make the stored vote reactions of a clip equal ``present`` (emoji →
        users Discord reports now). Reactions we missed are dated ``at``; ones gone are
        dropped. Returns {"added": n, "removed": n}."""
        at = self._now() if at is None else at
        with self.db.atomic():
            if not self._clip_in_vote(clip_id):  # forgotten meanwhile, or its post deleted
                return {"added": 0, "removed": 0}
            stored = {
                (r[0], r[1])
                for r in self.db.execute(
                    "select user_id, emoji from reactions where clip_id = ?", [clip_id]
                )
            }
            wanted = {(u, e) for e, users in present.items() for u in users}
            # the up emoji is listed first in ``values``: with both missed, the later
            # insert (down) would win on rowid, so insert in reverse preference order
            order = {e: i for i, e in enumerate(values)}
            added = sorted(wanted - stored, key=lambda ue: -order.get(ue[1], 0))
            removed = stored - wanted
            for u, e in removed:
                self.db.execute(
                    "delete from reactions where clip_id = ? and user_id = ? and emoji = ?",
                    [clip_id, u, e],
                )
            for u, e in added:
                self.db.execute(
                    "insert into reactions (clip_id, user_id, emoji, at) values (?,?,?,?)",
                    [clip_id, u, e, at],
                )
            for u in {u for u, _ in added} | {u for u, _ in removed}:
                self._recompute_vote(clip_id, u, values)
        return {"added": len(added), "removed": len(removed)}

    @reader
    def clip_votes(self, clip_id: int) -> list[Vote]:
        return [
            from_row(Vote, r)
            for r in self._rows("votes", "clip_id = ?", [clip_id])  # type: ignore[misc]
        ]

    @reader
    def vote_tallies(self, project_id: int) -> dict[int, tuple[int, int]]:
        """clip id → (up, down) for every clip of a project in the vote (zeros included):
        a clip whose post was deleted is left out."""
        out = {
            r["id"]: (0, 0)
            for r in self.db.query(
                "select id from clips where project_id = ? and post_deleted_at is null",
                [project_id],
            )
        }
        for r in self.db.query(
            "select v.clip_id, sum(v.value > 0) as up, sum(v.value < 0) as down "
            "from votes v join clips c on c.id = v.clip_id where c.project_id = ? "
            "and c.post_deleted_at is null group by v.clip_id",
            [project_id],
        ):
            out[r["clip_id"]] = (r["up"], r["down"])
        return out

    # ------------------------------------------------------------------ cut overrides
    def set_override(
        self, project_id: int, clip_id: int, action: str, *, by: int, slot: int | None = None
    ) -> None:
        self.db["overrides"].upsert(
            {
                "project_id": project_id,
                "clip_id": clip_id,
                "action": action,
                "slot": slot,
                "by": by,
                "at": self._now(),
            },
            pk=("project_id", "clip_id"),
        )

    def set_in_point(self, clip_id: int, seconds: float) -> None:
        """Where the cut starts ``clip_id`` (0: its first frame)."""
        self._update("clips", clip_id, {"in_point": seconds or None})

    def clear_override(self, project_id: int, clip_id: int) -> None:
        self.db.execute(
            "delete from overrides where project_id = ? and clip_id = ?", [project_id, clip_id]
        )

    @reader
    def overrides(self, project_id: int) -> list[Override]:
        return [
            from_row(Override, r)
            for r in self._rows("overrides", "project_id = ?", [project_id], order_by="at")  # type: ignore[misc]
        ]

    # ------------------------------------------------------------------ cuts
    def save_cut(
        self,
        *,
        project_id: int,
        slots: list[dict[str, Any]],
        master_key: str | None,
        preview_key: str | None,
        manifest_key: str | None,
        created_by: int | None,
        state: str = "preview",
    ) -> Cut:
        pk = self._insert(
            "cuts",
            {
                "project_id": project_id,
                "state": state,
                "slots": json.dumps(slots),
                "master_key": master_key,
                "preview_key": preview_key,
                "manifest_key": manifest_key,
                "created_by": created_by,
                "created_at": self._now(),
            },
        )
        return self.get_cut(pk)  # type: ignore[return-value]

    @reader
    def get_cut(self, cut_id: int) -> Cut | None:
        return self._one(Cut, "cuts", "id = ?", [cut_id])

    @reader
    def latest_cut(self, project_id: int, state: str | None = None) -> Cut | None:
        where, args = "project_id = ?", [project_id]
        if state:
            where += " and state = ?"
            args.append(state)
        return self._one(Cut, "cuts", where, args, order_by="id desc")

    def approve_cut(self, cut_id: int, *, by: int, message_id: int | None = None) -> Cut:
        with self.db.atomic():
            cut = self.get_cut(cut_id)
            assert cut is not None
            now = self._now()
            self._update(
                "cuts",
                cut_id,
                {
                    "state": "approved",
                    "approved_by": by,
                    "approved_at": now,
                    "message_id": message_id,
                },
            )
            self._update(
                "projects",
                cut.project_id,
                {"state": "approved", "approved_by": by, "approved_at": now},
            )
        return self.get_cut(cut_id)  # type: ignore[return-value]

    @reader
    def approved_clip_ids(self, member_id: int | None = None) -> set[int]:
        ids: set[int] = set()
        for r in self.db.query("select slots from cuts where state = 'approved'"):
            for s in json.loads(r["slots"] or "[]"):
                if s.get("clip_id") is not None:
                    ids.add(s["clip_id"])
        if member_id is not None and ids:
            marks = ",".join("?" * len(ids))
            ids = {
                r[0]
                for r in self.db.execute(
                    f"select id from clips where member_id = ? and id in ({marks})",
                    [member_id, *ids],
                )
            }
        return ids

    # ------------------------------------------------------------------ audit
    def audit(
        self,
        action: str,
        *,
        actor_id: int | None,
        guild_id: int | None = None,
        project_id: int | None = None,
        target: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record a moderator (or member) action. The guild comes from the project when
        one is named, so callers need not look it up."""
        if guild_id is None and project_id is not None:
            guild_id = self._project_guild(project_id)
        self._insert(
            "audit_log",
            {
                "guild_id": guild_id,
                "project_id": project_id,
                "actor_id": actor_id,
                "action": action,
                "target": target,
                "details": json.dumps(details or {}),
                "at": self._now(),
            },
        )

    @reader
    def audit_log(self, guild_id: int | None = None, limit: int = 50) -> list[AuditEntry]:
        where, args = ("guild_id = ?", [guild_id]) if guild_id is not None else ("1=1", [])
        return [
            from_row(AuditEntry, r)
            for r in self._rows(
                "audit_log",  # type: ignore[misc]
                where,
                args,
                order_by="id desc",
                limit=limit,
            )
        ]

    # ------------------------------------------------------------------ ledger
    # One row per charge (see m002): a confirmed submission at its price, a negative
    # ``refund`` row for a failure the provider does not bill; ``refused`` marks the rows
    # of a job whose content the provider refused (they do not count against the member).
    def record_charge(
        self,
        job_id: int,
        *,
        backend: str,
        model: str | None,
        kind: str,
        seconds: float | None,
        amount: float,
        currency: str,
        refused: bool = False,
        at: float | None = None,
    ) -> int:
        """Write one ledger row for a job; returns its id. It opens no transaction of its
        own: call it inside the ``db.atomic()`` of the change that causes the charge."""
        row = self.db.execute(
            "select j.project_id, p.guild_id, j.member_id from jobs j "
            "left join projects p on p.id = j.project_id where j.id = ?",
            [job_id],
        ).fetchone()
        project_id, guild_id, member_id = row if row else (None, None, None)
        return self._insert(
            "ledger",
            {
                "job_id": job_id,
                "project_id": project_id,
                "guild_id": guild_id,
                "member_id": member_id,
                "backend": backend,
                "model": model,
                "kind": kind,
                "seconds": seconds,
                "amount": amount,
                "currency": currency,
                "refused": int(refused),
                "at": self._now() if at is None else at,
            },
        )

    @reader
    def spent(
        self,
        *,
        project_id: int | None = None,
        member_id: int | None = None,
        since: float | None = None,
        count_refused: bool = True,
    ) -> float:
        """The ledger's sum for a project and/or a member (refunds included), from
        ``since`` (epoch seconds) on; ``count_refused=False`` leaves out refused content."""
        where, args = ["1=1"], []
        for column, value in (("project_id", project_id), ("member_id", member_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if not count_refused:
            where.append("refused = 0")
        row = self.db.execute(
            f"select coalesce(sum(amount), 0) from ledger where {' and '.join(where)}", args
        ).fetchone()
        return float(row[0])

    @reader
    def uncharged_jobs(
        self, *, project_id: int | None = None, member_id: int | None = None
    ) -> list[Job]:
        """Active jobs of a project or of a member (either matches) whose current
        submission is not charged yet: queued, or sent without the provider's job id (the
        charge is written with that id). Budgets count them at their estimated price."""
        who, args = [], []
        for column, value in (("project_id", project_id), ("member_id", member_id)):
            if value is not None:
                who.append(f"{column} = ?")
                args.append(value)
        if not who:
            return []
        return [
            from_row(Job, r)
            for r in self._rows(
                "jobs",  # type: ignore[misc]
                f"({' or '.join(who)}) and state in (?,?,?) and provider_job_id is null",
                [*args, *ACTIVE_JOB_STATES],
                order_by="id",
            )
        ]

    @reader
    def ledger_totals(
        self, guild_id: int, *, project_id: int | None = None, since: float | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Spend of a guild, from ``since`` on: ``projects`` (every project of the guild),
        and ``members`` and ``backends`` (of ``project_id`` when given, else the guild).
        Each row has ``amount`` (refunds netted), ``generations`` (charged submissions) and
        ``refused`` (the part of ``amount`` spent on refused content); backends also have
        ``seconds`` (of video asked for) and members ``member_id``."""
        where, args = "guild_id = ?", [guild_id]
        if since is not None:
            where += " and at >= ?"
            args.append(since)
        sums = (
            "coalesce(sum(amount), 0) as amount, "
            "sum(kind = 'generation') as generations, "
            "coalesce(sum(case when refused then amount else 0 end), 0) as refused, "
            "coalesce(sum(case when kind = 'generation' then seconds else 0 end), 0) as seconds"
        )
        scoped, scoped_args = where, list(args)
        if project_id is not None:
            scoped += " and project_id = ?"
            scoped_args.append(project_id)

        def grouped(column: str, w: str, a: list[Any]) -> list[dict[str, Any]]:
            return list(
                self.db.query(
                    f"select {column}, {sums} from ledger where {w} "
                    f"group by {column} order by amount desc, {column}",
                    a,
                )
            )

        return {
            "projects": grouped("project_id", where, args),
            "members": grouped("member_id", scoped, scoped_args),
            "backends": grouped("backend", scoped, scoped_args),
        }

    # ------------------------------------------------------------------ stats
    @reader
    def job_counts(self, project_id: int | None = None) -> dict[str, int]:
        """Jobs per state: of one project, or of every project (operators only)."""
        where, args = ("where project_id = ?", [project_id]) if project_id is not None else ("", [])
        return {
            r["state"]: r["n"]
            for r in self.db.query(
                f"select state, count(*) as n from jobs {where} group by state", args
            )
        }

    # ---- renders
    # Previews and final cuts as durable work (bot.services.renders): a row per render,
    # claimed by the render worker; its completion, the cut it made and the POST_CUT
    # effect that publishes it are written in one transaction.
    def enqueue_render(
        self,
        *,
        project_id: int,
        kind: str,
        identity: str,
        slots: list[dict[str, Any]],
        requested_by: int | None,
        channel_id: int | None,
        upload_limit: int | None,
    ) -> tuple[Render, bool]:
        """Queue a render; returns it and whether it is new. A pending or running render of
        the same project, kind and identity is reused (two presses, one render); so is a
        final of that identity already done and not stale (two approvals, one video)."""
        with self.db.atomic():
            states = ["pending", "running"]
            if kind == "final":
                states.append("done")
            marks = ",".join("?" * len(states))
            same = self._one(
                Render,
                "renders",
                f"project_id = ? and kind = ? and identity = ? and state in ({marks})",
                [project_id, kind, identity, *states],
                order_by="id desc",
            )
            if same is not None:
                return same, False
            now = self._now()
            pk = self._insert(
                "renders",
                {
                    "project_id": project_id,
                    "kind": kind,
                    "identity": identity,
                    "slots": json.dumps(slots),
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "requested_by": requested_by,
                    "channel_id": channel_id,
                    "upload_limit": upload_limit,
                    "created_at": now,
                },
            )
        return self.get_render(pk), True  # type: ignore[return-value]

    @reader
    def get_render(self, render_id: int) -> Render | None:
        return self._one(Render, "renders", "id = ?", [render_id])

    @reader
    def project_renders(self, project_id: int) -> list[Render]:
        return [
            from_row(Render, r)  # type: ignore[misc]
            for r in self._rows("renders", "project_id = ?", [project_id], order_by="id")
        ]

    @reader
    def renders_in_flight(self) -> list[Render]:
        """Renders pending or running (tests, the operator's report)."""
        return [
            from_row(Render, r)  # type: ignore[misc]
            for r in self._rows("renders", "state in ('pending', 'running')", order_by="id")
        ]

    def claim_render(self, now: float) -> Render | None:
        """The oldest due pending render, now ``running`` (finals before previews)."""
        with self.db.atomic():
            render = self._one(
                Render,
                "renders",
                "state = ? and coalesce(next_attempt_at, 0) <= ?",
                ["pending", now],
                order_by="kind = 'preview', next_attempt_at, id",
            )
            if render is None:
                return None
            self._update(
                "renders", render.id, {"state": "running", "attempts": render.attempts + 1}
            )
        return self.get_render(render.id)

    def set_render_identity(
        self, render_id: int, identity: str, slots: list[dict[str, Any]]
    ) -> None:
        """A preview renders the cut current when it starts (the selection moved on)."""
        self._update("renders", render_id, {"identity": identity, "slots": json.dumps(slots)})

    def set_render_progress(self, render_id: int, progress: float) -> None:
        self._update("renders", render_id, {"progress": progress})

    def finish_render(
        self,
        render_id: int,
        *,
        master_key: str,
        preview_key: str,
        manifest_key: str,
        storyboard_key: str | None,
        preview_bytes: int | None,
    ) -> tuple[Render, Cut]:
        """The render is done: its cut is recorded and its post queued, in one transaction."""
        with self.db.atomic():
            render = self.get_render(render_id)
            assert render is not None
            now = self._now()
            cut_id = self._insert(
                "cuts",
                {
                    "project_id": render.project_id,
                    "state": "preview",
                    "slots": json.dumps(render.slots),
                    "master_key": master_key,
                    "preview_key": preview_key,
                    "manifest_key": manifest_key,
                    "created_by": render.requested_by,
                    "created_at": now,
                    "identity": render.identity,
                    "storyboard_key": storyboard_key,
                    "preview_bytes": preview_bytes,
                },
            )
            self._update(
                "renders",
                render_id,
                {"state": "done", "cut_id": cut_id, "progress": 1.0, "error": None,
                 "finished_at": now},
            )  # fmt: skip
            final = render.kind == "final"
            # one post per project's final (two approvals coalesce), one per preview
            key = f"cut:{render.project_id}:final" if final else f"cut:{cut_id}"
            self._enqueue(POST_CUT, key, {"cut_id": cut_id, "render_id": render_id, "final": final})
        return self.get_render(render_id), self.get_cut(cut_id)  # type: ignore[return-value]

    def stale_render(self, render_id: int, *, notice: bool) -> Render:
        """The selection changed while it rendered: never published as current. With
        ``notice``, a POST_CUT effect tells the channel so."""
        with self.db.atomic():
            self._update(
                "renders",
                render_id,
                {"state": "stale", "finished_at": self._now(),
                 "error": "the cut changed while it rendered"},
            )  # fmt: skip
            if notice:
                self._enqueue(POST_CUT, f"render:{render_id}:stale", {"render_id": render_id})
        return self.get_render(render_id)  # type: ignore[return-value]

    def retry_render(
        self, render_id: int, *, next_attempt_at: float, error: str, count: bool = True
    ) -> None:
        self.db.execute(
            "update renders set state = ?, next_attempt_at = ?, error = ?, "
            "attempts = attempts - ? where id = ?",
            ["pending", next_attempt_at, error[:500], 0 if count else 1, render_id],
        )

    def fail_render(self, render_id: int, *, error: str, notice: bool = False) -> None:
        """Given up (the reason is for the operator); with ``notice`` the channel is told."""
        with self.db.atomic():
            self._update(
                "renders",
                render_id,
                {"state": "failed", "error": error[:500], "finished_at": self._now()},
            )
            if notice:
                self._enqueue(POST_CUT, f"render:{render_id}:failed", {"render_id": render_id})

    def requeue_running_renders(self) -> int:
        """At start-up: renders a killed process left running go back to pending (their
        segments already cached are not rendered again)."""
        cur = self.db.execute(
            "update renders set state = ?, next_attempt_at = ? where state = ?",
            ["pending", self._now(), "running"],
        )
        return cur.rowcount

    # ---- web
    # What the project pages (``bot/web``) read, and the two changes moderators make to
    # them. The pages open the database read-only (``Store.open_readonly``).
    @classmethod
    def open_readonly(cls, path: Path | str) -> Store:
        """A ``Store`` on a read-only connection (``crowdcut web``): it cannot write, and
        applies no migration."""
        store = cls.__new__(cls)
        store.path = Path(path)
        if not store.path.is_file():
            raise FileNotFoundError(f"no database at {store.path}")
        uri = store.path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        store.db = Database(conn)
        store.db.execute("PRAGMA busy_timeout=30000")
        return store

    @reader
    def project_web_token(self, project_id: int) -> str | None:
        row = self.db.execute(
            "select web_token from projects where id = ?", [project_id]
        ).fetchone()
        return row[0] if row else None

    @reader
    def project_by_web_token(self, token: str) -> Project | None:
        return self._one(Project, "projects", "web_token = ?", [token])

    def rotate_web_token(self, project_id: int, token: str) -> None:
        """Give a project's page a new address: the old one stops answering."""
        self._update("projects", project_id, {"web_token": token})

    @reader
    def guild_is_public(self, guild_id: int) -> bool:
        row = self.db.execute(
            "select public from web_guilds where guild_id = ?", [guild_id]
        ).fetchone()
        return bool(row and row[0])

    def set_guild_public(self, guild_id: int, public: bool, *, by: int | None) -> None:
        """Whether a server's projects are listed on the index."""
        self.db.execute(
            "insert into web_guilds (guild_id, public, changed_by, changed_at) "
            "values (?, ?, ?, ?) on conflict(guild_id) do update set public = excluded.public, "
            "changed_by = excluded.changed_by, changed_at = excluded.changed_at",
            [guild_id, int(public), by, self._now()],
        )

    @reader
    def public_projects(self, limit: int = 100) -> list[PublicProject]:
        """Projects of the servers that list theirs, newest first (drafts left out)."""
        rows = self.db.query(
            "select p.id, p.title, p.state, p.web_token, p.created_at, p.approved_at "
            "from projects p join web_guilds g on g.guild_id = p.guild_id "
            "where g.public = 1 and p.state != 'draft' and p.web_token is not null "
            "order by p.id desc limit ?",
            [limit],
        )
        return [PublicProject(**r) for r in rows]

    _PAGE_CLIPS = (
        "select c.id, c.project_id, c.member_id, c.media_key, c.created_at, c.slot, "
        "c.duration, c.width, c.height, c.channel_id, c.message_id, c.post_deleted_at, "
        "c.anonymous, m.name, m.forgotten_at, j.prompt, j.backend, j.model, "
        "j.extends_clip_id as parent_clip_id, "
        "(select count(*) from votes v where v.clip_id = c.id and v.value > 0) as up, "
        "(select count(*) from votes v where v.clip_id = c.id and v.value < 0) as down "
        "from clips c left join jobs j on j.id = c.job_id "
        "left join members m on m.id = c.member_id "
    )

    @staticmethod
    def _page_clip(r: dict[str, Any]) -> PageClip:
        # a forgotten member, and a clip kept anonymously in an approved cut, show no name
        anonymous, forgotten, name = r.pop("anonymous"), r.pop("forgotten_at"), r.pop("name")
        author = "anonymous" if anonymous or forgotten or not name else name
        return PageClip(author=author, prompt=r.pop("prompt") or "", **r)

    @reader
    def page_clips(self, project_id: int) -> list[PageClip]:
        """Every clip of a project with its prompt, author and votes, oldest first."""
        rows = self.db.query(
            self._PAGE_CLIPS + "where c.project_id = ? order by c.id", [project_id]
        )
        return [self._page_clip(dict(r)) for r in rows]

    @reader
    def page_clip(self, clip_id: int) -> PageClip | None:
        rows = list(self.db.query(self._PAGE_CLIPS + "where c.id = ?", [clip_id]))
        return self._page_clip(dict(rows[0])) if rows else None

    @reader
    def clip_children(self, clip_id: int) -> list[int]:
        """Clips made by extending ``clip_id``."""
        return [
            r[0]
            for r in self.db.execute(
                "select c.id from clips c join jobs j on j.id = c.job_id "
                "where j.extends_clip_id = ? order by c.id",
                [clip_id],
            )
        ]

    @reader
    def project_cuts(self, project_id: int) -> list[Cut]:
        return [
            from_row(Cut, r)
            for r in self._rows("cuts", "project_id = ?", [project_id], order_by="id")  # type: ignore[misc]
        ]


def describe_database(path: Path | str) -> dict[str, Any]:
    """Read-only facts about a database file, for ``crowdcut doctor``: its journal mode and
    how many migrations are applied; ``{"error": ...}`` when it cannot be read."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            mode = conn.execute("pragma journal_mode").fetchone()[0]
            applied = conn.execute("select count(*) from _sqlite_migrations").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as e:
        return {"error": str(e)}
    return {
        "journal_mode": mode,
        "migrations": applied,
        "pending": len(migrations._migrations) - applied,
    }


#: how often a full disk is logged again while writes keep failing
FULL_LOG_SECONDS = 60.0


def _is_full(error: sqlite3.OperationalError) -> bool:
    """SQLITE_FULL: the disk (or the database's page limit) has no room for the write."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_FULL
    return "database or disk is full" in str(error)


class QuotaFull(Exception):
    """``add_job`` refused: the member already has ``active`` jobs waiting or running."""

    def __init__(self, active: int) -> None:
        super().__init__(active)
        self.active = active


class AsyncStore:
    """The ``Store`` for asyncio code: same method names, awaited.

    Writes run, in order, on one writer thread that owns the writing connection;
    methods marked ``@reader`` run on a small pool with one connection per thread.
    A write that finds the disk full raises :class:`bot.errors.StorageFull`, which members
    see as a refusal; the operator's log says why.
    """

    def __init__(self, path: Path | str, *, readers: int = 2) -> None:
        self.path = Path(path)
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="crowdcut-db-writer")
        self._reader_pool = ThreadPoolExecutor(readers, thread_name_prefix="crowdcut-db-reader")
        # migrations run here, before any reader connects
        self._writer: Store = self._writer_pool.submit(Store, self.path).result()
        self._local = threading.local()
        self._readers: list[Store] = []
        self._lock = threading.Lock()
        self._full_logged_at = -1e18

    def _reader_store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = Store(self.path, migrate=False)
            self._local.store = store
            with self._lock:
                self._readers.append(store)
        return store

    def __getattr__(self, name: str) -> Any:
        fn = getattr(Store, name, None)
        if fn is None or name.startswith("_") or not callable(fn):
            raise AttributeError(name)
        is_reader = getattr(fn, "__crowdcut_reader__", False)

        @functools.wraps(fn)
        async def call(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            if is_reader:
                return await loop.run_in_executor(
                    self._reader_pool, lambda: getattr(self._reader_store(), name)(*args, **kwargs)
                )
            try:
                return await loop.run_in_executor(
                    self._writer_pool, lambda: getattr(self._writer, name)(*args, **kwargs)
                )
            except sqlite3.OperationalError as e:
                if not _is_full(e):
                    raise
                self._report_full(name, e)
                raise StorageFull() from e

        setattr(self, name, call)  # cache the wrapper
        return call

    def _report_full(self, name: str, error: sqlite3.OperationalError) -> None:
        """Tell the operator (at most once a minute): every write fails until space returns."""
        now = time.monotonic()
        if now - self._full_logged_at < FULL_LOG_SECONDS:
            return
        self._full_logged_at = now
        log.error(
            "the database %s is full (%s, in %s): new work is refused until there is space "
            "again; nothing already stored is lost. Free disk space next to it.",
            self.path,
            error,
            name,
        )

    @property
    def sync(self) -> Store:
        """The writer's ``Store``, for synchronous code run *on no event loop* (CLI, tests)."""
        return self._writer

    async def aclose(self) -> None:
        """Finish the work in flight, then close every connection. A connection is never
        closed while a thread still uses it (that can crash SQLite)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._reader_pool.shutdown, True)
        with self._lock:
            readers = list(self._readers)
            self._readers.clear()
        for s in readers:
            s.close()
        await loop.run_in_executor(self._writer_pool, self._writer.close)
        await loop.run_in_executor(None, self._writer_pool.shutdown, True)
