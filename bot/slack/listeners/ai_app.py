"""Slack's AI-app surface: suggested prompts when a person opens the app, thread titles, and the
channel the person is looking at (offered to the assistant with their next DM).

The app's manifest picks one of two ways Slack shows it (`SLACK_VIEW` tells the bot which):
- agent view (`features.agent_view`, the only choice for new apps): opening the app's Messages
  tab sends `app_home_opened` with `tab: "messages"`, and the prompts are set on the DM itself,
  without `thread_ts` (with one, Slack silently ignores the call); `app_context_changed` says
  what the person is looking at.
- assistant view (the legacy `features.assistant_view`): opening the assistant starts a thread
  (`assistant_thread_started`, with the channel in view) and the prompts are set on that thread;
  `assistant_thread_context_changed` follows the person around.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.messages import IncomingMessage
from bot.slack import inbound
from bot.slack.words import DEFAULT_PROMPTS, PROMPTS_TITLE
from bot.text import shorten

log = logging.getLogger(__name__)

MAX_PROMPTS = 4  # Slack shows at most four
TITLE_LENGTH = 60
CHANNEL_ENTITY = "slack#/types/channel_id"


class ViewedChannels:
    """The channel each person was last seen looking at with the app open, per workspace.

    A hint for their next DM, kept in memory and bounded (the oldest are forgotten first).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._channels: dict[tuple[str, str], str] = {}
        self._limit = limit

    def seen(self, team_id: str, user_id: str, channel_id: str | None) -> None:
        """`user_id` now looks at `channel_id` (None, or a DM: at no channel we can name)."""
        key = (team_id, user_id)
        self._channels.pop(key, None)
        if channel_id and not channel_id.startswith("D"):
            self._channels[key] = channel_id
            if len(self._channels) > self._limit:
                del self._channels[next(iter(self._channels))]

    def of(self, team_id: str, user_id: str) -> str | None:
        return self._channels.get((team_id, user_id))


def context_note(channel_id: str) -> str:
    """What the assistant is told, with a DM, about the channel its writer is looking at."""
    return f"(Slack context: the person writing this is looking at the channel <#{channel_id}>.)"


def register(
    app: AsyncApp, suggested_prompts: Sequence[str], view: str, viewing: ViewedChannels
) -> None:
    prompts = [
        {"title": shorten(text, 75), "message": text}
        for text in (list(suggested_prompts) or list(DEFAULT_PROMPTS))[:MAX_PROMPTS]
    ]

    async def offer_prompts(client: AsyncWebClient, channel: str, thread_ts: str | None) -> None:
        try:
            await client.assistant_threads_setSuggestedPrompts(
                channel_id=channel, thread_ts=thread_ts, title=PROMPTS_TITLE, prompts=prompts
            )
        except SlackApiError as exc:
            log.warning("event=prompts_failed channel=%s error=%s", channel, exc.response["error"])

    async def on_messages_tab(event: dict[str, Any]) -> bool:
        return event.get("tab") == "messages"

    async def messages_tab_opened(event: dict[str, Any], client: AsyncWebClient) -> None:
        """Agent view: the person opened the app. Its prompts go on the DM, with no thread_ts."""
        channel = inbound.slack_id(event.get("channel"))
        if view == "agent_view" and channel:
            await offer_prompts(client, channel, None)
        # Under the assistant view the prompts come with the assistant thread instead.

    async def app_context_changed(body: dict[str, Any], event: dict[str, Any]) -> None:
        entities = inbound.mapping(event.get("context")).get("entities")
        channel = next(
            (
                inbound.slack_id(e.get("value"))
                for e in (entities if isinstance(entities, list) else [])
                if isinstance(e, dict) and e.get("type") == CHANNEL_ENTITY
            ),
            None,
        )
        user = inbound.slack_id(event.get("user"))
        if user is not None:
            viewing.seen(inbound.slack_id(body.get("team_id")) or "", user, channel)

    async def thread_started(
        body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient
    ) -> None:
        thread = _seen_in_thread(body, event, viewing)
        channel, thread_ts = (
            inbound.slack_id(thread.get("channel_id")),
            inbound.ts(thread.get("thread_ts")),
        )
        if channel and thread_ts:
            await offer_prompts(client, channel, thread_ts)

    async def thread_context_changed(body: dict[str, Any], event: dict[str, Any]) -> None:
        _seen_in_thread(body, event, viewing)

    app.event("app_home_opened", matchers=[on_messages_tab])(messages_tab_opened)
    app.event("app_context_changed")(app_context_changed)
    app.event("assistant_thread_started")(thread_started)
    app.event("assistant_thread_context_changed")(thread_context_changed)


def _seen_in_thread(
    body: dict[str, Any], event: dict[str, Any], viewing: ViewedChannels
) -> dict[str, Any]:
    """Note the channel an assistant-view thread's context names; the thread's fields."""
    thread = inbound.mapping(event.get("assistant_thread"))
    context = inbound.mapping(thread.get("context"))
    user = inbound.slack_id(thread.get("user_id"))
    if user is not None:
        team = inbound.slack_id(body.get("team_id")) or ""
        viewing.seen(team, user, inbound.slack_id(context.get("channel_id")))
    return thread


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
