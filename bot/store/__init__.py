"""SQLite persistence (aiosqlite): the only module with SQL in it."""

from bot.store.store import ConversationRecord, PendingTurn, Store

__all__ = ["ConversationRecord", "PendingTurn", "Store"]
