from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiosqlite

from bot.definitions import AssistantDefinition
from bot.messages import ConversationKey, SharedFile

# Each entry migrates the schema from version i to i + 1 (PRAGMA user_version holds the version).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        team_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        engine TEXT NOT NULL,
        backend_id TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (team_id, channel_id, thread_ts)
    );
    CREATE TABLE channel_settings (
        team_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        set_by TEXT NOT NULL,
        set_at REAL NOT NULL,
        PRIMARY KEY (team_id, channel_id)
    );
    CREATE TABLE turns (
        id INTEGER PRIMARY KEY,
        team_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        message_ts TEXT NOT NULL,
        user_id TEXT NOT NULL,
        text TEXT NOT NULL,
        is_direct INTEGER NOT NULL,
        status TEXT NOT NULL,
        run_id TEXT,
        error TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (team_id, channel_id, message_ts)
    );
    CREATE INDEX turns_conversation ON turns (team_id, channel_id, thread_ts);
    CREATE INDEX turns_open ON turns (status) WHERE status IN ('queued', 'running');
    """,
    """
    CREATE TABLE assistants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        definition TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    """
    ALTER TABLE conversations ADD COLUMN vector_store_id TEXT;
    ALTER TABLE turns ADD COLUMN files TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE files (
        slack_file_id TEXT NOT NULL,
        purpose TEXT NOT NULL,
        backend_file_id TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (slack_file_id, purpose)
    );
    CREATE TABLE vector_stores (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX vector_stores_channel ON vector_stores (team_id, channel_id)
        WHERE thread_ts = '';
    CREATE TABLE shared_files (
        team_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        backend_file_id TEXT NOT NULL,
        use TEXT NOT NULL,
        name TEXT NOT NULL,
        vector_store_id TEXT,
        status TEXT NOT NULL,
        error TEXT,
        added_by TEXT NOT NULL,
        added_at REAL NOT NULL,
        PRIMARY KEY (team_id, channel_id, thread_ts, backend_file_id, use)
    );
    """,
    """
    CREATE TABLE feedback (
        turn_id INTEGER NOT NULL REFERENCES turns (id),
        user_id TEXT NOT NULL,
        rating TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (turn_id, user_id)
    );
    """,
)


async def _switch_to_wal(db: aiosqlite.Connection) -> None:
    """WAL mode; the switch needs the file to itself and does not wait for a busy file (another
    process opening it at the same moment), so it is tried again for a few seconds."""
    for attempt in range(100):
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            await asyncio.sleep(0.05)


def _read_only_uri(path: Path) -> str | None:
    """A URI that reads the file without writing anything; None when there is no file.

    With no write-ahead log beside it, the file is read as it stands (a read-only open would
    leave -wal and -shm files behind); with one (the bot is running), through it, so that the
    latest writes are seen."""
    if not path.is_file():
        return None
    uri = path.resolve().as_uri()
    wal = path.with_name(path.name + "-wal")
    return f"{uri}?mode=ro" if wal.exists() else f"{uri}?immutable=1"


@dataclass(frozen=True)
class ConversationRecord:
    key: ConversationKey
    engine: str
    backend_id: str
    assistant_id: str
    vector_store_id: str | None = None


@dataclass(frozen=True)
class ChannelSetting:
    """A channel's (or a DM's) default assistant for new conversations, and who set it when."""

    team_id: str
    channel_id: str
    assistant_id: str
    set_by: str
    set_at: float


@dataclass(frozen=True)
class Feedback:
    turn_id: int
    message_ts: str  # the message the rated answer answers
    user_id: str
    rating: str  # "good" | "bad"


@dataclass(frozen=True)
class PendingTurn:
    turn_id: int
    key: ConversationKey
    message_ts: str
    user_id: str
    text: str
    is_direct: bool
    status: str
    files: tuple[SharedFile, ...] = ()


@dataclass(frozen=True)
class SharedFileRecord:
    """A backend file put to a use (search, code, image) in a thread or a channel's knowledge."""

    backend_file_id: str
    use: str
    name: str
    vector_store_id: str | None
    status: str
    error: str | None
    added_by: str
    added_at: float


