"""A tool call the team wants a person to approve: a card in the thread with Approve and Deny,
decided by the person who asked (or an admin), and the assistant answering with the decision."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.outcomes import APPROVED
from bot.slack.approvals import Approvals
from bot.slack.blocks import APPROVE_ACTION, DENY_ACTION, STOP_ACTION
from tests import tools_for_tests
from tests.conftest import ALICE, BOB, GENERAL, Harness, has_stop_button
from tests.emulators.model import McpCallSpec, Reply
from tests.emulators.slack import Message, SlackEmulator
from tests.mcp_server_for_tests import Seen, serve_http
from tests.test_mcp import TOKEN, calls, define_helper
from tests.test_tools import tool_outputs

CAROL = "U0CAROL"  # an assistant admin
QUESTION = "The assistant wants to use *close_ticket* on *tickets*. Allow it?"


@pytest.fixture
async def tickets(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Seen]]:
    monkeypatch.setenv("TICKETS_TOKEN", TOKEN)
    seen = Seen()
    async with serve_http(seen) as url:
        yield url, seen


async def start(harness: Harness, url: str, tmp_path: Path, **env: str) -> None:
    server = (
        f'{{name: tickets, url: "{url}", headers: {{Authorization: "Bearer ${{TICKETS_TOKEN}}"}}, '
        "allowed_tools: [lookup_ticket, close_ticket], require_approval: [close_ticket]}"
    )
    harness.slack.add_user(CAROL, "carol")
    definitions = define_helper(tmp_path / "assistants.yaml", server)
    await harness.start(ASSISTANTS_FILE=definitions, ASSISTANT_ADMINS=CAROL, **env)


async def ask_to_close(slack: SlackEmulator) -> tuple[str, Message]:
    """Alice asks; the model wants to close OPS-12; the card that asks for approval."""
    ts = await slack.mention(ALICE, GENERAL, "please close OPS-12")
    await slack.wait_for(lambda: card(slack, ts) is not None)
    shown = card(slack, ts)
    assert shown is not None
    return ts, shown


def is_card(message: Message) -> bool:
    return message.text.startswith(QUESTION)


def card(slack: SlackEmulator, ts: str) -> Message | None:
    return next((m for m in slack.bot_replies(GENERAL, ts) if is_card(m)), None)


def buttons(message: Message) -> dict[str, str]:
    """The card's buttons: action id -> value."""
    return {
        element["action_id"]: element["value"]
        for block in message.blocks
        for element in block.get("elements") or []
        if isinstance(element, dict) and element.get("type") == "button"
    }


def said(message: Message) -> str:
    """What the card says below its question: the arguments and who decides, or decided."""
    return "\n".join(
        block.get("text", {}).get("text", "")
        if block["type"] == "section"
        else " ".join(e.get("text", "") for e in block.get("elements", []))
        for block in message.blocks
        if block["type"] in ("section", "context")
    )


async def press(slack: SlackEmulator, user: str, message: Message, action: str) -> None:
    value = buttons(message)[action]
    await slack.interaction(slack.block_action_payload(user, GENERAL, message.ts, action, value))


async def final_answer(slack: SlackEmulator, ts: str, question: str = QUESTION) -> Message:
    """The answer (not the card), once it is finished."""

    def finished() -> list[Message]:
        return [
            m
            for m in slack.bot_replies(GENERAL, ts)
            if not m.text.startswith(question)
            and not m.streaming
            and not has_stop_button(m)
            and (not m.text.startswith("_") or m.text.endswith("_Stopped._"))
        ]

    await slack.wait_for(lambda: bool(finished()))
    return finished()[0]


def decided(slack: SlackEmulator, ts: str) -> Message:
    shown = card(slack, ts)
    assert shown is not None
    assert not buttons(shown), "a decided card has no buttons left"
    return shown


