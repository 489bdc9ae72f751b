"""MCP servers named in assistant definitions, their tools offered to the model as functions.

Each server has one connection, held open by a task of its own (the `mcp` SDK's sessions live in
the task that opened them) and shared by every call. Its tools are listed once, and again when
the server says the list changed; they go into the tool registry as `<server>__<tool>`, so calls
get the registry's concurrency, timeout and readable errors. A server that cannot be reached
makes its tools answer an error, and is tried again on the next call.
Header and environment values are `${ENV_VAR}` references, resolved only here, when connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx2
import jsonschema
from mcp import ClientSession, StdioServerParameters
from mcp.client import IncomingMessage
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent, ToolListChangedNotification

from bot.definitions import (
    AssistantDefinition,
    hosted_by_openai,
    requires_approval,
    resolve_references,
)
from bot.tools.registry import Tool, ToolRegistry

log = logging.getLogger(__name__)

CONNECT_SECONDS = 10.0
RETRY_SECONDS = 30.0  # a server that was unreachable is tried again at most this often
NAME_SEPARATOR = "__"


def function_name(server: str, tool: str) -> str:
    """The name the model calls a server's tool by (function names allow [A-Za-z0-9_-], 64)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{server}{NAME_SEPARATOR}{tool}")[:64]


class McpServer:
    """One server: its pooled connection and the tools it lists."""

    def __init__(self, config: dict[str, Any], registry: ToolRegistry) -> None:
        self.config = config
        self.name: str = config["name"]
        self.registry = registry
        self.error = ""  # why the server is unreachable ("" while connected)
        self.tools: dict[str, Tool] = {}
        self._session: ClientSession | None = None
        self._attempted = asyncio.Event()  # the latest connection attempt ended, either way
        self._stop = asyncio.Event()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refreshes: set[asyncio.Task[None]] = set()
        self._retry: asyncio.Task[None] | None = None
        self._last_attempt = 0.0

    def retry_if_down(self) -> None:
        """Try again in the background if the server is down and was not tried lately, so that
        a server that was down at start-up has its tools offered once it is back."""
        now = asyncio.get_running_loop().time()
        if self._session is not None or now - self._last_attempt < RETRY_SECONDS:
            return
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self.connect())

    async def connect(self, seconds: float = CONNECT_SECONDS) -> None:
        """Connect (or wait for the connection) for at most `seconds`; never raises."""
        self._last_attempt = asyncio.get_running_loop().time()
        if self._task is None or self._task.done():
            self._attempted.clear()
            self._lost.clear()
            self._task = asyncio.create_task(self._hold(), name=f"mcp-{self.name}")
        try:
            async with asyncio.timeout(seconds):
                await self._attempted.wait()
        except TimeoutError:
            self.error = f"no answer within {seconds:g} seconds"

    async def close(self) -> None:
        self._stop.set()
        for task in (self._retry, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _hold(self) -> None:
        try:
            async with (
                self._transport() as (read, write),
                ClientSession(read, write, message_handler=self._on_message) as session,
            ):
                await session.initialize()
                await self._list_tools(session)
                self._session, self.error = session, ""
                log.info("event=mcp_connected server=%s tools=%d", self.name, len(self.tools))
                self._attempted.set()
                stop = asyncio.create_task(self._stop.wait())
                lost = asyncio.create_task(self._lost.wait())
                await asyncio.wait((stop, lost), return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                lost.cancel()
        except Exception as exc:  # whatever the transport raised: the server is unreachable
            self.error = _describe(exc)
            log.warning("event=mcp_server_unreachable server=%s error=%s", self.name, self.error)
        finally:
            self._session = None
            self._attempted.set()

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        if "url" in self.config:
            headers = {k: resolve_references(v) for k, v in self.config.get("headers", {}).items()}
            client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
            return _with_client(client, self.config["url"])
        env = {k: resolve_references(v) for k, v in self.config.get("env", {}).items()}
        parameters = StdioServerParameters(
            command=self.config["command"], args=list(self.config.get("args", [])), env=env
        )
        return stdio_client(parameters)

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, ToolListChangedNotification) and self._session is not None:
            task = asyncio.create_task(self._list_tools(self._session))
            self._refreshes.add(task)
            task.add_done_callback(self._refreshes.discard)

    async def _list_tools(self, session: ClientSession) -> None:
        listed = await session.list_tools()
        allowed = self.config.get("allowed_tools")
        self.tools = {
            listed_tool.name: Tool(
                name=function_name(self.name, listed_tool.name),
                description=listed_tool.description or "",
                function=self._caller(listed_tool.name, dict(listed_tool.input_schema)),
                parameters=dict(listed_tool.input_schema),
                requires_approval=requires_approval(self.config, listed_tool.name),
                server=self.name,
                remote_name=listed_tool.name,
            )
            for listed_tool in listed.tools
            if allowed is None or listed_tool.name in allowed
        }
        self.registry.set_group(self.name, self.tools.values())
        log.info("event=mcp_tools_listed server=%s tools=%d", self.name, len(self.tools))

    def _caller(self, tool_name: str, schema: dict[str, Any]) -> Any:
        async def call(**arguments: Any) -> str:
            try:
                jsonschema.validate(arguments, schema)
            except jsonschema.ValidationError as exc:
                return f"error: the arguments do not match the tool's schema: {exc.message}"
            session = self._session
            if session is None:
                await self.connect()
                session = self._session
            if session is None:
                return f"error: the MCP server {self.name!r} is unreachable ({self.error})"
            try:
                result = await session.call_tool(tool_name, arguments)
            except Exception as exc:
                self._lost.set()  # the next call connects again
                return f"error: the MCP server {self.name!r} failed: {_describe(exc)}"
            return _result_text(result)

        return call


@contextlib.asynccontextmanager
async def _with_client(client: httpx2.AsyncClient, url: str) -> AsyncIterator[Any]:
    async with client, streamable_http_client(url, http_client=client) as streams:
        yield streams


def _result_text(result: Any) -> str:
    if not isinstance(result, CallToolResult):
        return "error: the MCP server sent something other than a tool result"
    parts = [
        item.text if isinstance(item, TextContent) else json.dumps(item.model_dump(mode="json"))
        for item in result.content
    ]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content))
    text = "\n".join(parts)
    return f"error: {text}" if result.is_error else text


