"""Fixtures: the two emulators on 127.0.0.1 and the real bot wired to them by base URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

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


def bot_env(
    slack: SlackEmulator, openai_emu: OpenAIEmulator, db: Path, mode: str, **extra: str
) -> dict[str, str]:
    env = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": slack.signing_secret,
        "SLACK_API_URL": slack.api_url,
        "OPENAI_API_KEY": openai_emu.api_key,
        "OPENAI_BASE_URL": openai_emu.base_url,
        "DATABASE_PATH": str(db),
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
    db: Path
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
    tmp_path: Path,
) -> AsyncIterator[Harness]:
    h = Harness(slack, openai_emu, tmp_path / "bot.sqlite3", engine=engine, env=dict(engine_env))
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
