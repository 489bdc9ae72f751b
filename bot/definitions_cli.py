"""`python -m bot assistants …`: list, show, create, update, delete and sync assistants.

With the Assistants engine these call the backend's /assistants; with the Responses engine they
manage the bot's own definitions in its database. The engine is BOT_ENGINE's, or the one the bot
would choose (see README, "Choosing an engine"). Output is plain lines; an error is one line on
stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bot.assistant_choice import match_assistant
from bot.config import OPENAI_DEFAULT_BASE_URL, BackendSettings
from bot.definitions import (
    SETTINGS,
    AssistantDefinition,
    DefinitionError,
    load_definitions,
    parse_definition,
)
from bot.engine.base import AssistantCatalog, EngineError
from bot.engine.catalog import sync_assistants
from bot.governance.audit import (
    ASSISTANT_CREATED,
    ASSISTANT_DELETED,
    ASSISTANT_UPDATED,
    CLI,
    AuditLog,
    record_sync,
)
from bot.text import shorten


class CliError(Exception):
    """What went wrong, in one line."""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "assistants",
        help="manage assistants (list, show, create, update, delete, sync)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every assistant, one per line")
    show = actions.add_parser("show", help="one assistant in full")
    show.add_argument("assistant", metavar="NAME", help="name or id")
    create = actions.add_parser("create", help="a new assistant")
    _definition_flags(create)
    update = actions.add_parser("update", help="change the given fields of an assistant")
    update.add_argument("assistant", metavar="NAME", help="name or id")
    _definition_flags(update)
    delete = actions.add_parser("delete", help="delete an assistant")
    delete.add_argument("assistant", metavar="NAME", help="name or id")
    sync = actions.add_parser(
        "sync", help="make the assistants match a YAML or TOML file (created and updated by name)"
    )
    sync.add_argument("file", type=Path, help="assistants.yaml or assistants.toml")
    sync.add_argument(
        "--prune", action="store_true", help="also delete assistants the file does not name"
    )


def _definition_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name")
    parser.add_argument("--model", help="e.g. gpt-4.1")
    parser.add_argument("--instructions")
    parser.add_argument("--description")
    parser.add_argument(
        "--tool",
        action="append",
        dest="tools",
        metavar="TYPE",
        help="code_interpreter or file_search; repeat for both (update: replaces the tools)",
    )
    parser.add_argument("--temperature", type=float, help="0 to 2")
    parser.add_argument("--top-p", type=float, dest="top_p", help="0 to 1")


async def run(args: argparse.Namespace, settings: BackendSettings) -> int:
    # Imported here: they load the openai SDK (about 1 s) and SQLAlchemy, and `python -m bot`
    # imports this module before it listens for Ctrl-C.
    from bot import backend as backends
    from bot.store import Store, StoreError

    client = backends.make_openai_client(settings)
    try:
        choice = await backends.choose_engine(settings, client)
    except EngineError as exc:
        await client.close()
        print(f"error: {_engine_problem(exc, settings)}", file=sys.stderr)
        return 1
    # Also with the Assistants engine, whose assistants live on the backend: the audit log
    # records every change in the database.
    try:
        store = await Store.open(settings.database_url)
    except StoreError as exc:
        await client.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    backend = backends.make_backend(choice.engine, client, store)
    try:
        await _act(args, backend.catalog, AuditLog(store))
    except (CliError, DefinitionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except EngineError as exc:
        print(f"error: {_engine_problem(exc, settings)}", file=sys.stderr)
        return 1
    finally:
        await backend.close()
        await store.close()
    return 0


def _engine_problem(exc: EngineError, settings: BackendSettings) -> str:
    from bot.backend import RETIREMENT_NOTE
    from bot.startup import network_problem

    if exc.code == "api_not_served":
        return f"the server does not serve the Assistants API. {RETIREMENT_NOTE}"
    problem = network_problem(exc, settings.openai_base_url or OPENAI_DEFAULT_BASE_URL)
    return f"OpenAI at {problem}" if problem else exc.message


async def _act(args: argparse.Namespace, catalog: AssistantCatalog, audit_log: AuditLog) -> None:
    if args.action == "list":
        _print_list(await catalog.list_assistants())
    elif args.action == "show":
        _print_one(await _find(catalog, args.assistant))
    elif args.action == "create":
        definition = parse_definition(_flags(args))
        await _name_is_free(catalog, definition.name)
        created = await catalog.create_assistant(definition)
        await audit_log.record(ASSISTANT_CREATED, CLI, assistant=created.name, id=created.id)
        print(f"created {created.name} ({created.id})")
    elif args.action == "update":
        current = await _find(catalog, args.assistant)
        definition = parse_definition({**current.settings(), **_flags(args)})
        if definition.name.casefold() != current.name.casefold():
            await _name_is_free(catalog, definition.name)
        updated = await catalog.update_assistant(current.id, definition)
        await audit_log.record(ASSISTANT_UPDATED, CLI, assistant=updated.name, id=updated.id)
        print(f"updated {updated.name} ({updated.id})")
    elif args.action == "delete":
        doomed = await _find(catalog, args.assistant)
        if not await catalog.delete_assistant(doomed.id):
            raise CliError(f"{doomed.name} ({doomed.id}) was already gone")
        await audit_log.record(ASSISTANT_DELETED, CLI, assistant=doomed.name, id=doomed.id)
        print(f"deleted {doomed.name} ({doomed.id})")
    elif args.action == "sync":
        if not args.file.is_file():
            raise CliError(f"{args.file} is not a file")
        result = await sync_assistants(catalog, load_definitions(args.file), prune=args.prune)
        await record_sync(audit_log, result, CLI)
        for label, names in (
            ("created", result.created),
            ("updated", result.updated),
            ("unchanged", result.unchanged),
            ("deleted", result.deleted),
        ):
            for name in names:
                print(f"{label}: {name}")
        print(
            f"sync done: {len(result.created)} created, {len(result.updated)} updated, "
            f"{len(result.unchanged)} unchanged, {len(result.deleted)} deleted"
        )


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The definition fields given on the command line (those left out are not in the dict)."""
    return {name: getattr(args, name) for name in SETTINGS if getattr(args, name, None) is not None}


