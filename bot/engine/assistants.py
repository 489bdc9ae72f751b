"""The Assistants API engine (threads, runs, streaming) behind the engine interface.

OpenAI retired this API on 2026-08-26; servers that still speak it (self-hosted or compatible
gateways) work with this engine. The Responses engine serves OpenAI itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import openai
from openai import AsyncOpenAI

from bot.assistants import AssistantDefinition
from bot.engine.base import (
    Completed,
    EngineError,
    EngineEvent,
    Failed,
    Incomplete,
    TextDelta,
    ToolCall,
    ToolCallsRequired,
    ToolRunner,
    Usage,
)
from bot.engine.errors import engine_error

log = logging.getLogger(__name__)
ACTIVE_RUN = re.compile(r"\brun_\w+")


class AssistantsEngine:
    name = "assistants"

    def __init__(self, client: AsyncOpenAI) -> None:
        self.client = client

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
        self, conversation_id: str, assistant_id: str, text: str, run_tools: ToolRunner
    ) -> AsyncIterator[EngineEvent]:
        answer = _Answer()
        finished = False
        try:
            stream: Any = await self._start_run(conversation_id, assistant_id, text)
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

    async def _start_run(self, thread_id: str, assistant_id: str, text: str) -> Any:
        for attempt in (1, 2):
            try:
                return await self.client.beta.threads.runs.create(
                    thread_id,
                    assistant_id=assistant_id,
                    additional_messages=[{"role": "user", "content": text}],
                    stream=True,
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
            delta = "".join(
                part.text.value or ""
                for part in data.delta.content or ()
                if part.type == "text" and part.text is not None
            )
            if delta:
                self.current.append(delta)
                return TextDelta(delta)
            return None
        if kind == "thread.message.completed":
            self.current = []
            text = "".join(part.text.value for part in data.content if part.type == "text")
            if text:
                self.parts.append(text)
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


__all__ = ["AssistantsEngine", "EngineError"]
