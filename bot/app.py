"""Wiring: clients, store, engine and listeners; Socket Mode or HTTP; graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from dataclasses import dataclass

import aiohttp
import httpx2
from aiohttp import web
from openai import AsyncOpenAI, DefaultAioHttpClient
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant_choice import AssistantChooser
from bot.assistants import (
    AssistantDefinition,
    DefinitionError,
    StoredAssistants,
    load_definitions,
)
from bot.config import OPENAI_DEFAULT_BASE_URL, BackendSettings, Settings
from bot.conversation import Conversations
from bot.engine.assistants import AssistantsApiCatalog, AssistantsEngine
from bot.engine.base import AssistantCatalog, Backend, EngineError, FileBackend
from bot.engine.catalog import sync_assistants
from bot.engine.files import OpenAIFiles
from bot.engine.responses import ResponsesEngine
from bot.files import MB, FileIngest, FileLimits, clean_up
from bot.slack.files import SlackFileSource
from bot.slack.listeners import actions, assistant, commands, events, home, knowledge, shortcuts
from bot.slack.surface import SlackSurface
from bot.slack.thread_tool import thread_reader
from bot.store import Store, StoreError
from bot.tools import ToolLoadError, ToolRegistry
from bot.tools.builtins import BUILTIN_TOOLS

log = logging.getLogger(__name__)

CLEANUP_EVERY = 24 * 3600.0

RETIREMENT_NOTE = (
    "OpenAI retired its Assistants API on 2026-08-26, so api.openai.com no longer serves "
    "assistants, threads or runs. Set BOT_ENGINE=responses to use the Responses and "
    "Conversations APIs, or point OPENAI_BASE_URL at a server that still speaks the "
    "Assistants API."
)


class StartupError(Exception):
    """The bot cannot start; the message says why and what to do."""


# Connections kept open to each API. A burst of answers streams that many runs at once; fewer
# idle connections would be closed after it and opened (TLS handshake) again at the next one.
KEEPALIVE_CONNECTIONS = 500
SLACK_TIMEOUT_SECONDS = 30.0


def make_openai_client(settings: Settings | BackendSettings) -> AsyncOpenAI:
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=KEEPALIVE_CONNECTIONS)
    return AsyncOpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        http_client=DefaultAioHttpClient(limits=limits),
    )


def make_backend(settings: Settings | BackendSettings, store: Store) -> Backend:
    """The engine, its assistant catalogue and the file backend, sharing one API client."""
    client = make_openai_client(settings)
    files = OpenAIFiles(client)
    if settings.engine == "responses":
        catalog = StoredAssistants(store)  # the bot's own definitions
        return Backend(ResponsesEngine(client, catalog), catalog, files, client.close)
    return Backend(AssistantsEngine(client), AssistantsApiCatalog(client), files, client.close)


def make_slack_client(settings: Settings) -> AsyncWebClient:
    """A Slack client with one connection pool; `close_slack_client` closes it.

    Without a session slack_sdk opens a new one per call (a DNS lookup in a thread, a TCP and a
    TLS handshake each time), and aiohttp's default cap of 100 connections would queue a burst.
    """
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT_SECONDS),
    )
    client = AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        session=session,
        timeout=int(SLACK_TIMEOUT_SECONDS),
    )
    # A rate-limited call (429) waits as long as Slack asks and is tried again.
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    return client


async def close_slack_client(client: AsyncWebClient) -> None:
    if client.session is not None:
        await client.session.close()


async def load_assistants_file(
    catalog: AssistantCatalog, settings: Settings
) -> list[AssistantDefinition]:
    if settings.assistants_file is None:
        return []
    try:
        definitions = load_definitions(settings.assistants_file)
    except DefinitionError as exc:
        raise StartupError(f"ASSISTANTS_FILE: {exc}") from exc
    result = await sync_assistants(catalog, definitions)
    log.info(
        "event=assistants_loaded created=%d updated=%d unchanged=%d",
        len(result.created),
        len(result.updated),
        len(result.unchanged),
    )
    return definitions


async def check_assistant(backend: Backend, settings: Settings) -> AssistantDefinition:
    """The default assistant, or StartupError saying what is wrong."""
    assistant_id = settings.assistant_id or ""
    where = settings.openai_base_url or OPENAI_DEFAULT_BASE_URL
    try:
        info = await backend.catalog.get_assistant(assistant_id)
    except EngineError as exc:
        if exc.code == "api_not_served":
            raise StartupError(
                f"{where} does not serve the Assistants API. {RETIREMENT_NOTE}"
            ) from exc
        raise StartupError(f"Could not look up ASSISTANT_ID at {where}: {exc.message}") from exc
    if info is None:
        message = f"ASSISTANT_ID {assistant_id} was not found at {where}."
        if settings.uses_openai_itself and backend.engine.name == "assistants":
            message += " " + RETIREMENT_NOTE
        raise StartupError(message)
    try:
        await backend.engine.verify(info)
    except EngineError as exc:
        raise StartupError(f"Assistant {info.name!r} cannot run at {where}: {exc.message}") from exc
    return info


def make_tools(settings: Settings, client: AsyncWebClient, bot_user_id: str) -> ToolRegistry:
    """The built-in tools, Slack's, and the operator's (TOOLS_MODULE)."""
    registry = ToolRegistry(timeout=settings.tool_timeout)
    registry.add(*BUILTIN_TOOLS, thread_reader(client, bot_user_id))
    if settings.tools_module:
        try:
            registry.add_module(settings.tools_module)
        except ToolLoadError as exc:
            raise StartupError(str(exc)) from exc
    return registry


def missing_tools(assistant: AssistantDefinition, registry: ToolRegistry) -> list[str]:
    """The registered tools the assistant does not define (the model cannot call those)."""
    defined = {
        str(tool["function"]["name"]) for tool in assistant.tools if tool["type"] == "function"
    }
    return [name for name in registry.names if name not in defined]


def log_missing_tools(assistant: AssistantDefinition, registry: ToolRegistry) -> None:
    missing = missing_tools(assistant, registry)
    if missing:
        log.info(
            "event=tools_not_on_assistant assistant=%r tools=%s hint=%s",
            assistant.name,
            ",".join(missing),
            "add their definitions to the assistant (python -m bot tools prints them)",
        )


def describe(assistant: AssistantDefinition) -> str:
    return f"{assistant.name} ({assistant.id}, model {assistant.model})"


def suggested_prompts(
    default: AssistantDefinition, definitions: list[AssistantDefinition]
) -> tuple[str, ...]:
    """The default assistant's prompts (the Assistants API keeps none: look in ASSISTANTS_FILE)."""
    if default.suggested_prompts:
        return default.suggested_prompts
    declared = next((d for d in definitions if d.name == default.name), None)
    return declared.suggested_prompts if declared else ()