def _describe(exc: BaseException) -> str:
    """A short reason, with no header or token in it (only the exception's type and message)."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"[:300]


class McpServers:
    """Every MCP server the assistants name, by name; what each assistant is offered."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry
        self.servers: dict[str, McpServer] = {}
        self._by_assistant: dict[str, list[str]] = {}

    def add(self, definitions: Iterable[AssistantDefinition]) -> None:
        for definition in definitions:
            names = self._by_assistant.setdefault(definition.name, [])
            for config in definition.mcp_servers:
                if hosted_by_openai(config):
                    continue  # OpenAI connects to it (the Responses engine's hosted MCP tool)
                self.servers.setdefault(config["name"], McpServer(config, self.registry))
                if config["name"] not in names:
                    names.append(config["name"])

    async def connect(self, seconds: float = CONNECT_SECONDS) -> dict[str, str]:
        """Connect to every server at once; the unreachable ones, with why."""
        await asyncio.gather(*(server.connect(seconds) for server in self.servers.values()))
        return {name: server.error for name, server in self.servers.items() if server.error}

    async def close(self) -> None:
        await asyncio.gather(*(server.close() for server in self.servers.values()))

    def function_tools(self, assistant_name: str) -> list[dict[str, Any]]:
        """The function tool definitions of the assistant's servers' tools (Assistants' shape)."""
        for name in self._by_assistant.get(assistant_name, ()):
            self.servers[name].retry_if_down()
        return [
            tool.definition()
            for name in self._by_assistant.get(assistant_name, ())
            for tool in self.servers[name].tools.values()
        ]
