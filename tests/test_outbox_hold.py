"""The outbox answers members first: effects wait while a burst of interactions pours in,
and never longer than MAX_HOLD_SECONDS at a stretch."""

from __future__ import annotations

from typing import Any

import bot.services.outbox as outbox_module
from bot.services.outbox import OutboxWorker
from tests.discord_env import env, guild, until  # noqa: F401

__all__ = ["env", "guild"]


async def test_effects_wait_for_the_burst_to_pass_then_run(app):
    ran: list[tuple[str, bool]] = []
    state: dict[str, Any] = {"left": 10.0, "asked": 0, "released": False}

    def hold() -> float:
        state["asked"] += 1
        return state["left"]

    async def note(effect: Any) -> None:
        ran.append((effect.key, state["released"]))

    outbox = OutboxWorker(app, {"note": note}, hold=hold)
    await app.store.enqueue_effect("note", "note:1", {"n": 1})
    await outbox.start()
    try:
        # the worker came round several times while members were still interacting
        await until(lambda: state["asked"] >= 3, timeout=10)
        state["released"], state["left"] = True, 0.0
        outbox.wake()
        await until(lambda: ran, timeout=10)
    finally:
        await outbox.stop()
    assert ran == [("note:1", True)]  # it ran, and only once the burst had passed
    assert [e.state for e in await app.store.effects(kind="note")] == ["done"]


async def test_a_steady_stream_of_interactions_does_not_starve_effects(app, monkeypatch):
    monkeypatch.setattr(outbox_module, "MAX_HOLD_SECONDS", 0.3)
    ran: list[str] = []

    async def note(effect: Any) -> None:
        ran.append(effect.key)

    outbox = OutboxWorker(app, {"note": note}, hold=lambda: 10.0)  # never a gap
    await app.store.enqueue_effect("note", "note:2", {"n": 2})
    await outbox.start()
    try:
        await until(lambda: ran, timeout=10)
    finally:
        await outbox.stop()
    assert ran == ["note:2"]


async def test_the_garbage_collector_waits_while_a_burst_pours_in(guild):
    """Its full passes stopped the event loop for 70-80 ms in the middle of a burst: during
    a burst it waits, and runs again once the burst has passed. One command alone does not
    hold it."""
    import asyncio
    import gc

    assert gc.isenabled()
    alone = await guild.emu.invoke_slash(guild.alice.id, guild.channel, "queue")
    await alone.wait_reply(timeout=10)
    assert gc.isenabled()  # one command is not a burst
    people = [guild.alice, guild.bob, guild.carol]
    burst = await asyncio.gather(
        *(guild.emu.invoke_slash(people[i % 3].id, guild.channel, "queue") for i in range(8))
    )
    await until(lambda: not gc.isenabled(), timeout=5, interval=0.005)
    await asyncio.gather(*(it.wait_reply(timeout=10) for it in burst))
    await until(gc.isenabled, timeout=5)  # BURST_GAP_SECONDS after the last one
