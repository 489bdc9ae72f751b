"""Files shared in a chat become knowledge: searchable documents, data for code, images.

Like the core, this speaks neither Slack's nor OpenAI's types: a `FileSource` (the chat side)
downloads, the `FileBackend` uploads and indexes, the `Store` remembers what went where.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot import filetypes, metrics
from bot.definitions import AssistantDefinition
from bot.engine.base import EngineError, FileBackend, TurnFiles
from bot.messages import ChannelScope, ConversationKey, SharedFile
from bot.outcomes import FileProblem
from bot.store import ConversationRecord, SharedFileRecord, Store

log = logging.getLogger(__name__)

MB = 1024 * 1024
# An Assistants thread's code_interpreter holds at most 20 files; applied on both engines, so a
# thread behaves the same on either.
CODE_FILES_PER_CONVERSATION = 20


class FileRefused(Exception):
    """A file that cannot be ingested, and why: a reason code and its data (see FileProblem).

    Reasons: the chat's (slack_info_refused, slack_unreachable, no_download_link, link_gone,
    foreign_host, download_refused, sign_in_page, download_failed, over_limit) and the ingest's
    (model_takes_no_images, unreadable_type, unsearchable_type, too_large, not_indexed,
    backend_refused, code_files_full).
    """

    def __init__(self, reason: str, detail: str = "", *, size: int = 0, limit: int = 0) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.size = size
        self.limit = limit

    def problem(self, file: SharedFile) -> FileProblem:
        metrics.file_refused(self.reason)
        return FileProblem(file.name, file.id, self.reason, self.detail, self.size, self.limit)


class FileSource(Protocol):
    async def describe(self, file: SharedFile) -> SharedFile:
        """The file with its name, type, size and link, asking the chat when it shared only an id;
        raises FileRefused when the chat will not say."""
        ...

    async def fetch(self, file: SharedFile, max_bytes: int) -> bytes:
        """The file's content; raises FileRefused (too large, not the chat's own host…)."""
        ...


@dataclass(frozen=True)
class FileLimits:
    max_bytes: int = 50 * MB
    index_timeout: float = 120.0
    retention_days: int = 30


@dataclass
class Ingested:
    """What a message's files became: ids for this turn, and a problem per file not ingested."""

    image_file_ids: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)  # names of files ingested
    problems: list[FileProblem] = field(default_factory=list)


def channel_scope(key: ConversationKey) -> ChannelScope:
    """The channel a conversation takes place in."""
    return ChannelScope(key.team_id, key.channel_id)


def _filed(scope: ChannelScope) -> ConversationKey:
    """How the store files a channel's knowledge: beside its threads, under no thread."""
    return ConversationKey(scope.team_id, scope.channel_id, "")


