"""What the turns used, summed for reports and budgets, and how many turns a person started
lately (table turns: tokens, model, assistant, person, channel, time)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bot.store.database import Database
from bot.store.schema import turns
from bot.store.turns import REFUSED

# What usage can be grouped by, and the column that says it.
GROUPS = {
    "channel": turns.c.channel_id,
    "user": turns.c.user_id,
    "assistant": turns.c.assistant_id,
    "model": turns.c.model,
    "all": sa.literal(""),
}
# What usage can be narrowed to.
FILTERS = {
    "team_id": turns.c.team_id,
    "user_id": turns.c.user_id,
    "channel_id": turns.c.channel_id,
    "assistant_id": turns.c.assistant_id,
}


@dataclass(frozen=True)
class UsageRow:
    """The turns of one group (a channel, a person…) on one model since a moment, summed."""

    key: str
    model: str
    turns: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


def _sum(column: sa.Column[int]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(column), 0)


@functools.cache
def _usage(by: str, filters: tuple[str, ...]) -> sa.Select[Any, Any, int, int, int, int]:
    key = sa.func.coalesce(GROUPS[by], "").label("key")
    model = sa.func.coalesce(turns.c.model, "").label("model")
    conditions = [turns.c.created_at >= sa.bindparam("since"), turns.c.status != REFUSED]
    conditions += [FILTERS[name] == sa.bindparam(name) for name in filters]
    return (
        sa.select(
            key,
            model,
            sa.func.count(),
            _sum(turns.c.input_tokens),
            _sum(turns.c.cached_input_tokens),
            _sum(turns.c.output_tokens),
        )
        .where(*conditions)
        .group_by(key, model)
    )


_RECENT_TURNS = sa.select(sa.func.count()).where(
    turns.c.created_at >= sa.bindparam("since"),
    turns.c.team_id == sa.bindparam("team_id"),
    turns.c.user_id == sa.bindparam("user_id"),
    turns.c.status != REFUSED,
)


class UsageTables:
    _db: Database

    async def usage(
        self, since: float, by: str = "all", filters: Mapping[str, str] | None = None
    ) -> list[UsageRow]:
        """The turns taken since `since` (epoch seconds), turned-away messages left out, summed
        per `by` (a key of GROUPS; "all" sums everything under the key "") and model, narrowed
        to `filters` (keys of FILTERS)."""
        filters = dict(filters or {})
        statement = _usage(by, tuple(sorted(filters)))
        rows = await self._db.all(statement, {"since": since, **filters})
        return [UsageRow(str(r[0]), str(r[1]), *(int(n) for n in r[2:])) for r in rows]

    async def count_recent_turns(self, team_id: str, user_id: str, since: float) -> int:
        """How many messages this person had answered (or being answered) since `since`."""
        row = await self._db.first(
            _RECENT_TURNS, {"team_id": team_id, "user_id": user_id, "since": since}
        )
        return int(row[0]) if row else 0
