"""What happened to a turn, as codes and data: the core and the engines report these, and the
chat surface chooses the words (for Slack: bot/slack/words.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.engine.base import Citation, GeneratedFile

# The core's own failure codes; the others are the backend's (rate_limit_exceeded, server_error…).
STOPPED = "stopped"  # someone pressed Stop
INTERRUPTED = "interrupted"  # a restart cut the answer off
RESTARTING = "restarting"  # the bot is going down; it answers the message once it is back
TIMEOUT = "timeout"  # TURN_TIMEOUT_SECONDS passed
NO_USABLE_FILES = "no_usable_files"  # the message was only files, and none could be used
INTERNAL_ERROR = "internal_error"  # a bug: the turn crashed
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


@dataclass(frozen=True)
class RunningTool:
    name: str
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
