"""Files: which Slack file became which backend file, the vector stores the bot made, and what is
shared where (tables files, vector_stores, shared_files)."""

from __future__ import annotations

import functools
import time

import sqlalchemy as sa

from bot.store.database import Database, Params, upsert
from bot.store.records import Scope, SharedFileRecord, TurnKnowledge
from bot.store.schema import conversations, files, shared_files, vector_stores

_BACKEND_FILE = sa.select(files.c.backend_file_id).where(
    files.c.slack_file_id == sa.bindparam("slack_file"), files.c.purpose == sa.bindparam("purpose_")
)
_VECTOR_STORE = sa.select(vector_stores.c.id).where(
    vector_stores.c.team_id == sa.bindparam("team_id"),
    vector_stores.c.channel_id == sa.bindparam("channel_id"),
    vector_stores.c.thread_ts == sa.bindparam("thread_ts"),
)
_ADD_VECTOR_STORE = sa.insert(vector_stores)
_THREAD_SEARCHES = (
    sa.update(conversations)
    .where(
        conversations.c.team_id == sa.bindparam("team"),
        conversations.c.channel_id == sa.bindparam("channel"),
        conversations.c.thread_ts == sa.bindparam("thread"),
    )
    .values(vector_store_id=sa.bindparam("store"))
)
_FORGET_VECTOR_STORE = (
    sa.delete(vector_stores).where(vector_stores.c.id == sa.bindparam("store")),
    sa.update(conversations)
    .where(conversations.c.vector_store_id == sa.bindparam("store"))
    .values(vector_store_id=None),
    sa.delete(shared_files).where(shared_files.c.vector_store_id == sa.bindparam("store")),
)
_FORGET_BACKEND_FILE = (
    sa.delete(files).where(files.c.backend_file_id == sa.bindparam("file")),
    sa.delete(shared_files).where(shared_files.c.backend_file_id == sa.bindparam("file")),
)
_IN_SCOPE = sa.and_(
    shared_files.c.team_id == sa.bindparam("team_id"),
    shared_files.c.channel_id == sa.bindparam("channel_id"),
    shared_files.c.thread_ts == sa.bindparam("thread_ts"),
)
_SHARED = (
    sa.select(
        shared_files.c.backend_file_id,
        shared_files.c.use,
        shared_files.c.name,
        shared_files.c.vector_store_id,
        shared_files.c.status,
        shared_files.c.error,
        shared_files.c.added_by,
        shared_files.c.added_at,
    )
    .where(_IN_SCOPE)
    .order_by(shared_files.c.added_at)
)
_SHARED_FOR_USE = _SHARED.where(shared_files.c.use == sa.bindparam("wanted_use"))
# What a thread's turn may use, in one trip: its vector store, its channel's ("thread" ""), and
# the files shared in it for code (oldest first).
_KNOWLEDGE = sa.union_all(
    sa.select(
        vector_stores.c.thread_ts.label("scope"), vector_stores.c.id, sa.literal(0.0).label("at")
    ).where(
        vector_stores.c.team_id == sa.bindparam("team_id"),
        vector_stores.c.channel_id == sa.bindparam("channel_id"),
        vector_stores.c.thread_ts.in_([sa.bindparam("thread_ts"), ""]),
    ),
    sa.select(
        sa.literal("code").label("scope"), shared_files.c.backend_file_id, shared_files.c.added_at
    ).where(_IN_SCOPE, shared_files.c.use == "code"),
).order_by(sa.text("at"))
_UNSHARE = sa.delete(shared_files).where(
    _IN_SCOPE, shared_files.c.backend_file_id == sa.bindparam("file")
)
_elsewhere = sa.alias(shared_files, "elsewhere")
_ONLY_HERE = (
    sa.select(shared_files.c.backend_file_id)
    .distinct()
    .where(
        _IN_SCOPE,
        ~sa.exists().where(
            _elsewhere.c.backend_file_id == shared_files.c.backend_file_id,
            sa.or_(
                _elsewhere.c.team_id != shared_files.c.team_id,
                _elsewhere.c.channel_id != shared_files.c.channel_id,
                _elsewhere.c.thread_ts != shared_files.c.thread_ts,
            ),
        ),
    )
    .order_by(shared_files.c.backend_file_id)
)
_EXPIRED_VECTOR_STORES = (
    sa.select(vector_stores.c.id)
    .where(vector_stores.c.created_at < sa.bindparam("before"), vector_stores.c.thread_ts != "")
    .order_by(vector_stores.c.id)
)
_EXPIRED_BACKEND_FILES = (
    sa.select(files.c.backend_file_id)
    .distinct()
    .where(
        files.c.created_at < sa.bindparam("before"),
        files.c.backend_file_id.not_in(
            sa.select(shared_files.c.backend_file_id).where(shared_files.c.thread_ts == "")
        ),
    )
    .order_by(files.c.backend_file_id)
)


@functools.cache
def _save_backend_file(dialect: str) -> sa.Insert:
    return upsert(
        dialect,
        files,
        ("slack_file_id", "purpose"),
        ("backend_file_id", "name", "size", "created_at"),
    )


