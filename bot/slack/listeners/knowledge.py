"""A channel's knowledge: files every new conversation in the channel can search.

The message shortcut "Add to channel knowledge" adds a message's files; `/assistant knowledge`
lists them, each with a Remove button.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.file_ingest import FileIngest
from bot.governance import audit
from bot.messages import ChannelScope
from bot.slack import inbound, words
from bot.slack.file_source import shared_files

log = logging.getLogger(__name__)

ADD_SHORTCUT = "add_channel_knowledge"
REMOVE_ACTION = "remove_channel_knowledge"


def register(app: AsyncApp, ingest: FileIngest, audit_log: audit.AuditLog) -> None:
    async def add(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond | None
    ) -> None:
        await ack()
        channel, user = inbound.field_id(body, "channel"), inbound.field_id(body, "user")
        if channel is None or user is None or respond is None:
            log.warning("event=shortcut_skipped shortcut=%s reason=missing_ids", ADD_SHORTCUT)
            return
        files = shared_files(inbound.mapping(body.get("message")).get("files"))
        if not files:
            await respond(text=words.NO_FILES_TO_ADD)
            return
        await respond(text=words.adding_knowledge([f.name for f in files]))
        key = ChannelScope(_team(body), channel)
        ingested = await ingest.add_to_channel(key, files, user)
        for problem in ingested.problems:
            log.info(
                "event=file_not_added file=%s reason=%s detail=%s",
                problem.file_id,
                problem.reason,
                problem.detail,
            )
        lines = [words.file_problem(problem, adding=True) for problem in ingested.problems]
        if ingested.added:
            lines.insert(0, words.knowledge_added(ingested.added, channel))
        await respond(text="\n".join(lines))
        log.info("event=knowledge_added channel=%s files=%d", channel, len(ingested.added))
        if ingested.added:
            await audit_log.record(
                audit.KNOWLEDGE_ADDED, user, key.team_id, channel=channel, files=ingested.added
            )

    async def remove(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond | None) -> None:
        await ack()
        if respond is None:  # no response_url: nowhere to answer
            log.warning("event=action_skipped action=%s reason=no_response_url", REMOVE_ACTION)
            return
        channel = inbound.field_id(body, "channel")
        actions = body.get("actions")
        action = inbound.mapping(actions[0] if isinstance(actions, list) and actions else None)
        file_id = inbound.text(action.get("value"), 200)
        if channel is None or not file_id:
            log.warning("event=action_skipped action=%s reason=malformed", REMOVE_ACTION)
            await respond(text=words.BUTTON_NOT_UNDERSTOOD, replace_original=False)
            return
        key = ChannelScope(_team(body), channel)
        removed = await ingest.remove_from_channel(key, file_id)
        if removed:
            await audit_log.record(
                audit.KNOWLEDGE_REMOVED,
                inbound.field_id(body, "user") or "",
                key.team_id,
                channel=channel,
                file=file_id,
            )
        note = words.KNOWLEDGE_REMOVED if removed else words.KNOWLEDGE_ALREADY_GONE
        await respond(replace_original=True, **await knowledge_view(ingest, key, note))

    app.shortcut(ADD_SHORTCUT)(add)
    app.action(REMOVE_ACTION)(remove)


async def knowledge_command(ingest: FileIngest, key: ChannelScope, respond: AsyncRespond) -> None:
    """`/assistant knowledge`: the channel's knowledge files, each with a Remove button."""
    await respond(**await knowledge_view(ingest, key))


async def knowledge_view(ingest: FileIngest, key: ChannelScope, note: str = "") -> dict[str, Any]:
    files = await ingest.channel_files(key)
    if not files:
        return {"text": words.no_knowledge(note)}
    text = words.knowledge_header(len(files), note)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    for file in files[:45]:  # a message holds at most 50 blocks
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": words.knowledge_file(file.name, file.added_by),
                },
                "accessory": {
                    "type": "button",
                    "text": {"type": "plain_text", "text": words.REMOVE_LABEL},
                    "action_id": REMOVE_ACTION,
                    "value": file.backend_file_id,
                    "style": "danger",
                },
            }
        )
    return {"text": text + " " + ", ".join(f.name for f in files), "blocks": blocks}


def _team(body: dict[str, Any]) -> str:
    return inbound.field_id(body, "team") or inbound.slack_id(body.get("team_id")) or ""
