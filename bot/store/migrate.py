"""Bring a database's schema to the one this bot knows, with Alembic (`migrations/`).

SQLite files made before Alembic kept their schema version in PRAGMA user_version; its versions 1-4
are revisions 0001-0004, so such a file is stamped with its revision and goes on from there.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import sqlalchemy as sa

from bot.store.database import Database, StoreError, shown

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)


class _NoNews(logging.Filter):
    """Alembic logs its plugins as it is imported, and the dialect each time it looks at a
    database: every start, no news. (Alembic is imported below, after this filter is in place.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(
            ("setup plugin ", "Context impl ", "Will assume ")
        )


for _name in ("alembic.runtime.plugins", "alembic.runtime.migration"):
    logging.getLogger(_name).addFilter(_NoNews())

MIGRATIONS = Path(__file__).with_name("migrations")
# PRAGMA user_version of a SQLite file made before Alembic -> the revision it is at.
SQLITE_USER_VERSIONS = {1: "0001", 2: "0002", 3: "0003", 4: "0004"}
# Any constant: the key of the PostgreSQL lock that lets one process migrate at a time.
MIGRATION_LOCK = 0x5AB07


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands: its revision (None: empty) and the latest one."""

    revision: str | None
    latest: str
    pending: int  # migrations start-up would run
    from_user_version: bool = False  # a SQLite file of before Alembic, not stamped yet


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def latest_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None
    return head


def schema_state(connection: sa.Connection) -> SchemaState:
    """Read (never write) which revision the database is at; StoreError if it is newer than
    this bot knows."""
    from alembic.runtime.migration import MigrationContext

    latest = latest_revision()
    known = [script.revision for script in _scripts().walk_revisions("base", "heads")]
    revision = MigrationContext.configure(connection).get_current_revision()
    from_user_version = False
    if revision is None and connection.dialect.name == "sqlite":
        user_version = int(connection.exec_driver_sql("PRAGMA user_version").scalar() or 0)
        if user_version and user_version not in SQLITE_USER_VERSIONS:
            _newer(connection, f"schema version {user_version} (PRAGMA user_version)", latest)
        revision = SQLITE_USER_VERSIONS.get(user_version)
        from_user_version = revision is not None
    if revision is not None and revision not in known:
        _newer(connection, f"schema revision {revision}", latest)
    pending = known.index(revision) if revision is not None else len(known)
    return SchemaState(revision, latest, pending, from_user_version)


def _newer(connection: sa.Connection, what: str, latest: str) -> NoReturn:
    raise StoreError(
        f"The database {shown(connection.engine.url)} has {what}, newer than this bot knows "
        f"(its latest is revision {latest}): run a newer version of the bot, or point "
        "DATABASE_URL at another database."
    )


def _upgrade(connection: sa.Connection) -> SchemaState:
    """Runs inside the store's transaction, which holds the database's write lock (SQLite) or
    the migration lock (PostgreSQL): processes starting together migrate one at a time, and
    the later ones find nothing left to do."""
    from alembic import command

    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    state = schema_state(connection)
    if state.pending:
        config = _config()
        config.attributes["connection"] = connection
        if state.from_user_version and state.revision is not None:
            command.stamp(config, state.revision)
        command.upgrade(config, "head")
        log.info("event=database_migrated from=%s to=%s", state.revision or "empty", state.latest)
    return state


async def migrate(database: Database) -> SchemaState:
    """Bring the schema up to date; a database that is already (the usual case) costs one read."""
    state = await database.run(schema_state)
    if not state.pending:
        return state
    return await database.transaction(_upgrade)
