"""Assistants and choices in Slack's words: mrkdwn that names are escaped into, shared by the
slash command, the shortcut's picker and the home tab."""

from __future__ import annotations

from collections.abc import Sequence

from bot.assistant_choice import Choice
from bot.definitions import AssistantDefinition
from bot.text import shorten

SHORTCUT_NAME = "Switch thread assistant"  # as named in manifest.yml


def escape(text: str) -> str:
    """Text shown as mrkdwn: `&`, `<` and `>` are Slack's control characters (links, mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def name_of(assistant_id: str, assistants: Sequence[AssistantDefinition]) -> str:
    """The assistant's name in bold, or its id when it no longer exists."""
    for assistant in assistants:
        if assistant.id == assistant_id:
            return f"*{escape(assistant.name)}*"
    return f"`{escape(assistant_id)}` (no longer exists)"


def assistant_line(assistant: AssistantDefinition, here: bool = False) -> str:
    """• *Name* `model` · tools: … — description  (marked when it answers here)."""
    parts = [f"*{escape(assistant.name)}*", f"`{escape(assistant.model)}`"]
    if assistant.tool_types:
        parts.append("tools: " + ", ".join(assistant.tool_types))
    line = "• " + " · ".join(parts)
    description = shorten(assistant.description, 100)
    if description:
        line += f" — {escape(description)}"
    if here:
        line += "  :arrow_left: _answers here_"
    return line


def where(channel_id: str, is_direct: bool) -> str:
    return "this DM" if is_direct else f"<#{channel_id}>"


def why(choice: Choice, channel_id: str, is_direct: bool) -> str:
    """Why this assistant answers here, in a clause."""
    if choice.reason == "thread":
        return "it is this thread's assistant"
    if choice.reason == "channel" and is_direct:
        return "you chose it as the default for your DM with me"
    if choice.reason == "channel":
        return f"it is the default of <#{channel_id}>, set by <@{choice.set_by}>"
    return (
        "it is the bot's global default (no default is set for "
        + where(channel_id, is_direct)
        + ")"
    )
