"""The Responses + Conversations engine: what OpenAI serves today.

A Slack thread maps to a Conversations API conversation; each turn is one streamed
`responses.create(conversation=…)`, repeated with `function_call_output` items while the model
calls functions. Assistants are the bot's own definitions, looked up in the catalogue it is given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import openai
from openai import AsyncOpenAI

from bot.definitions import AssistantDefinition, hosted_by_openai, resolve_references
from bot.engine.answer_text import StreamCleaner, clean_answer, generated
from bot.engine.base import (
    CANCELLED_RUN,
    NO_FILES,
    RUN_GONE,
    AssistantCatalog,
    Citation,
    Completed,
    EngineError,
    EngineEvent,
    Failed,
    HostedToolActivity,
    Incomplete,
    OfferedTools,
    ReasoningSummary,
    RunStarted,
    Source,
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

# A conversation is locked while a response on it runs; ours finish before the next turn starts,
# so a lock is only seen after a lost stream, and is waited out (about 30 s at most).
LOCK_RETRIES = 10


class ResponsesEngine:
    name = "responses"
    vector_stores_per_conversation = 2  # the conversation's own store and its channel's

    def __init__(self, client: AsyncOpenAI, catalog: AssistantCatalog) -> None:
        self.client = client
        self.catalog = catalog
        self.offered_tools: OfferedTools = no_offered_tools

    async def verify(self, assistant: AssistantDefinition) -> None:
        try:
            await self.client.models.retrieve(assistant.model)
        except openai.NotFoundError as exc:
            raise EngineError(
                "model_not_found", f"the model {assistant.model!r} is not available to this key"
            ) from exc
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc

    async def create_conversation(self) -> str:
        try:
            conversation = await self.client.conversations.create()
        except openai.OpenAIError as exc:
            raise engine_error(exc) from exc
        return conversation.id

    async def delete_conversation(self, conversation_id: str, run_ids: Sequence[str]) -> None:
        """Deleting a conversation leaves its items behind, and stored responses keep their
        input and output: each is deleted on its own, the items while the conversation exists."""
        try:
            try:
                listing = self.client.conversations.items.list(conversation_id, limit=100)
                items = [item.id async for item in listing if item.id]
                for item_id in items:
                    await _gone_or_done(
                        self.client.conversations.items.delete(
                            item_id, conversation_id=conversation_id
                        )
                    )
                await self.client.conversations.delete(conversation_id)
            except openai.NotFoundError:
                pass  # the conversation is gone: its responses may not be
            for response_id in dict.fromkeys(run_ids):
                await _gone_or_done(self.client.responses.delete(response_id))
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
        # Responses run in background mode, so one outlives the process that started it, and
        # its events can be streamed again from the first.
        run = _Run(self, conversation_id, assistant_id, "", files, following=run_id)
        return drive(run, run_tools)

    async def cancel_run(self, conversation_id: str, run_id: str) -> None:
        await self._cancel(run_id)

    def run_again(
        self,
        conversation_id: str,
        assistant_id: str,
        text: str,
        run_tools: ToolRunner,
        files: TurnFiles = NO_FILES,
        lost_run: str = "",
    ) -> AsyncIterator[EngineEvent]:
        # A conversation takes a response's input only when the response completes: one that
        # was lost never added the person's message, so it is sent again.
        return self.run(conversation_id, assistant_id, text, run_tools, files)

    async def _with_files(self, completed: Completed, answer: _Answer) -> Completed:
        """The Completed event with the files code_interpreter wrote fetched from its container."""
        fetched = []
        missing = 0
        for container_id, file_id, filename in dict.fromkeys(answer.container_files):
            try:
                content = await self.client.containers.files.content.retrieve(
                    file_id, container_id=container_id
                )
            except openai.OpenAIError as exc:
                log.warning("event=output_fetch_failed file=%s error=%s", file_id, exc)
                missing += 1
                continue
            fetched.append(generated(filename or file_id, content.content))
        return replace(
            completed,
            citations=tuple(answer.citations),
            files=tuple(fetched),
            files_missing=missing,
        )

    async def _cancel(self, response_id: str) -> None:
        try:
            async with asyncio.timeout(10):
                await self.client.responses.cancel(response_id)
        except (openai.OpenAIError, TimeoutError) as exc:
            log.warning("event=cancel_response_failed response=%s error=%s", response_id, exc)

    async def _create(self, request: dict[str, Any], conversation_id: str, items: Any) -> Any:
        """Start a streamed response; wait out a lock left by a response that is still ending."""
        for attempt in range(LOCK_RETRIES):
            try:
                return await self.client.responses.create(
                    **request, conversation=conversation_id, input=items, stream=True
                )
            except openai.APIStatusError as exc:
                if exc.code != "conversation_locked" or attempt == LOCK_RETRIES - 1:
                    raise
                await asyncio.sleep(min(0.25 * 2**attempt, 4.0))
        raise AssertionError("unreachable")


async def _gone_or_done(deleting: Awaitable[Any]) -> None:
    try:
        await deleting
    except openai.NotFoundError:
        return


def _user_message(text: str, files: TurnFiles) -> dict[str, Any]:
    if not files.image_file_ids:
        return {"role": "user", "content": text}
    images = [{"type": "input_image", "file_id": f, "detail": "auto"} for f in files.image_file_ids]
    content = [{"type": "input_text", "text": text}, *images]
    return {"type": "message", "role": "user", "content": content}


def _request(
    definition: AssistantDefinition,
    files: TurnFiles = NO_FILES,
    offered: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    # Background mode makes a response cancellable, so a turn that times out frees the conversation.
    request: dict[str, Any] = {"model": definition.model, "store": True, "background": True}
    if definition.instructions:
        request["instructions"] = definition.instructions
    tools = [
        t
        for t in (_tool(tool, definition, files) for tool in [*definition.tools, *(offered or ())])
        if t is not None
    ]
    tools += [_hosted_mcp(server) for server in definition.mcp_servers if hosted_by_openai(server)]
    if files.vector_store_ids and not any(t["type"] == "file_search" for t in tools):
        # Files shared in Slack are searched even by an assistant defined without file_search.
        tools.append({"type": "file_search", "vector_store_ids": list(files.vector_store_ids)})
    if tools:
        request["tools"] = tools
    if definition.temperature is not None:
        request["temperature"] = definition.temperature
    if definition.top_p is not None:
        request["top_p"] = definition.top_p
    if definition.metadata:
        request["metadata"] = definition.metadata
    if definition.reasoning_effort is not None:
        # The summary is what the thread's status line shows while the model reasons.
        request["reasoning"] = {"effort": definition.reasoning_effort, "summary": "auto"}
    if any(t["type"] == "web_search" for t in tools):
        request["include"] = ["web_search_call.action.sources"]  # the task shows its sources
    return request


def _hosted_mcp(server: dict[str, Any]) -> dict[str, Any]:
    """An MCP server OpenAI connects to itself: the hosted `mcp` tool, its approvals ours."""
    tool: dict[str, Any] = {
        "type": "mcp",
        "server_label": server["name"],
        "server_url": server["url"],
        "headers": {k: resolve_references(v) for k, v in server.get("headers", {}).items()},
    }
    if "allowed_tools" in server:
        tool["allowed_tools"] = list(server["allowed_tools"])
    approval = server.get("require_approval", "never")
    if isinstance(approval, list):
        approval = {"always": {"tool_names": approval}}
    tool["require_approval"] = approval
    return tool


def _tool(
    tool: dict[str, Any], definition: AssistantDefinition, files: TurnFiles
) -> dict[str, Any] | None:
    """An Assistants-style tool definition in the Responses API's shape (None: nothing to use)."""
    kind = tool["type"]
    if kind == "function":
        function = tool["function"]
        return {
            "type": "function",
            "name": function["name"],
            "description": function.get("description", ""),
            "parameters": function.get("parameters", {"type": "object", "properties": {}}),
            "strict": bool(function.get("strict", False)),
        }
    if kind == "file_search":
        stores = definition.tool_resources.get("file_search", {}).get("vector_store_ids", [])
        stores = [*stores, *files.vector_store_ids]
        return {"type": "file_search", "vector_store_ids": stores} if stores else None
    if kind == "code_interpreter":
        given = definition.tool_resources.get("code_interpreter", {}).get("file_ids", [])
        file_ids = [*given, *files.code_file_ids]
        return {"type": "code_interpreter", "container": {"type": "auto", "file_ids": file_ids}}
    return dict(tool)


