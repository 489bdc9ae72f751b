"""Wiring: clients, store, engine and listeners; Socket Mode or HTTP; graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.assistant_choice import AssistantChooser
from bot.backend import check_assistant, describe, load_assistants_file, open_backend
from bot.config import OPENAI_DEFAULT_BASE_URL, Settings, ToolSettings
from bot.conversation import Conversations
from bot.definitions import AssistantDefinition
from bot.engine.base import Backend, EngineError, FileBackend
from bot.file_ingest import MB, FileIngest, FileLimits, clean_up
from bot.governance.access import Access, Rules, RulesFor, no_rules, rules_by_id
from bot.governance.audit import AuditLog
from bot.governance.budgets import BudgetCheck
from bot.governance.forget import Forgetting, erase_old_texts
from bot.governance.gate import TurnGate
from bot.governance.prices import Prices
from bot.governance.usage import UsageReports
from bot.health import BACKEND_REMEMBERED_SECONDS, Health, refuse_events_while_stopping, remembered
from bot.messages import ConversationKey
from bot.single_process import DatabaseLock
from bot.slack.approvals import Approvals
from bot.slack.file_source import SlackFileSource
from bot.slack.leftovers import SlackLeftovers
from bot.slack.listeners import (
    actions,
    ai_app,
    commands,
    events,
    forget,
    home,
    knowledge,
    shortcuts,
)
from bot.slack.observe import count_requests
from bot.slack.retries import retry_handlers
from bot.slack.surface import SlackSurface
from bot.slack.thread_tool import thread_reader
from bot.slack.usergroups import SlackUsergroups
from bot.startup import (
    START_SECONDS,
    STEP_SECONDS,
    Interrupted,
    StartupError,
    network_problem,
    reaching,
)
from bot.store import Store, StoreError, describe_url, postgresql_conninfo, sqlite_file
from bot.tools import ToolLoadError, ToolRegistry
from bot.tools.builtins import BUILTIN_TOOLS
from bot.tools.mcp import McpServers

if TYPE_CHECKING:
    from bot.jobs import JobTimings, JobTurnQueue

log = logging.getLogger(__name__)

CLEANUP_EVERY = 24 * 3600.0


class _TokenFromEnvironmentNotice(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the process environment whenever it is given no token, and
    then warns on every start that this token "will be unused", because the bot hands it a
    client instead: one built with that very token (config reads the environment too). The
    warning never says anything true here, so this filter drops exactly that message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


TOKEN_FROM_ENVIRONMENT_NOTICE = _TokenFromEnvironmentNotice()


def make_slack_client(settings: Settings) -> AsyncWebClient:
    """A Slack client with one connection pool; `close_slack_client` closes it.

    Without a session slack_sdk opens a new one per call (a DNS lookup in a thread, a TCP and a
    TLS handshake each time), and aiohttp's default cap of 100 connections would queue a burst.
    Every try gives up after SLACK_TIMEOUT_SECONDS (connecting included); a call Slack asks to
    retry, or whose connection was lost, is tried again up to SLACK_RETRIES times (retries.py).
    """
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=settings.slack_timeout),
    )
    client = AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        session=session,
        timeout=int(settings.slack_timeout),
    )
    client.retry_handlers = retry_handlers(settings.slack_retries)
    return client


async def close_slack_client(client: AsyncWebClient) -> None:
    if client.session is not None:
        await client.session.close()


async def slack_identity(client: AsyncWebClient, settings: Settings) -> dict[str, Any]:
    """Who the bot is in Slack (auth.test); a refused SLACK_BOT_TOKEN is a StartupError."""
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        raise StartupError(
            f"Slack refused SLACK_BOT_TOKEN ({exc.response.get('error')}) at "
            f"{settings.slack_api_url}: copy the Bot User OAuth Token (xoxb-…) from your app's "
            "OAuth & Permissions page, and install the app to the workspace."
        ) from exc
    return dict(auth.data) if isinstance(auth.data, dict) else {}


async def check_app_token(client: AsyncWebClient, settings: Settings) -> str:
    """The Socket Mode URL apps.connections.open hands out; a refused SLACK_APP_TOKEN is a
    StartupError (the Socket Mode client would otherwise retry it forever)."""
    try:
        opened = await client.apps_connections_open(app_token=settings.slack_app_token or "")
    except SlackApiError as exc:
        raise StartupError(
            f"Slack refused SLACK_APP_TOKEN ({exc.response.get('error')}) at "
            f"{settings.slack_api_url}apps.connections.open: create an app-level token with "
            "connections:write under Basic Information > App-Level Tokens (xapp-…), and turn "
            "Socket Mode on in the app's settings."
        ) from exc
    return str(opened["url"])


def make_tools(settings: ToolSettings, client: AsyncWebClient, bot_user_id: str) -> ToolRegistry:
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
    """The registered tools the assistant does not define (the model cannot call those); MCP
    servers' tools are offered with each run instead."""
    defined = {
        str(tool["function"]["name"]) for tool in assistant.tools if tool["type"] == "function"
    }
    return [name for name in registry.plain_names if name not in defined]


