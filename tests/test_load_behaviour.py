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
