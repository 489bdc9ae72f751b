"""The tables, as SQLAlchemy Core sees them: one schema for SQLite and PostgreSQL.

This is the schema as it is now; `migrations/versions/` holds the steps that lead to it, and a test
checks that the two agree on both databases.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# A Slack thread's backend conversation; an empty backend_id means "chosen, not created yet".
conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("team_id", sa.Text, primary_key=True),
    sa.Column("channel_id", sa.Text, primary_key=True),
    sa.Column("thread_ts", sa.Text, primary_key=True),
    sa.Column("engine", sa.Text, nullable=False),
    sa.Column("backend_id", sa.Text, nullable=False),
    sa.Column("assistant_id", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("vector_store_id", sa.Text),
)

# A channel's (or a DM's) default assistant for new conversations.
channel_settings = sa.Table(
    "channel_settings",
    metadata,
    sa.Column("team_id", sa.Text, primary_key=True),
    sa.Column("channel_id", sa.Text, primary_key=True),
    sa.Column("assistant_id", sa.Text, nullable=False),
    sa.Column("set_by", sa.Text, nullable=False),
    sa.Column("set_at", sa.Float, nullable=False),
)

# One row per message the bot takes. The unique (team, channel, message ts) is the dedupe.
turns = sa.Table(
    "turns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("team_id", sa.Text, nullable=False),
    sa.Column("channel_id", sa.Text, nullable=False),
    sa.Column("thread_ts", sa.Text, nullable=False),
    sa.Column("message_ts", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("is_direct", sa.Boolean, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("input_tokens", sa.Integer),
    sa.Column("output_tokens", sa.Integer),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("files", sa.Text, nullable=False, server_default="[]"),
    sa.Column("reply_ref", sa.Text),  # where the sign of life is (Slack: the placeholder's ts)
    sa.Column("stream_ref", sa.Text),  # the answer being streamed, while it streams
    sa.Column("assistant_id", sa.Text),
    sa.Column("model", sa.Text),
    sa.Column("cached_input_tokens", sa.Integer),
    # How many times the turn was started (its first try, then each take-over after a crash).
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("team_id", "channel_id", "message_ts"),
    sa.Index("turns_created", "created_at"),
    sa.Index("turns_conversation", "team_id", "channel_id", "thread_ts"),
    sa.Index(
        "turns_open",
        "status",
        sqlite_where=sa.text("status IN ('queued', 'running')"),
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    ),
)

# The bot's own assistant definitions (Responses engine), as JSON.
assistants = sa.Table(
    "assistants",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# A Slack file uploaded to the backend for a purpose, so that it is uploaded once.
files = sa.Table(
    "files",
    metadata,
    sa.Column("slack_file_id", sa.Text, primary_key=True),
    sa.Column("purpose", sa.Text, primary_key=True),
    sa.Column("backend_file_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# The vector stores the bot made: a thread's, or (thread_ts "") a channel's knowledge.
vector_stores = sa.Table(
    "vector_stores",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("team_id", sa.Text, nullable=False),
    sa.Column("channel_id", sa.Text, nullable=False),
    sa.Column("thread_ts", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index(
        "vector_stores_channel",
        "team_id",
        "channel_id",
        unique=True,
        sqlite_where=sa.text("thread_ts = ''"),
        postgresql_where=sa.text("thread_ts = ''"),
    ),
)

# A backend file put to a use (search, code, image) in a thread or in a channel's knowledge.
shared_files = sa.Table(
    "shared_files",
    metadata,
    sa.Column("team_id", sa.Text, primary_key=True),
    sa.Column("channel_id", sa.Text, primary_key=True),
    sa.Column("thread_ts", sa.Text, primary_key=True),
    sa.Column("backend_file_id", sa.Text, primary_key=True),
    sa.Column("use", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("vector_store_id", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("added_by", sa.Text, nullable=False),
    sa.Column("added_at", sa.Float, nullable=False),
)

# One person's rating of one answer; the latest click counts.
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("turn_id", sa.Integer, sa.ForeignKey("turns.id"), primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("rating", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Admin actions: who did what, when (detail is JSON).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("team_id", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.Index("audit_log_at", "at"),
)

# A tool call waiting for (or given) a person's decision: pending, approved, denied, expired or
# withdrawn; whichever process shows the buttons, the waiting turn reads the decision here.
approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("team_id", sa.Text, nullable=False),
    sa.Column("asker", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("decided_by", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("decided_at", sa.Float),
)
