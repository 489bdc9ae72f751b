"""When the backend fails, the thread says so in plain words and the next message works."""

from __future__ import annotations

import pytest

from tests.conftest import ALICE, GENERAL, Harness, wait_answers
from tests.emulators.model import Reply


async def ask_twice_after(bot: Harness, first_reply: Reply | None = None) -> list[str]:
    """Mention the bot (the model answering `first_reply`), then follow up in the thread."""
    slack = bot.slack
    if first_reply is not None:
        bot.openai.model.enqueue(first_reply)
    ts = await slack.mention(ALICE, GENERAL, "first question")
    await wait_answers(slack, GENERAL, ts, 1)
    await slack.post(ALICE, GENERAL, "second question", thread_ts=ts)
    replies = await wait_answers(slack, GENERAL, ts, 2)
    assert bot.backend_conversations() == 1
    return [m.text for m in replies]


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (Reply(fail=("server_error", "boom")), "had an internal error"),
        (Reply(fail=("rate_limit_exceeded", "slow down")), "rate limited"),
        (Reply(expire=True), "run expired|had an internal error"),
        (Reply(stream_cut=True, text="Half an ans"), "cut off"),
    ],
    ids=["run-failed", "run-rate-limited", "run-expired", "stream-cut"],
)
async def test_a_failed_run_is_explained_and_the_thread_goes_on(
    bot: Harness, reply: Reply, words: str
) -> None:
    first, second = await ask_twice_after(bot, reply)
    # Whatever part of the answer was already shown stays; the warning follows it.
    assert ":warning:" in first and any(w in first for w in words.split("|"))
    assert first.startswith(":warning:") or first.startswith("Half an")
    assert "next message in this thread will work" in first
    assert second.startswith("You said: second question (message ")


async def test_an_incomplete_answer_is_shown_with_a_note(bot: Harness) -> None:
    first, second = await ask_twice_after(
        bot, Reply(text="The first half", incomplete="max_completion_tokens")
    )
    assert first.startswith("The first half")
    assert "incomplete: the answer reached its length limit" in first
    assert second.startswith("You said: second question")


async def test_rate_limits_that_outlast_the_retries_are_explained(bot: Harness) -> None:
    bot.openai.fail_next(bot.conversation_path, 429, times=3, retry_after=0)
    first, second = await ask_twice_after(bot)
    assert "rate limited" in first
    assert second.startswith("You said: second question")


async def test_a_single_rate_limit_is_retried_without_the_person_noticing(bot: Harness) -> None:
    bot.openai.fail_next(bot.conversation_path, 429, times=1, retry_after=0)
    slack = bot.slack
    ts = await slack.mention(ALICE, GENERAL, "hello")
    replies = await wait_answers(slack, GENERAL, ts, 1)
    assert replies[0].text == "You said: hello (message 1 of this conversation)"


async def test_server_errors_that_outlast_the_retries_are_explained(bot: Harness) -> None:
    bot.openai.fail_next(bot.conversation_path, 500, times=3, retry_after=0)
    first, second = await ask_twice_after(bot)
    # In plain words: no status code, no backend message.
    assert first == (
        ":warning: The assistant service had an internal error while answering. "
        "Your next message in this thread will work as usual."
    )
    assert second.startswith("You said: second question")


async def test_a_turn_that_takes_too_long_is_stopped_and_the_thread_goes_on(
    harness: Harness,
) -> None:
    await harness.start(TURN_TIMEOUT_SECONDS="1")
    harness.openai.model.enqueue(Reply(text="too late", latency=30))
    first, second = await ask_twice_after(harness)
    assert "took too long" in first
    assert second.startswith("You said: second question")
    if harness.engine == "assistants":
        statuses = [run.status for run in harness.openai.runs.values()]
        assert statuses.count("cancelled") == 1, "the stuck run was cancelled to free the thread"


async def test_a_backend_silent_for_longer_than_openai_timeout_is_given_up_on(
    harness: Harness,
) -> None:
    await harness.start(OPENAI_TIMEOUT_SECONDS="1", TURN_TIMEOUT_SECONDS="120")
    harness.openai.model.enqueue(Reply(text="too late", latency=30))
    first, second = await ask_twice_after(harness)
    assert "took too long" in first, "given up on after 1 s of silence, not 120 s"
    assert second.startswith("You said: second question")


async def test_a_network_failure_is_explained_and_the_thread_goes_on(bot: Harness) -> None:
    bot.openai.fail_next(bot.conversation_path, 0, times=3)
    first, second = await ask_twice_after(bot)
    assert "could not reach the assistant service" in first
    assert second.startswith("You said: second question")
