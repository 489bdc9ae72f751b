"""SQLite persistence (aiosqlite): the only module with SQL in it."""

from bot.store.store import ConversationRecord, Feedback, PendingTurn, Store

__all__ = ["ConversationRecord", "Feedback", "PendingTurn", "Store"]
