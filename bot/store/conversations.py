"""Threads' conversations and channels' default assistants (tables conversations,
channel_settings)."""

from __future__ import annotations

import functools
import time

import sqlalchemy as sa

from bot.messages import ConversationKey
from bot.store.database import Database, Params, insert, upsert
from bot.store.records import ChannelSetting, ConversationRecord
from bot.store.schema import channel_settings, conversations, turns
from bot.store.turns import REFUSED

_THREAD = sa.and_(
    conversations.c.team_id == sa.bindparam("team_id"),
    conversations.c.channel_id == sa.bindparam("channel_id"),
    conversations.c.thread_ts == sa.bindparam("thread_ts"),
)
_GET = sa.select(
    conversations.c.engine,
    conversations.c.backend_id,
    conversations.c.assistant_id,
    conversations.c.vector_store_id,
).where(_THREAD)
_AFRESH = (
    sa.update(conversations)
    .where(
        conversations.c.team_id == sa.bindparam("team"),
        conversations.c.channel_id == sa.bindparam("channel"),
        conversations.c.thread_ts == sa.bindparam("thread"),
    )
    .values(backend_id="", vector_store_id=None, updated_at=sa.bindparam("now"))
)
_TAKEN = (
    sa.select(turns.c.id)
    .where(
        turns.c.team_id == sa.bindparam("team_id"),
        turns.c.channel_id == sa.bindparam("channel_id"),
        turns.c.thread_ts == sa.bindparam("thread_ts"),
        turns.c.status != REFUSED,  # a message turned away does not make the bot join a thread
    )
    .limit(1)
)
_CHANNEL_SETTING = sa.select(
    channel_settings.c.assistant_id, channel_settings.c.set_by, channel_settings.c.set_at
).where(
    channel_settings.c.team_id == sa.bindparam("team_id"),
    channel_settings.c.channel_id == sa.bindparam("channel_id"),
)
_CHANNEL_SETTINGS = (
    sa.select(
        channel_settings.c.channel_id,
        channel_settings.c.assistant_id,
        channel_settings.c.set_by,
        channel_settings.c.set_at,
    )
    .where(channel_settings.c.team_id == sa.bindparam("team_id"))
    .order_by(channel_settings.c.set_at.desc())
)
_KEY = ("team_id", "channel_id", "thread_ts")


def key_params(key: ConversationKey) -> Params:
    return {"team_id": key.team_id, "channel_id": key.channel_id, "thread_ts": key.thread_ts}


@functools.cache
def _save(dialect: str) -> sa.Insert:
    columns = ("engine", "backend_id", "assistant_id", "vector_store_id", "updated_at")
    return upsert(dialect, conversations, _KEY, columns)


@functools.cache
def _switch(dialect: str) -> sa.Insert:
    statement = insert(dialect, conversations)
    return statement.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={
            # Another engine cannot continue this backend conversation: its first turn makes one.
            "backend_id": sa.case(
                (conversations.c.engine == statement.excluded.engine, conversations.c.backend_id),
                else_="",
            ),
            "engine": statement.excluded.engine,
            "assistant_id": statement.excluded.assistant_id,
            "updated_at": statement.excluded.updated_at,
        },
    )


@functools.cache
def _set_channel(dialect: str) -> sa.Insert:
    return upsert(
        dialect, channel_settings, ("team_id", "channel_id"), ("assistant_id", "set_by", "set_at")
    )


class ConversationTables:
    _db: Database

    async def get_conversation(self, key: ConversationKey) -> ConversationRecord | None:
        row = await self._db.first(_GET, key_params(key))
        return ConversationRecord(key, row[0], row[1], row[2], row[3]) if row else None

    async def save_conversation(self, record: ConversationRecord) -> None:
        now = time.time()
        await self._db.write(
            _save(self._db.dialect),
            key_params(record.key)
            | {
                "engine": record.engine,
                "backend_id": record.backend_id,
                "assistant_id": record.assistant_id,
                "vector_store_id": record.vector_store_id,
                "created_at": now,
                "updated_at": now,
            },
        )

    async def set_thread_assistant(
        self, key: ConversationKey, engine: str, assistant_id: str
    ) -> None:
        """Switch a thread's assistant. A thread without a backend conversation yet gets a row
        with an empty backend id; its first turn creates the conversation and keeps this choice."""
        now = time.time()
        await self._db.write(
            _switch(self._db.dialect),
            key_params(key)
            | {
                "engine": engine,
                "backend_id": "",
                "assistant_id": assistant_id,
                "created_at": now,
                "updated_at": now,
            },
        )

    async def start_afresh(self, key: ConversationKey) -> None:
        """The thread's next turn makes a new backend conversation (with the same assistant)."""
        await self._db.write(
            _AFRESH,
            {
                "team": key.team_id,
                "channel": key.channel_id,
                "thread": key.thread_ts,
                "now": time.time(),
            },
        )

    async def has_conversation(self, key: ConversationKey) -> bool:
        """True once any message of this thread was taken to be answered (even before its
        backend thread exists)."""
        return await self._db.first(_TAKEN, key_params(key)) is not None

    async def get_channel_setting(self, team_id: str, channel_id: str) -> ChannelSetting | None:
        row = await self._db.first(_CHANNEL_SETTING, {"team_id": team_id, "channel_id": channel_id})
        return ChannelSetting(team_id, channel_id, row[0], row[1], row[2]) if row else None

    async def set_channel_setting(
        self, team_id: str, channel_id: str, assistant_id: str, set_by: str
    ) -> None:
        await self._db.write(
            _set_channel(self._db.dialect),
            {
                "team_id": team_id,
                "channel_id": channel_id,
                "assistant_id": assistant_id,
                "set_by": set_by,
                "set_at": time.time(),
            },
        )

    async def list_channel_settings(self, team_id: str) -> list[ChannelSetting]:
        """The workspace's channel and DM defaults, most recently set first."""
        rows = await self._db.all(_CHANNEL_SETTINGS, {"team_id": team_id})
        return [ChannelSetting(team_id, row[0], row[1], row[2], row[3]) for row in rows]
