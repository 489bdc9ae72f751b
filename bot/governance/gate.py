"""The core's gate (`bot.conversation.Gate`): a person's rate limit and the budgets, both counted
from the turns table, so that they hold across restarts and replicas."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from bot.engine.base import Usage
from bot.governance.audit import BUDGET_REFUSED, AuditLog
from bot.governance.budgets import BudgetCheck
from bot.messages import ConversationKey, IncomingMessage
from bot.outcomes import OVER_BUDGET, RATE_LIMITED, LimitState, Refusal
from bot.store import Store

MINUTE = 60.0


class TurnGate:
    def __init__(
        self,
        store: Store,
        budgets: BudgetCheck | None,
        assistant_of: Callable[[ConversationKey], Awaitable[str]],
        turns_per_minute: int = 0,
        clock: Callable[[], float] = time.time,
        audit_log: AuditLog | None = None,
    ) -> None:
        self.audit_log = audit_log
        self.store = store
        self.budgets = budgets
        self.assistant_of = assistant_of  # which assistant would answer in a thread
        self.turns_per_minute = turns_per_minute  # 0: no rate limit
        self.clock = clock

    async def admit(self, message: IncomingMessage) -> Refusal | None:
        if self.turns_per_minute:
            now = self.clock()
            recent = await self.store.count_recent_turns(
                message.key.team_id, message.user_id, now - MINUTE
            )
            if recent >= self.turns_per_minute:
                limit = LimitState(
                    "person", "minute", "turns", self.turns_per_minute, recent, now + MINUTE
                )
                return Refusal(RATE_LIMITED, limit)
        if self.budgets is not None and self.budgets.budgets.limits:
            assistant = ""
            if self.budgets.needs_assistant():
                assistant = await self.assistant_of(message.key)
            over = await self.budgets.over(message, assistant)
            if over is not None:
                return Refusal(OVER_BUDGET, over)
        return None

    async def turned_away(self, message: IncomingMessage, refusal: Refusal) -> None:
        if self.audit_log is None or refusal.code != OVER_BUDGET:
            return  # a rate limit is a person's pace, not an admin matter
        limit = refusal.limit
        await self.audit_log.record(
            BUDGET_REFUSED,
            message.user_id,
            message.key.team_id,
            channel=message.key.channel_id,
            message_ts=message.ts,
            limit=f"{limit.scope} per {limit.period} ({limit.unit})",
        )

    async def near_limit(
        self, message: IncomingMessage, assistant_id: str, usage: Usage
    ) -> LimitState | None:
        if self.budgets is None:
            return None
        return await self.budgets.crossed(message, assistant_id, usage)
