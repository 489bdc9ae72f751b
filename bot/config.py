"""Settings: the one place that reads the environment (and `.env`, through python-dotenv)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dotenv import dotenv_values

if TYPE_CHECKING:
    from bot.governance.budgets import Budgets
    from bot.governance.prices import Prices

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
SLACK_DEFAULT_API_URL = "https://slack.com/api/"
ENGINES = ("assistants", "responses")
SLACK_VIEWS = ("agent_view", "assistant_view")  # the app manifest's AI feature, new and legacy
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
# What .env.example ships in place of each secret: left in `.env`, it is refused, saying what to
# put there instead.
PLACEHOLDERS = {
    "SLACK_BOT_TOKEN": "xoxb-your-bot-token",
    "SLACK_APP_TOKEN": "xapp-your-app-token",
    "OPENAI_API_KEY": "sk-your-key",
}
BOT_TOKEN_WHERE = "the Bot User OAuth Token on your app's OAuth & Permissions page"
APP_TOKEN_WHERE = (
    "an app-level token with connections:write, from Basic Information > App-Level Tokens "
    "(or leave it empty to run in HTTP mode)"
)
API_KEY_WHERE = "an API key from https://platform.openai.com/api-keys"


class ConfigError(Exception):
    """Start-up cannot go on; each problem is one line a person can act on."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class BackendSettings:
    """What the backend needs (`assistants` and `cleanup` need nothing else): no Slack here."""

    openai_api_key: str
    openai_base_url: str | None
    engine: str | None  # None: chosen at start-up (see bot/backend.py)
    assistant_id: str | None
    database_url: str  # sqlite:///… or postgresql://…
    log_level: str
    openai_timeout: float = 120.0
    file_retention_days: int = 30
    log_format: str = "text"
    text_retention_days: int | None = None  # None: message texts are kept

    @property
    def uses_openai_itself(self) -> bool:
        base = (self.openai_base_url or OPENAI_DEFAULT_BASE_URL).rstrip("/")
        return base.startswith("https://api.openai.com")


@dataclass(frozen=True)
class UsageSettings:
    """What `python -m bot usage` needs: the database and the prices."""

    database_url: str
    prices: Prices | None = None