@functools.cache
def _save_shared_file(dialect: str) -> sa.Insert:
    return upsert(
        dialect,
        shared_files,
        ("team_id", "channel_id", "thread_ts", "backend_file_id", "use"),
        ("name", "vector_store_id", "status", "error", "added_by", "added_at"),
    )


def scope_params(scope: Scope) -> Params:
    return {"team_id": scope.team_id, "channel_id": scope.channel_id, "thread_ts": scope.thread_ts}


class FileTables:
    _db: Database

    async def backend_file(self, slack_file_id: str, purpose: str) -> str | None:
        row = await self._db.first(
            _BACKEND_FILE, {"slack_file": slack_file_id, "purpose_": purpose}
        )
        return str(row[0]) if row else None

    async def save_backend_file(
        self, slack_file_id: str, purpose: str, backend_file_id: str, name: str, size: int
    ) -> None:
        await self._db.write(
            _save_backend_file(self._db.dialect),
            {
                "slack_file_id": slack_file_id,
                "purpose": purpose,
                "backend_file_id": backend_file_id,
                "name": name,
                "size": size,
                "created_at": time.time(),
            },
        )

    async def vector_store_for(self, scope: Scope) -> str | None:
        """The vector store the bot made for a thread, or (thread_ts "") a channel's knowledge."""
        row = await self._db.first(_VECTOR_STORE, scope_params(scope))
        return str(row[0]) if row else None

    async def turn_knowledge(self, key: Scope) -> TurnKnowledge:
        """The thread's vector store, its channel's, and the files shared in it for code."""
        own = channel = None
        code: list[str] = []
        for scope, found, _ in await self._db.all(_KNOWLEDGE, scope_params(key)):
            if scope == "code":
                code.append(str(found))
            elif scope:
                own = str(found)
            else:
                channel = str(found)
        return TurnKnowledge(own, channel, tuple(code))

    async def save_vector_store(self, vector_store_id: str, scope: Scope) -> None:
        def save(connection: sa.Connection) -> None:
            connection.execute(
                _ADD_VECTOR_STORE,
                scope_params(scope) | {"id": vector_store_id, "created_at": time.time()},
            )
            if scope.thread_ts:
                connection.execute(
                    _THREAD_SEARCHES,
                    {
                        "store": vector_store_id,
                        "team": scope.team_id,
                        "channel": scope.channel_id,
                        "thread": scope.thread_ts,
                    },
                )

        await self._db.transaction(save)

    async def forget_vector_store(self, vector_store_id: str) -> None:
        """The store is gone from the backend: forget it and what was indexed in it."""
        await self._db.transaction(
            functools.partial(_execute_each, _FORGET_VECTOR_STORE, {"store": vector_store_id})
        )

    async def save_shared_file(self, scope: Scope, record: SharedFileRecord) -> None:
        await self._db.write(
            _save_shared_file(self._db.dialect),
            scope_params(scope)
            | {
                "backend_file_id": record.backend_file_id,
                "use": record.use,
                "name": record.name,
                "vector_store_id": record.vector_store_id,
                "status": record.status,
                "error": record.error,
                "added_by": record.added_by,
                "added_at": record.added_at,
            },
        )

    async def shared_files(self, scope: Scope, use: str | None = None) -> list[SharedFileRecord]:
        """Files shared in a thread (or a channel's knowledge), oldest first."""
        if use is None:
            rows = await self._db.all(_SHARED, scope_params(scope))
        else:
            rows = await self._db.all(_SHARED_FOR_USE, scope_params(scope) | {"wanted_use": use})
        return [SharedFileRecord(*row) for row in rows]

    async def files_only_in(self, scope: Scope) -> list[str]:
        """Backend files shared in this thread (or channel's knowledge) and nowhere else."""
        return [str(row[0]) for row in await self._db.all(_ONLY_HERE, scope_params(scope))]

    async def remove_shared_file(self, scope: Scope, backend_file_id: str) -> bool:
        return await self._db.write(_UNSHARE, scope_params(scope) | {"file": backend_file_id}) > 0

    async def expired_vector_stores(self, before: float) -> list[str]:
        """Conversation vector stores created before `before` (channel knowledge is kept)."""
        return [
            str(row[0]) for row in await self._db.all(_EXPIRED_VECTOR_STORES, {"before": before})
        ]

    async def expired_backend_files(self, before: float) -> list[str]:
        """Backend files uploaded before `before` that no channel's knowledge holds."""
        return [
            str(row[0]) for row in await self._db.all(_EXPIRED_BACKEND_FILES, {"before": before})
        ]

    async def forget_backend_file(self, backend_file_id: str) -> None:
        await self._db.transaction(
            functools.partial(_execute_each, _FORGET_BACKEND_FILE, {"file": backend_file_id})
        )


def _execute_each(
    statements: tuple[sa.Executable, ...], params: Params, connection: sa.Connection
) -> None:
    for statement in statements:
        connection.execute(statement, params)
