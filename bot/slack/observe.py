"""Counts every request Slack sends, by type, and how long the bot took to ack it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot import metrics

EVENT_TYPES = frozenset(
    {
        "app_context_changed",
        "app_home_opened",
        "app_mention",
        "assistant_thread_context_changed",
        "assistant_thread_started",
        "message",
    }
)
INTERACTION_TYPES = frozenset(
    {"block_actions", "view_submission", "view_closed", "shortcut", "message_action"}
)


def request_type(body: dict[str, Any]) -> str:
    """A bounded label: the event's type, the interaction's, "command" or "other"."""
    if "command" in body:
        return "command"
    kind = body.get("type")
    if kind == "event_callback":
        event = body.get("event")
        event_type = event.get("type") if isinstance(event, dict) else None
        return event_type if event_type in EVENT_TYPES else "other_event"
    return kind if kind in INTERACTION_TYPES else "other"


async def count_requests(body: dict[str, Any], next: Callable[[], Awaitable[None]]) -> None:
    """Bolt global middleware: `next()` returns once the request is acked (or refused)."""
    kind = request_type(body)
    metrics.event_received(kind)
    started = metrics.now()
    await next()
    metrics.event_acked(kind, metrics.now() - started)
