"""`/assistant`: list the assistants, set this channel's (or DM's) default, say which one answers.

Acked at once; the answer follows ephemerally through the command's response_url. Slash commands
do not fire inside threads, so a thread is switched with the message shortcut instead.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.assistant_choice import AssistantChooser, NotAllowed, match_assistant
from bot.engine.base import EngineError
from bot.file_ingest import FileIngest
from bot.slack import words
from bot.slack.listeners.knowledge import knowledge_command

log = logging.getLogger(__name__)

COMMAND = "/assistant"
MAX_LISTED = 150  # lines in one ephemeral answer; the CLI lists them all


def register(app: AsyncApp, chooser: AssistantChooser, ingest: FileIngest) -> None:
    async def assistant_command(ack: Any, command: dict[str, Any], respond: Any) -> None:
        await ack()
        if str(command.get("text") or "").strip().lower().startswith("knowledge"):
            await knowledge_command(ingest, command, respond)
            return
        try:
            answer = await _answer(chooser, command)
        except EngineError as exc:
            log.warning("event=command_failed code=%s", exc.code)
            answer = words.service_unreachable(exc.code)
        await respond(text=answer, response_type="ephemeral")

    app.command(COMMAND)(assistant_command)


async def _answer(chooser: AssistantChooser, command: dict[str, Any]) -> str:
    verb, _, rest = str(command.get("text") or "").strip().partition(" ")
    verb = verb.lower()
    team, channel, user = command["team_id"], command["channel_id"], command["user_id"]
    is_direct = command.get("channel_name") == "directmessage" or str(channel).startswith("D")
    if verb in ("", "help"):
        return words.COMMAND_HELP
    if verb == "list":
        assistants = await chooser.assistants()
        here = await chooser.for_new_conversation(team, channel)
        if not assistants:
            return words.NO_ASSISTANTS_YET
        lines = [words.assistant_line(a, here=a.id == here.assistant_id) for a in assistants]
        more = max(0, len(lines) - MAX_LISTED)
        return words.assistant_list(lines[:MAX_LISTED], len(assistants), more)
    if verb == "current":
        choice = await chooser.for_new_conversation(team, channel)
        name = words.name_of(choice.assistant_id, await chooser.assistants())
        return words.current_assistant(name, channel, is_direct, choice)
    if verb == "use":
        return await _use(chooser, rest.strip(), team, channel, user, is_direct)
    return words.unknown_verb(verb)


async def _use(
    chooser: AssistantChooser, query: str, team: str, channel: str, user: str, is_direct: bool
) -> str:
    if not query:
        return words.WHICH_ASSISTANT
    if not chooser.may_set_default(user, is_direct):
        return words.only_admins_set_default(sorted(chooser.admins), channel)
    match = match_assistant(query, await chooser.assistants())
    if match.ambiguous:
        return words.ambiguous_assistant(query, match.ambiguous)
    if match.found is None:
        return words.unknown_assistant(query, match.close)
    try:
        await chooser.set_default(team, channel, match.found.id, user, is_direct)
    except NotAllowed:
        return words.NOT_ALLOWED
    log.info(
        "event=channel_default_set channel=%s assistant=%s user=%s", channel, match.found.id, user
    )
    return words.default_set(match.found, channel, is_direct)
