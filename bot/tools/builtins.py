"""Built-in tools that need nothing but the standard library (Slack's live under bot/slack)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.tools.registry import tool


@tool(
    description="The current date and time in a timezone (an IANA name like Europe/Paris).",
    parameters={
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "IANA timezone name, e.g. America/New_York; default UTC",
            }
        },
    },
    status="Checking the time…",
)
async def current_time(timezone: str = "UTC") -> str:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"error: unknown timezone {timezone!r}; use an IANA name like Europe/Paris"
    now = datetime.now(UTC).astimezone(zone)
    return now.strftime(f"%A %Y-%m-%d %H:%M:%S ({timezone}, UTC%z)")


BUILTIN_TOOLS = (current_time,)