class _Run:
    """One turn on a conversation, as `drive` runs it: a response, and one more per tool round."""

    def __init__(
        self,
        engine: ResponsesEngine,
        conversation_id: str,
        assistant_id: str,
        text: str,
        files: TurnFiles,
        following: str | None = None,
    ) -> None:
        self.engine = engine
        self.following = following  # a response another process started: stream it again
        self.conversation_id = conversation_id
        self.assistant_id = assistant_id
        self.text = text
        self.files = files
        self.request: dict[str, Any] = {}
        self.answer = _Answer()
        self.response_id: str | None = None
        self.running = False  # the latest response has not ended yet
        self.cleaner = StreamCleaner()  # sandbox links never reach the screen
        self.summary = ""  # the reasoning summary's part being written

    @property
    def active_run(self) -> str | None:
        # A running response holds the conversation's lock: a turn cut short cancels it.
        return self.response_id if self.running else None

    async def start(self) -> Any:
        definition = await self.engine.catalog.get_assistant(self.assistant_id)
        if definition is None:
            raise EngineError(
                "assistant_not_found", f"no assistant {self.assistant_id!r} is defined"
            )
        self.request = _request(definition, self.files, self.engine.offered_tools(definition.name))
        if self.following is not None:
            try:
                stream = await self.engine.client.responses.retrieve(self.following, stream=True)
            except openai.NotFoundError as exc:
                raise EngineError(RUN_GONE, f"no response {self.following!r} any more") from exc
            self.response_id, self.running = self.following, True
            return stream
        return await self._create([_user_message(self.text, self.files)])

    async def submit(self, outputs: list[ToolOutput]) -> Any:
        return await self._create(
            [
                {"type": "function_call_output", "call_id": o.call_id, "output": o.output}
                if o.approved is None
                else {
                    "type": "mcp_approval_response",
                    "approval_request_id": o.call_id,
                    "approve": o.approved,
                }
                for o in outputs
            ]
        )

    async def _create(self, items: Any) -> Any:
        self.cleaner = StreamCleaner()
        return await self.engine._create(self.request, self.conversation_id, items)

    def to_engine_event(self, event: Any) -> EngineEvent | None:
        kind = event.type
        if kind == "response.created":
            self.response_id = event.response.id
            self.running = True
            return RunStarted(self.response_id)
        if kind in ("response.output_item.added", "response.output_item.done"):
            return _hosted_tool(event.item, done=kind.endswith(".done"))
        if kind == "response.reasoning_summary_part.added":
            self.summary = ""
            return None
        if kind == "response.reasoning_summary_text.delta" and event.delta:
            self.summary += event.delta
            return ReasoningSummary(self.summary)
        if kind == "response.output_text.delta" and event.delta:
            shown = self.cleaner.feed(event.delta)
            return TextDelta(shown) if shown else None
        if kind in ("response.completed", "response.failed", "response.incomplete"):
            self.running = False
            return _outcome(event.response, self.answer)
        if kind == "error":
            return Failed(event.code or "server_error", event.message, self.response_id)
        return None

    async def finish(self, completed: Completed) -> Completed:
        return await self.engine._with_files(completed, self.answer)

    def cut_off(self) -> Failed:
        return Failed(
            "stream_ended", "the stream ended before the response finished", self.response_id
        )

    async def cancel(self, run_id: str) -> None:
        await self.engine._cancel(run_id)


