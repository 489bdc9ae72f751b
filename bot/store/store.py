from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.assistants import AssistantDefinition
from bot.messages import ConversationKey

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
    CREATE TABLE feedback (
        turn_id INTEGER NOT NULL REFERENCES turns (id),
        user_id TEXT NOT NULL,
        rating TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (turn_id, user_id)
    );
    """,
)


@dataclass(frozen=True)
class ConversationRecord:
    key: ConversationKey
    engine: str
    backend_id: str
    assistant_id: str


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


class Store:
    """One aiosqlite connection in WAL mode; every write is one short transaction."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path | str) -> Store:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path))
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA busy_timeout = 5000")
        store = cls(db)
        await store._migrate()
        return store

    async def close(self) -> None:
        await self._db.close()

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._db.executescript(
                f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;"
            )

    # --- conversations --------------------------------------------------------------------

    async def get_conversation(self, key: ConversationKey) -> ConversationRecord | None:
        async with self._db.execute(
            "SELECT engine, backend_id, assistant_id FROM conversations"
            " WHERE team_id = ? AND channel_id = ? AND thread_ts = ?",
            (key.team_id, key.channel_id, key.thread_ts),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return ConversationRecord(key, row[0], row[1], row[2])

    async def save_conversation(self, record: ConversationRecord) -> None:
        now = time.time()
        key = record.key
        await self._db.execute(
            "INSERT INTO conversations (team_id, channel_id, thread_ts, engine, backend_id,"
            " assistant_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (team_id, channel_id, thread_ts) DO UPDATE SET"
            " engine = excluded.engine, backend_id = excluded.backend_id,"
            " assistant_id = excluded.assistant_id, updated_at = excluded.updated_at",
            (
                key.team_id,
                key.channel_id,
                key.thread_ts,
                record.engine,
                record.backend_id,
                record.assistant_id,
                now,
                now,
            ),
        )
        await self._db.commit()

    async def has_conversation(self, key: ConversationKey) -> bool:
        """True once any message of this thread was taken (even before its backend thread exists)."""
        async with self._db.execute(
            "SELECT 1 FROM turns WHERE team_id = ? AND channel_id = ? AND thread_ts = ? LIMIT 1",
            (key.team_id, key.channel_id, key.thread_ts),
        ) as cursor:
            return await cursor.fetchone() is not None

    async def count_conversations(self) -> int:
        async with self._db.execute("SELECT COUNT(*) FROM conversations") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    # --- turns ----------------------------------------------------------------------------

    async def add_turn(
        self, key: ConversationKey, message_ts: str, user_id: str, text: str, is_direct: bool
    ) -> int | None:
        """Record a message the bot takes; None if this message was already taken.

        The unique (team, channel, message ts) is the dedupe: Slack's retries and the second
        delivery of an @mention (`app_mention` and `message`) cannot both win, across restarts too.
        """
        now = time.time()
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO turns (team_id, channel_id, thread_ts, message_ts, user_id,"
            " text, is_direct, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
            (
                key.team_id,
                key.channel_id,
                key.thread_ts,
                message_ts,
                user_id,
                text,
                int(is_direct),
                now,
                now,
            ),
        )
        await self._db.commit()
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
            " input_tokens = COALESCE(?, input_tokens), output_tokens = COALESCE(?, output_tokens),"
            " updated_at = ? WHERE id = ?",
            (status, run_id, error, status, input_tokens, output_tokens, time.time(), turn_id),
        )
        await self._db.commit()

    async def open_turns(self) -> list[PendingTurn]:
        """Turns left queued or running by a previous process, oldest first."""
        async with self._db.execute(
            "SELECT id, team_id, channel_id, thread_ts, message_ts, user_id, text, is_direct,"
            " status FROM turns WHERE status IN ('queued', 'running') ORDER BY id"
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
        async with self._db.execute(
            "SELECT id, definition FROM assistants WHERE id = ? OR name = ?",
            (id_or_name, id_or_name),
        ) as cursor:
            row = await cursor.fetchone()
        return AssistantDefinition.from_json(row[0], row[1]) if row else None

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
