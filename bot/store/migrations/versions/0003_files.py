"""Shared files, vector stores, channel knowledge (user_version 3).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

CHANNEL_KNOWLEDGE = sa.text("thread_ts = ''")


def upgrade() -> None:
    op.add_column("conversations", sa.Column("vector_store_id", sa.Text))
    op.add_column("turns", sa.Column("files", sa.Text, nullable=False, server_default="[]"))
    op.create_table(
        "files",
        sa.Column("slack_file_id", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("backend_file_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("slack_file_id", "purpose"),
    )
    op.create_table(
        "vector_stores",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("team_id", sa.Text, nullable=False),
        sa.Column("channel_id", sa.Text, nullable=False),
        sa.Column("thread_ts", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index(
        "vector_stores_channel",
        "vector_stores",
        ["team_id", "channel_id"],
        unique=True,
        sqlite_where=CHANNEL_KNOWLEDGE,
        postgresql_where=CHANNEL_KNOWLEDGE,
    )
    op.create_table(
        "shared_files",
        sa.Column("team_id", sa.Text, nullable=False),
        sa.Column("channel_id", sa.Text, nullable=False),
        sa.Column("thread_ts", sa.Text, nullable=False),
        sa.Column("backend_file_id", sa.Text, nullable=False),
        sa.Column("use", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("vector_store_id", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("added_by", sa.Text, nullable=False),
        sa.Column("added_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("team_id", "channel_id", "thread_ts", "backend_file_id", "use"),
    )


def downgrade() -> None:
    op.drop_table("shared_files")
    op.drop_table("vector_stores")
    op.drop_table("files")
    op.drop_column("turns", "files")
    op.drop_column("conversations", "vector_store_id")