def log_missing_tools(assistant: AssistantDefinition, registry: ToolRegistry) -> None:
    missing = missing_tools(assistant, registry)
    if missing:
        log.info(
            "event=tools_not_on_assistant assistant=%r tools=%s hint=%s",
            assistant.name,
            ",".join(missing),
            "add their definitions to the assistant (python -m bot tools prints them)",
        )


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
    lock: DatabaseLock
    health: Health
    queue: JobTurnQueue | None = None  # PostgreSQL: turns are jobs any replica takes
    port: int | None = None
    health_port: int | None = None  # Socket Mode with HEALTH_PORT set
    _health_runner: web.AppRunner | None = None
    _runner: web.AppRunner | None = None
    _socket: AsyncSocketModeHandler | None = None
    _cleanup: asyncio.Task[None] | None = None
    _recovery: asyncio.Task[None] | None = None
    mcp_servers: McpServers | None = None

    async def stop(self) -> None:
        """Stop taking events, finish (bounded) what is in flight, then close everything.

        /readyz turns 503 first, and in HTTP mode so do events (Slack sends them again, and a
        load balancer to another replica) until the answers in progress are done."""
        self.health.stopping = True
        for task in (self._cleanup, self._recovery):
            if task is not None:
                await _cancel(task)
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
        await self.conversations.drain(self.settings.shutdown_grace)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._health_runner is not None:
            await self._health_runner.cleanup()
        await self.file_source.close()
        if self.mcp_servers is not None:
            await self.mcp_servers.close()
        await self.backend.close()
        await close_slack_client(self.slack.client)
        await self.store.close()
        self.lock.release()
        log.info("event=stopped")


