"""The Responses, Conversations and Containers half of the OpenAI emulator.

`setup(app, emu)` registers the routes on the emulator's aiohttp app and attaches the state as
`emu.responses_api` (a `ResponsesState`). Every response takes its reply from the shared scripted
model (`emu.model`, see model.py), so a scenario scripted once runs on either API family.

What the state answers like the real API (checked against OpenAI's OpenAPI spec, the SDK, and
reports of the live service):
- a response on a `conversation` sees every item of it; its input and output items are appended
  when it ends `completed` or `incomplete` (not when it fails or is cancelled);
- a second response on a conversation while one is in progress is refused with HTTP 400,
  code `conversation_locked`, param `conversation`;
- function calls are answered by `function_call_output` items in the next request; an output for
  an unknown call, or a pending call left without an output, is refused with HTTP 400;
- streams carry `sequence_number` from 0 and the documented event order; no `[DONE]` line;
- `code_interpreter_call.outputs` and `file_search_call.results` are null unless asked for with
  `include`, as in the real API; generated files are always cited by `container_file_citation`
  annotations and stored as container files.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import mimetypes
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2
from aiohttp import web
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.emulators.common import JSON, ApiError, Handler, ScriptError, SseEvent, now, read_json
from tests.emulators.model import CitationSpec, ImageSpec, Reply, ScriptedModel, TurnContext

PREFIX = "/v1"
TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled"})
LOCKED_MESSAGE = (
    "Another process is currently operating on this conversation. Please retry in a few seconds."
)
EXPIRED_MESSAGE = "The response timed out before it could be completed. Please try again."
CUT_MESSAGE = "The response stream was interrupted before the response finished."
INCLUDE_CODE_OUTPUTS = "code_interpreter_call.outputs"
INCLUDE_SEARCH_RESULTS = "file_search_call.results"

EVENT_SCHEMAS: dict[str, str] = {
    "response.created": "ResponseCreatedEvent",
    "response.queued": "ResponseQueuedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.output_text.annotation.added": "ResponseOutputTextAnnotationAddedEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.web_search_call.in_progress": "ResponseWebSearchCallInProgressEvent",
    "response.web_search_call.searching": "ResponseWebSearchCallSearchingEvent",
    "response.web_search_call.completed": "ResponseWebSearchCallCompletedEvent",
    "response.file_search_call.in_progress": "ResponseFileSearchCallInProgressEvent",
    "response.file_search_call.searching": "ResponseFileSearchCallSearchingEvent",
    "response.file_search_call.completed": "ResponseFileSearchCallCompletedEvent",
    "response.code_interpreter_call.in_progress": "ResponseCodeInterpreterCallInProgressEvent",
    "response.code_interpreter_call_code.delta": "ResponseCodeInterpreterCallCodeDeltaEvent",
    "response.code_interpreter_call_code.done": "ResponseCodeInterpreterCallCodeDoneEvent",
    "response.code_interpreter_call.interpreting": "ResponseCodeInterpreterCallInterpretingEvent",
    "response.code_interpreter_call.completed": "ResponseCodeInterpreterCallCompletedEvent",
    "response.reasoning_summary_part.added": "ResponseReasoningSummaryPartAddedEvent",
    "response.reasoning_summary_text.delta": "ResponseReasoningSummaryTextDeltaEvent",
    "response.reasoning_summary_text.done": "ResponseReasoningSummaryTextDoneEvent",
    "response.reasoning_summary_part.done": "ResponseReasoningSummaryPartDoneEvent",
    "response.mcp_call.in_progress": "ResponseMCPCallInProgressEvent",
    "response.mcp_call.completed": "ResponseMCPCallCompletedEvent",
    "response.mcp_call.failed": "ResponseMCPCallFailedEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.failed": "ResponseFailedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "error": "ResponseErrorEvent",
}
# The Assistants API names the token limit differently; the Responses API knows only these two.
INCOMPLETE_REASONS = {"max_output_tokens", "content_filter"}


class Emulator(Protocol):
    """The members of `OpenAIEmulator` this module relies on."""

    model: ScriptedModel
    api_key: str
    base_url: str
    files: dict[str, Any]
    vector_stores: dict[str, Any]

    def new_id(self, prefix: str) -> str: ...

    def json(self, data: Any, schema: str, status: int = 200) -> web.Response: ...

    def check_request(self, body: Any, schema: str) -> Any: ...

    async def sse(
        self, request: web.Request, events: AsyncIterator[SseEvent]
    ) -> web.StreamResponse: ...

    def search(
        self, vector_store_ids: Sequence[str], query: str, max_results: int = 5
    ) -> list[tuple[Any, str]]: ...


class Cancelled(Exception):
    """Raised inside a running response once it was cancelled."""


# --------------------------------------------------------------------------------------------
# State


@dataclass
class ContainerFile:
    id: str
    container_id: str
    path: str
    content: bytes
    created_at: int
    source: str  # "user" (uploaded or copied in) or "assistant" (written by code interpreter)

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def resource(self) -> JSON:
        return {
            "id": self.id,
            "object": "container.file",
            "container_id": self.container_id,
            "created_at": self.created_at,
            "bytes": len(self.content),
            "path": self.path,
            "source": self.source,
        }


@dataclass
class Container:
    id: str
    name: str
    created_at: int
    expires_after: JSON
    memory_limit: str = "1g"
    status: str = "running"
    files: dict[str, ContainerFile] = field(default_factory=dict)
    last_active_at: int = 0

    def resource(self) -> JSON:
        return {
            "id": self.id,
            "object": "container",
            "name": self.name,
            "created_at": self.created_at,
            "status": self.status,
            "last_active_at": self.last_active_at or self.created_at,
            "expires_after": self.expires_after,
            "memory_limit": self.memory_limit,
        }


@dataclass
class ResponseRecord:
    """One response: the object as served (`body`), and what the request carried."""

    id: str
    body: JSON
    request: JSON
    input_items: list[JSON]  # this request's input, normalised into items with ids
    context: list[JSON]  # every item the model saw before its output (history + input)
    tools: list[JSON]  # the request's `tools`, as sent
    function_call_outputs: list[JSON]  # the `function_call_output` items the request carried
    conversation_id: str | None
    background: bool
    stored: bool
    reply: Reply | None = None
    turn: TurnContext | None = None
    events: list[JSON] = field(default_factory=list)  # every event emitted, streamed or not
    grew: asyncio.Event = field(default_factory=asyncio.Event)  # set when `events` grows
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set once it has its final state
    mcp_decisions: dict[int, bool] = field(default_factory=dict)  # reply.mcp_calls index -> approve
    _sequence: int = 0

    @property
    def status(self) -> str:
        return str(self.body["status"])

    @property
    def output(self) -> list[JSON]:
        items: list[JSON] = self.body["output"]
        return items

    @property
    def output_text(self) -> str:
        return "".join(
            part.get("text", "")
            for item in self.output
            if item.get("type") == "message"
            for part in item.get("content", [])
            if part.get("type") == "output_text"
        )

    def next_sequence(self) -> int:
        value = self._sequence
        self._sequence += 1
        return value


@dataclass
class PendingCall:
    call_id: str
    name: str
    response_id: str
    reply: Reply  # the reply that made the call; its `after_tools` answers the outputs


class ResponsesState:
    """Everything the Responses family holds; tests read these public dicts directly."""

    def __init__(self) -> None:
        self.conversations: dict[str, JSON] = {}  # id -> ConversationResource
        self.conversation_items: dict[str, list[JSON]] = {}  # id -> items, oldest first
        self.responses: dict[str, ResponseRecord] = {}  # id -> record, in creation order
        self.containers: dict[str, Container] = {}
        self.busy: dict[str, str] = {}  # conversation id -> id of the response working on it
        self.pending_calls: dict[str, PendingCall] = {}  # call_id -> the call awaiting output
        # mcp_approval_request id -> (the reply that made the call, the call's index in it)
        self.pending_approvals: dict[str, tuple[Reply, int]] = {}
        self.locked_refusals: int = 0  # how many requests were refused with conversation_locked

    def response_list(self) -> list[ResponseRecord]:
        return list(self.responses.values())

    def last_response(self) -> ResponseRecord:
        return self.response_list()[-1]

    def container_file(self, container_id: str, file_id: str) -> ContainerFile | None:
        container = self.containers.get(container_id)
        return container.files.get(file_id) if container else None

    def all_function_call_outputs(self) -> list[JSON]:
        return [item for record in self.responses.values() for item in record.function_call_outputs]

    def find_item(self, item_id: str) -> JSON | None:
        for items in self.conversation_items.values():
            for item in items:
                if item.get("id") == item_id:
                    return item
        for record in self.responses.values():
            for item in [*record.input_items, *record.output]:
                if item.get("id") == item_id:
                    return item
        return None


# --------------------------------------------------------------------------------------------
# Helpers


def tokens(text: str) -> int:
    return (len(text) + 3) // 4 if text else 0


def message_text(item: JSON) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(
        str(part.get("text", ""))
        for part in content
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text")
    )


def _needs_approval(tool: JSON, name: str) -> bool:
    """Whether the hosted MCP tool's `require_approval` (default: always) covers `name`."""
    setting = tool.get("require_approval", "always")
    if setting is None or isinstance(setting, str):
        return setting != "never"
    listed = (setting.get("always") or {}).get("tool_names") or []
    exempt = (setting.get("never") or {}).get("tool_names") or []
    return name in listed or (name not in exempt and not listed)


