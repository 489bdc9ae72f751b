"""Behaviour the speed work must keep: pooled connections, no wasted calls, fair queueing."""

from __future__ import annotations

import asyncio

from tests.conftest import ALICE, GENERAL, Harness, answers, wait_answers


async def test_an_unreachable_assistant_service_is_explained_as_such(bot: Harness) -> None:
    await bot.openai.stop()  # connections are refused from now on
    ts = await bot.slack.mention(ALICE, GENERAL, "anyone there?")
    replies = await wait_answers(bot.slack, GENERAL, ts, 1, timeout=30)
    assert replies[0].text.startswith(":warning: I could not reach the assistant service.")


async def test_a_finished_answer_is_never_cancelled(bot: Harness) -> None:
    ts = await bot.slack.mention(ALICE, GENERAL, "hello")
    await wait_answers(bot.slack, GENERAL, ts, 1)
    await bot.drain_idle()
    assert [r.path for r in bot.openai.requests if r.path.endswith("/cancel")] == []


async def test_many_threads_at_once_each_get_one_answer_over_shared_connections(
    bot: Harness,
) -> None:
    bot.openai.model.latency = 0.2
    threads = await asyncio.gather(
        *(bot.slack.mention(ALICE, GENERAL, f"question {i}") for i in range(30))
    )
    await bot.slack.wait_for(lambda: all(answers(bot.slack, GENERAL, ts) for ts in threads), 30)
    await bot.drain_idle()
    for i, ts in enumerate(threads):
        [answer] = answers(bot.slack, GENERAL, ts)
        assert answer.text.startswith(f"You said: question {i} ")


async def test_messages_taken_out_of_order_still_read_in_order_in_the_thread(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    openai.model.gate = asyncio.Event()
    ts = await slack.mention(ALICE, GENERAL, "question 1")
    second = slack.message_event(ALICE, GENERAL, "question 2", thread_ts=ts)
    third = slack.message_event(ALICE, GENERAL, "question 3", thread_ts=ts)
    await slack.deliver(third)  # its event overtook the earlier message's
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, ts)) == 2)
    await slack.deliver(second)
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, ts)) == 3)
    openai.model.gate.set()
    replies = await wait_answers(slack, GENERAL, ts, 3)
    assert [m.text for m in replies] == [
        f"You said: question {n} (message {n} of this conversation)" for n in (1, 2, 3)
    ]


async def test_after_a_restart_waiting_messages_taken_out_of_order_are_answered_in_order(
    harness: Harness,
) -> None:
    slack, openai = harness.slack, harness.openai
    openai.model.gate = asyncio.Event()
    await harness.start(SHUTDOWN_GRACE_SECONDS="0.2")
    ts = await slack.mention(ALICE, GENERAL, "one")
    second = slack.message_event(ALICE, GENERAL, "two", thread_ts=ts)
    third = slack.message_event(ALICE, GENERAL, "three", thread_ts=ts)
    await slack.deliver(third)
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, ts)) == 2)
    await slack.deliver(second)
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, ts)) == 3)
    await harness.stop()

    openai.model.gate.set()
    await harness.start()
    await slack.wait_for(
        lambda: sum(m.text.startswith("You said") for m in slack.bot_replies(GENERAL, ts)) == 2
    )
    answered = [m.text for m in slack.bot_replies(GENERAL, ts) if m.text.startswith("You said")]
    assert answered[0].startswith("You said: two ") and answered[1].startswith("You said: three ")
    assert [turn.user_texts[-1] for turn in openai.model.turns][-2:] == ["two", "three"]