async def start(
    settings: Settings, *, listen: bool = True, job_timings: JobTimings | None = None
) -> Bot:
    """Build and start the bot: checks the backend, opens the store, connects to Slack.

    Each network step is bounded (bot/startup.py), so start-up ends within START_SECONDS. If
    anything fails, or start-up is cancelled (a signal), what was opened so far is closed.
    `listen=False` (`python -m bot worker`, PostgreSQL only): answer the turns other replicas
    take, and take no events. `job_timings`: the job queue's, other than the defaults (tests).
    """
    deadline = asyncio.get_running_loop().time() + START_SECONDS
    openai_url = settings.openai_base_url or OPENAI_DEFAULT_BASE_URL
    conninfo = postgresql_conninfo(settings.database_url)
    if conninfo is None and not listen:
        raise StartupError(
            "`python -m bot worker` needs PostgreSQL (DATABASE_URL=postgresql://…): with "
            "SQLite one process does everything, `python -m bot`."
        )
    lock = DatabaseLock(sqlite_file(settings.database_url))
    async with contextlib.AsyncExitStack() as undo:
        lock.acquire()
        undo.callback(lock.release)
        try:
            store = await Store.open(settings.database_url)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        undo.push_async_callback(store.close)
        audit_log = AuditLog(store)
        queue = None
        if conninfo is not None:
            queue = await open_job_queue(conninfo, settings, _step(deadline), job_timings)
            undo.push_async_callback(queue.drain, 0)
        async with reaching("OpenAI", openai_url, "OPENAI_BASE_URL", _step(deadline)):
            backend, choice = await open_backend(settings.backend, store)
            undo.push_async_callback(backend.close)
            definitions = await load_assistants_file(backend.catalog, settings, audit_log)
            default = await check_assistant(backend, settings.backend, choice)
            engine = backend.engine
            rules_for = await declared_rules(backend, definitions)
        log.info("event=assistant_found assistant=%r engine=%s", describe(default), engine.name)
        client = make_slack_client(settings)
        undo.push_async_callback(close_slack_client, client)
        socket_mode = listen and settings.socket_mode
        async with reaching("Slack", settings.slack_api_url, "SLACK_API_URL", _step(deadline)):
            auth = await slack_identity(client, settings)
            socket_url = await check_app_token(client, settings) if socket_mode else ""
        identity = events.BotIdentity(user_id=auth["user_id"], bot_id=auth.get("bot_id") or "")
        tools = make_tools(settings.tools, client, identity.user_id)
        mcp_servers = McpServers(tools)
        mcp_servers.add([*definitions, default])
        undo.push_async_callback(mcp_servers.close)
        await mcp_servers.connect()  # an unreachable server is logged; its tools answer an error
        engine.offered_tools = mcp_servers.function_tools
        opened = undo.pop_all()  # from here on, `opened` closes them if start-up fails
    log_missing_tools(default, tools)
    logging.getLogger(f"slack_bolt.{AsyncApp.__name__}").addFilter(TOKEN_FROM_ENVIRONMENT_NOTICE)
    slack = AsyncApp(
        client=client,
        signing_secret=settings.slack_signing_secret or "",
        request_verification_enabled=not settings.socket_mode,
    )
    chooser = AssistantChooser(
        store, backend.catalog, engine.name, default.id, settings.assistant_admins
    )
    file_source = SlackFileSource(
        settings.slack_bot_token, settings.slack_api_url, retries=settings.slack_retries
    )
    ingest = FileIngest(
        store,
        backend.files,
        file_source,
        file_limits(settings),
        engine.vector_stores_per_conversation,
    )
    prices = settings.prices or Prices()
    budgets = (
        BudgetCheck(store, prices, settings.budgets, settings.assistant_admins)
        if settings.budgets is not None
        else None
    )

    async def assistant_of(key: ConversationKey) -> str:
        return (await chooser.for_thread(key)).assistant_id

    gate = TurnGate(
        store, budgets, assistant_of, settings.user_turns_per_minute, audit_log=audit_log
    )
    reports = UsageReports(store, prices, settings.assistant_admins)
    access = Access(chooser, settings.allowed_channels, rules_for, SlackUsergroups(client))
    forgetting = Forgetting(store, engine, backend.files, audit_log, settings.assistant_admins)
    approvals = Approvals(store, settings.assistant_admins, settings.approval_timeout)
    conversations = Conversations(
        store,
        engine,
        SlackSurface(client, approvals=approvals),
        chooser,
        files=ingest,
        leftovers=SlackLeftovers(client, identity.user_id, identity.bot_id),
        tools=tools,
        turn_timeout=settings.turn_timeout,
        max_turns_in_flight=settings.max_turns_in_flight,
        gate=gate,
        queue=queue,
    )
    viewing = ai_app.ViewedChannels()
    events.register(
        slack,
        conversations,
        identity,
        settings.answer_bots,
        viewing,
        max_files=settings.max_files_per_message,
        access=access,
    )
    commands.register(slack, chooser, ingest, access, audit_log, reports, budgets)
    shortcuts.register(slack, chooser, conversations, access)
    forget.register(slack, forgetting)
    home.register(slack, chooser, reports)
    knowledge.register(slack, ingest, audit_log)
    actions.register(slack, conversations, approvals)
    ai_app.register(slack, suggested_prompts(default, definitions), settings.slack_view, viewing)
    slack.use(count_requests)
    metrics.watch_turns(
        lambda: conversations.turn_counts()[0], lambda: conversations.turn_counts()[1]
    )
    health = Health()
    health.add_check("database", lambda: _database_answers(store))
    health.add_check(
        "backend", remembered(lambda: _backend_answers(backend), BACKEND_REMEMBERED_SECONDS)
    )
    if queue is not None:
        health.add_check("job_queue", queue.reachable)
    bot = Bot(settings, store, backend, slack, conversations, file_source, lock, health, queue)
    bot.mcp_servers = mcp_servers
    bot._cleanup = asyncio.create_task(_clean_up_daily(store, backend.files, settings))

    async with opened:  # from here on only reading the store and connecting await
        opened.push_async_callback(file_source.close)
        opened.push_async_callback(_cancel, bot._cleanup)
        if queue is None:
            # What a previous process left open is taken back in the background: the store is
            # read now, so that a thread's new messages wait for its old ones; Slack is not
            # waited on. (On PostgreSQL the job queue holds what is open: see bot/jobs.py.)
            bot._recovery = await conversations.begin_recovery()
            opened.push_async_callback(_cancel, bot._recovery)
        if not listen:
            if settings.health_port is not None:
                bot.health_port = await _serve_health(bot, settings.health_port, opened)
            log.info("event=started mode=worker health_port=%s", bot.health_port)
        elif socket_mode:
            bot._socket = AsyncSocketModeHandler(
                slack, settings.slack_app_token, logger=SOCKET_MODE_LOG
            )
            opened.push_async_callback(bot._socket.close_async)
            check = "that this network allows WebSocket (wss://) connections to Slack"
            async with reaching("Slack Socket Mode", socket_url, check, _step(deadline)):
                await connect_socket_mode(bot._socket)
            health.add_check("slack_connection", bot._socket.client.is_connected)
            if settings.health_port is not None:
                bot.health_port = await _serve_health(bot, settings.health_port, opened)
            log.info("event=started mode=socket health_port=%s", bot.health_port)
        else:
            web_app = slack.web_app(path="/slack/events")
            web_app.middlewares.append(refuse_events_while_stopping(health, "/slack/events"))
            health.add_routes(web_app)
            bot._runner = web.AppRunner(web_app, access_log=None)
            opened.push_async_callback(bot._runner.cleanup)
            bot.port = await _serve(bot._runner, settings.port)
            log.info("event=started mode=http port=%s path=/slack/events", bot.port)
        opened.pop_all()
    return bot


