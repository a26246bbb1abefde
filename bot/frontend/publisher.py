"""Every effect crowdcut has on Discord, done by the outbox (:mod:`bot.services.outbox`).

Each handler takes one outbox row and does its effect **exactly once**, however often it
runs (a retry after a 5xx, a restart after a kill):

- a message crowdcut creates (a job's status message, a clip's post) carries a ``nonce``
  derived from what it shows, and discord.py sends ``enforce_nonce``: Discord answers a
  repeated nonce with the message it already made (within a few minutes). A handler
  running again after a longer outage first looks for its own post in the channel's
  history since the thing was made (``after=``, paging through all of it), and adopts it;
- the message id is stored as soon as Discord answers;
- edits, reactions and deletes can simply be repeated.

Failures become :class:`~bot.services.durable.Retry` (5xx, 429, a network error, a
missing permission — with one clear notice to the channel, not a loop of failures) or
:class:`~bot.services.durable.GiveUp` (the channel was deleted, a 4xx that will not
change).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import discord

from bot.errors import MediaError
from bot.frontend.checks import NO_MENTIONS
from bot.frontend.limits import fit_embed, fit_lines
from bot.frontend.render import clip_embed, status_text
from bot.media.clips import fit_to_size
from bot.services.durable import GiveUp, Retry
from storage.models import APPROVED, Clip, Cut, Job, Project, Render
from storage.outbox import DELETE_MESSAGE, POST_CLIP, POST_CUT, REACT, STATUS, Effect

if TYPE_CHECKING:
    from bot.frontend.client import CrowdcutBot

log = logging.getLogger(__name__)

_FOOTER = re.compile(r"crowdcut clip #(\d+)")
#: stay a little under the limit Discord states: the multipart envelope counts too
UPLOAD_HEADROOM = 0.97
MAX_413_RETRIES = 8
#: Discord's JSON error codes
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
MISSING_ACCESS = 50001
MISSING_PERMISSIONS = 50013
#: how long a missing permission waits before the effect is tried again
PERMISSION_RETRY_SECONDS = 120.0
#: at most one notice per channel and permission in this time
NOTICE_SECONDS = 3600.0
#: how an effect waiting for a permission is marked in the outbox
MISSING_PERMISSION = "missing permission"

#: the permission each effect needs beyond sending messages, as members see it
_NEEDS = {
    POST_CLIP: "Attach Files and Embed Links",
    REACT: "Add Reactions",
    DELETE_MESSAGE: "Manage Messages",
    STATUS: "Send Messages",
    POST_CUT: "Attach Files and Embed Links",
}


def status_nonce(job_id: int) -> str:
    return f"ccs{job_id}"


def clip_nonce(clip_id: int) -> str:
    return f"ccp{clip_id}"


class DiscordPublisher:
    """The worker's events (they wake the outbox) and the outbox's Discord handlers."""

    def __init__(self, bot: CrowdcutBot) -> None:
        self.bot = bot
        self.app = bot.app
        self._notices: dict[tuple[int, str], float] = {}

    def handlers(self) -> dict[str, Callable[[Effect], object]]:
        return {
            STATUS: self.status,
            POST_CLIP: self.post_clip,
            REACT: self.react,
            DELETE_MESSAGE: self.delete_message,
            POST_CUT: self.post_cut,
        }

    # ------------------------------------------------------------------ worker events
    async def job_changed(self, job: Job) -> None:
        self.bot.outbox.wake()  # its status effect is already in the outbox

    async def clip_ready(self, clip: Clip, job: Job) -> None:
        self.bot.outbox.wake()

    async def permissions_changed(self) -> int:
        """The bot's permissions may have changed (a channel's overwrites, a role, its own
        roles): effects waiting for a permission try again now, not minutes later."""
        n = await self.app.store.hasten_effects(MISSING_PERMISSION)
        if n:
            log.info("permissions changed: %d effects waiting for one try again now", n)
            self.bot.outbox.wake()
        return n

    async def flush(self) -> None:
        """Wait until every queued effect is done (tests, the demo)."""
        await self.bot.outbox.wait_idle()

    # ------------------------------------------------------------------ status messages
    async def status(self, effect: Effect) -> None:
        job = await self.app.store.get_job(effect.payload["job_id"])
        if job is None or job.channel_id is None:
            return  # forgotten, or not from Discord
        text = await self._status_text(job)
        if job.status_message_id is not None:
            message = self.bot.get_partial_messageable(job.channel_id).get_partial_message(
                job.status_message_id
            )
            try:
                async with self._discord(effect, job.channel_id):
                    await message.edit(content=text, allowed_mentions=NO_MENTIONS)
            except discord.NotFound as e:
                if e.code == UNKNOWN_CHANNEL:
                    raise GiveUp("the channel was deleted") from None
                log.info("the status message of job %s was deleted; not posting it again", job.id)
            return
        channel = await self._channel(effect, job.channel_id)
        existing = await self._find_own(
            effect, channel, job.queued_at, lambda m: m.content.startswith(_status_head(job))
        )
        async with self._discord(effect, job.channel_id):
            if existing is None:
                message = await channel.send(
                    text, nonce=status_nonce(job.id), allowed_mentions=NO_MENTIONS
                )
            else:
                message = existing
                await message.edit(content=text, allowed_mentions=NO_MENTIONS)
        await self.app.store.set_status_message(job.id, message.id)

    async def _status_text(self, job: Job) -> str:
        position = None
        if job.state == "queued" and job.moderation != "pending":
            position = await self.bot.worker.position(job.id)
        clip_url = None
        if job.state == "done":
            clip = await self.app.store.clip_for_job(job.id)
            if clip and clip.message_id and clip.channel_id:
                clip_url = self._jump(clip.channel_id, clip.message_id)
        return status_text(job, await self._name(job.member_id), position, clip_url)

    def _jump(self, channel_id: int, message_id: int) -> str:
        guild = getattr(self.bot.get_channel(channel_id), "guild", None)
        gid = guild.id if guild else "@me"
        return f"https://discord.com/channels/{gid}/{channel_id}/{message_id}"

    async def _name(self, member_id: int) -> str:
        names = await self.app.store.member_names([member_id])
        return names.get(member_id, "someone")

    # ------------------------------------------------------------------ clips
    async def post_clip(self, effect: Effect) -> None:
        clip = await self.app.store.get_clip(effect.payload["clip_id"])
        if clip is None or clip.message_id is not None:
            return  # forgotten, or already posted
        job = await self.app.store.get_job(clip.job_id)
        if job is None or clip.channel_id is None:
            return
        channel = await self._channel(effect, clip.channel_id)
        existing = await self._find_own(
            effect, channel, clip.created_at, lambda m: _footer_clip(m) == clip.id
        )
        if existing is not None:
            log.info("clip %s was already posted as %s; adopted", clip.id, existing.id)
            await self.app.store.mark_clip_posted(
                clip.id, channel_id=channel.id, message_id=existing.id
            )
            return
        rules = self.app.rules
        author = await self._name(clip.member_id)
        from bot.web.links import PageLinks

        page = await PageLinks(self.app).clip_url(clip.project_id, clip.id)
        embed = clip_embed(clip, job, author, up_emoji=rules.up_emoji,
                           down_emoji=rules.down_emoji, page=page)  # fmt: skip
        path = self.app.media.path(clip.media_key)
        async with self._discord(effect, channel.id):
            message = await self._send_fitting(channel, clip, path, embed, self._limit(channel))
        await self.app.store.mark_clip_posted(clip.id, channel_id=channel.id, message_id=message.id)
        log.info("clip %s posted as message %s", clip.id, message.id)

    async def react(self, effect: Effect) -> None:
        clip = await self.app.store.get_clip(effect.payload["clip_id"])
        if clip is None or clip.message_id is None or clip.channel_id is None:
            return
        message = self.bot.get_partial_messageable(clip.channel_id).get_partial_message(
            clip.message_id
        )
        try:
            async with self._discord(effect, clip.channel_id):
                for emoji in (self.app.rules.up_emoji, self.app.rules.down_emoji):
                    await message.add_reaction(emoji)
        except discord.NotFound:
            log.info("clip %s's post is gone; no reactions to add", clip.id)

    async def delete_message(self, effect: Effect) -> None:
        channel_id, message_id = effect.payload["channel_id"], effect.payload["message_id"]
        message = self.bot.get_partial_messageable(channel_id).get_partial_message(message_id)
        try:
            async with self._discord(effect, channel_id):
                await message.delete()
        except discord.NotFound:
            pass  # already gone: done

    # ------------------------------------------------------------------ cuts
    async def post_cut(self, effect: Effect) -> None:
        """A render's outcome: a preview (storyboard, video, Approve / Not yet), the final
        video (the master when it fits the server's upload limit, else the preview made
        for it; credits; manifest) whose post records the approval, or the notice that the
        cut changed while it rendered."""
        render = await self.app.store.get_render(effect.payload["render_id"])
        if render is None or render.channel_id is None:
            return
        project = await self.app.store.get_project(render.project_id)
        if project is None:
            return
        channel = await self._channel(effect, render.channel_id)
        cut_id = effect.payload.get("cut_id")
        if cut_id is None:
            await self._post_notice(effect, channel, render)
            return
        cut = await self.app.store.get_cut(cut_id)
        if cut is None:
            return
        if effect.payload.get("edit"):
            await self._edit_final(effect, channel, project, cut, render)
        elif effect.payload.get("final"):
            await self._post_final(effect, channel, project, cut, render)
        else:
            await self._post_preview(effect, channel, project, cut, render)

    async def _post_notice(
        self, effect: Effect, channel: discord.abc.Messageable, render: Render
    ) -> None:
        """Why a render is not posted: the cut changed while it rendered, or it failed."""
        if render.state == "failed":
            head = f"⚠️ Render #{render.id} (a {render.kind} of the cut) could not be made"
            text = f"{head}; the operators have the details. A moderator can ask again."
        else:
            head = f"🔁 The cut changed while render #{render.id} was being made"
            text = (
                f"{head} (a vote, a pin, an exclusion or a member who left), so it is not "
                "posted. A preview of the current cut is on its way."
            )
        found = await self._find_own(
            effect, channel, render.created_at, lambda m: m.content.startswith(head)
        )
        if found is not None:
            return
        async with self._discord(effect, channel.id):
            await channel.send(text, nonce=f"ccr{render.id}", allowed_mentions=NO_MENTIONS)

    async def _post_preview(
        self,
        effect: Effect,
        channel: discord.abc.Messageable,
        project: Project,
        cut: Cut,
        render: Render,
    ) -> None:
        from bot.frontend.views import cut_decision_view

        head = f"🎬 Preview of cut #{cut.id} "
        found = await self._find_own(
            effect, channel, cut.created_at, lambda m: m.content.startswith(head)
        )
        if found is not None:
            log.info("cut %s's preview was already posted as %s; adopted", cut.id, found.id)
            return
        media = self.app.media
        files = []
        if cut.storyboard_key:
            files.append(("storyboard.png", media.path(cut.storyboard_key)))
        if cut.preview_key:
            files.append(("preview.mp4", media.path(cut.preview_key)))
        text = (
            f"{head}for “{discord.utils.escape_markdown(project.title)}” — "
            f"{len(cut.slots)} slots. Moderators can approve it below."
        )
        await self._send_cut(
            effect, channel, render, text=text, embed=None, files=files,
            view=cut_decision_view(cut.id), nonce=f"ccv{cut.id}",
        )  # fmt: skip

    async def _post_final(
        self,
        effect: Effect,
        channel: discord.abc.Messageable,
        project: Project,
        cut: Cut,
        render: Render,
    ) -> None:
        store = self.app.store
        if project.state == APPROVED:
            log.info("project %s is already approved; cut %s is not posted", project.id, cut.id)
            return
        approver = render.requested_by
        names = await store.member_names([approver] if approver is not None else [])
        by = names.get(approver, "a moderator") if approver is not None else "a moderator"
        footer = f"cut #{cut.id} · approved by {by}"
        found = await self._find_own(
            effect,
            channel,
            cut.created_at,
            lambda m: any(e.footer and e.footer.text == footer for e in m.embeds),
        )
        if found is None:
            files = self._final_files(project, cut, self._cut_limit(channel, render))
            embed = await self._credits_embed(project, cut, footer)
            found = await self._send_cut(
                effect, channel, render, text=None, embed=embed, files=files, view=None,
                nonce=f"ccf{cut.id}",
            )  # fmt: skip
        if approver is None:
            approver = 0
        if (await store.get_project(project.id)).state != APPROVED:  # type: ignore[union-attr]
            await store.approve_cut(cut.id, by=approver, message_id=found.id)
            await store.audit(
                "approve_cut",
                actor_id=approver,
                project_id=project.id,
                target=f"cut:{cut.id}",
                details={"clips": [s.get("clip_id") for s in cut.slots]},
            )
        log.info("cut %s of project %s published as message %s", cut.id, project.id, found.id)

    def _final_files(self, project: Project, cut: Cut, limit: int) -> list[tuple[str, Path]]:
        """The published post's files: the master when it fits ``limit``, else the preview
        made for it; the manifest."""
        media = self.app.media
        video = media.path(cut.master_key) if cut.master_key else None
        if video is None or video.stat().st_size > limit:
            video = media.path(cut.preview_key) if cut.preview_key else None
        files = []
        if video is not None:
            files.append((f"crowdcut-{project.id}.mp4", video))
        if cut.manifest_key:
            files.append((f"crowdcut-{project.id}-manifest.json", media.path(cut.manifest_key)))
        return files

    async def _edit_final(
        self,
        effect: Effect,
        channel: discord.abc.Messageable,
        project: Project,
        cut: Cut,
        render: Render,
    ) -> None:
        """The approved cut was rendered again with new credits (a member in it was
        forgotten): its post takes the new video, manifest and credits. Editing again is
        harmless, so a retry just edits again."""
        if cut.message_id is None:
            return  # not posted yet: the post will carry the new files
        store = self.app.store
        names = await store.member_names([cut.approved_by] if cut.approved_by else [])
        by = names.get(cut.approved_by, "a moderator") if cut.approved_by else "a moderator"
        embed = await self._credits_embed(project, cut, f"cut #{cut.id} · approved by {by}")
        tmp_files: list[Path] = []
        try:
            limit = self._cut_limit(channel, render)
            files = self._final_files(project, cut, limit)
            files = [
                (n, await self._shrink(p, limit, tmp_files))
                if n.endswith(".mp4") and p.stat().st_size > limit
                else (n, p)
                for n, p in files
            ]
            message = channel.get_partial_message(cut.message_id)  # type: ignore[attr-defined]
            try:
                async with self._discord(effect, channel.id):
                    await message.edit(
                        embed=embed,
                        attachments=[discord.File(p, filename=n) for n, p in files],
                    )
            except discord.NotFound:
                log.info("cut %s's post is gone; nothing to edit", cut.id)
                return
        finally:
            for p in tmp_files:
                p.unlink(missing_ok=True)
        log.info("cut %s's post now carries its new credits", cut.id)

    async def _credits_embed(self, project: Project, cut: Cut, footer: str) -> discord.Embed:
        from bot.web.links import PageLinks

        credits, seen = [], set()
        for s in cut.slots:
            if s.get("reused") or s.get("clip_id") in seen:
                continue
            seen.add(s.get("clip_id"))
            credits.append(
                f"`{s['index'] + 1:>2}` {discord.utils.escape_markdown(s['author'])}"
                f" — {discord.utils.escape_markdown(str(s['prompt'])[:60])}"
            )
        embed = discord.Embed(
            title=f"🎉 {project.title}",
            description=fit_lines(credits, 4000, more=lambda n: f"… and {n} more clips")
            or "No credits.",
            colour=discord.Colour.green(),
        )
        if project.song_credit:
            music = discord.utils.escape_markdown(project.song_credit)
            embed.add_field(name="Music", value=music[:1024], inline=False)
        embed.set_footer(text=footer)
        # the full-quality master, the storyboard and the credits, when PUBLIC_URL is set
        page = await PageLinks(self.app).project_url(project.id)
        if page:
            embed.url = page
            embed.add_field(name="Watch in full quality", value=page, inline=False)
        return fit_embed(embed)

    def _cut_limit(self, channel: discord.abc.Messageable, render: Render) -> int:
        """The server's upload limit now, or when the render was asked for if smaller."""
        limit = self._limit(channel)
        if render.upload_limit:
            limit = min(limit, int(render.upload_limit * UPLOAD_HEADROOM))
        return limit

    async def _send_cut(
        self,
        effect: Effect,
        channel: discord.abc.Messageable,
        render: Render,
        *,
        text: str | None,
        embed: discord.Embed | None,
        files: list[tuple[str, Path]],
        view: discord.ui.View | None,
        nonce: str,
    ) -> discord.Message:
        """Send a cut's post with its nonce; a video over the limit (or a 413) is sent
        smaller, 30 % under what was refused each time."""
        limit = self._cut_limit(channel, render)
        tmp_files: list[Path] = []
        paths = dict(files)
        try:
            for attempt in range(MAX_413_RETRIES + 1):
                for name, path in list(paths.items()):
                    if name.endswith(".mp4") and path.stat().st_size > limit:
                        paths[name] = await self._shrink(path, limit, tmp_files)
                kwargs: dict[str, object] = {"nonce": nonce, "allowed_mentions": NO_MENTIONS}
                if view is not None:
                    kwargs["view"] = view
                if embed is not None:
                    kwargs["embed"] = embed
                try:
                    async with self._discord(effect, channel.id):
                        try:
                            return await channel.send(
                                text,
                                files=[discord.File(p, filename=n) for n, p in paths.items()],
                                **kwargs,  # type: ignore[arg-type]
                            )
                        except discord.HTTPException as e:
                            if e.status != 413 or attempt == MAX_413_RETRIES:
                                raise
                            raise _TooLarge() from None
                except _TooLarge:
                    biggest = max(
                        (p.stat().st_size for n, p in paths.items() if n.endswith(".mp4")),
                        default=limit,
                    )
                    limit = int(min(limit, biggest) * 0.7)
                    log.info("render %s: Discord said 413; sending under %d", render.id, limit)
            raise AssertionError("unreachable")
        finally:
            for p in tmp_files:
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ helpers
    def _limit(self, channel: discord.abc.Messageable) -> int:
        guild = getattr(channel, "guild", None)
        return int((guild.filesize_limit if guild else 10 * 1024 * 1024) * UPLOAD_HEADROOM)

    async def _channel(self, effect: Effect, channel_id: int) -> discord.abc.Messageable:
        channel = self.bot.get_channel(channel_id)
        if isinstance(channel, discord.abc.Messageable):
            return channel
        try:
            async with self._discord(effect, channel_id):
                fetched = await self.bot.fetch_channel(channel_id)
        except discord.NotFound:
            raise GiveUp(f"channel {channel_id} no longer exists") from None
        if not isinstance(fetched, discord.abc.Messageable):
            raise GiveUp(f"channel {channel_id} cannot hold messages")
        return fetched

    async def _find_own(
        self,
        effect: Effect,
        channel: discord.abc.Messageable,
        since: float,
        match: Callable[[discord.Message], bool],
    ) -> discord.Message | None:
        """On a retry (an earlier try of ``effect`` may have reached Discord): our own
        message matching ``match`` posted after ``since`` (epoch seconds), read from the
        channel's whole history since then, oldest first. On a first try: None."""
        me = self.bot.user
        if effect.attempts <= 1 or me is None or not hasattr(channel, "history"):
            return None
        after = discord.Object(
            discord.utils.time_snowflake(dt.datetime.fromtimestamp(since - 5, dt.UTC))
        )
        async with self._discord(effect, getattr(channel, "id", 0)):
            async for message in channel.history(limit=None, after=after, oldest_first=True):
                if message.author.id == me.id and match(message):
                    return message
        return None

    @contextlib.asynccontextmanager
    async def _discord(self, effect: Effect, channel_id: int) -> AsyncIterator[None]:
        """Discord's failures as the outbox understands them (NotFound is the caller's)."""
        try:
            yield
        except discord.NotFound as e:
            if e.code == UNKNOWN_CHANNEL:
                raise GiveUp("the channel was deleted") from None
            raise
        except discord.Forbidden as e:
            await self._permission_notice(effect, channel_id, e)
            raise Retry(
                f"{MISSING_PERMISSION} (code {e.code})",
                delay=PERMISSION_RETRY_SECONDS,
                count=False,
            ) from None
        except discord.RateLimited as e:
            raise Retry("rate limited", delay=e.retry_after, count=False) from None
        except discord.DiscordServerError as e:
            raise Retry(f"Discord answered {e.status}") from None
        except discord.HTTPException as e:
            if e.status == 429:
                raise Retry("rate limited", count=False) from None
            raise GiveUp(f"Discord refused it: HTTP {e.status}, code {e.code}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise Retry(f"network: {type(e).__name__}") from None

    async def _permission_notice(self, effect: Effect, channel_id: int, e: Exception) -> None:
        """Tell the channel once what crowdcut lacks, instead of failing in a loop."""
        needs = _NEEDS.get(effect.kind, "the permissions it needs")
        key = (channel_id, needs)
        now = time.monotonic()
        if now - self._notices.get(key, -1e18) < NOTICE_SECONDS:
            return
        self._notices[key] = now
        log.warning("missing permission in channel %s for %s: %s", channel_id, effect.kind, e)
        text = (
            f"⚠️ crowdcut is missing the **{needs}** permission in this channel, so it "
            "cannot finish its work here. Nothing is lost: it tries again every few minutes. "
            "A moderator can give the bot that permission."
        )
        with contextlib.suppress(discord.HTTPException, aiohttp.ClientError, OSError):
            await self.bot.get_partial_messageable(channel_id).send(
                text, allowed_mentions=NO_MENTIONS
            )

    async def _send_fitting(
        self,
        channel: discord.abc.Messageable,
        clip: Clip,
        path: Path,
        embed: discord.Embed,
        limit: int,
    ) -> discord.Message:
        """Send the clip with its nonce; re-encode it smaller when it is over the limit or
        Discord says 413.

        Discord's 413 does not say the limit (a server's boost level sets it), so each 413
        lowers the target by 30 % of what was sent. A clip that cannot be made small
        enough is posted without its video (the embed says so) rather than not at all:
        it can still be voted on, and it still goes into the cut at full quality.
        """
        nonce = clip_nonce(clip.id)
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
                            nonce=nonce,
                            allowed_mentions=NO_MENTIONS,
                        )
                    except discord.HTTPException as e:
                        if e.status != 413 or attempt == MAX_413_RETRIES:
                            raise
                        limit = int(min(limit, src.stat().st_size) * 0.7)
                        log.info(
                            "clip %s: Discord said 413; re-encoding under %d bytes", clip.id, limit
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
                return await channel.send(embed=embed, nonce=nonce, allowed_mentions=NO_MENTIONS)
            raise AssertionError("unreachable")
        finally:
            for p in tmp_files:
                p.unlink(missing_ok=True)

    async def _shrink(self, path: Path, limit: int, tmp_files: list[Path]) -> Path:
        dest = Path(self.app.tmp_dir) / f"fit-{secrets.token_hex(6)}.mp4"
        tmp_files.append(dest)
        return await fit_to_size(path, dest, limit)

    async def post_unposted(self) -> int:
        """At start: queue a post for every clip without one (the outbox adopts posts that
        reached Discord before the process died)."""
        n = await self.app.store.enqueue_unposted_clips()
        if n:
            self.bot.outbox.wake()
        return n


class _TooLarge(Exception):
    """Internal: Discord answered 413 to a cut's post."""


def _status_head(job: Job) -> str:
    return f"🎬 **Job #{job.id}**"


def _footer_clip(message: discord.Message) -> int | None:
    for e in message.embeds:
        m = _FOOTER.search((e.footer.text or "") if e.footer else "")
        if m:
            return int(m.group(1))
    return None


__all__ = ["DiscordPublisher", "clip_nonce", "status_nonce"]