HOSTED_TOOLS = {
    "web_search_call": "web_search",
    "file_search_call": "file_search",
    "code_interpreter_call": "code_interpreter",
    "mcp_call": "mcp",
}


def _hosted_tool(item: Any, done: bool) -> HostedToolActivity | None:
    """A tool OpenAI runs itself, as it starts (output item added) or ends (done)."""
    kind = HOSTED_TOOLS.get(item.type)
    if kind is None:
        return None
    name, server = (item.name, item.server_label) if kind == "mcp" else ("", "")
    if not done:
        return HostedToolActivity(item.id, kind, "in_progress", name=name, server=server)
    sources: tuple[Source, ...] = ()
    action = getattr(item, "action", None)
    if kind == "web_search" and action is not None:
        found = getattr(action, "sources", None) or ()
        sources = tuple(Source(urlsplit(s.url).netloc or s.url, s.url) for s in found)
    failed = item.status in ("failed", "incomplete") or getattr(item, "error", None)
    status = "error" if failed else "complete"
    return HostedToolActivity(item.id, kind, status, sources, name, server)


@dataclass
class _Answer:
    """The answer gathered across tool rounds: texts, citations, files to fetch."""

    texts: list[str] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    container_files: list[tuple[str, str, str]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)  # every response of the turn, tool rounds too

    def add_response(self, response: Any) -> None:
        self.usage += _usage(response)
        offset = len("\n\n".join(self.texts)) + (2 if self.texts else 0)
        parts: list[str] = []
        for item in response.output:
            if item.type != "message":
                continue
            for content in item.content:
                if content.type != "output_text":
                    continue
                cited = []
                for note in content.annotations or ():
                    if note.type == "file_citation":
                        cited.append(Citation(note.index, note.file_id, note.filename))
                    elif note.type == "url_citation":  # web_search: after the cited words
                        cited.append(Citation(note.end_index, "", note.title, note.url))
                    elif note.type == "container_file_citation":
                        self.container_files.append(
                            (note.container_id, note.file_id, note.filename)
                        )
                start = offset + len("".join(parts))
                text, citations = clean_answer(content.text, [], cited, start)
                parts.append(text)
                self.citations.extend(citations)
        if "".join(parts):
            self.texts.append("".join(parts))


