"""Messages and @mentions: the gate (what the bot ignores) and the route (what it answers)."""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Conversations
from bot.messages import ConversationKey, IncomingMessage
from bot.slack.file_source import shared_files
from bot.slack.listeners import ai_app
from bot.slack.words import EMPTY_MESSAGE_HELP

log = logging.getLogger(__name__)

# Message subtypes that are a person saying something; every other subtype (edits, deletions,
# joins, topic changes, bot messages…) is ignored.
SPOKEN_SUBTYPES = {None, "file_share", "thread_broadcast", "me_message"}


@dataclass(frozen=True)
class BotIdentity:
    user_id: str
    bot_id: str


def register(
    app: AsyncApp,
    conversations: Conversations,
    identity: BotIdentity,
    answer_bots: bool,
    viewing: ai_app.ViewedChannels | None = None,
) -> None:
    mention = re.compile(rf"<@{re.escape(identity.user_id)}(?:\|[^>]*)?>")

    async def handle(body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient) -> None:
        message = _to_message(body, event, identity, answer_bots, mention)
        if message is None:
            return
        direct_or_mention = message.is_direct or mention.search(event.get("text") or "")
        if not direct_or_mention and not await conversations.is_conversation(message.key):
            return
        if not message.text and not message.files:
            if event.get("type") == "app_mention" or message.is_direct:
                await client.chat_postEphemeral(
                    channel=message.key.channel_id,
                    user=message.user_id,
                    thread_ts=event.get("thread_ts"),
                    text=EMPTY_MESSAGE_HELP,
                )
            return
        if message.is_direct and viewing is not None:
            looking_at = viewing.of(body.get("team_id") or message.key.team_id, message.user_id)
            if looking_at:
                message = dataclasses.replace(message, context=ai_app.context_note(looking_at))
        new_dm = message.is_direct and not await conversations.is_conversation(message.key)
        taken = await conversations.submit(message)
        if taken and new_dm:
            await ai_app.set_title(client, message)
        log.info(
            "event=message_%s channel=%s ts=%s event_id=%s",
            "taken" if taken else "duplicate",
            message.key.channel_id,
            message.ts,
            body.get("event_id"),
        )

    async def receive(body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient) -> None:
        # Bolt starts this before it sends the ack, and it counts itself before its first await:
        # once Slack has the ack, Conversations.idle() waits for the message.
        with conversations.receiving():
            await handle(body, event, client)

    app.event("app_mention")(receive)
    app.event("message")(receive)


def _to_message(
    body: dict[str, Any],
    event: dict[str, Any],
    identity: BotIdentity,
    answer_bots: bool,
    mention: re.Pattern[str],
) -> IncomingMessage | None:
    """The message the bot may answer, or None for what it must ignore."""
    if event.get("subtype") not in SPOKEN_SUBTYPES or event.get("hidden"):
        return None
    user = event.get("user")
    if user == identity.user_id or event.get("bot_id") == identity.bot_id:
        return None
    if event.get("bot_id") and not answer_bots:
        return None
    channel = event.get("channel")
    ts = event.get("ts")
    if not channel or not ts:
        return None
    team = event.get("team") or body.get("team_id") or ""
    text = mention.sub("", event.get("text") or "").strip()
    is_direct = event.get("channel_type") == "im" or str(channel).startswith("D")
    return IncomingMessage(
        key=ConversationKey(team, channel, event.get("thread_ts") or ts),
        ts=ts,
        user_id=user or event.get("bot_id") or "",
        text=text,
        is_direct=is_direct,
        files=shared_files(event.get("files")),
    )
