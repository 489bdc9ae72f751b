"""The Assistants API engine (threads, runs, streaming) behind the engine interface.

OpenAI retired this API on 2026-08-26; servers that still speak it (self-hosted or compatible
gateways) work with this engine. The Responses engine serves OpenAI itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import openai
from openai import AsyncOpenAI

from bot.assistants import AssistantDefinition
from bot.engine.base import (
    NO_FILES,
    Citation,
    Completed,
    EngineError,
    EngineEvent,
    Failed,
    GeneratedFile,
    Incomplete,
    TextDelta,
    ToolCall,
    ToolCallsRequired,
    ToolRunner,
    TurnFiles,
    Usage,
)
from bot.engine.errors import engine_error
from bot.engine.files import OpenAIFiles, StreamCleaner, clean_answer

log = logging.getLogger(__name__)
ACTIVE_RUN = re.compile(r"\brun_\w+")


async def serves_assistants_api(client: AsyncOpenAI) -> bool:
    """Whether the server speaks the Assistants API (OpenAI itself answers 404 since 2026-08-26)."""
    try:
        await client.beta.assistants.list(limit=1)
    except openai.NotFoundError:
        return False
    except openai.OpenAIError as exc:
        raise engine_error(exc) from exc
    return True


class AssistantsEngine(OpenAIFiles):
    name = "assistants"
    vector_stores_per_conversation = 1  # an Assistants thread holds at most one vector store

    def __init__(self, client: AsyncOpenAI) -> None:
        self.client = client
        self._thread_stores: dict[str, str] = {}  # thread -> vector store attached to it
        self._thread_code_files: dict[str, set[str]] = {}  # thread -> files code can read
        self._filenames: dict[str, str] = {}

    async def close(self) -> None:
        await self.client.close()

    async def get_assistant(self, assistant_id: str) -> AssistantDefinition | None:
        try:
            assistant = await self.client.beta.assistants.retrieve(assistant_id)
        except openai.NotFoundError as exc:
            if "Invalid URL" in exc.message:
                raise EngineError("api_not_served", exc.message) from exc
            return None
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
        return _definition(assistant)

    async def verify(self, assistant: AssistantDefinition) -> None:
        """Nothing more to do: the backend itself returned this assistant."""

    async def list_assistants(self) -> list[AssistantDefinition]:
        try:
            # The SDK's async iteration follows the pages (has_more, after=last id).
            return [_definition(a) async for a in self.client.beta.assistants.list(limit=100)]
        except openai.NotFoundError as exc:
            if "Invalid URL" in exc.message:
                raise EngineError("api_not_served", exc.message) from exc
            raise engine_error(exc) from exc
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc

    async def create_assistant(self, definition: AssistantDefinition) -> AssistantDefinition:
        try:
            created = await self.client.beta.assistants.create(**_fields(definition))
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
        return _definition(created)

    async def update_assistant(
        self, assistant_id: str, definition: AssistantDefinition
    ) -> AssistantDefinition:
        try:
            updated = await self.client.beta.assistants.update(assistant_id, **_fields(definition))
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
        return _definition(updated)

    async def delete_assistant(self, assistant_id: str) -> bool:
        try:
            deleted = await self.client.beta.assistants.delete(assistant_id)
        except openai.NotFoundError:
            return False
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
        return bool(deleted.deleted)

    async def create_conversation(self) -> str:
        try:
            thread = await self.client.beta.threads.create()
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
        return thread.id

    async def run(
        self,
        conversation_id: str,
        assistant_id: str,
        text: str,
        run_tools: ToolRunner,
        files: TurnFiles = NO_FILES,
    ) -> AsyncIterator[EngineEvent]:
        answer = _Answer()
        finished = False
        try:
            extra = await self._prepare_files(conversation_id, assistant_id, files)
            # A thread keeps what its messages attached: attach each data file once.
            attached = self._thread_code_files.setdefault(conversation_id, set())
            new_code_files = tuple(f for f in files.code_file_ids if f not in attached)
            message = _user_message(text, files.image_file_ids, new_code_files)
            attached.update(new_code_files)
            stream: Any = await self._start_run(conversation_id, assistant_id, message, extra)
            while stream is not None:
                next_stream = None
                async with stream:
                    async for event in stream:
                        outcome = answer.take(event)
                        if isinstance(outcome, TextDelta):
                            yield outcome
                        elif isinstance(outcome, ToolCallsRequired):
                            yield outcome
                            outputs = await run_tools(outcome.calls)
                            next_stream = await self.client.beta.threads.runs.submit_tool_outputs(
                                answer.run_id,
                                thread_id=conversation_id,
                                tool_outputs=[
                                    {"tool_call_id": o.call_id, "output": o.output} for o in outputs
                                ],
                                stream=True,
                            )
                            break
                        elif outcome is not None:
                            finished = True
                            if isinstance(outcome, Completed):
                                outcome = await self._with_files(outcome, answer)
                            yield outcome
                            return
                stream = next_stream
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
        finally:
            if not finished and answer.run_id:
                # Timed out, cut off or cancelled: free the thread for the conversation's next turn.
                await asyncio.shield(self._cancel_run(conversation_id, answer.run_id))
        yield Failed("stream_ended", "the stream ended before the run finished", answer.run_id)

    async def _prepare_files(
        self, thread_id: str, assistant_id: str, files: TurnFiles
    ) -> dict[str, Any]:
        """Attach the turn's vector store to the thread; the run's extra fields (tools)."""
        if not files.vector_store_ids:
            return {}
        store = files.vector_store_ids[0]
        if self._thread_stores.get(thread_id) != store:
            resources: dict[str, Any] = {"file_search": {"vector_store_ids": [store]}}
            if files.code_file_ids:  # keep what code_interpreter reads (at most 20 files)
                resources["code_interpreter"] = {"file_ids": list(files.code_file_ids[-20:])}
            await self.client.beta.threads.update(thread_id, tool_resources=resources)  # type: ignore[arg-type]
            self._thread_stores[thread_id] = store
        assistant = await self.client.beta.assistants.retrieve(assistant_id)
        tools = [tool.model_dump(exclude_none=True) for tool in assistant.tools]
        if any(tool["type"] == "file_search" for tool in tools):
            return {}
        # Files shared in Slack are searched even by an assistant set up without file_search.
        return {"tools": [*tools, {"type": "file_search"}]}

    async def _with_files(self, completed: Completed, answer: _Answer) -> Completed:
        """The Completed event with cited files named and generated files fetched."""
        citations = [
            dataclasses.replace(c, filename=await self._filename(c.file_id))
            for c in answer.citations
        ]
        fetched: list[GeneratedFile] = []
        missing: list[str] = []
        for file_id in dict.fromkeys(answer.output_file_ids):
            output = await self._fetch_output(file_id, file_id)
            if output is None:
                missing.append(file_id)
            else:
                fetched.append(output)
        text = completed.text
        if missing:
            text += f"\n\n_(I could not fetch {len(missing)} file(s) the assistant made.)_"
        return dataclasses.replace(
            completed, text=text, citations=tuple(citations), files=tuple(fetched)
        )

    async def _filename(self, file_id: str) -> str:
        if file_id not in self._filenames:
            try:
                self._filenames[file_id] = (await self.client.files.retrieve(file_id)).filename
            except openai.OpenAIError:
                return file_id
        return self._filenames[file_id]

    async def _start_run(
        self, thread_id: str, assistant_id: str, message: dict[str, Any], extra: dict[str, Any]
    ) -> Any:
        for attempt in (1, 2):
            try:
                return await self.client.beta.threads.runs.create(
                    thread_id,
                    assistant_id=assistant_id,
                    additional_messages=[message],  # type: ignore[list-item]
                    stream=True,
                    **extra,
                )
            except openai.BadRequestError as exc:
                # A run left active by an earlier process (a crash, a lost stream) locks the
                # thread: cancel it once and try again.
                stale = ACTIVE_RUN.search(exc.message)
                if attempt == 2 or stale is None:
                    raise
                await self._cancel_run(thread_id, stale.group(0))
        raise AssertionError("unreachable")

    async def _cancel_run(self, thread_id: str, run_id: str) -> None:
        try:
            async with asyncio.timeout(10):
                run = await self.client.beta.threads.runs.cancel(run_id, thread_id=thread_id)
                while run.status in ("queued", "in_progress", "requires_action", "cancelling"):
                    await asyncio.sleep(0.2)
                    run = await self.client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        except (openai.OpenAIError, TimeoutError) as exc:
            log.warning("event=cancel_run_failed thread=%s run=%s error=%s", thread_id, run_id, exc)


def _user_message(
    text: str, image_file_ids: tuple[str, ...], code_file_ids: tuple[str, ...]
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "content": text}
    if image_file_ids:
        message["content"] = [
            {"type": "text", "text": text},
            *({"type": "image_file", "image_file": {"file_id": f}} for f in image_file_ids),
        ]
    if code_file_ids:
        message["attachments"] = [
            {"file_id": f, "tools": [{"type": "code_interpreter"}]} for f in code_file_ids
        ]
    return message


def _definition(assistant: Any) -> AssistantDefinition:
    return AssistantDefinition(
        id=assistant.id,
        name=assistant.name or assistant.id,
        model=assistant.model,
        instructions=assistant.instructions or "",
        description=assistant.description or "",
        tools=tuple(tool.model_dump(exclude_none=True) for tool in assistant.tools),
        tool_resources=(
            assistant.tool_resources.model_dump(exclude_none=True)
            if assistant.tool_resources
            else {}
        ),
        temperature=assistant.temperature,
        top_p=assistant.top_p,
        metadata=dict(assistant.metadata or {}),
    )


def _fields(definition: AssistantDefinition) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": definition.name,
        "model": definition.model,
        "instructions": definition.instructions,
        "description": definition.description,
        "tools": list(definition.tools),
        "metadata": definition.metadata,
    }
    if definition.tool_resources:
        fields["tool_resources"] = definition.tool_resources
    if definition.temperature is not None:
        fields["temperature"] = definition.temperature
    if definition.top_p is not None:
        fields["top_p"] = definition.top_p
    return fields


class _Answer:
    """Folds one run's stream events into text and a final outcome."""

    def __init__(self) -> None:
        self.run_id: str = ""
        self.parts: list[str] = []  # completed messages' texts
        self.current: list[str] = []  # deltas of the message being written
        self.citations: list[Citation] = []  # filenames are filled in by the engine
        self.output_file_ids: list[str] = []  # images and files code_interpreter wrote
        self.cleaner = StreamCleaner()  # what is streamed never shows markers or sandbox links

    @property
    def text(self) -> str:
        pending = ["".join(self.current)] if self.current else []
        return "\n\n".join([*self.parts, *pending])

    def take(self, event: Any) -> EngineEvent | None:
        kind = event.event
        data = event.data
        if kind.startswith("thread.run.") and not kind.startswith("thread.run.step"):
            self.run_id = data.id
        if kind == "thread.message.delta":
            delta = self.cleaner.feed(
                "".join(
                    str(part.text.value or "")
                    for part in data.delta.content or ()
                    if part.type == "text" and part.text is not None
                )
            )
            if delta:
                self.current.append(delta)
                return TextDelta(delta)
            return None
        if kind == "thread.message.completed":
            self.current = []
            self.cleaner = StreamCleaner()
            self._take_message(data.content)
            return None
        if kind == "thread.run.requires_action":
            calls = data.required_action.submit_tool_outputs.tool_calls
            return ToolCallsRequired(
                tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in calls)
            )
        if kind == "thread.run.completed":
            usage = data.usage
            return Completed(
                self.text,
                data.id,
                Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            )
        if kind == "thread.run.failed":
            error = data.last_error
            code, message = (error.code, error.message) if error else ("server_error", "")
            return Failed(code, message, data.id)
        if kind == "thread.run.incomplete":
            reason = data.incomplete_details.reason if data.incomplete_details else "unknown"
            return Incomplete(reason or "unknown", self.text, data.id)
        if kind == "thread.run.expired":
            return Failed("expired", "the run expired", data.id)
        if kind == "thread.run.cancelled":
            return Failed("cancelled", "the run was cancelled", data.id)
        if kind == "error":
            code = getattr(data, "code", None) or "server_error"
            return Failed(code, getattr(data, "message", None) or "", self.run_id)
        return None

    def _take_message(self, content: Any) -> None:
        texts: list[str] = []
        for part in content:
            if part.type == "image_file":
                self.output_file_ids.append(part.image_file.file_id)
            if part.type != "text":
                continue
            removals: list[tuple[int, int]] = []
            cited: list[tuple[int, str, str]] = []
            for note in part.text.annotations:
                if note.type == "file_citation":
                    removals.append((note.start_index, note.end_index))
                    cited.append((note.start_index, note.file_citation.file_id, ""))
                elif note.type == "file_path":
                    self.output_file_ids.append(note.file_path.file_id)
            offset = len(self.text) + (2 if self.parts else 0) + len("".join(texts))
            text, citations = clean_answer(part.text.value, removals, cited, offset)
            texts.append(text)
            self.citations.extend(citations)
        if "".join(texts):
            self.parts.append("".join(texts))


__all__ = ["AssistantsEngine", "EngineError"]
