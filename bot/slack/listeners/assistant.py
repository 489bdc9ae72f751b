"""Slack's AI-app surface: suggested prompts when an assistant thread opens, thread titles."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.messages import IncomingMessage
from bot.text import shorten

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = (
    "What can you help me with?",
    "Summarize this thread for me",
    "Help me write a clear message to my team",
    "Explain a concept to me step by step",
)
PROMPTS_TITLE = "Try asking:"
MAX_PROMPTS = 4  # Slack shows at most four
TITLE_LENGTH = 60


def register(app: AsyncApp, suggested_prompts: Sequence[str]) -> None:
    prompts = [
        {"title": shorten(text, 75), "message": text}
        for text in (list(suggested_prompts) or list(DEFAULT_PROMPTS))[:MAX_PROMPTS]
    ]

    async def thread_started(event: dict[str, Any], client: AsyncWebClient) -> None:
        thread = event.get("assistant_thread") or {}
        channel, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
        if not channel or not thread_ts:
            return
        try:
            await client.assistant_threads_setSuggestedPrompts(
                channel_id=channel, thread_ts=thread_ts, title=PROMPTS_TITLE, prompts=prompts
            )
        except SlackApiError as exc:
            log.warning("event=prompts_failed channel=%s error=%s", channel, exc.response["error"])

    async def context_changed() -> None:
        """The person switched channels with the assistant open; nothing to do yet."""

    app.event("assistant_thread_started")(thread_started)
    app.event("assistant_thread_context_changed")(context_changed)


async def set_title(client: AsyncWebClient, message: IncomingMessage) -> None:
    """Name a new DM conversation after its first message (shown in the app's history)."""
    try:
        await client.assistant_threads_setTitle(
            channel_id=message.key.channel_id,
            thread_ts=message.key.thread_ts,
            title=shorten(message.text, TITLE_LENGTH),
        )
    except SlackApiError as exc:
        log.info(
            "event=title_failed channel=%s error=%s", message.key.channel_id, exc.response["error"]
        )
