"""The engine interface: what the core asks of a backend, in engine-neutral types.

An engine turns one user message into a stream of `EngineEvent`s. The core never sees an SDK type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bot.definitions import AssistantDefinition


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""  # the model that answered, when the backend says


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
class Citation:
    """The answer cites a file (or, with `url`, a web page titled `filename`) at `position` in its
    text (where a footnote belongs)."""

    position: int
    file_id: str
    filename: str
    url: str = ""


@dataclass(frozen=True)
class GeneratedFile:
    """A file the assistant produced (a chart, a CSV…), already fetched from the backend."""

    name: str
    content: bytes
    is_image: bool = False


@dataclass(frozen=True)
class Completed:
    text: str  # the whole answer, as the engine finally holds it (citation markers removed)
    run_id: str
    usage: Usage = field(default_factory=Usage)
    citations: tuple[Citation, ...] = ()
    files: tuple[GeneratedFile, ...] = ()
    files_missing: int = 0  # files the assistant made that could not be fetched


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


@dataclass(frozen=True)
class TurnFiles:
    """What a turn may use besides the text: backend ids of searchable stores and files."""

    vector_store_ids: tuple[str, ...] = ()  # for file_search
    code_file_ids: tuple[str, ...] = ()  # data files for code_interpreter
    image_file_ids: tuple[str, ...] = ()  # images shown to the model with this message


NO_FILES = TurnFiles()


@dataclass(frozen=True)
class IndexResult:
    """How indexing one file into a vector store ended: completed, failed or timeout."""

    status: str
    error: str = ""  # the backend's error code (failed), or "timeout"


@dataclass(frozen=True)
class RunStarted:
    """The backend run (or response) now exists: another process can follow it by this id."""

    run_id: str


EngineEvent = TextDelta | RunStarted | ToolCallsRequired | Completed | Failed | Incomplete

ToolRunner = Callable[[Sequence[ToolCall]], Awaitable[list[ToolOutput]]]


class EngineError(Exception):
    """The backend could not be reached or refused a request (after the SDK's own retries)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def no_offered_tools(assistant_name: str) -> list[dict[str, Any]]:
    return []


# The function tools offered to an assistant's model besides its own (its MCP servers' tools),
# by assistant name, in the Assistants API's shape.
OfferedTools = Callable[[str], list[dict[str, Any]]]


class ConversationEngine(Protocol):
    """Runs conversations: what a new backend implements (besides, perhaps, a catalogue)."""

    name: str
    vector_stores_per_conversation: int  # how many vector stores one conversation can search
    offered_tools: OfferedTools

    async def create_conversation(self) -> str:
        """A new backend conversation (an Assistants thread, a Conversations conversation)."""
        ...

    async def verify(self, assistant: AssistantDefinition) -> None:
        """Raise EngineError unless this engine can run this assistant (key, API and model)."""
        ...

    def run(
        self,
        conversation_id: str,
        assistant_id: str,
        text: str,
        run_tools: ToolRunner,
        files: TurnFiles = NO_FILES,
    ) -> AsyncIterator[EngineEvent]:
        """Add the user's message and run the assistant, streaming engine-neutral events.

        The stream always ends with exactly one Completed, Failed or Incomplete.
        """
        ...


@runtime_checkable
class FollowsRuns(Protocol):
    """An engine that can go on with a run another process started and lost (it died)."""

    def follow(
        self,
        conversation_id: str,
        assistant_id: str,
        run_id: str,
        run_tools: ToolRunner,
        files: TurnFiles = NO_FILES,
    ) -> AsyncIterator[EngineEvent]:
        """The run's events from its start (the text already written included), tools run
        whenever it asks, ending as `run` does. EngineError when the backend no longer has it."""
        ...


class AssistantCatalog(Protocol):
    """The assistants there are: a backend's own, or the bot's own definitions."""

    async def get_assistant(self, assistant_id: str) -> AssistantDefinition | None:
        """The assistant (by id; the bot's own definitions also by name), or None if unknown."""
        ...

    async def list_assistants(self) -> list[AssistantDefinition]: ...

    async def create_assistant(self, definition: AssistantDefinition) -> AssistantDefinition: ...

    async def update_assistant(
        self, assistant_id: str, definition: AssistantDefinition
    ) -> AssistantDefinition: ...

    async def delete_assistant(self, assistant_id: str) -> bool: ...


class FileBackend(Protocol):
    """Files and vector stores (file_search, code_interpreter, images)."""

    async def upload_file(self, name: str, content: bytes, purpose: str) -> str:
        """Upload a file (purpose "assistants" or "vision"); its backend id."""
        ...

    async def create_vector_store(self, name: str, expires_after_days: int | None) -> str: ...

    async def index_file(self, vector_store_id: str, file_id: str, timeout: float) -> IndexResult:
        """Add a file to a vector store and wait (at most `timeout` s) until it is searchable."""
        ...

    async def remove_from_vector_store(self, vector_store_id: str, file_id: str) -> None: ...

    async def delete_vector_store(self, vector_store_id: str) -> None:
        """Delete it; one already gone counts as deleted."""
        ...

    async def delete_file(self, file_id: str) -> None:
        """Delete it; one already gone counts as deleted."""
        ...


@dataclass(frozen=True)
class Backend:
    """One backend as the bot uses it: conversations, assistants and files, and one way out."""

    engine: ConversationEngine
    catalog: AssistantCatalog
    files: FileBackend
    release: Callable[[], Awaitable[None]]  # closes what they share (the API client)
    answers: Callable[[], Awaitable[object]]  # a cheap request: raises unless the API answers

    async def close(self) -> None:
        await self.release()
