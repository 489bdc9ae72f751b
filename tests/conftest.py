"""Fixtures: the two emulators on 127.0.0.1 and the real bot wired to them by base URL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from bot import app
from bot.config import Settings, load_settings
from bot.slack.blocks import STOP_ACTION
from bot.slack.words import THINKING
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import Message, SlackEmulator

GENERAL = "C0GENERAL"
ALICE = "U0ALICE"
BOB = "U0BOB"


@pytest.fixture
async def openai_emu() -> AsyncIterator[OpenAIEmulator]:
    emu = OpenAIEmulator()
    await emu.start()
    yield emu
    await emu.stop()
    assert emu.spec_violations == [], "\n".join(emu.spec_violations)


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    emu = SlackEmulator()
    await emu.start()
    yield emu
    await emu.stop()


# Tests that run on both databases: `pytest.mark.parametrize("database", BOTH_DATABASES,
# indirect=True)`; the others run on SQLite only.
BOTH_DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """TEST_DATABASE_URL, once it answers. Without it the PostgreSQL tests are skipped, saying
    why; with REQUIRE_POSTGRES=1 (CI) they fail instead."""
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    problem = None
    if not url:
        problem = (
            "TEST_DATABASE_URL is not set "
            "(e.g. TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test)"
        )
    else:
        try:
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.Error as exc:
            shown = sa.make_url(url).render_as_string(hide_password=True)
            problem = f"PostgreSQL at {shown} is not reachable: {' '.join(str(exc).split())}"
    if problem is None:
        return url
    if os.environ.get("REQUIRE_POSTGRES") == "1":
        pytest.fail(f"REQUIRE_POSTGRES=1 but {problem}")
    pytest.skip(problem)


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    """The kind of database a test runs on: SQLite unless the test asks for BOTH_DATABASES."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
async def database_url(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A new, empty database for one test: a SQLite file, or a PostgreSQL schema of its own
    (dropped afterwards), so that tests running at once never meet."""
    if database == "sqlite":
        yield f"sqlite:///{tmp_path / 'bot.sqlite3'}"
        return
    server: str = request.getfixturevalue("postgres_url")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        url = sa.make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        async with await psycopg.AsyncConnection.connect(server, autocommit=True) as admin:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")


def bot_env(
    slack: SlackEmulator, openai_emu: OpenAIEmulator, db: Path | str, mode: str, **extra: str
) -> dict[str, str]:
    """The bot's settings for the emulators; `db` is a SQLite file's path or a database URL."""
    env = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": slack.signing_secret,
        "SLACK_API_URL": slack.api_url,
        "OPENAI_API_KEY": openai_emu.api_key,
        "OPENAI_BASE_URL": openai_emu.base_url,
        **({"DATABASE_URL": db} if isinstance(db, str) else {"DATABASE_PATH": str(db)}),
        "PORT": "0",
        "SHUTDOWN_GRACE_SECONDS": "5",
    }
    if mode == "socket":
        env["SLACK_APP_TOKEN"] = slack.app_token
    env.update(extra)
    return env


@dataclass
class Harness:
    """Starts, stops and restarts the real bot against the emulators."""

    slack: SlackEmulator
    openai: OpenAIEmulator
    db: Path | str  # a SQLite file's path or a database URL
    engine: str = "assistants"
    mode: str = "http"
    env: dict[str, str] = field(default_factory=dict)
    bot: app.Bot | None = None

    def settings(self) -> Settings:
        return load_settings(
            bot_env(self.slack, self.openai, self.db, self.mode, **self.env), env_file=None
        )

    async def start(self, **env: str) -> app.Bot:
        self.env.update(env)
        self.bot = await app.start(self.settings())
        if self.mode == "http":
            self.slack.events_url = f"http://127.0.0.1:{self.bot.port}/slack/events"
        else:
            self.slack.events_url = None
            await self.slack.wait_socket_connected()
        return self.bot

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.stop()
            self.bot = None

    def backend_conversations(self) -> int:
        """How many backend conversations exist (Assistants threads or Conversations)."""
        if self.engine == "assistants":
            return len(self.openai.threads)
        return len(self.openai.responses_api.conversations)

    def backend_runs(self) -> int:
        if self.engine == "assistants":
            return len(self.openai.runs)
        return len(self.openai.responses_api.responses)

    @property
    def conversation_path(self) -> str:
        """The path that creates a backend conversation, for injecting failures into it."""
        return "/v1/threads" if self.engine == "assistants" else "/v1/conversations"

    async def drain_idle(self) -> None:
        """Wait until every message delivered so far has been answered or turned away.

        Each delivery returns once the bot acked it, and the bot counts a message as being
        received from before its ack until it is submitted or turned away; then its turn counts
        until it is finished.
        """
        assert self.bot is not None
        async with asyncio.timeout(60):
            await self.bot.conversations.idle()

    async def restart(self) -> app.Bot:
        await self.stop()
        return await self.start()


HELPER_DEFINITION = """
assistants:
  - name: Helper
    model: gpt-4o
    instructions: You help.
    description: General help
"""


@pytest.fixture(params=["assistants", "responses"])
def engine(request: pytest.FixtureRequest) -> str:
    """Scenario tests run on both engines: the Slack behaviour must not depend on the backend."""
    return str(request.param)


@pytest.fixture
def engine_env(engine: str, openai_emu: OpenAIEmulator, tmp_path: Path) -> dict[str, str]:
    if engine == "assistants":
        assistant = openai_emu.add_assistant(
            name="Helper", model="gpt-4o", instructions="You help.", description="General help"
        )
        return {"BOT_ENGINE": "assistants", "ASSISTANT_ID": assistant}
    definitions = tmp_path / "assistants.yaml"
    definitions.write_text(HELPER_DEFINITION)
    return {
        "BOT_ENGINE": "responses",
        "ASSISTANT_ID": "Helper",
        "ASSISTANTS_FILE": str(definitions),
    }


@pytest.fixture
async def harness(
    slack: SlackEmulator,
    openai_emu: OpenAIEmulator,
    engine: str,
    engine_env: dict[str, str],
    database_url: str,
) -> AsyncIterator[Harness]:
    h = Harness(slack, openai_emu, database_url, engine=engine, env=dict(engine_env))
    yield h
    await h.stop()


@pytest.fixture
async def bot(harness: Harness) -> AsyncIterator[Harness]:
    """The bot running in HTTP mode."""
    await harness.start()
    yield harness


def answers(slack: SlackEmulator, channel: str, thread_ts: str) -> list[Message]:
    """The bot's finished messages in a thread: placeholders (thinking, reading files) and
    answers still being written (streaming, or showing a Stop button) are left out."""
    return [
        m
        for m in slack.bot_replies(channel, thread_ts)
        if m.text != THINKING
        and not m.text.startswith("_Reading ")
        and not m.streaming
        and not has_stop_button(m)
    ]


def has_stop_button(message: Message) -> bool:
    return any(
        element.get("action_id") == STOP_ACTION
        for block in message.blocks
        for element in block.get("elements") or []
        if isinstance(element, dict)
    )


async def wait_answers(
    slack: SlackEmulator, channel: str, thread_ts: str, count: int, timeout: float = 15.0
) -> list[Message]:
    await slack.wait_for(lambda: len(answers(slack, channel, thread_ts)) >= count, timeout)
    return answers(slack, channel, thread_ts)


def texts(messages: list[Message]) -> list[str]:
    return [m.text for m in messages]


Predicate = Callable[[], bool]
Json = dict[str, Any]
