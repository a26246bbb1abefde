from __future__ import annotations

import json
import os
import sqlite3

import pytest

from storage import AsyncStore, MediaStore, Store
from storage.models import Slot
from storage.store import QuotaFull

VALUES = {"👍": 1, "👎": -1}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    yield s
    s.close()


def project(store):
    return store.create_project(
        guild_id=1,
        channel_id=2,
        title="t",
        created_by=9,
        slot_plan=[Slot(0, 0, 4), Slot(1, 4, 4)],
        state="open",
    )


def job(store, p, member=5, **kw):
    return store.add_job(
        project_id=p.id,
        member_id=member,
        prompt="a cat",
        channel_id=2,
        duration=4,
        aspect="16:9",
        seed=1,
        **kw,
    )


def clip(store, j):
    store.claim_job(j.id, "local")
    return store.complete_job(
        j.id,
        media_key="a" * 64 + ".mp4",
        duration=4,
        width=64,
        height=36,
        fps=24,
        has_audio=True,
        size_bytes=100,
    )


def test_the_database_is_in_wal_mode_with_migrations_recorded(store):
    assert store.db.journal_mode == "wal"
    applied = [
        "m001_initial",
        "m002_generators",
        "m003_votes_follow_discord",
        "m004_outbox",
        "m005_project_pages",
        "m006_music_video",
        "m007_fair_order_index",
        "m008_clip_in_point",
        "m009_song_credit",
    ]
    assert store.applied_migrations() == applied
    # applying again on reopen is a no-op
    again = Store(store.path)
    assert again.applied_migrations() == applied


def test_a_job_yields_exactly_one_clip_even_if_completed_twice(store):
    p = project(store)
    j = job(store, p)
    c1 = clip(store, j)
    c2 = store.complete_job(
        j.id,
        media_key="b" * 64 + ".mp4",
        duration=4,
        width=64,
        height=36,
        fps=24,
        has_audio=True,
        size_bytes=100,
    )
    assert c1.id == c2.id and c2.media_key == "a" * 64 + ".mp4"
    assert len(store.project_clips(p.id)) == 1
    assert store.get_job(j.id).state == "done"


def test_a_canceled_job_cannot_be_claimed(store):
    j = job(store, project(store))
    assert store.cancel_job(j.id) is not None
    assert store.claim_job(j.id, "local") is None
    assert store.cancel_job(j.id) is None


def test_the_quota_is_checked_in_the_same_transaction_as_the_insert(store):
    p = project(store)
    job(store, p, max_active=2)
    job(store, p, max_active=2)
    with pytest.raises(QuotaFull):
        job(store, p, max_active=2)


def test_the_later_of_up_and_down_counts_and_removing_it_falls_back(store):
    c = clip(store, job(store, project(store)))
    store.apply_reaction(c.id, 7, "👍", added=True, values=VALUES, at=1)
    v = store.apply_reaction(c.id, 7, "👎", added=True, values=VALUES, at=2)
    assert v.value == -1 and store.vote_tallies(c.project_id)[c.id] == (0, 1)
    v = store.apply_reaction(c.id, 7, "👎", added=False, values=VALUES)
    assert v.value == 1 and store.vote_tallies(c.project_id)[c.id] == (1, 0)
    assert store.apply_reaction(c.id, 7, "👍", added=False, values=VALUES) is None
    assert store.vote_tallies(c.project_id)[c.id] == (0, 0)


def test_reconciling_makes_votes_equal_the_reactions_reported(store):
    c = clip(store, job(store, project(store)))
    store.apply_reaction(c.id, 7, "👍", added=True, values=VALUES)
    store.apply_reaction(c.id, 8, "👍", added=True, values=VALUES)
    changed = store.replace_reactions(c.id, {"👍": {8, 9}, "👎": {10}}, values=VALUES)
    assert changed == {"added": 2, "removed": 1}
    assert store.vote_tallies(c.project_id)[c.id] == (2, 1)


def test_forgetting_a_member_keeps_approved_clips_anonymously(store):
    p = project(store)
    kept = clip(store, job(store, p, member=5))
    j2 = job(store, p, member=5)
    store.claim_job(j2.id, "local")
    dropped = store.complete_job(
        j2.id,
        media_key="c" * 64 + ".mp4",
        duration=4,
        width=64,
        height=36,
        fps=24,
        has_audio=True,
        size_bytes=100,
    )
    store.upsert_member(5, "alice")
    store.apply_reaction(kept.id, 6, "👍", added=True, values=VALUES)
    other = clip(store, job(store, p, member=6))
    store.apply_reaction(other.id, 5, "👍", added=True, values=VALUES)
    out = store.forget_member(5, keep_clip_ids={kept.id})
    assert out["clips"] == 1 and out["kept_clips"] == 1 and out["votes"] == 1
    assert "c" * 64 + ".mp4" in out["orphaned_media"]
    assert store.get_clip(dropped.id) is None
    assert store.get_clip(kept.id).anonymous
    assert store.member_names([5]) == {5: "anonymous"}
    assert store.vote_tallies(p.id)[other.id] == (0, 0)


