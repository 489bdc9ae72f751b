"""Where each answer is shown, what each turn used, and who changed what.

- turns.reply_ref: where the turn's sign of life is (Slack: the placeholder's ts), so that a
  process taking the turn over writes into it.
- turns.stream_ref: the answer being streamed, while it streams (finished on take-over).
- turns.assistant_id, model, cached_input_tokens: what a turn used, for usage and budgets.
- audit_log: admin actions, with who, what and when.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("reply_ref", sa.Text))
        batch.add_column(sa.Column("stream_ref", sa.Text))
        batch.add_column(sa.Column("assistant_id", sa.Text))
        batch.add_column(sa.Column("model", sa.Text))
        batch.add_column(sa.Column("cached_input_tokens", sa.Integer))
    op.create_index("turns_created", "turns", ["created_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("team_id", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("audit_log_at", "audit_log")
    op.drop_table("audit_log")
    op.drop_index("turns_created", "turns")
    with op.batch_alter_table("turns") as batch:
        for column in ("cached_input_tokens", "model", "assistant_id", "stream_ref", "reply_ref"):
            batch.drop_column(column)
