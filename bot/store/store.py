"""The Store: one database (SQLite or PostgreSQL), its schema brought up to date on opening, and
the tables' methods, one small class per group of tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from bot.store.approvals import ApprovalTables
from bot.store.audit import AuditTables
from bot.store.conversations import ConversationTables
from bot.store.database import Database, StoreError, parse_url, sqlite_url
from bot.store.definitions import DefinitionTables
from bot.store.files import FileTables
from bot.store.migrate import SchemaState, migrate, schema_state
from bot.store.turns import TurnTables
from bot.store.usage import UsageTables


@dataclass(frozen=True)
class DatabaseState:
    """What start-up would find: whether the database exists, and its schema's revision."""

    exists: bool
    revision: str | None  # None: no tables yet
    latest: str
    pending_migrations: int


class Store(
    ConversationTables,
    TurnTables,
    DefinitionTables,
    FileTables,
    UsageTables,
    AuditTables,
    ApprovalTables,
):
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self._db.dialect

    @classmethod
    async def open(cls, url: str | Path) -> Store:
        """Open the database at `url` (a `sqlite://` or `postgresql://` URL, or a SQLite file's
        path) and migrate its schema; StoreError, one line saying why, if it cannot be used."""
        db = await Database.connect(_parse(url))
        try:
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    @classmethod
    async def snapshot(cls, url: str | Path) -> tuple[Store, DatabaseState]:
        """The database at `url` as start-up would leave it, migrated, in a store whose writes
        never reach it (see Database.connect_rolled_back); and what start-up would find there.

        `python -m bot check` reads what start-up would see without writing or creating a thing.
        """
        db, exists = await Database.connect_rolled_back(_parse(url))
        try:
            found = await db.run(schema_state)
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db), DatabaseState(exists, found.revision, found.latest, found.pending)

    async def schema(self) -> SchemaState:
        """Which schema revision the database is at (after `open`: the latest)."""
        return await self._db.run(schema_state)

    async def close(self) -> None:
        await self._db.close()


def _parse(url: str | Path) -> sa.URL:
    text = str(url)
    try:
        return parse_url(text if "://" in text else sqlite_url(text))
    except ValueError as exc:
        raise StoreError(str(exc)) from None
