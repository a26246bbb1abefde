"""What a generation costs, and whether a budget allows one more. Pure functions.

Prices come from the ``PRICES`` setting, one entry per backend, comma-separated::

    fal=0.07/s,replicate=0.35/job,runway=0.05/s,comfyui=0,local=0

``/s`` is a price per second of video asked of the provider (the length after
``Capabilities.duration_for``, not the slot's), ``/job`` a price per generation, and a
bare ``0`` means free. A backend missing from the list costs nothing. Amounts are in
``CURRENCY``, whatever the provider bills in: the operator converts.

Budgets (``PROJECT_BUDGET``, ``MEMBER_DAILY_BUDGET``) are in the same currency; ``0`` means
no limit. A member's day is the UTC day.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.errors import ConfigError

#: money compares at this precision (a thousandth of a cent), so float sums of prices
#: that add up to the budget exactly are not "over" it
EPSILON = 1e-5

PER_SECOND = "s"
PER_JOB = "job"

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
_ENTRY = re.compile(
    r"^(?P<backend>[a-z0-9][a-z0-9_.-]*)\s*=\s*(?P<amount>\d+(?:\.\d+)?|\.\d+)"
    r"\s*(?:/\s*(?P<unit>s|sec|second|job|clip|generation))?$",
    re.IGNORECASE,
)
_UNITS = {"s": PER_SECOND, "sec": PER_SECOND, "second": PER_SECOND}

_EXAMPLE = "fal=0.07/s,replicate=0.35/job,local=0"


@dataclass(frozen=True)
class Price:
    """A backend's price: ``amount`` per second of video (``unit`` "s") or per job."""

    amount: float
    unit: str = PER_JOB

    @property
    def free(self) -> bool:
        return self.amount <= 0

    def cost(self, seconds: float | None) -> float:
        if self.free:
            return 0.0
        if self.unit == PER_SECOND:
            return self.amount * max(0.0, seconds or 0.0)
        return self.amount

    def describe(self, currency: str) -> str:
        if self.free:
            return "free"
        per = "per second of video" if self.unit == PER_SECOND else "per generation"
        return f"{format_money(self.amount, currency, places=_places(self.amount))} {per}"


def _places(amount: float) -> int:
    """Enough decimals to show a small per-second price (0.005/s) without rounding it away."""
    for places in range(2, 6):
        if abs(round(amount, places) - amount) < 1e-9:
            return places
    return 6


@functools.lru_cache(maxsize=32)
def parse_prices(text: str) -> Mapping[str, Price]:
    """``PRICES`` as backend → ``Price``. Raises ``ConfigError`` naming the setting."""
    prices: dict[str, Price] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        m = _ENTRY.match(entry)
        if m is None:
            raise ConfigError(
                f"PRICES={text!r} is not valid: {entry!r} should be backend=price/s "
                f"(per second of video) or backend=price/job, comma-separated, "
                f"e.g. {_EXAMPLE}."
            )
        backend = m["backend"].lower()
        amount = float(m["amount"])
        if not math.isfinite(amount):
            raise ConfigError(f"PRICES={text!r} is not valid: {entry!r} is not a price.")
        unit = m["unit"]
        if unit is None and amount > 0:
            raise ConfigError(
                f"PRICES={text!r} is not valid: say whether {entry!r} is per second of video "
                f"({entry}/s) or per generation ({entry}/job)."
            )
        if backend in prices:
            raise ConfigError(f"PRICES={text!r} is not valid: {backend} is priced twice.")
        prices[backend] = Price(amount, _UNITS.get((unit or "").lower(), PER_JOB))
    return prices


def price_of(settings: Any, backend: str) -> Price | None:
    """The configured price of ``backend``; ``None`` when ``PRICES`` does not name it."""
    return parse_prices(settings.prices).get((backend or "").lower())


def cost_of(settings: Any, backend: str, seconds: float | None) -> float:
    """The price of one generation of ``seconds`` (of video asked of the provider) on
    ``backend``, in the operator's currency. A backend without a price is free."""
    price = price_of(settings, backend)
    return 0.0 if price is None else price.cost(seconds)


def format_money(amount: float, currency: str, *, places: int = 2) -> str:
    """``$9.80``, ``€0.35``, ``-£1.00``, ``12.00 CHF``."""
    code = (currency or "").strip().upper()
    sign = "-" if amount < 0 and round(abs(amount), places) > 0 else ""
    digits = f"{abs(amount):,.{places}f}"
    symbol = _SYMBOLS.get(code)
    if symbol:
        return f"{sign}{symbol}{digits}"
    return f"{sign}{digits} {code}".rstrip()


def describe_costs(settings: Any) -> list[tuple[bool, str, str]]:
    """Lines for ``crowdcut doctor``: (fine, what, detail) for the price of each configured
    backend and for the budgets. A backend missing from ``PRICES`` is not fine: its
    spend would be counted as nothing and no budget could stop it."""
    currency = settings.currency
    names = getattr(settings, "generator_names", None) or [settings.generator]
    prices = parse_prices(settings.prices)
    out = []
    for name in names:
        price = prices.get(name.lower())
        if price is None:
            out.append((False, "price", f"{name}: not in PRICES, so counted as free"))
        else:
            out.append((True, "price", f"{name}: {price.describe(currency)}"))
    limits = []
    if settings.project_budget > 0:
        limits.append(f"{format_money(settings.project_budget, currency)} per project")
    if settings.member_daily_budget > 0:
        limits.append(
            f"{format_money(settings.member_daily_budget, currency)} per member per UTC day"
        )
    out.append(
        (
            True,
            "budgets",
            ", ".join(limits)
            if limits
            else "no limits (PROJECT_BUDGET and MEMBER_DAILY_BUDGET are 0)",
        )
    )
    return out


# ---------------------------------------------------------------------- budgets
def budget_allows(*, spent: float, pending: float, cost: float, budget: float) -> bool:
    """Whether a new generation costing ``cost`` fits a ``budget`` (0 = no limit) that has
    ``spent`` already and ``pending`` more promised to jobs not charged yet. A free
    generation always fits: it cannot make the spend any larger."""
    if budget <= 0 or cost <= 0:
        return True
    return spent + pending + cost <= budget + EPSILON


def utc_day_start(now: float) -> float:
    """Epoch seconds of the latest 00:00 UTC at or before ``now``."""
    return math.floor(now / 86400) * 86400.0


def until_next_utc_day(now: float) -> float:
    """Seconds from ``now`` to the next 00:00 UTC."""
    return utc_day_start(now) + 86400.0 - now


def format_wait(seconds: float) -> str:
    """``3 h 20 min``, ``45 min``, ``1 min``: a rough wait for a message."""
    minutes = max(1, math.ceil(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    if hours and minutes:
        return f"{hours} h {minutes} min"
    return f"{hours} h" if hours else f"{minutes} min"


def describe_clip(backend: str, seconds: float | None) -> str:
    """``a 5 s clip on fal``."""
    return f"a {seconds:g} s clip on {backend}" if seconds else f"a clip on {backend}"
