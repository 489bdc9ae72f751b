"""The emulated model: what the OpenAI emulator answers, scripted by each test.

Both API families the emulator serves (Assistants runs and Responses) take their replies from one
`ScriptedModel`, so a scenario test scripts the model once and runs unchanged on either engine.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ToolCallSpec:
    """A function call the model makes; `arguments` is the JSON string the model writes."""

    name: str
    arguments: str = "{}"


@dataclass(frozen=True)
class McpCallSpec:
    """A call of a tool on an MCP server the request hands to OpenAI (`type: mcp`, Responses
    only): the emulator asks for approval when the tool's `require_approval` says so, then calls
    the real server."""

    server: str  # the tool's server_label
    name: str
    arguments: str = "{}"


@dataclass(frozen=True)
class CitationSpec:
    """A file_search citation: `quote` is cited from the uploaded file named `filename`."""

    filename: str
    quote: str = ""


@dataclass(frozen=True)
class WebSourceSpec:
    """A web page the model found with web_search (Responses only): `quote` cites it."""

    title: str
    url: str
    quote: str = ""


@dataclass(frozen=True)
class ImageSpec:
    """A file code_interpreter produced: PNG bytes for an image, anything else for a file."""

    filename: str
    content: bytes
    is_image: bool = True


@dataclass(frozen=True)
class Reply:
    """One model turn.

    Exactly one outcome applies, checked in this order: `fail`, `incomplete`, `expire`,
    `stream_cut`, `tool_calls`, else text. After the tool outputs arrive, the run continues with
    `after_tools` (default: a text reply that quotes the outputs it received).
    """

    text: str | None = None
    tool_calls: Sequence[ToolCallSpec] = ()
    after_tools: Reply | None = None
    fail: tuple[str, str] | None = None  # (code, message), e.g. ("server_error", "boom")
    incomplete: str | None = None  # reason, e.g. "max_output_tokens" / "max_completion_tokens"
    expire: bool = False  # the run expires (Assistants) / the response fails with a timeout
    stream_cut: bool = False  # the SSE stream ends without a final status event
    latency: float | None = None  # overrides ScriptedModel.latency for this reply
    citations: Sequence[CitationSpec] = ()
    web_sources: Sequence[WebSourceSpec] = ()  # searched with web_search, cited by url_citation
    outputs: Sequence[ImageSpec] = ()
    # A reasoning model's summary of its thinking, streamed before its output when the request
    # asks for one (reasoning.summary; Responses API only).
    reasoning: str = ""
    mcp_calls: Sequence[McpCallSpec] = ()  # made before its text; see McpCallSpec


@dataclass
class TurnContext:
    """What the model sees when it answers: the conversation's user texts so far, oldest first."""

    user_texts: list[str]
    instructions: str | None
    assistant_name: str | None
    tool_outputs: list[str] = field(default_factory=list)
    vector_store_ids: list[str] = field(default_factory=list)  # what file_search may search


def default_reply(context: TurnContext) -> Reply:
    """A deterministic answer that proves memory: it names the last message and counts them."""
    last = context.user_texts[-1] if context.user_texts else ""
    return Reply(text=f"You said: {last} (message {len(context.user_texts)} of this conversation)")


class ScriptedModel:
    def __init__(self) -> None:
        self.latency: float = 0.0  # seconds before the first output of every reply
        self.chunk_size: int = 8  # characters per text delta
        self.chunk_delay: float = 0.0  # seconds between text deltas
        self.respond: Callable[[TurnContext], Reply] = default_reply
        self._queue: deque[Reply] = deque()
        self.turns: list[TurnContext] = []
        self.gate: asyncio.Event | None = None  # when set by a test, replies wait until it is set
        # When set by a test, a reply that reasons or searches the web holds there (its summary
        # written, its search begun) until the event is set.
        self.held: asyncio.Event | None = None

    def enqueue(self, *replies: Reply) -> None:
        """The next runs answer with these replies, in order; after them, `respond` answers."""
        self._queue.extend(replies)

    def next_reply(self, context: TurnContext) -> Reply:
        self.turns.append(context)
        if self._queue:
            return self._queue.popleft()
        return self.respond(context)

    def continue_after_tools(self, reply: Reply, context: TurnContext) -> Reply:
        """The turn after `reply`'s tool calls were answered; `context.tool_outputs` holds them."""
        self.turns.append(context)
        if reply.after_tools is not None:
            return reply.after_tools
        return Reply(text="The tools returned: " + "; ".join(context.tool_outputs))

    async def wait_before_output(self, reply: Reply) -> None:
        if self.gate is not None:
            await self.gate.wait()
        delay = self.latency if reply.latency is None else reply.latency
        if delay:
            await asyncio.sleep(delay)

    async def hold(self) -> None:
        if self.held is not None:
            await self.held.wait()

    def chunks(self, text: str) -> list[str]:
        size = max(1, self.chunk_size)
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]
