"""`/assistant`: list the assistants, set this channel's (or DM's) default, say which one answers,
and show how much they were used.

Acked at once; the answer follows ephemerally through the command's response_url. Slash commands
do not fire inside threads, so a thread is switched with the message shortcut instead.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.assistant_choice import AssistantChooser, NotAllowed, match_assistant
from bot.engine.base import EngineError
from bot.file_ingest import FileIngest
from bot.governance import audit
from bot.governance.access import Access
from bot.governance.budgets import BudgetCheck
from bot.governance.usage import UsageReports
from bot.messages import ChannelScope
from bot.slack import inbound, words
from bot.slack.listeners.knowledge import knowledge_command

log = logging.getLogger(__name__)

COMMAND = "/assistant"
MAX_LISTED = 150  # lines in one ephemeral answer; the CLI lists them all
MAX_COMMAND_TEXT = 4000  # more than anyone types after a slash command
USAGE_DAYS = re.compile(r"(\d{1,3})\s*d?")  # `/assistant usage 7d`: the top lists' span
MAX_USAGE_DAYS = 366


def register(
    app: AsyncApp,
    chooser: AssistantChooser,
    ingest: FileIngest,
    access: Access,
    audit_log: audit.AuditLog,
    reports: UsageReports | None = None,
    budgets: BudgetCheck | None = None,
) -> None:
    async def assistant_command(ack: Any, command: dict[str, Any], respond: Any) -> None:
        await ack()
        asked = _read(command)
        if asked is None:
            log.warning("event=command_skipped reason=missing_ids")
            return
        if asked.text.lower().startswith("knowledge"):
            await knowledge_command(ingest, ChannelScope(asked.team, asked.channel), respond)
            return
        verb, _, rest = asked.text.partition(" ")
        if verb.lower() == "usage" and reports is not None:
            answer = await usage_command(reports, budgets, chooser, asked, rest.strip())
            await respond(text=answer, response_type="ephemeral")
            return
        try:
            answer = await _answer(chooser, access, audit_log, asked)
        except EngineError as exc:
            log.warning("event=command_failed code=%s", exc.code)
            answer = words.service_unreachable(exc.code)
        await respond(text=answer, response_type="ephemeral")

    app.command(COMMAND)(assistant_command)


@dataclass(frozen=True)
class _Command:
    team: str
    channel: str
    user: str
    text: str
    is_direct: bool


def _read(command: dict[str, Any]) -> _Command | None:
    """The command's fields as the bot needs them; None when Slack's ids are missing."""
    team, channel, user = (
        inbound.slack_id(command.get(name)) for name in ("team_id", "channel_id", "user_id")
    )
    if not (team and channel and user) or not command.get("response_url"):
        return None  # not from Slack: Slack always names them, and where to answer
    text = inbound.text(command.get("text"), MAX_COMMAND_TEXT).strip()
    is_direct = command.get("channel_name") == "directmessage" or channel.startswith("D")
    return _Command(team, channel, user, text, is_direct)


async def _answer(
    chooser: AssistantChooser, access: Access, audit_log: audit.AuditLog, command: _Command
) -> str:
    verb, _, rest = command.text.partition(" ")
    verb = verb.lower()
    team, channel, user, is_direct = command.team, command.channel, command.user, command.is_direct
    if verb in ("", "help"):
        return words.COMMAND_HELP
    if verb == "list":
        every = await chooser.assistants()
        if not every:
            return words.NO_ASSISTANTS_YET
        assistants = await access.usable(every, channel, user, is_direct)
        if not assistants:
            return words.NO_ASSISTANT_FOR_YOU
        here = await chooser.for_new_conversation(team, channel)
        lines = [words.assistant_line(a, here=a.id == here.assistant_id) for a in assistants]
        more = max(0, len(lines) - MAX_LISTED)
        return words.assistant_list(lines[:MAX_LISTED], len(assistants), more)
    if verb == "current":
        choice = await chooser.for_new_conversation(team, channel)
        name = words.name_of(choice.assistant_id, await chooser.assistants())
        return words.current_assistant(name, channel, is_direct, choice)
    if verb == "use":
        return await _use(chooser, access, audit_log, rest.strip(), command)
    return words.unknown_verb(verb)


async def _use(
    chooser: AssistantChooser,
    access: Access,
    audit_log: audit.AuditLog,
    query: str,
    command: _Command,
) -> str:
    team, channel, user, is_direct = command.team, command.channel, command.user, command.is_direct
    if not query:
        return words.WHICH_ASSISTANT
    if not chooser.may_set_default(user, is_direct):
        return words.only_admins_set_default(sorted(chooser.admins), channel)
    match = match_assistant(query, await chooser.assistants())
    if match.ambiguous:
        return words.ambiguous_assistant(query, match.ambiguous)
    if match.found is None:
        return words.unknown_assistant(query, match.close)
    if not await access.may_use(match.found, channel, user, is_direct):
        return words.not_yours_to_use(match.found)
    try:
        await chooser.set_default(team, channel, match.found.id, user, is_direct)
    except NotAllowed:
        return words.NOT_ALLOWED
    log.info(
        "event=channel_default_set channel=%s assistant=%s user=%s", channel, match.found.id, user
    )
    await audit_log.record(
        audit.CHANNEL_DEFAULT_SET,
        user,
        team,
        channel=channel,
        assistant=match.found.name,
        assistant_id=match.found.id,
    )
    return words.default_set(match.found, channel, is_direct)


async def usage_command(
    reports: UsageReports,
    budgets: BudgetCheck | None,
    chooser: AssistantChooser,
    asked: _Command,
    argument: str,
) -> str:
    """Admins see everyone's usage; anyone else only their own."""
    days = 30
    if argument:
        match = USAGE_DAYS.fullmatch(argument.lower())
        if match is None or not 1 <= int(match.group(1)) <= MAX_USAGE_DAYS:
            return words.USAGE_HELP
        days = int(match.group(1))
    summary = await reports.summary(asked.team, asked.user, days)
    standing = await budgets.standing(asked.team, asked.user) if budgets is not None else []
    return words.usage_report(summary, await assistant_names(chooser), standing)


async def assistant_names(chooser: AssistantChooser) -> dict[str, str]:
    """Assistants' names by id; none when the service cannot be reached (ids are shown)."""
    try:
        return {a.id: a.name for a in await chooser.assistants()}
    except EngineError as exc:
        log.warning("event=usage_names_failed code=%s", exc.code)
        return {}