def replica_timings(dead_after: float) -> JobTimings:
    """A replica says it is alive four times within `dead_after` (at most every 5 s), so that
    one slow beat on a busy machine is not taken for death. A turn whose placeholder is being
    shown is held as long (renewed meanwhile): if that replica dies, another shows it and
    answers within `dead_after`, as for the turns it was running."""
    from bot.jobs import JobTimings

    return JobTimings(heartbeat=min(5.0, dead_after / 4), stalled_after=dead_after, hold=dead_after)


async def open_job_queue(
    conninfo: str, settings: Settings, seconds: float, timings: JobTimings | None = None
) -> JobTurnQueue:
    """The turns' job queue on PostgreSQL, connected, its tables created if need be; a
    StartupError in one line when the database cannot be reached in `seconds`."""
    from bot.jobs import JobTurnQueue  # procrastinate: loaded only where used

    queue = JobTurnQueue(
        conninfo,
        settings.max_turns_in_flight,
        name=socket.gethostname(),
        timings=timings or replica_timings(settings.replica_dead_after),
    )
    try:
        async with asyncio.timeout(seconds):
            await queue.open()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await queue.app.close_async()
        where = describe_url(settings.database_url)
        if isinstance(exc, TimeoutError):
            raise StartupError(
                f"The job queue's database {where} did not answer within {seconds:.0f} s."
            ) from None
        raise StartupError(
            f"The job queue's database {where} cannot be used: {_why(exc)}"
        ) from None
    return queue


