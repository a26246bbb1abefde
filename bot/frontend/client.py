"""``CrowdcutBot``: the ``commands.Bot`` subclass, wired once with the services.

``setup_hook`` loads the cogs and registers the persistent buttons — nothing more.
Starting the worker, posting clips left unposted and reconciling votes happen once,
after the first READY, in ``start_background`` (called by the runner), never in
``on_ready`` (which fires again on every reconnect). Command sync is an explicit
action (``crowdcut sync-commands`` or the owner's ``!sync``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import deque
from typing import Any

import aiohttp
import discord
from discord.ext import commands

from bot.app import App
from bot.frontend.checks import (
    NO_MENTIONS,
    friendly_command_error,
    reply_error,
    unwrap,
)
from bot.frontend.publisher import DiscordPublisher
from bot.services.cuts import CutService
from bot.services.members import MemberService
from bot.services.outbox import OutboxWorker
from bot.services.projects import ProjectService
from bot.services.renders import RenderWorker
from bot.services.submissions import SubmissionService
from bot.services.voting import VotingService
from bot.services.worker import GenerationWorker
from storage.outbox import STATUS

log = logging.getLogger(__name__)

UNKNOWN_MESSAGE = 10008  # Discord's JSON error code for a message that does not exist
#: background renders wait this long after the last command or button
QUIET_SECONDS = 30.0
#: how long after the last interaction of a burst the outbox starts effects again
BURST_GAP_SECONDS = 0.25
#: a burst: this many interactions within BURST_WINDOW_SECONDS (one command is not one)
BURST_MIN = 5
BURST_WINDOW_SECONDS = 1.0
#: the longest a command's work waits for other interactions' acknowledgements
ACKS_FIRST_SECONDS = 1.0
#: during a burst, work also waits until no interaction has arrived for this long: the
#: rest of the burst is still being read from the gateway
ACKS_QUIET_SECONDS = 0.05
#: Discord's deadline for acknowledging an interaction
ACK_DEADLINE_SECONDS = 3.0
#: the longest the garbage collector is held off during a burst (see _hold_collector)
GC_HOLD_MAX_SECONDS = 3.0
#: connections kept to Discord's API. discord.py's default has no limit, so a burst of
#: 500 commands opened ~500 connections to acknowledge them; 64 reused ones acknowledged
#: the same burst with p99 245 ms instead of 497 (bench/discord_load.py; 16: 310 ms,
#: 32: 337, 128: 357)
HTTP_CONNECTIONS = 64


class _PostGone(Exception):
    """A clip's post answered 404 Unknown Message: someone deleted it."""


EXTENSIONS = (
    "bot.frontend.cogs.prompting",
    "bot.frontend.cogs.voting",
    "bot.frontend.cogs.projects",
    "bot.frontend.cogs.cuts",
    "bot.frontend.cogs.admin",
    "bot.frontend.cogs.usage",
)


def intents() -> discord.Intents:
    i = discord.Intents.default()
    i.message_content = True  # the typed form: `!prompt …` with an image attached
    i.members = True  # moderator roles and bot flags of voters
    return i


