from __future__ import annotations

from dataclasses import dataclass

from bot.core.queue import backoff_delay, fair_order, format_eta, next_jobs, queue_position


@dataclass
class J:
    id: int
    member_id: int
    queued_at: float
    next_attempt_at: float | None = None


def test_one_members_twenty_prompts_do_not_starve_anothers_first():
    jobs = [J(i, 1, float(i)) for i in range(1, 21)] + [J(21, 2, 21.0)]
    order = [j.id for j in fair_order(jobs)]
    assert order.index(21) == 1


def test_round_robin_interleaves_members_by_rounds():
    jobs = [J(1, 1, 1), J(2, 1, 2), J(3, 1, 3), J(4, 2, 4), J(5, 3, 5), J(6, 2, 6)]
    assert [j.id for j in fair_order(jobs)] == [1, 4, 5, 2, 6, 3]


def test_the_member_served_longest_ago_goes_first_in_a_round():
    jobs = [J(1, 1, 1), J(2, 2, 2)]
    assert [j.id for j in fair_order(jobs, {1: 100.0, 2: 50.0})] == [2, 1]


def test_next_jobs_respects_free_slots_and_backoff():
    jobs = [J(1, 1, 1, next_attempt_at=500), J(2, 2, 2), J(3, 3, 3)]
    picked = next_jobs(jobs, now=100, slots_free=5)
    assert [j.id for j in picked] == [2, 3]
    assert next_jobs(jobs, now=100, slots_free=0) == []


def test_next_jobs_prefers_members_with_nothing_in_flight():
    jobs = [J(1, 1, 1), J(2, 2, 2)]
    picked = next_jobs(jobs, now=10, slots_free=1, running_by_member={1: 1})
    assert [j.id for j in picked] == [2]


def test_next_jobs_fills_spare_capacity_from_the_same_member():
    jobs = [J(1, 1, 1), J(2, 1, 2)]
    assert [j.id for j in next_jobs(jobs, now=10, slots_free=2)] == [1, 2]


def test_backoff_doubles_and_caps_and_honours_retry_after():
    assert [backoff_delay(a, base=2, cap=30) for a in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]
    assert backoff_delay(1, base=2, cap=30, retry_after=12) == 12


def test_queue_position_and_eta_follow_the_fair_order():
    jobs = [J(1, 1, 1), J(2, 1, 2), J(3, 2, 3)]
    pos = queue_position(2, jobs, running=0, concurrency=1, run_seconds=10)
    assert pos.position == 3 and pos.ahead == 2 and pos.eta_seconds == 30
    pos = queue_position(3, jobs, running=0, concurrency=2, run_seconds=10)
    assert pos.position == 2 and pos.eta_seconds == 10


def test_eta_reads_like_a_person_would_say_it():
    assert format_eta(42) == "~42s"
    assert format_eta(125) == "~2m 05s"
    assert format_eta(7300) == "~2h 01m"
