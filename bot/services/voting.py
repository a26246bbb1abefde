"""Reactions become votes, by the rules of ``bot.core.voting``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bot.app import App
from bot.core.voting import Tally, rank
from bot.services import scope
from storage.models import OPEN, Clip, Job, Vote

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
class ReactionOutcome:
    counted: bool
    clip: Clip | None = None
    vote: Vote | None = None


class VotingService:
    def __init__(self, app: App) -> None:
        self.app = app
        self.store = app.store
        self.rules = app.rules
        # message id → clip: posted clips never move, so this cache never goes stale
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

    async def on_reactions(self, events: list[ReactionEvent]) -> int:
        """Apply a batch of reaction events, in order, in one transaction. Returns how many
        counted. The rules are those of ``on_reaction``."""
        states: dict[int, str | None] = {}
        rows: list[tuple[int, int, str, bool, float]] = []
        for ev in events:
            if not self.rules.is_vote_emoji(ev.emoji):
                continue
            clip = await self.clip_for_message(ev.message_id)
            if clip is None:
                continue
            if clip.project_id not in states:
                project = await self.store.get_project(clip.project_id)
                states[clip.project_id] = project.state if project else None
            if self.rules.counts(
                emoji=ev.emoji,
                voter_id=ev.user_id,
                voter_is_bot=ev.user_is_bot,
                clip_author_id=clip.member_id,
                project_open=states[clip.project_id] == OPEN,
            ):
                rows.append((clip.id, ev.user_id, ev.emoji, ev.added, ev.at))
        if rows:
            await self.store.apply_reactions(rows, values=self.rules.values)
        return len(rows)

    async def reconcile(
        self, clip: Clip, present: dict[str, set[int]], *, bot_ids: set[int]
    ) -> dict[str, int]:
        """Make stored votes equal the reactions Discord reports now (``present``: emoji →
        user ids). Only for open projects: after close, the counts are frozen."""
        project = await self.store.get_project(clip.project_id)
        if project is None or project.state != OPEN:
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
