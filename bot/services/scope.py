"""Servers are separate: a job, clip or cut of another server reads as one that does not exist.

Every service that takes a number a member typed (or a button carries) looks it up here,
with the id of the guild the command came from. Another server's row gets the very same
``NotFound`` as a missing one, word for word, so no answer tells a member that it exists.
Outside any server (``guild_id`` None, a DM) nothing is found.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.errors import NotFound
from storage.models import Clip, Cut, Job, Project

log = logging.getLogger(__name__)


def no_job(job_id: int) -> NotFound:
    return NotFound(f"There is no job #{job_id}.")


def no_clip(clip_id: int) -> NotFound:
    return NotFound(f"There is no clip #{clip_id}.")


def no_cut(cut_id: int) -> NotFound:
    return NotFound(f"There is no cut #{cut_id}.")


async def project_in(store: Any, project_id: int, guild_id: int | None) -> Project | None:
    """The project, when it belongs to ``guild_id``; else None."""
    if guild_id is None:
        return None
    project = await store.get_project(project_id)
    if project is None or project.guild_id != guild_id:
        return None
    return project


async def job_in(store: Any, job_id: int, guild_id: int | None) -> Job:
    """The job, when its project belongs to ``guild_id``; else ``NotFound``."""
    job = await store.get_job(job_id)
    if job is None or await project_in(store, job.project_id, guild_id) is None:
        raise no_job(job_id)
    return job


async def clip_in(store: Any, clip_id: int, guild_id: int | None) -> Clip:
    """The clip, when its project belongs to ``guild_id``; else ``NotFound``."""
    clip = await store.get_clip(clip_id)
    if clip is None or await project_in(store, clip.project_id, guild_id) is None:
        raise no_clip(clip_id)
    return clip


async def cut_in(store: Any, cut_id: int, guild_id: int | None) -> tuple[Project, Cut]:
    """The cut and its project, when that belongs to ``guild_id``; else ``NotFound``."""
    cut = await store.get_cut(cut_id)
    project = None if cut is None else await project_in(store, cut.project_id, guild_id)
    if cut is None or project is None:
        raise no_cut(cut_id)
    return project, cut


async def guild_project_ids(store: Any, guild_id: int) -> set[int]:
    """The ids of every project of a guild."""
    return {p.id for p in await store.list_projects(guild_id)}
