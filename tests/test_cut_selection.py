from __future__ import annotations

from bot.core.cut import Candidate, select_cut
from bot.core.slots import even_slot_plan


def ids(choices):
    return [(c.slot, c.clip_id, c.reason) for c in choices]


def test_each_slot_takes_its_best_scoring_clip():
    cands = [Candidate(1, 0, 3, 0), Candidate(2, 0, 5, 1), Candidate(3, 1, 0, 0)]
    assert ids(select_cut(2, cands)) == [(0, 2, "votes"), (1, 3, "votes")]


def test_unslotted_clips_fill_open_slots_with_the_best_in_submission_order():
    cands = [
        Candidate(1, None, 0, 0),
        Candidate(2, None, 9, 0),
        Candidate(3, None, 5, 0),
        Candidate(4, None, 7, 0),
    ]
    assert ids(select_cut(2, cands)) == [(0, 2, "unslotted"), (1, 4, "unslotted")]


def test_a_pin_beats_votes_and_an_excluded_clip_is_never_used():
    cands = [
        Candidate(1, 0, 10, 0),
        Candidate(2, 0, 0, 5),
        Candidate(3, 1, 9, 0),
        Candidate(4, 1, 1, 0),
    ]
    out = select_cut(2, cands, pins={2: 0}, excluded={3})
    assert ids(out) == [(0, 2, "pinned"), (1, 4, "votes")]


def test_empty_slots_reuse_chosen_clips_so_the_song_is_covered():
    out = select_cut(3, [Candidate(7, 1, 1, 0)])
    assert ids(out) == [(0, 7, "reused"), (1, 7, "votes"), (2, 7, "reused")]


def test_no_usable_clips_means_no_cut():
    assert select_cut(3, [Candidate(1, 0)], excluded={1}) == []


def test_even_slot_plan_covers_the_song_with_slots_near_the_clip_length():
    plan = even_slot_plan(220.0, 4.0)
    assert len(plan) == 55
    assert abs(plan[-1].end - 220.0) < 1e-3
    assert all(abs(s.duration - 4.0) < 0.5 for s in plan)
    assert len(even_slot_plan(2.0, 4.0)) == 1
