"""The bot's own assistant definitions, for the Responses engine (table assistants)."""

from __future__ import annotations

import functools
import time

import sqlalchemy as sa

from bot.definitions import AssistantDefinition
from bot.store.database import Database, upsert
from bot.store.schema import assistants

_ALL = sa.select(assistants.c.id, assistants.c.name, assistants.c.definition)
_ONE = sa.select(assistants.c.id, assistants.c.definition).where(
    sa.or_(assistants.c.id == sa.bindparam("wanted"), assistants.c.name == sa.bindparam("wanted"))
)
_DELETE = sa.delete(assistants).where(assistants.c.id == sa.bindparam("wanted"))


@functools.cache
def _save(dialect: str) -> sa.Insert:
    return upsert(dialect, assistants, ("id",), ("name", "definition", "updated_at"))


class DefinitionTables:
    _db: Database

    async def list_definitions(self) -> list[AssistantDefinition]:
        """By name, in code point order (as SQLite sorted them; PostgreSQL's order would follow
        its locale)."""
        rows = sorted(await self._db.all(_ALL), key=lambda row: str(row[1]))
        return [AssistantDefinition.from_json(row[0], row[2]) for row in rows]

    async def get_definition(self, id_or_name: str) -> AssistantDefinition | None:
        row = await self._db.first(_ONE, {"wanted": id_or_name})
        return AssistantDefinition.from_json(row[0], row[1]) if row else None

    async def save_definition(self, definition: AssistantDefinition) -> None:
        """Insert or replace by id; a definition's name stays unique."""
        now = time.time()
        await self._db.write(
            _save(self._db.dialect),
            {
                "id": definition.id,
                "name": definition.name,
                "definition": definition.to_json(),
                "created_at": now,
                "updated_at": now,
            },
        )

    async def delete_definition(self, assistant_id: str) -> bool:
        return await self._db.write(_DELETE, {"wanted": assistant_id}) == 1
