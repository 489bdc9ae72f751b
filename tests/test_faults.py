"""Slack and the backend fail now and then, as real services do: every message still ends with
its whole answer or one plain failure message, never two, and nothing is left half-done."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.conftest import ALICE, GENERAL, Harness, answers, has_stop_button, wait_answers
from tests.emulators.common import (
    FAULT_KINDS,
    HTTP_500,
    HTTP_503,
    RATE_LIMITED,
    RESET_AFTER,
    RESET_BEFORE,
    STALL,
    Faults,
)
from tests.emulators.model import Reply
from tests.emulators.outcome import outcome
from tests.emulators.slack import Message

MENTIONS = 100
SEED = 12
SLACK_KINDS = [kind for kind in FAULT_KINDS if kind != STALL]  # Slack's Web API does not stream


def said(question: str) -> str:
    return f"You said: {question} (message 1 of this conversation)"


async def test_through_slack_and_backend_faults_each_message_gets_one_answer_or_one_plain_failure(
    harness: Harness,
) -> None:
    slack, backend = harness.slack, harness.openai
    backend.validate_spec = False  # a hundred turns: the spec checks would cost most of the time
    # A stream that sends nothing for a second has stalled.
    await harness.start(OPENAI_TIMEOUT_SECONDS="1")
    channels = [f"C0FAULT{i:02d}" for i in range(10)]
    for channel in channels:
        slack.add_channel(channel, channel.lower())
    # One Slack call in five fails; a call is never refused more than twice in a row (faults are
    # transient). One backend request in five fails, as often in a row as chance has it.
    slack.faults = Faults(seed=SEED, max_in_a_row=2, retry_after=0)
    slack.faults.add(0.2, SLACK_KINDS)
    backend.faults = Faults(seed=SEED, retry_after=0)
    backend.faults.add(0.2, FAULT_KINDS)

    asked: dict[str, tuple[str, str]] = {}

    async def ask(index: int) -> None:
        channel, question = channels[index % len(channels)], f"question {index}"
        asked[await slack.mention(ALICE, channel, question)] = (channel, question)

    await asyncio.gather(*(ask(index) for index in range(MENTIONS)))
    await harness.drain_idle()

    seen = {
        ts: outcome(slack.bot_replies(channel, ts), said(question))
        for ts, (channel, question) in asked.items()
    }
    verdicts = Counter(o.verdict for o in seen.values())
    assert set(verdicts) <= {"answered", "failed plainly"}, verdicts
    assert [ts for ts, o in seen.items() if o.duplicated] == []
    assert [ts for ts, o in seen.items() if o.thinking] == [], "Thinking… left behind"
    assert [ts for ts, o in seen.items() if o.open_streams] == [], "a stream left open"
    assert verdicts["answered"] >= MENTIONS // 2, verdicts
    assert set(slack.faults.counts()) == set(SLACK_KINDS)
    assert set(backend.faults.counts()) == set(FAULT_KINDS)

    # The bot lived through it: once the faults pass, the next message is answered as usual.
    slack.faults.clear()
    backend.faults.clear()
    ts = await slack.mention(ALICE, GENERAL, "still there?")
    [answer] = await wait_answers(slack, GENERAL, ts, 1)
    assert answer.text.startswith(said("still there?"))


async def settled(bot: Harness, ts: str) -> list[Message]:
    """The thread's answers once the bot is done with it (a rewrite may follow the first one)."""
    await wait_answers(bot.slack, GENERAL, ts, 1)
    await bot.drain_idle()
    return answers(bot.slack, GENERAL, ts)


def one_fault(emulator_faults: Faults, kind: str, pattern: str) -> None:
    """The first call matching `pattern` (in each thread) fails with `kind`; its retry does not."""
    emulator_faults.max_in_a_row = 1
    emulator_faults.add(1.0, [kind], pattern)


async def test_a_placeholder_whose_answer_slack_lost_is_not_posted_twice(bot: Harness) -> None:
    slack = bot.slack
    one_fault(slack.faults, RESET_AFTER, "chat.postMessage")
    ts = await slack.mention(ALICE, GENERAL, "hello")
    [answer] = await settled(bot, ts)
    assert answer.text.startswith(said("hello"))
    assert slack.bot_replies(GENERAL, ts) == [answer], "one placeholder, gone; one answer"
    assert len(slack.calls_to("chat.postMessage")) == 1


async def test_a_stream_whose_start_slack_lost_is_not_started_twice(bot: Harness) -> None:
    slack = bot.slack
    one_fault(slack.faults, RESET_AFTER, "chat.startStream")
    ts = await slack.mention(ALICE, GENERAL, "hello")
    [answer] = await settled(bot, ts)
    assert answer.text.startswith(said("hello"))
    assert slack.bot_replies(GENERAL, ts) == [answer]
    assert len(slack.calls_to("chat.startStream")) == 1


async def test_text_whose_append_slack_lost_is_written_anew_not_twice(bot: Harness) -> None:
    slack = bot.slack
    text = " ".join(f"word{n}" for n in range(200))
    bot.openai.model.chunk_size, bot.openai.model.chunk_delay = 40, 0.01
    bot.openai.model.enqueue(Reply(text=text))
    one_fault(slack.faults, RESET_AFTER, "chat.appendStream")
    ts = await slack.mention(ALICE, GENERAL, "a long one")
    [answer] = await settled(bot, ts)
    assert answer.text == text  # no piece shown twice
    assert [m.streaming for m in slack.bot_replies(GENERAL, ts)] == [False]


async def test_slack_errors_and_rate_limits_are_retried_without_anyone_noticing(
    bot: Harness,
) -> None:
    slack = bot.slack
    slack.faults = Faults(seed=SEED, max_in_a_row=1, retry_after=0)
    slack.faults.add(1.0, [HTTP_500, HTTP_503, RATE_LIMITED, RESET_BEFORE])
    ts = await slack.mention(ALICE, GENERAL, "hello")
    [answer] = await settled(bot, ts)
    assert answer.text.startswith(said("hello"))
    assert slack.bot_replies(GENERAL, ts) == [answer]
    assert len(slack.faults.injected) >= 4


async def test_a_placeholder_slack_will_not_delete_stops_saying_thinking(
    harness: Harness,
) -> None:
    await harness.start(SLACK_RETRIES="1")
    slack = harness.slack
    slack.fail_next("chat.delete", "internal_error", times=20, status=500)
    ts = await slack.mention(ALICE, GENERAL, "hello")
    await settled(harness, ts)
    placeholder, answer = slack.bot_replies(GENERAL, ts)
    assert placeholder.text == "_(The answer follows below.)_"
    assert not has_stop_button(placeholder)
    assert answer.text.startswith(said("hello"))


async def test_a_stalled_answer_ends_in_plain_words_and_the_thread_goes_on(
    harness: Harness,
) -> None:
    await harness.start(OPENAI_TIMEOUT_SECONDS="1")
    slack = harness.slack
    streams = "POST /v1/threads/*/runs" if harness.engine == "assistants" else "POST /v1/responses"
    one_fault(harness.openai.faults, STALL, streams)
    ts = await slack.mention(ALICE, GENERAL, "hello")
    [failed] = await wait_answers(slack, GENERAL, ts, 1)
    assert failed.text.startswith(":warning: The assistant took too long to answer")
    harness.openai.faults.clear()
    await slack.post(ALICE, GENERAL, "again", thread_ts=ts)
    answered = await wait_answers(slack, GENERAL, ts, 2)
    assert answered[-1].text.startswith("You said: again")
    await harness.drain_idle()
    assert [m.streaming for m in slack.bot_replies(GENERAL, ts)] == [False, False]
