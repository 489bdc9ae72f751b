"""An emulator of the OpenAI HTTP API for tests: Assistants v2, Files and Vector stores.

It is a real aiohttp server on 127.0.0.1 that the real `openai` SDK talks to over HTTP, in the
test's own event loop. Every answer is checked against OpenAI's OpenAPI spec (the subset in
tests/openapi/), and so is every request body the client sends; what does not match lands in
`spec_violations`. The replies come from the scripted model in `model.py`.

Faults: `fail_next` fails the next requests under a path; `faults` (common.Faults) fails requests
at a seeded random rate (500, 503, 429 with retry-after, connections reset before or after the
request is handled, streams that stall without closing), for both API families.

The Responses, Conversations and Containers endpoints live in `openai_responses.py`, which
plugs its routes into the same server through `setup(app, emulator)`.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from aiohttp import web

from tests.emulators import openai_responses, spec
from tests.emulators.common import (
    HTTP_500,
    HTTP_503,
    JSON,
    RATE_LIMITED,
    RESET_AFTER,
    RESET_BEFORE,
    STALL,
    ApiError,
    Faults,
    Handler,
    ScriptError,
    SseEvent,
    now,
    read_json,
)
from tests.emulators.model import Reply, ScriptedModel, TurnContext

ACTIVE_RUN_STATUSES = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
ASSISTANTS_PATHS = ("/v1/assistants", "/v1/threads")
# File search accepts these; other extensions index as "failed" (unsupported_file).
# fmt: off
SEARCHABLE_EXTENSIONS = frozenset({
    ".c", ".cpp", ".cs", ".css", ".csv", ".doc", ".docx", ".go", ".html", ".java", ".js", ".json",
    ".md", ".pdf", ".php", ".pptx", ".py", ".rb", ".sh", ".tex", ".ts", ".txt",
})
# Attaching one of these to a vector store is refused outright with a 400.
REJECTED_EXTENSIONS = frozenset({
    ".exe", ".zip", ".dll", ".so", ".bin", ".tar", ".gz", ".tgz", ".7z", ".rar", ".dmg", ".iso",
    ".msi",
})
# fmt: on
CHUNKING_STRATEGY = {
    "type": "static",
    "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
}
FAULT_STATUS = {HTTP_500: 500, HTTP_503: 503, RATE_LIMITED: 429}
# The fault a streamed answer breaks off with, and after how many events.
STREAM_FAULT = web.RequestKey("stream_fault", tuple[str, int])
ID_SEGMENT = re.compile(r"/[a-z]+[_-][0-9a-f]{8,}")
ERROR_MESSAGES = {
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}


@dataclass
class StoredFile:
    id: str
    filename: str
    content: bytes
    purpose: str
    created_at: int

    def to_api(self) -> JSON:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class VectorStore:
    id: str
    name: str
    file_ids: list[str]
    file_status: dict[str, str]
    expires_after: JSON | None
    metadata: JSON
    created_at: int
    file_errors: dict[str, JSON] = field(default_factory=dict)
    file_created_at: dict[str, int] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]


@dataclass
class FailRule:
    path_prefix: str
    status: int
    times: int
    method: str | None
    retry_after: float | None


@dataclass
class RunState:
    """One run: `obj` is the RunObject the API shows; the rest is the emulator's bookkeeping."""

    obj: JSON
    tools: list[JSON]
    tool_outputs: list[JSON] = field(default_factory=list)
    steps: list[JSON] = field(default_factory=list)
    reply: Reply | None = None
    pending_step: JSON | None = None
    message: JSON | None = None
    task: asyncio.Task[None] | None = None
    stream: asyncio.Queue[SseEvent | None] | None = None
    # What the run's tool rounds used so far: a run's usage covers its whole course.
    spent_prompt_tokens: int = 0
    spent_completion_tokens: int = 0

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def thread_id(self) -> str:
        return str(self.obj["thread_id"])

    @property
    def status(self) -> str:
        return str(self.obj["status"])


@dataclass
class _Piece:
    """A stretch of the reply text; an annotated one is streamed whole, in one delta."""

    text: str
    annotation: JSON | None = None


def message_text(message: JSON) -> str:
    parts = [part["text"]["value"] for part in message["content"] if part["type"] == "text"]
    return "\n".join(parts)


def count_tokens(*texts: str | None) -> int:
    return sum(len(text.split()) for text in texts if text)


