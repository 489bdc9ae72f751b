"""The Store: one database (SQLite or PostgreSQL), its schema brought up to date on opening, and
the tables' methods, one small class per group of tables."""

from __future__ import annotations

from pathlib import Path

from bot.store.conversations import ConversationTables
from bot.store.database import Database, StoreError, parse_url, sqlite_url
from bot.store.definitions import DefinitionTables
from bot.store.files import FileTables
from bot.store.migrate import SchemaState, migrate, schema_state
from bot.store.turns import TurnTables


class Store(ConversationTables, TurnTables, DefinitionTables, FileTables):
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
        text = str(url)
        try:
            parsed = parse_url(text if "://" in text else sqlite_url(text))
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        db = await Database.connect(parsed)
        try:
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def schema(self) -> SchemaState:
        """Which schema revision the database is at (after `open`: the latest)."""
        return await self._db.run(schema_state)

    async def close(self) -> None:
        await self._db.close()