def test_media_is_content_addressed_under_names_the_program_chooses(tmp_path):
    media = MediaStore(tmp_path / "media")
    key = media.put_bytes(b"hello", "png")
    assert key.endswith(".png") and len(key) == 64 + 4
    assert media.put_bytes(b"hello", "png") == key
    assert media.read_bytes(key) == b"hello"
    with pytest.raises(ValueError):
        media.put_bytes(b"x", "../../etc/passwd")
    with pytest.raises(ValueError):
        media.path("../../etc/passwd")


def test_a_crash_mid_write_leaves_no_file_under_a_real_name(tmp_path, monkeypatch):
    media = MediaStore(tmp_path / "media")

    def boom(fd):
        raise OSError("disk died")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        media.put_bytes(b"data" * 1000, "mp4")
    monkeypatch.undo()
    files = [p for p in (tmp_path / "media").rglob("*") if p.is_file()]
    assert files == []


def test_a_leftover_temp_file_is_swept(tmp_path):
    media = MediaStore(tmp_path / "media")
    (tmp_path / "media" / "ab").mkdir()
    (tmp_path / "media" / "ab" / ".incoming-x.tmp").write_bytes(b"half")
    assert media.sweep_temp() == 1


async def test_the_async_store_runs_off_the_loop_and_sees_its_own_writes(tmp_path):
    store = AsyncStore(tmp_path / "db.sqlite")
    try:
        p = await store.create_project(
            guild_id=1,
            channel_id=2,
            title="x",
            created_by=1,
            slot_plan=[Slot(0, 0, 4)],
            state="open",
        )
        got = await store.get_project(p.id)  # a reader thread, its own connection
        assert got.title == "x"
        jobs = [
            await store.add_job(
                project_id=p.id,
                member_id=m,
                prompt="p",
                channel_id=2,
                duration=4,
                aspect="16:9",
                seed=0,
            )
            for m in range(5)
        ]
        assert len(await store.dispatchable_jobs()) == len(jobs)
    finally:
        await store.aclose()


def test_sql_stays_inside_storage():
    import pathlib

    root = pathlib.Path(__file__).parents[1] / "bot"
    offenders = [
        str(p)
        for p in root.rglob("*.py")
        if any(
            k in p.read_text()
            for k in ("import sqlite3", "sqlite_utils", '.execute("select', "insert into")
        )
    ]
    assert offenders == []


def test_the_database_survives_a_second_connection_reading_during_a_write(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    p = project(s)
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    with s.db.atomic():
        job(s, p)
        # a reader sees the last committed state while the write is open (WAL)
        assert conn.execute("select count(*) from jobs").fetchone()[0] == 0
    assert conn.execute("select count(*) from jobs").fetchone()[0] == 1


def test_forgetting_a_member_withdraws_unapproved_cuts_that_show_their_clips(store):
    p = project(store)
    theirs = clip(store, job(store, p, member=5))
    other = clip(store, job(store, p, member=6))
    shows_them = store.save_cut(
        project_id=p.id,
        slots=[{"index": 0, "clip_id": theirs.id}, {"index": 1, "clip_id": other.id}],
        master_key="m" * 64 + ".mp4",
        preview_key="v" * 64 + ".mp4",
        manifest_key="j" * 64 + ".json",
        created_by=9,
    )
    clean = store.save_cut(
        project_id=p.id,
        slots=[{"index": 0, "clip_id": other.id}],
        master_key="n" * 64 + ".mp4",
        preview_key=None,
        manifest_key=None,
        created_by=9,
    )
    store.db.execute(
        "insert into renders (project_id, kind, state, slots, created_at) values (?, ?, ?, ?, 0)",
        [p.id, "preview", "pending", json.dumps([{"clip_id": theirs.id}])],
    )
    store.db.execute("update cuts set message_id = 77 where id = ?", [shows_them.id])
    out = store.forget_member(5)
    assert out["withdrawn_cuts"] == 1
    assert store.get_cut(shows_them.id) is None and store.get_cut(clean.id) is not None
    # its files are free to delete, and its preview post comes down from the channel
    assert {"m" * 64 + ".mp4", "v" * 64 + ".mp4", "j" * 64 + ".json"} <= set(out["orphaned_media"])
    assert (2, 77) in out["messages"]
    assert store.db.execute("select state from renders").fetchone()[0] == "stale"
