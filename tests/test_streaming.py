"""Answers appear in Slack while they are written, with few Slack calls, and survive Slack's limits."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from bot.slack.blocks import FEEDBACK_ACTION, STOP_ACTION
from tests.conftest import ALICE, BOB, GENERAL, Harness, answers, has_stop_button, wait_answers
from tests.emulators.model import Reply
from tests.emulators.slack import Message, SlackEmulator

ANSWER_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream", "chat.update")


def long_words(count: int) -> str:
    return " ".join(f"word{n}" for n in range(count))


def slowly(bot: Harness, text: str, chunk_size: int = 5, chunk_delay: float = 0.002) -> int:
    """The model writes `text` in small, paced deltas; returns how many."""
    bot.openai.model.chunk_size = chunk_size
    bot.openai.model.chunk_delay = chunk_delay
    bot.openai.model.enqueue(Reply(text=text))
    return -(-len(text) // chunk_size)


def answer_calls(slack: SlackEmulator) -> int:
    return sum(len(slack.calls_to(method)) for method in ANSWER_METHODS)


def element(message: Message, action_id: str) -> dict[str, Any]:
    return next(
        e
        for block in message.blocks
        for e in block.get("elements") or []
        if isinstance(e, dict) and e.get("action_id") == action_id
    )


def has_feedback_buttons(message: Message) -> bool:
    return any(block["type"] == "context_actions" for block in message.blocks) and bool(
        element(message, FEEDBACK_ACTION)
    )


async def test_an_answer_streams_into_the_thread_in_few_slack_calls(bot: Harness) -> None:
    slack = bot.slack
    text = long_words(300)
    deltas = slowly(bot, text)
    ts = await slack.mention(ALICE, GENERAL, "tell me a long story")

    await slack.wait_for(
        lambda: any(m.streaming and m.text for m in slack.bot_replies(GENERAL, ts))
    )
    partial = next(m for m in slack.bot_replies(GENERAL, ts) if m.streaming)
    assert text.startswith(partial.text) and len(partial.text) < len(text), "shown while written"

    answer = await wait_answers(slack, GENERAL, ts, 1)
    assert answer[0].text == text
    assert has_feedback_buttons(answer[0])
    assert answer_calls(slack) < deltas / 10, "updates are coalesced, not one per delta"
    await bot.drain_idle()
    assert slack.bot_replies(GENERAL, ts) == answer, "the placeholder made way for the answer"


async def test_where_slack_refuses_streaming_the_placeholder_is_edited_instead(
    bot: Harness,
) -> None:
    slack = bot.slack
    slack.refuse_streaming = True
    text = long_words(300)
    deltas = slowly(bot, text)
    ts = await slack.mention(ALICE, GENERAL, "tell me a long story")
    placeholder = (await _first_bot_reply(slack, ts)).ts

    await slack.wait_for(
        lambda: any(
            has_stop_button(m) and "word0" in m.text for m in slack.bot_replies(GENERAL, ts)
        )
    )
    answer = await wait_answers(slack, GENERAL, ts, 1)
    assert answer[0].text == text and answer[0].ts == placeholder
    assert has_feedback_buttons(answer[0])
    assert len(slack.calls_to("chat.update")) < deltas / 10

    await slack.post(ALICE, GENERAL, "and another", thread_ts=ts)
    await wait_answers(slack, GENERAL, ts, 2)
    assert len(slack.calls_to("chat.startStream")) == 1, "the bot stops asking once refused"


async def test_a_stream_that_expires_mid_answer_is_finished_by_editing(bot: Harness) -> None:
    slack = bot.slack
    text = long_words(300)
    slowly(bot, text)
    ts = await slack.mention(ALICE, GENERAL, "tell me a long story")
    await slack.wait_for(
        lambda: any(m.streaming and m.text for m in slack.bot_replies(GENERAL, ts))
    )
    slack.expire_streams()

    await slack.wait_for(lambda: [m.text for m in answers(slack, GENERAL, ts)] == [text])
    await bot.drain_idle()
    replies = slack.bot_replies(GENERAL, ts)
    assert [m.text for m in replies] == [text], "one message, nothing lost"
    assert has_feedback_buttons(replies[0])


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "edited"])
async def test_an_answer_past_12000_characters_continues_in_well_formed_messages(
    bot: Harness, streaming: bool
) -> None:
    slack = bot.slack
    slack.refuse_streaming = not streaming
    code = "\n".join(f"print({n})  # a line of code" for n in range(300))
    text = long_words(1700) + "\n\n```python\n" + code + "\n```\n\n" + long_words(300)
    assert len(text) > 24_000, len(text)
    slowly(bot, text, chunk_size=400, chunk_delay=0)
    ts = await slack.mention(ALICE, GENERAL, "everything, please")
    await slack.wait_for(lambda: sum(len(m.text) for m in answers(slack, GENERAL, ts)) > 24_000)
    await bot.drain_idle()
    replies = answers(slack, GENERAL, ts)
    assert len(replies) >= 3 and all(len(m.text) <= 12_000 for m in replies)
    assert all(m.text.count("```") % 2 == 0 for m in replies), "code fences closed per message"
    words = " ".join(m.text.replace("```python", "").replace("```", "") for m in replies).split()
    assert words == text.replace("```python", "").replace("```", "").split(), "nothing lost"
    assert [has_feedback_buttons(m) for m in replies] == [False] * (len(replies) - 1) + [True]


async def test_stop_cancels_the_answer_being_written_and_the_thread_goes_on(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    text = long_words(3000)
    slowly(bot, text, chunk_delay=0.01)
    ts = await slack.mention(ALICE, GENERAL, "tell me everything")
    await slack.wait_for(
        lambda: any(m.streaming and m.text for m in slack.bot_replies(GENERAL, ts))
    )
    control = next(m for m in slack.bot_replies(GENERAL, ts) if has_stop_button(m))
    stop = element(control, STOP_ACTION)["value"]

    await slack.interaction(slack.block_action_payload(BOB, GENERAL, control.ts, STOP_ACTION, stop))
    await slack.wait_for(lambda: bool(slack.ephemerals(GENERAL, BOB)))
    assert "Only <@U0ALICE>, who asked, can stop this answer." in slack.ephemerals(GENERAL, BOB)

    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, control.ts, STOP_ACTION, stop)
    )
    stopped = (await wait_answers(slack, GENERAL, ts, 1))[0]
    assert stopped.text.endswith("\n\n_Stopped._")
    assert text.startswith(stopped.text.removesuffix("\n\n_Stopped._"))
    assert not has_feedback_buttons(stopped)
    await bot.drain_idle()
    assert any(r.path.endswith("/cancel") for r in openai.requests), "the backend run is cancelled"
    statuses = await bot.bot.store.turn_statuses(_key(ts)) if bot.bot else []
    assert statuses == [(ts, "stopped")]

    openai.model.chunk_delay = 0
    await slack.post(ALICE, GENERAL, "a short one then", thread_ts=ts)
    both = await wait_answers(slack, GENERAL, ts, 2)
    assert both[1].text.startswith("You said: a short one then")


async def test_stop_on_a_waiting_message_skips_it(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    openai.model.gate = asyncio.Event()
    ts = await slack.mention(ALICE, GENERAL, "first")
    second = await slack.post(ALICE, GENERAL, "second", thread_ts=ts)
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, ts)) == 2)
    waiting = slack.bot_replies(GENERAL, ts)[1]
    stop = element(waiting, STOP_ACTION)["value"]
    assert second in stop

    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, waiting.ts, STOP_ACTION, stop)
    )
    await slack.wait_for(lambda: slack.message(GENERAL, waiting.ts).text == "_Stopped._")  # type: ignore[union-attr]
    openai.model.gate.set()
    first = await wait_answers(slack, GENERAL, ts, 2)
    assert [m.text for m in first] == [
        "_Stopped._",
        "You said: first (message 1 of this conversation)",
    ]
    await bot.drain_idle()
    assert len(openai.model.turns) == 1, "the stopped message never reached the assistant"

    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, waiting.ts, STOP_ACTION, stop)
    )
    await slack.wait_for(lambda: bool(slack.ephemerals(GENERAL, ALICE)))
    assert slack.ephemerals(GENERAL, ALICE) == ["That answer has already finished."]


async def _first_bot_reply(slack: SlackEmulator, ts: str) -> Message:
    await slack.wait_for(lambda: bool(slack.bot_replies(GENERAL, ts)))
    return slack.bot_replies(GENERAL, ts)[0]


def _key(ts: str) -> Any:
    from bot.messages import ConversationKey

    return ConversationKey(SlackEmulator.team_id, GENERAL, ts)


async def test_an_answer_that_repeats_a_broadcast_mention_notifies_nobody(bot: Harness) -> None:
    slack = bot.slack
    slowly(bot, "Sure! <!channel> <!here|here>, <!subteam^S0OPS|@ops> and @everyone: ask <@U0BOB>.")
    ts = await slack.mention(ALICE, GENERAL, "say hi to everyone")
    [answer] = await wait_answers(slack, GENERAL, ts, 1)
    # It reads the same (an invisible joiner follows each @), and the person mention stays live.
    joiner = "\u2060"
    assert answer.text == (
        f"Sure! @{joiner}channel @{joiner}here, @{joiner}ops and @{joiner}everyone: ask <@U0BOB>."
    )
    sent = json.dumps([call.args for call in slack.calls], ensure_ascii=False)
    assert not re.search(
        r"<!(channel|here|everyone|subteam)|(?<![\w@])@(channel|here|everyone)", sent
    )
