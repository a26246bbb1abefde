"""Voting rules: which reactions count, and how clips rank.

- One vote per member per clip: an up and a down from the same member — the later counts.
- Bots and the clip's own author do not count (each configurable).
- Votes after a project closes do not count, judged per event by the time the reaction
  reached crowdcut (stamped when the gateway event arrived), not when it was applied: a
  reaction made before the close that is applied after it still counts.
- A clip whose post a moderator deleted leaves the vote (its reactions went with it).
- score = up − down; ties broken by fewer downs, then the earlier clip.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VoteRules:
    up_emoji: str = "👍"
    down_emoji: str = "👎"
    count_self_votes: bool = False
    count_bot_votes: bool = False

    @property
    def values(self) -> dict[str, int]:
        """Vote emoji → value, the up emoji first."""
        return {self.up_emoji: 1, self.down_emoji: -1}

    def is_vote_emoji(self, emoji: str) -> bool:
        return emoji in (self.up_emoji, self.down_emoji)

    def counts(
        self,
        *,
        emoji: str,
        voter_id: int,
        voter_is_bot: bool,
        clip_author_id: int,
        project_open: bool,
    ) -> bool:
        """Whether a reaction change from this voter on this clip affects the tally."""
        if not self.is_vote_emoji(emoji) or not project_open:
            return False
        if voter_is_bot and not self.count_bot_votes:
            return False
        if voter_id == clip_author_id and not self.count_self_votes:
            return False
        return True


def in_time(at: float, *, is_open: bool, closed_at: float | None) -> bool:
    """Whether a reaction made at ``at`` falls inside the voting: the project is open now
    (its state was read after the reaction arrived), or it closed after ``at``."""
    return is_open or (closed_at is not None and at < closed_at)


@dataclass(frozen=True)
class Tally:
    clip_id: int
    up: int
    down: int

    @property
    def score(self) -> int:
        return self.up - self.down


def rank_key(t: Tally) -> tuple[int, int, int]:
    """Sort key: best first (highest score, then fewest downs, then the earlier clip)."""
    return (-t.score, t.down, t.clip_id)


def rank(tallies: list[Tally]) -> list[Tally]:
    return sorted(tallies, key=rank_key)
