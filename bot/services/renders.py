"""Renders as durable work: previews and final cuts, never stale, never clobbered.

A command asks for a render (:meth:`RenderWorker.request`) and answers at once; the render
is a row in the ``renders`` table, claimed by this worker with the durable-work pattern
(:mod:`bot.services.durable`): one at a time (the media layer bounds its own ffmpeg
processes), retried with capped backoff, and put back to ``pending`` at the next start
when a kill cut it short; the segments it had already cached are not rendered again.

Each render writes into its own folder (``renders/render-<id>``), then puts the master,
the preview, the manifest and the storyboard into the media store (content-addressed) and
removes the folder: two renders never write the same file.

A cut is known by its **identity** (:func:`bot.media.assembly.cut_identity_of`: which clip
in which slot, with which trims, transition and credits). When a render is done, the
project's current selection is chosen again; only if its identity is still the rendered
one are the ``cuts`` row and its ``POST_CUT`` effect written (one transaction). Otherwise
the render is ``stale``: the channel is told, and a preview of the current cut is queued.
A final is a render of the identity a moderator approved; two approvals of one identity
share one render and one post.

While the vote goes on, a periodic pass renders the segments of each open project's
current selection in the background (:func:`bot.media.assembly.render_segments`, niced,
one project at a time, never while generation runs, and stopped as soon as a member
interacts with the bot), so that an approval renders only what changed since. When the
master would not fit the server's upload limit, the pass also encodes each segment again
for the preview (:func:`bot.media.assembly.segment_preview`), so that the approval only
joins those too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.app import App
from bot.errors import InvalidState, StorageFull
from bot.media.assembly import CutSlot, assemble, cut_identity_of, render_segments
from bot.media.segments import CutOptions, SegmentCache, SegmentRenderer
from bot.media.storyboard import storyboard
from bot.services.cuts import CutService, _slot_record, song_credits
from bot.services.durable import DurableWorker, GiveUp, Retry
from storage.models import APPROVED, CLOSED, OPEN, Project, Render

log = logging.getLogger(__name__)

PREVIEW, FINAL = "preview", "final"
#: an approved cut rendered again with new credits (a member in it was forgotten)
RECREDIT = "recredit"
#: stay a little under the upload limit Discord states: the multipart envelope counts too
UPLOAD_HEADROOM = 0.97
#: Discord's upload limit without boosts
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


@dataclass(frozen=True)
class Selection:
    """The project's current cut: its slots, how they are rendered, and its identity."""

    slots: list[CutSlot]
    options: CutOptions
    identity: str

    def records(self) -> list[dict[str, object]]:
        return [_slot_record(s) for s in self.slots]


