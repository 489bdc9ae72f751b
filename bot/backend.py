"""The backend side of start-up: the OpenAI client, which engine, the default assistant.

Nothing here knows Slack: `python -m bot assistants …` and `cleanup` use this module alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx2
from openai import AsyncOpenAI, DefaultAioHttpClient

from bot.config import OPENAI_DEFAULT_BASE_URL, BackendSettings, Settings
from bot.definitions import AssistantDefinition, DefinitionError, StoredAssistants, load_definitions
from bot.engine.assistants_api import AssistantsApiCatalog, AssistantsEngine, serves_assistants_api
from bot.engine.base import AssistantCatalog, Backend, EngineError
from bot.engine.catalog import sync_assistants
from bot.engine.openai_files import OpenAIFiles
from bot.engine.responses import ResponsesEngine
from bot.governance.audit import STARTUP, AuditLog, record_sync
from bot.startup import StartupError
from bot.store import Store

log = logging.getLogger(__name__)

RETIREMENT_NOTE = (
    "OpenAI retired its Assistants API on 2026-08-26, so api.openai.com no longer serves "
    "assistants, threads or runs. Set BOT_ENGINE=responses to use the Responses and "
    "Conversations APIs, or point OPENAI_BASE_URL at a server that still speaks the "
    "Assistants API."
)

# Connections kept open to each API. A burst of answers streams that many runs at once; fewer
# idle connections would be closed after it and opened (TLS handshake) again at the next one.
KEEPALIVE_CONNECTIONS = 500
CONNECT_SECONDS = 10.0


def make_openai_client(settings: BackendSettings) -> AsyncOpenAI:
    """OPENAI_TIMEOUT_SECONDS bounds every wait for the server's next bytes, a stream's included.

    It is a read timeout, not a total one: a long answer streams for as long as it takes, and a
    turn as a whole is bounded by TURN_TIMEOUT_SECONDS. OpenAI sends a keep-alive event every
    30 s on a stream whose model is still thinking, so the default (120 s) never cuts one short.
    """
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=KEEPALIVE_CONNECTIONS)
    return AsyncOpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        timeout=httpx2.Timeout(
            settings.openai_timeout, connect=min(CONNECT_SECONDS, settings.openai_timeout)
        ),
        http_client=DefaultAioHttpClient(limits=limits),
    )


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # "assistants" or "responses"
    reason: str  # a key of REASONS

    @property
    def why(self) -> str:
        return REASONS[self.reason]


REASONS = {
    "BOT_ENGINE": "set by BOT_ENGINE",
    "assistant_id_not_asst": "ASSISTANT_ID is not an Assistants API id (asst_…)",
    "assistants_api_served": "ASSISTANT_ID is an asst_… id and the server serves the Assistants API",
    "assistants_api_not_served": "the server does not serve the Assistants API",
}


async def choose_engine(settings: BackendSettings, client: AsyncOpenAI) -> EngineChoice:
    """BOT_ENGINE if set; else the Assistants engine for an asst_… id on a server that serves
    that API, the Responses engine otherwise. Logs which, and why."""
    if settings.engine:
        choice = EngineChoice(settings.engine, "BOT_ENGINE")
    elif not _assistants_api_id(settings.assistant_id):
        choice = EngineChoice("responses", "assistant_id_not_asst")
    elif await serves_assistants_api(client):
        choice = EngineChoice("assistants", "assistants_api_served")
    else:
        choice = EngineChoice("responses", "assistants_api_not_served")
    log.info("event=engine_chosen engine=%s reason=%s", choice.engine, choice.reason)
    return choice


def _assistants_api_id(assistant_id: str | None) -> bool:
    # The Responses engine names the bot's own definitions asst_bot_…: those are not the API's.
    given = assistant_id or ""
    return given.startswith("asst_") and not given.startswith("asst_bot_")


def make_backend(engine: str, client: AsyncOpenAI, store: Store) -> Backend:
    """The engine, its assistant catalogue and the file backend, sharing one API client."""
    files = OpenAIFiles(client)

    async def answers() -> None:
        # The cheapest request servers of either API serve; not retried: readiness asks again.
        await client.with_options(max_retries=0).models.list()

    if engine == "responses":
        catalog = StoredAssistants(store)  # the bot's own definitions
        return Backend(ResponsesEngine(client, catalog), catalog, files, client.close, answers)
    catalog_api = AssistantsApiCatalog(client)
    return Backend(AssistantsEngine(client), catalog_api, files, client.close, answers)


async def open_backend(settings: BackendSettings, store: Store) -> tuple[Backend, EngineChoice]:
    """The client, the engine choice and the backend; the client is closed if choosing fails."""
    client = make_openai_client(settings)
    try:
        choice = await choose_engine(settings, client)
    except EngineError as exc:
        await client.close()
        raise StartupError(
            f"Could not tell whether {_where(settings)} serves the Assistants API: {exc.message}"
        ) from exc
    except BaseException:
        await client.close()
        raise
    return make_backend(choice.engine, client, store), choice


def _where(settings: BackendSettings | Settings) -> str:
    return settings.openai_base_url or OPENAI_DEFAULT_BASE_URL


async def load_assistants_file(
    catalog: AssistantCatalog, settings: Settings, audit_log: AuditLog | None = None
) -> list[AssistantDefinition]:
    if settings.assistants_file is None:
        return []
    try:
        definitions = load_definitions(settings.assistants_file)
    except DefinitionError as exc:
        raise StartupError(f"ASSISTANTS_FILE: {exc}") from exc
    try:
        result = await sync_assistants(catalog, definitions)
    except EngineError as exc:
        raise StartupError(
            f"ASSISTANTS_FILE could not be applied at {_where(settings)}: {exc.message}"
        ) from exc
    if audit_log is not None:
        await record_sync(audit_log, result, STARTUP)
    log.info(
        "event=assistants_loaded created=%d updated=%d unchanged=%d",
        len(result.created),
        len(result.updated),
        len(result.unchanged),
    )
    return definitions


async def check_assistant(
    backend: Backend, settings: BackendSettings, choice: EngineChoice | None = None
) -> AssistantDefinition:
    """The default assistant, or StartupError saying what is wrong."""
    assistant_id = settings.assistant_id or ""
    where = _where(settings)
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
        elif (
            backend.engine.name == "responses"
            and choice is not None
            and choice.reason != "BOT_ENGINE"
        ):
            message += (
                f" The Responses engine was chosen ({choice.why}); its assistants are the "
                "bot's own definitions: set ASSISTANT_ID to a name from ASSISTANTS_FILE."
            )
        raise StartupError(message)
    try:
        await backend.engine.verify(info)
    except EngineError as exc:
        raise StartupError(f"Assistant {info.name!r} cannot run at {where}: {exc.message}") from exc
    return info


def describe(assistant: AssistantDefinition) -> str:
    return f"{assistant.name} ({assistant.id}, model {assistant.model})"
