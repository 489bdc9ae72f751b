"""`python -m bot check`: the settings, both APIs and the database, as start-up would find them.

It changes nothing: the database is read from a copy in memory, and the assistants file is
compared with what the backend holds. It says what start-up would create or change instead. Slack
and the backend are checked at the same time, each step bounded (bot/startup.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from slack_sdk.web.async_client import AsyncWebClient

from bot.app import (
    check_app_token,
    close_slack_client,
    make_slack_client,
    make_tools,
    missing_tools,
    slack_identity,
)
from bot.backend import check_assistant, describe, open_backend
from bot.config import OPENAI_DEFAULT_BASE_URL, Settings
from bot.definitions import (
    AssistantDefinition,
    DefinitionError,
    hosted_by_openai,
    load_definitions,
)
from bot.engine.base import Backend, EngineError
from bot.engine.catalog import sync_assistants
from bot.startup import StartupError, reaching
from bot.store import DatabaseState, Store, StoreError, describe_url
from bot.tools import ToolRegistry
from bot.tools.mcp import McpServers


@dataclass
class Findings:
    lines: list[str] = field(default_factory=list)
    ok: bool = True

    def failed(self, step: str, problem: str) -> None:
        self.lines.append(f"{step}: FAILED {problem}")
        self.ok = False


async def check(settings: Settings) -> int:
    """Print what was found, one line each; 0 when start-up would succeed."""
    database: DatabaseState | StoreError
    try:
        store, database = await Store.snapshot(settings.database_url)
    except StoreError as exc:  # the rest is still checked, on an empty database
        store, database = await Store.open(":memory:"), exc
    try:
        backend, slack = await asyncio.gather(
            _check_backend(settings, store), _check_slack(settings)
        )
    finally:
        await store.close()
    print(*backend.lines[:1], sep="\n")
    print(f"mode: {'socket' if settings.socket_mode else f'http on port {settings.port}'}")
    print(f"database: {_database(settings, database)}")
    print(*slack.lines, *backend.lines[1:], sep="\n")
    tools = _check_tools(settings, backend.assistant)
    print(*tools.lines, sep="\n")
    print(*await _check_mcp_servers(settings, backend.assistant), sep="\n")
    usable = not isinstance(database, StoreError)
    return 0 if backend.ok and slack.ok and tools.ok and usable else 1


def _database(settings: Settings, state: DatabaseState | StoreError) -> str:
    if isinstance(state, StoreError):
        return f"FAILED {state}"
    where = describe_url(settings.database_url)
    if not state.exists:
        return f"{where} does not exist yet: start-up creates it"
    if state.revision is None:
        return f"{where} has no tables yet: start-up creates them"
    if state.pending_migrations:
        return (
            f"{where} is at schema revision {state.revision} of {state.latest}: start-up "
            f"migrates it ({state.pending_migrations} migration(s))"
        )
    return f"{where}, ok"


@dataclass
class BackendFindings(Findings):
    assistant: AssistantDefinition | None = None


async def _check_backend(settings: Settings, store: Store) -> BackendFindings:
    found = BackendFindings()
    step = "engine"
    url = settings.openai_base_url or OPENAI_DEFAULT_BASE_URL
    try:
        async with reaching("OpenAI", url, "OPENAI_BASE_URL"):
            backend, choice = await open_backend(settings.backend, store)
            try:
                found.lines.append(f"engine: {choice.engine} ({choice.why})")
                step = "assistants file"
                if settings.assistants_file is not None:
                    found.lines.append(f"assistants file: {await _plan(backend, settings)}")
                step = "assistant"
                found.assistant = await check_assistant(backend, settings.backend, choice)
                found.lines.append(f"assistant: ok, {describe(found.assistant)}")
            finally:
                await backend.close()
    except StartupError as exc:
        found.failed(step, str(exc))
    except EngineError as exc:
        found.failed(step, exc.message)
    return found


async def _plan(backend: Backend, settings: Settings) -> str:
    """What start-up would do with ASSISTANTS_FILE.

    The Responses engine keeps its assistants in the database, here the copy in memory: syncing
    there changes nothing on disk, and the default assistant is then found as start-up finds it.
    The Assistants engine keeps them on the server, which is only compared with.
    """
    assert settings.assistants_file is not None
    try:
        definitions = load_definitions(settings.assistants_file)
    except DefinitionError as exc:
        raise StartupError(f"ASSISTANTS_FILE: {exc}") from exc
    result = await sync_assistants(
        backend.catalog, definitions, dry_run=backend.engine.name != "responses"
    )
    changes = [
        f"{verb} {', '.join(names)}"
        for verb, names in (("creates", result.created), ("updates", result.updated))
        if names
    ]
    if not changes:
        return f"ok, {len(result.unchanged)} assistant(s) as declared"
    return "start-up " + "; ".join(changes)


async def _check_slack(settings: Settings) -> Findings:
    found = Findings()
    step = "slack"
    client = make_slack_client(settings)
    try:
        async with reaching("Slack", settings.slack_api_url, "SLACK_API_URL"):
            auth = await slack_identity(client, settings)
            found.lines.append(
                f"slack: ok, team {auth.get('team')} ({auth.get('team_id')}), "
                f"bot user {auth.get('user_id')}"
            )
            if settings.socket_mode:
                step = "slack app token"
                await check_app_token(client, settings)
                found.lines.append("slack app token: ok, Socket Mode can connect")
    except StartupError as exc:
        found.failed(step, str(exc))
    finally:
        await close_slack_client(client)
    return found


def _check_tools(settings: Settings, assistant: AssistantDefinition | None) -> Findings:
    found = Findings()
    try:
        tools = make_tools(settings.tools, AsyncWebClient(), "")  # definitions only: no calls
    except StartupError as exc:
        found.failed("tools", str(exc))
        return found
    missing = missing_tools(assistant, tools) if assistant else []
    lacking = f" (not defined on the assistant: {', '.join(missing)})" if missing else ""
    found.lines.append(f"tools: {', '.join(tools.names)}{lacking}")
    return found


async def _check_mcp_servers(
    settings: Settings, assistant: AssistantDefinition | None
) -> list[str]:
    """One line per MCP server the assistants name. An unreachable one does not fail the check:
    the bot starts without it (its tools answer an error until it is back)."""
    definitions = [assistant] if assistant else []
    if settings.assistants_file is not None:
        with contextlib.suppress(DefinitionError):  # already reported with the backend's
            definitions += load_definitions(settings.assistants_file)
    servers = McpServers(ToolRegistry())
    servers.add(definitions)
    hosted = {
        config["name"]: f"mcp server {config['name']!r}: via OpenAI (OpenAI connects to it)"
        for definition in definitions
        for config in definition.mcp_servers
        if hosted_by_openai(config)
    }
    try:
        unreachable = await servers.connect()
        return [
            f"mcp server {name!r}: UNREACHABLE ({unreachable[name]}); the bot starts without it"
            if name in unreachable
            else f"mcp server {name!r}: ok, {len(server.tools)} tool(s)"
            for name, server in servers.servers.items()
        ] + list(hosted.values())
    finally:
        await servers.close()