async def call_mcp_tool(url: str, headers: dict[str, str], name: str, arguments: str) -> str:
    """Call a tool on a real MCP server over streamable HTTP, as OpenAI would; its text."""
    async with (
        httpx2.AsyncClient(headers=headers) as client,
        streamable_http_client(url, http_client=client) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool(name, json.loads(arguments or "{}"))
    text = "\n".join(getattr(part, "text", "") for part in result.content)
    if result.is_error:
        raise RuntimeError(text)
    return text


def user_texts(items: Iterable[JSON]) -> list[str]:
    texts = []
    for item in items:
        if item.get("type") == "message" and item.get("role") == "user":
            text = message_text(item)
            if text:
                texts.append(text)
    return texts


def output_as_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "\n".join(str(part.get("text", "")) for part in output if isinstance(part, dict))
    return json.dumps(output)


def paginate(items: list[JSON], request: web.Request, default_order: str = "desc") -> JSON:
    order = request.query.get("order", default_order)
    try:
        limit = max(1, min(100, int(request.query.get("limit", "20"))))
    except ValueError as exc:
        raise ApiError(
            400, "Invalid value for 'limit': expected an integer.", param="limit"
        ) from exc
    ordered = list(items) if order == "asc" else list(reversed(items))
    after = request.query.get("after")
    if after:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise ApiError(400, f"No item with id '{after}' in this list.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else "",
        "last_id": page[-1]["id"] if page else "",
        "has_more": len(ordered) > limit,
    }


# --------------------------------------------------------------------------------------------
# The routes


class ResponsesApi:
    def __init__(self, emu: Emulator, state: ResponsesState) -> None:
        self.emu = emu
        self.state = state

    # -- plumbing ------------------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Handler]]:
        p = PREFIX
        return [
            ("POST", f"{p}/conversations", self.create_conversation),
            ("GET", f"{p}/conversations/{{conversation_id}}", self.get_conversation),
            ("POST", f"{p}/conversations/{{conversation_id}}", self.update_conversation),
            ("DELETE", f"{p}/conversations/{{conversation_id}}", self.delete_conversation),
            ("GET", f"{p}/conversations/{{conversation_id}}/items", self.list_conversation_items),
            (
                "POST",
                f"{p}/conversations/{{conversation_id}}/items",
                self.create_conversation_items,
            ),
            (
                "GET",
                f"{p}/conversations/{{conversation_id}}/items/{{item_id}}",
                self.get_conversation_item,
            ),
            (
                "DELETE",
                f"{p}/conversations/{{conversation_id}}/items/{{item_id}}",
                self.delete_conversation_item,
            ),
            ("POST", f"{p}/responses", self.create_response),
            ("GET", f"{p}/responses/{{response_id}}", self.get_response),
            ("DELETE", f"{p}/responses/{{response_id}}", self.delete_response),
            ("POST", f"{p}/responses/{{response_id}}/cancel", self.cancel_response),
            ("GET", f"{p}/responses/{{response_id}}/input_items", self.list_input_items),
            ("POST", f"{p}/containers", self.create_container),
            ("GET", f"{p}/containers", self.list_containers),
            ("GET", f"{p}/containers/{{container_id}}", self.get_container),
            ("DELETE", f"{p}/containers/{{container_id}}", self.delete_container),
            ("POST", f"{p}/containers/{{container_id}}/files", self.create_container_file),
            ("GET", f"{p}/containers/{{container_id}}/files", self.list_container_files),
            ("GET", f"{p}/containers/{{container_id}}/files/{{file_id}}", self.get_container_file),
            (
                "DELETE",
                f"{p}/containers/{{container_id}}/files/{{file_id}}",
                self.delete_container_file,
            ),
            (
                "GET",
                f"{p}/containers/{{container_id}}/files/{{file_id}}/content",
                self.get_container_file_content,
            ),
        ]

    def _conversation(self, conversation_id: str) -> JSON:
        conversation = self.state.conversations.get(conversation_id)
        if conversation is None:
            raise ApiError(404, f"Conversation with id '{conversation_id}' not found.")
        return conversation

    def _record(self, response_id: str) -> ResponseRecord:
        record = self.state.responses.get(response_id)
        if record is None or not record.stored:
            raise ApiError(404, f"Response with id '{response_id}' not found.")
        return record

    def _container(self, container_id: str) -> Container:
        container = self.state.containers.get(container_id)
        if container is None:
            raise ApiError(404, f"Container with id '{container_id}' not found.")
        return container

    # -- items ---------------------------------------------------------------------------------

    def normalise_items(self, raw: Any, param: str) -> list[JSON]:
        """Input as sent (a string or a list of items) -> items as the API stores them."""
        if raw is None:
            return []
        if isinstance(raw, str):
            raw = [{"type": "message", "role": "user", "content": raw}]
        if not isinstance(raw, list):
            raise ApiError(
                400, f"Invalid type for '{param}': expected a string or an array.", param=param
            )
        items = []
        for index, entry in enumerate(raw):
            if not isinstance(entry, dict):
                raise ApiError(
                    400, f"Invalid type for '{param}[{index}]': expected an object.", param=param
                )
            items.append(self.normalise_item(entry, f"{param}[{index}]"))
        return items

    def normalise_item(self, entry: JSON, where: str) -> JSON:
        kind = entry.get("type", "message" if "role" in entry else None)
        if kind == "item_reference":
            found = self.state.find_item(str(entry.get("id")))
            if found is None:
                raise ApiError(400, f"Item with id '{entry.get('id')}' not found.", param=where)
            return copy.deepcopy(found)
        if kind == "message":
            role = entry.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise ApiError(
                    400, f"Invalid value for '{where}.role': {role!r}.", param=f"{where}.role"
                )
            content = entry.get("content")
            if isinstance(content, str):
                if role == "assistant":
                    parts: list[JSON] = [
                        {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
                    ]
                else:
                    parts = [{"type": "input_text", "text": content}]
            elif isinstance(content, list):
                parts = [self._normalise_part(part) for part in content if isinstance(part, dict)]
            else:
                raise ApiError(
                    400, f"Missing required parameter: '{where}.content'.", param=f"{where}.content"
                )
            item = {
                "id": entry.get("id") or self.emu.new_id("msg"),
                "type": "message",
                "status": "completed",
                "role": role,
                "content": parts,
            }
            return item
        if kind == "function_call_output":
            if not entry.get("call_id"):
                raise ApiError(
                    400, f"Missing required parameter: '{where}.call_id'.", param=f"{where}.call_id"
                )
            return {
                "id": entry.get("id") or self.emu.new_id("fco"),
                "type": "function_call_output",
                "call_id": entry["call_id"],
                "output": entry.get("output", ""),
                "status": "completed",
            }
        if kind is None:
            raise ApiError(
                400, f"Missing required parameter: '{where}.type'.", param=f"{where}.type"
            )
        item = copy.deepcopy(entry)
        item.setdefault("id", self.emu.new_id(str(kind).split("_")[0]))
        if kind == "function_call":
            item.setdefault("status", "completed")
        return item

    @staticmethod
    def _normalise_part(part: JSON) -> JSON:
        part = copy.deepcopy(part)
        if part.get("type") == "input_image":
            part.setdefault("detail", "auto")
        if part.get("type") == "output_text":
            part.setdefault("annotations", [])
            part.setdefault("logprobs", [])
        return part

    # -- conversations -------------------------------------------------------------------------

    async def create_conversation(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        self.emu.check_request(body, "CreateConversationBody")
        items = self.normalise_items(body.get("items") or [], "items")
        if len(items) > 20:
            raise ApiError(
                400, "Invalid 'items': array too long. Expected at most 20 items.", param="items"
            )
        conversation_id = self.emu.new_id("conv")
        conversation: JSON = {
            "id": conversation_id,
            "object": "conversation",
            "created_at": now(),
            "metadata": body.get("metadata") or {},
        }
        self.state.conversations[conversation_id] = conversation
        self.state.conversation_items[conversation_id] = items
        return self.emu.json(conversation, "ConversationResource")

    async def get_conversation(self, request: web.Request) -> web.StreamResponse:
        return self.emu.json(
            self._conversation(request.match_info["conversation_id"]), "ConversationResource"
        )

    async def update_conversation(self, request: web.Request) -> web.StreamResponse:
        conversation = self._conversation(request.match_info["conversation_id"])
        body = await read_json(request)
        self.emu.check_request(body, "UpdateConversationBody")
        if "metadata" not in body:
            raise ApiError(400, "Missing required parameter: 'metadata'.", param="metadata")
        conversation["metadata"] = body["metadata"] or {}
        return self.emu.json(conversation, "ConversationResource")

    async def delete_conversation(self, request: web.Request) -> web.StreamResponse:
        conversation_id = request.match_info["conversation_id"]
        self._conversation(conversation_id)
        del self.state.conversations[conversation_id]
        # As on OpenAI: the items stay (unreachable through the conversation) until each is
        # deleted on its own, before the conversation is.
        deleted = {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
        return self.emu.json(deleted, "DeletedConversationResource")

    async def list_conversation_items(self, request: web.Request) -> web.StreamResponse:
        conversation_id = request.match_info["conversation_id"]
        self._conversation(conversation_id)
        page = paginate(self.state.conversation_items[conversation_id], request)
        return self.emu.json(page, "ConversationItemList")

    async def create_conversation_items(self, request: web.Request) -> web.StreamResponse:
        conversation_id = request.match_info["conversation_id"]
        self._conversation(conversation_id)
        if conversation_id in self.state.busy:
            raise ApiError(400, LOCKED_MESSAGE, code="conversation_locked", param="conversation")
        body = await read_json(request)
        if "items" not in body:
            raise ApiError(400, "Missing required parameter: 'items'.", param="items")
        items = self.normalise_items(body["items"], "items")
        if len(items) > 20:
            raise ApiError(
                400, "Invalid 'items': array too long. Expected at most 20 items.", param="items"
            )
        self.state.conversation_items[conversation_id].extend(items)
        page = {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else "",
            "last_id": items[-1]["id"] if items else "",
            "has_more": False,
        }
        return self.emu.json(page, "ConversationItemList")

    def _conversation_item(self, request: web.Request) -> tuple[str, JSON]:
        conversation_id = request.match_info["conversation_id"]
        self._conversation(conversation_id)
        item_id = request.match_info["item_id"]
        for item in self.state.conversation_items[conversation_id]:
            if item.get("id") == item_id:
                return conversation_id, item
        raise ApiError(404, f"Item with id '{item_id}' not found.")

    async def get_conversation_item(self, request: web.Request) -> web.StreamResponse:
        _, item = self._conversation_item(request)
        return self.emu.json(item, "ConversationItem")

    async def delete_conversation_item(self, request: web.Request) -> web.StreamResponse:
        conversation_id, item = self._conversation_item(request)
        self.state.conversation_items[conversation_id].remove(item)
        return self.emu.json(self.state.conversations[conversation_id], "ConversationResource")

    # -- responses: create ---------------------------------------------------------------------

    async def create_response(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        self.emu.check_request(body, "CreateResponse")
        record = self._start(body)
        if record.background:
            # A background response runs on the server whatever happens to the client's stream;
            # its events can be streamed (again) with GET /responses/{id}?stream=true.
            record.task = asyncio.create_task(self._drain(record), name=f"emulated {record.id}")
            record.task.add_done_callback(lambda _: record.grew.set())  # streams end with it
            if body.get("stream"):
                return await self._stream_recorded(request, record, after=-1)
            return self.emu.json(self._snapshot(record), "Response")
        if body.get("stream"):
            return await self._stream(request, record)
        await self._drain(record)
        return self.emu.json(self._snapshot(record), "Response")

    def _start(self, body: JSON) -> ResponseRecord:
        """Check the request, take the conversation's lock, pick the reply; raises ApiError."""
        if not body.get("model"):
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        conversation_id = self._conversation_param(body.get("conversation"))
        previous_id = body.get("previous_response_id")
        if conversation_id and previous_id:
            raise ApiError(
                400,
                "Mutually exclusive parameters: Ensure you are only providing one of: "
                "'previous_response_id' or 'conversation'.",
                code="mutually_exclusive_parameters",
                param="conversation",
            )
        tools = body.get("tools") or []
        if not isinstance(tools, list):
            raise ApiError(400, "Invalid type for 'tools': expected an array.", param="tools")
        self._check_tools(tools)
        input_items = self.normalise_items(body.get("input"), "input")

        history: list[JSON]
        if conversation_id:
            self._conversation(conversation_id)
            if conversation_id in self.state.busy:
                self.state.locked_refusals += 1
                raise ApiError(
                    400, LOCKED_MESSAGE, code="conversation_locked", param="conversation"
                )
            history = list(self.state.conversation_items[conversation_id])
        elif previous_id:
            previous = self.state.responses.get(str(previous_id))
            if previous is None or not previous.stored:
                raise ApiError(
                    400,
                    f"Previous response with id '{previous_id}' not found.",
                    code="previous_response_not_found",
                    param="previous_response_id",
                )
            history = [*previous.context, *previous.output]
        else:
            history = []

        outputs = [item for item in input_items if item["type"] == "function_call_output"]
        self._check_tool_outputs(history, input_items)
        context = [*history, *input_items]
        turn = TurnContext(
            user_texts=user_texts(context),
            instructions=body.get("instructions"),
            assistant_name=None,
            tool_outputs=[output_as_text(item["output"]) for item in outputs],
            vector_store_ids=[
                str(store_id)
                for tool in tools
                if isinstance(tool, dict) and tool.get("type") == "file_search"
                for store_id in tool.get("vector_store_ids") or []
            ],
        )
        decisions: dict[int, bool] = {}
        resumed: Reply | None = None
        for item in input_items:
            if item["type"] != "mcp_approval_response":
                continue
            pending = self.state.pending_approvals.pop(str(item.get("approval_request_id")), None)
            if pending is None:
                raise ApiError(
                    400,
                    f"No approval request found with id '{item.get('approval_request_id')}'.",
                    param="input",
                )
            resumed, index = pending
            decisions[index] = bool(item.get("approve"))
        reply = resumed if resumed is not None else self._pick_reply(turn, outputs)

        response_id = self.emu.new_id("resp")
        background = bool(body.get("background"))
        record = ResponseRecord(
            id=response_id,
            body=self._initial_body(response_id, body, conversation_id, background),
            request=copy.deepcopy(body),
            input_items=input_items,
            context=context,
            tools=copy.deepcopy(tools),
            function_call_outputs=copy.deepcopy(outputs),
            conversation_id=conversation_id,
            background=background,
            stored=body.get("store") is not False,
            reply=reply,
            turn=turn,
            mcp_decisions=decisions,
        )
        self.state.responses[response_id] = record
        if conversation_id:
            self.state.busy[conversation_id] = response_id
        return record

    def _check_tools(self, tools: list[Any]) -> None:
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "code_interpreter":
                continue
            setting = tool.get("container")
            where = f"tools[{index}].container"
            if isinstance(setting, str) and setting not in self.state.containers:
                raise ApiError(400, f"Container with id '{setting}' not found.", param=where)
            file_ids = setting.get("file_ids") or [] if isinstance(setting, dict) else []
            for file_id in file_ids:
                if file_id not in self.emu.files:
                    raise ApiError(400, f"File with id '{file_id}' not found.", param=where)

    def _conversation_param(self, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            return str(value["id"])
        raise ApiError(
            400,
            "Invalid type for 'conversation': expected a string or an object with an 'id'.",
            param="conversation",
        )

    def _check_tool_outputs(self, history: list[JSON], input_items: list[JSON]) -> None:
        calls = {item["call_id"] for item in history if item.get("type") == "function_call"}
        answered = {
            item["call_id"] for item in history if item.get("type") == "function_call_output"
        }
        given = {
            item["call_id"] for item in input_items if item.get("type") == "function_call_output"
        }
        for call_id in sorted(given - calls):
            raise ApiError(
                400,
                f"No tool call found for function call output with call_id {call_id}.",
                param="input",
            )
        for call_id in sorted(calls - answered - given):
            raise ApiError(400, f"No tool output found for function call {call_id}.", param="input")

    def _pick_reply(self, turn: TurnContext, outputs: list[JSON]) -> Reply:
        model = self.emu.model
        issuers = [self.state.pending_calls.pop(item["call_id"], None) for item in outputs]
        made_by = next((pending.reply for pending in issuers if pending is not None), None)
        if made_by is None:
            return model.next_reply(turn)
        # The turn continues after its tool calls: the scripted continuation, not a new turn.
        return model.continue_after_tools(made_by, turn)

    def _initial_body(
        self, response_id: str, body: JSON, conversation_id: str | None, background: bool
    ) -> JSON:
        return {
            "id": response_id,
            "object": "response",
            "created_at": now(),
            "status": "queued" if background else "in_progress",
            "background": background,
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": body["model"],
            "output": [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None, **(body.get("reasoning") or {})},
            "service_tier": "default",
            "store": body.get("store") is not False,
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": [self._echo_tool(tool) for tool in body.get("tools") or []],
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled",
            "metadata": body.get("metadata") or {},
            "conversation": {"id": conversation_id} if conversation_id else None,
        }

    @staticmethod
    def _echo_tool(tool: Any) -> Any:
        if not isinstance(tool, dict):
            return tool
        echoed = copy.deepcopy(tool)
        if echoed.get("type") == "function":
            echoed.setdefault("description", None)
            echoed.setdefault("parameters", None)
            if echoed.get("strict") is None:
                echoed["strict"] = True
        return echoed

    # -- responses: running --------------------------------------------------------------------

    def _snapshot(self, record: ResponseRecord) -> JSON:
        return copy.deepcopy(record.body)

    async def _drain(self, record: ResponseRecord) -> None:
        events = self._generate(record)
        try:
            async for _ in events:
                pass
        finally:
            await events.aclose()

    async def _stream(self, request: web.Request, record: ResponseRecord) -> web.StreamResponse:
        events = self._generate(record)

        async def sse_events() -> AsyncIterator[SseEvent]:
            async for event in events:
                yield event["type"], event, EVENT_SCHEMAS.get(event["type"])

        try:
            return await self.emu.sse(request, sse_events())
        finally:
            await events.aclose()

    async def _stream_recorded(
        self, request: web.Request, record: ResponseRecord, after: int
    ) -> web.StreamResponse:
        """A background response's events after sequence number `after`, then as they come."""

        async def sse_events() -> AsyncIterator[SseEvent]:
            shown = after + 1  # an event's sequence number is its place in `record.events`
            while True:
                while shown < len(record.events):
                    event = record.events[shown]
                    shown += 1
                    yield event["type"], event, EVENT_SCHEMAS.get(event["type"])
                if record.task is None or record.task.done():
                    return
                record.grew.clear()
                await record.grew.wait()

        return await self.emu.sse(request, sse_events())

    def _event(self, record: ResponseRecord, kind: str, **fields: Any) -> JSON:
        self._check_cancel(record)
        event = {"type": kind, **fields, "sequence_number": record.next_sequence()}
        record.events.append(event)
        record.grew.set()
        return event

    def _lifecycle(self, record: ResponseRecord, kind: str) -> JSON:
        return self._event(record, kind, response=self._snapshot(record))

    async def _generate(self, record: ResponseRecord) -> AsyncGenerator[JSON, None]:
        """Run the response, yielding its stream events; `record.body` follows along."""
        reply = record.reply
        assert reply is not None
        try:
            yield self._lifecycle(record, "response.created")
            if record.background:
                yield self._lifecycle(record, "response.queued")
                record.body["status"] = "in_progress"
            yield self._lifecycle(record, "response.in_progress")
            await self.emu.model.wait_before_output(reply)
            summary = (record.request.get("reasoning") or {}).get("summary")
            if reply.reasoning and summary and reply.fail is None:
                async for event in self._reasoning(record, reply.reasoning):
                    yield event
            if reply.fail is not None:
                code, message = reply.fail
                yield self._finish(record, "failed", error={"code": code, "message": message})
            elif reply.incomplete is not None:
                if reply.text:
                    async for event in self._message(record, reply, status="incomplete"):
                        yield event
                reason = (
                    reply.incomplete
                    if reply.incomplete in INCOMPLETE_REASONS
                    else "max_output_tokens"
                )
                yield self._finish(record, "incomplete", incomplete={"reason": reason})
            elif reply.expire:
                yield self._finish(
                    record, "failed", error={"code": "server_error", "message": EXPIRED_MESSAGE}
                )
            elif reply.stream_cut:
                async for event in self._message(record, reply, cut=True):
                    yield event
                # The connection drops here: no final event; the stored response failed.
                self._settle(
                    record, "failed", error={"code": "server_error", "message": CUT_MESSAGE}
                )
            elif reply.mcp_calls:
                async for event in self._mcp_calls(record, reply):
                    yield event
            elif reply.tool_calls:
                for spec in reply.tool_calls:
                    async for event in self._function_call(
                        record, reply, spec.name, spec.arguments
                    ):
                        yield event
                yield self._finish(record, "completed")
            else:
                try:
                    for citation in reply.citations:
                        self._cited_file_id(record, citation)
                    if reply.web_sources and not self._has_tool(record, "web_search"):
                        raise ScriptError(
                            "the scripted reply searches the web, but the request offers no "
                            "web_search tool"
                        )
                except ScriptError as exc:
                    yield self._finish(
                        record, "failed", error={"code": "server_error", "message": str(exc)}
                    )
                    return
                if reply.citations:
                    async for event in self._file_search_call(record):
                        yield event
                if reply.web_sources:
                    async for event in self._web_search_call(record, reply):
                        yield event
                container: Container | None = None
                if reply.outputs:
                    container = self._container_for(record)
                    async for event in self._code_interpreter_call(
                        record, container, reply.outputs
                    ):
                        yield event
                async for event in self._message(record, reply, container=container):
                    yield event
                yield self._finish(record, "completed")
        except Cancelled:
            return
        finally:
            if record.status not in TERMINAL:
                if record.cancel_requested:
                    self._settle(record, "cancelled")
                else:
                    self._settle(
                        record, "failed", error={"code": "server_error", "message": CUT_MESSAGE}
                    )
            self._release(record)

    def _finish(
        self,
        record: ResponseRecord,
        status: str,
        *,
        error: JSON | None = None,
        incomplete: JSON | None = None,
    ) -> JSON:
        self._check_cancel(record)
        self._settle(record, status, error=error, incomplete=incomplete)
        kind = {"completed": "response.completed", "failed": "response.failed"}.get(
            status, "response.incomplete"
        )
        return self._lifecycle(record, kind)

    def _settle(
        self,
        record: ResponseRecord,
        status: str,
        *,
        error: JSON | None = None,
        incomplete: JSON | None = None,
    ) -> None:
        """Give the response its final state; commit its items to the conversation if it ended well."""
        body = record.body
        body["status"] = status
        body["error"] = error
        body["incomplete_details"] = incomplete
        if status == "completed":
            body["completed_at"] = now()
        body["usage"] = self._usage(record)
        record.ended.set()
        if status in ("completed", "incomplete"):
            if record.conversation_id in self.state.conversation_items:
                items = self.state.conversation_items[record.conversation_id]
                items.extend(copy.deepcopy([*record.input_items, *record.output]))
            for item in record.output:
                if item.get("type") == "function_call" and record.reply is not None:
                    self.state.pending_calls[item["call_id"]] = PendingCall(
                        item["call_id"], item["name"], record.id, record.reply
                    )
        self._release(record)

    def _release(self, record: ResponseRecord) -> None:
        if record.conversation_id and self.state.busy.get(record.conversation_id) == record.id:
            del self.state.busy[record.conversation_id]

    def _usage(self, record: ResponseRecord) -> JSON:
        def seen(items: list[JSON]) -> str:
            return (record.body.get("instructions") or "") + " ".join(
                message_text(item) or output_as_text(item.get("output", "")) for item in items
            )

        tools = 8 * len(record.tools)
        input_tokens = tokens(seen(record.context)) + tools
        # Prompt caching: what an earlier response of the conversation read (the instructions,
        # the tools and the history before this request's input) is read from the cache.
        history = record.context[: len(record.context) - len(record.input_items)]
        cached = tokens(seen(history)) + tools if history else 0
        written = record.output_text + "".join(item.get("arguments", "") for item in record.output)
        output_tokens = tokens(written)
        return {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }

    async def _pause(self, record: ResponseRecord) -> None:
        delay = self.emu.model.chunk_delay
        if delay:
            await asyncio.sleep(delay)

    @staticmethod
    def _check_cancel(record: ResponseRecord) -> None:
        """A cancelled response emits nothing more (its stream just ends)."""
        if record.cancel_requested:
            raise Cancelled

    def _include(self, record: ResponseRecord, what: str) -> bool:
        include = record.request.get("include") or []
        return isinstance(include, list) and what in include

    # -- output items --------------------------------------------------------------------------

    def _add_item(self, record: ResponseRecord, item: JSON) -> tuple[int, JSON]:
        record.output.append(item)
        index = len(record.output) - 1
        return index, self._event(
            record, "response.output_item.added", output_index=index, item=copy.deepcopy(item)
        )

    def _item_done(self, record: ResponseRecord, index: int) -> JSON:
        return self._event(
            record,
            "response.output_item.done",
            output_index=index,
            item=copy.deepcopy(record.output[index]),
        )

    async def _message(
        self,
        record: ResponseRecord,
        reply: Reply,
        *,
        status: str = "completed",
        cut: bool = False,
        container: Container | None = None,
    ) -> AsyncIterator[JSON]:
        text, annotations = self._annotated_text(record, reply, container)
        item: JSON = {
            "id": self.emu.new_id("msg"),
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        index, event = self._add_item(record, item)
        yield event
        part: JSON = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        item["content"].append(part)
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        yield self._event(record, "response.content_part.added", **where, part=copy.deepcopy(part))
        chunks = self.emu.model.chunks(text)
        if cut:
            chunks = chunks[: max(1, len(chunks) // 2)]
        for number, chunk in enumerate(chunks):
            if number:
                await self._pause(record)
            part["text"] += chunk
            yield self._event(
                record, "response.output_text.delta", **where, delta=chunk, logprobs=[]
            )
        if cut:
            return
        for number, annotation in enumerate(annotations):
            part["annotations"].append(annotation)
            yield self._event(
                record,
                "response.output_text.annotation.added",
                **where,
                annotation_index=number,
                annotation=copy.deepcopy(annotation),
            )
        yield self._event(
            record, "response.output_text.done", **where, text=part["text"], logprobs=[]
        )
        yield self._event(record, "response.content_part.done", **where, part=copy.deepcopy(part))
        item["status"] = status
        yield self._item_done(record, index)

    def _annotated_text(
        self, record: ResponseRecord, reply: Reply, container: Container | None
    ) -> tuple[str, list[JSON]]:
        text = reply.text or ""
        annotations: list[JSON] = []
        for citation in reply.citations:
            position = text.find(citation.quote) if citation.quote else -1
            index = position + len(citation.quote) if position >= 0 else len(text)
            annotations.append(
                {
                    "type": "file_citation",
                    "file_id": self._cited_file_id(record, citation),
                    "filename": citation.filename,
                    "index": index,
                }
            )
        for source in reply.web_sources:
            position = text.find(source.quote) if source.quote else -1
            start, end = (position, position + len(source.quote)) if position >= 0 else (0, 0)
            annotations.append(
                {
                    "type": "url_citation",
                    "url": source.url,
                    "title": source.title,
                    "start_index": start,
                    "end_index": end,
                }
            )
        if container is not None:
            generated = [f for f in container.files.values() if f.source == "assistant"]
            for spec in reply.outputs:
                stored = next((f for f in reversed(generated) if f.filename == spec.filename), None)
                if stored is None:
                    continue
                link = f"[{spec.filename}](sandbox:{stored.path})"
                text = f"{text}\n\n{link}" if text else link
                annotations.append(
                    {
                        "type": "container_file_citation",
                        "container_id": container.id,
                        "file_id": stored.id,
                        "filename": spec.filename,
                        "start_index": len(text) - len(link),
                        "end_index": len(text),
                    }
                )
        return text, annotations

    def _search_store_ids(self, record: ResponseRecord) -> list[str]:
        ids: list[str] = []
        for tool in record.tools:
            if isinstance(tool, dict) and tool.get("type") == "file_search":
                ids.extend(str(store_id) for store_id in tool.get("vector_store_ids") or [])
        return ids

    def _cited_file_id(self, record: ResponseRecord, citation: CitationSpec) -> str:
        searched: list[str] = []
        for store_id in self._search_store_ids(record):
            store = self.emu.vector_stores.get(store_id)
            if store is not None:
                searched.extend(store.file_ids)
        candidates = [self.emu.files[i] for i in searched if i in self.emu.files]
        candidates += [
            f for f in reversed(list(self.emu.files.values())) if f.purpose != "assistants_output"
        ]
        for stored in candidates:
            if stored.filename == citation.filename:
                return str(stored.id)
        raise ScriptError(
            f"the scripted reply cites {citation.filename!r}, which was never uploaded"
        )

    def _has_tool(self, record: ResponseRecord, kind: str) -> bool:
        return any(isinstance(t, dict) and t.get("type") == kind for t in record.tools)

    async def _mcp_calls(self, record: ResponseRecord, reply: Reply) -> AsyncIterator[JSON]:
        """The reply's hosted MCP calls: those that need approval are asked for (the response
        ends there, and the next request's mcp_approval_response items resume it); the others,
        and the approved, are called on the real server; then the reply's text."""
        resuming = bool(record.mcp_decisions)
        outputs: list[str] = []
        asked = False
        for index, spec in enumerate(reply.mcp_calls):
            tool = next(
                (
                    t
                    for t in record.tools
                    if t.get("type") == "mcp" and t.get("server_label") == spec.server
                ),
                None,
            )
            if tool is None:
                raise ScriptError(f"the request offers no MCP server labelled {spec.server!r}")
            if resuming and index not in record.mcp_decisions:
                continue  # run (or asked for) in the response before
            if index in record.mcp_decisions:
                if not record.mcp_decisions[index]:
                    outputs.append(f"the call of {spec.name} was denied")
                    continue
            elif _needs_approval(tool, spec.name):
                item: JSON = {
                    "id": self.emu.new_id("mcpr"),
                    "type": "mcp_approval_request",
                    "server_label": spec.server,
                    "name": spec.name,
                    "arguments": spec.arguments,
                }
                self.state.pending_approvals[item["id"]] = (reply, index)
                at, event = self._add_item(record, item)
                yield event
                yield self._item_done(record, at)
                asked = True
                continue
            async for event in self._mcp_call(record, tool, spec, outputs):
                yield event
        if not asked:
            text = reply.after_tools or Reply(text="The tools returned: " + "; ".join(outputs))
            async for event in self._message(record, text):
                yield event
        yield self._finish(record, "completed")

    async def _mcp_call(
        self, record: ResponseRecord, tool: JSON, spec: Any, outputs: list[str]
    ) -> AsyncIterator[JSON]:
        item: JSON = {
            "id": self.emu.new_id("mcp"),
            "type": "mcp_call",
            "server_label": spec.server,
            "name": spec.name,
            "arguments": spec.arguments,
            "status": "in_progress",
            "output": None,
            "error": None,
        }
        index, event = self._add_item(record, item)
        yield event
        where = {"output_index": index, "item_id": item["id"]}
        yield self._event(record, "response.mcp_call.in_progress", **where)
        try:
            output = await call_mcp_tool(
                tool["server_url"], tool.get("headers") or {}, spec.name, spec.arguments
            )
        except Exception as exc:  # what OpenAI reports when the server fails
            item["status"], item["error"] = (
                "failed",
                {
                    "type": "mcp_tool_execution_error",
                    "content": [{"type": "text", "text": str(exc)}],
                },
            )
            outputs.append(f"error: {exc}")
            yield self._event(record, "response.mcp_call.failed", **where)
        else:
            item["status"], item["output"] = "completed", output
            outputs.append(output)
            yield self._event(record, "response.mcp_call.completed", **where)
        yield self._item_done(record, index)

    async def _reasoning(self, record: ResponseRecord, text: str) -> AsyncIterator[JSON]:
        """A reasoning item whose one summary part streams in deltas (its thinking stays hidden)."""
        item: JSON = {"id": self.emu.new_id("rs"), "type": "reasoning", "summary": []}
        index, event = self._add_item(record, item)
        yield event
        where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
        part: JSON = {"type": "summary_text", "text": ""}
        yield self._event(
            record, "response.reasoning_summary_part.added", **where, part=copy.deepcopy(part)
        )
        for chunk in self.emu.model.chunks(text):
            await self._pause(record)
            part["text"] += chunk
            yield self._event(record, "response.reasoning_summary_text.delta", **where, delta=chunk)
        await self.emu.model.hold()
        yield self._event(record, "response.reasoning_summary_text.done", **where, text=text)
        item["summary"].append(part)
        yield self._event(
            record, "response.reasoning_summary_part.done", **where, part=copy.deepcopy(part)
        )
        yield self._item_done(record, index)

    async def _web_search_call(self, record: ResponseRecord, reply: Reply) -> AsyncIterator[JSON]:
        texts = user_texts(record.context)
        query = texts[-1] if texts else ""
        item: JSON = {
            "id": self.emu.new_id("ws"),
            "type": "web_search_call",
            "status": "in_progress",
            "action": {"type": "search", "query": query},
        }
        index, event = self._add_item(record, item)
        yield event
        where = {"output_index": index, "item_id": item["id"]}
        yield self._event(record, "response.web_search_call.in_progress", **where)
        await self.emu.model.hold()
        item["status"] = "searching"
        yield self._event(record, "response.web_search_call.searching", **where)
        item["status"] = "completed"
        if self._include(record, "web_search_call.action.sources"):
            item["action"]["sources"] = [{"type": "url", "url": s.url} for s in reply.web_sources]
        yield self._event(record, "response.web_search_call.completed", **where)
        yield self._item_done(record, index)

    async def _file_search_call(self, record: ResponseRecord) -> AsyncIterator[JSON]:
        texts = user_texts(record.context)
        query = texts[-1] if texts else ""
        item: JSON = {
            "id": self.emu.new_id("fs"),
            "type": "file_search_call",
            "status": "in_progress",
            "queries": [],
            "results": None,
        }
        index, event = self._add_item(record, item)
        yield event
        where = {"output_index": index, "item_id": item["id"]}
        yield self._event(record, "response.file_search_call.in_progress", **where)
        item["status"] = "searching"
        yield self._event(record, "response.file_search_call.searching", **where)
        item["status"] = "completed"
        item["queries"] = [query] if query else []
        if self._include(record, INCLUDE_SEARCH_RESULTS):
            found = self.emu.search(self._search_store_ids(record), query)
            item["results"] = [
                {
                    "file_id": stored.id,
                    "filename": stored.filename,
                    "text": passage,
                    "score": 0.9,
                    "attributes": {},
                }
                for stored, passage in found
            ]
        yield self._event(record, "response.file_search_call.completed", **where)
        yield self._item_done(record, index)

    async def _function_call(
        self, record: ResponseRecord, reply: Reply, name: str, arguments: str
    ) -> AsyncIterator[JSON]:
        item: JSON = {
            "id": self.emu.new_id("fc"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": self.emu.new_id("call"),
            "name": name,
            "arguments": "",
        }
        index, event = self._add_item(record, item)
        yield event
        where = {"item_id": item["id"], "output_index": index}
        for number, chunk in enumerate(self.emu.model.chunks(arguments)):
            if number:
                await self._pause(record)
            item["arguments"] += chunk
            yield self._event(
                record, "response.function_call_arguments.delta", **where, delta=chunk
            )
        yield self._event(
            record,
            "response.function_call_arguments.done",
            **where,
            name=name,
            arguments=item["arguments"],
        )
        item["status"] = "completed"
        yield self._item_done(record, index)

    def _container_for(self, record: ResponseRecord) -> Container:
        """The code_interpreter tool's container: a named one, or a fresh `auto` one."""
        for tool in record.tools:
            if not isinstance(tool, dict) or tool.get("type") != "code_interpreter":
                continue
            setting = tool.get("container")
            if isinstance(setting, str) and setting in self.state.containers:
                return self.state.containers[setting]
            file_ids = setting.get("file_ids", []) if isinstance(setting, dict) else []
            return self._new_container(f"Container for {record.id}", file_ids)
        return self._new_container(f"Container for {record.id}", [])

    def _new_container(
        self,
        name: str,
        file_ids: Iterable[str],
        expires_after: JSON | None = None,
        memory_limit: str = "1g",
    ) -> Container:
        created = now()
        container = Container(
            id=self.emu.new_id("cntr"),
            name=name,
            created_at=created,
            last_active_at=created,
            expires_after=expires_after or {"anchor": "last_active_at", "minutes": 20},
            memory_limit=memory_limit,
        )
        for file_id in file_ids:
            stored = self.emu.files.get(file_id)
            if stored is None:
                raise ApiError(404, f"File with id '{file_id}' not found.", param="file_ids")
            self._put_file(container, stored.filename, stored.content, "user")
        self.state.containers[container.id] = container
        return container

    def _put_file(
        self, container: Container, filename: str, content: bytes, source: str
    ) -> ContainerFile:
        stored = ContainerFile(
            id=self.emu.new_id("cfile"),
            container_id=container.id,
            path=f"/mnt/data/{filename}",
            content=content,
            created_at=now(),
            source=source,
        )
        container.files[stored.id] = stored
        container.last_active_at = stored.created_at
        return stored

    def _content_url(self, stored: ContainerFile) -> str:
        return f"{self.emu.base_url.rstrip('/')}/containers/{stored.container_id}/files/{stored.id}/content"

    async def _code_interpreter_call(
        self, record: ResponseRecord, container: Container, specs: Sequence[ImageSpec]
    ) -> AsyncIterator[JSON]:
        code = "\n".join(
            f"save({spec.filename!r})  # written by the emulated code interpreter" for spec in specs
        )
        item: JSON = {
            "id": self.emu.new_id("ci"),
            "type": "code_interpreter_call",
            "status": "in_progress",
            "container_id": container.id,
            "code": "",
            "outputs": None,
        }
        index, event = self._add_item(record, item)
        yield event
        where = {"output_index": index, "item_id": item["id"]}
        yield self._event(record, "response.code_interpreter_call.in_progress", **where)
        item["code"] = code
        yield self._event(record, "response.code_interpreter_call_code.delta", **where, delta=code)
        yield self._event(record, "response.code_interpreter_call_code.done", **where, code=code)
        item["status"] = "interpreting"
        yield self._event(record, "response.code_interpreter_call.interpreting", **where)
        outputs: list[JSON] = []
        for spec in specs:
            stored = self._put_file(container, spec.filename, spec.content, "assistant")
            if spec.is_image:
                outputs.append({"type": "image", "url": self._content_url(stored)})
            else:
                outputs.append(
                    {"type": "logs", "logs": f"Saved {stored.path} ({len(spec.content)} bytes)"}
                )
        item["status"] = "completed"
        if self._include(record, INCLUDE_CODE_OUTPUTS):
            item["outputs"] = outputs
        yield self._event(record, "response.code_interpreter_call.completed", **where)
        yield self._item_done(record, index)

    # -- responses: the rest -------------------------------------------------------------------

    async def get_response(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request.match_info["response_id"])
        if request.query.get("stream") == "true":
            if not record.background:
                raise ApiError(400, "Only background responses can be streamed again.")
            after = int(request.query.get("starting_after", "-1"))
            return await self._stream_recorded(request, record, after)
        return self.emu.json(self._snapshot(record), "Response")

    async def delete_response(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request.match_info["response_id"])
        record.stored = False
        return web.json_response({"id": record.id, "object": "response", "deleted": True})

    async def cancel_response(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request.match_info["response_id"])
        if not record.background:
            raise ApiError(400, "Cannot cancel a synchronous response.")
        if record.status not in TERMINAL:
            record.cancel_requested = True
            if record.task is not None and not record.task.done():
                record.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await record.task
            if record.status not in TERMINAL:
                self._settle(record, "cancelled")
        return self.emu.json(self._snapshot(record), "Response")

    async def list_input_items(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request.match_info["response_id"])
        return self.emu.json(paginate(record.input_items, request), "ResponseItemList")

    # -- containers ----------------------------------------------------------------------------

    async def create_container(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        self.emu.check_request(body, "CreateContainerBody")
        if not body.get("name"):
            raise ApiError(400, "Missing required parameter: 'name'.", param="name")
        container = self._new_container(
            str(body["name"]),
            body.get("file_ids") or [],
            body.get("expires_after"),
            body.get("memory_limit") or "1g",
        )
        return self.emu.json(container.resource(), "ContainerResource")

    async def list_containers(self, request: web.Request) -> web.StreamResponse:
        listed = [c.resource() for c in self.state.containers.values() if c.status != "deleted"]
        name = request.query.get("name")
        if name:
            listed = [c for c in listed if c["name"] == name]
        return self.emu.json(paginate(listed, request), "ContainerListResource")

    async def get_container(self, request: web.Request) -> web.StreamResponse:
        return self.emu.json(
            self._container(request.match_info["container_id"]).resource(), "ContainerResource"
        )

    async def delete_container(self, request: web.Request) -> web.StreamResponse:
        container_id = request.match_info["container_id"]
        self._container(container_id)
        del self.state.containers[container_id]
        return web.json_response(
            {"id": container_id, "object": "container.deleted", "deleted": True}
        )

    async def create_container_file(self, request: web.Request) -> web.StreamResponse:
        container = self._container(request.match_info["container_id"])
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            upload = form.get("file")
            if not isinstance(upload, web.FileField):
                raise ApiError(400, "Missing required parameter: 'file'.", param="file")
            stored = self._put_file(container, upload.filename, upload.file.read(), "user")
        else:
            body = await read_json(request)
            source = self.emu.files.get(str(body.get("file_id")))
            if source is None:
                raise ApiError(
                    404, f"File with id '{body.get('file_id')}' not found.", param="file_id"
                )
            stored = self._put_file(container, source.filename, source.content, "user")
        return self.emu.json(stored.resource(), "ContainerFileResource")

    async def list_container_files(self, request: web.Request) -> web.StreamResponse:
        container = self._container(request.match_info["container_id"])
        listed = [stored.resource() for stored in container.files.values()]
        return self.emu.json(paginate(listed, request), "ContainerFileListResource")

    def _file(self, request: web.Request) -> ContainerFile:
        container = self._container(request.match_info["container_id"])
        file_id = request.match_info["file_id"]
        stored = container.files.get(file_id)
        if stored is None:
            raise ApiError(
                404, f"File with id '{file_id}' not found in container '{container.id}'."
            )
        return stored

    async def get_container_file(self, request: web.Request) -> web.StreamResponse:
        return self.emu.json(self._file(request).resource(), "ContainerFileResource")

    async def delete_container_file(self, request: web.Request) -> web.StreamResponse:
        stored = self._file(request)
        del self.state.containers[stored.container_id].files[stored.id]
        return web.json_response(
            {"id": stored.id, "object": "container.file.deleted", "deleted": True}
        )

    async def get_container_file_content(self, request: web.Request) -> web.StreamResponse:
        stored = self._file(request)
        kind = mimetypes.guess_type(stored.filename)[0] or "application/octet-stream"
        return web.Response(body=stored.content, content_type=kind)

    # -- lifecycle -----------------------------------------------------------------------------

    async def shutdown(self, _app: web.Application) -> None:
        tasks = [
            r.task
            for r in self.state.responses.values()
            if r.task is not None and not r.task.done()
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def setup(app: web.Application, emu: Any) -> None:
    """Register the Responses, Conversations and Containers routes; state goes to `emu.responses_api`."""
    state = ResponsesState()
    emu.responses_api = state
    api = ResponsesApi(emu, state)
    for method, path, handler in api.routes():
        app.router.add_route(method, path, handler)
    app.on_shutdown.append(api.shutdown)
