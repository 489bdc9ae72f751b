"""The assistant acts through function tools: the bot runs what the model asks and reports back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bot.app import StartupError
from bot.definitions import parse_definition
from tests import tools_for_tests
from tests.conftest import ALICE, BOB, GENERAL, Harness, bot_env, wait_answers
from tests.emulators.model import Reply, ToolCallSpec
from tests.emulators.openai_responses import output_as_text
from tests.test_operations import run_bot

TOOLS = {"TOOLS_MODULE": "tests.tools_for_tests"}


@pytest.fixture(autouse=True)
def fresh_tool_state() -> Iterator[None]:
    yield
    tools_for_tests.weather_gate = None
    tools_for_tests.meeting = None


def tool_outputs(bot: Harness) -> list[str]:
    """The tool outputs the backend received, in the order they were submitted."""
    if bot.engine == "assistants":
        return [str(o["output"]) for run in bot.openai.runs.values() for o in run.tool_outputs]
    return [
        output_as_text(item["output"])
        for item in bot.openai.responses_api.all_function_call_outputs()
    ]


def calls(*specs: tuple[str, str]) -> Reply:
    return Reply(tool_calls=[ToolCallSpec(name, arguments) for name, arguments in specs])


async def test_the_assistant_looks_something_up_and_answers_with_it(harness: Harness) -> None:
    await harness.start(**TOOLS)
    slack = harness.slack
    harness.openai.model.enqueue(calls(("get_weather", '{"city": "Paris"}')))
    ts = await slack.mention(ALICE, GENERAL, "what's the weather in Paris?")
    answer = await wait_answers(slack, GENERAL, ts, 1)
    assert answer[0].text == (
        "The tools returned: Sunny in Paris, 21°C\n:hammer_and_wrench: Used get_weather"
    )
    assert tool_outputs(harness) == ["Sunny in Paris, 21°C"]


async def test_calls_of_one_step_run_at_the_same_time(harness: Harness) -> None:
    await harness.start(**TOOLS)
    slack = harness.slack
    tools_for_tests.meeting = asyncio.Barrier(2)  # meet_a and meet_b only return together
    harness.openai.model.enqueue(calls(("meet_a", "{}"), ("meet_b", "{}"), ("who_asked", "{}")))
    ts = await slack.mention(ALICE, GENERAL, "do three things at once")
    await wait_answers(slack, GENERAL, ts, 1)
    assert tool_outputs(harness) == [
        "a met b",
        "b met a",
        '{"user": "U0ALICE", "channel": "C0GENERAL"}',
    ]


async def test_a_failing_a_hanging_and_an_unknown_tool_become_errors_the_model_reads(
    harness: Harness,
) -> None:
    await harness.start(**TOOLS, TOOL_TIMEOUT_SECONDS="0.3")
    slack = harness.slack
    harness.openai.model.enqueue(
        calls(("broken", "{}"), ("never_returns", "{}"), ("launch_rockets", "{}")),
        calls(("get_weather", "not json")),
    )
    ts = await slack.mention(ALICE, GENERAL, "try everything")
    first = await wait_answers(slack, GENERAL, ts, 1)
    broken, hanging, unknown = tool_outputs(harness)
    assert broken == "error: the tool 'broken' failed: RuntimeError: the database is down"
    assert hanging == "error: the tool 'never_returns' did not finish within 0.3 seconds"
    assert unknown.startswith("error: there is no tool named 'launch_rockets' (available: ")
    assert "get_weather" in unknown
    assert first[0].text.startswith("The tools returned: error: the tool 'broken' failed")

    await slack.post(ALICE, GENERAL, "and with bad arguments?", thread_ts=ts)
    await wait_answers(slack, GENERAL, ts, 2)
    assert tool_outputs(harness)[3].startswith("error: the arguments are not valid JSON")

    await slack.post(ALICE, GENERAL, "thanks", thread_ts=ts)
    third = await wait_answers(slack, GENERAL, ts, 3)
    assert third[2].text.startswith("You said: thanks")


async def test_the_thread_shows_which_tool_is_running(harness: Harness) -> None:
    await harness.start(**TOOLS)
    slack = harness.slack
    tools_for_tests.weather_gate = asyncio.Event()
    harness.openai.model.enqueue(calls(("get_weather", '{"city": "Oslo"}')))
    ts = await slack.mention(ALICE, GENERAL, "weather in Oslo?")
    await slack.wait_for(
        lambda: any(m.text == "_Looking up the weather…_" for m in slack.bot_replies(GENERAL, ts))
    )
    tools_for_tests.weather_gate.set()
    answer = await wait_answers(slack, GENERAL, ts, 1)
    assert answer[0].text.startswith("The tools returned: Sunny in Oslo, 21°C\n")
    await harness.drain_idle()
    assert [m.text for m in slack.bot_replies(GENERAL, ts)] == [answer[0].text]


async def test_built_in_tools_tell_the_time_and_read_the_thread(bot: Harness) -> None:
    slack = bot.slack
    root = await slack.post(BOB, GENERAL, "the deploy failed with error 137")
    bot.openai.model.enqueue(
        calls(("current_time", '{"timezone": "Asia/Tokyo"}'), ("read_slack_thread", "{}"))
    )
    await slack.mention(ALICE, GENERAL, "what time is it in Tokyo, and what did Bob say?", root)
    await wait_answers(slack, GENERAL, root, 1)
    time_output, thread_output = tool_outputs(bot)
    assert "(Asia/Tokyo, UTC+0900)" in time_output
    assert "<@U0BOB>: the deploy failed with error 137" in thread_output
    assert "<@U0ALICE>: <@U0BOT> what time is it in Tokyo" in thread_output
    assert "Thinking" not in thread_output, "the bot's own placeholder is not part of the thread"


@pytest.mark.parametrize(
    ("module", "words"),
    [
        ("tests.no_such_module", "could not be imported: ModuleNotFoundError"),
        ("tests.no_tools_here", "declares no tools"),
    ],
)
async def test_a_bad_tools_module_stops_start_up_with_a_clear_reason(
    harness: Harness, module: str, words: str
) -> None:
    with pytest.raises(StartupError, match=f"TOOLS_MODULE '{module}' {words}"):
        await harness.start(TOOLS_MODULE=module)


async def test_the_tools_command_prints_definitions_an_assistant_accepts(
    harness: Harness, tmp_path: Path
) -> None:
    env = bot_env(harness.slack, harness.openai, tmp_path / "db.sqlite3", "http")
    code, out, err = await run_bot("tools", env=env | harness.env | TOOLS, cwd=tmp_path)
    assert code == 0, err
    tools = yaml.safe_load(out)["tools"]
    names = [t["function"]["name"] for t in tools]
    assert {"current_time", "read_slack_thread", "get_weather", "who_asked"} <= set(names)
    weather = next(t for t in tools if t["function"]["name"] == "get_weather")
    assert weather["function"]["parameters"]["required"] == ["city"]
    assert "context" not in str(next(t for t in tools if t["function"]["name"] == "who_asked"))
    assert parse_definition({"name": "Helper", "model": "gpt-4o", "tools": tools}).tools

    code, out, _ = await run_bot("check", env=env | harness.env | TOOLS, cwd=tmp_path)
    assert code == 0, out
    assert "tools: broken, current_time, get_weather" in out
    assert "(not defined on the assistant: broken, current_time, get_weather" in out
