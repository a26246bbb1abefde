"""The worker's events, in Discord: one status message per job, and each clip posted once.

Status edits are coalesced per job: a change arriving sooner than
``STATUS_EDIT_SECONDS`` after the last edit waits, and only the newest text is sent.

A clip is posted at most once: the post is recorded right after Discord accepts it;
if the process died in between, ``post_unposted`` first looks for the bot's own
post in the channel's recent history (the embed footer names the clip) and adopts it
instead of posting again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

import discord

from bot.errors import MediaError
from bot.frontend.checks import NO_MENTIONS
from bot.frontend.render import clip_embed, status_text
from bot.media.clips import fit_to_size
from storage.models import Clip, Job

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)

_FOOTER = re.compile(r"crowdcut clip #(\d+)")
#: stay a little under the limit Discord states: the multipart envelope counts too
UPLOAD_HEADROOM = 0.97
MAX_413_RETRIES = 8


class DiscordPublisher:
    def __init__(self, bot: CrowdcutBot) -> None:
        self.bot = bot
        self.app = bot.app
        self._pending: dict[int, Job] = {}
        self._editors: dict[int, asyncio.Task[None]] = {}
        self._last_edit: dict[int, float] = {}
        self._post_lock = asyncio.Lock()

    # ------------------------------------------------------------------ status messages
    async def job_changed(self, job: Job) -> None:
        if job.status_message_id is None or job.channel_id is None:
            return
        self._pending[job.id] = job
        if job.id not in self._editors or self._editors[job.id].done():
            self._editors[job.id] = asyncio.create_task(self._edit_loop(job.id))

    async def _edit_loop(self, job_id: int) -> None:
        interval = self.app.settings.status_edit_seconds
        while job_id in self._pending:
            wait = self._last_edit.get(job_id, 0) + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            job = self._pending.pop(job_id, None)
            if job is None:
                break
            self._last_edit[job_id] = time.monotonic()
            await self.edit_status(job)
        self._editors.pop(job_id, None)

    async def edit_status(self, job: Job, *, clip_url: str | None = None) -> None:
        """Edit the job's status message now."""
        if job.status_message_id is None or job.channel_id is None:
            return
        position = None
        if job.state == "queued":
            position = await self.bot.worker.position(job.id)
        if job.state == "done" and clip_url is None:
            clip = await self.app.store.clip_for_job(job.id)
            if clip and clip.message_id and clip.channel_id:
                clip_url = self._jump(clip.channel_id, clip.message_id)
        author = await self._name(job.member_id)
        text = status_text(job, author, position, clip_url)
        channel = self.bot.get_partial_messageable(job.channel_id)
        try:
            await channel.get_partial_message(job.status_message_id).edit(
                content=text, allowed_mentions=NO_MENTIONS
            )
        except discord.NotFound:
            log.info("status message of job %s is gone", job.id)
        except discord.HTTPException as e:
            log.warning("could not edit the status of job %s: %s", job.id, e)

    def cancel_pending(self) -> None:
        """Drop status edits not yet sent (shutting down; the next start shows the truth)."""
        self._pending.clear()
        for t in self._editors.values():
            t.cancel()
        self._editors.clear()

    async def flush(self) -> None:
        """Wait for pending status edits (tests, shutdown)."""
        for t in list(self._editors.values()):
            with contextlib.suppress(Exception):
                await t

    def _jump(self, channel_id: int, message_id: int) -> str:
        guild = getattr(self.bot.get_channel(channel_id), "guild", None)
        gid = guild.id if guild else "@me"
        return f"https://discord.com/channels/{gid}/{channel_id}/{message_id}"

    async def _name(self, member_id: int) -> str:
        names = await self.app.store.member_names([member_id])
        return names.get(member_id, "someone")

    # ------------------------------------------------------------------ clips
    async def clip_ready(self, clip: Clip, job: Job) -> None:
        async with self._post_lock:
            fresh = await self.app.store.get_clip(clip.id)
            if fresh is None or fresh.message_id is not None:
                return
            message = await self._post_clip(fresh, job)
        if message is not None:
            done = await self.app.store.get_job(job.id)
            if done is not None:
                self._pending.pop(job.id, None)
                await self.edit_status(done, clip_url=message.jump_url)

    async def _post_clip(self, clip: Clip, job: Job) -> discord.Message | None:
        channel_id = clip.channel_id or job.channel_id
        channel = self.bot.get_channel(channel_id) if channel_id else None
        if not isinstance(channel, discord.abc.Messageable):
            log.warning(
                "clip %s: channel %s is not available; will retry on restart", clip.id, channel_id
            )
            return None
        rules = self.app.rules
        author = await self._name(clip.member_id)
        embed = clip_embed(clip, job, author, up_emoji=rules.up_emoji, down_emoji=rules.down_emoji)
        path = self.app.media.path(clip.media_key)
        limit = self._upload_limit(channel)
        message = await self._send_fitting(channel, clip, path, embed, limit)
        await self.app.store.mark_clip_posted(clip.id, channel_id=channel.id, message_id=message.id)
        for emoji in (rules.up_emoji, rules.down_emoji):
            try:
                await message.add_reaction(emoji)
            except discord.HTTPException as e:
                log.warning("could not add %s to clip %s: %s", emoji, clip.id, e)
        log.info("clip %s posted as message %s", clip.id, message.id)
        return message

    def _upload_limit(self, channel: discord.abc.Messageable) -> int:
        guild = getattr(channel, "guild", None)
        return int((guild.filesize_limit if guild else 10 * 1024 * 1024) * UPLOAD_HEADROOM)

    async def _send_fitting(
        self,
        channel: discord.abc.Messageable,
        clip: Clip,
        path: Path,
        embed: discord.Embed,
        limit: int,
    ) -> discord.Message:
        """Send the clip; re-encode it smaller when it is over the limit or Discord says 413.

        Discord's 413 does not say the limit (a server's boost level sets it), so each 413
        lowers the target by 30 % of what was sent. A clip that cannot be made small
        enough is posted without its video (the embed says so) rather than not at all:
        it can still be voted on, and it still goes into the cut at full quality.
        """
        tmp_files: list[Path] = []
        try:
            try:
                src = path
                if path.stat().st_size > limit:
                    src = await self._shrink(path, limit, tmp_files)
                for attempt in range(MAX_413_RETRIES + 1):
                    try:
                        return await channel.send(
                            embed=embed,
                            file=discord.File(src, filename=f"clip-{clip.id}.mp4"),
                            allowed_mentions=NO_MENTIONS,
                        )
                    except discord.HTTPException as e:
                        if e.status != 413 or attempt == MAX_413_RETRIES:
                            raise
                        limit = int(min(limit, src.stat().st_size) * 0.7)
                        log.info(
                            "clip %s: Discord said 413; re-encoding under %d bytes",
                            clip.id,
                            limit,
                        )
                        src = await self._shrink(path, limit, tmp_files)
            except (MediaError, discord.HTTPException) as e:
                if isinstance(e, discord.HTTPException) and e.status != 413:
                    raise
                log.warning("clip %s cannot fit this server's upload limit: %s", clip.id, e)
                embed.add_field(
                    name="Video",
                    value="Too large for this server's upload limit even when shrunk; "
                    "it is kept at full quality for the cut.",
                    inline=False,
                )
                return await channel.send(embed=embed, allowed_mentions=NO_MENTIONS)
            raise AssertionError("unreachable")
        finally:
            for p in tmp_files:
                p.unlink(missing_ok=True)

    async def _shrink(self, path: Path, limit: int, tmp_files: list[Path]) -> Path:
        dest = Path(self.app.tmp_dir) / f"fit-{secrets.token_hex(6)}.mp4"
        tmp_files.append(dest)
        return await fit_to_size(path, dest, limit)

    async def post_unposted(self) -> int:
        """Post every clip that has no message yet (after a restart), adopting posts that
        did reach Discord before the process died."""
        posted = 0
        for clip in await self.app.store.unposted_clips():
            job = await self.app.store.get_job(clip.job_id)
            if job is None:
                continue
            existing = await self._find_existing_post(clip)
            if existing is not None:
                await self.app.store.mark_clip_posted(
                    clip.id, channel_id=existing.channel.id, message_id=existing.id
                )
                log.info("clip %s was already posted as %s; adopted", clip.id, existing.id)
                continue
            await self.clip_ready(clip, job)
            posted += 1
        return posted

    async def _find_existing_post(self, clip: Clip) -> discord.Message | None:
        channel = self.bot.get_channel(clip.channel_id) if clip.channel_id else None
        if not isinstance(channel, discord.TextChannel) or self.bot.user is None:
            return None
        try:
            async for msg in channel.history(limit=100):
                if msg.author.id != self.bot.user.id:
                    continue
                for e in msg.embeds:
                    m = _FOOTER.search((e.footer.text or "") if e.footer else "")
                    if m and int(m.group(1)) == clip.id:
                        return msg
        except discord.HTTPException:
            return None
        return None
