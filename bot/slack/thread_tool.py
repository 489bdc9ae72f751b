"""The `read_slack_thread` tool: lets the model read the Slack thread it is answering in."""

from __future__ import annotations

from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks import is_progress_text
from bot.slack.words import THREAD_READER_STATUS
from bot.tools import Tool, ToolContext, tool

MAX_MESSAGES = 200
MAX_CHARS = 40_000


def thread_reader(client: AsyncWebClient, bot_user_id: str) -> Tool:
    @tool(
        description=(
            "Read the Slack thread this conversation takes place in: every message, oldest "
            "first, with who wrote it. Use it to see messages people wrote without mentioning you."
        ),
        status=THREAD_READER_STATUS,
    )
    async def read_slack_thread(context: ToolContext) -> str:
        messages: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(messages) < MAX_MESSAGES:
            page = await client.conversations_replies(
                channel=context.key.channel_id,
                ts=context.key.thread_ts,
                limit=min(200, MAX_MESSAGES - len(messages)),
                cursor=cursor,
            )
            messages.extend(page.get("messages") or [])
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not page.get("has_more") or not cursor:
                break
        lines = []
        for message in messages:
            text = str(message.get("text") or "")
            if is_progress_text(text):
                continue
            author = message.get("user") or message.get("bot_id") or "unknown"
            who = "you (the assistant)" if author == bot_user_id else f"<@{author}>"
            lines.append(f"[{message.get('ts')}] {who}: {text}")
        transcript = "\n".join(lines)
        if len(transcript) > MAX_CHARS:
            transcript = "[earlier messages left out]\n" + transcript[-MAX_CHARS:]
        return transcript or "The thread has no messages yet."

    return read_slack_thread
