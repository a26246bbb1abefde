"""Servers are separate: one bot in two guilds, each with its own project and members.

Every command looks only at its own server's projects, jobs and clips; another server's
job, clip or cut answers word for word as a missing one would, so nothing tells a member
of one server what exists in the other.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import EmuGuild, EmuUser
from bot.errors import NotFound
from bot.frontend.harness import BotOnEmulator, bot_on_emulator
from bot.services.submissions import Author
from tests.conftest import make_settings
from tests.discord_env import until


class TwoServers:
    """The emulator's first guild and a second one, each with a moderator, a member and
    a project in its #crowdcut; ``sam`` is a member of both."""

    def __init__(self, env: BotOnEmulator, second: EmuGuild) -> None:
        self.env = env
        self.emu = env.emu
        self.first = self.emu.guild()
        self.second = second
        self.mod1 = self.emu.add_member("mod_one", roles=["Moderator"])
        self.alice = self.emu.add_member("alice")
        self.mod2 = self.emu.add_member("mod_two", roles=["Moderator"], guild_id=second.id)
        self.dave = self.emu.add_member("dave", guild_id=second.id)
        self.sam = self.emu.add_member("sam")
        self.emu.join_guild(self.sam.id, second.id)

    @property
    def app(self) -> Any:
        return self.env.app

    def channel(self, guild: EmuGuild, name: str = "crowdcut") -> int:
        return guild.channels[name]

    async def slash(
        self,
        who: EmuUser,
        guild: EmuGuild,
        name: str,
        options: dict[str, Any] | None = None,
        subcommand: str | None = None,
    ) -> dict[str, Any]:
        it = await self.emu.invoke_slash(
            who.id, self.channel(guild), name, options or {}, subcommand=subcommand
        )
        await it.wait_acked(timeout=3.0)
        return await it.wait_reply(timeout=30)

    async def prompt(self, who: EmuUser, guild: EmuGuild, text: str) -> int:
        """A prompt that waits for its server's moderators; returns the job id."""
        reply = await self.slash(who, guild, "prompt", {"text": text})
        assert "Accepted as job #" in reply["content"], reply["content"]
        return int(re.search(r"job #(\d+)", reply["content"])[1])

    async def approve_and_post(self, job_id: int, text: str) -> Any:
        """The first server's moderator approves the prompt with its button; returns the
        posted clip."""
        mods = self.channel(self.first, "moderators")
        card = await self.emu.wait_for_message(mods, lambda m: text in m["content"])
        it = await self.emu.click_button(
            self.mod1.id, int(card["id"]), f"crowdcut:prompt:approve:{job_id}"
        )
        assert "approved by mod_one" in (await it.wait_reply())["content"]

        async def posted() -> Any:
            clip = await self.app.store.clip_for_job(job_id)
            return clip if clip and clip.message_id else None

        return await until(posted, timeout=60)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[TwoServers]:
    settings = make_settings(tmp_path, premoderation=True)
    async with bot_on_emulator(settings, start=False) as env:
        second = env.emu.add_guild("second server")
        s = TwoServers(env, second)
        await env.start()
        assert {c["name"] for c in env.emu.commands(guild=second.id)} >= {"cancel", "clip"}
        await s.slash(s.mod1, s.first, "project", {"title": "First Night"}, "create")
        await s.slash(s.mod2, s.second, "project", {"title": "Second Night"}, "create")
        yield s


def same_answer(other: str, other_id: int, missing: str, missing_id: int) -> bool:
    """Two replies that differ only in the number asked about."""
    return other.replace(f"#{other_id}", "#N") == missing.replace(f"#{missing_id}", "#N")


async def test_a_moderator_cannot_cancel_or_approve_another_servers_job(servers):
    s = servers
    job = await s.prompt(s.alice, s.first, "a job of the first server")
    # its card waits in the first server's moderators channel, not the second's
    await s.emu.wait_for_message(
        s.channel(s.first, "moderators"), lambda m: "a job of the first server" in m["content"]
    )
    assert not s.emu.messages(s.channel(s.second, "moderators"))
    other = await s.slash(s.mod2, s.second, "cancel", {"job": job})
    missing = await s.slash(s.mod2, s.second, "cancel", {"job": 9999})
    assert other["content"] == f"⚠️ There is no job #{job}."
    assert same_answer(other["content"], job, missing["content"], 9999)
    assert (await s.app.store.get_job(job)).state == "queued"
    # a pressed Approve button carries the guild it was pressed in: refused the same way
    with pytest.raises(NotFound, match=rf"^There is no job #{job}\.$"):
        await s.env.bot.submissions.moderate(
            job, Author(s.mod2.id, "mod_two"), approve=True, guild_id=s.second.id
        )
    assert (await s.app.store.get_job(job)).moderation == "pending"
    # the first server's moderator can
    done = await s.slash(s.mod1, s.first, "cancel", {"job": job})
    assert f"Job #{job} canceled" in done["content"]


