"""Forgetting a conversation: what the backend holds for a thread, and its stored texts.

The backend conversation (on the Responses engine its items and stored responses too, which
deleting a conversation leaves behind), the thread's vector store and the files the bot uploaded
for it (unless another thread or a channel's knowledge uses them) are deleted; the thread's
turns keep their figures (tokens, times) without their texts, and its next message starts a new
conversation with the same assistant.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bot.engine.base import ConversationEngine, FileBackend
from bot.governance.audit import CONVERSATION_FORGOTTEN, AuditLog
from bot.messages import ConversationKey
from bot.store import Store
from bot.store.turns import OPEN_STATUSES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Forgotten:
    conversation: bool  # a backend conversation was deleted
    vector_store: bool
    files: int
    turns: int  # turns whose stored text was erased


class Forgetting:
    def __init__(
        self,
        store: Store,
        engine: ConversationEngine,
        files: FileBackend,
        audit: AuditLog,
        admins: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.engine = engine
        self.files = files
        self.audit = audit
        self.admins = admins

    async def has_anything(self, key: ConversationKey) -> bool:
        return await self.store.has_conversation(key)

    async def may_forget(self, key: ConversationKey, user_id: str) -> bool:
        """The thread's participants (who wrote the messages the bot took) and the admins."""
        return user_id in self.admins or user_id in await self.store.thread_participants(key)

    async def busy(self, key: ConversationKey) -> bool:
        """A message of the thread is still waiting or being answered."""
        return any(status in OPEN_STATUSES for _, status in await self.store.turn_statuses(key))

    async def forget(self, key: ConversationKey, actor: str) -> Forgotten:
        """Delete it all (EngineError if the backend refuses; what was deleted stays deleted,
        and forgetting again finishes the rest)."""
        record = await self.store.get_conversation(key)
        run_ids = await self.store.thread_run_ids(key)
        deleted_conversation = False
        if record is not None and record.backend_id and record.engine == self.engine.name:
            await self.engine.delete_conversation(record.backend_id, run_ids)
            deleted_conversation = True
        files = await self.store.files_only_in(key)  # before the store's rows go with it
        vector_store = await self.store.vector_store_for(key)
        if vector_store:
            await self.files.delete_vector_store(vector_store)
            await self.store.forget_vector_store(vector_store)
        for file_id in files:
            await self.files.delete_file(file_id)
            await self.store.forget_backend_file(file_id)
        await self.store.start_afresh(key)
        erased = await self.store.erase_thread_texts(key)
        forgotten = Forgotten(deleted_conversation, bool(vector_store), len(files), erased)
        await self.audit.record(
            CONVERSATION_FORGOTTEN,
            actor,
            key.team_id,
            channel=key.channel_id,
            thread=key.thread_ts,
            files=len(files),
        )
        log.info(
            "event=conversation_forgotten channel=%s thread=%s by=%s files=%d vector_store=%s",
            key.channel_id,
            key.thread_ts,
            actor,
            len(files),
            bool(vector_store),
        )
        return forgotten


async def erase_old_texts(store: Store, retention_days: int, now: float | None = None) -> int:
    """TEXT_RETENTION_DAYS: erase the stored texts of messages taken more than N days ago (their
    figures stay); how many turns."""
    before = (time.time() if now is None else now) - retention_days * 86400
    erased = await store.erase_texts_before(before)
    log.info("event=texts_erased turns=%d retention_days=%d", erased, retention_days)
    return erased
