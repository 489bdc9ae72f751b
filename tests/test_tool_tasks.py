"""Every tool call visible while it runs: each function call, MCP call and web search shows as a
task in the streamed answer (or, where Slack refuses streaming, in the status line), and the
finished answer keeps a short record of the tools it used. Reasoning models show their reasoning
summary as the status, never in the answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.definitions import DefinitionError, parse_definition
from tests.conftest import ALICE, GENERAL, Harness, wait_answers
from tests.emulators.model import Reply, ToolCallSpec, WebSourceSpec
from tests.mcp_server_for_tests import Seen, serve_http
from tests.test_files import final_answers, pdf, reads_files
from tests.test_web_search import SEARCHER

SOURCE = WebSourceSpec(
    "OPS-12 in the tracker", "https://tracker.example.com/OPS-12", quote="OPS-12 is open"
)


@pytest.fixture
async def tickets() -> AsyncIterator[str]:
    async with serve_http(Seen()) as url:
        yield url


def searcher_with_tickets(path: Path, url: str) -> str:
    path.write_text(
        SEARCHER
        + "    mcp_servers:\n"
        + f'      - {{name: tickets, url: "{url}", allowed_tools: [lookup_ticket, hang]}}\n'
    )
    return str(path)


def statuses(harness: Harness, ts: str) -> list[tuple[str, str]]:
    return [(t["title"], t["status"]) for t in harness.slack.task_updates(GENERAL, ts)]


@pytest.mark.parametrize("engine", ["responses"])
async def test_each_tool_call_shows_as_a_task_in_order_while_the_answer_streams(
    harness: Harness, tickets: str, tmp_path: Path
) -> None:
    definitions = searcher_with_tickets(tmp_path / "assistants.yaml", tickets)
    await harness.start(ASSISTANTS_FILE=definitions, TOOL_TIMEOUT_SECONDS="1")
    slack, model = harness.slack, harness.openai.model
    model.held = asyncio.Event()
    model.enqueue(
        Reply(
            tool_calls=[ToolCallSpec("tickets__lookup_ticket", '{"ticket_id": "OPS-12"}')],
            after_tools=Reply(
                tool_calls=[ToolCallSpec("tickets__hang", "{}")],
                after_tools=Reply(text="OPS-12 is open.", web_sources=[SOURCE]),
            ),
        )
    )
    ts = await slack.mention(ALICE, GENERAL, "what about OPS-12?")
    searching = ("Searching the web", "in_progress")
    await slack.wait_for(lambda: searching in statuses(harness, ts))
    assert statuses(harness, ts) == [
        ("lookup_ticket (tickets)", "in_progress"),
        ("lookup_ticket (tickets)", "complete"),
        ("hang (tickets)", "in_progress"),
        ("hang (tickets)", "error"),  # it did not finish within TOOL_TIMEOUT_SECONDS
        searching,
    ]
    [streamed] = [m for m in slack.bot_replies(GENERAL, ts) if m.streaming]
    assert streamed.text == "", "the tasks come before any answer text"
    lookup = slack.task_updates(GENERAL, ts)[0]
    assert lookup["details"] == '{"ticket_id": "OPS-12"}'

    model.held.set()
    [answer] = await final_answers(harness, ts, 1)
    *_, searched = slack.task_updates(GENERAL, ts)
    assert (searched["title"], searched["status"]) == ("Searching the web", "complete")
    assert searched["sources"] == [
        {"type": "url", "url": "https://tracker.example.com/OPS-12", "text": "tracker.example.com"}
    ]
    assert answer.text.endswith(
        "\n:hammer_and_wrench: Used lookup_ticket (tickets), hang (tickets) (failed), web search"
    )


@pytest.mark.parametrize("engine", ["responses"])
async def test_where_streaming_is_refused_the_status_line_says_which_tool_runs(
    harness: Harness, tmp_path: Path
) -> None:
    definitions = tmp_path / "assistants.yaml"
    definitions.write_text(SEARCHER)
    await harness.start(ASSISTANTS_FILE=str(definitions))
    slack, model = harness.slack, harness.openai.model
    slack.refuse_streaming = True
    model.held = asyncio.Event()
    model.enqueue(Reply(text="OPS-12 is open.", web_sources=[SOURCE]))
    ts = await slack.mention(ALICE, GENERAL, "what about OPS-12?")
    await slack.wait_for(
        lambda: any(m.text == "_Searching the web…_" for m in slack.bot_replies(GENERAL, ts))
    )
    model.held.set()
    [answer] = await final_answers(harness, ts, 1)
    assert answer.text.endswith("\n:hammer_and_wrench: Used web search")
    assert slack.task_updates(GENERAL, ts) == []


async def test_a_search_of_a_shared_file_shows_as_a_task_and_in_the_record(
    harness: Harness,
) -> None:
    await harness.start()
    slack = harness.slack
    reads_files(harness.openai)
    ts = await slack.mention(ALICE, GENERAL, "how long do refunds take?", files=[pdf(slack)])
    [answer] = await final_answers(harness, ts, 1)
    assert statuses(harness, ts) == [
        ("Searching the files", "in_progress"),
        ("Searching the files", "complete"),
    ]
    assert answer.text.endswith("\n:hammer_and_wrench: Used file search")


REASONER = "assistants:\n  - name: Helper\n    model: gpt-5-mini\n    reasoning_effort: high\n"
SUMMARY = "**Checking the release calendar**\n\nThe user asks when the release is; I look it up."


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_reasoning_summary_shows_as_the_status_and_never_in_the_answer(
    harness: Harness, tmp_path: Path
) -> None:
    definitions = tmp_path / "assistants.yaml"
    definitions.write_text(REASONER)
    await harness.start(ASSISTANTS_FILE=str(definitions))
    slack, model = harness.slack, harness.openai.model
    model.held = asyncio.Event()
    model.enqueue(Reply(text="It ships on Friday.", reasoning=SUMMARY))
    ts = await slack.dm(ALICE, "when is the release?")
    channel = slack.dm_channel(ALICE)

    def status_shown() -> bool:
        return any(
            call.args.get("loading_messages") == ["Checking the release calendar…"]
            for call in slack.calls_to("assistant.threads.setStatus")
        )

    await slack.wait_for(status_shown)
    shown = [m.text for m in slack.bot_replies(channel, ts)]
    assert shown == ["_Checking the release calendar…_"]  # the placeholder says it too
    model.held.set()
    [answer] = await wait_answers(slack, channel, ts, 1)
    assert answer.text == "It ships on Friday."
    request = harness.openai.responses_api.last_response()
    assert request.body["reasoning"] == {"effort": "high", "summary": "auto"}


def test_a_reasoning_effort_that_does_not_exist_is_refused_naming_the_field() -> None:
    with pytest.raises(DefinitionError) as refused:
        parse_definition({"name": "Thinker", "model": "o4-mini", "reasoning_effort": "extreme"})
    assert str(refused.value).startswith(
        "assistant 'Thinker': 'reasoning_effort' must be one of none, minimal, low, medium"
    )
