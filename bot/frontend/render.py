"""How jobs, clips, projects and cuts read in Discord. Formatting only."""

from __future__ import annotations

import discord

from bot.core.queue import Position, format_eta
from bot.frontend.limits import fit_content, fit_embed, fit_lines, shorten
from storage.models import Clip, Job, Project, Slot

PROGRESS_CELLS = 12
#: room for the slot list in /project status (of the embed's 4,096; 6,000 in all)
SLOT_ROWS_LIMIT = 3800
POST_DELETED = "post deleted by a moderator — out of the vote"


def progress_bar(fraction: float | None) -> str:
    f = min(1.0, max(0.0, fraction or 0.0))
    full = round(f * PROGRESS_CELLS)
    return "▰" * full + "▱" * (PROGRESS_CELLS - full) + f" {f * 100:.0f}%"


def generator_label(job: Job) -> str:
    """Which backend and model made a job's clip, within an embed field's limit."""
    text = job.backend or "?"
    if job.model:
        text += f" · {discord.utils.escape_markdown(job.model)}"
    return text[:1024]


def clip_label(slot: int | None) -> str:
    return "any slot" if slot is None else f"slot {slot + 1}"


def quote(text: str, limit: int = 300) -> str:
    text = discord.utils.escape_markdown(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return "> " + text.replace("\n", " ")


def parent_text(parent_clip_id: int, lineage: str | None) -> str:
    """How a clip continues its parent: "continues clip #N (chain)" / "extends clip #N"."""
    if lineage == "chain":
        return f"continues clip #{parent_clip_id} (chain)"
    return f"extends clip #{parent_clip_id}"


def status_text(
    job: Job, author: str, position: Position | None = None, clip_url: str | None = None
) -> str:
    """The one status message that follows a job, as it moves."""
    head = (
        f"🎬 **Job #{job.id}** · {discord.utils.escape_markdown(author)} · "
        f"{clip_label(job.slot)} · {job.duration or 0:g}s · {job.aspect}"
    )
    if job.extends_clip_id:
        head += f" · {parent_text(job.extends_clip_id, job.lineage)}"
    lines = [head, quote(job.prompt)]
    if job.state == "queued" and job.moderation == "pending":
        lines.append("🛡️ Waiting for a moderator to approve this prompt.")
    elif job.state == "queued":
        if job.tries and job.error:
            lines.append(
                f"🔁 Trying again (try {job.tries + 1}): "
                f"{discord.utils.escape_markdown(job.error[:160])}"
            )
        if position is not None and position.position > 0:
            lines.append(
                f"⏳ Queued — position {position.position}, ETA {format_eta(position.eta_seconds)}"
            )
        else:
            lines.append("⏳ Queued")
    elif job.state in ("submitted", "running"):
        lines.append(f"🎨 Generating on {job.backend or '?'} {progress_bar(job.progress)}")
    elif job.state == "done":
        made = f" (made with {job.backend})" if job.backend else ""
        lines.append(f"✅ Posted{made}: {clip_url}" if clip_url else "✅ Done — posting the clip…")
    elif job.state == "failed":
        lines.append(f"❌ Failed: {discord.utils.escape_markdown(job.error or 'unknown error')}")
    elif job.state == "canceled":
        lines.append("🚫 Canceled" + (f" — {job.error}" if job.error else ""))
    return fit_content("\n".join(lines))


def clip_embed(
    clip: Clip,
    job: Job,
    author: str,
    *,
    up: int = 0,
    down: int = 0,
    up_emoji: str = "👍",
    down_emoji: str = "👎",
    page: str | None = None,
) -> discord.Embed:
    """The clip's post. ``page`` (the clip's web page, with ``PUBLIC_URL``) links the
    title."""
    e = discord.Embed(
        title=f"Clip #{clip.id}",
        description=quote(job.prompt, 1000),
        colour=discord.Colour.blurple(),
        url=page,
    )
    e.add_field(name="Author", value=discord.utils.escape_markdown(author))
    e.add_field(name="Slot", value=clip_label(clip.slot))
    e.add_field(name="Length", value=f"{clip.duration or 0:.1f}s")
    parent = clip.parent_clip_id or job.extends_clip_id
    if parent:
        e.add_field(name="Parent", value=parent_text(parent, clip.lineage or job.lineage))
    if job.backend:
        e.add_field(name="Made with", value=generator_label(job))
    e.set_footer(text=f"crowdcut clip #{clip.id} · vote with {up_emoji} / {down_emoji}")
    return fit_embed(e)


def clip_info_embed(
    clip: Clip,
    job: Job | None,
    author: str,
    up: int,
    down: int,
    jump_url: str | None,
    *,
    up_emoji: str = "👍",
    down_emoji: str = "👎",
) -> discord.Embed:
    e = discord.Embed(
        title=f"Clip #{clip.id}", description=quote(job.prompt if job else "(prompt deleted)", 1000)
    )
    e.add_field(name="Author", value=discord.utils.escape_markdown(author))
    e.add_field(name="Slot", value=clip_label(clip.slot))
    e.add_field(name="Backend", value=generator_label(job) if job and job.backend else "?")
    e.add_field(name="Seed", value=str(job.seed if job else "?"))
    if clip.post_deleted_at is not None:
        e.add_field(name="Votes", value=POST_DELETED)
    else:
        e.add_field(
            name="Votes", value=f"{up_emoji} {up} · {down_emoji} {down} · score {up - down}"
        )
    e.add_field(name="Size", value=f"{clip.width}×{clip.height} · {clip.duration or 0:.1f}s")
    parent = clip.parent_clip_id or (job.extends_clip_id if job else None)
    if parent:
        e.add_field(
            name="Parent", value=parent_text(parent, clip.lineage or (job.lineage if job else None))
        )
    if jump_url:
        e.add_field(name="Message", value=jump_url, inline=False)
    return fit_embed(e)


def clock(seconds: float) -> str:
    """``m:ss.s`` — a time in a song."""
    m, sec = divmod(max(0.0, seconds), 60)
    return f"{int(m)}:{sec:04.1f}"


def slot_row(
    slot: Slot, *, candidates: int = 0, pick: tuple[int, int | None, bool] | None = None
) -> str:
    """One slot of the plan on one line: number, start–end, bars, the clip the cut would
    take now (``pick``: clip id, score, reused), candidates named for it, and its hint."""
    parts = [f"`{slot.index + 1:>2}` {clock(slot.start)}–{clock(slot.end)}"]
    if slot.bar is not None and slot.bars:
        first, last = slot.bar + 1, slot.bar + slot.bars
        parts.append(f"bar {first}" if first == last else f"bars {first}–{last}")
    if pick is None:
        parts.append("no clip yet")
    else:
        clip_id, score, reused = pick
        how = "reused" if reused else (f"score {score}" if score is not None else "")
        parts.append(f"clip #{clip_id}" + (f" ({how})" if how else ""))
    if candidates:
        parts.append(f"{candidates} for it")
    line = " · ".join(parts)
    if slot.hint:
        line += f" · 💬 {discord.utils.escape_markdown(shorten(slot.hint, 80))}"
    return line


def style_text(project: Project) -> str:
    """A project's style on one line: transition and its length in beats, fit, chain mode."""
    transition = project.transition or "cut"
    if transition == "cut":
        parts = ["hard cuts"]
    else:
        beats = project.transition_beats or 0.5  # the cut's default (bot.services.cuts)
        parts = [f"{transition} of {beats:g} beat{'' if beats == 1 else 's'}"]
    fit = project.fit or "hold"
    parts.append("short clips held on their last frame" if fit == "hold" else "short clips slowed")
    parts.append("chain mode on" if project.chain_mode else "chain mode off")
    return " · ".join(parts)


def project_embed(
    project: Project,
    *,
    filled: int,
    candidates: dict[int, int],
    picks: dict[int, tuple[int, int | None, bool]],
    queued: int,
    plan_note: str | None = None,
) -> discord.Embed:
    """``/project status``: the state, then the plan one slot a line (see :func:`slot_row`);
    a plan too long for one embed ends with "… and N more slots"."""
    n = len(project.slot_plan)
    e = discord.Embed(title=f"🎞️ {project.title}", colour=discord.Colour.gold())
    e.add_field(name="State", value=project.state)
    e.add_field(name="Slots filled", value=f"{filled} / {n}")
    e.add_field(name="Jobs waiting", value=str(queued))
    if project.song_seconds:
        e.add_field(
            name="Song",
            value=shorten(
                discord.utils.escape_markdown(project.song_credit or project.song_name or "song")
                + f" · {clock(project.song_seconds)}",
                1024,
            ),
        )
    if plan_note:
        e.add_field(name="Plan", value=plan_note, inline=False)
    e.add_field(name="Style", value=style_text(project), inline=False)
    if project.voting_ends_at and project.state == "open":
        e.add_field(name="Voting ends", value=f"<t:{int(project.voting_ends_at)}:R>")
    rows = [
        slot_row(s, candidates=candidates.get(s.index, 0), pick=picks.get(s.index))
        for s in project.slot_plan
    ]
    e.description = (
        fit_lines(rows, SLOT_ROWS_LIMIT, more=lambda k: f"… and {k} more slots") or "No slots."
    )
    return fit_embed(e)
