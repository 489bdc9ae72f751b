"""Budgets (BUDGETS_FILE): limits on what the assistants may use, in USD or tokens, per person,
channel or assistant, or for everything together, per UTC day, week or month.

They are computed from the usage stored with the turns, so they hold across restarts and
replicas. A message over a limit is turned away before the model is asked; the answer that takes
someone past 80% of a limit says so once.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.engine.base import Usage
from bot.governance.files import (
    SettingsFileError,
    amount,
    entry,
    read_settings_file,
    unknown_fields,
)
from bot.governance.prices import Prices
from bot.governance.usage import total
from bot.messages import ConversationKey, IncomingMessage
from bot.outcomes import LimitState
from bot.store import Store

SCOPES = ("person", "channel", "assistant", "global")  # checked in this order
PERIODS = ("day", "week", "month")
DEFAULT_PERIOD = {"person": "day", "channel": "month", "assistant": "month", "global": "month"}
UNITS = ("usd", "tokens")
WARN_AT = 0.8  # of a limit: the answer that gets there says so


@dataclass(frozen=True)
class Limit:
    scope: str  # one of SCOPES
    period: str  # one of PERIODS
    unit: str  # one of UNITS
    amount: float


@dataclass(frozen=True)
class Budgets:
    limits: tuple[Limit, ...] = ()
    admins_exempt: bool = False

    def applying(self, scope: str) -> list[Limit]:
        return [limit for limit in self.limits if limit.scope == scope]


def load_budgets(path: Path | None) -> Budgets | None:
    """BUDGETS_FILE's limits; None without a file; SettingsFileError naming the file, entry and
    field when it is wrong.

    The file (YAML, or TOML when it ends in .toml) may hold `person`, `channel`, `assistant`
    and `global`, each with `usd` and/or `tokens` and optionally `period` (day, week, month), and
    `admins_exempt: true`.
    """
    if path is None:
        return None
    where = f"BUDGETS_FILE {path}"
    data = read_settings_file("BUDGETS_FILE", path)
    unknown_fields(where, data, "", (*SCOPES, "admins_exempt"))
    exempt = data.get("admins_exempt", False)
    if not isinstance(exempt, bool):
        raise SettingsFileError(f"{where}: admins_exempt must be true or false; got {exempt!r}.")
    limits: list[Limit] = []
    for scope in SCOPES:
        if scope not in data:
            continue
        fields = entry(where, data[scope], scope)
        unknown_fields(where, fields, scope, ("period", *UNITS))
        period = fields.get("period", DEFAULT_PERIOD[scope])
        if period not in PERIODS:
            raise SettingsFileError(
                f"{where}: {scope}.period must be one of {', '.join(PERIODS)}; got {period!r}."
            )
        found = [(unit, amount(where, fields, scope, unit)) for unit in UNITS]
        units = [(unit, value) for unit, value in found if value is not None]
        if not units:
            raise SettingsFileError(f"{where}: {scope} sets no limit; give it usd or tokens.")
        limits += [Limit(scope, str(period), unit, value) for unit, value in units]
    return Budgets(tuple(limits), exempt)


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """The UTC day, week (from Monday) or month `now` is in: its start and its end."""
    moment = datetime.fromtimestamp(now, UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = start + timedelta(days=calendar.monthrange(start.year, start.month)[1])
    return start.timestamp(), end.timestamp()


class BudgetCheck:
    """Budgets as they stand for one message, from the stored usage."""

    def __init__(
        self,
        store: Store,
        prices: Prices,
        budgets: Budgets,
        admins: frozenset[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.prices = prices
        self.budgets = budgets
        self.admins = admins
        self.clock = clock

    def exempt(self, user_id: str) -> bool:
        return self.budgets.admins_exempt and user_id in self.admins

    def needs_assistant(self) -> bool:
        return bool(self.budgets.applying("assistant"))

    async def over(self, message: IncomingMessage, assistant_id: str) -> LimitState | None:
        """The first limit this message's asker has used up (none for exempt admins)."""
        if self.exempt(message.user_id):
            return None
        for limit in self.budgets.limits:
            state = await self.state(limit, message, assistant_id)
            if state.used >= state.limit:
                return state
        return None

    async def crossed(
        self, message: IncomingMessage, assistant_id: str, usage: Usage
    ) -> LimitState | None:
        """The first limit this turn's `usage` (not stored yet) took past WARN_AT of it."""
        if self.exempt(message.user_id):
            return None
        for limit in self.budgets.limits:
            before = await self.state(limit, message, assistant_id)
            this_turn = self._amount(limit.unit, usage)
            after = before.used + this_turn
            if before.used < WARN_AT * limit.amount <= after:
                return LimitState(
                    limit.scope, limit.period, limit.unit, limit.amount, after, before.resets_at
                )
        return None

    async def standing(self, team_id: str, user_id: str) -> list[LimitState]:
        """A person's own limits as they stand (for `/assistant usage`)."""
        if self.exempt(user_id):
            return []
        message = IncomingMessage(ConversationKey(team_id, "", ""), "", user_id, "")
        return [await self.state(limit, message, "") for limit in self.budgets.applying("person")]

    async def state(self, limit: Limit, message: IncomingMessage, assistant_id: str) -> LimitState:
        start, end = period_bounds(limit.period, self.clock())
        rows = await self.store.usage(start, "all", _filters(limit.scope, message, assistant_id))
        spent = total(rows, self.prices)
        used = spent.usd if limit.unit == "usd" else float(spent.tokens)
        return LimitState(limit.scope, limit.period, limit.unit, limit.amount, used, end)

    def _amount(self, unit: str, usage: Usage) -> float:
        if unit == "tokens":
            return float(usage.input_tokens + usage.output_tokens)
        cost = self.prices.cost(
            usage.model, usage.input_tokens, usage.cached_input_tokens, usage.output_tokens
        )
        return cost or 0.0


def _filters(scope: str, message: IncomingMessage, assistant_id: str) -> Mapping[str, str]:
    team = {"team_id": message.key.team_id}
    if scope == "person":
        return team | {"user_id": message.user_id}
    if scope == "channel":
        return team | {"channel_id": message.key.channel_id}
    if scope == "assistant":
        return {"assistant_id": assistant_id}
    return {}
