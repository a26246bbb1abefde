"""Forget me: a member's prompts, images, votes and unused clips are deleted."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bot.app import App

if TYPE_CHECKING:
    from bot.services.voting import VotingService

log = logging.getLogger(__name__)


class MemberService:
    def __init__(self, app: App, voting: VotingService | None = None) -> None:
        self.app = app
        self.store = app.store
        self.voting = voting  # its cache of clips by message forgets theirs too

    async def forget(self, member_id: int) -> dict[str, object]:
        """Delete what crowdcut holds about a member. Clips in an approved cut stay,
        credited as anonymous. Active jobs are canceled first."""
        for job in await self.store.member_jobs(member_id, active_only=True):
            await self.store.cancel_job(job.id)
        keep = await self.store.approved_clip_ids(member_id)
        summary = await self.store.forget_member(member_id, keep_clip_ids=keep)
        if self.voting is not None:
            self.voting.forget_member(member_id)
        for key in summary["orphaned_media"]:
            await asyncio.to_thread(self.app.media.delete, key)
        await self.store.audit(
            "forget_member",
            actor_id=member_id,
            target=f"member:{member_id}",
            details={k: v for k, v in summary.items() if k not in ("orphaned_media", "messages")},
        )
        log.info("forgot member %s: %s", member_id, summary)
        return summary
