"""Costs and budgets: prices from the settings, budgets that refuse a prompt before anything
is spent, the ledger read back per project, member and backend, and /usage in Discord."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import App, build_app
from bot.core.costs import (
    PER_JOB,
    PER_SECOND,
    Price,
    budget_allows,
    cost_of,
    describe_costs,
    format_money,
    format_wait,
    parse_prices,
    until_next_utc_day,
    utc_day_start,
)
from bot.doctor import run_doctor
from bot.errors import BudgetExceeded, ConfigError, UserFacingError
from bot.frontend.harness import bot_on_emulator
from bot.generators.base import Capabilities, GeneratorBase
from bot.services.usage import UsageService
from bot.settings import Settings
from storage import Store
from storage.models import Slot
from tests.conftest import make_settings
from tests.discord_env import Community

DAY = 86400.0
NOON = 1_750_000_000 // 86400 * 86400 + 12 * 3600  # some day at 12:00 UTC


# ---------------------------------------------------------------------- prices
def test_the_default_prices_parse_per_second_and_per_job():
    prices = parse_prices(Settings().prices)
    assert prices["fal"] == Price(0.07, PER_SECOND)
    assert prices["replicate"] == Price(0.35, PER_JOB)
    assert prices["local"].free and prices["comfyui"].free


def test_a_generation_costs_its_seconds_or_its_job_price():
    s = Settings(prices="fal=0.07/s, replicate=0.35/job, Runway=0.05/sec, comfyui=0")
    assert cost_of(s, "fal", 5) == pytest.approx(0.35)
    assert cost_of(s, "replicate", 5) == cost_of(s, "replicate", 10) == pytest.approx(0.35)
    assert cost_of(s, "runway", 10) == pytest.approx(0.5)  # names are case-insensitive
    assert cost_of(s, "comfyui", 10) == 0.0
    assert cost_of(s, "somewhere-else", 10) == 0.0  # not listed: free


@pytest.mark.parametrize(
    "value,expected",
    [
        ("fal=cheap", "'fal=cheap' should be backend=price/s"),
        ("fal=0.07", "say whether 'fal=0.07' is per second of video (fal=0.07/s)"),
        ("fal=0.07/min", "'fal=0.07/min' should be backend=price/s"),
        ("fal=1/s,fal=2/job", "fal is priced twice"),
        ("=1/s", "'=1/s' should be"),
        ("fal=-1/s", "'fal=-1/s' should be"),
    ],
)
def test_a_bad_prices_setting_names_the_setting_and_the_entry(value, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)) as caught:
        Settings.load(env={"PRICES": value}, env_file=None)
    assert str(caught.value).startswith(f"PRICES={value!r} is not valid")


def test_money_is_shown_with_two_decimals_and_the_currency():
    assert format_money(9.8, "USD") == "$9.80"
    assert format_money(0.35, "eur") == "€0.35"
    assert format_money(1, "GBP") == "£1.00"
    assert format_money(-0.35, "USD") == "-$0.35"
    assert format_money(-0.001, "USD") == "$0.00"  # no "negative zero"
    assert format_money(1234.5, "CHF") == "1,234.50 CHF"
    assert Price(0.005, PER_SECOND).describe("USD") == "$0.005 per second of video"
    assert Price(0.35, PER_JOB).describe("EUR") == "€0.35 per generation"


def test_budget_arithmetic_fits_exact_sums_and_never_refuses_a_free_clip():
    # 0.1 + 0.2 + 0.3 is 0.6000000000000001 in floats: still within a 0.60 budget
    assert budget_allows(spent=0.1, pending=0.2, cost=0.3, budget=0.6)
    assert not budget_allows(spent=0.1, pending=0.2, cost=0.31, budget=0.6)
    assert budget_allows(spent=100, pending=100, cost=5, budget=0)  # 0: no limit
    assert budget_allows(spent=100, pending=0, cost=0, budget=1)  # free even when over


def test_the_member_day_is_the_utc_day():
    assert utc_day_start(NOON) == NOON - 12 * 3600
    assert utc_day_start(NOON - 12 * 3600) == NOON - 12 * 3600
    assert until_next_utc_day(NOON) == 12 * 3600
    assert format_wait(12 * 3600) == "12 h"
    assert format_wait(3 * 3600 + 20 * 60) == "3 h 20 min"
    assert format_wait(5) == "1 min"


def test_doctor_lines_show_each_backend_price_and_flag_one_missing():
    s = Settings(generator="local", prices="fal=0.07/s", project_budget=10, currency="EUR")
    lines = describe_costs(s)
    assert (False, "price", "local: not in PRICES, so counted as free") in lines
    assert (True, "budgets", "€10.00 per project") in lines


def test_crowdcut_doctor_prints_prices_and_budgets(tmp_path, monkeypatch, capsys):
    env = tmp_path / ".env"
    env.write_text("PRICES=local=0.02/s\nMEMBER_DAILY_BUDGET=2\nPROJECT_BUDGET=25\n")
    assert run_doctor(str(env), data_dir=str(tmp_path / "data")) == 0
    out = capsys.readouterr().out
    assert "local: $0.02 per second of video" in out
    assert "$25.00 per project, $2.00 per member per UTC day" in out
    env.write_text("PRICES=local=2 dollars\n")
    assert run_doctor(str(env), data_dir=str(tmp_path / "data")) == 1
    assert "PRICES='local=2 dollars' is not valid" in capsys.readouterr().out


# ---------------------------------------------------------------------- the ledger in storage
@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    yield s
    s.close()


def _project(store: Store, guild_id: int = 1, title: str = "t"):
    return store.create_project(
        guild_id=guild_id,
        channel_id=2,
        title=title,
        created_by=9,
        slot_plan=[Slot(0, 0, 4)],
        state="open",
    )


def _job(store: Store, project_id: int, member: int, duration: float = 4.0):
    return store.add_job(
        project_id=project_id,
        member_id=member,
        prompt="a cat",
        channel_id=2,
        duration=duration,
        aspect="16:9",
        seed=1,
    )


def _charge(store: Store, job, amount: float, **kw):
    row = dict(backend="fal", model="m", kind="generation", seconds=5.0, currency="USD")
    row.update(kw)
    return store.record_charge(job.id, amount=amount, **row)


def test_charges_add_up_per_project_and_member_with_refunds_and_refusals(store):
    p, q = _project(store), _project(store, title="other")
    a1, a2, b1 = _job(store, p.id, 5), _job(store, p.id, 5), _job(store, q.id, 6)
    _charge(store, a1, 0.35)
    _charge(store, a2, 0.35)
    _charge(store, a2, -0.35, kind="refund")  # failed, not billed
    _charge(store, b1, 0.35, refused=True)  # refused content, billed
    _charge(store, b1, 0.5, at=NOON - DAY)  # yesterday
    assert store.spent(project_id=p.id) == pytest.approx(0.35)
    assert store.spent(project_id=q.id) == pytest.approx(0.85)
    assert store.spent(member_id=6, since=utc_day_start(NOON), count_refused=False) == 0
    assert store.spent(member_id=6, since=NOON - 2 * DAY) == pytest.approx(0.85)
    totals = store.ledger_totals(1)
    by_project = {r["project_id"]: r for r in totals["projects"]}
    assert by_project[q.id]["amount"] == pytest.approx(0.85)
    assert by_project[q.id]["refused"] == pytest.approx(0.35)
    assert by_project[p.id]["generations"] == 2
    assert store.ledger_totals(1, project_id=p.id)["members"][0]["member_id"] == 5
    assert store.ledger_totals(2)["projects"] == []  # another guild


def test_a_charge_joins_the_transaction_of_the_change_that_causes_it(store):
    p = _project(store)
    j = _job(store, p.id, 5)
    with pytest.raises(RuntimeError), store.db.atomic():
        _charge(store, j, 0.35)
        raise RuntimeError("the job's own change failed")
    assert store.spent(project_id=p.id) == 0
    _charge(store, j, 0.35)
    assert store.spent(project_id=p.id) == pytest.approx(0.35)


def test_only_active_jobs_without_a_provider_job_id_wait_to_be_charged(store):
    p = _project(store)
    queued, sent, failed, canceled = (_job(store, p.id, 5) for _ in range(4))
    store.claim_job(sent.id, "fal")
    store.set_provider_job_id(sent.id, "prov-1")  # confirmed: the worker charged it
    store.claim_job(failed.id, "fal")
    store.cancel_job(canceled.id)
    store.fail_job(failed.id, error="x", error_kind="unknown")
    assert [j.id for j in store.uncharged_jobs(project_id=p.id)] == [queued.id]
    assert [j.id for j in store.uncharged_jobs(member_id=5)] == [queued.id]
    assert store.uncharged_jobs(member_id=99) == [] and store.uncharged_jobs() == []


# ---------------------------------------------------------------------- budgets
@pytest.fixture
async def priced(tmp_path: Path) -> AsyncIterator[App]:
    app = build_app(
        make_settings(
            tmp_path,
            prices="local=0.10/s,fal=0.07/s,replicate=0.40/job",
            project_budget=1.0,
            member_daily_budget=0.5,
        )
    )
    try:
        yield app
    finally:
        await app.aclose()


async def _open(app: App, title: str = "Night"):
    return await app.store.create_project(
        guild_id=1, channel_id=2, title=title, created_by=9, slot_plan=[Slot(0, 0, 5)], state="open"
    )


async def _queue(app: App, project, member: int, duration: float = 5.0):
    await app.store.upsert_member(member, f"member{member}")
    return await app.store.add_job(
        project_id=project.id,
        member_id=member,
        prompt="a cat",
        channel_id=2,
        duration=duration,
        aspect="16:9",
        seed=1,
    )


async def test_a_prompt_over_the_project_budget_is_refused_with_the_numbers(priced):
    usage = UsageService(priced, clock=lambda: NOON)
    p = await _open(priced)
    for member in (5, 6, 7):
        job = await _queue(priced, p, member)
        await priced.store.claim_job(job.id, "replicate")
        await priced.store.set_provider_job_id(job.id, f"prov-{member}")
        await priced.store.record_charge(
            job.id,
            backend="replicate",
            model="m",
            kind="generation",
            seconds=5,
            amount=0.30,
            currency="USD",
            at=NOON - DAY,
        )
    assert await usage.check_budget(p, 8, "fal", 1.0) == pytest.approx(0.07)
    with pytest.raises(BudgetExceeded) as refused:
        await usage.check_budget(p, 8, "fal", 5.0)
    assert refused.value.scope == "project"
    assert refused.value.message == (
        "This project has spent $0.90 of its $1.00 budget; a 5 s clip on fal costs about "
        "$0.35. The bot's operator can raise PROJECT_BUDGET."
    )
    assert await usage.check_budget(p, 8, "comfyui", 5.0) == 0  # free backends always pass


async def test_prompts_waiting_in_the_queue_count_against_the_budget(priced):
    usage = UsageService(priced, clock=lambda: NOON)
    p = await _open(priced)
    # two members' queued 5 s prompts on the local backend: 0.50 each, not charged yet
    await _queue(priced, p, 5)
    await _queue(priced, p, 6)
    with pytest.raises(BudgetExceeded) as refused:
        await usage.check_budget(p, 7, "local", 1.0)
    assert "and $1.00 more is promised to prompts still waiting" in refused.value.message


async def test_a_burst_of_prompts_cannot_queue_more_than_the_budget_pays_for(priced):
    usage = UsageService(priced, clock=lambda: NOON)
    p = await _open(priced)
    for member in range(10, 30):
        await priced.store.upsert_member(member, f"m{member}")

    async def prompt(member: int) -> bool:
        try:
            async with usage.reserve(p, member, "replicate", 5.0):
                await _queue(priced, p, member)
        except BudgetExceeded:
            return False
        return True

    accepted = await asyncio.gather(*(prompt(m) for m in range(10, 30)))
    # 0.40 per job on replicate against a 1.00 budget: two fit, the rest are refused
    assert sum(accepted) == 2
    assert len(await priced.store.uncharged_jobs(project_id=p.id)) == 2


async def test_the_member_budget_is_per_utc_day_and_ignores_refused_content(priced):
    now = [NOON]
    usage = UsageService(priced, clock=lambda: now[0])
    p = await _open(priced)
    spent = await _queue(priced, p, 5, duration=1.0)
    await priced.store.claim_job(spent.id, "fal")
    await priced.store.set_provider_job_id(spent.id, "prov")
    for amount, refused in ((0.30, False), (0.35, True)):
        await priced.store.record_charge(
            spent.id,
            backend="fal",
            model="m",
            kind="generation",
            seconds=5,
            amount=amount,
            currency="USD",
            refused=refused,
            at=NOON - 3600,
        )
    # 0.30 counts (the refused 0.35 does not): a 2 s fal clip (0.14) fits, a 3 s one not
    assert await usage.check_budget(p, 5, "fal", 2.0) == pytest.approx(0.14)
    with pytest.raises(BudgetExceeded) as refused:
        await usage.check_budget(p, 5, "fal", 3.0)
    assert refused.value.scope == "member"
    assert refused.value.message == (
        "Your prompts have used $0.30 of your $0.50 for today; a 3 s clip on fal costs about "
        "$0.21. Your budget starts again at 00:00 UTC, in 12 h."
    )
    assert await usage.check_budget(p, 6, "fal", 3.0)  # another member is not affected
    now[0] = NOON + 12 * 3600  # the next UTC day
    assert await usage.check_budget(p, 5, "fal", 3.0) == pytest.approx(0.21)


class FixedLengths(GeneratorBase):
    """A backend that only makes 5 s or 10 s clips (as many hosted models do)."""

    name = "fixed"
    capabilities = Capabilities(durations=(5.0, 10.0))


async def test_a_queued_job_is_estimated_at_the_length_its_backend_will_be_asked(tmp_path):
    app = build_app(
        make_settings(tmp_path, prices="fixed=0.10/s,replicate=0.40/job"), generator=FixedLengths()
    )
    try:
        usage = UsageService(app)
        p = await _open(app)
        job = await _queue(app, p, 5, duration=4.0)
        assert usage.job_estimate(job, "fixed") == pytest.approx(0.50)  # asked for 5 s
        assert usage.job_estimate(job, "replicate") == pytest.approx(0.40)
        assert usage.job_estimate(job, "unconfigured") == 0.0
    finally:
        await app.aclose()


async def test_the_report_totals_per_project_member_and_backend(priced):
    usage = UsageService(priced, clock=lambda: NOON)
    p, q = await _open(priced, "Night"), await _open(priced, "Day")
    charges = [
        (p, 5, "fal", 0.35, False, NOON),
        (p, 5, "fal", 0.35, True, NOON),
        (p, 6, "replicate", 0.40, False, NOON - 10 * DAY),
        (q, 6, "fal", 0.70, False, NOON),
    ]
    for project, member, backend, amount, refused, at in charges:
        job = await _queue(priced, project, member)
        await priced.store.cancel_job(job.id)
        await priced.store.record_charge(
            job.id,
            backend=backend,
            model="m",
            kind="generation",
            seconds=5,
            amount=amount,
            currency="USD",
            refused=refused,
            at=at,
        )
    waiting = await _queue(priced, p, 7)
    report = await usage.report(1, p)
    assert [(line.label, line.amount) for line in report.projects] == [
        ("Night", pytest.approx(1.10)),
        ("Day", pytest.approx(0.70)),
    ]
    members = {line.label: line for line in report.members}
    assert members["member5"].amount == pytest.approx(0.70)
    assert members["member5"].refused == pytest.approx(0.35)
    assert members["member6"].generations == 1
    backends = {line.label: line for line in report.backends}
    assert backends["fal"].seconds == 10 and backends["replicate"].amount == pytest.approx(0.4)
    assert report.project_spent == pytest.approx(1.10) and report.total == pytest.approx(1.10)
    assert report.waiting_jobs == 1 and report.project_waiting == pytest.approx(0.5)
    assert waiting.id
    recent = await usage.report(1, p, days=7)
    assert {line.label for line in recent.members} == {"member5"}
    assert recent.project_spent == pytest.approx(1.10)  # the budget line is all time
    server = await usage.report(1, None)
    assert server.total == pytest.approx(1.80)
    with pytest.raises(UserFacingError):
        await usage.report(1, p, days=0)


# ---------------------------------------------------------------------- /usage in Discord
@pytest.fixture
async def community(tmp_path: Path) -> AsyncIterator[Community]:
    async with bot_on_emulator(make_settings(tmp_path, project_budget=5.0)) as env:
        yield Community(env)


async def test_moderators_see_spend_per_project_member_and_backend(community):
    guild = community
    project = await guild.open_project()
    store = guild.app.store
    for who, amount, refused in ((guild.alice, 0.35, False), (guild.bob, 0.70, True)):
        await store.upsert_member(who.id, who.name)
        job = await store.add_job(
            project_id=project.id,
            member_id=who.id,
            prompt="x",
            channel_id=guild.channel,
            duration=5.0,
            aspect="16:9",
            seed=1,
        )
        await store.cancel_job(job.id)  # not for the worker: only its charge matters here
        await store.record_charge(
            job.id,
            backend="fal",
            model="fal-ai/x",
            kind="generation",
            seconds=5.0,
            amount=amount,
            currency="USD",
            refused=refused,
        )
    _, reply = await guild.slash(guild.alice, "usage")
    assert reply["flags"] & 64 and "Only moderators" in reply["content"]
    _, reply = await guild.slash(guild.mod, "usage")
    assert reply["flags"] & 64
    embed = reply["embeds"][0]
    assert embed["title"] == "💸 Spend — Test Night"
    assert "**This project:** $1.05 of its $5.00 budget (21%)" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Per project"] == "**Test Night** — $1.05 · 2 generations"
    assert fields["Per member"].splitlines() == [
        "bob — $0.70 · 1 generation · $0.70 on refused content",
        "alice — $0.35 · 1 generation",
    ]
    assert fields["Per backend"] == "fal — $1.05 · 2 generations · 10 s of video"
    _, reply = await guild.slash(guild.mod, "usage", {"days": 1, "server": True})
    embed = reply["embeds"][0]
    assert embed["title"] == "💸 Spend — this server"
    assert "last 1 day" in embed["description"]


async def test_a_prompt_the_project_cannot_pay_for_is_refused_in_discord_and_costs_nothing(
    tmp_path,
):
    settings = make_settings(tmp_path, prices="local=0.10/s", project_budget=0.15)
    async with bot_on_emulator(settings) as env:
        guild = Community(env)
        project = await guild.open_project()
        first = await guild.prompt_and_post(guild.alice, "a lighthouse at dusk")
        _, reply = await guild.slash(guild.bob, "prompt", {"text": "a second lighthouse"})
        assert reply["flags"] & 64
        assert reply["content"] == (
            "⚠️ This project has spent $0.10 of its $0.15 budget; a 1 s clip on local costs "
            "about $0.10. The bot's operator can raise PROJECT_BUDGET."
        )
        assert await guild.app.store.member_jobs(guild.bob.id, active_only=False) == []
        assert await guild.app.store.spent(project_id=project.id) == pytest.approx(0.10)
        _, reply = await guild.slash(guild.mod, "usage")
        fields = {f["name"]: f["value"] for f in reply["embeds"][0]["fields"]}
        assert fields["Per member"] == "alice — $0.10 · 1 generation"
        assert fields["Per backend"] == "local — $0.10 · 1 generation · 1 s of video"
        assert first.job_id
