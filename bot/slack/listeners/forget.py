"""The message shortcut "Forget this conversation": a confirmation, then the forgetting.

Only the thread's participants and the bot's admins may; others get a private note. Once
confirmed, the backend's conversation, the thread's files and its stored texts are deleted
(bot/governance/forget.py) and the thread says who had it forgotten.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.engine.base import EngineError
from bot.governance.forget import Forgetting
from bot.messages import ConversationKey
from bot.slack import inbound, words

log = logging.getLogger(__name__)

SHORTCUT = "forget_conversation"
CONFIRM = "forget_conversation_confirm"


def register(app: AsyncApp, forgetting: Forgetting) -> None:
    async def ask_to_confirm(ack: Any, shortcut: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        message = inbound.mapping(shortcut.get("message"))
        team, channel = inbound.field_id(shortcut, "team"), inbound.field_id(shortcut, "channel")
        user = inbound.field_id(shortcut, "user")
        thread_ts = inbound.ts(message.get("thread_ts") or shortcut.get("message_ts"))
        trigger = inbound.text(shortcut.get("trigger_id"), 200)
        response_url = inbound.text(shortcut.get("response_url"), 2048)
        if not (team and channel and user and thread_ts and trigger):
            log.warning("event=shortcut_skipped shortcut=%s reason=missing_ids", SHORTCUT)
            await _tell(response_url, words.SHORTCUT_NOT_UNDERSTOOD)
            return
        key = ConversationKey(team, channel, thread_ts)
        refusal = await _refusal(forgetting, key, user)
        if refusal:
            await _tell(response_url, refusal)
            return
        metadata = {"team": team, "channel": channel, "thread_ts": thread_ts, "url": response_url}
        await client.views_open(trigger_id=trigger, view=_confirmation(json.dumps(metadata)))

    async def forget(
        ack: Any, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()  # the modal closes; forgetting takes longer than Slack waits for the ack
        user = inbound.field_id(body, "user")
        read = _read_metadata(view)
        if read is None or user is None:
            log.warning("event=forget_skipped reason=malformed")
            return
        key, response_url = read
        refusal = await _refusal(forgetting, key, user)
        if refusal:
            await _tell(response_url, refusal)
            return
        try:
            await forgetting.forget(key, user)
        except EngineError as exc:
            log.warning("event=forget_failed channel=%s code=%s", key.channel_id, exc.code)
            await _tell(response_url, words.FORGET_FAILED)
            return
        try:
            await client.chat_postMessage(
                channel=key.channel_id, thread_ts=key.thread_ts, text=words.forgotten(user)
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.warning("event=forget_notice_failed channel=%s error=%s", key.channel_id, error)
            await _tell(response_url, words.forgotten(user))

    app.shortcut(SHORTCUT)(ask_to_confirm)
    app.view(CONFIRM)(forget)


async def _refusal(forgetting: Forgetting, key: ConversationKey, user: str) -> str:
    """Why this person cannot forget this thread now ("" when they can)."""
    if not await forgetting.has_anything(key):
        return words.NOTHING_TO_FORGET
    if not await forgetting.may_forget(key, user):
        return words.only_participants_forget(sorted(forgetting.admins))
    if await forgetting.busy(key):
        return words.FORGET_BUSY
    return ""


def _confirmation(metadata: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": CONFIRM,
        "title": {"type": "plain_text", "text": words.FORGET_TITLE},
        "submit": {"type": "plain_text", "text": words.FORGET_SUBMIT},
        "close": {"type": "plain_text", "text": words.FORGET_CLOSE},
        "private_metadata": metadata,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": words.FORGET_CONFIRM}}],
    }


def _read_metadata(view: dict[str, Any]) -> tuple[ConversationKey, str] | None:
    try:
        metadata = json.loads(inbound.text(view.get("private_metadata"), 4000))
    except ValueError:
        return None
    if not isinstance(metadata, dict):
        return None
    team, channel = (
        inbound.slack_id(metadata.get("team")),
        inbound.slack_id(metadata.get("channel")),
    )
    thread_ts = inbound.ts(metadata.get("thread_ts"))
    if not (team and channel and thread_ts):
        return None
    return ConversationKey(team, channel, thread_ts), inbound.text(metadata.get("url"), 2048)


async def _tell(response_url: str, text: str) -> None:
    """A private note to the person who used the shortcut."""
    if response_url.startswith(("https://", "http://")):
        await AsyncWebhookClient(response_url).send(text=text, response_type="ephemeral")