class FileIngest:
    def __init__(
        self,
        store: Store,
        backend: FileBackend,
        source: FileSource,
        limits: FileLimits,
        vector_stores_per_conversation: int,
    ) -> None:
        self.store = store
        self.backend = backend
        self.source = source
        self.limits = limits
        self.vector_stores_per_conversation = vector_stores_per_conversation  # the engine's limit

    # --- a conversation's files -----------------------------------------------------------

    async def add_to_conversation(
        self,
        conversation: ConversationRecord,
        files: Sequence[SharedFile],
        user_id: str,
        assistant: AssistantDefinition | None,
        reading: Callable[[Sequence[str]], Awaitable[None]] | None = None,
    ) -> Ingested:
        """Upload and index the files shared with one message of a conversation.

        `reading` hears the files' names once they are known (before the slow part)."""
        ingested = Ingested()
        tools = {tool.get("type") for tool in assistant.tools} if assistant else set()
        model = assistant.model if assistant else ""
        described = await self._describe(files, ingested)
        if described and reading is not None:
            await reading([file.name for file in described])
        for file in described:
            try:
                await self._add_one(conversation, file, user_id, tools, model, ingested)
            except FileRefused as exc:
                ingested.problems.append(exc.problem(file))
            except EngineError as exc:
                log.warning("event=file_failed file=%s error=%s", file.id, exc.code)
                ingested.problems.append(FileRefused("backend_refused", exc.code).problem(file))
        return ingested

    async def _describe(self, files: Sequence[SharedFile], ingested: Ingested) -> list[SharedFile]:
        """The files the chat could describe; a problem in `ingested` for each it could not."""
        described = []
        for file in files:
            try:
                described.append(await self.source.describe(file))
            except FileRefused as exc:
                ingested.problems.append(exc.problem(file))
        return described

    async def _add_one(
        self,
        conversation: ConversationRecord,
        file: SharedFile,
        user_id: str,
        tools: set[object],
        model: str,
        ingested: Ingested,
    ) -> None:
        searchable = filetypes.is_searchable(file.name)
        for_code = filetypes.is_data(file.name) and "code_interpreter" in tools
        image = filetypes.is_image(file.name, file.mimetype)
        if image and not filetypes.takes_images(model):
            raise FileRefused("model_takes_no_images", model)
        if not (searchable or for_code or image):
            raise FileRefused("unreadable_type", filetypes.extension(file.name))
        self._check_size(file)
        key = conversation.key
        if image:
            image_id = await self._upload(file, "vision")
            # Recorded like the others, so that forgetting the thread deletes it too.
            await self._record(key, image_id, "image", file.name, None, "completed", None, user_id)
            ingested.image_file_ids.append(image_id)
            ingested.added.append(file.name)
            metrics.file_taken()
            return
        code_full = for_code and await self._code_files_full(key, file.id)
        if code_full and not searchable:
            raise FileRefused("code_files_full", limit=CODE_FILES_PER_CONVERSATION)
        file_id = await self._upload(file, "assistants")
        if code_full:  # still searchable: said, and used that way
            for_code = False
            refused = FileRefused("code_files_full", "searched", limit=CODE_FILES_PER_CONVERSATION)
            ingested.problems.append(refused.problem(file))
        if for_code:
            await self._record(key, file_id, "code", file.name, None, "completed", None, user_id)
        if searchable:
            store_id = await self._conversation_store(conversation)
            try:
                result = await self.backend.index_file(store_id, file_id, self.limits.index_timeout)
            except EngineError as exc:
                if exc.code != "vector_store_not_found":
                    raise
                # The store expired after a long quiet spell: start a new one.
                await self.store.forget_vector_store(store_id)
                store_id = await self._conversation_store(conversation)
                result = await self.backend.index_file(store_id, file_id, self.limits.index_timeout)
            await self._record(
                key, file_id, "search", file.name, store_id, result.status, result.error, user_id
            )
            if result.status != "completed" and not for_code:
                raise FileRefused("not_indexed", result.error)
        ingested.added.append(file.name)
        metrics.file_taken()

    async def _code_files_full(self, key: ConversationKey, slack_file_id: str) -> bool:
        """The conversation's code tool holds as many files as it can (this one not among them)."""
        held = {f.backend_file_id for f in await self.store.shared_files(key, "code")}
        known = await self.store.backend_file(slack_file_id, "assistants")
        return len(held) >= CODE_FILES_PER_CONVERSATION and known not in held

    async def turn_files(
        self, conversation: ConversationRecord, image_file_ids: Sequence[str] = ()
    ) -> TurnFiles:
        """What a turn of this conversation may use: its own and its channel's knowledge."""
        known = await self.store.turn_knowledge(conversation.key)
        stores = [s for s in (known.vector_store_id, known.channel_vector_store_id) if s]
        return TurnFiles(
            vector_store_ids=tuple(stores[: self.vector_stores_per_conversation]),
            code_file_ids=tuple(dict.fromkeys(known.code_file_ids)),
            image_file_ids=tuple(image_file_ids),
        )

    async def _conversation_store(self, conversation: ConversationRecord) -> str:
        existing = await self.store.vector_store_for(conversation.key)
        if existing:
            return existing
        store_id = await self.backend.create_vector_store(
            f"Slack thread {conversation.key.channel_id}/{conversation.key.thread_ts}",
            self.limits.retention_days,
        )
        await self.store.save_vector_store(store_id, conversation.key)
        if self.vector_stores_per_conversation < 2:
            # The thread can search one store only: it starts with the channel's knowledge.
            channel = _filed(channel_scope(conversation.key))
            for known in await self.store.shared_files(channel, "search"):
                if known.status == "completed":
                    await self.backend.index_file(
                        store_id, known.backend_file_id, self.limits.index_timeout
                    )
        return store_id

    # --- a channel's knowledge --------------------------------------------------------------

    async def add_to_channel(
        self, channel: ChannelScope, files: Sequence[SharedFile], user_id: str
    ) -> Ingested:
        ingested = Ingested()
        scope = _filed(channel)
        for file in await self._describe(files, ingested):
            try:
                if not filetypes.is_searchable(file.name):
                    raise FileRefused("unsearchable_type", filetypes.extension(file.name))
                self._check_size(file)
                file_id = await self._upload(file, "assistants")
                store_id = await self._channel_store(scope)
                result = await self.backend.index_file(store_id, file_id, self.limits.index_timeout)
                if result.status != "completed":
                    await self.backend.remove_from_vector_store(store_id, file_id)
                    raise FileRefused("not_indexed", result.error)
                await self._record(
                    scope, file_id, "search", file.name, store_id, "completed", None, user_id
                )
                ingested.added.append(file.name)
                metrics.file_taken()
            except FileRefused as exc:
                ingested.problems.append(exc.problem(file))
            except EngineError as exc:
                log.warning("event=file_failed file=%s error=%s", file.id, exc.code)
                ingested.problems.append(FileRefused("backend_refused", exc.code).problem(file))
        return ingested

    async def channel_files(self, channel: ChannelScope) -> list[SharedFileRecord]:
        return await self.store.shared_files(_filed(channel), "search")

    async def remove_from_channel(self, channel: ChannelScope, file_id: str) -> bool:
        scope = _filed(channel)
        store_id = await self.store.vector_store_for(scope)
        if store_id is None or not await self.store.remove_shared_file(scope, file_id):
            return False
        await self.backend.remove_from_vector_store(store_id, file_id)
        return True

    async def _channel_store(self, scope: ConversationKey) -> str:
        existing = await self.store.vector_store_for(scope)
        if existing:
            return existing
        # Kept until people remove its files: a knowledge base should not expire unnoticed.
        store_id = await self.backend.create_vector_store(
            f"Slack channel {scope.channel_id} knowledge", None
        )
        await self.store.save_vector_store(store_id, scope)
        return store_id

    # --- shared steps -----------------------------------------------------------------------

    def _check_size(self, file: SharedFile) -> None:
        if file.size > self.limits.max_bytes:
            raise FileRefused("too_large", size=file.size, limit=self.limits.max_bytes)

    async def _upload(self, file: SharedFile, purpose: str) -> str:
        """The backend file for a chat file: uploaded once, reused when shared again."""
        known = await self.store.backend_file(file.id, purpose)
        if known:
            return known
        content = await self.source.fetch(file, self.limits.max_bytes)
        file_id = await self.backend.upload_file(file.name, content, purpose)
        await self.store.save_backend_file(file.id, purpose, file_id, file.name, len(content))
        log.info(
            "event=file_uploaded file=%s backend_file=%s bytes=%d", file.id, file_id, len(content)
        )
        return file_id

    async def _record(
        self,
        scope: ConversationKey,
        file_id: str,
        use: str,
        name: str,
        store_id: str | None,
        status: str,
        error: str | None,
        user_id: str,
    ) -> None:
        record = SharedFileRecord(file_id, use, name, store_id, status, error, user_id, time.time())
        await self.store.save_shared_file(scope, record)


async def clean_up(
    store: Store, backend: FileBackend, retention_days: int, now: float | None = None
) -> tuple[int, int]:
    """Delete the conversation vector stores and files the bot made more than N days ago.

    Channel knowledge stays until people remove it. Returns (vector stores, files) deleted.
    """
    before = (time.time() if now is None else now) - retention_days * 86400
    stores = await store.expired_vector_stores(before)
    for store_id in stores:
        await backend.delete_vector_store(store_id)
        await store.forget_vector_store(store_id)
    files = await store.expired_backend_files(before)
    for file_id in files:
        await backend.delete_file(file_id)
        await store.forget_backend_file(file_id)
    log.info("event=cleanup vector_stores=%d files=%d", len(stores), len(files))
    return len(stores), len(files)
