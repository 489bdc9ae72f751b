"""Files and vector stores: the OpenAI endpoints both engines share.

Both the Assistants and the Responses engine upload files and keep vector stores through the same
`/files` and `/vector_stores` endpoints, so they share this file backend.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
from openai import AsyncOpenAI

from bot.engine.base import EngineError, IndexResult
from bot.engine.errors import engine_error


class OpenAIFiles:
    """The file backend on OpenAI's `/files` and `/vector_stores`."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self.client = client

    async def upload_file(self, name: str, content: bytes, purpose: str) -> str:
        try:
            uploaded = await self.client.files.create(
                file=(name, content),
                purpose=purpose,  # type: ignore[arg-type]
            )
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
        return uploaded.id

    async def create_vector_store(self, name: str, expires_after_days: int | None) -> str:
        fields: dict[str, Any] = {"name": name}
        if expires_after_days:
            fields["expires_after"] = {"anchor": "last_active_at", "days": expires_after_days}
        try:
            store = await self.client.vector_stores.create(**fields)
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
        return store.id

    async def index_file(self, vector_store_id: str, file_id: str, timeout: float) -> IndexResult:
        try:
            entry = await self.client.vector_stores.files.create(vector_store_id, file_id=file_id)
            delay = 0.05
            async with asyncio.timeout(timeout):
                while entry.status == "in_progress":
                    await asyncio.sleep(delay)
                    delay = min(delay * 1.5, 2.0)
                    entry = await self.client.vector_stores.files.retrieve(
                        file_id, vector_store_id=vector_store_id
                    )
        except TimeoutError:
            return IndexResult("timeout", "timeout")
        except openai.NotFoundError as exc:
            raise EngineError("vector_store_not_found", exc.message) from exc
        except openai.BadRequestError as exc:
            return IndexResult("failed", exc.code or "invalid_request")
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
        if entry.status == "completed":
            return IndexResult("completed")
        error = entry.last_error.code if entry.last_error else entry.status
        return IndexResult("failed", error)

    async def remove_from_vector_store(self, vector_store_id: str, file_id: str) -> None:
        try:
            await self.client.vector_stores.files.delete(file_id, vector_store_id=vector_store_id)
        except openai.NotFoundError:
            return
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc

    async def delete_vector_store(self, vector_store_id: str) -> None:
        try:
            await self.client.vector_stores.delete(vector_store_id)
        except openai.NotFoundError:
            return
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc

    async def delete_file(self, file_id: str) -> None:
        try:
            await self.client.files.delete(file_id)
        except openai.NotFoundError:
            return
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
