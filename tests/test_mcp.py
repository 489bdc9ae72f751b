"""A team's MCP servers, named in the assistant's definition: the bot connects to them itself and
the model calls their tools like any function tool."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.definitions import DefinitionError, parse_definition
from tests.conftest import ALICE, GENERAL, Harness, bot_env, wait_answers
from tests.emulators.model import Reply, ToolCallSpec
from tests.mcp_server_for_tests import HUGE_CHARS, Seen, serve_http, unused_port
from tests.test_operations import run_bot
from tests.test_tools import tool_outputs

TOKEN = "tickets-token-s3cret"


def calls(*specs: tuple[str, str]) -> Reply:
    return Reply(tool_calls=[ToolCallSpec(name, arguments) for name, arguments in specs])


def define_helper(path: Path, *servers: str) -> str:
    path.write_text(
        "assistants:\n"
        "  - name: Helper\n"
        "    model: gpt-4o\n"
        "    instructions: You help.\n"
        "    mcp_servers:\n" + "".join(f"      - {server}\n" for server in servers)
    )
    return str(path)


def offered_tools(bot: Harness) -> list[str]:
    """The function names the backend offered the model on its latest run or response."""
    if bot.engine == "assistants":
        tools = list(bot.openai.runs.values())[-1].tools
        return [t["function"]["name"] for t in tools if t["type"] == "function"]
    tools = bot.openai.responses_api.last_response().tools
    return [t["name"] for t in tools if t["type"] == "function"]


@pytest.fixture
async def tickets(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Seen]]:
    monkeypatch.setenv("TICKETS_TOKEN", TOKEN)
    seen = Seen()
    async with serve_http(seen) as url:
        yield url, seen


def tickets_server(url: str) -> str:
    return (
        f'{{name: tickets, url: "{url}", headers: {{Authorization: "Bearer ${{TICKETS_TOKEN}}"}}, '
        "allowed_tools: [lookup_ticket, dump_everything, hang, learn_on_call, on_call]}"
    )


async def test_a_question_is_answered_through_the_teams_mcp_server(
    harness: Harness,
    tickets: tuple[str, Seen],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url, seen = tickets
    definitions = define_helper(tmp_path / "assistants.yaml", tickets_server(url))
    await harness.start(ASSISTANTS_FILE=definitions)
    slack = harness.slack
    harness.openai.model.enqueue(calls(("tickets__lookup_ticket", '{"ticket_id": "OPS-12"}')))
    ts = await slack.mention(ALICE, GENERAL, "what's the state of OPS-12?")
    answer = await wait_answers(slack, GENERAL, ts, 1)
    assert answer[0].text == (
        "The tools returned: OPS-12 is open, assigned to Dana, priority high\n"
        ":hammer_and_wrench: Used lookup_ticket (tickets)"  # the record of the tools used
    )
    offered = offered_tools(harness)
    assert {"tickets__lookup_ticket", "tickets__hang"} <= set(offered)
    assert "tickets__drop_all" not in offered  # not in allowed_tools
    assert seen.authorization == {f"Bearer {TOKEN}"}  # the header, resolved from the environment
    assert TOKEN not in caplog.text
    lacking = [r.getMessage() for r in caplog.records if "tools_not_on_assistant" in r.msg]
    assert not any("tickets__" in line for line in lacking), "MCP tools come with each run"
    assert all(TOKEN not in m.text for m in slack.bot_replies(GENERAL, ts))


@pytest.mark.parametrize("engine", ["responses"])
async def test_what_goes_wrong_on_an_mcp_server_is_an_error_the_model_reads(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, _ = tickets
    definitions = define_helper(tmp_path / "assistants.yaml", tickets_server(url))
    await harness.start(ASSISTANTS_FILE=definitions, TOOL_TIMEOUT_SECONDS="1")
    slack = harness.slack
    harness.openai.model.enqueue(
        calls(
            ("tickets__dump_everything", "{}"),
            ("tickets__lookup_ticket", '{"ticket": 12}'),
            ("tickets__hang", "{}"),
            ("tickets__drop_all", "{}"),
        )
    )
    ts = await slack.mention(ALICE, GENERAL, "try the tracker")
    await slack.wait_for(lambda: len(tool_outputs(harness)) == 4)
    await harness.drain_idle()
    huge, wrong_arguments, hanging, not_allowed = tool_outputs(harness)
    assert huge.startswith("xxx") and huge.endswith("[output truncated]")
    assert len(huge) < HUGE_CHARS
    assert wrong_arguments.startswith("error: the arguments do not match the tool's schema")
    assert hanging == "error: the tool 'tickets__hang' did not finish within 1 seconds"
    assert not_allowed.startswith("error: there is no tool named 'tickets__drop_all'")

    # The pooled connection still serves the next question.
    harness.openai.model.enqueue(calls(("tickets__lookup_ticket", '{"ticket_id": "OPS-7"}')))
    await slack.post(ALICE, GENERAL, "and OPS-7?", thread_ts=ts)
    await slack.wait_for(lambda: len(tool_outputs(harness)) == 5)
    assert tool_outputs(harness)[4] == "OPS-7 is open, assigned to Dana, priority high"


@pytest.mark.parametrize("engine", ["responses"])
async def test_tools_a_server_adds_are_offered_once_it_says_its_list_changed(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, _ = tickets
    definitions = define_helper(tmp_path / "assistants.yaml", tickets_server(url))
    bot = await harness.start(ASSISTANTS_FILE=definitions)
    slack = harness.slack
    harness.openai.model.enqueue(calls(("tickets__learn_on_call", "{}")))
    ts = await slack.mention(ALICE, GENERAL, "learn who is on call")
    await wait_answers(slack, GENERAL, ts, 1)
    servers = bot.mcp_servers
    assert servers is not None
    await slack.wait_for(lambda: "on_call" in servers.servers["tickets"].tools)

    harness.openai.model.enqueue(calls(("tickets__on_call", "{}")))
    await slack.post(ALICE, GENERAL, "who is on call?", thread_ts=ts)
    second = await wait_answers(slack, GENERAL, ts, 2)
    assert "tickets__on_call" in offered_tools(harness)
    assert second[1].text.startswith("The tools returned: Dana is on call\n")


async def test_a_server_that_is_down_does_not_stop_the_bot_and_its_tools_answer_an_error(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"http://127.0.0.1:{unused_port()}/mcp"
    definitions = define_helper(tmp_path / "assistants.yaml", f'{{name: wiki, url: "{down}"}}')
    await harness.start(ASSISTANTS_FILE=definitions)
    assert "event=mcp_server_unreachable server=wiki" in caplog.text
    slack = harness.slack
    harness.openai.model.enqueue(calls(("wiki__search", '{"q": "deploys"}')))
    ts = await slack.mention(ALICE, GENERAL, "search the wiki for deploys")
    answer = await wait_answers(slack, GENERAL, ts, 1)
    (output,) = tool_outputs(harness)
    assert output.startswith("error: there is no tool named 'wiki__search'")
    assert answer[0].text.startswith("The tools returned: error:")


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_server_that_answers_garbage_is_reported_and_the_bot_still_answers(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    junk = f"{harness.slack.api_url.rstrip('/')}/not-mcp"  # an HTTP server that is no MCP server
    definitions = define_helper(tmp_path / "assistants.yaml", f'{{name: junk, url: "{junk}"}}')
    await harness.start(ASSISTANTS_FILE=definitions)
    assert "event=mcp_server_unreachable server=junk" in caplog.text
    slack = harness.slack
    ts = await slack.mention(ALICE, GENERAL, "still there?")
    answer = await wait_answers(slack, GENERAL, ts, 1)
    assert answer[0].text.startswith("You said: still there?")


@pytest.mark.parametrize("engine", ["responses"])
async def test_check_says_which_mcp_server_is_unreachable_and_still_passes(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, _ = tickets
    down = f"http://127.0.0.1:{unused_port()}/mcp"
    definitions = define_helper(
        tmp_path / "assistants.yaml", tickets_server(url), f'{{name: wiki, url: "{down}"}}'
    )
    env = bot_env(harness.slack, harness.openai, tmp_path / "bot.sqlite3", "http")
    env |= harness.env | {"ASSISTANTS_FILE": definitions, "TICKETS_TOKEN": TOKEN}
    code, out, err = await run_bot("check", env=env, cwd=tmp_path)
    assert code == 0, out + err
    assert "mcp server 'tickets': ok, 4 tool(s)" in out
    assert "mcp server 'wiki': UNREACHABLE (" in out
    assert TOKEN not in out + err


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_local_server_started_as_a_command_answers_over_stdio(
    harness: Harness, tmp_path: Path
) -> None:
    server = f'{{name: local, command: "{sys.executable}", args: [-m, tests.mcp_server_for_tests]}}'
    definitions = define_helper(tmp_path / "assistants.yaml", server)
    await harness.start(ASSISTANTS_FILE=definitions)
    slack = harness.slack
    harness.openai.model.enqueue(calls(("local__lookup_ticket", '{"ticket_id": "OPS-3"}')))
    ts = await slack.mention(ALICE, GENERAL, "what about OPS-3?")
    answer = await wait_answers(slack, GENERAL, ts, 1)
    assert answer[0].text.startswith(
        "The tools returned: OPS-3 is open, assigned to Dana, priority high\n"
    )


@pytest.mark.parametrize(
    ("server", "refusal"),
    [
        ({"name": "t", "url": "http://x", "token": "abc"}, "mcp_servers[0]: unknown field 'token'"),
        ({"name": "t", "url": "ftp://x"}, "mcp_servers[0].url: must be an http(s) URL"),
        (
            {"name": "t", "url": "https://x", "require_approval": "sometimes"},
            "mcp_servers[0].require_approval: 'never', 'always' or a list of tool names",
        ),
        (
            {"name": "t", "command": "serve", "via": "openai"},
            "mcp_servers[0].via: openai reaches a server by its url",
        ),
        (
            {"name": "t", "url": "https://x", "headers": {"Authorization": "Bearer ${NOT_SET_X}"}},
            "mcp_servers[0].headers.Authorization: the environment variable NOT_SET_X is not set",
        ),
    ],
)
def test_a_bad_mcp_server_entry_is_refused_naming_the_field(
    server: dict[str, object], refusal: str
) -> None:
    with pytest.raises(DefinitionError) as refused:
        parse_definition({"name": "Helper", "model": "gpt-4o", "mcp_servers": [server]})
    assert str(refused.value).startswith(f"assistant 'Helper': {refusal}")
