"""The audit log: the admin actions, who did them and when. `python -m bot audit` prints it.

Recording is one call, `await audit.record(ACTION, actor, team_id, **detail)`, and never fails
the action it records (a store that cannot write is logged instead).
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

from bot.engine.catalog import SyncResult
from bot.store import AuditEntry, Store

log = logging.getLogger(__name__)

# What an entry's `action` says.
CHANNEL_DEFAULT_SET = "channel_default_set"
KNOWLEDGE_ADDED = "knowledge_added"
KNOWLEDGE_REMOVED = "knowledge_removed"
ASSISTANT_CREATED = "assistant_created"
ASSISTANT_UPDATED = "assistant_updated"
ASSISTANT_DELETED = "assistant_deleted"
CONVERSATION_FORGOTTEN = "conversation_forgotten"
BUDGET_REFUSED = "budget_refused"

CLI = "cli"  # the actor of what an operator did with `python -m bot …`
STARTUP = "startup"  # the actor of ASSISTANTS_FILE applied at start-up

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(self, action: str, actor: str, team_id: str = "", **detail: Any) -> None:
        """Record that `actor` (a Slack user id, CLI or STARTUP) did `action`."""
        try:
            await self.store.add_audit_entry(team_id, actor, action, detail)
        except Exception:
            log.exception("event=audit_failed action=%s actor=%s", action, actor)

    async def since(self, seconds_ago: float) -> list[AuditEntry]:
        return await self.store.audit_entries(time.time() - seconds_ago)


async def record_sync(audit_log: AuditLog, result: SyncResult, actor: str) -> None:
    """What a sync (`assistants sync`, or ASSISTANTS_FILE at start-up) changed, one entry each."""
    for action, names in (
        (ASSISTANT_CREATED, result.created),
        (ASSISTANT_UPDATED, result.updated),
        (ASSISTANT_DELETED, result.deleted),
    ):
        for name in names:
            await audit_log.record(action, actor, assistant=name, by="sync")


def parse_period(text: str) -> float:
    """`30m`, `12h`, `7d` or `2w` in seconds; ValueError for anything else."""
    found = re.fullmatch(r"\s*([0-9]+)\s*([mhdw])\s*", text.lower())
    if found is None or int(found.group(1)) == 0:
        raise ValueError(f"{text!r} is not a period like 30m, 12h, 7d or 2w")
    return int(found.group(1)) * _UNITS[found.group(2)]


def format_entry(entry: AuditEntry) -> str:
    """One line: when (UTC), who, what, and the details as key=value."""
    when = datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    details = " ".join(f"{key}={value}" for key, value in sorted(entry.detail.items()))
    team = f" team={entry.team_id}" if entry.team_id else ""
    return f"{when}  {entry.actor:<12} {entry.action:<24}{team} {details}".rstrip()