@dataclass(frozen=True)
class DatabaseState:
    """What start-up would find: whether the file exists and which schema version it holds."""

    exists: bool
    version: int
    latest: int = len(MIGRATIONS)

    @property
    def pending_migrations(self) -> int:
        return self.latest - self.version


# Where shared files live: a conversation's thread, or (thread_ts "") a channel's knowledge.
Scope = ConversationKey


class Store:
    """One aiosqlite connection in WAL mode; every write is one short transaction."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path | str) -> Store:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each write is its own transaction without a second hop to the worker thread.
        db = await aiosqlite.connect(str(path), isolation_level=None)
        store = cls(db)
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            await _switch_to_wal(db)
            await db.execute("PRAGMA synchronous = NORMAL")
            await store._migrate()
        except BaseException:
            await db.close()
            raise
        return store

    @classmethod
    async def snapshot(cls, path: Path | str) -> tuple[Store, DatabaseState]:
        """An in-memory copy of the database at `path` (empty when there is none), migrated.

        `python -m bot check` reads what start-up would see without writing to the file or
        creating one; the copy's changes stay in memory.
        """
        memory = await aiosqlite.connect(":memory:", isolation_level=None)
        store = cls(memory)
        try:
            source_uri = _read_only_uri(Path(path))
            if source_uri is not None:
                async with aiosqlite.connect(source_uri, uri=True) as source:
                    await source.backup(memory)
            version = await store._schema_version()
            await store._migrate()
        except BaseException:
            await memory.close()
            raise
        return store, DatabaseState(source_uri is not None, version)

    async def close(self) -> None:
        await self._db.close()

    async def _migrate(self) -> None:
        if await self._schema_version() == len(MIGRATIONS):
            return
        # Several processes (the bot, a CLI command) may open a new file at once: the first takes
        # the write lock and migrates; the others wait for it, then find nothing left to do.
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            version = await self._schema_version()
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        await self._db.execute(statement)
                await self._db.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        await self._db.execute("COMMIT")

    async def _schema_version(self) -> int:
        rows = list(await self._db.execute_fetchall("PRAGMA user_version"))
        return int(rows[0][0]) if rows else 0

    # --- conversations --------------------------------------------------------------------

    async def get_conversation(self, key: ConversationKey) -> ConversationRecord | None:
        rows = await self._db.execute_fetchall(
            "SELECT engine, backend_id, assistant_id, vector_store_id FROM conversations"
            " WHERE team_id = ? AND channel_id = ? AND thread_ts = ?",
            (key.team_id, key.channel_id, key.thread_ts),
        )
        for row in rows:
            return ConversationRecord(key, row[0], row[1], row[2], row[3])
        return None

    async def save_conversation(self, record: ConversationRecord) -> None:
        now = time.time()
        key = record.key
        await self._db.execute(
            "INSERT INTO conversations (team_id, channel_id, thread_ts, engine, backend_id,"
            " assistant_id, vector_store_id, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (team_id, channel_id, thread_ts) DO UPDATE SET"
            " engine = excluded.engine, backend_id = excluded.backend_id,"
            " assistant_id = excluded.assistant_id, vector_store_id = excluded.vector_store_id,"
            " updated_at = excluded.updated_at",
            (
                key.team_id,
                key.channel_id,
                key.thread_ts,
                record.engine,
                record.backend_id,
                record.assistant_id,
                record.vector_store_id,
                now,
                now,
            ),
        )

    async def set_thread_assistant(
        self, key: ConversationKey, engine: str, assistant_id: str
    ) -> None:
        """Switch a thread's assistant. A thread without a backend conversation yet gets a row
        with an empty backend id; its first turn creates the conversation and keeps this choice."""
        now = time.time()
        await self._db.execute(
            "INSERT INTO conversations (team_id, channel_id, thread_ts, engine, backend_id,"
            " assistant_id, created_at, updated_at) VALUES (?, ?, ?, ?, '', ?, ?, ?)"
            " ON CONFLICT (team_id, channel_id, thread_ts) DO UPDATE SET"
            " backend_id = CASE WHEN engine = excluded.engine THEN backend_id ELSE '' END,"
            " engine = excluded.engine, assistant_id = excluded.assistant_id,"
            " updated_at = excluded.updated_at",
            (key.team_id, key.channel_id, key.thread_ts, engine, assistant_id, now, now),
        )
        await self._db.commit()

    async def has_conversation(self, key: ConversationKey) -> bool:
        """True once any message of this thread was taken (even before its backend thread exists)."""
        rows = await self._db.execute_fetchall(
            "SELECT 1 FROM turns WHERE team_id = ? AND channel_id = ? AND thread_ts = ? LIMIT 1",
            (key.team_id, key.channel_id, key.thread_ts),
        )
        return bool(rows)

    async def get_channel_setting(self, team_id: str, channel_id: str) -> ChannelSetting | None:
        async with self._db.execute(
            "SELECT assistant_id, set_by, set_at FROM channel_settings"
            " WHERE team_id = ? AND channel_id = ?",
            (team_id, channel_id),
        ) as cursor:
            row = await cursor.fetchone()
        return ChannelSetting(team_id, channel_id, row[0], row[1], row[2]) if row else None

    async def set_channel_setting(
        self, team_id: str, channel_id: str, assistant_id: str, set_by: str
    ) -> None:
        await self._db.execute(
            "INSERT INTO channel_settings (team_id, channel_id, assistant_id, set_by, set_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (team_id, channel_id) DO UPDATE SET"
            " assistant_id = excluded.assistant_id, set_by = excluded.set_by,"
            " set_at = excluded.set_at",
            (team_id, channel_id, assistant_id, set_by, time.time()),
        )
        await self._db.commit()

    async def list_channel_settings(self, team_id: str) -> list[ChannelSetting]:
        """The workspace's channel and DM defaults, most recently set first."""
        async with self._db.execute(
            "SELECT channel_id, assistant_id, set_by, set_at FROM channel_settings"
            " WHERE team_id = ? ORDER BY set_at DESC",
            (team_id,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [ChannelSetting(team_id, row[0], row[1], row[2], row[3]) for row in rows]

    # --- turns ----------------------------------------------------------------------------

    async def add_turn(
        self,
        key: ConversationKey,
        message_ts: str,
        user_id: str,
        text: str,
        is_direct: bool,
        files: Sequence[SharedFile] = (),
    ) -> int | None:
        """Record a message the bot takes; None if this message was already taken.

        The unique (team, channel, message ts) is the dedupe: Slack's retries and the second
        delivery of an @mention (`app_mention` and `message`) cannot both win, across restarts too.
        """
        now = time.time()
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO turns (team_id, channel_id, thread_ts, message_ts, user_id,"
            " text, is_direct, files, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
            (
                key.team_id,
                key.channel_id,
                key.thread_ts,
                message_ts,
                user_id,
                text,
                int(is_direct),
                json.dumps([asdict(f) for f in files]),
                now,
                now,
            ),
        )
        return cursor.lastrowid if cursor.rowcount == 1 else None

    async def update_turn(
        self,
        turn_id: int,
        status: str,
        *,
        run_id: str | None = None,
        error: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        await self._db.execute(
            # A finished turn forgets the message text: it was kept only to resume after a crash.
            "UPDATE turns SET status = ?, run_id = COALESCE(?, run_id), error = ?,"
            " text = CASE WHEN ? IN ('queued', 'running') THEN text ELSE '' END,"
            " files = CASE WHEN ? IN ('queued', 'running') THEN files ELSE '[]' END,"
            " input_tokens = COALESCE(?, input_tokens), output_tokens = COALESCE(?, output_tokens),"
            " updated_at = ? WHERE id = ?",
            (
                status,
                run_id,
                error,
                status,
                status,
                input_tokens,
                output_tokens,
                time.time(),
                turn_id,
            ),
        )

    async def open_turns(self) -> list[PendingTurn]:
        """Turns left queued or running by a previous process, oldest first."""
        async with self._db.execute(
            "SELECT id, team_id, channel_id, thread_ts, message_ts, user_id, text, is_direct,"
            " status, files FROM turns WHERE status IN ('queued', 'running') ORDER BY id"
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            PendingTurn(
                turn_id=row[0],
                key=ConversationKey(row[1], row[2], row[3]),
                message_ts=row[4],
                user_id=row[5],
                text=row[6],
                is_direct=bool(row[7]),
                status=row[8],
                files=tuple(SharedFile(**f) for f in json.loads(row[9])),
            )
            for row in rows
        ]

    async def turn_statuses(self, key: ConversationKey) -> list[tuple[str, str]]:
        """(message_ts, status) of a conversation's turns, in arrival order."""
        async with self._db.execute(
            "SELECT message_ts, status FROM turns"
            " WHERE team_id = ? AND channel_id = ? AND thread_ts = ? ORDER BY id",
            (key.team_id, key.channel_id, key.thread_ts),
        ) as cursor:
            rows = await cursor.fetchall()
        return [(row[0], row[1]) for row in rows]

    # --- feedback on answers ----------------------------------------------------------------

    async def record_feedback(
        self, team_id: str, channel_id: str, message_ts: str, user_id: str, rating: str
    ) -> bool:
        """Record (or change) one person's rating of the answer to a message; False if unknown."""
        cursor = await self._db.execute(
            "INSERT INTO feedback (turn_id, user_id, rating, created_at)"
            " SELECT id, ?, ?, ? FROM turns"
            " WHERE team_id = ? AND channel_id = ? AND message_ts = ?"
            " ON CONFLICT (turn_id, user_id) DO UPDATE SET"
            " rating = excluded.rating, created_at = excluded.created_at",
            (user_id, rating, time.time(), team_id, channel_id, message_ts),
        )
        await self._db.commit()
        return cursor.rowcount == 1

    async def list_feedback(self) -> list[Feedback]:
        async with self._db.execute(
            "SELECT f.turn_id, t.message_ts, f.user_id, f.rating FROM feedback f"
            " JOIN turns t ON t.id = f.turn_id ORDER BY f.created_at"
        ) as cursor:
            rows = await cursor.fetchall()
        return [Feedback(row[0], row[1], row[2], row[3]) for row in rows]

    # --- the bot's own assistant definitions (Responses engine) ------------------------------

    async def list_definitions(self) -> list[AssistantDefinition]:
        async with self._db.execute(
            "SELECT id, definition FROM assistants ORDER BY name"
        ) as cursor:
            rows = await cursor.fetchall()
        return [AssistantDefinition.from_json(row[0], row[1]) for row in rows]

    async def get_definition(self, id_or_name: str) -> AssistantDefinition | None:
        rows = await self._db.execute_fetchall(
            "SELECT id, definition FROM assistants WHERE id = ? OR name = ?",
            (id_or_name, id_or_name),
        )
        for row in rows:
            return AssistantDefinition.from_json(row[0], row[1])
        return None

    async def save_definition(self, definition: AssistantDefinition) -> None:
        """Insert or replace by id; a definition's name stays unique."""
        now = time.time()
        await self._db.execute(
            "INSERT INTO assistants (id, name, definition, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
            " definition = excluded.definition, updated_at = excluded.updated_at",
            (definition.id, definition.name, definition.to_json(), now, now),
        )
        await self._db.commit()

    async def delete_definition(self, assistant_id: str) -> bool:
        cursor = await self._db.execute("DELETE FROM assistants WHERE id = ?", (assistant_id,))
        await self._db.commit()
        return cursor.rowcount == 1

    # --- files: Slack file -> backend file, vector stores, what is shared where ----------------

    async def backend_file(self, slack_file_id: str, purpose: str) -> str | None:
        async with self._db.execute(
            "SELECT backend_file_id FROM files WHERE slack_file_id = ? AND purpose = ?",
            (slack_file_id, purpose),
        ) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def save_backend_file(
        self, slack_file_id: str, purpose: str, backend_file_id: str, name: str, size: int
    ) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO files (slack_file_id, purpose, backend_file_id, name, size,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (slack_file_id, purpose, backend_file_id, name, size, time.time()),
        )
        await self._db.commit()

    async def vector_store_for(self, scope: Scope) -> str | None:
        """The vector store the bot made for a thread, or (thread_ts "") a channel's knowledge."""
        async with self._db.execute(
            "SELECT id FROM vector_stores WHERE team_id = ? AND channel_id = ? AND thread_ts = ?",
            (scope.team_id, scope.channel_id, scope.thread_ts),
        ) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def save_vector_store(self, vector_store_id: str, scope: Scope) -> None:
        await self._db.execute(
            "INSERT INTO vector_stores (id, team_id, channel_id, thread_ts, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (vector_store_id, scope.team_id, scope.channel_id, scope.thread_ts, time.time()),
        )
        if scope.thread_ts:
            await self._db.execute(
                "UPDATE conversations SET vector_store_id = ?"
                " WHERE team_id = ? AND channel_id = ? AND thread_ts = ?",
                (vector_store_id, scope.team_id, scope.channel_id, scope.thread_ts),
            )
        await self._db.commit()

    async def forget_vector_store(self, vector_store_id: str) -> None:
        """The store is gone from the backend: forget it and what was indexed in it."""
        await self._db.execute("DELETE FROM vector_stores WHERE id = ?", (vector_store_id,))
        await self._db.execute(
            "UPDATE conversations SET vector_store_id = NULL WHERE vector_store_id = ?",
            (vector_store_id,),
        )
        await self._db.execute(
            "DELETE FROM shared_files WHERE vector_store_id = ?", (vector_store_id,)
        )
        await self._db.commit()

    async def save_shared_file(
        self,
        scope: Scope,
        record: SharedFileRecord,
    ) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO shared_files (team_id, channel_id, thread_ts, backend_file_id,"
            " use, name, vector_store_id, status, error, added_by, added_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                scope.team_id,
                scope.channel_id,
                scope.thread_ts,
                record.backend_file_id,
                record.use,
                record.name,
                record.vector_store_id,
                record.status,
                record.error,
                record.added_by,
                record.added_at,
            ),
        )
        await self._db.commit()

    async def shared_files(self, scope: Scope, use: str | None = None) -> list[SharedFileRecord]:
        """Files shared in a thread (or a channel's knowledge), oldest first."""
        async with self._db.execute(
            "SELECT backend_file_id, use, name, vector_store_id, status, error, added_by,"
            " added_at FROM shared_files WHERE team_id = ? AND channel_id = ? AND thread_ts = ?"
            " AND (? IS NULL OR use = ?) ORDER BY added_at",
            (scope.team_id, scope.channel_id, scope.thread_ts, use, use),
        ) as cursor:
            rows = await cursor.fetchall()
        return [SharedFileRecord(*row) for row in rows]

    async def remove_shared_file(self, scope: Scope, backend_file_id: str) -> bool:
        cursor = await self._db.execute(
            "DELETE FROM shared_files WHERE team_id = ? AND channel_id = ? AND thread_ts = ?"
            " AND backend_file_id = ?",
            (scope.team_id, scope.channel_id, scope.thread_ts, backend_file_id),
        )
        await self._db.commit()
        return cursor.rowcount > 0

    async def expired_vector_stores(self, before: float) -> list[str]:
        """Conversation vector stores created before `before` (channel knowledge is kept)."""
        async with self._db.execute(
            "SELECT id FROM vector_stores WHERE created_at < ? AND thread_ts != '' ORDER BY id",
            (before,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [str(row[0]) for row in rows]

    async def expired_backend_files(self, before: float) -> list[str]:
        """Backend files uploaded before `before` that no channel's knowledge holds."""
        async with self._db.execute(
            "SELECT DISTINCT backend_file_id FROM files WHERE created_at < ? AND backend_file_id"
            " NOT IN (SELECT backend_file_id FROM shared_files WHERE thread_ts = '')"
            " ORDER BY backend_file_id",
            (before,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [str(row[0]) for row in rows]

    async def forget_backend_file(self, backend_file_id: str) -> None:
        await self._db.execute("DELETE FROM files WHERE backend_file_id = ?", (backend_file_id,))
        await self._db.execute(
            "DELETE FROM shared_files WHERE backend_file_id = ?", (backend_file_id,)
        )
        await self._db.commit()
