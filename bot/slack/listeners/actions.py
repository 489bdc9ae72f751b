"""Buttons on answers: Stop (cancels the answer being written) and feedback (good / bad)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Conversations
from bot.slack import words
from bot.slack.blocks import (
    FEEDBACK_ACTION,
    STOP_ACTION,
    parse_feedback_value,
    parse_stop_value,
)


def register(app: AsyncApp, conversations: Conversations) -> None:
    async def stop(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        user = body["user"]["id"]
        parsed = parse_stop_value(str(action.get("value") or ""))
        if parsed is None:
            return
        key, message_ts, asker = parsed
        if user != asker:
            await _tell(client, body, words.only_asker_can_stop(asker))
            return
        if not await conversations.stop(key, message_ts):
            await _tell(client, body, words.ALREADY_FINISHED)

    async def feedback(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        user = body["user"]["id"]
        parsed = parse_feedback_value(str(action.get("value") or ""))
        if parsed is None:
            return
        rating, team, channel, message_ts = parsed
        if not await conversations.record_feedback(team, channel, message_ts, user, rating):
            await _tell(client, body, words.FEEDBACK_NOT_FOUND)
            return
        await _tell(client, body, words.THANKS[rating])

    app.action(STOP_ACTION)(stop)
    app.action(FEEDBACK_ACTION)(feedback)


async def _tell(client: AsyncWebClient, body: dict[str, Any], text: str) -> None:
    container = body.get("container") or {}
    await client.chat_postEphemeral(
        channel=container.get("channel_id") or body["channel"]["id"],
        user=body["user"]["id"],
        thread_ts=container.get("thread_ts"),
        text=text,
    )