def _why(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return " ".join(str(cause).split()) or type(cause).__name__


async def _serve_health(bot: Bot, port: int, opened: contextlib.AsyncExitStack) -> int:
    health_app = web.Application()
    bot.health.add_routes(health_app)
    bot._health_runner = web.AppRunner(health_app, access_log=None)
    opened.push_async_callback(bot._health_runner.cleanup)
    return await _serve(bot._health_runner, port)


async def _serve(runner: web.AppRunner, port: int) -> int:
    """Serve on `port` (0: any free one); the port it listens on."""
    await runner.setup()
    await web.TCPSite(runner, port=port).start()
    return int(next(a[1] for a in runner.addresses if isinstance(a, tuple) and len(a) == 2))


async def _database_answers(store: Store) -> bool:
    await store.has_conversation(ConversationKey("", "", ""))  # any cheap read
    return True


async def _backend_answers(backend: Backend) -> bool:
    await backend.answers()
    return True


def _step(deadline: float) -> float:
    """The time a start-up step may take: STEP_SECONDS, within what is left of start-up."""
    left = deadline - asyncio.get_running_loop().time()
    return max(1.0, min(STEP_SECONDS, left))


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


SOCKET_MODE_LOG = logging.getLogger("slack_sdk.socket_mode")


class _ConnectFailure(logging.Filter):
    """The Socket Mode client's first failed connect, caught while start-up waits for it.

    The client retries a failed connect forever, logging each failure with a traceback. During
    start-up the first failure ends start-up instead, told in one line; later reconnects (after
    start-up) are the client's own business and are logged as it logs them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None or not str(record.msg).startswith("Failed to connect"):
            return True
        if not self.failure.done() and record.exc_info[1] is not None:
            self.failure.set_result(record.exc_info[1])
        return False


async def connect_socket_mode(handler: AsyncSocketModeHandler) -> None:
    """Connect, or raise the first failure (StartupError when it is not the network's)."""
    watch = _ConnectFailure()
    SOCKET_MODE_LOG.addFilter(watch)
    connecting = asyncio.ensure_future(handler.connect_async())  # type: ignore[no-untyped-call]
    waiting: set[asyncio.Future[Any]] = {connecting, watch.failure}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        SOCKET_MODE_LOG.removeFilter(watch)
        if not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
    if connecting.done() and not connecting.cancelled() and connecting.exception() is None:
        return
    failure = watch.failure.result() if watch.failure.done() else connecting.exception()
    if failure is None or network_problem(failure, handler.client.wss_uri or "") is not None:
        raise failure or StartupError("Slack Socket Mode: the connection failed.")
    raise StartupError(
        f"Slack Socket Mode could not connect ({type(failure).__name__}: {failure}): check that "
        "Socket Mode is on in the app's settings."
    ) from failure


def file_limits(settings: Settings) -> FileLimits:
    return FileLimits(
        max_bytes=int(settings.max_file_mb * MB),
        index_timeout=settings.file_index_timeout,
        retention_days=settings.file_retention_days,
    )


async def declared_rules(
    backend: Backend, definitions: list[AssistantDefinition]
) -> RulesFor | None:
    """Who may use which assistant, where the catalogue does not keep it (the Assistants API):
    ASSISTANTS_FILE's rules, by the ids its assistants have on the backend. None: the catalogue
    keeps them with each assistant."""
    if backend.catalog.keeps_bot_settings:
        return None
    declared = {d.name: Rules.of(d) for d in definitions if Rules.of(d) != Rules(d.name)}
    if not declared:
        return no_rules
    assistants = await backend.catalog.list_assistants()
    return rules_by_id({a.id: declared[a.name] for a in assistants if a.name in declared})


async def _clean_up_daily(store: Store, files: FileBackend, settings: Settings) -> None:
    """Delete what outlived FILE_RETENTION_DAYS (and texts TEXT_RETENTION_DAYS): once at start,
    then every day."""
    while True:
        try:
            if settings.text_retention_days is not None:
                await erase_old_texts(store, settings.text_retention_days)
            await clean_up(store, files, settings.file_retention_days)
        except EngineError as exc:
            log.warning("event=cleanup_failed error=%s", exc.code)
        except Exception:  # tomorrow's run may well succeed: never end the daily task
            log.exception("event=cleanup_failed")
        await asyncio.sleep(CLEANUP_EVERY)


async def run_until_stopped(settings: Settings, *, listen: bool = True) -> None:
    """`python -m bot`: run until SIGTERM or SIGINT, then shut down gracefully.

    The signals are heard from the first moment: one that arrives during start-up cancels it
    (closing what was opened) and raises Interrupted.
    """
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[str] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _resolve, stopped, sig.name)
    starting = asyncio.create_task(start(settings, listen=listen))
    waiting: set[asyncio.Future[Any]] = {starting, stopped}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        raise Interrupted(stopped.result())
    bot = starting.result()
    # What start-up loaded (the SDKs, their pydantic schemas) lives as long as the process; frozen,
    # it is no longer walked by full collections, which stalled the event loop (and acks) ~50-90 ms.
    gc.freeze()
    signal_name = await stopped
    log.info("event=stopping signal=%s grace_seconds=%s", signal_name, settings.shutdown_grace)
    await bot.stop()


def _resolve(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)
