"""The core's own words for what arrives from a chat: plain data, no Slack or OpenAI types."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConversationKey:
    """One chat thread: the workspace, the channel and the thread's root message."""

    team_id: str
    channel_id: str
    thread_ts: str


@dataclass(frozen=True)
class ChannelScope:
    """A whole channel (or DM), not one of its threads: where its knowledge files belong."""

    team_id: str
    channel_id: str


@dataclass(frozen=True)
class SharedFile:
    """A file shared with a message, as the chat describes it (not yet downloaded)."""

    id: str
    name: str
    mimetype: str
    size: int
    download_url: str


@dataclass(frozen=True)
class IncomingMessage:
    key: ConversationKey
    ts: str  # the message's own timestamp (equals key.thread_ts for a thread's first message)
    user_id: str
    text: str
    is_direct: bool = False  # sent in a DM with the bot
    files: tuple[SharedFile, ...] = ()
    # What the chat says around the message (e.g. the channel its writer is looking at), for the
    # assistant to read after the text; not kept with the turn.
    context: str = ""
