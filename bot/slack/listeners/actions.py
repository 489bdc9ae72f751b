"""Buttons on answers: Stop (cancels the answer being written), feedback (good / bad), and
Approve / Deny on a tool call that waits for a decision."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Conversations
from bot.outcomes import APPROVED, DENIED
from bot.slack import inbound, words
from bot.slack.approvals import NOT_ALLOWED, NOT_WAITING, Approvals
from bot.slack.blocks import (
    APPROVE_ACTION,
    DENY_ACTION,
    FEEDBACK_ACTION,
    STOP_ACTION,
    parse_feedback_value,
    parse_stop_value,
)

log = logging.getLogger(__name__)


def register(
    app: AsyncApp, conversations: Conversations, approvals: Approvals | None = None
) -> None:
    async def stop(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        user = inbound.field_id(body, "user")
        parsed = parse_stop_value(inbound.text(action.get("value"), 500))
        if user is None or parsed is None:
            await _not_understood(client, body, user, STOP_ACTION)
            return
        key, message_ts, asker = parsed
        if user != asker:
            await _tell(client, body, user, words.only_asker_can_stop(asker))
            return
        if not await conversations.stop(key, message_ts):
            await _tell(client, body, user, words.ALREADY_FINISHED)

    async def feedback(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        user = inbound.field_id(body, "user")
        parsed = parse_feedback_value(inbound.text(action.get("value"), 500))
        if user is None or parsed is None:
            await _not_understood(client, body, user, FEEDBACK_ACTION)
            return
        rating, team, channel, message_ts = parsed
        if not await conversations.record_feedback(team, channel, message_ts, user, rating):
            await _tell(client, body, user, words.FEEDBACK_NOT_FOUND)
            return
        await _tell(client, body, user, words.THANKS[rating])

    async def decide(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        user = inbound.field_id(body, "user")
        approval_id = inbound.text(action.get("value"), 100)
        if user is None or not approval_id or approvals is None:
            await _not_understood(client, body, user, str(action.get("action_id")))
            return
        outcome = APPROVED if action.get("action_id") == APPROVE_ACTION else DENIED
        result, asker = await approvals.decide(approval_id, user, outcome)
        if result == NOT_ALLOWED:
            await _tell(client, body, user, words.only_asker_can_decide(asker))
        elif result == NOT_WAITING:
            await _tell(client, body, user, words.APPROVAL_NOT_WAITING)

    app.action(STOP_ACTION)(stop)
    app.action(FEEDBACK_ACTION)(feedback)
    app.action(APPROVE_ACTION)(decide)
    app.action(DENY_ACTION)(decide)


async def _not_understood(
    client: AsyncWebClient, body: dict[str, Any], user: str | None, action: str
) -> None:
    log.warning("event=action_skipped action=%s reason=malformed", action)
    if user is not None:
        await _tell(client, body, user, words.BUTTON_NOT_UNDERSTOOD)


async def _tell(client: AsyncWebClient, body: dict[str, Any], user: str, text: str) -> None:
    """A private answer to the person who pressed the button, in the message's thread."""
    container = inbound.mapping(body.get("container"))
    channel = inbound.slack_id(container.get("channel_id")) or inbound.field_id(body, "channel")
    if channel is None:
        return
    try:
        await client.chat_postEphemeral(
            channel=channel, user=user, thread_ts=inbound.ts(container.get("thread_ts")), text=text
        )
    except SlackApiError as exc:
        log.warning("event=note_failed channel=%s error=%s", channel, exc.response.get("error"))
