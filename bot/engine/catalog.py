"""Keeping a backend's assistants in line with declared definitions (both engines)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.definitions import BOT_ONLY, SETTINGS, AssistantDefinition
from bot.engine.base import AssistantCatalog

SAMPLING = ("temperature", "top_p")
GROWN_BY_BACKEND = ("tools", "tool_resources")


@dataclass(frozen=True)
class SyncResult:
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str]


async def sync_assistants(
    catalog: AssistantCatalog,
    definitions: Sequence[AssistantDefinition],
    prune: bool = False,
    dry_run: bool = False,
) -> SyncResult:
    """Create or update each definition, matched by name; with `prune`, delete the rest.

    With `dry_run`, change nothing and say what would change.
    """
    existing = {a.name: a for a in await catalog.list_assistants()}
    result = SyncResult([], [], [], [])
    for definition in definitions:
        current = existing.pop(definition.name, None)
        if current is None:
            if not dry_run:
                await catalog.create_assistant(definition)
            result.created.append(definition.name)
        elif _same(current, definition, catalog.keeps_bot_settings):
            result.unchanged.append(definition.name)
        else:
            if not dry_run:
                await catalog.update_assistant(current.id, definition)
            result.updated.append(definition.name)
    if prune:
        for stale in existing.values():
            if not dry_run:
                await catalog.delete_assistant(stale.id)
            result.deleted.append(stale.name)
    return result


def _same(current: AssistantDefinition, wanted: AssistantDefinition, bot_settings: bool) -> bool:
    """Whether the backend already holds what the definition says, setting by setting.

    Assistants are matched by name. A sampling setting the definition leaves out, and keys the
    backend adds to tools and resources (defaults like a function's `strict`), do not count as
    differences; settings only the bot keeps are compared only where it keeps them (the
    Assistants API has none).
    """
    for name in SETTINGS:
        held, declared = getattr(current, name), getattr(wanted, name)
        skipped = name in BOT_ONLY and not bot_settings
        if name == "name" or skipped or (name in SAMPLING and declared is None):
            continue
        if not (_covers(held, declared) if name in GROWN_BY_BACKEND else held == declared):
            return False
    return True


def _covers(current: Any, wanted: Any) -> bool:
    """`current` has every value `wanted` sets (lists: the same length, item by item)."""
    if isinstance(wanted, Mapping):
        return isinstance(current, Mapping) and all(
            _covers(current.get(key), value) for key, value in wanted.items()
        )
    if isinstance(wanted, list | tuple):
        return (
            isinstance(current, list | tuple)
            and len(current) == len(wanted)
            and all(_covers(c, w) for c, w in zip(current, wanted, strict=True))
        )
    return bool(current == wanted)
