"""Tool calls approved in the thread: a card with Approve and Deny, and the wait for a decision.

The turn that asks waits in its own process, but the button may be pressed on any replica: the
decision is written to the store (table approvals), and the waiting turn reads it there, at once
when the press landed in the same process, else at its next look (every `poll` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Collection

from slack_sdk.web.async_client import AsyncWebClient

from bot.messages import IncomingMessage
from bot.outcomes import DENIED, EXPIRED, WITHDRAWN, ApprovalRequest, Decision
from bot.slack import words
from bot.slack.blocks import approval_content
from bot.slack.retries import SLACK_FAILURES, failure_name, post_message
from bot.store import Store

log = logging.getLogger(__name__)

APPROVAL_TIMEOUT = 600.0
POLL_SECONDS = 1.0

# What pressing a button came to (the listener tells the person the ones other than DECIDED).
DECIDED = "decided"
NOT_ALLOWED = "not_allowed"
NOT_WAITING = "not_waiting"


class Approvals:
    def __init__(
        self,
        store: Store,
        admins: Collection[str] = (),
        timeout: float = APPROVAL_TIMEOUT,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.store = store
        self.admins = frozenset(admins)
        self.timeout = timeout
        self.poll = poll
        self._waiting: dict[str, asyncio.Event] = {}

    async def ask(
        self, client: AsyncWebClient, message: IncomingMessage, request: ApprovalRequest
    ) -> Decision:
        """Show the card in the message's thread and wait for the decision (or the timeout)."""
        approval_id = secrets.token_hex(12)
        asker = message.user_id
        channel, thread_ts = message.key.channel_id, message.key.thread_ts
        await self.store.add_approval(approval_id, message.key.team_id, asker)
        text, blocks = approval_content(request, approval_id, asker, self.timeout)
        try:
            ts = await post_message(client, channel, thread_ts, text=text, blocks=blocks)
        except SLACK_FAILURES as exc:
            log.warning("event=approval_not_shown channel=%s error=%s", channel, failure_name(exc))
            await self.store.decide_approval(approval_id, EXPIRED, "")
            return Decision(EXPIRED)
        log.info("event=approval_asked channel=%s tool=%s", channel, request.tool)
        try:
            decision = await self._wait(approval_id)
        except asyncio.CancelledError:
            # Stopped (or shut down) while waiting: the card says the call will not run.
            await asyncio.shield(self._withdraw(client, channel, ts, request, approval_id, asker))
            raise
        await self._show(client, channel, ts, request, approval_id, asker, decision)
        return decision

    async def decide(self, approval_id: str, user: str, outcome: str) -> tuple[str, str]:
        """A button pressed: (DECIDED, "") or why not (NOT_ALLOWED with the asker, NOT_WAITING)."""
        approval = await self.store.get_approval(approval_id)
        if approval is None or approval.status != "pending":
            return NOT_WAITING, ""
        if time.time() - approval.created_at > self.timeout:
            return NOT_WAITING, ""  # its turn ended without a word (a process that died)
        if user != approval.asker and user not in self.admins:
            return NOT_ALLOWED, approval.asker
        if not await self.store.decide_approval(approval_id, outcome, user):
            return NOT_WAITING, ""
        log.info("event=approval_decided outcome=%s", outcome)
        waiting = self._waiting.get(approval_id)
        if waiting is not None:
            waiting.set()
        return DECIDED, ""

    async def _wait(self, approval_id: str) -> Decision:
        woken = self._waiting[approval_id] = asyncio.Event()
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    approval = await self.store.get_approval(approval_id)
                    if approval is not None and approval.status != "pending":
                        return Decision(approval.status, approval.decided_by)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), self.poll)
                    woken.clear()
        except TimeoutError:
            pass
        finally:
            del self._waiting[approval_id]
        if await self.store.decide_approval(approval_id, EXPIRED, ""):
            log.info("event=approval_expired")
            return Decision(EXPIRED)
        approval = await self.store.get_approval(approval_id)  # decided as time ran out
        if approval is None:
            return Decision(DENIED)
        return Decision(approval.status, approval.decided_by)

    async def _withdraw(
        self,
        client: AsyncWebClient,
        channel: str,
        ts: str,
        request: ApprovalRequest,
        approval_id: str,
        asker: str,
    ) -> None:
        try:
            await self.store.decide_approval(approval_id, WITHDRAWN, "")
        except Exception:
            log.exception("event=approval_withdraw_failed")
        await self._show(client, channel, ts, request, approval_id, asker, Decision(WITHDRAWN))

    async def _show(
        self,
        client: AsyncWebClient,
        channel: str,
        ts: str,
        request: ApprovalRequest,
        approval_id: str,
        asker: str,
        decision: Decision,
    ) -> None:
        outcome = words.approval_outcome(decision, self.timeout)
        text, blocks = approval_content(request, approval_id, asker, self.timeout, outcome)
        try:
            await client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except SLACK_FAILURES as exc:
            log.warning(
                "event=approval_card_failed channel=%s error=%s", channel, failure_name(exc)
            )
