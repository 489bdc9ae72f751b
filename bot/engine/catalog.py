"""Keeping a backend's assistants in line with declared definitions (both engines)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.assistants import AssistantDefinition
from bot.engine.base import Engine


@dataclass(frozen=True)
class SyncResult:
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str]


async def sync_assistants(
    engine: Engine,
    definitions: Sequence[AssistantDefinition],
    prune: bool = False,
    dry_run: bool = False,
) -> SyncResult:
    """Create or update each definition, matched by name; with `prune`, delete the rest.

    With `dry_run`, change nothing and say what would change.
    """
    existing = {a.name: a for a in await engine.list_assistants()}
    result = SyncResult([], [], [], [])
    for definition in definitions:
        current = existing.pop(definition.name, None)
        if current is None:
            if not dry_run:
                await engine.create_assistant(definition)
            result.created.append(definition.name)
        elif _same(current, definition):
            result.unchanged.append(definition.name)
        else:
            if not dry_run:
                await engine.update_assistant(current.id, definition)
            result.updated.append(definition.name)
    if prune:
        for stale in existing.values():
            if not dry_run:
                await engine.delete_assistant(stale.id)
            result.deleted.append(stale.name)
    return result


def _same(current: AssistantDefinition, wanted: AssistantDefinition) -> bool:
    """Whether the backend already holds what the definition says.

    A sampling setting the definition leaves out, and keys the backend adds to tools and
    resources (defaults like a function's `strict`), do not count as differences.
    """
    return (
        all(
            getattr(current, f) == getattr(wanted, f)
            for f in ("model", "instructions", "description", "metadata")
        )
        and all(
            getattr(wanted, f) is None or getattr(current, f) == getattr(wanted, f)
            for f in ("temperature", "top_p")
        )
        and _covers(current.tools, wanted.tools)
        and _covers(current.tool_resources, wanted.tool_resources)
    )


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
