"""What members see is short and safe.

No exception text, path, URL or traceback reaches a Discord message: an unexpected error
answers with a fixed apology and a reference that the operators find in the log. Every
text fits Discord's limits (content 2,000; embed title 256, description 4,096, field
name 256 and value 1,024, 25 fields, footer 2,048, 6,000 in all), which the emulator
enforces as Discord does: a reply over a limit would be refused and never seen.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.frontend import limits
from bot.frontend.harness import BotOnEmulator, bot_on_emulator
from bot.frontend.limits import fit_embed, fit_lines, shorten
from tests.conftest import make_settings
from tests.discord_env import Community, until

#: 600 characters of markdown and mentions, the longest prompt the settings allow
MARKDOWN = "**bold** _it_ ~~x~~ `code` > q ||spoiler|| [link](https://e.x) @everyone \\ *"
LONG_PROMPT = (MARKDOWN * 10)[:600]

REF = re.compile(
    r"^⚠️ Something went wrong on our side; the operators have the details \(ref (\w+)\)\.$"
)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[BotOnEmulator]:
    settings = make_settings(tmp_path, premoderation=True, max_jobs_per_member=40)
    async with bot_on_emulator(settings) as e:
        yield e


@pytest.fixture
async def guild(env: BotOnEmulator) -> Community:
    return Community(env)


def embed_within_limits(e: dict[str, Any]) -> bool:
    fields = e.get("fields", [])
    total = len(e.get("title", "")) + len(e.get("description", ""))
    total += len(e.get("footer", {}).get("text", ""))
    total += sum(len(f["name"]) + len(f["value"]) for f in fields)
    return (
        len(e.get("title", "")) <= 256
        and len(e.get("description", "")) <= 4096
        and len(fields) <= 25
        and all(len(f["name"]) <= 256 and len(f["value"]) <= 1024 for f in fields)
        and total <= 6000
    )


# ---------------------------------------------------------------------------- the helper
def test_a_long_text_is_cut_with_an_ellipsis_never_after_a_lone_backslash():
    assert shorten("short", 10) == "short"
    assert shorten("x" * 20, 10) == "x" * 9 + "…"
    cut = shorten(discord.utils.escape_markdown("*" * 50), 11)
    assert len(cut) <= 11 and cut.endswith("…") and not cut.endswith("\\…")


def test_a_list_keeps_the_lines_that_fit_and_counts_the_rest():
    lines = [f"line {i} " + "x" * 90 for i in range(60)]
    text = fit_lines(lines, 2000)
    assert len(text) <= 2000 and text.startswith("line 0 ")
    shown = text.count("\n")
    assert text.endswith(f"… and {60 - shown} more")
    assert fit_lines(["a", "b"], 2000) == "a\nb"
    one = fit_lines(["y" * 5000], 2000)
    assert len(one) <= 2000 and one.endswith("…")


def test_an_embed_over_every_limit_is_fitted_to_all_of_them():
    e = discord.Embed(title="t" * 300, description="d" * 5000)
    for _ in range(40):
        e.add_field(name="n" * 300, value="v" * 2000)
    e.set_footer(text="f" * 3000)
    e.set_author(name="a" * 300)
    fit_embed(e)
    assert len(e) <= limits.EMBED_TOTAL and len(e.fields) <= limits.FIELDS
    assert len(e.title) <= 256 and len(e.description) <= 4096 and len(e.footer.text) <= 2048
    assert all(len(f.name) <= 256 and len(f.value) <= 1024 for f in e.fields)
    assert embed_within_limits(e.to_dict())


# ---------------------------------------------------------------------------- errors
async def test_an_unexpected_error_shows_a_reference_never_its_text(guild, monkeypatch, caplog):
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("open /srv/crowdcut/secret.db failed; see https://internal.example/x")

    monkeypatch.setattr(guild.env.bot.submissions, "my_jobs", broken)
    with caplog.at_level(logging.ERROR, logger="bot.frontend.checks"):
        _, reply = await guild.slash(guild.alice, "queue")
    match = REF.match(reply["content"])
    assert match, reply["content"]
    assert "secret" not in reply["content"] and "http" not in reply["content"]
    [record] = [r for r in caplog.records if match[1] in r.getMessage()]
    assert record.exc_info and "secret.db" in str(record.exc_info[1])


async def test_a_value_that_does_not_convert_is_refused_without_discord_pys_words(guild):
    since = guild.emu.revision
    await guild.emu.send_message(guild.alice.id, guild.channel, "!clip not-a-number")
    reply = await guild.emu.wait_for_message(
        guild.channel, lambda m: m["content"].startswith("⚠️"), since=since
    )
    assert "doesn't fit" in reply["content"]
    assert "Converting" not in reply["content"] and "not-a-number" not in reply["content"]


# ---------------------------------------------------------------------------- long texts
async def test_a_600_character_markdown_prompt_fits_its_status_card_and_clip(guild):
    await guild.open_project(slots=3)
    _, reply = await guild.slash(guild.alice, "prompt", {"text": LONG_PROMPT})
    job = int(re.search(r"job #(\d+)", reply["content"])[1])
    mods = guild.emu.channels["moderators"]
    card = await guild.emu.wait_for_message(mods, lambda m: f"**#{job}**" in m["content"])
    assert len(card["content"]) <= 2000 and "@everyone" in card["content"]
    assert not card.get("mention_everyone")
    it = await guild.emu.click_button(
        guild.mod.id, int(card["id"]), f"crowdcut:prompt:approve:{job}"
    )
    approved = await it.wait_reply()
    assert approved["content"].endswith("**✅ approved by mod_mira**")
    assert len(approved["content"]) <= 2000
    clip = await until(lambda: guild._posted_clip(job), timeout=60)
    post = guild.emu.get_message(guild.channel, clip.message_id)
    assert embed_within_limits(post["embeds"][0])
    _, info = await guild.slash(guild.bob, "clip", {"clip": clip.id})
    assert embed_within_limits(info["embeds"][0]) and info["embeds"][0]["description"]


async def test_thirty_waiting_jobs_fit_one_queue_reply(guild):
    project = await guild.open_project(slots=3)
    await guild.slash(guild.alice, "prompt", {"text": LONG_PROMPT})
    await guild.app.store.upsert_member(guild.alice.id, "alice")
    for i in range(29):
        await guild.app.store.add_job(
            project_id=project.id,
            member_id=guild.alice.id,
            prompt=f"{i} {LONG_PROMPT}",
            channel_id=guild.channel,
            duration=1.0,
            aspect="16:9",
            seed=i,
            moderation="pending",
        )
    _, reply = await guild.slash(guild.alice, "queue")
    text = reply["content"]
    assert len(text) <= 2000 and text.startswith("**#1**")
    assert re.search(r"… and \d+ more jobs$", text), text[-80:]


async def test_many_slots_and_a_full_leaderboard_audit_and_usage_fit(guild):
    project = await guild.open_project(slots=150)  # more rows than one embed holds
    assert len(project.slot_plan) == 150
    _, reply = await guild.slash(guild.bob, "project", subcommand="status")
    embed = reply["embeds"][0]
    assert embed_within_limits(embed) and "more slots" in embed["description"]
    for _ in range(40):  # a busy audit log, with long targets
        await guild.app.store.audit(
            "pin_clip", actor_id=guild.mod.id, project_id=project.id, target="clip:" + "9" * 120
        )
    _, reply = await guild.slash(guild.mod, "audit")
    assert len(reply["content"]) <= 2000 and "pin_clip" in reply["content"]
    _, reply = await guild.slash(guild.mod, "usage", {"server": True})
    assert embed_within_limits(reply["embeds"][0])