class OpenAIEmulator:
    def __init__(self, model: ScriptedModel | None = None) -> None:
        self.model = model or ScriptedModel()
        self.api_key = "sk-test-key"
        self.assistants_retired = False
        self.models: set[str] = {
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-5-mini",
        }  # what /v1/models/{id} knows
        self.indexing_delay = 0.05
        self.poll_after_ms = 10  # sent as `openai-poll-after-ms`, so SDK pollers poll quickly
        self.requests: list[RecordedRequest] = []
        self.spec_violations: list[str] = []
        # Spec checks cost much CPU per request; the load benchmark turns them off.
        self.validate_spec = True
        self.assistants: dict[str, JSON] = {}
        self.threads: dict[str, JSON] = {}
        self.messages: dict[str, list[JSON]] = {}
        self.runs: dict[str, RunState] = {}
        self.files: dict[str, StoredFile] = {}
        self.vector_stores: dict[str, VectorStore] = {}
        self.file_batches: dict[str, JSON] = {}
        self._fail_rules: list[FailRule] = []
        # Random faults (see `Faults`); requests with OBSERVER_HEADER are spared. Rate-limit
        # faults ask for `faults.retry_after` seconds.
        self.faults = Faults()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._closing = False

    # ----------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    async def start(self) -> None:
        app = web.Application(
            middlewares=[self._record, self._authenticate, self._retire, self._inject_failures],
            client_max_size=64 * 1024 * 1024,
        )
        self._add_routes(app)
        openai_responses.setup(app, self)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self._closing = True
        for run in self.runs.values():
            if run.stream is not None:
                run.stream.put_nowait(None)
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ----------------------------------------------------------------- helpers for tests

    def new_id(self, prefix: str) -> str:
        """A unique id shaped like OpenAI's: `thread_…`, `run_…`, `file-…` (a prefix ending in
        `-` or `_` is used as is)."""
        digest = hashlib.sha256(f"{prefix}:{next(self._ids)}".encode()).hexdigest()[:24]
        separator = "" if prefix.endswith(("-", "_")) else "_"
        return f"{prefix}{separator}{digest}"

    def add_assistant(
        self,
        name: str,
        model: str = "gpt-4o",
        instructions: str = "You are a helpful assistant.",
        tools: Sequence[JSON] = (),
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        tool_resources: JSON | None = None,
    ) -> str:
        assistant = self._new_assistant(
            {
                "name": name,
                "model": model,
                "instructions": instructions,
                "tools": list(tools),
                "description": description,
                "metadata": metadata or {},
                "tool_resources": tool_resources,
            }
        )
        return str(assistant["id"])

    def add_file(self, filename: str, content: bytes, purpose: str = "assistants") -> StoredFile:
        stored = StoredFile(self.new_id("file-"), filename, content, purpose, now())
        self.files[stored.id] = stored
        return stored

    def fail_next(
        self,
        path_prefix: str,
        status: int,
        times: int = 1,
        method: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `times` requests under `path_prefix` (with or without `/v1`) with an
        OpenAI error of this HTTP status (0: drop the connection unanswered). `retry_after` (seconds) is sent as `retry-after` and
        `retry-after-ms`; the SDK waits that long when it is above 0."""
        prefix = path_prefix if path_prefix.startswith("/v1") else "/v1" + path_prefix
        method = method.upper() if method else None
        self._fail_rules.append(FailRule(prefix, status, times, method, retry_after))

    def search(
        self, vector_store_ids: list[str], query: str, max_results: int = 5
    ) -> list[tuple[StoredFile, str]]:
        """Passages of the stores' indexed files, best first, scored by words shared with query."""
        wanted = set(re.findall(r"\w+", query.lower()))
        scored: list[tuple[int, int, StoredFile, str]] = []
        for store_id in vector_store_ids:
            store = self.vector_stores.get(store_id)
            if store is None:
                continue
            for file_id in store.file_ids:
                stored = self.files.get(file_id)
                if stored is None or store.file_status.get(file_id) != "completed":
                    continue
                for passage in _passages(stored.content.decode("utf-8")):
                    score = len(wanted & set(re.findall(r"\w+", passage.lower())))
                    if score > 0:
                        scored.append((score, len(scored), stored, passage))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [(stored, passage) for _, _, stored, passage in scored[:max_results]]

    async def lose_run(self, run_id: str) -> None:
        """The backend forgets a run (Assistants) or a response (a lost node, a purge): it
        stops where it stands, and asking for it answers 404 from now on. What it had added to
        its thread stays there, as it would."""
        run = self.runs.pop(run_id, None)
        task = run.task if run is not None else None
        if run is None:
            state = self.responses_api
            record = state.responses.pop(run_id)
            task = record.task
            if record.conversation_id and state.busy.get(record.conversation_id) == run_id:
                del state.busy[record.conversation_id]
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def user_messages(self, text: str) -> int:
        """How many times the person's message `text` is in the backend's conversations
        (Assistants threads and Responses conversations alike)."""
        in_threads = sum(
            message["role"] == "user" and message_text(message) == text
            for messages in self.messages.values()
            for message in messages
        )
        in_conversations = sum(
            openai_responses.user_texts(items).count(text)
            for items in self.responses_api.conversation_items.values()
        )
        return in_threads + in_conversations

    # ----------------------------------------------------------------- responses and checks

    def check_request(self, body: Any, schema: str) -> None:
        if not self.validate_spec:
            return
        self.spec_violations.extend(f"request: {v}" for v in spec.violations(body, schema))

    def _check_response(self, data: Any, schema: str) -> None:
        if not self.validate_spec:
            return
        self.spec_violations.extend(f"response: {v}" for v in spec.violations(data, schema))

    def json(self, data: JSON, schema: str, status: int = 200) -> web.Response:
        self._check_response(data, schema)
        return web.json_response(
            data, status=status, headers={"openai-poll-after-ms": str(self.poll_after_ms)}
        )

    def error(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> web.Response:
        body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        self._check_response(body, "ErrorResponse")
        return web.json_response(body, status=status)

    async def sse(
        self, request: web.Request, events: AsyncIterator[SseEvent]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        fault, sent = request.get(STREAM_FAULT), 0
        async for name, data, schema in events:
            if fault is not None and sent == fault[1]:
                await self._break_stream(request, fault[0])
                break
            sent += 1
            if isinstance(data, str):
                payload = data
            else:
                if schema is not None:
                    self._check_response(data, schema)
                payload = json.dumps(data)
            frame = (f"event: {name}\n" if name else "") + f"data: {payload}\n\n"
            try:
                await response.write(frame.encode())
            except (ConnectionResetError, ConnectionError):
                break
        return response

    async def _break_stream(self, request: web.Request, fault: str) -> None:
        """A stream cut by a fault: dropped (reset) or left open without another event (stall)."""
        if fault == STALL:
            # aiohttp tells a handler nothing when its client hangs up: look now and then.
            while not self._closing and not _closed(request):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        if request.transport is not None:
            request.transport.abort()

    async def _body(self, request: web.Request, schema: str | None = None) -> JSON:
        body = await read_json(request)
        if schema is not None:
            self.check_request(body, schema)
        return body

    # ----------------------------------------------------------------- middlewares

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body: Any = None
        if request.body_exists and request.content_type == "application/json":
            try:
                body = json.loads(await request.read())
            except ValueError:
                body = None
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.query), body, dict(request.headers)
            )
        )
        try:
            response = await handler(request)
        except ApiError as exc:  # raised by the Assistants and the Responses routes alike
            response = self.error(
                exc.status,
                exc.message,
                ERROR_TYPES.get(exc.status, "server_error"),
                exc.code,
                exc.param,
            )
        except web.HTTPNotFound:
            return self.error(404, f"Invalid URL ({request.method} {request.path})")
        except web.HTTPMethodNotAllowed:
            return self.error(405, f"Invalid method for URL ({request.method} {request.path})")
        if not response.prepared:
            response.headers.setdefault("x-request-id", "req_" + self.new_id("")[:24])
        return response

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return self.error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        key = header.removeprefix("Bearer ")
        if key != self.api_key:
            shown = key[:3] + "*" * max(0, len(key) - 7) + key[-4:]
            return self.error(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return await handler(request)

    @web.middleware
    async def _retire(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(ASSISTANTS_PATHS):
            return await handler(request)
        if self.assistants_retired:
            return self.error(404, f"Invalid URL ({request.method} {request.path})")
        if request.headers.get("OpenAI-Beta") != "assistants=v2":
            return self.error(
                400,
                "You must provide the 'OpenAI-Beta' header to access the Assistants API. Please "
                "try again by setting the header 'OpenAI-Beta: assistants=v2'.",
                code="invalid_beta",
            )
        return await handler(request)

    @web.middleware
    async def _inject_failures(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        for rule in self._fail_rules:
            if rule.times <= 0 or not request.path.startswith(rule.path_prefix):
                continue
            if rule.method is not None and rule.method != request.method:
                continue
            rule.times -= 1
            if rule.status == 0:  # a network failure: the connection drops without an answer
                return _drop(request)
            code = "rate_limit_exceeded" if rule.status == 429 else None
            response = self.error(
                rule.status,
                ERROR_MESSAGES.get(rule.status, f"Injected error {rule.status}."),
                ERROR_TYPES.get(rule.status, "server_error"),
                code,
            )
            if rule.retry_after is not None:
                response.headers["retry-after"] = f"{rule.retry_after:g}"
                response.headers["retry-after-ms"] = f"{rule.retry_after * 1000:g}"
            return response
        self._fail_rules = [rule for rule in self._fail_rules if rule.times > 0]
        fault = None
        if not Faults.exempt(request):
            name = f"{request.method} {ID_SEGMENT.sub('/{id}', request.path)}"
            fault = self.faults.pick(name, streamed=await _streamed(request))
        if fault == RESET_BEFORE:
            return _drop(request)
        if fault in FAULT_STATUS:
            status = FAULT_STATUS[fault]
            response = self.error(
                status,
                ERROR_MESSAGES[status],
                ERROR_TYPES.get(status, "server_error"),
                "rate_limit_exceeded" if status == 429 else None,
            )
            if status == 429:
                response.headers["retry-after"] = f"{self.faults.retry_after:g}"
                response.headers["retry-after-ms"] = f"{self.faults.retry_after * 1000:g}"
            return response
        if fault is not None:  # reset after handling, or stall: a stream breaks partway
            request[STREAM_FAULT] = (fault, 1 + len(self.faults.injected) % 3)
        response = await handler(request)
        if fault == RESET_AFTER and not response.prepared:
            return _drop(request)  # handled, and the answer is lost
        return response

    # ----------------------------------------------------------------- routes

    def _add_routes(self, app: web.Application) -> None:
        r = "/v1"
        app.router.add_routes(
            [
                web.get(f"{r}/models", self._list_models),
                web.get(f"{r}/models/{{model}}", self._get_model),
                web.post(f"{r}/assistants", self._create_assistant),
                web.get(f"{r}/assistants", self._list_assistants),
                web.get(f"{r}/assistants/{{assistant_id}}", self._get_assistant),
                web.post(f"{r}/assistants/{{assistant_id}}", self._modify_assistant),
                web.delete(f"{r}/assistants/{{assistant_id}}", self._delete_assistant),
                web.post(f"{r}/threads", self._create_thread),
                web.post(f"{r}/threads/runs", self._create_thread_and_run),
                web.get(f"{r}/threads/{{thread_id}}", self._get_thread),
                web.post(f"{r}/threads/{{thread_id}}", self._modify_thread),
                web.delete(f"{r}/threads/{{thread_id}}", self._delete_thread),
                web.post(f"{r}/threads/{{thread_id}}/messages", self._create_message),
                web.get(f"{r}/threads/{{thread_id}}/messages", self._list_messages),
                web.get(f"{r}/threads/{{thread_id}}/messages/{{message_id}}", self._get_message),
                web.post(
                    f"{r}/threads/{{thread_id}}/messages/{{message_id}}", self._modify_message
                ),
                web.delete(
                    f"{r}/threads/{{thread_id}}/messages/{{message_id}}", self._delete_message
                ),
                web.post(f"{r}/threads/{{thread_id}}/runs", self._create_run),
                web.get(f"{r}/threads/{{thread_id}}/runs", self._list_runs),
                web.get(f"{r}/threads/{{thread_id}}/runs/{{run_id}}", self._get_run),
                web.post(f"{r}/threads/{{thread_id}}/runs/{{run_id}}", self._modify_run),
                web.post(f"{r}/threads/{{thread_id}}/runs/{{run_id}}/cancel", self._cancel_run),
                web.post(
                    f"{r}/threads/{{thread_id}}/runs/{{run_id}}/submit_tool_outputs",
                    self._submit_tool_outputs,
                ),
                web.get(f"{r}/threads/{{thread_id}}/runs/{{run_id}}/steps", self._list_steps),
                web.get(
                    f"{r}/threads/{{thread_id}}/runs/{{run_id}}/steps/{{step_id}}", self._get_step
                ),
                web.post(f"{r}/files", self._upload_file),
                web.get(f"{r}/files", self._list_files),
                web.get(f"{r}/files/{{file_id}}", self._get_file),
                web.delete(f"{r}/files/{{file_id}}", self._delete_file),
                web.get(f"{r}/files/{{file_id}}/content", self._file_content),
                web.post(f"{r}/vector_stores", self._create_vector_store),
                web.get(f"{r}/vector_stores", self._list_vector_stores),
                web.get(f"{r}/vector_stores/{{vs_id}}", self._get_vector_store),
                web.post(f"{r}/vector_stores/{{vs_id}}", self._modify_vector_store),
                web.delete(f"{r}/vector_stores/{{vs_id}}", self._delete_vector_store),
                web.post(f"{r}/vector_stores/{{vs_id}}/files", self._create_vs_file),
                web.get(f"{r}/vector_stores/{{vs_id}}/files", self._list_vs_files),
                web.get(f"{r}/vector_stores/{{vs_id}}/files/{{file_id}}", self._get_vs_file),
                web.delete(f"{r}/vector_stores/{{vs_id}}/files/{{file_id}}", self._delete_vs_file),
                web.post(f"{r}/vector_stores/{{vs_id}}/file_batches", self._create_batch),
                web.get(f"{r}/vector_stores/{{vs_id}}/file_batches/{{batch_id}}", self._get_batch),
                web.post(
                    f"{r}/vector_stores/{{vs_id}}/file_batches/{{batch_id}}/cancel",
                    self._cancel_batch,
                ),
                web.get(
                    f"{r}/vector_stores/{{vs_id}}/file_batches/{{batch_id}}/files",
                    self._list_batch_files,
                ),
            ]
        )

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        data = [
            {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "system"}
            for model in sorted(self.models)
        ]
        return self.json({"object": "list", "data": data}, "ListModelsResponse")

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        if model not in self.models:
            return self.error(
                404,
                f"The model '{model}' does not exist or you do not have access to it.",
                code="model_not_found",
            )
        data = {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "system"}
        return self.json(data, "Model")

    def _page(self, request: web.Request, items: Sequence[JSON], schema: str) -> web.Response:
        """A cursor page (limit, order, after, before) of `items`, which are oldest first."""
        query = request.query
        try:
            limit = int(query.get("limit", "20"))
        except ValueError as exc:
            raise ApiError(400, "Invalid 'limit': expected an integer.", param="limit") from exc
        if not 1 <= limit <= 100:
            raise ApiError(
                400,
                f"Invalid 'limit': integer below minimum value. Expected a value >= 1 and "
                f"<= 100, but got {limit} instead.",
                code="integer_below_min_value" if limit < 1 else "integer_above_max_value",
                param="limit",
            )
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, f"Invalid 'order': {order!r}.", param="order")
        ordered = list(items) if order == "asc" else list(reversed(items))
        ids = [item["id"] for item in ordered]
        start, end = 0, len(ordered)
        if "after" in query and query["after"] in ids:
            start = ids.index(query["after"]) + 1
        if "before" in query and query["before"] in ids:
            end = ids.index(query["before"])
        window = ordered[start:end]
        data = window[:limit]
        page = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(window) > limit,
        }
        return self.json(page, schema)

    # ----------------------------------------------------------------- assistants

    def _new_assistant(self, body: JSON) -> JSON:
        assistant = {
            "id": self.new_id("asst"),
            "object": "assistant",
            "created_at": now(),
            "name": body.get("name"),
            "description": body.get("description"),
            "model": body["model"],
            "instructions": body.get("instructions"),
            "tools": list(body.get("tools") or []),
            "tool_resources": self._tool_resources(body.get("tool_resources")),
            "metadata": body.get("metadata") or {},
            "temperature": body.get("temperature", 1.0),
            "top_p": body.get("top_p", 1.0),
            "response_format": body.get("response_format", "auto"),
        }
        self.assistants[assistant["id"]] = assistant
        return assistant

    def _assistant(self, assistant_id: str) -> JSON:
        if assistant_id not in self.assistants:
            raise ApiError(404, f"No assistant found with id '{assistant_id}'.")
        return self.assistants[assistant_id]

    async def _create_assistant(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request, "CreateAssistantRequest")
        if "model" not in body:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        return self.json(self._new_assistant(body), "AssistantObject")

    async def _list_assistants(self, request: web.Request) -> web.StreamResponse:
        return self._page(request, list(self.assistants.values()), "ListAssistantsResponse")

    async def _get_assistant(self, request: web.Request) -> web.StreamResponse:
        return self.json(self._assistant(request.match_info["assistant_id"]), "AssistantObject")

    async def _modify_assistant(self, request: web.Request) -> web.StreamResponse:
        assistant = self._assistant(request.match_info["assistant_id"])
        body = await self._body(request, "ModifyAssistantRequest")
        for key, value in body.items():
            if key == "tool_resources":
                assistant[key] = self._tool_resources(value)
            elif key in assistant and key not in ("id", "object", "created_at"):
                assistant[key] = value
        return self.json(assistant, "AssistantObject")

    async def _delete_assistant(self, request: web.Request) -> web.StreamResponse:
        assistant = self._assistant(request.match_info["assistant_id"])
        del self.assistants[assistant["id"]]
        deleted = {"id": assistant["id"], "object": "assistant.deleted", "deleted": True}
        return self.json(deleted, "DeleteAssistantResponse")

    def _tool_resources(self, resources: JSON | None) -> JSON | None:
        """Normalise tool_resources; `file_search.vector_stores` creates the stores it names."""
        if not resources:
            return None
        result: JSON = {}
        if "code_interpreter" in resources:
            result["code_interpreter"] = {
                "file_ids": list(resources["code_interpreter"].get("file_ids") or [])
            }
        if "file_search" in resources:
            file_search = resources["file_search"]
            store_ids = list(file_search.get("vector_store_ids") or [])
            for helper in file_search.get("vector_stores") or []:
                store = self._new_vector_store({"file_ids": helper.get("file_ids") or []})
                store_ids.append(store.id)
            result["file_search"] = {"vector_store_ids": store_ids}
        return result

    # ----------------------------------------------------------------- threads and messages

    def _thread(self, thread_id: str) -> JSON:
        if thread_id not in self.threads:
            raise ApiError(404, f"No thread found with id '{thread_id}'.")
        return self.threads[thread_id]

    def _active_run(self, thread_id: str) -> RunState | None:
        for run in self.runs.values():
            if run.thread_id == thread_id and run.status in ACTIVE_RUN_STATUSES:
                return run
        return None

    def _new_thread(self, body: JSON) -> JSON:
        thread: JSON = {
            "id": self.new_id("thread"),
            "object": "thread",
            "created_at": now(),
            "tool_resources": self._tool_resources(body.get("tool_resources")),
            "metadata": body.get("metadata") or {},
        }
        self.threads[thread["id"]] = thread
        self.messages[thread["id"]] = []
        for message in body.get("messages") or []:
            self._new_message(thread["id"], message)
        return thread

    def _new_message(self, thread_id: str, body: JSON) -> JSON:
        role = body.get("role")
        if role not in ("user", "assistant"):
            raise ApiError(
                400,
                f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.",
                code="invalid_value",
                param="role",
            )
        return self._store_message(
            thread_id,
            role,
            self._content_parts(body.get("content")),
            attachments=list(body.get("attachments") or []),
            metadata=body.get("metadata") or {},
        )

    def _store_message(
        self,
        thread_id: str,
        role: str,
        content: list[JSON],
        attachments: list[JSON] | None = None,
        metadata: JSON | None = None,
        run: RunState | None = None,
    ) -> JSON:
        message = {
            "id": self.new_id("msg"),
            "object": "thread.message",
            "created_at": now(),
            "thread_id": thread_id,
            "status": "completed" if run is None else "in_progress",
            "incomplete_details": None,
            "completed_at": None,
            "incomplete_at": None,
            "role": role,
            "content": content,
            "assistant_id": None if run is None else run.obj["assistant_id"],
            "run_id": None if run is None else run.id,
            "attachments": attachments or [],
            "metadata": metadata or {},
        }
        self.messages[thread_id].append(message)
        return message

    def _content_parts(self, content: Any) -> list[JSON]:
        if isinstance(content, str):
            return [{"type": "text", "text": {"value": content, "annotations": []}}]
        if not isinstance(content, list) or not content:
            raise ApiError(400, "Missing required parameter: 'content'.", param="content")
        parts: list[JSON] = []
        for part in content:
            if part.get("type") == "text":
                parts.append({"type": "text", "text": {"value": part["text"], "annotations": []}})
            elif part.get("type") == "image_file":
                parts.append({"type": "image_file", "image_file": dict(part["image_file"])})
            elif part.get("type") == "image_url":
                parts.append({"type": "image_url", "image_url": dict(part["image_url"])})
            else:
                raise ApiError(
                    400, f"Invalid content part type {part.get('type')!r}.", param="content"
                )
        return parts

    def _message(self, thread_id: str, message_id: str) -> JSON:
        for message in self.messages[self._thread(thread_id)["id"]]:
            if message["id"] == message_id:
                return message
        raise ApiError(404, f"No message found with id '{message_id}'.")

    async def _create_thread(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request, "CreateThreadRequest")
        return self.json(self._new_thread(body), "ThreadObject")

    async def _get_thread(self, request: web.Request) -> web.StreamResponse:
        return self.json(self._thread(request.match_info["thread_id"]), "ThreadObject")

    async def _modify_thread(self, request: web.Request) -> web.StreamResponse:
        thread = self._thread(request.match_info["thread_id"])
        body = await self._body(request, "ModifyThreadRequest")
        if "metadata" in body:
            thread["metadata"] = body["metadata"] or {}
        if "tool_resources" in body:
            thread["tool_resources"] = self._tool_resources(body["tool_resources"])
        return self.json(thread, "ThreadObject")

    async def _delete_thread(self, request: web.Request) -> web.StreamResponse:
        thread = self._thread(request.match_info["thread_id"])
        del self.threads[thread["id"]]
        del self.messages[thread["id"]]
        deleted = {"id": thread["id"], "object": "thread.deleted", "deleted": True}
        return self.json(deleted, "DeleteThreadResponse")

    async def _create_message(self, request: web.Request) -> web.StreamResponse:
        thread = self._thread(request.match_info["thread_id"])
        body = await self._body(request, "CreateMessageRequest")
        active = self._active_run(thread["id"])
        if active is not None:
            raise ApiError(
                400, f"Can't add messages to {thread['id']} while a run {active.id} is active."
            )
        return self.json(self._new_message(thread["id"], body), "MessageObject")

    async def _list_messages(self, request: web.Request) -> web.StreamResponse:
        messages = self.messages[self._thread(request.match_info["thread_id"])["id"]]
        if run_id := request.query.get("run_id"):
            messages = [message for message in messages if message["run_id"] == run_id]
        return self._page(request, messages, "ListMessagesResponse")

    async def _get_message(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        return self.json(self._message(info["thread_id"], info["message_id"]), "MessageObject")

    async def _modify_message(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        message = self._message(info["thread_id"], info["message_id"])
        body = await self._body(request, "ModifyMessageRequest")
        if "metadata" in body:
            message["metadata"] = body["metadata"] or {}
        return self.json(message, "MessageObject")

    async def _delete_message(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        message = self._message(info["thread_id"], info["message_id"])
        self.messages[info["thread_id"]].remove(message)
        deleted = {"id": message["id"], "object": "thread.message.deleted", "deleted": True}
        return self.json(deleted, "DeleteMessageResponse")

    # ----------------------------------------------------------------- runs: endpoints

    def _run(self, thread_id: str, run_id: str) -> RunState:
        self._thread(thread_id)
        run = self.runs.get(run_id)
        if run is None or run.thread_id != thread_id:
            raise ApiError(404, f"No run found with id '{run_id}'.")
        return run

    def _new_run(self, thread: JSON, body: JSON) -> RunState:
        assistant = self._assistant(str(body.get("assistant_id")))
        active = self._active_run(thread["id"])
        if active is not None:
            raise ApiError(400, f"Thread {thread['id']} already has an active run {active.id}.")
        instructions = body.get("instructions")
        if instructions is None:
            instructions = assistant["instructions"] or ""
        if body.get("additional_instructions"):
            instructions = f"{instructions}\n{body['additional_instructions']}".strip()
        tools = body.get("tools")
        if tools is None:
            tools = assistant["tools"]
        for message in body.get("additional_messages") or []:
            self._new_message(thread["id"], message)
        created = now()
        obj: JSON = {
            "id": self.new_id("run"),
            "object": "thread.run",
            "created_at": created,
            "thread_id": thread["id"],
            "assistant_id": assistant["id"],
            "status": "queued",
            "required_action": None,
            "last_error": None,
            "expires_at": created + 600,
            "started_at": None,
            "cancelled_at": None,
            "failed_at": None,
            "completed_at": None,
            "incomplete_details": None,
            "model": body.get("model") or assistant["model"],
            "instructions": instructions,
            "tools": list(tools),
            "metadata": body.get("metadata") or {},
            "usage": None,
            "temperature": body.get("temperature", assistant["temperature"]),
            "top_p": body.get("top_p", assistant["top_p"]),
            "max_prompt_tokens": body.get("max_prompt_tokens"),
            "max_completion_tokens": body.get("max_completion_tokens"),
            "truncation_strategy": body.get("truncation_strategy")
            or {"type": "auto", "last_messages": None},
            "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "response_format": body.get("response_format") or "auto",
        }
        run = RunState(obj=obj, tools=list(tools))
        self.runs[run.id] = run
        return run

    async def _start(
        self, request: web.Request, run: RunState, stream: bool, new_thread: JSON | None = None
    ) -> web.StreamResponse:
        """Start (or resume) the run's background task; stream its events if asked to."""
        queue: asyncio.Queue[SseEvent | None] | None = asyncio.Queue() if stream else None
        run.stream = queue
        if queue is not None and new_thread is not None:
            queue.put_nowait(("thread.created", copy.deepcopy(new_thread), "ThreadObject"))
        snapshot = copy.deepcopy(run.obj)
        resume = run.pending_step is not None
        run.task = self._spawn(self._advance(run, resume))
        run.task.add_done_callback(lambda task: self._after_task(run, task))
        if queue is None:
            return self.json(snapshot, "RunObject")
        return await self.sse(request, _drain(queue))

    async def _create_run(self, request: web.Request) -> web.StreamResponse:
        thread = self._thread(request.match_info["thread_id"])
        body = await self._body(request, "CreateRunRequest")
        run = self._new_run(thread, body)
        return await self._start(request, run, bool(body.get("stream")))

    async def _create_thread_and_run(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request, "CreateThreadAndRunRequest")
        self._assistant(str(body.get("assistant_id")))
        thread = self._new_thread(body.get("thread") or {})
        if body.get("tool_resources") and thread["tool_resources"] is None:
            thread["tool_resources"] = self._tool_resources(body["tool_resources"])
        run = self._new_run(thread, body)
        return await self._start(request, run, bool(body.get("stream")), new_thread=thread)

    async def _list_runs(self, request: web.Request) -> web.StreamResponse:
        thread = self._thread(request.match_info["thread_id"])
        runs = [run.obj for run in self.runs.values() if run.thread_id == thread["id"]]
        return self._page(request, runs, "ListRunsResponse")

    async def _get_run(self, request: web.Request) -> web.StreamResponse:
        run = self._run(request.match_info["thread_id"], request.match_info["run_id"])
        return self.json(run.obj, "RunObject")

    async def _modify_run(self, request: web.Request) -> web.StreamResponse:
        run = self._run(request.match_info["thread_id"], request.match_info["run_id"])
        body = await self._body(request, "ModifyRunRequest")
        if "metadata" in body:
            run.obj["metadata"] = body["metadata"] or {}
        return self.json(run.obj, "RunObject")

    async def _cancel_run(self, request: web.Request) -> web.StreamResponse:
        run = self._run(request.match_info["thread_id"], request.match_info["run_id"])
        if run.status not in ("queued", "in_progress", "requires_action"):
            raise ApiError(400, f"Cannot cancel run with status '{run.status}'.")
        run.obj["status"] = "cancelling"
        snapshot = copy.deepcopy(run.obj)
        if run.task is not None and not run.task.done():
            run.task.cancel()  # `_after_task` finishes the cancellation
        else:
            asyncio.get_running_loop().call_soon(self._finish_cancel, run)
        return self.json(snapshot, "RunObject")

    async def _submit_tool_outputs(self, request: web.Request) -> web.StreamResponse:
        run = self._run(request.match_info["thread_id"], request.match_info["run_id"])
        body = await self._body(request, "SubmitToolOutputsRunRequest")
        if run.status != "requires_action" or run.pending_step is None:
            raise ApiError(
                400, f'Runs in status "{run.status}" do not accept tool outputs.', param="run_id"
            )
        outputs = list(body.get("tool_outputs") or [])
        expected = [call["id"] for call in run.pending_step["step_details"]["tool_calls"]]
        given = [output.get("tool_call_id") for output in outputs]
        if sorted(expected) != sorted(str(item) for item in given):
            raise ApiError(
                400,
                f"Expected tool outputs for call_ids {expected}, got {given}",
                param="tool_outputs",
            )
        run.tool_outputs.extend(outputs)
        by_id = {output["tool_call_id"]: str(output.get("output", "")) for output in outputs}
        for call in run.pending_step["step_details"]["tool_calls"]:
            call["function"]["output"] = by_id[call["id"]]
        run.obj["status"] = "queued"
        run.obj["required_action"] = None
        return await self._start(request, run, bool(body.get("stream")))

    async def _list_steps(self, request: web.Request) -> web.StreamResponse:
        run = self._run(request.match_info["thread_id"], request.match_info["run_id"])
        return self._page(request, run.steps, "ListRunStepsResponse")

    async def _get_step(self, request: web.Request) -> web.StreamResponse:
        run = self._run(request.match_info["thread_id"], request.match_info["run_id"])
        for step in run.steps:
            if step["id"] == request.match_info["step_id"]:
                return self.json(step, "RunStepObject")
        raise ApiError(404, f"No run step found with id '{request.match_info['step_id']}'.")

    # ----------------------------------------------------------------- runs: the engine

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _after_task(self, run: RunState, task: asyncio.Task[None]) -> None:
        if self._closing:
            return
        if task.cancelled():
            self._finish_cancel(run)
        elif (exc := task.exception()) is not None:
            self.spec_violations.append(f"emulator error in {run.id}: {exc!r}")
            self._finish(run, "failed", last_error={"code": "server_error", "message": str(exc)})

    def _emit(self, run: RunState, event: str, data: JSON, schema: str) -> None:
        if run.stream is not None:
            run.stream.put_nowait((event, copy.deepcopy(data), schema))

    def _end_stream(self, run: RunState, done: bool = True) -> None:
        if run.stream is not None:
            if done:
                run.stream.put_nowait(("done", "[DONE]", None))
            run.stream.put_nowait(None)
            run.stream = None

    def _context(self, run: RunState) -> TurnContext:
        messages = self.messages.get(run.thread_id, [])
        assistant = self.assistants.get(run.obj["assistant_id"])
        return TurnContext(
            user_texts=[message_text(m) for m in messages if m["role"] == "user"],
            instructions=run.obj["instructions"] or None,
            assistant_name=assistant["name"] if assistant else None,
            tool_outputs=[str(output.get("output", "")) for output in run.tool_outputs],
            vector_store_ids=self._searchable_stores(run, assistant),
        )

    def _searchable_stores(self, run: RunState, assistant: JSON | None) -> list[str]:
        """The vector stores file_search searches in this run: the thread's and the assistant's."""
        if not any(tool.get("type") == "file_search" for tool in run.tools):
            return []
        stores: list[str] = []
        for owner in (self.threads.get(run.thread_id), assistant):
            resources = (owner or {}).get("tool_resources") or {}
            stores += (resources.get("file_search") or {}).get("vector_store_ids") or []
        return stores

    async def _advance(self, run: RunState, resume: bool) -> None:
        obj = run.obj
        if resume:
            self._emit(run, "thread.run.queued", obj, "RunObject")
        else:
            self._emit(run, "thread.run.created", obj, "RunObject")
            self._emit(run, "thread.run.queued", obj, "RunObject")
        await asyncio.sleep(0)
        obj["status"] = "in_progress"
        obj["started_at"] = obj["started_at"] or now()
        self._emit(run, "thread.run.in_progress", obj, "RunObject")
        context = self._context(run)
        if resume and run.pending_step is not None and run.reply is not None:
            step, run.pending_step = run.pending_step, None
            self._finish_step(run, step, "completed")
            reply = self.model.continue_after_tools(run.reply, context)
        else:
            reply = self.model.next_reply(context)
        run.reply = reply
        await self.model.wait_before_output(reply)
        try:
            await self._answer(run, reply, context)
        except ScriptError as exc:
            self._finish(run, "failed", last_error={"code": "server_error", "message": str(exc)})

    async def _answer(self, run: RunState, reply: Reply, context: TurnContext) -> None:
        prompt_tokens = count_tokens(
            context.instructions, *context.user_texts, *context.tool_outputs
        )
        if reply.fail is not None:
            code, message = reply.fail
            self._finish(run, "failed", last_error={"code": code, "message": message})
        elif reply.incomplete is not None:
            if reply.text:
                await self._write_message(run, reply, prompt_tokens, incomplete=True)
            self._finish(run, "incomplete", incomplete_details={"reason": reply.incomplete})
        elif reply.expire:
            self._finish(run, "expired")
        elif reply.stream_cut:
            await self._write_message(run, reply, prompt_tokens, cut=True)
            self._end_stream(run, done=False)  # the run stays in_progress
        elif reply.tool_calls:
            run.spent_prompt_tokens += prompt_tokens
            run.spent_completion_tokens += count_tokens(*(c.arguments for c in reply.tool_calls))
            self._request_tools(run, reply)
        else:
            if reply.citations:
                self._hosted_step(run, {"type": "file_search", "file_search": {}})
            if reply.outputs:
                code = {"input": "# the scripted code", "outputs": []}
                self._hosted_step(run, {"type": "code_interpreter", "code_interpreter": code})
            completion_tokens = await self._write_message(run, reply, prompt_tokens)
            prompt_tokens += run.spent_prompt_tokens
            completion_tokens += run.spent_completion_tokens
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            self._finish(run, "completed", usage=usage)

    def _finish(self, run: RunState, status: str, **fields: Any) -> None:
        stamp = {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at"}
        run.obj.update(status=status, required_action=None, **fields)
        if status in stamp:
            run.obj[stamp[status]] = now()
        if status == "expired":
            run.obj["expires_at"] = now()
        self._emit(run, f"thread.run.{status}", run.obj, "RunObject")
        self._end_stream(run)

    def _finish_cancel(self, run: RunState) -> None:
        if run.status != "cancelling":
            return
        if run.message is not None and run.message["status"] == "in_progress":
            run.message.update(
                status="incomplete",
                incomplete_at=now(),
                incomplete_details={"reason": "run_cancelled"},
            )
        for step in run.steps:
            if step["status"] == "in_progress":
                self._finish_step(run, step, "cancelled")
        run.pending_step = None
        self._finish(run, "cancelled")

    def _new_step(self, run: RunState, details: JSON) -> JSON:
        step: JSON = {
            "id": self.new_id("step"),
            "object": "thread.run.step",
            "created_at": now(),
            "assistant_id": run.obj["assistant_id"],
            "thread_id": run.thread_id,
            "run_id": run.id,
            "type": details["type"],
            "status": "in_progress",
            "step_details": details,
            "last_error": None,
            "expired_at": None,
            "cancelled_at": None,
            "failed_at": None,
            "completed_at": None,
            "metadata": {},
            "usage": None,
        }
        run.steps.append(step)
        self._emit(run, "thread.run.step.created", step, "RunStepObject")
        self._emit(run, "thread.run.step.in_progress", step, "RunStepObject")
        return step

    def _finish_step(
        self, run: RunState, step: JSON, status: str, usage: JSON | None = None
    ) -> None:
        step["status"] = status
        step[f"{status}_at"] = now()
        step["usage"] = usage
        self._emit(run, f"thread.run.step.{status}", step, "RunStepObject")

    def _hosted_step(self, run: RunState, call: JSON) -> None:
        """A step in which a tool the backend runs itself (file_search, code_interpreter) ran."""
        step = self._new_step(
            run, {"type": "tool_calls", "tool_calls": [{"id": self.new_id("call"), **call}]}
        )
        self._finish_step(run, step, "completed")

    def _request_tools(self, run: RunState, reply: Reply) -> None:
        calls: list[JSON] = [
            {
                "id": self.new_id("call"),
                "type": "function",
                "function": {"name": spec_.name, "arguments": spec_.arguments},
            }
            for spec_ in reply.tool_calls
        ]
        step = self._new_step(run, {"type": "tool_calls", "tool_calls": []})
        for index, call in enumerate(calls):
            recorded = {**call, "function": {**call["function"], "output": None}}
            step["step_details"]["tool_calls"].append(recorded)
            delta = {
                "id": step["id"],
                "object": "thread.run.step.delta",
                "delta": {
                    "step_details": {
                        "type": "tool_calls",
                        "tool_calls": [{"index": index, **copy.deepcopy(recorded)}],
                    }
                },
            }
            self._emit(run, "thread.run.step.delta", delta, "RunStepDeltaObject")
        run.pending_step = step
        run.obj["status"] = "requires_action"
        run.obj["required_action"] = {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {"tool_calls": calls},
        }
        self._emit(run, "thread.run.requires_action", run.obj, "RunObject")
        self._end_stream(run)

    def _compose(self, reply: Reply) -> tuple[list[_Piece], list[JSON]]:
        """The reply's text as pieces (citations and file links annotated), and image parts."""
        pieces = [_Piece(reply.text or "")]
        for index, citation in enumerate(reply.citations):
            cited = self._file_named(citation.filename)
            marker = f"【4:{index}†{citation.filename}】"
            annotation = {
                "type": "file_citation",
                "text": marker,
                "file_citation": {"file_id": cited.id},
            }
            pieces.append(_Piece(marker, annotation))
        images: list[JSON] = []
        for output in reply.outputs:
            stored = self.add_file(output.filename, output.content, "assistants_output")
            if output.is_image:
                images.append({"type": "image_file", "image_file": {"file_id": stored.id}})
                continue
            link = f"sandbox:/mnt/data/{output.filename}"
            pieces.append(_Piece(f"\n\n[{output.filename}]("))
            pieces.append(
                _Piece(
                    link, {"type": "file_path", "text": link, "file_path": {"file_id": stored.id}}
                )
            )
            pieces.append(_Piece(")"))
        return pieces, images

    def _file_named(self, filename: str) -> StoredFile:
        for stored in reversed(list(self.files.values())):
            if stored.filename == filename and stored.purpose != "assistants_output":
                return stored
        raise ScriptError(f"the scripted reply cites {filename!r}, which was never uploaded")

    async def _write_message(
        self,
        run: RunState,
        reply: Reply,
        prompt_tokens: int,
        incomplete: bool = False,
        cut: bool = False,
    ) -> int:
        """Create the assistant message, streaming its deltas; returns completion tokens."""
        pieces, images = self._compose(reply)
        message = self._store_message(run.thread_id, "assistant", [], run=run)
        run.message = message
        step = self._new_step(
            run, {"type": "message_creation", "message_creation": {"message_id": message["id"]}}
        )
        self._emit(run, "thread.message.created", message, "MessageObject")
        self._emit(run, "thread.message.in_progress", message, "MessageObject")

        deltas = _text_deltas(pieces, self.model.chunks)
        if cut:
            deltas = deltas[: max(1, len(deltas) // 2)]
        text: JSON = {"value": "", "annotations": []}
        message["content"].append({"type": "text", "text": text})
        for position, (chunk, annotation) in enumerate(deltas):
            if position and self.model.chunk_delay:
                await asyncio.sleep(self.model.chunk_delay)
            part: JSON = {"index": 0, "type": "text", "text": {"value": chunk}}
            if position == 0:
                part["text"]["annotations"] = []
            if annotation is not None:
                start = len(text["value"])
                annotation = {**annotation, "start_index": start, "end_index": start + len(chunk)}
                part["text"]["annotations"] = [{"index": len(text["annotations"]), **annotation}]
                text["annotations"].append(annotation)
            text["value"] += chunk
            self._emit(
                run,
                "thread.message.delta",
                _message_delta(message["id"], part),
                "MessageDeltaObject",
            )
        if cut:
            return 0
        for image in images:
            message["content"].append(image)
            part = {"index": len(message["content"]) - 1, **copy.deepcopy(image)}
            self._emit(
                run,
                "thread.message.delta",
                _message_delta(message["id"], part),
                "MessageDeltaObject",
            )

        completion_tokens = max(1, count_tokens(text["value"]))
        if incomplete:
            message.update(
                status="incomplete",
                incomplete_at=now(),
                incomplete_details={"reason": "max_tokens"},
            )
            self._emit(run, "thread.message.incomplete", message, "MessageObject")
        else:
            message.update(status="completed", completed_at=now())
            self._emit(run, "thread.message.completed", message, "MessageObject")
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        self._finish_step(run, step, "completed", usage)
        return completion_tokens

    # ----------------------------------------------------------------- files

    def _file(self, file_id: str) -> StoredFile:
        if file_id not in self.files:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return self.files[file_id]

    async def _upload_file(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, web.FileField):
            raise ApiError(400, "Missing required parameter: 'file'.", param="file")
        if not isinstance(purpose, str):
            raise ApiError(400, "Missing required parameter: 'purpose'.", param="purpose")
        self.check_request({"file": upload.filename, "purpose": purpose}, "CreateFileRequest")
        stored = self.add_file(upload.filename, upload.file.read(), purpose)
        return self.json(stored.to_api(), "OpenAIFile")

    async def _list_files(self, request: web.Request) -> web.StreamResponse:
        purpose = request.query.get("purpose")
        files = [f.to_api() for f in self.files.values() if purpose in (None, f.purpose)]
        return self._page(request, files, "ListFilesResponse")

    async def _get_file(self, request: web.Request) -> web.StreamResponse:
        return self.json(self._file(request.match_info["file_id"]).to_api(), "OpenAIFile")

    async def _delete_file(self, request: web.Request) -> web.StreamResponse:
        stored = self._file(request.match_info["file_id"])
        del self.files[stored.id]
        return self.json({"id": stored.id, "object": "file", "deleted": True}, "DeleteFileResponse")

    async def _file_content(self, request: web.Request) -> web.StreamResponse:
        stored = self._file(request.match_info["file_id"])
        return web.Response(body=stored.content, content_type="application/octet-stream")

    # ----------------------------------------------------------------- vector stores

    def _vector_store(self, store_id: str) -> VectorStore:
        if store_id not in self.vector_stores:
            raise ApiError(404, f"No vector store found with id '{store_id}'.")
        return self.vector_stores[store_id]

    def _new_vector_store(self, body: JSON) -> VectorStore:
        store = VectorStore(
            id=self.new_id("vs"),
            name=body.get("name") or "",
            file_ids=[],
            file_status={},
            expires_after=body.get("expires_after"),
            metadata=body.get("metadata") or {},
            created_at=now(),
        )
        self.vector_stores[store.id] = store
        for file_id in body.get("file_ids") or []:
            self._attach(store, file_id)
        return store

    def _attach(self, store: VectorStore, file_id: str) -> None:
        """Add a file to a store; it indexes in the background for `indexing_delay` seconds."""
        stored = self._file(file_id)
        extension = PurePosixPath(stored.filename).suffix.lower()
        if extension in REJECTED_EXTENSIONS:
            raise ApiError(
                400,
                f"Files with extensions [{extension}] are not supported for retrieval. See "
                "https://platform.openai.com/docs/assistants/tools/file-search#supported-files",
                code="unsupported_file",
                param="file_id",
            )
        if file_id not in store.file_ids:
            store.file_ids.append(file_id)
        store.file_status[file_id] = "in_progress"
        store.file_errors.pop(file_id, None)
        store.file_created_at[file_id] = now()
        self._spawn(self._index(store, stored))

    async def _index(self, store: VectorStore, stored: StoredFile) -> None:
        await asyncio.sleep(self.indexing_delay)
        if store.file_status.get(stored.id) != "in_progress":
            return
        extension = PurePosixPath(stored.filename).suffix.lower()
        error: JSON | None = None
        if extension not in SEARCHABLE_EXTENSIONS:
            error = {
                "code": "unsupported_file",
                "message": f"The file type {extension or '(none)'} is not supported.",
            }
        else:
            try:
                text = stored.content.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            if not text.strip():
                error = {
                    "code": "invalid_file",
                    "message": f"The file {stored.filename} could not be parsed: no text.",
                }
        if error is None:
            store.file_status[stored.id] = "completed"
        else:
            store.file_status[stored.id] = "failed"
            store.file_errors[stored.id] = error

    def _file_counts(self, store: VectorStore, file_ids: Sequence[str] | None = None) -> JSON:
        statuses = [store.file_status[f] for f in (file_ids or store.file_ids)]
        counts = {
            key: statuses.count(key) for key in ("in_progress", "completed", "failed", "cancelled")
        }
        return {**counts, "total": len(statuses)}

    def _store_api(self, store: VectorStore) -> JSON:
        counts = self._file_counts(store)
        data: JSON = {
            "id": store.id,
            "object": "vector_store",
            "created_at": store.created_at,
            "name": store.name,
            "usage_bytes": sum(
                len(self.files[f].content)
                for f in store.file_ids
                if f in self.files and store.file_status[f] == "completed"
            ),
            "file_counts": counts,
            "status": "in_progress" if counts["in_progress"] else "completed",
            "expires_at": None,
            "last_active_at": store.created_at,
            "metadata": store.metadata,
        }
        if store.expires_after:
            data["expires_after"] = store.expires_after
            data["expires_at"] = store.created_at + 86400 * int(store.expires_after["days"])
        return data

    def _store_file_api(self, store: VectorStore, file_id: str) -> JSON:
        status = store.file_status[file_id]
        stored = self.files.get(file_id)
        return {
            "id": file_id,
            "object": "vector_store.file",
            "usage_bytes": len(stored.content) if stored and status == "completed" else 0,
            "created_at": store.file_created_at[file_id],
            "vector_store_id": store.id,
            "status": status,
            "last_error": store.file_errors.get(file_id),
            "chunking_strategy": CHUNKING_STRATEGY,
            "attributes": {},
        }

    async def _create_vector_store(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request, "CreateVectorStoreRequest")
        return self.json(self._store_api(self._new_vector_store(body)), "VectorStoreObject")

    async def _list_vector_stores(self, request: web.Request) -> web.StreamResponse:
        stores = [self._store_api(store) for store in self.vector_stores.values()]
        return self._page(request, stores, "ListVectorStoresResponse")

    async def _get_vector_store(self, request: web.Request) -> web.StreamResponse:
        store = self._vector_store(request.match_info["vs_id"])
        return self.json(self._store_api(store), "VectorStoreObject")

    async def _modify_vector_store(self, request: web.Request) -> web.StreamResponse:
        store = self._vector_store(request.match_info["vs_id"])
        body = await self._body(request, "UpdateVectorStoreRequest")
        if body.get("name") is not None:
            store.name = body["name"]
        if "metadata" in body:
            store.metadata = body["metadata"] or {}
        if "expires_after" in body:
            store.expires_after = body["expires_after"]
        return self.json(self._store_api(store), "VectorStoreObject")

    async def _delete_vector_store(self, request: web.Request) -> web.StreamResponse:
        store = self._vector_store(request.match_info["vs_id"])
        del self.vector_stores[store.id]
        deleted = {"id": store.id, "object": "vector_store.deleted", "deleted": True}
        return self.json(deleted, "DeleteVectorStoreResponse")

    async def _create_vs_file(self, request: web.Request) -> web.StreamResponse:
        store = self._vector_store(request.match_info["vs_id"])
        body = await self._body(request, "CreateVectorStoreFileRequest")
        self._attach(store, str(body.get("file_id")))
        return self.json(self._store_file_api(store, body["file_id"]), "VectorStoreFileObject")

    async def _list_vs_files(self, request: web.Request) -> web.StreamResponse:
        store = self._vector_store(request.match_info["vs_id"])
        status = request.query.get("filter")
        files = [
            self._store_file_api(store, f)
            for f in store.file_ids
            if status in (None, store.file_status[f])
        ]
        return self._page(request, files, "ListVectorStoreFilesResponse")

    def _store_file_id(self, request: web.Request) -> tuple[VectorStore, str]:
        store = self._vector_store(request.match_info["vs_id"])
        file_id = request.match_info["file_id"]
        if file_id not in store.file_ids:
            raise ApiError(404, f"No file found with id '{file_id}' in vector store '{store.id}'.")
        return store, file_id

    async def _get_vs_file(self, request: web.Request) -> web.StreamResponse:
        store, file_id = self._store_file_id(request)
        return self.json(self._store_file_api(store, file_id), "VectorStoreFileObject")

    async def _delete_vs_file(self, request: web.Request) -> web.StreamResponse:
        store, file_id = self._store_file_id(request)
        store.file_ids.remove(file_id)
        store.file_status.pop(file_id, None)
        store.file_errors.pop(file_id, None)
        deleted = {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}
        return self.json(deleted, "DeleteVectorStoreFileResponse")

    def _batch_api(self, batch: JSON) -> JSON:
        store = self._vector_store(batch["vector_store_id"])
        file_ids = [f for f in batch["file_ids"] if f in store.file_status]
        counts = (
            self._file_counts(store, file_ids)
            if file_ids
            else {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0}
        )
        status = batch["status"]
        if status == "in_progress" and not counts["in_progress"]:
            status = "completed"
        return {
            "id": batch["id"],
            "object": "vector_store.files_batch",
            "created_at": batch["created_at"],
            "vector_store_id": store.id,
            "status": status,
            "file_counts": counts,
        }

    def _batch(self, request: web.Request) -> JSON:
        batch = self.file_batches.get(request.match_info["batch_id"])
        if batch is None or batch["vector_store_id"] != request.match_info["vs_id"]:
            raise ApiError(404, f"No file batch found with id '{request.match_info['batch_id']}'.")
        return batch

    async def _create_batch(self, request: web.Request) -> web.StreamResponse:
        store = self._vector_store(request.match_info["vs_id"])
        body = await self._body(request, "CreateVectorStoreFileBatchRequest")
        file_ids = [str(f) for f in body.get("file_ids") or []]
        file_ids += [str(f["file_id"]) for f in body.get("files") or []]
        for file_id in file_ids:
            self._attach(store, file_id)
        batch: JSON = {
            "id": self.new_id("vsfb"),
            "vector_store_id": store.id,
            "file_ids": file_ids,
            "created_at": now(),
            "status": "in_progress",
        }
        self.file_batches[batch["id"]] = batch
        return self.json(self._batch_api(batch), "VectorStoreFileBatchObject")

    async def _get_batch(self, request: web.Request) -> web.StreamResponse:
        return self.json(self._batch_api(self._batch(request)), "VectorStoreFileBatchObject")

    async def _cancel_batch(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch(request)
        store = self._vector_store(batch["vector_store_id"])
        for file_id in batch["file_ids"]:
            if store.file_status.get(file_id) == "in_progress":
                store.file_status[file_id] = "cancelled"
        batch["status"] = "cancelled"
        return self.json(self._batch_api(batch), "VectorStoreFileBatchObject")

    async def _list_batch_files(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch(request)
        store = self._vector_store(batch["vector_store_id"])
        files = [
            self._store_file_api(store, f) for f in batch["file_ids"] if f in store.file_status
        ]
        return self._page(request, files, "ListVectorStoreFilesResponse")


def _drop(request: web.Request) -> web.StreamResponse:
    """Drop the connection without an answer."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


def _closed(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def _streamed(request: web.Request) -> bool:
    """Whether the request asks for a stream of events (so that it can stall)."""
    if request.query.get("stream") == "true":
        return True
    if not request.body_exists or request.content_type != "application/json":
        return False
    try:
        body = json.loads(await request.read())
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("stream") is True


async def _drain(queue: asyncio.Queue[SseEvent | None]) -> AsyncIterator[SseEvent]:
    while (item := await queue.get()) is not None:
        yield item


def _message_delta(message_id: str, part: JSON) -> JSON:
    return {"id": message_id, "object": "thread.message.delta", "delta": {"content": [part]}}


def _text_deltas(
    pieces: Sequence[_Piece], chunks: Callable[[str], list[str]]
) -> list[tuple[str, JSON | None]]:
    """The (text, annotation) deltas of a reply: plain text in model-sized chunks."""
    deltas: list[tuple[str, JSON | None]] = []
    for piece in pieces:
        if piece.annotation is not None:
            deltas.append((piece.text, piece.annotation))
        elif piece.text:
            deltas.extend((chunk, None) for chunk in chunks(piece.text))
    return deltas or [("", None)]


def _passages(text: str, size: int = 800) -> list[str]:
    """Paragraphs of `text`; long ones cut into windows of about `size` characters."""
    passages: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        while len(paragraph) > size:
            cut = paragraph.rfind(" ", 0, size)
            cut = cut if cut > 0 else size
            passages.append(paragraph[:cut].strip())
            paragraph = paragraph[cut:].strip()
        if paragraph:
            passages.append(paragraph)
    return passages