async def test_an_approved_call_runs_and_the_answer_uses_it(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = tickets
    await start(harness, url, tmp_path)
    slack = harness.slack
    harness.openai.model.enqueue(calls(("tickets__close_ticket", '{"ticket_id": "OPS-12"}')))
    ts, asking = await ask_to_close(slack)
    assert '```{"ticket_id": "OPS-12"}```' in said(asking)  # the arguments, as code
    assert "Only <@U0ALICE>, who asked, or an assistant admin can decide" in said(asking)
    assert set(buttons(asking)) == {APPROVE_ACTION, DENY_ACTION}
    assert seen.closed == [], "nothing runs before someone approves"
    await slack.wait_for(
        lambda: any(m.text == "_Waiting for approval…_" for m in slack.bot_replies(GENERAL, ts))
    )  # the placeholder says why the answer waits

    await press(slack, ALICE, asking, APPROVE_ACTION)
    answer = await final_answer(slack, ts)
    assert answer.text.startswith("The tools returned: OPS-12 is closed\n")
    assert seen.closed == ["OPS-12"]
    assert ":white_check_mark: Approved by <@U0ALICE>" in said(decided(slack, ts))


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_denied_call_does_not_run_and_the_assistant_is_told(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = tickets
    await start(harness, url, tmp_path)
    slack = harness.slack
    harness.openai.model.enqueue(calls(("tickets__close_ticket", '{"ticket_id": "OPS-12"}')))
    ts, asking = await ask_to_close(slack)
    await press(slack, ALICE, asking, DENY_ACTION)
    answer = await final_answer(slack, ts)
    assert answer.text.startswith("The tools returned: not run: denied by the user")
    assert tool_outputs(harness) == ["not run: denied by the user"]
    assert seen.closed == []
    assert ":no_entry_sign: Denied by <@U0ALICE>" in said(decided(slack, ts))


@pytest.mark.parametrize("engine", ["responses"])
async def test_someone_else_pressing_gets_a_private_note_and_an_admin_may_decide(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = tickets
    await start(harness, url, tmp_path)
    slack = harness.slack
    harness.openai.model.enqueue(calls(("tickets__close_ticket", '{"ticket_id": "OPS-12"}')))
    ts, asking = await ask_to_close(slack)

    await press(slack, BOB, asking, APPROVE_ACTION)
    await slack.wait_for(lambda: bool(slack.ephemerals(GENERAL, BOB)))
    assert slack.ephemerals(GENERAL, BOB) == [
        "Only <@U0ALICE>, who asked, or an assistant admin can approve or deny this call."
    ]
    still = card(slack, ts)
    assert still is not None and set(buttons(still)) == {APPROVE_ACTION, DENY_ACTION}
    assert seen.closed == []

    await press(slack, CAROL, asking, APPROVE_ACTION)  # an assistant admin
    answer = await final_answer(slack, ts)
    assert answer.text.startswith("The tools returned: OPS-12 is closed")
    assert ":white_check_mark: Approved by <@U0CAROL>" in said(decided(slack, ts))

    await press(slack, ALICE, asking, DENY_ACTION)  # too late: decided already
    await slack.wait_for(lambda: bool(slack.ephemerals(GENERAL, ALICE)))
    assert slack.ephemerals(GENERAL, ALICE) == [
        "That tool call is no longer waiting for a decision."
    ]


@pytest.mark.parametrize("engine", ["responses"])
async def test_no_decision_in_time_counts_as_deny(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = tickets
    await start(harness, url, tmp_path, APPROVAL_TIMEOUT_SECONDS="1")
    slack = harness.slack
    harness.openai.model.enqueue(calls(("tickets__close_ticket", '{"ticket_id": "OPS-12"}')))
    ts, _ = await ask_to_close(slack)
    answer = await final_answer(slack, ts)
    assert tool_outputs(harness) == [
        "not run: no one approved the call in time, so it counts as denied by the user"
    ]
    assert answer.text.startswith("The tools returned: not run: no one approved the call")
    assert ":hourglass: No decision within 1 second: denied" in said(decided(slack, ts))
    assert seen.closed == []


@pytest.mark.parametrize("engine", ["responses"])
async def test_stop_withdraws_a_pending_approval(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = tickets
    await start(harness, url, tmp_path)
    slack = harness.slack
    harness.openai.model.enqueue(calls(("tickets__close_ticket", '{"ticket_id": "OPS-12"}')))
    ts, asking = await ask_to_close(slack)
    control = next(m for m in slack.bot_replies(GENERAL, ts) if has_stop_button(m))
    stop = next(
        e["value"]
        for b in control.blocks
        for e in b.get("elements") or []
        if e.get("action_id") == STOP_ACTION
    )
    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, control.ts, STOP_ACTION, stop)
    )
    await slack.wait_for(lambda: "Withdrawn" in said(card(slack, ts) or asking))
    assert "Withdrawn: the answer was stopped" in said(decided(slack, ts))
    answer = await final_answer(slack, ts)
    assert answer.text.endswith("_Stopped._")

    await press(slack, ALICE, asking, APPROVE_ACTION)
    await slack.wait_for(lambda: bool(slack.ephemerals(GENERAL, ALICE)))
    assert slack.ephemerals(GENERAL, ALICE) == [
        "That tool call is no longer waiting for a decision."
    ]
    await harness.drain_idle()
    assert seen.closed == []


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_decision_made_on_another_replica_reaches_the_waiting_answer(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = tickets
    await start(harness, url, tmp_path)
    slack = harness.slack
    assert harness.bot is not None
    harness.openai.model.enqueue(calls(("tickets__close_ticket", '{"ticket_id": "OPS-12"}')))
    ts, asking = await ask_to_close(slack)
    # Another process on the same database takes the button press.
    elsewhere = Approvals(harness.bot.store, poll=0.1)
    assert await elsewhere.decide(buttons(asking)[APPROVE_ACTION], ALICE, APPROVED) == (
        "decided",
        "",
    )
    answer = await final_answer(slack, ts)
    assert answer.text.startswith("The tools returned: OPS-12 is closed")
    assert seen.closed == ["OPS-12"]
    assert ":white_check_mark: Approved by <@U0ALICE>" in said(decided(slack, ts))


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_server_openai_calls_itself_asks_for_approval_in_the_thread_too(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = tickets
    server = (
        f'{{name: tickets, url: "{url}", headers: {{Authorization: "Bearer ${{TICKETS_TOKEN}}"}}, '
        "via: openai, require_approval: [close_ticket]}"
    )
    definitions = define_helper(tmp_path / "assistants.yaml", server)
    bot = await harness.start(ASSISTANTS_FILE=definitions)
    assert bot.mcp_servers is not None and "tickets" not in bot.mcp_servers.servers
    slack = harness.slack
    harness.openai.model.enqueue(
        Reply(mcp_calls=[McpCallSpec("tickets", "close_ticket", '{"ticket_id": "OPS-12"}')])
    )
    ts, asking = await ask_to_close(slack)
    hosted = harness.openai.responses_api.last_response().tools[0]
    assert hosted == {
        "type": "mcp",
        "server_label": "tickets",
        "server_url": url,
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "require_approval": {"always": {"tool_names": ["close_ticket"]}},
    }
    assert seen.closed == []

    await press(slack, ALICE, asking, APPROVE_ACTION)
    answer = await final_answer(slack, ts)
    assert answer.text.startswith("The tools returned: OPS-12 is closed\n")
    assert seen.closed == ["OPS-12"]  # called by OpenAI (the emulator), not by the bot
    assert ":white_check_mark: Approved by <@U0ALICE>" in said(decided(slack, ts))
    assert [(t["title"], t["status"]) for t in slack.task_updates(GENERAL, ts)] == [
        ("close_ticket (tickets)", "in_progress"),
        ("close_ticket (tickets)", "complete"),
    ]


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_function_tool_of_our_own_can_ask_for_approval_and_the_wait_does_not_time_out_the_answer(
    harness: Harness,
) -> None:
    # The turn may take 1 second; the approval waits 2 (and expires): the answer still comes.
    await harness.start(
        TOOLS_MODULE="tests.tools_for_tests", TURN_TIMEOUT_SECONDS="1", APPROVAL_TIMEOUT_SECONDS="2"
    )
    slack = harness.slack
    harness.openai.model.enqueue(calls(("launch_release", '{"version": "2.4"}')))
    ts = await slack.mention(ALICE, GENERAL, "ship 2.4")
    question = "The assistant wants to use *launch_release*. Allow it?"
    await slack.wait_for(
        lambda: any(m.text.startswith(question) for m in slack.bot_replies(GENERAL, ts))
    )
    answer = await final_answer(slack, ts, question)
    assert answer.text.startswith("The tools returned: not run: no one approved the call in time")
    assert tools_for_tests.launched == []


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_denied_call_shows_as_a_task_not_run_and_in_the_record(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, _ = tickets
    await start(harness, url, tmp_path)
    slack = harness.slack
    harness.openai.model.enqueue(calls(("tickets__close_ticket", '{"ticket_id": "OPS-12"}')))
    ts, asking = await ask_to_close(slack)
    await press(slack, ALICE, asking, DENY_ACTION)
    answer = await final_answer(slack, ts)
    *_, ended = slack.task_updates(GENERAL, ts)
    assert (ended["status"], ended["output"]) == ("error", "Not run: no one approved it")
    assert answer.text.endswith("\n:hammer_and_wrench: Used close_ticket (tickets) (not run)")


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_call_openai_would_make_is_not_made_when_denied(
    harness: Harness, tickets: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = tickets
    server = f'{{name: tickets, url: "{url}", via: openai, require_approval: always}}'
    await harness.start(ASSISTANTS_FILE=define_helper(tmp_path / "assistants.yaml", server))
    slack = harness.slack
    harness.openai.model.enqueue(
        Reply(mcp_calls=[McpCallSpec("tickets", "close_ticket", '{"ticket_id": "OPS-12"}')])
    )
    ts, asking = await ask_to_close(slack)
    await press(slack, ALICE, asking, DENY_ACTION)
    answer = await final_answer(slack, ts)
    assert answer.text == "The tools returned: the call of close_ticket was denied"
    assert seen.closed == []
    assert slack.task_updates(GENERAL, ts) == []  # no call was made
    assert ":no_entry_sign: Denied by <@U0ALICE>" in said(decided(slack, ts))
