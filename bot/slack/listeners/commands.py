"""`/assistant`: list the assistants, set this channel's (or DM's) default, say which one answers.

Acked at once; the answer follows ephemerally through the command's response_url. Slash commands
do not fire inside threads, so a thread is switched with the message shortcut instead.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.assistant_choice import AssistantChooser, NotAllowed, match_assistant
from bot.definitions import AssistantDefinition
from bot.engine.base import EngineError
from bot.file_ingest import FileIngest
from bot.slack.describe import SHORTCUT_NAME, assistant_line, escape, name_of, where, why
from bot.slack.listeners.knowledge import knowledge_command

log = logging.getLogger(__name__)

COMMAND = "/assistant"
MAX_LISTED = 150  # lines in one ephemeral answer; the CLI lists them all
HELP = (
    "*`/assistant`* chooses which assistant answers here.\n"
    "• `/assistant list`: the assistants, and the one that answers here\n"
    "• `/assistant use NAME`: answer new conversations here with NAME (a name, the start of "
    "one, or an id); in a DM with me, it sets your DM's default\n"
    "• `/assistant current`: which assistant answers here, and why\n"
    "• `/assistant knowledge`: this channel's knowledge files (add them with the message shortcut "
    "*Add to channel knowledge*)\n"
    f"To switch a single thread, use the message shortcut *{SHORTCUT_NAME}* on a message in it. "
    "Threads already going keep their assistant."
)


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
            answer = f":warning: I could not reach the assistant service ({exc.message})."
        await respond(text=answer, response_type="ephemeral")

    app.command(COMMAND)(assistant_command)


async def _answer(chooser: AssistantChooser, command: dict[str, Any]) -> str:
    verb, _, rest = str(command.get("text") or "").strip().partition(" ")
    verb = verb.lower()
    team, channel, user = command["team_id"], command["channel_id"], command["user_id"]
    is_direct = command.get("channel_name") == "directmessage" or str(channel).startswith("D")
    if verb in ("", "help"):
        return HELP
    if verb == "list":
        assistants = await chooser.assistants()
        here = await chooser.for_new_conversation(team, channel)
        if not assistants:
            return "There are no assistants yet; an operator adds them with `python -m bot assistants`."
        lines = [assistant_line(a, here=a.id == here.assistant_id) for a in assistants]
        if len(lines) > MAX_LISTED:
            lines = [*lines[:MAX_LISTED], f"…and {len(lines) - MAX_LISTED} more."]
        return (
            f"*Assistants* ({len(assistants)}):\n"
            + "\n".join(lines)
            + "\n`/assistant use NAME` changes which one answers new conversations here."
        )
    if verb == "current":
        choice = await chooser.for_new_conversation(team, channel)
        name = name_of(choice.assistant_id, await chooser.assistants())
        return (
            f"{name} answers new conversations in {where(channel, is_direct)}: "
            f"{why(choice, channel, is_direct)}.\nThreads keep the assistant they started with; "
            f"to switch one, use the message shortcut *{SHORTCUT_NAME}*."
        )
    if verb == "use":
        return await _use(chooser, rest.strip(), team, channel, user, is_direct)
    return f"I don't know `/assistant {escape(verb)}`.\n\n{HELP}"


async def _use(
    chooser: AssistantChooser, query: str, team: str, channel: str, user: str, is_direct: bool
) -> str:
    if not query:
        return "Which assistant? Write `/assistant use NAME`; `/assistant list` shows the names."
    if not chooser.may_set_default(user, is_direct):
        admins = ", ".join(f"<@{admin}>" for admin in sorted(chooser.admins))
        return (
            f"Only the bot's admins ({admins}) can change the default assistant of <#{channel}>. "
            f"You can still switch a single thread with the message shortcut *{SHORTCUT_NAME}*, "
            "or choose the default for your own DM with me there."
        )
    match = match_assistant(query, await chooser.assistants())
    if match.ambiguous:
        return (
            f"“{escape(query)}” fits several assistants: {_names(match.ambiguous)}. "
            "Write more of the name, or the id."
        )
    if match.found is None:
        suggestion = f" Close matches: {_names(match.close)}." if match.close else ""
        return (
            f"I don't know an assistant called “{escape(query)}”.{suggestion} "
            "`/assistant list` shows them all."
        )
    try:
        await chooser.set_default(team, channel, match.found.id, user, is_direct)
    except NotAllowed as exc:
        return f"I can't do that: {exc}."
    log.info(
        "event=channel_default_set channel=%s assistant=%s user=%s", channel, match.found.id, user
    )
    return (
        f"Done: *{escape(match.found.name)}* now answers new conversations in "
        f"{where(channel, is_direct)}. Threads already going keep their assistant."
    )


def _names(assistants: tuple[AssistantDefinition, ...]) -> str:
    return ", ".join(f"*{escape(a.name)}* (`{a.id}`)" for a in assistants)