@dataclass(frozen=True)
class ToolSettings:
    """What the function tools need: `python -m bot tools` needs nothing else."""

    tools_module: str | None = None
    tool_timeout: float = 30.0


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str
    slack_app_token: str | None
    slack_signing_secret: str | None
    slack_api_url: str
    openai_api_key: str
    openai_base_url: str | None
    assistant_id: str | None
    assistants_file: Path | None
    engine: str | None  # None: chosen at start-up (see bot/backend.py)
    database_url: str  # sqlite:///… or postgresql://…
    port: int
    log_level: str
    answer_bots: bool
    turn_timeout: float
    max_turns_in_flight: int
    shutdown_grace: float
    tool_timeout: float
    tools_module: str | None
    assistant_admins: frozenset[str] = frozenset()
    approval_timeout: float = 600.0  # a tool call no one approves within this is denied
    max_file_mb: float = 50.0
    max_files_per_message: int = 10
    file_retention_days: int = 30
    file_index_timeout: float = 120.0
    slack_view: str = "agent_view"
    replica_dead_after: float = 20.0  # PostgreSQL: a replica silent this long has died
    openai_timeout: float = 120.0
    slack_timeout: float = 30.0
    slack_retries: int = 4
    health_port: int | None = None  # Socket Mode only: where /healthz, /readyz, /metrics listen
    log_format: str = "text"
    prices: Prices | None = None  # None: the built-in prices
    budgets: Budgets | None = None  # None: no budgets
    user_turns_per_minute: int = 0  # 0: no rate limit
    allowed_channels: frozenset[str] = frozenset()  # empty: any channel
    text_retention_days: int | None = None

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def uses_openai_itself(self) -> bool:
        return self.backend.uses_openai_itself

    @property
    def backend(self) -> BackendSettings:
        return BackendSettings(
            openai_api_key=self.openai_api_key,
            openai_base_url=self.openai_base_url,
            engine=self.engine,
            assistant_id=self.assistant_id,
            database_url=self.database_url,
            log_level=self.log_level,
            openai_timeout=self.openai_timeout,
            file_retention_days=self.file_retention_days,
            log_format=self.log_format,
            text_retention_days=self.text_retention_days,
        )

    @property
    def tools(self) -> ToolSettings:
        return ToolSettings(self.tools_module, self.tool_timeout)


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: str | None = ".env",
    *,
    listening: bool = True,
) -> Settings:
    """Read settings from `environ` (default: the process environment) over the `.env` file.

    Raises ConfigError listing every problem at once, so an operator fixes them in one go.
    `listening=False`: for `python -m bot worker`, which takes no events (no signing secret).
    """
    values = _values(environ, env_file)
    reader = _Reader(values)

    bot_token = reader.required("SLACK_BOT_TOKEN", prefix="xoxb-", where=BOT_TOKEN_WHERE)
    app_token = reader.optional("SLACK_APP_TOKEN", prefix="xapp-", where=APP_TOKEN_WHERE)
    signing_secret = reader.optional("SLACK_SIGNING_SECRET")
    if listening and app_token is None and not signing_secret:
        reader.problems.append(
            "SLACK_SIGNING_SECRET is required in HTTP mode (no SLACK_APP_TOKEN set): copy the "
            "Signing Secret from your app's Basic Information page, or set SLACK_APP_TOKEN to "
            "use Socket Mode."
        )
    slack_api_url = reader.url("SLACK_API_URL", SLACK_DEFAULT_API_URL)
    if not slack_api_url.endswith("/"):
        slack_api_url += "/"
    backend = _read_backend(reader, values, log_level="INFO")
    tools = _read_tools(reader)
    assistants_file = reader.optional("ASSISTANTS_FILE")
    if assistants_file and not Path(assistants_file).is_file():
        reader.problems.append(
            f"ASSISTANTS_FILE {assistants_file!r} is not a file: start from the example, "
            f"`cp assistants.example.yaml {assistants_file}`, or leave ASSISTANTS_FILE empty."
        )
    if backend.assistant_id is None:
        reader.problems.append(
            "ASSISTANT_ID is required: the assistant that answers by default, a name (or id) "
            "defined in ASSISTANTS_FILE or with `python -m bot assistants create`, or an "
            "assistant id (asst_…) on a server that serves the Assistants API."
        )
    elif backend.engine == "assistants" and not backend.assistant_id.startswith("asst_"):
        reader.problems.append(
            "ASSISTANT_ID must be an assistant id like asst_… with BOT_ENGINE=assistants, "
            f"got {backend.assistant_id[:12]!r}."
        )
    settings = Settings(
        slack_bot_token=bot_token,
        slack_app_token=app_token,
        slack_signing_secret=signing_secret,
        slack_api_url=slack_api_url,
        openai_api_key=backend.openai_api_key,
        openai_base_url=backend.openai_base_url,
        assistant_id=backend.assistant_id,
        assistants_file=Path(assistants_file) if assistants_file else None,
        engine=backend.engine,
        database_url=backend.database_url,
        port=reader.integer("PORT", 3000, 0, 65535),
        log_level=backend.log_level,
        answer_bots=reader.boolean("ANSWER_BOTS", False),
        turn_timeout=reader.number("TURN_TIMEOUT_SECONDS", 300.0, 1.0, 3600.0),
        max_turns_in_flight=reader.integer("MAX_TURNS_IN_FLIGHT", 400, 1, 100_000),
        shutdown_grace=reader.number("SHUTDOWN_GRACE_SECONDS", 20.0, 0.0, 600.0),
        tool_timeout=tools.tool_timeout,
        tools_module=tools.tools_module,
        assistant_admins=reader.user_ids("ASSISTANT_ADMINS"),
        approval_timeout=reader.number("APPROVAL_TIMEOUT_SECONDS", 600.0, 0.1, 3600.0),
        max_file_mb=reader.number("MAX_FILE_MB", 50.0, 0.001, 512.0),
        max_files_per_message=reader.integer("MAX_FILES_PER_MESSAGE", 10, 1, 100),
        replica_dead_after=reader.number("REPLICA_DEAD_AFTER_SECONDS", 20.0, 2.0, 600.0),
        file_retention_days=backend.file_retention_days,
        file_index_timeout=reader.number("FILE_INDEX_TIMEOUT_SECONDS", 120.0, 1.0, 3600.0),
        slack_view=reader.choice("SLACK_VIEW", "agent_view", SLACK_VIEWS),
        openai_timeout=backend.openai_timeout,
        slack_timeout=reader.number("SLACK_TIMEOUT_SECONDS", 30.0, 1.0, 600.0),
        slack_retries=reader.integer("SLACK_RETRIES", 4, 0, 10),
        health_port=_health_port(reader),
        log_format=backend.log_format,
        prices=reader.prices(),
        budgets=reader.budgets(),
        user_turns_per_minute=reader.integer("USER_TURNS_PER_MINUTE", 0, 0, 10_000),
        allowed_channels=reader.channel_ids("ALLOWED_CHANNELS"),
        text_retention_days=backend.text_retention_days,
    )
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def load_backend_settings(
    environ: Mapping[str, str] | None = None, env_file: str | None = ".env"
) -> BackendSettings:
    values = _values(environ, env_file)
    reader = _Reader(values)
    settings = _read_backend(reader, values, log_level="WARNING")
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def load_usage_settings(
    environ: Mapping[str, str] | None = None, env_file: str | None = ".env"
) -> UsageSettings:
    reader = _Reader(_values(environ, env_file))
    settings = UsageSettings(reader.database_url(), reader.prices())
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def load_tool_settings(
    environ: Mapping[str, str] | None = None, env_file: str | None = ".env"
) -> ToolSettings:
    reader = _Reader(_values(environ, env_file))
    settings = _read_tools(reader)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def load_database_url(
    environ: Mapping[str, str] | None = None, env_file: str | None = ".env"
) -> str:
    """DATABASE_URL (or DATABASE_PATH) alone: `python -m bot audit` needs nothing else."""
    reader = _Reader(_values(environ, env_file))
    url = reader.database_url()
    if reader.problems:
        raise ConfigError(reader.problems)
    return url


