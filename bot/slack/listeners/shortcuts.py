"""The message shortcut "Switch thread assistant": a picker, then the switch.

Slash commands do not fire inside threads, so this is how a thread changes its assistant. The
thread keeps its backend conversation; its next turn runs the chosen assistant, and the thread
says who switched it to what. On a message outside any bot conversation the choice is kept for
that thread and applies once someone mentions the bot there.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.assistant_choice import AssistantChooser
from bot.conversation import Conversations
from bot.definitions import AssistantDefinition
from bot.engine.base import EngineError
from bot.governance.access import Access
from bot.messages import ConversationKey
from bot.slack import inbound, words
from bot.text import shorten

log = logging.getLogger(__name__)

SHORTCUT = "switch_thread_assistant"
PICKER = "switch_thread_assistant_picker"
BLOCK, ACTION = "assistant", "choice"
MAX_OPTIONS = 100  # a static_select holds at most 100 options


def register(
    app: AsyncApp, chooser: AssistantChooser, conversations: Conversations, access: Access
) -> None:
    async def open_picker(ack: Any, shortcut: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        message = inbound.mapping(shortcut.get("message"))
        team, channel = inbound.field_id(shortcut, "team"), inbound.field_id(shortcut, "channel")
        thread_ts = inbound.ts(message.get("thread_ts") or shortcut.get("message_ts"))
        trigger = inbound.text(shortcut.get("trigger_id"), 200)
        if not (team and channel and thread_ts and trigger):
            log.warning("event=shortcut_skipped shortcut=%s reason=missing_ids", SHORTCUT)
            await _tell(shortcut, words.SHORTCUT_NOT_UNDERSTOOD)
            return
        key = ConversationKey(team, channel, thread_ts)
        user = inbound.field_id(shortcut, "user") or ""
        try:
            every = await chooser.assistants()
            assistants = await access.usable(every, channel, user, channel.startswith("D"))
            current = await chooser.for_thread(key)
        except EngineError as exc:
            log.warning("event=shortcut_failed code=%s", exc.code)
            await _tell(shortcut, words.service_unreachable(exc.code))
            return
        if not assistants:
            await _tell(shortcut, words.NO_ASSISTANT_FOR_YOU if every else words.NOTHING_TO_PICK)
            return
        metadata = {
            "team": key.team_id,
            "channel": key.channel_id,
            "thread_ts": key.thread_ts,
            "response_url": inbound.text(shortcut.get("response_url"), 2048),
        }
        name = words.name_of(current.assistant_id, assistants)
        intro = words.picker_intro(name, current, key.channel_id)
        await client.views_open(
            trigger_id=trigger,
            view=_picker(assistants, current.assistant_id, intro, json.dumps(metadata)),
        )

    async def switch(
        ack: Any, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        picked = _picked(view)
        user = inbound.field_id(body, "user")
        if picked is None or user is None:
            log.warning("event=picker_skipped reason=malformed")
            await ack(response_action="errors", errors={BLOCK: words.PICKER_NOT_UNDERSTOOD})
            return
        key, selected, metadata = picked
        try:
            assistant = await chooser.assistant(selected)
        except EngineError as exc:
            log.warning("event=switch_failed code=%s", exc.code)
            await ack(
                response_action="errors",
                errors={BLOCK: words.service_unreachable(exc.code, warning=False)},
            )
            return
        if assistant is None or not await access.may_use(
            assistant, key.channel_id, user, key.channel_id.startswith("D")
        ):
            await ack(
                response_action="errors",
                errors={BLOCK: words.PICKED_ASSISTANT_GONE},
            )
            return
        await ack()
        await chooser.switch_thread(key, assistant.id)
        log.info(
            "event=thread_assistant_switched channel=%s thread=%s assistant=%s user=%s",
            key.channel_id,
            key.thread_ts,
            assistant.id,
            user,
        )
        in_conversation = await conversations.is_conversation(key)
        text = words.thread_switched(user, assistant, in_conversation)
        try:
            await client.chat_postMessage(
                channel=key.channel_id, thread_ts=key.thread_ts, text=text
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.warning("event=switch_notice_failed channel=%s error=%s", key.channel_id, error)
            if metadata.get("response_url"):
                await AsyncWebhookClient(metadata["response_url"]).send(
                    text=words.switch_not_said(text, str(error)),
                    response_type="ephemeral",
                )

    app.shortcut(SHORTCUT)(open_picker)
    app.view(PICKER)(switch)


def _picked(view: dict[str, Any]) -> tuple[ConversationKey, str, dict[str, Any]] | None:
    """(thread, chosen assistant id, the picker's metadata) from a submitted picker."""
    try:
        metadata = json.loads(inbound.text(view.get("private_metadata"), 4000))
        selected = view["state"]["values"][BLOCK][ACTION]["selected_option"]["value"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(metadata, dict) or not isinstance(selected, str) or not selected:
        return None
    team, channel = (
        inbound.slack_id(metadata.get("team")),
        inbound.slack_id(metadata.get("channel")),
    )
    thread_ts = inbound.ts(metadata.get("thread_ts"))
    if not (team and channel and thread_ts):
        return None
    return ConversationKey(team, channel, thread_ts), inbound.text(selected, 200), metadata


def _option(assistant: AssistantDefinition) -> dict[str, Any]:
    option: dict[str, Any] = {
        "text": {"type": "plain_text", "text": shorten(assistant.name, 75) or assistant.id},
        "value": assistant.id,
    }
    summary = shorten(" · ".join(filter(None, [assistant.model, assistant.description])), 75)
    if summary:
        option["description"] = {"type": "plain_text", "text": summary}
    return option


def _picker(
    assistants: list[AssistantDefinition], current_id: str, intro: str, metadata: str
) -> dict[str, Any]:
    options = [_option(a) for a in assistants[:MAX_OPTIONS]]
    select: dict[str, Any] = {"type": "static_select", "action_id": ACTION, "options": options}
    current = next((o for o in options if o["value"] == current_id), None)
    if current is not None:
        select["initial_option"] = current
    return {
        "type": "modal",
        "callback_id": PICKER,
        "title": {"type": "plain_text", "text": words.PICKER_TITLE},
        "submit": {"type": "plain_text", "text": words.PICKER_SUBMIT},
        "close": {"type": "plain_text", "text": words.PICKER_CLOSE},
        "private_metadata": metadata,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": intro}},
            {
                "type": "input",
                "block_id": BLOCK,
                "label": {"type": "plain_text", "text": words.PICKER_LABEL},
                "element": select,
            },
        ],
    }


async def _tell(shortcut: dict[str, Any], text: str) -> None:
    """An ephemeral answer to the person who used the shortcut."""
    url = inbound.text(shortcut.get("response_url"), 2048)
    if url.startswith("https://") or url.startswith("http://"):
        await AsyncWebhookClient(url).send(text=text, response_type="ephemeral")
