"""Alembic runs this for each command the store gives it, on the store's own connection (already
in the store's transaction; see bot/store/migrate.py). There is no alembic.ini: the store is the
only caller.

To change the schema: change bot/store/schema.py, then add the step that leads there as the next
file in versions/ (copy the latest one, set `revision` and `down_revision`). A test migrates an
empty database of each kind and compares the result with schema.py.
"""

from alembic import context

from bot.store.schema import metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
