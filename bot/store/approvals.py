"""Tool calls waiting for a person's decision (table approvals)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from bot.store.database import Database
from bot.store.records import Approval
from bot.store.schema import approvals

_DECIDE = (
    sa.update(approvals)
    .where(approvals.c.id == sa.bindparam("approval"), approvals.c.status == "pending")
    .values(
        status=sa.bindparam("decision", type_=sa.Text),
        decided_by=sa.bindparam("by", type_=sa.Text),
        decided_at=sa.bindparam("now", type_=sa.Float),
    )
)
_GET = sa.select(
    approvals.c.id,
    approvals.c.team_id,
    approvals.c.asker,
    approvals.c.status,
    approvals.c.decided_by,
    approvals.c.created_at,
).where(approvals.c.id == sa.bindparam("approval"))


class ApprovalTables:
    _db: Database

    async def add_approval(self, approval_id: str, team_id: str, asker: str) -> None:
        await self._db.write(
            sa.insert(approvals),
            {
                "id": approval_id,
                "team_id": team_id,
                "asker": asker,
                "status": "pending",
                "created_at": time.time(),
            },
        )

    async def decide_approval(self, approval_id: str, decision: str, by: str) -> bool:
        """Record the decision unless one was recorded already (False then)."""
        changed = await self._db.write(
            _DECIDE, {"approval": approval_id, "decision": decision, "by": by, "now": time.time()}
        )
        return changed == 1

    async def get_approval(self, approval_id: str) -> Approval | None:
        row = await self._db.first(_GET, {"approval": approval_id})
        if row is None:
            return None
        return Approval(row[0], row[1], row[2], row[3], row[4] or "", float(row[5]))
