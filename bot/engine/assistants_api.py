"""The Assistants API engine (threads, runs, streaming) behind the engine interface.

OpenAI retired this API on 2026-08-26; servers that still speak it (self-hosted or compatible
gateways) work with this engine. The Responses engine serves OpenAI itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import openai
from openai import AsyncOpenAI

from bot.definitions import BOT_ONLY, AssistantDefinition
from bot.engine.answer_text import StreamCleaner, clean_answer, generated
from bot.engine.base import (
    CANCELLED_RUN,
    NO_FILES,
    RUN_GONE,
    Citation,
    Completed,
    EngineError,
    EngineEvent,
    Failed,
    GeneratedFile,
    HostedToolActivity,
    Incomplete,
    OfferedTools,
    RunStarted,
    TextDelta,
    ToolCall,
    ToolCallsRequired,
    ToolOutput,
    ToolRunner,
    TurnFiles,
    Usage,
    no_offered_tools,
)
from bot.engine.driver import drive
from bot.engine.errors import engine_error

log = logging.getLogger(__name__)
ACTIVE_RUN = re.compile(r"\brun_\w+")
RECENT_MESSAGES = 20  # looked at to tell whether a thread already holds a message


async def serves_assistants_api(client: AsyncOpenAI) -> bool:
    """Whether the server speaks the Assistants API (OpenAI itself answers 404 since 2026-08-26)."""
    try:
        await client.beta.assistants.list(limit=1)
    except openai.NotFoundError:
        return False
    except openai.OpenAIError as exc:
        raise engine_error(exc) from exc
    return True


class AssistantsApiCatalog:
    """The backend's own assistants (`/assistants`)."""

    keeps_bot_settings = False

    def __init__(self, client: AsyncOpenAI) -> None:
        self.client = client

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


