"""How many times a turn was started: a message whose answering kills the bot every time (it
runs the process out of memory, say) is given up after a few tries instead of being taken over
on every restart, forever.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("attempts")
