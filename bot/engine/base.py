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
    """What a turn used, tool rounds included; cached input tokens are part of input_tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    model: str = ""  # as the backend reports it (maybe a dated snapshot); "" when it did not say

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            other.model or self.model,
        )


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON, as the model wrote it
    # A call of an MCP server OpenAI runs itself (`via: openai`): only its approval is asked for.
    hosted_server: str = ""


@dataclass(frozen=True)
class ToolOutput:
    call_id: str
    output: str
    approved: bool | None = None  # the decision on a hosted call (see ToolCall.hosted_server)


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
    usage: Usage = field(default_factory=Usage)


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


# EngineError code: the backend no longer has the run (or response) a turn was following.
RUN_GONE = "run_gone"
# Failed code: the run (or response) was cancelled on the backend.
CANCELLED_RUN = "cancelled"


@dataclass(frozen=True)
class Source:
    """A web page a tool read (a web search's result)."""

    title: str
    url: str


@dataclass(frozen=True)
class HostedToolActivity:
    """A tool the backend runs itself (file_search, web_search, code_interpreter) began or ended."""

    id: str
    kind: str  # file_search, web_search, code_interpreter, mcp (a server OpenAI calls)
    status: str  # in_progress, complete, error
    sources: tuple[Source, ...] = ()
    name: str = ""  # the MCP tool's name
    server: str = ""  # the MCP server's name


@dataclass(frozen=True)
class ReasoningSummary:
    """The model's summary of its reasoning so far (reasoning models), never part of the answer."""

    text: str


EngineEvent = (
    TextDelta
    | RunStarted
    | ToolCallsRequired
    | HostedToolActivity
    | ReasoningSummary
    | Completed
    | Failed
    | Incomplete
)
# Shown while a run goes on; the others end a stream (tool calls, or the run's outcome).
PROGRESS_EVENTS = (TextDelta, RunStarted, HostedToolActivity, ReasoningSummary)

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

    async def delete_conversation(self, conversation_id: str, run_ids: Sequence[str]) -> None:
        """Delete a conversation and all it holds on the backend (its messages, and the runs or
        stored responses `run_ids`); what is already gone counts as deleted."""
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

    async def cancel_run(self, conversation_id: str, run_id: str) -> None:
        """Cancel a run another process started (Stop pressed before it was followed); a run
        that has ended, or that the backend no longer has, is left as it is."""
        ...

    def follow(
        self,
        conversation_id: str,
        assistant_id: str,
        run_id: str,
        run_tools: ToolRunner,
        files: TurnFiles = NO_FILES,
    ) -> AsyncIterator[EngineEvent]:
        """The run's events from its start (the text already written included), tools run
        whenever it asks, ending as `run` does. EngineError(RUN_GONE) when the backend no longer
        has it."""
        ...

    def run_again(
        self,
        conversation_id: str,
        assistant_id: str,
        text: str,
        run_tools: ToolRunner,
        files: TurnFiles = NO_FILES,
        lost_run: str = "",
    ) -> AsyncIterator[EngineEvent]:
        """`run` for a turn whose run was lost (`lost_run`, or "" when its id was never kept):
        the user's message is added unless the conversation already holds it."""
        ...


class AssistantCatalog(Protocol):
    """The assistants there are: a backend's own, or the bot's own definitions."""

    # Whether it keeps the settings only the bot uses (suggested prompts, MCP servers, who may
    # use it): the bot's own definitions do, the Assistants API does not.
    keeps_bot_settings: bool

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
