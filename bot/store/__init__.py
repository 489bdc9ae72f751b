"""SQLite persistence (aiosqlite): the only module with SQL in it."""

from bot.store.store import (
    ChannelSetting,
    ConversationRecord,
    DatabaseState,
    Feedback,
    PendingTurn,
    SharedFileRecord,
    Store,
)

__all__ = [
    "ChannelSetting",
    "ConversationRecord",
    "DatabaseState",
    "Feedback",
    "PendingTurn",
    "SharedFileRecord",
    "Store",
]