def _read_backend(reader: _Reader, values: Mapping[str, str], log_level: str) -> BackendSettings:
    api_key = reader.required("OPENAI_API_KEY", where=API_KEY_WHERE)
    base_url = reader.optional("OPENAI_BASE_URL")
    if base_url is not None:
        base_url = reader.url("OPENAI_BASE_URL", base_url)
    engine = reader.optional("BOT_ENGINE")
    if engine is not None:
        engine = reader.choice("BOT_ENGINE", "", ENGINES)
    return BackendSettings(
        openai_api_key=api_key,
        openai_base_url=base_url,
        engine=engine,
        assistant_id=reader.optional("ASSISTANT_ID"),
        database_url=reader.database_url(),
        log_level=reader.choice("LOG_LEVEL", log_level, LOG_LEVELS, upper=True),
        openai_timeout=reader.number("OPENAI_TIMEOUT_SECONDS", 120.0, 1.0, 3600.0),
        file_retention_days=reader.integer("FILE_RETENTION_DAYS", 30, 1, 365),
        log_format=reader.choice("LOG_FORMAT", "text", LOG_FORMATS),
        text_retention_days=_text_retention(reader),
    )


def _text_retention(reader: _Reader) -> int | None:
    if reader.values.get("TEXT_RETENTION_DAYS", "").strip().lower() in ("", "keep"):
        return None
    return reader.integer("TEXT_RETENTION_DAYS", 0, 1, 36500)


def _health_port(reader: _Reader) -> int | None:
    if not reader.values.get("HEALTH_PORT", "").strip():
        return None  # off: in HTTP mode the checks share PORT anyway
    return reader.integer("HEALTH_PORT", 0, 0, 65535)


def _read_tools(reader: _Reader) -> ToolSettings:
    return ToolSettings(
        tools_module=reader.optional("TOOLS_MODULE"),
        tool_timeout=reader.number("TOOL_TIMEOUT_SECONDS", 30.0, 0.1, 3600.0),
    )


def _values(environ: Mapping[str, str] | None, env_file: str | None) -> dict[str, str]:
    values: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


