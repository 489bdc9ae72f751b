"""What Slack sends, checked at the edge: ids, timestamps and text, as the rest of the bot needs
them. Payloads are JSON from the network: any field may be missing, of another type, or hold
text that cannot be stored or sent as it is (lone surrogates, NUL bytes).
"""

from __future__ import annotations

import re
from typing import Any

from bot.text import clean

# A message's ts: seconds, a dot, a sequence number ("1712345678.123456"). Recovery orders a
# thread's turns by it, and Slack's API refuses anything else as a `ts` or `thread_ts`.
TS = re.compile(r"\d{1,12}\.\d{1,9}")
# Slack's ids (users, bots, channels, workspaces): upper-case letters and digits.
SLACK_ID = re.compile(r"[A-Z0-9]{2,40}")
# Slack cuts a message's text at 40,000 characters: an event with more did not come from Slack.
MAX_TEXT_CHARS = 40_000


def ts(value: object) -> str | None:
    """A message timestamp as Slack writes it, or None."""
    return value if isinstance(value, str) and TS.fullmatch(value) else None


def slack_id(value: object) -> str | None:
    """A Slack id (U…, C…, T…, B…), or None."""
    return value if isinstance(value, str) and SLACK_ID.fullmatch(value) else None


def text(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """Text safe to store and send ("" for anything that is not text), cut at `limit`."""
    return clean(value[:limit]) if isinstance(value, str) else ""


def mapping(value: object) -> dict[str, Any]:
    """A JSON object, or an empty one for anything else."""
    return value if isinstance(value, dict) else {}


def field_id(payload: dict[str, Any], name: str) -> str | None:
    """The id of `payload[name]`, which Slack sends as an object with an `id` (interactions)
    or as the id itself."""
    value = payload.get(name)
    return slack_id(value.get("id") if isinstance(value, dict) else value)
