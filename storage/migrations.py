"""The schema of crowdcut's database, as append-only migrations.

Registered with sqlite-utils' built-in ``Migrations`` and applied at start-up
by ``Store``. An applied migration is never edited: change the schema by
appending a new function.

Times are stored as REAL seconds since the epoch (UTC).
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("crowdcut")


@migrations()
def m001_initial(db: Database) -> None:
    db["projects"].create(
        {
            "id": int,
            "guild_id": int,
            "channel_id": int,
            "title": str,
            "song_key": str,
            "song_name": str,
            "song_seconds": float,
            "slot_plan": str,  # JSON list of {"index","start","duration"}
            "state": str,  # draft | open | closed | approved
            "created_by": int,
            "created_at": float,
            "opened_at": float,
            "closed_at": float,
            "voting_ends_at": float,
            "approved_by": int,
            "approved_at": float,
        },
        pk="id",
        not_null={"guild_id", "channel_id", "title", "state", "created_at"},
    )
    db["projects"].create_index(["guild_id", "channel_id", "state"])

    db["members"].create(
        {"id": int, "name": str, "is_bot": int, "forgotten_at": float, "first_seen": float},
        pk="id",
        not_null={"name"},
        defaults={"is_bot": 0},
    )

    db["jobs"].create(
        {
            "id": int,
            "project_id": int,
            "member_id": int,
            "channel_id": int,
            "prompt": str,
            "image_key": str,
            "slot": int,
            "duration": float,
            "aspect": str,
            "seed": int,
            "extends_clip_id": int,
            "state": str,  # queued | submitted | running | done | failed | canceled
            "moderation": str,  # none | pending | approved | rejected
            "backend": str,
            "provider_job_id": str,
            "attempts": int,
            "next_attempt_at": float,
            "progress": float,
            "error": str,
            "error_kind": str,
            "queued_at": float,
            "submitted_at": float,
            "started_at": float,
            "finished_at": float,
            "status_message_id": int,
            "moderation_message_id": int,
        },
        pk="id",
        not_null={"project_id", "member_id", "prompt", "state", "queued_at"},
        defaults={"attempts": 0, "moderation": "none"},
        foreign_keys=[("project_id", "projects", "id")],
    )
    db["jobs"].create_index(["state", "next_attempt_at"])
    db["jobs"].create_index(["member_id", "state"])

    db["clips"].create(
        {
            "id": int,
            "job_id": int,
            "project_id": int,
            "member_id": int,
            "media_key": str,
            "duration": float,
            "width": int,
            "height": int,
            "fps": float,
            "has_audio": int,
            "size_bytes": int,
            "slot": int,
            "channel_id": int,
            "message_id": int,
            "posted_at": float,
            "created_at": float,
            "anonymous": int,
        },
        pk="id",
        not_null={"job_id", "project_id", "member_id", "media_key", "created_at"},
        defaults={"anonymous": 0, "has_audio": 0},
        foreign_keys=[("job_id", "jobs", "id"), ("project_id", "projects", "id")],
    )
    # a job yields at most one clip: this is what makes "never posted twice" hold
    db["clips"].create_index(["job_id"], unique=True)
    db["clips"].create_index(["message_id"])
    db["clips"].create_index(["project_id", "slot"])

    # raw vote reactions currently on a clip's message, from members whose votes count
    db["reactions"].create(
        {"clip_id": int, "user_id": int, "emoji": str, "at": float},
        pk=("clip_id", "user_id", "emoji"),
        foreign_keys=[("clip_id", "clips", "id")],
    )
    # one row per voter per clip: the vote that counts (the later reaction wins)
    db["votes"].create(
        {"clip_id": int, "voter_id": int, "value": int, "emoji": str, "voted_at": float},
        pk=("clip_id", "voter_id"),
        foreign_keys=[("clip_id", "clips", "id")],
    )

    db["overrides"].create(
        {"project_id": int, "clip_id": int, "action": str, "slot": int, "by": int, "at": float},
        pk=("project_id", "clip_id"),
    )

    db["cuts"].create(
        {
            "id": int,
            "project_id": int,
            "state": str,  # preview | approved
            "slots": str,  # JSON: list of cut slots
            "master_key": str,
            "preview_key": str,
            "manifest_key": str,
            "created_by": int,
            "created_at": float,
            "approved_by": int,
            "approved_at": float,
            "message_id": int,
        },
        pk="id",
        not_null={"project_id", "state", "created_at"},
        foreign_keys=[("project_id", "projects", "id")],
    )

    db["audit_log"].create(
        {
            "id": int,
            "guild_id": int,
            "project_id": int,
            "actor_id": int,
            "action": str,
            "target": str,
            "details": str,
            "at": float,
        },
        pk="id",
        not_null={"action", "at"},
    )
    db["audit_log"].create_index(["guild_id", "at"])


@migrations()
def m002_generators(db: Database) -> None:
    """Real backends: the submission key chosen before each send, the model that made a
    clip, the length asked of the provider, a project's own backend, and the spend ledger."""
    jobs = db["jobs"]
    jobs.add_column("submit_key", str)  # UUID of the current submission, stored before sending
    jobs.add_column("tries", int, not_null_default=0)  # claims, for the backoff of submit failures
    jobs.add_column("model", str)
    jobs.add_column("requested_seconds", float)  # what the provider was asked for
    db["projects"].add_column("backend", str)  # a moderator's choice; null: the configured order
    # one row per charge: a confirmed submission costs its price; a failure the provider
    # does not bill is a negative row; `refused` rows do not count against a member's budget
    db["ledger"].create(
        {
            "id": int,
            "job_id": int,
            "project_id": int,
            "guild_id": int,
            "member_id": int,
            "backend": str,
            "model": str,
            "kind": str,  # generation | refund
            "seconds": float,
            "amount": float,
            "currency": str,
            "refused": int,
            "at": float,
        },
        pk="id",
        not_null={"backend", "kind", "amount", "at"},
        defaults={"refused": 0},
    )
    db["ledger"].create_index(["project_id"])
    db["ledger"].create_index(["member_id", "at"])
    db["ledger"].create_index(["job_id"])


