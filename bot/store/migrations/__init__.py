"""Alembic's migrations of the store's schema (`versions/`, one file per step)."""