async def _find(catalog: AssistantCatalog, name: str) -> AssistantDefinition:
    """By id or whole name (any case); never by a prefix, so `delete` removes what was named."""
    assistants = await catalog.list_assistants()
    for assistant in assistants:
        if assistant.id == name:
            return assistant
    named = [a for a in assistants if a.name.casefold() == name.strip().casefold()]
    if len(named) == 1:
        return named[0]
    if named:
        ids = ", ".join(a.id for a in named)
        raise CliError(f"{len(named)} assistants are named {name!r} ({ids}); give the id")
    match = match_assistant(name, assistants)
    near = match.ambiguous or match.close or ((match.found,) if match.found else ())
    hint = f"; did you mean {', '.join(repr(a.name) for a in near)}?" if near else ""
    raise CliError(f"no assistant named {name!r}{hint}")


async def _name_is_free(catalog: AssistantCatalog, name: str) -> None:
    for assistant in await catalog.list_assistants():
        if assistant.name.casefold() == name.casefold():
            raise CliError(
                f"an assistant named {assistant.name!r} already exists ({assistant.id}); "
                "use `assistants update`"
            )


def _print_list(assistants: list[AssistantDefinition]) -> None:
    if not assistants:
        print("No assistants.")
        return
    rows = [
        (a.name, a.id, a.model, ", ".join(a.tool_types) or "-", shorten(a.description, 60))
        for a in assistants
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _print_one(assistant: AssistantDefinition) -> None:
    tools = [
        f"function {tool['function']['name']}" if tool["type"] == "function" else tool["type"]
        for tool in assistant.tools
    ]
    lines = [
        ("name", assistant.name),
        ("id", assistant.id),
        ("model", assistant.model),
        ("description", assistant.description or "-"),
        ("tools", ", ".join(tools) or "-"),
        (
            "tool_resources",
            json.dumps(assistant.tool_resources) if assistant.tool_resources else "-",
        ),
        ("temperature", _number(assistant.temperature)),
        ("top_p", _number(assistant.top_p)),
        ("metadata", ", ".join(f"{k}={v}" for k, v in assistant.metadata.items()) or "-"),
    ]
    for label, value in lines:
        print(f"{label}: {value}")
    print("instructions:")
    for line in (assistant.instructions or "-").splitlines():
        print(f"  {line}")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