@migrations()
def m003_votes_follow_discord(db: Database) -> None:
    """A clip whose post a moderator deleted leaves the vote: when that was seen."""
    db["clips"].add_column("post_deleted_at", float)


@migrations()
def m004_outbox(db: Database) -> None:
    """The outbox: every Discord side effect as a row, drained by the outbox worker."""
    db["outbox"].create(
        {
            "id": int,
            "kind": str,
            "key": str,  # pending rows with one key coalesce (see storage/outbox.py)
            "payload": str,  # JSON
            "state": str,  # pending | running | done | failed
            "attempts": int,
            "next_attempt_at": float,
            "last_error": str,
            "created_at": float,
        },
        pk="id",
        not_null={"kind", "key", "state", "created_at"},
        defaults={"attempts": 0},
    )
    db.execute("create unique index outbox_pending_key on outbox (key) where state = 'pending'")
    db["outbox"].create_index(["state", "next_attempt_at"])


@migrations()
def m005_project_pages(db: Database) -> None:
    """The project pages (``bot/web``): every project gets an unguessable token for its
    page's address (a moderator rotates it with ``/project link``), and a server may list
    its projects on the public index (``/project listing``)."""
    db["projects"].add_column("web_token", str)
    db.execute("update projects set web_token = lower(hex(randomblob(16))) where web_token is null")
    db.execute("create unique index projects_web_token on projects (web_token)")
    # a project is born with its token, whichever code creates it: 128 bits from SQLite's
    # CSPRNG (seeded from the OS); a rotation draws a new one with Python's ``secrets``
    db.execute(
        "create trigger projects_web_token_on_insert after insert on projects "
        "when new.web_token is null begin "
        "update projects set web_token = lower(hex(randomblob(16))) where id = new.id; end"
    )
    db["web_guilds"].create(
        {"guild_id": int, "public": int, "changed_by": int, "changed_at": float},
        pk="guild_id",
        not_null={"public"},
        defaults={"public": 0},
    )


@migrations()
def m006_music_video(db: Database) -> None:
    """The music video: a project's look (transition, fit, chain mode), clip lineage, cuts
    known by their content, and renders as durable work."""
    projects = db["projects"]
    projects.add_column("transition", str)  # cut | crossfade | dip | zoom (null: cut)
    projects.add_column("transition_beats", float)  # its length, in beats
    projects.add_column("fit", str)  # hold | slow: how a short clip fills its slot
    projects.add_column("chain_mode", int, not_null_default=0)
    db["jobs"].add_column("lineage", str)  # extend | chain, with extends_clip_id its parent
    db["clips"].add_column("parent_clip_id", int)
    db["clips"].add_column("lineage", str)
    cuts = db["cuts"]
    cuts.add_column("identity", str)  # the content hash of the cut (which clip where, how)
    cuts.add_column("storyboard_key", str)
    cuts.add_column("preview_bytes", int)  # the byte target the preview was made for
    db["renders"].create(
        {
            "id": int,
            "project_id": int,
            "kind": str,  # preview | final
            "identity": str,  # the cut it renders
            "slots": str,  # JSON: the selection when it was asked for
            "state": str,  # pending | running | done | stale | failed
            "attempts": int,
            "next_attempt_at": float,
            "requested_by": int,
            "channel_id": int,
            "upload_limit": int,  # the server's upload limit when it was asked for
            "cut_id": int,
            "progress": float,
            "error": str,
            "created_at": float,
            "finished_at": float,
        },
        pk="id",
        not_null={"project_id", "kind", "state", "created_at"},
        defaults={"attempts": 0},
        foreign_keys=[("project_id", "projects", "id")],
    )
    db["renders"].create_index(["state", "next_attempt_at"])
    db["renders"].create_index(["project_id", "identity"])
    # the dispatcher asks when each waiting member was last served
    db["jobs"].create_index(["member_id", "submitted_at"])


@migrations()
def m007_fair_order_index(db: Database) -> None:
    # each member's next waiting jobs, read from the index alone at every dispatch
    db["jobs"].create_index(
        ["state", "member_id", "queued_at", "id", "moderation", "next_attempt_at"],
        index_name="idx_jobs_fair_order",
    )


@migrations()
def m008_clip_in_point(db: Database) -> None:
    # the second of a clip its slot starts at, picked by a moderator (/cut trim); 0 or
    # NULL: from its first frame
    db["clips"].add_column("in_point", float)


@migrations()
def m009_song_credit(db: Database) -> None:
    # the song's credit on the roll, the pages and the MP4's comment ("“Title” by Artist",
    # a licence): from the song's tags, or set by a moderator (/project credit)
    db["projects"].add_column("song_credit", str)