@dataclass
class Bot:
    """A running bot: everything `start` built, so tests and `stop` can reach it."""

    settings: Settings
    store: Store
    backend: Backend
    slack: AsyncApp
    conversations: Conversations
    file_source: SlackFileSource
    port: int | None = None
    _runner: web.AppRunner | None = None
    _socket: AsyncSocketModeHandler | None = None
    _cleanup: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        """Stop taking events, finish (bounded) what is in flight, then close everything."""
        if self._cleanup is not None:
            self._cleanup.cancel()
            await asyncio.gather(self._cleanup, return_exceptions=True)
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
        if self._runner is not None:
            await self._runner.cleanup()
        await self.conversations.drain(self.settings.shutdown_grace)
        await self.file_source.close()
        await self.backend.close()
        await close_slack_client(self.slack.client)
        await self.store.close()
        log.info("event=stopped")


async def start(settings: Settings, backend: Backend | None = None) -> Bot:
    """Build and start the bot: checks the backend, opens the store, connects to Slack."""
    async with contextlib.AsyncExitStack() as undo:  # closes what was opened if start-up fails
        try:
            store = await Store.open(settings.database_url)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        undo.push_async_callback(store.close)
        backend = backend or make_backend(settings, store)
        undo.push_async_callback(backend.close)
        definitions = await load_assistants_file(backend.catalog, settings)
        default = await check_assistant(backend, settings)
        engine = backend.engine
        log.info("event=assistant_found assistant=%r engine=%s", describe(default), engine.name)
        client = make_slack_client(settings)
        undo.push_async_callback(close_slack_client, client)
        try:
            auth = await client.auth_test()
        except SlackApiError as exc:
            raise StartupError(
                f"Slack refused SLACK_BOT_TOKEN ({exc.response.get('error')}) "
                f"at {settings.slack_api_url}."
            ) from exc
        identity = events.BotIdentity(user_id=auth["user_id"], bot_id=auth.get("bot_id") or "")
        tools = make_tools(settings, client, identity.user_id)
        undo.pop_all()
    log_missing_tools(default, tools)
    slack = AsyncApp(
        client=client,
        signing_secret=settings.slack_signing_secret or "",
        request_verification_enabled=not settings.socket_mode,
    )
    chooser = AssistantChooser(
        store, backend.catalog, engine.name, default.id, settings.assistant_admins
    )
    file_source = SlackFileSource(settings.slack_bot_token, settings.slack_api_url)
    ingest = FileIngest(
        store,
        backend.files,
        file_source,
        file_limits(settings),
        engine.vector_stores_per_conversation,
    )
    conversations = Conversations(
        store,
        engine,
        SlackSurface(client),
        chooser,
        files=ingest,
        tools=tools,
        turn_timeout=settings.turn_timeout,
        max_turns_in_flight=settings.max_turns_in_flight,
    )
    viewing = assistant.ViewedChannels()
    events.register(slack, conversations, identity, settings.answer_bots, viewing)
    commands.register(slack, chooser, ingest)
    shortcuts.register(slack, chooser, conversations)
    home.register(slack, chooser)
    knowledge.register(slack, ingest)
    actions.register(slack, conversations, store)
    assistant.register(slack, suggested_prompts(default, definitions), settings.slack_view, viewing)
    bot = Bot(settings, store, backend, slack, conversations, file_source)
    bot._cleanup = asyncio.create_task(_clean_up_daily(store, backend.files, settings))
    # Before events arrive: a message taken meanwhile would be read back as left over, and
    # answered twice.
    await conversations.resume_open_turns()

    if settings.socket_mode:
        bot._socket = AsyncSocketModeHandler(slack, settings.slack_app_token)
        await bot._socket.connect_async()  # type: ignore[no-untyped-call]
        log.info("event=started mode=socket")
    else:
        bot._runner = web.AppRunner(slack.web_app(path="/slack/events"), access_log=None)
        await bot._runner.setup()
        site = web.TCPSite(bot._runner, port=settings.port)
        await site.start()
        bot.port = next(a[1] for a in bot._runner.addresses if isinstance(a, tuple) and len(a) == 2)
        log.info("event=started mode=http port=%s path=/slack/events", bot.port)
    return bot


def file_limits(settings: Settings) -> FileLimits:
    return FileLimits(
        max_bytes=int(settings.max_file_mb * MB),
        index_timeout=settings.file_index_timeout,
        retention_days=settings.file_retention_days,
    )


async def _clean_up_daily(store: Store, files: FileBackend, settings: Settings) -> None:
    """Delete what outlived FILE_RETENTION_DAYS: once at start, then every day."""
    while True:
        try:
            await clean_up(store, files, settings.file_retention_days)
        except EngineError as exc:
            log.warning("event=cleanup_failed error=%s", exc.code)
        except Exception:  # tomorrow's run may well succeed: never end the daily task
            log.exception("event=cleanup_failed")
        await asyncio.sleep(CLEANUP_EVERY)


async def run_until_stopped(settings: Settings) -> None:
    """`python -m bot`: run until SIGTERM or SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bot = await start(settings)
    # What start-up loaded (the SDKs, their pydantic schemas) lives as long as the process; frozen,
    # it is no longer walked by full collections, which stalled the event loop (and acks) ~50-90 ms.
    gc.freeze()
    await stop.wait()
    log.info("event=stopping grace_seconds=%s", settings.shutdown_grace)
    await bot.stop()
