"""Feedback on answers (user_version 4).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("turn_id", sa.Integer, sa.ForeignKey("turns.id"), nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("rating", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("turn_id", "user_id"),
    )


def downgrade() -> None:
    op.drop_table("feedback")