def _usage(response: Any) -> Usage:
    usage = response.usage
    model = str(response.model or "")
    if usage is None:
        return Usage(model=model)
    details = usage.input_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    return Usage(usage.input_tokens, usage.output_tokens, cached, model)


def _outcome(response: Any, answer: _Answer) -> EngineEvent:
    """A finished response as an engine event; `answer` gathers the answer across tool rounds."""
    answer.add_response(response)
    text = "\n\n".join(answer.texts)
    if response.status == "failed":
        error = response.error
        code, message = (error.code, error.message) if error else ("server_error", "")
        return Failed(str(code), message, response.id)
    if response.status == "cancelled":
        return Failed(CANCELLED_RUN, "the response was cancelled", response.id)
    if response.status == "incomplete":
        details = response.incomplete_details
        reason = (details.reason if details else None) or "unknown"
        return Incomplete(reason, text, response.id, answer.usage)
    calls = tuple(
        ToolCall(item.call_id, item.name, item.arguments)
        if item.type == "function_call"
        else ToolCall(item.id, item.name, item.arguments, hosted_server=item.server_label)
        for item in response.output
        if item.type in ("function_call", "mcp_approval_request")
    )
    if calls:
        return ToolCallsRequired(calls)
    return Completed(text, response.id, answer.usage)
