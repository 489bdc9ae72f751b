"""Keeping a backend's assistants in line with declared definitions (both engines)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.assistants import AssistantDefinition
from bot.engine.base import Engine


@dataclass(frozen=True)
class SyncResult:
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str]


async def sync_assistants(
    engine: Engine, definitions: Sequence[AssistantDefinition], prune: bool = False
) -> SyncResult:
    """Create or update each definition, matched by name; with `prune`, delete the rest."""
    existing = {a.name: a for a in await engine.list_assistants()}
    result = SyncResult([], [], [], [])
    for definition in definitions:
        current = existing.pop(definition.name, None)
        if current is None:
            await engine.create_assistant(definition)
            result.created.append(definition.name)
        elif _same(current, definition):
            result.unchanged.append(definition.name)
        else:
            await engine.update_assistant(current.id, definition)
            result.updated.append(definition.name)
    if prune:
        for stale in existing.values():
            await engine.delete_assistant(stale.id)
            result.deleted.append(stale.name)
    return result


def _same(current: AssistantDefinition, wanted: AssistantDefinition) -> bool:
    fields = ("model", "instructions", "description", "tools", "temperature", "top_p", "metadata")
    return all(getattr(current, f) == getattr(wanted, f) for f in fields)
