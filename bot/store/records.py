"""What the store hands out: plain records, no SQL types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.messages import ConversationKey, SharedFile

# Where shared files live: a conversation's thread, or (thread_ts "") a channel's knowledge.
Scope = ConversationKey


@dataclass(frozen=True)
class ConversationRecord:
    key: ConversationKey
    engine: str
    backend_id: str
    assistant_id: str
    vector_store_id: str | None = None


@dataclass(frozen=True)
class ChannelSetting:
    """A channel's (or a DM's) default assistant for new conversations, and who set it when."""

    team_id: str
    channel_id: str
    assistant_id: str
    set_by: str
    set_at: float


@dataclass(frozen=True)
class Feedback:
    turn_id: int
    message_ts: str  # the message the rated answer answers
    user_id: str
    rating: str  # "good" | "bad"


@dataclass(frozen=True)
class TurnProgress:
    """How far a turn got, for whoever takes it over: its backend run, where its sign of life
    is, and the messages its answer was being written into (the chat's own refs)."""

    run_id: str | None = None
    reply_ref: str | None = None
    answer_ref: str | None = None
    status: str = "queued"


@dataclass(frozen=True)
class PendingTurn:
    turn_id: int
    key: ConversationKey
    message_ts: str
    user_id: str
    text: str
    is_direct: bool
    status: str
    files: tuple[SharedFile, ...] = ()
    progress: TurnProgress = TurnProgress()


@dataclass(frozen=True)
class SharedFileRecord:
    """A backend file put to a use (search, code, image) in a thread or a channel's knowledge."""

    backend_file_id: str
    use: str
    name: str
    vector_store_id: str | None
    status: str
    error: str | None
    added_by: str
    added_at: float


@dataclass(frozen=True)
class TurnKnowledge:
    """What a thread's turn may search and run code on."""

    vector_store_id: str | None  # the thread's own
    channel_vector_store_id: str | None  # its channel's knowledge
    code_file_ids: tuple[str, ...]


@dataclass(frozen=True)
class Approval:
    """A tool call's approval: who may decide (the asker, or an admin) and what was decided."""

    id: str
    team_id: str
    asker: str
    status: str  # pending, approved, denied, expired, withdrawn
    decided_by: str = ""
    created_at: float = 0.0


@dataclass(frozen=True)
class AuditEntry:
    """One admin action: when, in which workspace, who (a Slack user id, or "cli"), what."""

    at: float
    team_id: str
    actor: str
    action: str
    detail: dict[str, Any] = field(default_factory=dict)
