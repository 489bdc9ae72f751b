"""The app's Home tab: the assistants, the defaults in effect, how to use the bot, and (for the
bot's admins) how much the assistants were used."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant_choice import AssistantChooser
from bot.definitions import AssistantDefinition
from bot.engine.base import EngineError
from bot.governance.usage import UsageReports
from bot.slack import inbound, words

log = logging.getLogger(__name__)

SECTION_LIMIT = 3000  # characters of text in one section block
MAX_LINES = 20  # channel defaults listed before "and N more"


def register(app: AsyncApp, chooser: AssistantChooser, reports: UsageReports | None = None) -> None:
    async def on_home_tab(event: dict[str, Any]) -> bool:
        return event.get("tab") == "home"

    async def home_opened(
        event: dict[str, Any], body: dict[str, Any], client: AsyncWebClient
    ) -> None:
        user = inbound.slack_id(event.get("user"))
        if user is None:
            log.warning("event=home_skipped reason=missing_user")
            return
        team = inbound.slack_id(body.get("team_id")) or ""
        dm_channel = inbound.slack_id(event.get("channel")) or ""
        view = await home_view(chooser, team, user, dm_channel, reports)
        await client.views_publish(user_id=user, view=view)

    app.event("app_home_opened", matchers=[on_home_tab])(home_opened)


async def home_view(
    chooser: AssistantChooser,
    team_id: str,
    user_id: str,
    dm_channel: str,
    reports: UsageReports | None = None,
) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        _header(words.HOME_HOW_TO_TITLE),
        _section(words.HOME_HOW_TO),
    ]
    try:
        assistants = await chooser.assistants()
    except EngineError as exc:
        log.warning("event=home_list_failed code=%s", exc.code)
        blocks.append(_section(words.service_unreachable(exc.code)))
        return {"type": "home", "blocks": blocks}
    blocks += [
        {"type": "divider"},
        _header(words.HOME_DEFAULTS_TITLE),
        _section(await _defaults(chooser, team_id, dm_channel, assistants)),
    ]
    if reports is not None and reports.sees_everyone(user_id):
        summary = await reports.summary(team_id, user_id)
        names = {a.id: a.name for a in assistants}
        report = words.usage_report(summary, names).splitlines()
        blocks += [{"type": "divider"}, _header(words.HOME_USAGE_TITLE)]
        blocks += [_section(text) for text in _chunks(report)]
    blocks += [{"type": "divider"}, _header(words.home_assistants_title(len(assistants)))]
    blocks += [_section(text) for text in _chunks([words.assistant_line(a) for a in assistants])][
        :80
    ]
    return {"type": "home", "blocks": blocks}


async def _defaults(
    chooser: AssistantChooser,
    team_id: str,
    dm_channel: str,
    assistants: Sequence[AssistantDefinition],
) -> str:
    lines = [words.home_global_default(words.name_of(chooser.global_default_id, assistants))]
    settings = await chooser.channel_defaults(team_id)
    mine = next((s for s in settings if s.channel_id == dm_channel), None)
    if mine is not None:
        lines.append(words.home_dm_default(words.name_of(mine.assistant_id, assistants)))
    channels = [s for s in settings if not s.channel_id.startswith("D")]
    if channels:
        listed = [
            (s.channel_id, words.name_of(s.assistant_id, assistants), s.set_by)
            for s in channels[:MAX_LINES]
        ]
        lines += words.home_channel_defaults(listed, max(0, len(channels) - MAX_LINES))
    else:
        lines.append(words.HOME_NO_CHANNEL_DEFAULTS)
    lines.append(words.home_who_may_change(sorted(chooser.admins)))
    return "\n".join(lines)


def _chunks(lines: list[str]) -> list[str]:
    """Lines joined into texts that each fit one section block."""
    chunks: list[str] = []
    for line in lines:
        if chunks and len(chunks[-1]) + 1 + len(line) <= SECTION_LIMIT:
            chunks[-1] += "\n" + line
        else:
            chunks.append(line[:SECTION_LIMIT])
    return chunks or [words.HOME_NO_ASSISTANTS]


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT]}}
