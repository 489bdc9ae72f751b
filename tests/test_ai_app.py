"""The app as an AI app: suggested prompts, the channel in view, the status line, titles and
feedback; under agent view (the shipped manifest) and under the legacy assistant view."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.slack.blocks import FEEDBACK_ACTION
from bot.slack.listeners.ai_app import context_note
from bot.slack.surface import SlackSurface
from bot.slack.words import DEFAULT_PROMPTS
from tests import tools_for_tests
from tests.conftest import ALICE, BOB, GENERAL, Harness, wait_answers
from tests.emulators.model import Reply, ToolCallSpec
from tests.emulators.slack import load_manifest
from tests.test_streaming import element

RANDOM = "C0RANDOM"


def legacy_manifest() -> dict[str, Any]:
    """manifest.yml as an app made before agent view has it: `assistant_view` and its events."""
    manifest = load_manifest()
    features = manifest["features"]
    del features["agent_view"]
    features["assistant_view"] = {"assistant_description": "OpenAI assistants in Slack."}
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    events.remove("app_context_changed")
    events += ["assistant_thread_started", "assistant_thread_context_changed"]
    return manifest


@pytest.fixture
async def legacy_bot(harness: Harness) -> AsyncIterator[Harness]:
    """The bot of an app with the legacy assistant view, configured for it."""
    harness.slack.use_manifest(legacy_manifest())
    await harness.start(SLACK_VIEW="assistant_view")
    yield harness


def last_text_the_model_read(bot: Harness) -> str:
    return bot.openai.model.turns[-1].user_texts[-1]


async def test_opening_the_apps_messages_tab_shows_the_suggested_prompts(bot: Harness) -> None:
    slack = bot.slack
    await slack.open_messages_tab(ALICE)
    dm = slack.dm_channel(ALICE)
    await slack.wait_for(lambda: bool(slack.suggested_prompts(dm)))
    shown = slack.suggested_prompts(dm)[0]
    assert [p["message"] for p in shown["prompts"]] == list(DEFAULT_PROMPTS)
    assert slack.calls_to("views.publish") == [], "the Messages tab is not the Home tab"


async def test_opening_the_home_tab_shows_the_home_view_and_sets_no_prompts(bot: Harness) -> None:
    slack = bot.slack
    await slack.open_app_home(ALICE)
    await slack.wait_for(lambda: slack.home_view(ALICE) is not None)
    await bot.drain_idle()
    assert slack.calls_to("assistant.threads.setSuggestedPrompts") == []


async def test_with_the_legacy_assistant_view_a_new_assistant_thread_shows_the_prompts(
    legacy_bot: Harness,
) -> None:
    slack = legacy_bot.slack
    dm = slack.dm_channel(ALICE)
    earlier = await slack.dm(ALICE, "an earlier question")
    await wait_answers(slack, dm, earlier, 1)
    await slack.open_messages_tab(ALICE)
    thread = await slack.open_assistant_thread(ALICE)
    await slack.wait_for(lambda: bool(slack.suggested_prompts(dm, thread)))
    shown = slack.suggested_prompts(dm, thread)[0]
    assert [p["message"] for p in shown["prompts"]] == list(DEFAULT_PROMPTS)
    await legacy_bot.drain_idle()
    assert slack.suggested_prompts(dm, earlier) == [], "the Messages tab left old talks alone"
    assert len(slack.calls_to("assistant.threads.setSuggestedPrompts")) == 1

    await slack.dm(ALICE, "Plan my week", thread_ts=thread)
    await wait_answers(slack, dm, thread, 1)
    assert slack.titles(dm, thread) == ["Plan my week"]


async def test_the_assistants_own_suggested_prompts_are_offered(
    harness: Harness, tmp_path: Path
) -> None:
    definitions = tmp_path / "helper.yaml"
    definitions.write_text(
        "assistants:\n"
        "  - name: Helper\n"
        "    model: gpt-4o\n"
        "    instructions: You help.\n"
        "    description: General help\n"
        "    suggested_prompts:\n"
        "      - Summarize our refund policy\n"
        "      - Draft a status update for the #deploys channel, short and friendly please\n"
    )
    await harness.start(ASSISTANTS_FILE=str(definitions))
    slack = harness.slack
    await slack.open_messages_tab(ALICE)
    dm = slack.dm_channel(ALICE)
    await slack.wait_for(lambda: bool(slack.suggested_prompts(dm)))
    prompts = slack.suggested_prompts(dm)[0]["prompts"]
    assert prompts[0] == {
        "title": "Summarize our refund policy",
        "message": "Summarize our refund policy",
    }
    assert prompts[1]["message"].startswith("Draft a status update") and len(prompts) == 2


async def test_a_dm_shows_thinking_while_the_turn_runs_and_clears_it_after(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    openai.model.gate = asyncio.Event()
    dm = slack.dm_channel(ALICE)
    ts = await slack.dm(ALICE, "a hard question")
    await slack.wait_for(lambda: slack.current_status(dm, ts) == "is thinking…")
    status_call = slack.calls_to("assistant.threads.setStatus")[0]
    assert len(status_call.args["loading_messages"]) >= 2
    openai.model.gate.set()
    await wait_answers(slack, dm, ts, 1)
    await bot.drain_idle()
    assert slack.current_status(dm, ts) == ""
    assert slack.statuses(dm, ts)[0] == "is thinking…"


async def test_a_long_turn_keeps_its_status_alive(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    assert bot.bot is not None
    surface = bot.bot.conversations.surface
    assert isinstance(surface, SlackSurface)
    surface.status_refresh = 0.05  # Slack drops a status after two minutes; the bot refreshes it
    openai.model.gate = asyncio.Event()
    dm = slack.dm_channel(ALICE)
    ts = await slack.dm(ALICE, "a very hard question")
    await slack.wait_for(lambda: slack.statuses(dm, ts).count("is thinking…") >= 3)
    openai.model.gate.set()
    await wait_answers(slack, dm, ts, 1)
    await bot.drain_idle()
    assert slack.current_status(dm, ts) == ""


async def test_the_status_line_names_the_tool_that_is_running(harness: Harness) -> None:
    await harness.start(TOOLS_MODULE="tests.tools_for_tests")
    slack = harness.slack
    tools_for_tests.weather_gate = gate = asyncio.Event()
    try:
        harness.openai.model.enqueue(
            Reply(tool_calls=[ToolCallSpec("get_weather", '{"city": "Rome"}')])
        )
        dm = slack.dm_channel(ALICE)
        ts = await slack.dm(ALICE, "weather in Rome?")
        await slack.wait_for(
            lambda: any(
                c.args.get("loading_messages") == ["Looking up the weather…"]
                for c in slack.calls_to("assistant.threads.setStatus")
            )
        )
        assert slack.current_status(dm, ts) == "is thinking…"
        gate.set()
        await wait_answers(slack, dm, ts, 1)
        await harness.drain_idle()
        assert slack.current_status(dm, ts) == ""
    finally:
        tools_for_tests.weather_gate = None


async def test_a_new_dm_conversation_is_titled_after_its_first_message(bot: Harness) -> None:
    slack = bot.slack
    dm = slack.dm_channel(ALICE)
    ts = await slack.dm(ALICE, "How do I rotate the API keys of our staging environment safely?")
    await wait_answers(slack, dm, ts, 1)
    assert slack.titles(dm, ts) == ["How do I rotate the API keys of our staging environment…"]
    await slack.dm(ALICE, "and production?", thread_ts=ts)
    await wait_answers(slack, dm, ts, 2)
    assert len(slack.titles(dm, ts)) == 1, "only the first message names the conversation"
    assert slack.titles(GENERAL, ts) == []


async def test_a_dm_tells_the_assistant_which_channel_the_person_is_looking_at(
    bot: Harness,
) -> None:
    slack = bot.slack
    dm = slack.dm_channel(ALICE)
    await slack.view_channel(ALICE, GENERAL)
    await bot.drain_idle()
    ts = await slack.dm(ALICE, "What is this channel for?")
    await wait_answers(slack, dm, ts, 1)
    assert last_text_the_model_read(bot) == "What is this channel for?\n\n" + context_note(GENERAL)
    assert slack.titles(dm, ts) == ["What is this channel for?"]

    mention = await slack.mention(ALICE, RANDOM, "and here?")
    await wait_answers(slack, RANDOM, mention, 1)
    assert last_text_the_model_read(bot) == "and here?", "only DMs get the note"

    await slack.view_channel(ALICE, None)
    await bot.drain_idle()
    later = await slack.dm(ALICE, "Anything new?")
    await wait_answers(slack, dm, later, 1)
    assert last_text_the_model_read(bot) == "Anything new?"


async def test_with_the_legacy_assistant_view_the_channel_in_view_follows_the_thread(
    legacy_bot: Harness,
) -> None:
    slack = legacy_bot.slack
    dm = slack.dm_channel(ALICE)
    thread = await slack.open_assistant_thread(ALICE, context_channel=GENERAL)
    await legacy_bot.drain_idle()
    await slack.dm(ALICE, "Summarize this", thread_ts=thread)
    await wait_answers(slack, dm, thread, 1)
    assert last_text_the_model_read(legacy_bot) == "Summarize this\n\n" + context_note(GENERAL)

    await slack.view_channel(ALICE, RANDOM)
    await legacy_bot.drain_idle()
    await slack.dm(ALICE, "And this one?", thread_ts=thread)
    await wait_answers(slack, dm, thread, 2)
    assert last_text_the_model_read(legacy_bot) == "And this one?\n\n" + context_note(RANDOM)


async def test_feedback_on_an_answer_is_recorded_and_acknowledged(bot: Harness) -> None:
    slack = bot.slack
    assert bot.bot is not None
    ts = await slack.mention(ALICE, GENERAL, "is this helpful?")
    answer = (await wait_answers(slack, GENERAL, ts, 1))[0]
    buttons = element(answer, FEEDBACK_ACTION)
    good, bad = buttons["positive_button"]["value"], buttons["negative_button"]["value"]

    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, answer.ts, FEEDBACK_ACTION, good)
    )
    await slack.wait_for(lambda: bool(slack.ephemerals(GENERAL, ALICE)))
    assert slack.ephemerals(GENERAL, ALICE) == ["Thanks for the feedback! Glad it helped."]
    await slack.interaction(
        slack.block_action_payload(BOB, GENERAL, answer.ts, FEEDBACK_ACTION, bad)
    )
    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, answer.ts, FEEDBACK_ACTION, bad)
    )
    await slack.wait_for(lambda: len(slack.ephemerals(GENERAL, ALICE)) == 2)
    feedback = await bot.bot.store.list_feedback()
    assert sorted((f.message_ts, f.user_id, f.rating) for f in feedback) == [
        (ts, ALICE, "bad"),
        (ts, BOB, "bad"),
    ], "one rating per person, the latest counts"
