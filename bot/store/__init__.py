"""The bot's database, SQLite or PostgreSQL through SQLAlchemy Core: the only package with SQL.

schema.py    the tables (SQLAlchemy Table objects), one schema for both databases
migrations/  Alembic's steps to that schema; migrate.py runs them at start-up
database.py  the URL, the connection, a unit of work in autocommit or in one transaction
records.py   the plain records the store hands out
conversations.py, turns.py, definitions.py, files.py, usage.py, audit.py, approvals.py   the
             methods, one group of tables each
store.py     Store: all of them on one database
"""

from bot.store.database import (
    StoreError,
    StoreUnavailable,
    describe_url,
    postgresql_conninfo,
    sqlite_file,
)
from bot.store.records import (
    Approval,
    AuditEntry,
    ChannelSetting,
    ConversationRecord,
    Feedback,
    PendingTurn,
    SharedFileRecord,
    TurnKnowledge,
    TurnProgress,
)
from bot.store.store import DatabaseState, Store
from bot.store.usage import UsageRow

__all__ = [
    "Approval",
    "AuditEntry",
    "ChannelSetting",
    "ConversationRecord",
    "DatabaseState",
    "Feedback",
    "PendingTurn",
    "SharedFileRecord",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TurnKnowledge",
    "TurnProgress",
    "UsageRow",
    "describe_url",
    "postgresql_conninfo",
    "sqlite_file",
]