class AssistantsEngine:
    name = "assistants"
    vector_stores_per_conversation = 1  # an Assistants thread holds at most one vector store

    def __init__(self, client: AsyncOpenAI) -> None:
        self.client = client
        self.offered_tools: OfferedTools = no_offered_tools
        self._thread_stores: dict[str, str] = {}  # thread -> vector store attached to it
        self._thread_code_files: dict[str, set[str]] = {}  # thread -> files code can read
        self._filenames: dict[str, str] = {}

    async def verify(self, assistant: AssistantDefinition) -> None:
        """Nothing more to do: the backend itself returned this assistant."""

    async def create_conversation(self) -> str:
        try:
            thread = await self.client.beta.threads.create()
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
        return thread.id

    async def delete_conversation(self, conversation_id: str, run_ids: Sequence[str]) -> None:
        """Deleting a thread deletes its messages and runs with it."""
        try:
            await self.client.beta.threads.delete(conversation_id)
        except openai.NotFoundError:
            return
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc

    def run(
        self,
        conversation_id: str,
        assistant_id: str,
        text: str,
        run_tools: ToolRunner,
        files: TurnFiles = NO_FILES,
    ) -> AsyncIterator[EngineEvent]:
        return drive(_Run(self, conversation_id, assistant_id, text, files), run_tools)

    def follow(
        self,
        conversation_id: str,
        assistant_id: str,
        run_id: str,
        run_tools: ToolRunner,
        files: TurnFiles = NO_FILES,
    ) -> AsyncIterator[EngineEvent]:
        # A run goes on on the server after its stream is lost, but its stream cannot be
        # joined again: it is polled to its end (or to its tool calls), then read back.
        run = _FollowedRun(self, conversation_id, assistant_id, "", files)
        run.answer.run_id = run_id
        return drive(run, run_tools)

    async def cancel_run(self, conversation_id: str, run_id: str) -> None:
        await self._cancel_run(conversation_id, run_id)

    def run_again(
        self,
        conversation_id: str,
        assistant_id: str,
        text: str,
        run_tools: ToolRunner,
        files: TurnFiles = NO_FILES,
        lost_run: str = "",
    ) -> AsyncIterator[EngineEvent]:
        run = _Run(self, conversation_id, assistant_id, text, files, again=True, lost_run=lost_run)
        return drive(run, run_tools)

    async def _begin(
        self, thread_id: str, assistant_id: str, text: str, files: TurnFiles, add_message: bool
    ) -> Any:
        """Add the message (unless told not to) and start a run on the thread; its stream."""
        extra = await self._prepare_files(thread_id, assistant_id, files)
        if not add_message:
            return await self._start_run(thread_id, assistant_id, None, extra)
        # A thread keeps what its messages attached: attach each data file once.
        attached = self._thread_code_files.setdefault(thread_id, set())
        new_code_files = tuple(f for f in files.code_file_ids if f not in attached)
        message = _user_message(text, files.image_file_ids, new_code_files)
        attached.update(new_code_files)
        return await self._start_run(thread_id, assistant_id, message, extra)

    async def _holds(self, thread_id: str, text: str, lost_run: str | None) -> bool:
        """Whether the thread ends with the user's message `text` (what the lost run wrote
        after it aside): a run created with it added it, even if the run is gone since."""
        async for message in self.client.beta.threads.messages.list(
            thread_id, order="desc", limit=RECENT_MESSAGES
        ):
            if lost_run and message.role == "assistant" and message.run_id == lost_run:
                continue
            return message.role == "user" and _text_of(message.content) == text
        return False

    async def _replay(self, thread_id: str, run_id: str) -> _Replay:
        """The run, once it has ended or waits for tool outputs, as the events its stream
        would have carried: its messages, then how it ended."""
        runs = self.client.beta.threads.runs
        try:
            run = await runs.poll(run_id, thread_id=thread_id)
        except openai.NotFoundError as exc:
            raise EngineError(RUN_GONE, f"no run {run_id!r} any more") from exc
        events = []
        async for message in self.client.beta.threads.messages.list(
            thread_id, run_id=run_id, order="asc", limit=100
        ):
            parts = [
                SimpleNamespace(type="text", text=SimpleNamespace(value=part.text.value))
                for part in message.content
                if part.type == "text"
            ]
            delta = SimpleNamespace(delta=SimpleNamespace(content=parts))
            events.append(_Event("thread.message.delta", delta))
            events.append(_Event("thread.message.completed", message))
        events.append(_Event(f"thread.run.{run.status}", run))
        return _Replay(events)

    async def _prepare_files(
        self, thread_id: str, assistant_id: str, files: TurnFiles
    ) -> dict[str, Any]:
        """Attach the turn's vector store to the thread; the run's extra fields (tools)."""
        if not files.vector_store_ids:
            return await self._with_offered_tools(assistant_id, None)
        store = files.vector_store_ids[0]
        if self._thread_stores.get(thread_id) != store:
            resources: dict[str, Any] = {"file_search": {"vector_store_ids": [store]}}
            if files.code_file_ids:  # keep what code_interpreter reads (at most 20 files)
                resources["code_interpreter"] = {"file_ids": list(files.code_file_ids[-20:])}
            await self.client.beta.threads.update(thread_id, tool_resources=resources)  # type: ignore[arg-type]
            self._thread_stores[thread_id] = store
        # Files shared in Slack are searched even by an assistant set up without file_search.
        return await self._with_offered_tools(assistant_id, {"type": "file_search"})

    async def _with_offered_tools(
        self, assistant_id: str, needed: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The run's `tools` when it needs more than the assistant's: `needed`, if it lacks that
        type, and its MCP servers' tools (`offered_tools`)."""
        if needed is None and self.offered_tools is no_offered_tools:
            return {}
        assistant = await self.client.beta.assistants.retrieve(assistant_id)
        tools = [tool.model_dump(exclude_none=True) for tool in assistant.tools]
        more = self.offered_tools(assistant.name or "")
        if needed is not None and all(tool["type"] != needed["type"] for tool in tools):
            more.append(needed)
        return {"tools": [*tools, *more]} if more else {}

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
        return dataclasses.replace(
            completed,
            citations=tuple(citations),
            files=tuple(fetched),
            files_missing=len(missing),
        )

    async def _fetch_output(self, file_id: str, fallback_name: str) -> GeneratedFile | None:
        """A file code_interpreter wrote (Files API), or None when it cannot be fetched."""
        try:
            info = await self.client.files.retrieve(file_id)
            content = await self.client.files.content(file_id)
        except openai.OpenAIError as exc:
            log.warning("event=output_fetch_failed file=%s error=%s", file_id, exc)
            return None
        return generated(_basename(info.filename) or fallback_name, content.content)

    async def _filename(self, file_id: str) -> str:
        if file_id not in self._filenames:
            try:
                self._filenames[file_id] = (await self.client.files.retrieve(file_id)).filename
            except openai.OpenAIError:
                return file_id
        return self._filenames[file_id]

    async def _start_run(
        self,
        thread_id: str,
        assistant_id: str,
        message: dict[str, Any] | None,
        extra: dict[str, Any],
    ) -> Any:
        if message is not None:
            extra = {**extra, "additional_messages": [message]}
        for attempt in (1, 2):
            try:
                return await self.client.beta.threads.runs.create(
                    thread_id, assistant_id=assistant_id, stream=True, **extra
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


def _text_of(content: Any) -> str:
    return "".join(part.text.value for part in content if part.type == "text")


@dataclass(frozen=True)
class _Event:
    """A stream event, as the SDK's are shaped (`event`, `data`), made from what was read back."""

    event: str
    data: Any


class _Replay:
    """Events read back, served the way `drive` reads a stream."""

    def __init__(self, events: list[_Event]) -> None:
        self.events = events

    async def __aenter__(self) -> _Replay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[_Event]:
        return self._each()

    async def _each(self) -> AsyncIterator[_Event]:
        for event in self.events:
            yield event


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _definition(assistant: Any) -> AssistantDefinition:
    record = assistant.model_dump(exclude_none=True)
    return AssistantDefinition.from_record({**record, "name": assistant.name or assistant.id})


def _fields(definition: AssistantDefinition) -> dict[str, Any]:
    """What `/assistants` takes: the settings it has a place for, those left unset left out."""
    if "web_search" in definition.tool_types:
        raise EngineError(
            "unsupported_tool",
            f"assistant {definition.name!r}: tools: web_search needs the Responses engine "
            "(the Assistants API has no web search)",
        )
    if any(server.get("via") == "openai" for server in definition.mcp_servers):
        raise EngineError(
            "unsupported_setting",
            f"assistant {definition.name!r}: mcp_servers with via: openai need the Responses "
            "engine",
        )
    if definition.reasoning_effort is not None:
        raise EngineError(
            "unsupported_setting",
            f"assistant {definition.name!r}: reasoning_effort needs the Responses engine",
        )
    fields = {
        name: value
        for name, value in definition.settings().items()
        if name not in BOT_ONLY and value is not None
    }
    if not definition.tool_resources:
        del fields["tool_resources"]
    return fields


class _Run:
    """One run on an Assistants thread, as `drive` runs it."""

    def __init__(
        self,
        engine: AssistantsEngine,
        thread_id: str,
        assistant_id: str,
        text: str,
        files: TurnFiles,
        again: bool = False,
        lost_run: str = "",
    ) -> None:
        self.engine = engine
        self.thread_id = thread_id
        self.assistant_id = assistant_id
        self.text = text
        self.files = files
        self.answer = _Answer()
        self.again = again  # the turn's run was lost: its message may be in the thread already
        self.lost_run = lost_run

    @property
    def active_run(self) -> str | None:
        return self.answer.run_id or None  # waiting for tool outputs counts as running

    async def start(self) -> Any:
        add = True
        if self.again:
            add = not await self.engine._holds(self.thread_id, self.text, self.lost_run)
        return await self.engine._begin(
            self.thread_id, self.assistant_id, self.text, self.files, add
        )

    async def submit(self, outputs: list[ToolOutput]) -> Any:
        return await self.engine.client.beta.threads.runs.submit_tool_outputs(
            self.answer.run_id,
            thread_id=self.thread_id,
            tool_outputs=[{"tool_call_id": o.call_id, "output": o.output} for o in outputs],
            stream=True,
        )

    def to_engine_event(self, event: Any) -> EngineEvent | None:
        return self.answer.fold(event)

    async def finish(self, completed: Completed) -> Completed:
        return await self.engine._with_files(completed, self.answer)

    def cut_off(self) -> Failed:
        return Failed(
            "stream_ended", "the stream ended before the run finished", self.answer.run_id
        )

    async def cancel(self, run_id: str) -> None:
        # Timed out, cut off or cancelled: free the thread for the conversation's next turn.
        await self.engine._cancel_run(self.thread_id, run_id)


# A run step's events, as the status of the tool it ran.
STEP_STATUSES = {
    "thread.run.step.created": "in_progress",
    "thread.run.step.completed": "complete",
    "thread.run.step.failed": "error",
}


def _hosted_step(step: Any, status: str) -> HostedToolActivity | None:
    """A step in which the backend ran file_search or code_interpreter itself (function calls
    are shown when the run asks for their outputs)."""
    details = step.step_details
    if details.type != "tool_calls":
        return None
    kind = next(
        (c.type for c in details.tool_calls if c.type in ("file_search", "code_interpreter")), None
    )
    return None if kind is None else HostedToolActivity(step.id, kind, status)


class _FollowedRun(_Run):
    """A run another process started: read back once it ends (or asks for tools), then, after
    tool outputs, streamed as usual."""

    async def start(self) -> Any:
        return await self.engine._replay(self.thread_id, self.answer.run_id)


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

    def fold(self, event: Any) -> EngineEvent | None:
        kind = event.event
        data = event.data
        if kind.startswith("thread.run.") and not kind.startswith("thread.run.step"):
            self.run_id = data.id
        if kind == "thread.run.created":
            return RunStarted(data.id)
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
            self._add_message(data.content)
            return None
        if kind in STEP_STATUSES:
            return _hosted_step(data, STEP_STATUSES[kind])
        if kind == "thread.run.requires_action":
            calls = data.required_action.submit_tool_outputs.tool_calls
            return ToolCallsRequired(
                tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in calls)
            )
        if kind == "thread.run.completed":
            return Completed(self.text, data.id, _usage(data))
        if kind == "thread.run.failed":
            error = data.last_error
            code, message = (error.code, error.message) if error else ("server_error", "")
            return Failed(code, message, data.id)
        if kind == "thread.run.incomplete":
            reason = data.incomplete_details.reason if data.incomplete_details else "unknown"
            return Incomplete(reason or "unknown", self.text, data.id, _usage(data))
        if kind == "thread.run.expired":
            return Failed("expired", "the run expired", data.id)
        if kind == "thread.run.cancelled":
            return Failed(CANCELLED_RUN, "the run was cancelled", data.id)
        if kind == "error":
            code = getattr(data, "code", None) or "server_error"
            return Failed(code, getattr(data, "message", None) or "", self.run_id)
        return None

    def _add_message(self, content: Any) -> None:
        texts: list[str] = []
        for part in content:
            if part.type == "image_file":
                self.output_file_ids.append(part.image_file.file_id)
            if part.type != "text":
                continue
            removals: list[tuple[int, int]] = []
            cited: list[Citation] = []
            for note in part.text.annotations:
                if note.type == "file_citation":
                    removals.append((note.start_index, note.end_index))
                    cited.append(Citation(note.start_index, note.file_citation.file_id, ""))
                elif note.type == "file_path":
                    self.output_file_ids.append(note.file_path.file_id)
            offset = len(self.text) + (2 if self.parts else 0) + len("".join(texts))
            text, citations = clean_answer(part.text.value, removals, cited, offset)
            texts.append(text)
            self.citations.extend(citations)
        if "".join(texts):
            self.parts.append("".join(texts))


def _usage(run: Any) -> Usage:
    """A run's usage covers its whole course, tool rounds included (no cached tokens here)."""
    usage = run.usage
    model = str(run.model or "")
    return (
        Usage(usage.prompt_tokens, usage.completion_tokens, model=model)
        if usage
        else Usage(model=model)
    )


__all__ = ["AssistantsApiCatalog", "AssistantsEngine", "EngineError"]
