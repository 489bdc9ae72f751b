"""The engine interface: what the core asks of a backend, in engine-neutral types.

An engine turns one user message into a stream of `EngineEvent`s. The core never sees an SDK type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot.assistants import AssistantDefinition


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON, as the model wrote it


@dataclass(frozen=True)
class ToolOutput:
    call_id: str
    output: str


@dataclass(frozen=True)
class ToolCallsRequired:
    """The model asked for these calls; the engine submits the outputs itself and goes on."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class Completed:
    text: str  # the whole answer, as the engine finally holds it
    run_id: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    run_id: str | None = None


@dataclass(frozen=True)
class Incomplete:
    reason: str
    text: str
    run_id: str | None = None


EngineEvent = TextDelta | ToolCallsRequired | Completed | Failed | Incomplete

ToolRunner = Callable[[Sequence[ToolCall]], Awaitable[list[ToolOutput]]]


class EngineError(Exception):
    """The backend could not be reached or refused a request (after the SDK's own retries)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Engine(Protocol):
    name: str

    async def get_assistant(self, assistant_id: str) -> AssistantDefinition | None:
        """The assistant (by id; the Responses engine also takes a name), or None if unknown."""
        ...

    async def verify(self, assistant: AssistantDefinition) -> None:
        """Raise EngineError unless the backend can run this assistant (key, API and model)."""
        ...

    async def list_assistants(self) -> list[AssistantDefinition]: ...

    async def create_assistant(self, definition: AssistantDefinition) -> AssistantDefinition: ...

    async def update_assistant(
        self, assistant_id: str, definition: AssistantDefinition
    ) -> AssistantDefinition: ...

    async def delete_assistant(self, assistant_id: str) -> bool: ...

    async def create_conversation(self) -> str:
        """A new backend conversation (an Assistants thread, a Conversations conversation)."""
        ...

    def run(
        self, conversation_id: str, assistant_id: str, text: str, run_tools: ToolRunner
    ) -> AsyncIterator[EngineEvent]:
        """Add the user's message and run the assistant, streaming engine-neutral events.

        The stream always ends with exactly one Completed, Failed or Incomplete.
        """
        ...

    async def close(self) -> None: ...
