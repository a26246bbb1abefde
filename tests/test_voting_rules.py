from __future__ import annotations

from bot.core.voting import Tally, VoteRules, rank

RULES = VoteRules()


def counts(**kw):
    base = dict(emoji="👍", voter_id=2, voter_is_bot=False, clip_author_id=1, project_open=True)
    base.update(kw)
    return RULES.counts(**base)


def test_a_members_vote_counts():
    assert counts()


def test_bots_self_votes_other_emojis_and_closed_projects_do_not_count():
    assert not counts(voter_is_bot=True)
    assert not counts(voter_id=1)
    assert not counts(emoji="🔥")
    assert not counts(project_open=False)


def test_self_and_bot_votes_can_be_switched_on():
    rules = VoteRules(count_self_votes=True, count_bot_votes=True)
    assert rules.counts(
        emoji="👎", voter_id=1, voter_is_bot=True, clip_author_id=1, project_open=True
    )


def test_score_is_up_minus_down_ties_broken_by_fewer_downs_then_the_earlier_clip():
    ranked = rank([Tally(5, 3, 1), Tally(2, 2, 0), Tally(1, 2, 0), Tally(9, 4, 0)])
    assert [t.clip_id for t in ranked] == [9, 1, 2, 5]
