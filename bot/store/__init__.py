"""SQLite persistence (aiosqlite): the only module with SQL in it."""

from bot.store.store import ConversationRecord, PendingTurn, SharedFileRecord, Store

__all__ = ["ConversationRecord", "PendingTurn", "SharedFileRecord", "Store"]