class _Reader:
    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: list[str] = []

    def optional(self, name: str, prefix: str | None = None, where: str = "") -> str | None:
        value = self.values.get(name, "").strip()
        if not value:
            return None
        if value == PLACEHOLDERS.get(name):
            self.problems.append(
                f"{name} still holds the placeholder {value!r} from .env.example: set it to {where}."
            )
            return value
        if prefix and not value.startswith(prefix):
            self.problems.append(f"{name} must start with {prefix!r}: use {where}.")
        return value

    def required(self, name: str, prefix: str | None = None, where: str = "") -> str:
        value = self.optional(name, prefix, where)
        if value is None:
            self.problems.append(f"{name} is missing: set it to {where}.")
            return ""
        return value

    def url(self, name: str, default: str) -> str:
        value = self.values.get(name, "").strip() or default
        if not value.startswith(("http://", "https://")):
            self.problems.append(f"{name} must be an http(s) URL, got {value!r}.")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...], upper: bool = False) -> str:
        value = self.values.get(name, "").strip() or default
        value = value.upper() if upper else value.lower()
        if value not in allowed:
            self.problems.append(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        return int(self.number(name, default, low, high, kind=int))

    def number(
        self, name: str, default: float, low: float, high: float, kind: type = float
    ) -> float:
        raw = self.values.get(name, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            what = "a whole number" if kind is int else "a number"
            self.problems.append(f"{name} must be {what} from {low:g} to {high:g}; got {raw!r}.")
            return default
        return float(value)

    def user_ids(self, name: str) -> frozenset[str]:
        """Comma-separated Slack user ids (U… or W…); empty: none."""
        ids = [part.strip() for part in self.values.get(name, "").split(",") if part.strip()]
        wrong = [i for i in ids if not re.fullmatch(r"[UW][A-Z0-9]{2,}", i)]
        if wrong:
            self.problems.append(
                f"{name} must be Slack user ids like U0123ABCD, comma-separated; got {wrong[0]!r}."
            )
        return frozenset(ids)

    def channel_ids(self, name: str) -> frozenset[str]:
        """Comma-separated Slack channel ids (C… or G…); empty: none."""
        ids = [part.strip() for part in self.values.get(name, "").split(",") if part.strip()]
        wrong = [i for i in ids if not re.fullmatch(r"[CG][A-Z0-9]{2,}", i)]
        if wrong:
            self.problems.append(
                f"{name} must be Slack channel ids like C0123ABCD, comma-separated; "
                f"got {wrong[0]!r}."
            )
        return frozenset(ids)

    def database_url(self) -> str:
        """DATABASE_URL, or DATABASE_PATH (a SQLite file) as its shorthand."""
        from bot.store.database import DEFAULT_URL, parse_url, sqlite_url  # only those who need it

        url = self.values.get("DATABASE_URL", "").strip()
        path = self.values.get("DATABASE_PATH", "").strip()
        if url and path:
            self.problems.append(
                "DATABASE_URL and DATABASE_PATH are both set: keep one (DATABASE_PATH=FILE is "
                "short for DATABASE_URL=sqlite:///FILE)."
            )
        if not url:
            url = sqlite_url(path) if path else DEFAULT_URL
        try:
            parse_url(url)
        except ValueError as exc:
            self.problems.append(str(exc))
        return url

    def prices(self) -> Prices | None:
        """The built-in prices, changed by PRICES_FILE when it is set (None: no file)."""
        from bot.governance.files import SettingsFileError  # only those who need it
        from bot.governance.prices import load_prices

        path = self.settings_file("PRICES_FILE")
        try:
            return load_prices(path) if path else None
        except SettingsFileError as exc:
            self.problems.append(str(exc))
            return None

    def budgets(self) -> Budgets | None:
        from bot.governance.budgets import load_budgets
        from bot.governance.files import SettingsFileError

        path = self.settings_file("BUDGETS_FILE")
        try:
            return load_budgets(path) if path else None
        except SettingsFileError as exc:
            self.problems.append(str(exc))
            return None

    def settings_file(self, name: str) -> Path | None:
        value = self.values.get(name, "").strip()
        if not value:
            return None
        if not Path(value).is_file():
            self.problems.append(
                f"{name} {value!r} is not a file: fix the path, or leave it empty."
            )
            return None
        return Path(value)

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.values.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{name} must be true or false; got {raw!r}.")
        return default