class RenderWorker(DurableWorker):
    """Runs the ``renders`` table (see the module doc)."""

    name = "renders"
    idle_seconds = 0.5
    max_attempts = 5
    #: how often open projects' segments are brought up to date in the background
    background_seconds = 5.0

    def __init__(
        self,
        app: App,
        cuts: CutService,
        *,
        on_published: Callable[[], None] | None = None,
        busy: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.app = app
        self.store = app.store
        self.settings = app.settings
        self.cuts = cuts
        self.on_published = on_published or (lambda: None)
        self.busy = busy or (lambda: False)
        self.clock = clock
        self.renderer = SegmentRenderer(
            SegmentCache(self.settings.data_dir / "segments"), ffmpeg_binary=app.ffmpeg
        )
        self._background: asyncio.Task[None] | None = None
        self._last_background = -1e18
        self._seen: dict[int, str] = {}  # project id -> identity whose segments are cached

    # ------------------------------------------------------------------ asking
    async def selection(self, project: Project) -> Selection:
        """The project's current cut and its identity (no moderators in its credits: an
        approval does not change which cut it is)."""
        slots = await self.cuts.choose(project)
        options = await self._options(project)
        identity = ""
        if slots:
            credits = song_credits(project)
            identity = cut_identity_of(slots, options, song_key=project.song_key,
                                       title=project.title, credits=credits)  # fmt: skip
        return Selection(slots, options, identity)

    async def request(
        self,
        project: Project,
        kind: str,
        *,
        by: int | None,
        channel_id: int | None,
        upload_limit: int | None,
        identity: str | None = None,
        by_name: str | None = None,
    ) -> tuple[Render, bool]:
        """Queue a render of the current cut (or of ``identity``, which must still be the
        current one); returns it and whether it is new (else one already queued is reused).
        ``by_name`` is how the moderator who asked is credited on a final."""
        if project.state not in (OPEN, CLOSED, APPROVED):
            raise InvalidState(f"The project is {project.state}; nothing to cut yet.")
        if kind == FINAL and project.state == APPROVED:
            raise InvalidState("This project's cut is already approved.")
        sel = await self.selection(project)
        if not sel.slots:
            raise InvalidState("There are no clips to cut yet.")
        if identity is not None and identity != sel.identity:
            raise CutChanged()
        if by is not None and by_name:
            await self.store.upsert_member(by, by_name)
        render, new = await self.store.enqueue_render(
            project_id=project.id,
            kind=kind,
            identity=sel.identity,
            slots=sel.records(),
            requested_by=by,
            channel_id=channel_id,
            upload_limit=upload_limit,
        )
        if new:
            await self.store.audit(
                f"{kind}_cut_requested",
                actor_id=by,
                project_id=project.id,
                target=f"render:{render.id}",
            )
        self.wake()
        return render, new

    async def is_current(self, project: Project, identity: str | None) -> bool:
        return identity is not None and (await self.selection(project)).identity == identity

    # ------------------------------------------------------------------ the worker
    async def recover(self) -> int:
        n = await self.store.requeue_running_renders()
        if n:
            log.info("%d renders were cut short by a stop; resuming them", n)
        return n

    async def stop(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
            self._background = None
        await super().stop()

    async def dispatch(self) -> list[int]:
        if self.free <= 0:
            return []
        render = await self.store.claim_render(self.clock())
        if render is None:
            self._maybe_background()
            return []
        self.spawn(render.id, self._handle(render))
        return [render.id]

    async def _handle(self, render: Render) -> None:
        try:
            await self._render(render)
        except asyncio.CancelledError:
            raise  # stopping: the row stays running and is resumed at the next start
        except StorageFull:
            await self.store.retry_render(
                render.id, next_attempt_at=self.clock() + 30, error="the database is full"
            )
        except GiveUp as g:
            log.warning("render %s: giving up: %s", render.id, g.reason)
            await self._fail(render, g.reason)
        except Exception as e:
            reason = e.reason if isinstance(e, Retry) else f"{type(e).__name__}: {e}"
            log.exception("render %s failed (try %d)", render.id, render.attempts)
            if render.attempts >= self.max_attempts:
                await self._fail(render, reason)
                return
            s = self.settings
            delay = self.delay(render.attempts, base=s.retry_base_seconds,
                               cap=s.retry_max_seconds, retry_after=None)  # fmt: skip
            await self.store.retry_render(
                render.id, next_attempt_at=self.clock() + delay, error=reason
            )

    async def _fail(self, render: Render, reason: str) -> None:
        """Give up on a render; the channel that asked for it is told (not why)."""
        if render.kind == RECREDIT:  # the operator's to see: the channel asked for nothing
            log.error("render %s: the new credits of cut %s could not be made: %s",
                      render.id, render.cut_id, reason)  # fmt: skip
        notice = render.channel_id is not None and render.kind != RECREDIT
        await self.store.fail_render(render.id, error=reason, notice=notice)
        self.on_published()

    async def _render(self, render: Render) -> None:
        project = await self.store.get_project(render.project_id)
        if project is None:
            raise GiveUp("the project no longer exists")
        if render.kind == RECREDIT:
            await self._recredit(project, render)
            return
        sel = await self.selection(project)
        if not sel.slots:
            raise GiveUp("the project has no clips to cut any more")
        if sel.identity != render.identity:
            if render.kind == PREVIEW:  # a preview shows the cut current when it starts
                await self.store.set_render_identity(render.id, sel.identity, sel.records())
                render.identity = sel.identity
            else:
                await self._stale(project, render)
                return
        keys = await self._make(project, render, sel)
        # published only if what it rendered is still the project's cut
        if not await self.is_current(project, render.identity):
            await self._stale(project, render)
            return
        await self.store.finish_render(render.id, **keys)
        log.info("render %s (%s of project %s) done", render.id, render.kind, project.id)
        self.on_published()

    async def _make(self, project: Project, render: Render, sel: Selection) -> dict[str, object]:
        """Render ``sel`` in the render's own folder, put its files in the media store and
        return their keys; the folder is removed (also what a killed try left in it)."""
        out_dir = self.settings.renders_dir / f"render-{render.id}"
        await asyncio.to_thread(shutil.rmtree, out_dir, True)
        try:
            return await self._make_in(project, render, sel, out_dir)
        finally:
            await asyncio.to_thread(shutil.rmtree, out_dir, True)

    async def _make_in(
        self, project: Project, render: Render, sel: Selection, out_dir: Path
    ) -> dict[str, object]:
        s, o = self.settings, sel.options
        limit = int((render.upload_limit or DEFAULT_UPLOAD_LIMIT) * UPLOAD_HEADROOM)
        if render.kind == PREVIEW:
            limit = min(limit, s.preview_max_bytes)
        credits = song_credits(project)
        if render.kind != PREVIEW and render.requested_by is not None:
            names = await self.store.member_names([render.requested_by])
            credits = song_credits(project, names.get(render.requested_by, "a moderator"))
        song = self.app.media.path(project.song_key) if project.song_key else None
        result = await assemble(
            sel.slots,
            song,
            out_dir,
            title=project.title,
            width=o.width,
            height=o.height,
            fps=o.fps,
            transition=o.transition,
            transition_seconds=o.transition_seconds,
            fit=o.fit,
            preview_limit_bytes=limit,
            credits_seconds=None,  # as long as the roll needs to be read
            credits=credits,
            song_key=project.song_key,
            renderer=self.renderer,
        )
        board = await storyboard(sel.slots, out_dir / "storyboard.png")
        media = self.app.media
        return {
            "master_key": await asyncio.to_thread(media.put_file, result.master, "mp4"),
            "preview_key": await asyncio.to_thread(media.put_file, result.preview, "mp4"),
            "manifest_key": await asyncio.to_thread(media.put_file, result.manifest, "json"),
            "storyboard_key": await asyncio.to_thread(media.put_file, board, "png"),
            "preview_bytes": limit,
        }

    async def _recredit(self, project: Project, render: Render) -> None:
        """Render an approved cut again from its (updated) slot records: the same clips
        with today's credits (a member forgotten since reads "anonymous" on the roll, the
        storyboard and in the manifest). The cut takes the new files, the old ones are
        deleted, and its post is edited (:meth:`Store.recredit_cut`)."""
        cut = await self.store.get_cut(render.cut_id) if render.cut_id else None
        if cut is None or cut.state != APPROVED:
            raise GiveUp("the approved cut is gone")
        slots = await self.cuts.slots_of(render.slots)
        options = await self._options(project)
        identity = cut_identity_of(slots, options, song_key=project.song_key,
                                   title=project.title, credits=song_credits(project))  # fmt: skip
        keys = await self._make(project, render, Selection(slots, options, identity))
        orphans = await self.store.recredit_cut(render.id, identity=identity, **keys)
        for key in orphans:
            await asyncio.to_thread(self.app.media.delete, key)
        log.info("cut %s of project %s rendered again with new credits", cut.id, project.id)
        self.on_published()

    async def _final_limit(self, project: Project) -> int:
        """The byte limit a final of ``project`` will be posted under: the server's upload
        limit as of the project's latest render (10 MiB until one was asked for)."""
        limit = await self.store.latest_upload_limit(project.id)
        return int((limit or DEFAULT_UPLOAD_LIMIT) * UPLOAD_HEADROOM)

    async def _stale(self, project: Project, render: Render) -> None:
        """The cut changed: this render is never published as current; the channel is told
        and a preview of the current cut is queued."""
        log.info("render %s of project %s is stale: the cut changed", render.id, project.id)
        await self.store.stale_render(render.id, notice=render.channel_id is not None)
        self.on_published()
        fresh = await self.store.get_project(project.id)
        if fresh is None or fresh.state == APPROVED:
            return
        with contextlib.suppress(InvalidState):
            await self.request(
                fresh,
                PREVIEW,
                by=render.requested_by,
                channel_id=render.channel_id,
                upload_limit=render.upload_limit,
            )

    async def _options(self, project: Project) -> CutOptions:
        return await self.cuts.cut_options(project)  # the project's transition and fit

    # ------------------------------------------------------------------ background
    def _maybe_background(self) -> None:
        """Every ``background_seconds`` while no render runs and nothing generates: bring
        open projects' segments up to date (low priority, one project at a time)."""
        if self._background is not None and not self._background.done():
            return
        now = time.monotonic()
        if now - self._last_background < self.background_seconds or self.busy():
            return
        self._last_background = now
        self._background = asyncio.create_task(self._background_pass(), name="crowdcut-segments")

    def interrupt_background(self) -> None:
        """Stop the background pass now (a member is using the bot): its ffmpeg processes
        are killed, the segments it finished stay cached, and the next quiet pass goes on
        from there."""
        if self._background is not None and not self._background.done():
            self._background.cancel()
            self._last_background = time.monotonic()

    async def _background_pass(self) -> None:
        try:
            for project in await self.store.list_projects(states=[OPEN]):
                if self.busy() or self.in_flight:
                    return  # generation and asked-for renders go first
                sel = await self.selection(project)
                if not sel.slots or self._seen.get(project.id) == sel.identity:
                    continue
                song = self.app.media.path(project.song_key) if project.song_key else None
                # the final's preview too, when its master will not fit the server's limit
                limit = await self._final_limit(project)
                await render_segments(sel.slots, self.renderer, options=sel.options,
                                      title=project.title, song=song, song_key=project.song_key,
                                      credits=song_credits(project), credits_seconds=None,
                                      background=True, preview_limit_bytes=limit)  # fmt: skip
                self._seen[project.id] = sel.identity
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rendering segments in the background failed; trying again later")

    async def wait_idle(self, timeout: float = 60.0) -> None:
        """Until no render is pending or running (tests, the demo)."""

        async def settled() -> None:
            while True:
                rows = await self.store.renders_in_flight()
                if not rows and not self._tasks:
                    return
                self.wake()
                await asyncio.sleep(0.05)

        await asyncio.wait_for(settled(), timeout)


class CutChanged(InvalidState):
    """The cut under a button is no longer the project's current one."""

    def __init__(self) -> None:
        super().__init__(
            "The cut changed since this preview (a vote, a pin, an exclusion or a member "
            "who left): it is not the current one any more."
        )
