"""What happened to a turn, as codes and data: the core and the engines report these, and the
chat surface chooses the words (for Slack: bot/slack/words.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.engine.base import Citation, GeneratedFile, Source

# The core's own failure codes; the others are the backend's (rate_limit_exceeded, server_error…).
STOPPED = "stopped"  # someone pressed Stop
INTERRUPTED = "interrupted"  # a restart cut the answer off
RESTARTING = "restarting"  # the bot is going down; it answers the message once it is back
TIMEOUT = "timeout"  # TURN_TIMEOUT_SECONDS passed
NO_USABLE_FILES = "no_usable_files"  # the message was only files, and none could be used
INTERNAL_ERROR = "internal_error"  # a bug: the turn crashed
GAVE_UP = "gave_up"  # the bot died each of the MAX_ATTEMPTS times it tried to answer
# A message is tried this many times at most (its first try, then a take-over after each crash):
# one whose answering kills the bot every time is given up, not taken over forever.
MAX_ATTEMPTS = 3
# Why a message is turned away before the model is asked.
OVER_BUDGET = "over_budget"
RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class LimitState:
    """A limit as it stands for one message: what it counts, how much of it is used, and when it
    starts afresh."""

    scope: str  # whose: "person", "channel", "assistant" or "global"
    period: str  # "minute", "day", "week" or "month"
    unit: str  # "usd", "tokens" or "turns"
    limit: float
    used: float
    resets_at: float  # epoch seconds


@dataclass(frozen=True)
class Refusal:
    """A message that is not answered (the model is not called): the person is told why,
    privately."""

    code: str  # OVER_BUDGET or RATE_LIMITED
    limit: LimitState


@dataclass(frozen=True)
class Failure:
    """Why an answer ends here (after whatever part of it was already shown)."""

    code: str
    detail: str = ""  # the backend's or the error's own words: for logs, never for people


@dataclass(frozen=True)
class Answer:
    """A whole answer: its text, sources and files, and what it lacks."""

    text: str
    citations: tuple[Citation, ...] = ()
    files: tuple[GeneratedFile, ...] = ()
    files_missing: int = 0  # files the assistant made that could not be fetched
    incomplete: str = ""  # why the answer stops short (a backend reason code); "" when whole
    near_limit: LimitState | None = None  # this answer took its asker near a budget (warn once)
    tasks: tuple[Task, ...] = ()  # the tools the turn used, in the order they ran


@dataclass(frozen=True)
class RunningTool:
    name: str
    server: str = ""  # the MCP server whose tool it is
    status: str = ""  # what the tool declared to show while it runs ("" when it declared nothing)


@dataclass(frozen=True)
class FileProblem:
    """A shared file that could not be used (or added), and why, as a code with its data."""

    file_name: str  # as the chat named it; "" when the chat did not say
    file_id: str
    reason: str  # a FileRefused reason code (see bot.file_ingest)
    detail: str = ""  # what the reason names: an extension, a model, an error code…
    size: int = 0  # bytes (too_large)
    limit: int = 0  # bytes (too_large, over_limit)


@dataclass(frozen=True)
class Task:
    """One tool call of a turn as people follow it: a function, an MCP server's tool, or a tool
    the backend runs itself (file_search, web_search, code_interpreter)."""

    id: str
    kind: str  # function, mcp, file_search, web_search, code_interpreter
    status: str  # in_progress, complete, error
    name: str = ""  # the function's or the MCP tool's name ("" for the backend's own tools)
    server: str = ""  # the MCP server's name
    sources: tuple[Source, ...] = ()
    detail: str = ""  # what the call asked (its arguments)
    not_run: bool = False  # (status error) no one approved it, so it never ran


@dataclass(frozen=True)
class ApprovalRequest:
    """A tool call that waits for a person's decision before it runs."""

    call_id: str
    tool: str  # the MCP tool's own name (or the function's)
    server: str  # "" for a plain function tool
    arguments: str  # JSON, as the model wrote it


# How an approval ended.
APPROVED = "approved"
DENIED = "denied"
EXPIRED = "expired"  # no decision within APPROVAL_TIMEOUT_SECONDS: counts as denied
WITHDRAWN = "withdrawn"  # the turn stopped while the approval waited


@dataclass(frozen=True)
class Decision:
    outcome: str  # APPROVED, DENIED, EXPIRED or WITHDRAWN
    by: str = ""  # the person who decided (a chat user id)

    @property
    def approved(self) -> bool:
        return self.outcome == APPROVED


Approver = Callable[[ApprovalRequest], Awaitable[Decision]]