async def test_queue_and_project_status_count_only_this_servers_jobs(servers):
    s = servers
    mine_here = await s.prompt(s.sam, s.second, "sam in the second server")
    mine_there = await s.prompt(s.sam, s.first, "sam in the first server")
    await s.prompt(s.alice, s.first, "alice in the first server")
    queue = await s.slash(s.sam, s.second, "queue")
    assert f"#{mine_here}" in queue["content"] and f"#{mine_there}" not in queue["content"]
    assert "first server" not in queue["content"]
    status = await s.slash(s.dave, s.second, "project", subcommand="status")
    fields = {f["name"]: f["value"] for f in status["embeds"][0]["fields"]}
    assert fields["Jobs waiting"] == "1"  # sam's; not the two of the first server
    status = await s.slash(s.alice, s.first, "project", subcommand="status")
    fields = {f["name"]: f["value"] for f in status["embeds"][0]["fields"]}
    assert fields["Jobs waiting"] == "2"


async def test_another_servers_clip_reads_as_missing_everywhere(servers):
    s = servers
    job = await s.prompt(s.alice, s.first, "the first server's clip")
    clip = await s.approve_and_post(job, "the first server's clip")
    n, missing_id = clip.id, 9999

    async def both(who: EmuUser, name: str, options: dict[str, Any], sub: str | None = None):
        other = await s.slash(who, s.second, name, options, sub)
        missing = await s.slash(who, s.second, name, {**options, "clip": missing_id}, sub)
        return other, missing

    other, missing = await both(s.dave, "clip", {"clip": n})
    assert other["content"] == f"⚠️ There is no clip #{n}." and not other.get("embeds")
    assert same_answer(other["content"], n, missing["content"], missing_id)
    other, missing = await both(s.dave, "extend", {"clip": n, "text": "and then"})
    assert other["content"] == f"⚠️ There is no clip #{n}."
    assert same_answer(other["content"], n, missing["content"], missing_id)
    for sub, extra in (("pin", {"slot": 1}), ("exclude", {}), ("include", {})):
        other, missing = await both(s.mod2, "cut", {"clip": n, **extra}, sub)
        assert other["content"] == f"⚠️ There is no clip #{n}.", sub
        assert same_answer(other["content"], n, missing["content"], missing_id)
    assert not await s.app.store.overrides(clip.project_id)
    board = await s.slash(s.dave, s.second, "leaderboard")
    assert board["content"] == "No clips overall yet."
    board = await s.slash(s.alice, s.first, "leaderboard")
    assert f"#{n}" in board["embeds"][0]["description"]
    # in its own server it is there
    info = await s.slash(s.alice, s.first, "clip", {"clip": n})
    assert info["embeds"][0]["title"] == f"Clip #{n}"


async def test_another_servers_cut_cannot_be_decided_on(servers):
    s = servers
    project = await s.app.store.current_project(s.first.id)
    cut = await s.app.store.save_cut(
        project_id=project.id,
        slots=[],
        master_key=None,
        preview_key=None,
        manifest_key=None,
        created_by=s.mod1.id,
    )
    with pytest.raises(NotFound, match=rf"^There is no cut #{cut.id}\.$"):
        await s.env.bot.cuts.pending_decision(cut.id, s.second.id)
    assert (await s.env.bot.cuts.pending_decision(cut.id, s.first.id))[1].id == cut.id


async def test_audit_and_usage_show_only_this_server(servers):
    s = servers
    job = await s.prompt(s.alice, s.first, "spent in the first server")
    await s.approve_and_post(job, "spent in the first server")
    audit = await s.slash(s.mod2, s.second, "audit")
    assert "create_project" in audit["content"]
    assert "approve_prompt" not in audit["content"] and "mod_one" not in audit["content"]
    usage = await s.slash(s.mod2, s.second, "usage", {"server": True})
    shown = json.dumps(usage["embeds"])
    assert "First Night" not in shown and "alice" not in shown
    usage = await s.slash(s.mod1, s.first, "usage", {"server": True})
    assert "First Night" in json.dumps(usage["embeds"])
