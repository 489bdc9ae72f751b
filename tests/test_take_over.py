"""Taking over a turn whose process died: the backend run goes on, and another process follows it
to the end instead of starting a new one (issue 13.5, the engine's part; the whole bot killed and
restarted is in test_crash_recovery.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from openai import AsyncOpenAI

from bot.definitions import AssistantDefinition
from bot.engine.assistants_api import AssistantsEngine
from bot.engine.base import (
    RUN_GONE,
    Completed,
    EngineError,
    EngineEvent,
    FollowsRuns,
    RunStarted,
    TextDelta,
    ToolCall,
    ToolOutput,
)
from bot.engine.responses import ResponsesEngine
from tests.emulators.model import Reply, ToolCallSpec
from tests.emulators.openai import OpenAIEmulator

HELPER = AssistantDefinition(name="Helper", model="gpt-4o", id="asst_helper")


class OneAssistant:
    async def get_assistant(self, assistant_id: str) -> AssistantDefinition | None:
        return HELPER if assistant_id == HELPER.id else None


ENGINES = ["assistants", "responses"]


def engine_for(emu: OpenAIEmulator, kind: str = "responses") -> AssistantsEngine | ResponsesEngine:
    """An engine of its own process, so to speak: its own client."""
    client = AsyncOpenAI(api_key=emu.api_key, base_url=emu.base_url, max_retries=0)
    if kind == "assistants":
        return AssistantsEngine(client)
    return ResponsesEngine(client, OneAssistant())  # type: ignore[arg-type]


def assistant_for(emu: OpenAIEmulator, kind: str) -> str:
    if kind == "assistants":
        return emu.add_assistant(name="Helper", model="gpt-4o")
    return HELPER.id


async def tools(calls: Sequence[ToolCall]) -> list[ToolOutput]:
    return [ToolOutput(call.id, f"{call.name} says 21 degrees") for call in calls]


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_run_left_by_a_dead_process_is_followed_to_its_end(
    openai_emu: OpenAIEmulator, kind: str
) -> None:
    answer = "The answer is forty-two, and here is why it is so."
    openai_emu.model.enqueue(Reply(text=answer))
    openai_emu.model.chunk_delay = 0.01
    first, second = engine_for(openai_emu, kind), engine_for(openai_emu, kind)
    assistant = assistant_for(openai_emu, kind)
    conversation = await first.create_conversation()
    # The first process starts the turn, shows a little of it, and dies (never closing anything).
    events = first.run(conversation, assistant, "What is the answer?", tools)
    started = await anext(events)
    assert isinstance(started, RunStarted)
    assert isinstance(await anext(events), TextDelta)

    assert isinstance(second, FollowsRuns)
    followed: list[EngineEvent] = [
        event async for event in second.follow(conversation, assistant, started.run_id, tools)
    ]
    text = "".join(e.text for e in followed if isinstance(e, TextDelta))
    assert text == answer  # the whole answer, from its first word, for a fresh message
    assert isinstance(followed[-1], Completed) and followed[-1].text == answer
    assert len(openai_emu.model.turns) == 1  # no second run: the person's message went in once
    await events.aclose()
    await first.client.close()
    await second.client.close()


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_followed_run_that_asks_for_tools_gets_them_and_goes_on(
    openai_emu: OpenAIEmulator, kind: str
) -> None:
    openai_emu.model.gate = asyncio.Event()
    openai_emu.model.enqueue(Reply(tool_calls=[ToolCallSpec("get_weather", '{"city": "Oslo"}')]))
    first, second = engine_for(openai_emu, kind), engine_for(openai_emu, kind)
    assistant = assistant_for(openai_emu, kind)
    conversation = await first.create_conversation()
    events = first.run(conversation, assistant, "Weather in Oslo?", tools)
    started = await anext(events)
    assert isinstance(started, RunStarted)
    openai_emu.model.gate.set()  # the model asks for the tool after the first process died

    followed = [
        event async for event in second.follow(conversation, assistant, started.run_id, tools)
    ]
    assert isinstance(followed[-1], Completed)
    assert "get_weather says 21 degrees" in followed[-1].text
    await events.aclose()
    await first.client.close()
    await second.client.close()


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_run_the_backend_lost_is_said_to_be_gone_and_run_again_without_a_second_message(
    openai_emu: OpenAIEmulator, kind: str
) -> None:
    openai_emu.model.gate = asyncio.Event()
    first, second = engine_for(openai_emu, kind), engine_for(openai_emu, kind)
    assistant = assistant_for(openai_emu, kind)
    conversation = await first.create_conversation()
    events = first.run(conversation, assistant, "Are you there?", tools)
    started = await anext(events)
    assert isinstance(started, RunStarted)
    await openai_emu.lose_run(started.run_id)
    openai_emu.model.gate.set()

    with pytest.raises(EngineError) as gone:
        [_ async for _ in second.follow(conversation, assistant, started.run_id, tools)]
    assert gone.value.code == RUN_GONE
    again = [
        event
        async for event in second.run_again(
            conversation, assistant, "Are you there?", tools, lost_run=started.run_id
        )
    ]
    assert isinstance(again[-1], Completed)
    assert again[-1].text.startswith("You said: Are you there?")
    assert openai_emu.user_messages("Are you there?") == 1
    await events.aclose()
    await first.client.close()
    await second.client.close()
