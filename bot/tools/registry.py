"""Function tools: plain async Python functions with a JSON schema, run when the model asks.

A tool is declared with the `tool` decorator and collected into a `ToolRegistry`, which is the
core's `ToolBox`: it runs one step's calls concurrently, each bounded by a timeout, and turns every
problem (bad arguments, an exception, a timeout, an unknown name) into an output the model reads.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, overload

from bot.engine.base import ToolCall, ToolOutput
from bot.messages import ConversationKey, IncomingMessage
from bot.outcomes import APPROVED, DENIED, EXPIRED, WITHDRAWN, ApprovalRequest, Approver

log = logging.getLogger(__name__)

MAX_OUTPUT_CHARS = 100_000
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
# What the model reads in place of the output of a call no one approved.
NOT_RUN = {
    DENIED: "not run: denied by the user",
    EXPIRED: "not run: no one approved the call in time, so it counts as denied by the user",
    WITHDRAWN: "not run: the user stopped the answer before deciding",
}


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the conversation it serves (declare a `context` parameter)."""

    key: ConversationKey
    user_id: str
    message_ts: str


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    function: Callable[..., Awaitable[Any]]
    parameters: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))
    status: str = ""  # shown in the thread while the tool runs, e.g. "Looking up the weather…"
    wants_context: bool = False
    requires_approval: bool = False  # each call waits for a person's Approve in the thread
    server: str = ""  # the MCP server whose tool this is ("" for the bot's own)
    remote_name: str = ""  # the tool's name on that server

    def definition(self) -> dict[str, Any]:
        """The function tool definition an assistant needs for the model to call this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


ToolFunction = Callable[..., Awaitable[Any]]


@overload
def tool(function: ToolFunction, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    status: str = "",
    requires_approval: bool = False,
) -> Callable[[ToolFunction], Tool]: ...


def tool(
    function: ToolFunction | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    status: str = "",
    requires_approval: bool = False,
) -> Tool | Callable[[ToolFunction], Tool]:
    """Declare an async function as a tool: `@tool` or `@tool(description=…, parameters=…)`.

    The model's JSON arguments become keyword arguments; a parameter named `context` receives a
    `ToolContext`. The return value (text, or anything JSON can hold) is what the model reads.
    With `requires_approval`, each call waits for the asker's Approve in the thread.
    """

    def wrap(fn: ToolFunction) -> Tool:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"tool {fn.__name__!r} must be an async function")
        return Tool(
            name=name or fn.__name__,
            description=description or inspect.getdoc(fn) or "",
            function=fn,
            parameters=parameters or dict(EMPTY_PARAMETERS),
            status=status,
            wants_context="context" in inspect.signature(fn).parameters,
            requires_approval=requires_approval,
        )

    return wrap(function) if function is not None else wrap


class ToolLoadError(Exception):
    """TOOLS_MODULE cannot be used; the message says why."""


class ToolRegistry:
    """The tools the bot can run, by name; the core's ToolBox."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._tools: dict[str, Tool] = {}
        self._groups: dict[str, set[str]] = {}

    def add(self, *tools: Tool) -> None:
        for item in tools:
            if item.name in self._tools:
                raise ToolLoadError(f"two tools are named {item.name!r}")
            self._tools[item.name] = item

    def set_group(self, group: str, tools: Iterable[Tool]) -> None:
        """Replace the tools of a group (an MCP server's, listed again): a name another group or
        a plain tool already has is left out, with a warning."""
        for name in self._groups.pop(group, set()):
            self._tools.pop(name, None)
        added = self._groups[group] = set()
        for item in tools:
            if item.name in self._tools:
                log.warning("event=tool_name_taken tool=%s group=%s", item.name, group)
                continue
            self._tools[item.name] = item
            added.add(item.name)

    def add_module(self, module_name: str) -> None:
        """Import an operator's module and register every tool it declares."""
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ToolLoadError(
                f"TOOLS_MODULE {module_name!r} could not be imported: {type(exc).__name__}: {exc}"
            ) from exc
        found = list(_declared_tools(module))
        if not found:
            raise ToolLoadError(
                f"TOOLS_MODULE {module_name!r} declares no tools (decorate async functions "
                "with bot.tools.tool)"
            )
        self.add(*found)

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    @property
    def plain_names(self) -> list[str]:
        """The names of the tools that belong to no group (no MCP server's)."""
        grouped = set().union(*self._groups.values())
        return [name for name in self.names if name not in grouped]

    def definitions(self) -> list[dict[str, Any]]:
        return [self._tools[name].definition() for name in self.names]

    def status(self, name: str) -> str:
        known = self._tools.get(name)
        return known.status if known else ""

    def identify(self, name: str) -> tuple[str, str]:
        """(the tool's own name, its MCP server or "") for a name the model called."""
        known = self._tools.get(name)
        if known is None or not known.server:
            return name, ""
        return known.remote_name or name, known.server

    async def run(
        self, calls: Sequence[ToolCall], message: IncomingMessage, approve: Approver | None = None
    ) -> list[ToolOutput]:
        context = ToolContext(message.key, message.user_id, message.ts)
        outputs = await asyncio.gather(*(self._run_one(call, context, approve) for call in calls))
        return [ToolOutput(call.id, output) for call, output in zip(calls, outputs, strict=True)]

    async def _run_one(self, call: ToolCall, context: ToolContext, approve: Approver | None) -> str:
        known = self._tools.get(call.name)
        if known is None:
            log.warning("event=unknown_tool tool=%s", call.name)
            available = ", ".join(self.names) or "none"
            return f"error: there is no tool named {call.name!r} (available: {available})"
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            return f"error: the arguments are not valid JSON ({exc})"
        if not isinstance(arguments, dict):
            return "error: the arguments must be a JSON object"
        if known.requires_approval:
            if approve is None:
                return "not run: this tool needs a person's approval, and none can be asked here"
            tool_name, server = self.identify(call.name)
            decision = await approve(ApprovalRequest(call.id, tool_name, server, call.arguments))
            log.info("event=tool_approval tool=%s outcome=%s", call.name, decision.outcome)
            if decision.outcome != APPROVED:
                return NOT_RUN.get(decision.outcome, NOT_RUN[DENIED])
        if known.wants_context:
            arguments["context"] = context
        try:
            async with asyncio.timeout(self.timeout):
                result = await known.function(**arguments)
        except TimeoutError:
            log.warning("event=tool_timeout tool=%s seconds=%s", call.name, self.timeout)
            return f"error: the tool {call.name!r} did not finish within {self.timeout:g} seconds"
        except Exception as exc:
            log.warning("event=tool_failed tool=%s", call.name, exc_info=True)
            return f"error: the tool {call.name!r} failed: {type(exc).__name__}: {exc}"
        log.info("event=tool_ran tool=%s", call.name)
        return _as_output(result)


def _declared_tools(module: ModuleType) -> Iterable[Tool]:
    return (value for value in vars(module).values() if isinstance(value, Tool))


def _as_output(result: Any) -> str:
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    if len(text) > MAX_OUTPUT_CHARS:
        return text[:MAX_OUTPUT_CHARS] + "\n[output truncated]"
    return text