class CrowdcutBot(commands.Bot):
    def __init__(self, app: App, **kwargs: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned_or(app.settings.command_prefix),
            intents=intents(),
            allowed_mentions=NO_MENTIONS,
            help_command=commands.DefaultHelpCommand(),
            **kwargs,
        )
        self.app = app
        self.settings = app.settings
        self.publisher = DiscordPublisher(self)
        # every effect on Discord goes through the outbox, exactly once
        self.outbox = OutboxWorker(
            app,
            self.publisher.handlers(),
            spacing={STATUS: app.settings.status_edit_seconds},
            hold=self.interactions_pouring_in,
        )
        self.worker = GenerationWorker(app, events=self.publisher)
        self.submissions = SubmissionService(app, self.worker)
        self.voting = VotingService(app)
        self.projects = ProjectService(app)
        self.cuts = CutService(app)
        self.members = MemberService(app, voting=self.voting)
        # previews and final cuts: queued, rendered one at a time, published by the outbox
        self.renders = RenderWorker(
            app,
            self.cuts,
            on_published=self.outbox.wake,
            busy=self._busy,  # background segments yield to generation and to members
        )
        self._last_interaction = -1e18
        self._gc_held_since: float | None = None
        self._recent_interactions: deque[float] = deque(maxlen=BURST_MIN)
        #: interactions received and not yet acknowledged (see acks_first)
        self._unacked: dict[int, tuple[discord.Interaction[Any], float]] = {}
        self._acks_watch: asyncio.Task[None] | None = None
        self._background: asyncio.Task[None] | None = None
        self._recount: asyncio.Task[None] | None = None
        self.background_ready = asyncio.Event()
        self.tree.on_error = self._on_tree_error

    async def login(self, token: str) -> None:
        if self.http.connector is discord.utils.MISSING:
            self.http.connector = aiohttp.TCPConnector(limit=HTTP_CONNECTIONS)
        await super().login(token)

    async def setup_hook(self) -> None:
        from bot.frontend.views import dynamic_items

        for ext in EXTENSIONS:
            await self.load_extension(ext)
        self.add_dynamic_items(*dynamic_items())

    # ------------------------------------------------------------------ background
    def dispatch(self, event_name: str, /, *args: Any, **kwargs: Any) -> None:
        if event_name == "interaction":  # noted at once, without a task per interaction
            self._note_interaction(args[0])
        super().dispatch(event_name, *args, **kwargs)

    def _note_interaction(self, interaction: discord.Interaction[Any]) -> None:
        self._last_interaction = time.monotonic()
        self._recent_interactions.append(self._last_interaction)
        self._unacked[interaction.id] = (interaction, self._last_interaction)
        self.renders.interrupt_background()  # members first: background ffmpeg stops
        self._hold_collector()

    def _hold_collector(self) -> None:
        """While a burst of interactions pours in, Python's garbage collector waits (at
        most GC_HOLD_MAX_SECONDS): its full passes stopped the event loop for 70-80 ms in
        the middle of a burst of 500 commands (bench/discord_load.py, logged with
        ``gc.callbacks``). It runs again BURST_GAP_SECONDS after the last one."""
        if self._gc_held_since is not None or self.interactions_pouring_in() <= 0:
            return
        if not gc.isenabled():
            return  # someone else holds it off: not ours to give back
        gc.disable()
        self._gc_held_since = time.monotonic()
        asyncio.get_running_loop().call_later(BURST_GAP_SECONDS, self._release_collector)

    def _release_collector(self, *, now: bool = False) -> None:
        if self._gc_held_since is None:
            return
        left = self.interactions_pouring_in()
        held = time.monotonic() - self._gc_held_since
        if not now and left > 0 and held < GC_HOLD_MAX_SECONDS:
            asyncio.get_running_loop().call_later(left, self._release_collector)
            return
        self._gc_held_since = None
        gc.enable()

    def _prune_acked(self) -> bool:
        """Forget acknowledged (or expired) interactions from the oldest on; whether any is
        still waiting. Stops at the first one waiting (they are acknowledged about in
        order), so a burst's watcher does not walk all of them every few milliseconds."""
        now = time.monotonic()
        unacked = self._unacked
        while unacked:
            key = next(iter(unacked))
            interaction, at = unacked[key]
            if not interaction.response.is_done() and now - at <= ACK_DEADLINE_SECONDS:
                return True
            del unacked[key]
        return False

    def _burst_arriving(self) -> bool:
        """In a burst whose last interaction arrived under ACKS_QUIET_SECONDS ago."""
        recent = self._recent_interactions
        if len(recent) < BURST_MIN or recent[-1] - recent[0] > BURST_WINDOW_SECONDS:
            return False
        return time.monotonic() - self._last_interaction < ACKS_QUIET_SECONDS

    def _acks_pending(self) -> bool:
        return self._prune_acked() or self._burst_arriving()

    async def _watch_acks(self) -> None:
        while self._acks_pending():
            await asyncio.sleep(0.005)

    async def acks_first(self) -> None:
        """Called by a command once it has acknowledged its interaction: its work waits
        while other interactions still wait for their acknowledgement (a burst of
        commands), at most :data:`ACKS_FIRST_SECONDS`. Discord allows 3 s to acknowledge
        and 15 minutes to answer: during a burst every member first sees "thinking…",
        then the answers come. A command alone is not held at all."""
        if self._acks_watch is None or self._acks_watch.done():
            if not self._acks_pending():
                return
            self._acks_watch = asyncio.create_task(self._watch_acks())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._acks_watch), ACKS_FIRST_SECONDS)

    def interactions_pouring_in(self) -> float:
        """During a burst of interactions (:data:`BURST_MIN` within
        :data:`BURST_WINDOW_SECONDS`), the seconds until the last one is
        :data:`BURST_GAP_SECONDS` old: the outbox waits that long before it starts effects,
        and the project pages (another thread) before they answer a new request, so that
        members' commands are acknowledged first. 0 outside a burst."""
        recent = self._recent_interactions
        if len(recent) < BURST_MIN or recent[-1] - recent[0] > BURST_WINDOW_SECONDS:
            return 0.0
        return BURST_GAP_SECONDS - (time.monotonic() - self._last_interaction)

    def _busy(self) -> bool:
        """Whether background renders should wait: something generates, Discord effects
        are queued, or members used the bot in the last half minute."""
        return (
            self.worker.in_flight > 0
            or self.outbox.in_flight > 0
            or time.monotonic() - self._last_interaction < QUIET_SECONDS
        )

    def start_background(self) -> None:
        """Once per process: after READY, catch up, then run the worker."""
        if self._background is None:
            self._background = asyncio.create_task(self._catch_up_and_work())

    async def _catch_up_and_work(self) -> None:
        await self.wait_until_ready()
        await self.outbox.start()  # first: what a killed process left running is retried
        try:
            reconciled = await self.reconcile_votes()
            posted = await self.publisher.post_unposted()
            log.info("caught up: %d clips' votes reconciled, %d clips to post", reconciled, posted)
        except Exception:
            log.exception("catching up after start failed; carrying on")
        await self.worker.start()
        await self.renders.start()  # renders a killed process left running resume
        self.background_ready.set()
        while True:  # voting that was opened "for N hours" closes itself
            await asyncio.sleep(30)
            try:
                await self.close_due_projects()
            except Exception:
                log.exception("closing projects whose voting time ran out failed")

    async def on_ready(self) -> None:
        """Every READY after the first is a new gateway session (a non-resumable close, an
        INVALID_SESSION): what happened while the bot was away is not replayed, so the
        votes are recounted from the reactions Discord shows."""
        if not self.background_ready.is_set():
            return  # the first READY: ``start_background`` catches up
        if self._recount is None or self._recount.done():
            self._recount = asyncio.create_task(self._recount_after_gap())

    # a permission crowdcut lacked may have been given back: what waits for it goes now
    async def on_guild_channel_update(
        self, before: discord.abc.GuildChannel, after: discord.abc.GuildChannel
    ) -> None:
        await self.publisher.permissions_changed()

    async def on_guild_role_update(self, before: discord.Role, after: discord.Role) -> None:
        await self.publisher.permissions_changed()

    async def on_member_update(self, before: discord.Member, after: discord.Member) -> None:
        if self.user is not None and after.id == self.user.id:
            await self.publisher.permissions_changed()

    async def _recount_after_gap(self) -> None:
        try:
            n = await self.reconcile_votes()
            log.info("a new gateway session: %d clips' votes recounted from Discord", n)
        except Exception:
            log.exception("recounting votes after a new gateway session failed")

    async def close_due_projects(self) -> int:
        """Close every open project whose voting time is over, counting late votes first."""
        closed = 0
        for project in await self.app.store.projects_due_to_close(time.time()):
            await self.reconcile_votes(project.id)
            project = await self.projects.close(project.id, by=None)
            closed += 1
            channel = self.get_channel(project.channel_id)
            if isinstance(channel, discord.abc.Messageable):
                await channel.send(
                    f"🔴 Voting time is over: “{project.title}” is closed. "
                    "Moderators can now `/cut preview` and `/cut approve`.",
                    allowed_mentions=NO_MENTIONS,
                )
        return closed

    async def close(self) -> None:
        self._release_collector(now=True)
        for task in (self._background, self._recount):
            if task is not None:
                task.cancel()
        await self.renders.stop()  # a render cut short resumes at the next start
        await self.worker.stop()
        await self.outbox.stop()  # effects cut short are done again at the next start
        await super().close()

    # ------------------------------------------------------------------ votes
    async def reconcile_votes(self, project_id: int | None = None) -> int:
        """Make stored votes equal the reactions Discord shows, for open projects' clips.
        A clip whose post no longer exists leaves the vote, as if its deletion had been
        seen on the gateway."""
        projects = (
            [await self.app.store.get_project(project_id)]
            if project_id
            else await self.app.store.list_projects(states=["open"])
        )
        n = 0
        for project in projects:
            if project is None or project.state != "open":
                continue
            for clip in await self.app.store.project_clips(project.id):
                if clip.message_id is None or clip.channel_id is None or clip.post_deleted_at:
                    continue
                try:
                    present, bots = await self._reactions_of(clip.channel_id, clip.message_id)
                except _PostGone:
                    await self.voting.post_deleted(clip)
                    continue
                if present is None:
                    continue
                await self.voting.reconcile(clip, present, bot_ids=bots)
                n += 1
        return n

    async def _reactions_of(
        self, channel_id: int, message_id: int
    ) -> tuple[dict[str, set[int]] | None, set[int]]:
        channel = self.get_partial_messageable(channel_id)
        try:
            message = await channel.fetch_message(message_id)
        except discord.NotFound as e:
            if e.code == UNKNOWN_MESSAGE:
                raise _PostGone(message_id) from None
            log.warning("could not fetch clip message %s: %s", message_id, e)
            return None, set()
        except discord.HTTPException as e:
            log.warning("could not fetch clip message %s: %s", message_id, e)
            return None, set()
        present: dict[str, set[int]] = {}
        bots: set[int] = set()
        for reaction in message.reactions:
            emoji = str(reaction.emoji)
            if not self.app.rules.is_vote_emoji(emoji):
                continue
            users: set[int] = set()
            async for user in reaction.users(limit=None):
                users.add(user.id)
                if user.bot:
                    bots.add(user.id)
            present[emoji] = users
        return present, bots

    # ------------------------------------------------------------------ errors
    async def on_command_error(
        self,
        ctx: commands.Context[Any],  # type: ignore[override]
        error: commands.CommandError,
    ) -> None:
        if isinstance(error, commands.CommandNotFound):
            return
        original = unwrap(error)
        friendly = friendly_command_error(original)
        await reply_error(ctx, friendly or original)

    async def _on_tree_error(
        self, interaction: discord.Interaction[Any], error: discord.app_commands.AppCommandError
    ) -> None:
        await reply_error(interaction, unwrap(error))
