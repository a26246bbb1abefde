"""Reactions become votes, by the rules of ``bot.core.voting``.

The gateway's events are applied in the order they arrived: a reaction added or removed
(``ReactionEvent``), reactions cleared by a moderator (``ReactionClear``: all, or one
emoji's) and a clip's post deleted (``PostDeleted``), which takes the clip out of the vote.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.app import App
from bot.core.voting import Tally, in_time, rank
from bot.services import scope
from storage.models import OPEN, Clip, Job, Project, Vote

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReactionEvent:
    """One reaction added or removed, as the gateway reported it."""

    message_id: int
    user_id: int
    emoji: str
    added: bool
    user_is_bot: bool
    at: float


@dataclass(frozen=True)
class ReactionClear:
    """A moderator removed every reaction of a message (``emoji`` None) or one emoji's."""

    message_id: int
    emoji: str | None
    at: float


@dataclass(frozen=True)
class PostDeleted:
    """A message was deleted (by a moderator, when it is a clip's post)."""

    message_id: int
    at: float


VoteEvent = ReactionEvent | ReactionClear | PostDeleted


@dataclass(frozen=True)
class ReactionOutcome:
    counted: bool
    clip: Clip | None = None
    vote: Vote | None = None


class VotingService:
    def __init__(self, app: App) -> None:
        self.app = app
        self.store = app.store
        self.rules = app.rules
        # message id → clip: posted clips never move; a forgotten member's clips and
        # deleted posts are dropped from it (the store skips them anyway)
        self._clips_by_message: dict[int, Clip] = {}

    async def clip_for_message(self, message_id: int) -> Clip | None:
        clip = self._clips_by_message.get(message_id)
        if clip is None:
            clip = await self.store.clip_by_message(message_id)
            if clip is not None:
                self._clips_by_message[message_id] = clip
        return clip

    async def on_reaction(
        self, *, message_id: int, user_id: int, emoji: str, added: bool, user_is_bot: bool
    ) -> ReactionOutcome:
        """Apply one reaction add/remove. Non-vote emojis, non-clip messages, bots, self
        votes and anything after the project closed are ignored (``counted`` False)."""
        event = ReactionEvent(message_id, user_id, emoji, added, user_is_bot, time.time())
        counted = await self.on_reactions([event])
        clip = self._clips_by_message.get(message_id)
        if not counted or clip is None:
            return ReactionOutcome(False, clip)
        votes = [v for v in await self.store.clip_votes(clip.id) if v.voter_id == user_id]
        return ReactionOutcome(True, clip, votes[0] if votes else None)

    async def on_reactions(self, events: Sequence[VoteEvent]) -> int:
        """Apply a batch of events, in order, in one transaction. Returns how many counted.

        Each event is judged on its own: a reaction by the rules of ``on_reaction`` and by
        when it arrived (before the project closed: it counts, even when applied after);
        a clear likewise; a deleted post always takes its clip out of the vote. An event
        for a clip that no longer exists is skipped, never the rest of the batch.
        """
        projects: dict[int, Project | None] = {}
        ops: list[tuple[Any, ...]] = []
        for ev in events:
            if isinstance(ev, ReactionEvent | ReactionClear) and not (
                ev.emoji is None or self.rules.is_vote_emoji(ev.emoji)
            ):
                continue
            clip = await self.clip_for_message(ev.message_id)
            if clip is None:
                continue
            if isinstance(ev, PostDeleted):
                ops.append(("deleted", clip.id, ev.at))
                self._clips_by_message.pop(ev.message_id, None)
                continue
            if clip.project_id not in projects:
                # read after every event of the batch arrived: "open" means open for all
                projects[clip.project_id] = await self.store.get_project(clip.project_id)
            project = projects[clip.project_id]
            if project is None or not in_time(
                ev.at, is_open=project.state == OPEN, closed_at=project.closed_at
            ):
                continue
            if isinstance(ev, ReactionClear):
                ops.append(("clear", clip.id, ev.emoji))
            elif self.rules.counts(
                emoji=ev.emoji,
                voter_id=ev.user_id,
                voter_is_bot=ev.user_is_bot,
                clip_author_id=clip.member_id,
                project_open=True,
            ):
                ops.append(("react", clip.id, ev.user_id, ev.emoji, ev.added, ev.at))
        if not ops:
            return 0
        return int(await self.store.apply_vote_events(ops, values=self.rules.values))

    async def post_deleted(self, clip: Clip, *, at: float | None = None) -> bool:
        """The clip's post no longer exists on Discord: it leaves the vote (see
        ``Store.mark_post_deleted``). False when it had left already."""
        if clip.message_id is not None:
            self._clips_by_message.pop(clip.message_id, None)
        gone = bool(await self.store.mark_post_deleted(clip.id, at=at))
        if gone:
            log.info("clip %s: its post was deleted; it is out of the vote", clip.id)
        return gone

    def forget_member(self, member_id: int) -> None:
        """Drop a forgotten member's clips from the cache."""
        self._clips_by_message = {
            m: c for m, c in self._clips_by_message.items() if c.member_id != member_id
        }

    async def reconcile(
        self, clip: Clip, present: dict[str, set[int]], *, bot_ids: set[int]
    ) -> dict[str, int]:
        """Make stored votes equal the reactions Discord reports now (``present``: emoji →
        user ids). Only for open projects: after close, the counts are frozen."""
        project = await self.store.get_project(clip.project_id)
        if project is None or project.state != OPEN or clip.post_deleted_at is not None:
            return {"added": 0, "removed": 0}
        # members who asked to be forgotten: their old reactions stay on Discord, but
        # crowdcut must not rebuild their votes from them
        forgotten = await self.store.forgotten_member_ids()
        counted = {}
        for emoji, users in present.items():
            if not self.rules.is_vote_emoji(emoji):
                continue
            counted[emoji] = {
                u
                for u in users
                if u not in forgotten
                and self.rules.counts(
                    emoji=emoji,
                    voter_id=u,
                    voter_is_bot=u in bot_ids,
                    clip_author_id=clip.member_id,
                    project_open=True,
                )
            }
        return await self.store.replace_reactions(clip.id, counted, values=self.rules.values)

    async def tallies(self, project_id: int) -> list[Tally]:
        """Every clip of the project, ranked best first."""
        raw = await self.store.vote_tallies(project_id)
        return rank([Tally(cid, up, down) for cid, (up, down) in raw.items()])

    async def clip_card(self, clip_id: int, guild_id: int | None) -> ClipCard:
        """What ``/clip`` shows, for a clip of the server ``guild_id`` (another server's
        clip reads as one that does not exist)."""
        clip = await scope.clip_in(self.store, clip_id, guild_id)
        job = await self.store.get_job(clip.job_id)
        names = await self.store.member_names([clip.member_id])
        author = "anonymous" if clip.anonymous else names.get(clip.member_id, "someone")
        up, down = (await self.store.vote_tallies(clip.project_id)).get(clip.id, (0, 0))
        return ClipCard(clip, job, author, up, down)


@dataclass(frozen=True)
class ClipCard:
    """A clip with its job, its author's name (or "anonymous") and its votes."""

    clip: Clip
    job: Job | None
    author: str
    up: int
    down: int
