"""Who did what, when: the admin actions the bot records (table audit_log)."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from bot.store.database import Database
from bot.store.records import AuditEntry
from bot.store.schema import audit_log

_ADD = sa.insert(audit_log)
_SINCE = (
    sa.select(
        audit_log.c.at,
        audit_log.c.team_id,
        audit_log.c.actor,
        audit_log.c.action,
        audit_log.c.detail,
    )
    .where(audit_log.c.at >= sa.bindparam("since"))
    .order_by(audit_log.c.at, audit_log.c.id)
)


class AuditTables:
    _db: Database

    async def add_audit_entry(
        self, team_id: str, actor: str, action: str, detail: dict[str, Any]
    ) -> None:
        await self._db.write(
            _ADD,
            {
                "at": time.time(),
                "team_id": team_id,
                "actor": actor,
                "action": action,
                "detail": json.dumps(detail, sort_keys=True, default=str),
            },
        )

    async def audit_entries(self, since: float) -> list[AuditEntry]:
        """The entries recorded at or after `since`, oldest first."""
        rows = await self._db.all(_SINCE, {"since": since})
        return [AuditEntry(row[0], row[1], row[2], row[3], _detail(row[4])) for row in rows]


def _detail(text: str) -> dict[str, Any]:
    try:
        detail = json.loads(text)
    except ValueError:
        return {}
    return detail if isinstance(detail, dict) else {}
