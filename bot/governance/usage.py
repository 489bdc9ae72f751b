"""Who used how much: the stored usage of the turns, summed and priced, for `/assistant usage`,
the Home tab and `python -m bot usage`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.governance.prices import Prices
    from bot.store import Store, UsageRow

DAY = 86400.0
PERIODS_SHOWN = (1, 7, 30)  # days, in every summary
TOP_SHOWN = 5  # entries of each list in a summary
_SPAN = re.compile(r"(\d{1,4})([hdw])")
_SPAN_SECONDS = {"h": 3600.0, "d": DAY, "w": 7 * DAY}


def parse_span(text: str) -> float:
    """`30d`, `12h`, `2w` in seconds; ValueError otherwise."""
    match = _SPAN.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a span of time like 30d, 12h or 2w")
    return int(match.group(1)) * _SPAN_SECONDS[match.group(2)]


@dataclass
class UsageTotal:
    """Turns and tokens summed, and their cost: `usd` is what the priced models cost, and
    `unpriced_tokens` what models without a price used (their cost is unknown)."""

    turns: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    unpriced_tokens: int = 0
    unpriced_models: set[str] = field(default_factory=set)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, row: UsageRow, prices: Prices) -> None:
        self.turns += row.turns
        self.input_tokens += row.input_tokens
        self.cached_input_tokens += row.cached_input_tokens
        self.output_tokens += row.output_tokens
        tokens = row.input_tokens + row.output_tokens
        cost = prices.cost(row.model, row.input_tokens, row.cached_input_tokens, row.output_tokens)
        if cost is not None:
            self.usd += cost
        elif tokens:
            self.unpriced_tokens += tokens
            self.unpriced_models.add(row.model or "(not reported)")


def total(rows: Iterable[UsageRow], prices: Prices) -> UsageTotal:
    summed = UsageTotal()
    for row in rows:
        summed.add(row, prices)
    return summed


def by_key(rows: Iterable[UsageRow], prices: Prices) -> list[tuple[str, UsageTotal]]:
    """Totals per key, the costliest first (then the most tokens, then the most turns)."""
    totals: dict[str, UsageTotal] = {}
    for row in rows:
        totals.setdefault(row.key, UsageTotal()).add(row, prices)
    return sorted(
        totals.items(), key=lambda item: (-item[1].usd, -item[1].tokens, -item[1].turns, item[0])
    )


@dataclass(frozen=True)
class UsageSummary:
    """What `/assistant usage` and the Home tab show: totals over the last 1, 7 and 30 days and,
    for admins, the top channels, people and assistants over `days`."""

    periods: tuple[tuple[int, UsageTotal], ...]
    days: int = 30
    everyone: bool = False  # the workspace's usage (admins); else one person's own
    by: Mapping[str, list[tuple[str, UsageTotal]]] = field(default_factory=dict)


class UsageReports:
    def __init__(self, store: Store, prices: Prices, admins: frozenset[str]) -> None:
        self.store = store
        self.prices = prices
        self.admins = admins  # who may see everyone's usage (nobody when empty)

    def sees_everyone(self, user_id: str) -> bool:
        return user_id in self.admins

    async def summary(
        self, team_id: str, user_id: str, days: int = 30, now: float | None = None
    ) -> UsageSummary:
        """The workspace's usage for an admin; anyone else's own."""
        now = time.time() if now is None else now
        everyone = self.sees_everyone(user_id)
        filters = {"team_id": team_id} if everyone else {"team_id": team_id, "user_id": user_id}
        periods = []
        for period in PERIODS_SHOWN:
            rows = await self.store.usage(now - period * DAY, "all", filters)
            periods.append((period, total(rows, self.prices)))
        by: dict[str, list[tuple[str, UsageTotal]]] = {}
        if everyone:
            for group in ("channel", "user", "assistant"):
                rows = await self.store.usage(now - days * DAY, group, filters)
                by[group] = by_key(rows, self.prices)
        return UsageSummary(tuple(periods), days, everyone, by)
