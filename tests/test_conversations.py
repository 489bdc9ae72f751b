"""A person talks to the bot in Slack: mentions, thread replies, DMs, order, no duplicates.

Each runs on SQLite and on PostgreSQL: the store must not change what a person sees."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import (
    ALICE,
    BOB,
    BOTH_DATABASES,
    GENERAL,
    Harness,
    answers,
    texts,
    wait_answers,
)
from tests.emulators.model import Reply

pytestmark = pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_mention_in_a_channel_is_answered_in_its_thread_and_a_reply_continues_it(
    harness: Harness, mode: str
) -> None:
    harness.mode = mode
    await harness.start()
    slack = harness.slack

    ts = await slack.mention(ALICE, GENERAL, "what is our refund policy?")
    first = await wait_answers(slack, GENERAL, ts, 1)
    assert texts(first) == ["You said: what is our refund policy? (message 1 of this conversation)"]

    await slack.post(ALICE, GENERAL, "and for digital goods?", thread_ts=ts)
    both = await wait_answers(slack, GENERAL, ts, 2)
    assert both[1].text == "You said: and for digital goods? (message 2 of this conversation)"
    assert harness.backend_conversations() == 1, "one Slack thread is one backend thread"
    # The mention arrived twice (app_mention and message): still one answer per message.
    assert len(answers(slack, GENERAL, ts)) == 2
    assert slack.channel_messages(GENERAL)[0].ts == ts, "answers stay in the thread"


async def test_a_sign_of_life_shows_before_the_model_finishes(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    openai.model.gate = asyncio.Event()
    ts = await slack.mention(ALICE, GENERAL, "slow question")
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, ts)) == 1)
    assert answers(slack, GENERAL, ts) == [], "only the placeholder while the model works"
    openai.model.gate.set()
    assert texts(await wait_answers(slack, GENERAL, ts, 1))[0].startswith("You said: slow")


async def test_mention_inside_a_thread_the_bot_has_not_joined_starts_a_conversation_there(
    bot: Harness,
) -> None:
    slack = bot.slack
    root = await slack.post(BOB, GENERAL, "the deploy failed again")
    await slack.post(ALICE, GENERAL, "any idea why?", thread_ts=root)
    await slack.mention(ALICE, GENERAL, "can you explain the error?", thread_ts=root)
    first = await wait_answers(slack, GENERAL, root, 1)
    assert first[0].text.startswith("You said: can you explain the error?")

    await slack.post(BOB, GENERAL, "thanks, and how do we fix it?", thread_ts=root)
    both = await wait_answers(slack, GENERAL, root, 2)
    assert "message 2 of this conversation" in both[1].text


async def test_thread_replies_without_the_bot_are_left_alone(bot: Harness) -> None:
    slack = bot.slack
    root = await slack.post(BOB, GENERAL, "lunch?")
    await slack.post(ALICE, GENERAL, "yes", thread_ts=root)
    answered = await slack.mention(ALICE, GENERAL, "ping")
    await wait_answers(slack, GENERAL, answered, 1)
    assert slack.bot_replies(GENERAL, root) == []
    assert bot.openai.model.turns and len(bot.openai.model.turns) == 1


async def test_a_direct_message_is_answered_in_its_thread_and_replies_continue_it(
    bot: Harness,
) -> None:
    slack = bot.slack
    dm = slack.dm_channel(ALICE)
    ts = await slack.dm(ALICE, "hello there")
    first = await wait_answers(slack, dm, ts, 1)
    assert first[0].text == "You said: hello there (message 1 of this conversation)"

    await slack.dm(ALICE, "tell me more", thread_ts=ts)
    both = await wait_answers(slack, dm, ts, 2)
    assert both[1].text == "You said: tell me more (message 2 of this conversation)"

    other = await slack.dm(ALICE, "a new topic")
    third = await wait_answers(slack, dm, other, 1)
    assert "message 1 of this conversation" in third[0].text
    assert bot.backend_conversations() == 2


async def test_five_messages_while_the_assistant_works_are_all_answered_in_order(
    bot: Harness,
) -> None:
    slack, openai = bot.slack, bot.openai
    openai.model.latency = 0.3
    ts = await slack.mention(ALICE, GENERAL, "question 1")
    for n in range(2, 6):
        await slack.post(ALICE, GENERAL, f"question {n}", thread_ts=ts)
    replies = await wait_answers(slack, GENERAL, ts, 5)
    assert texts(replies) == [
        f"You said: question {n} (message {n} of this conversation)" for n in range(1, 6)
    ]
    assert bot.backend_conversations() == 1


async def test_the_same_event_delivered_three_times_is_answered_once(bot: Harness) -> None:
    slack = bot.slack
    ts = slack.next_ts()
    event = slack.message_event(ALICE, GENERAL, f"<@{slack.bot_user_id}> hi", ts=ts)
    event["type"] = "app_mention"
    deliveries = [
        await slack.deliver(event, event_id="EvRETRY1"),
        await slack.deliver(event, event_id="EvRETRY1", retry_num=1, retry_reason="http_timeout"),
        await slack.deliver(event, event_id="EvRETRY1", retry_num=2, retry_reason="http_timeout"),
    ]
    assert [d.status for d in deliveries] == [200, 200, 200]
    await wait_answers(slack, GENERAL, ts, 1)
    await bot.drain_idle()
    assert len(slack.bot_replies(GENERAL, ts)) == 1
    assert bot.backend_runs() == 1


async def test_a_retry_after_a_restart_is_still_answered_once(bot: Harness) -> None:
    slack = bot.slack
    ts = await slack.mention(ALICE, GENERAL, "remember me")
    await wait_answers(slack, GENERAL, ts, 1)
    await bot.restart()
    event = slack.message_event(ALICE, GENERAL, f"<@{slack.bot_user_id}> remember me", ts=ts)
    event["type"] = "app_mention"
    delivery = await slack.deliver(event, retry_num=3, retry_reason="http_error")
    assert delivery.status == 200
    await bot.drain_idle()
    assert len(slack.bot_replies(GENERAL, ts)) == 1


async def test_a_restart_keeps_every_conversation(bot: Harness) -> None:
    slack = bot.slack
    ts = await slack.mention(ALICE, GENERAL, "first")
    await wait_answers(slack, GENERAL, ts, 1)
    await bot.restart()
    await slack.post(ALICE, GENERAL, "second", thread_ts=ts)
    replies = await wait_answers(slack, GENERAL, ts, 2)
    assert replies[1].text == "You said: second (message 2 of this conversation)"
    assert bot.backend_conversations() == 1


async def test_the_bot_ignores_itself_other_bots_edits_deletions_and_joins(bot: Harness) -> None:
    slack = bot.slack
    ts = await slack.mention(ALICE, GENERAL, "start")
    await wait_answers(slack, GENERAL, ts, 1)
    mention = f"<@{slack.bot_user_id}> hello"
    ignored = [
        slack.message_event(slack.bot_user_id, GENERAL, "my own words", thread_ts=ts)
        | {"bot_id": slack.bot_id},
        slack.message_event("U0OTHERBOT", GENERAL, mention, thread_ts=ts)
        | {"bot_id": "B0OTHER", "subtype": "bot_message"},
        slack.message_event("U0OTHERBOT", GENERAL, mention, thread_ts=ts) | {"bot_id": "B0OTHER"},
        slack.edit_event(ALICE, GENERAL, ts, mention),
        slack.delete_event(GENERAL, ts),
        slack.message_event(BOB, GENERAL, f"<@{BOB}> has joined the channel")
        | {"subtype": "channel_join"},
    ]
    for event in ignored:
        assert (await slack.deliver(event)).status == 200
    await bot.drain_idle()
    assert len(slack.calls_to("chat.postMessage")) == 1, "only the answer to the first mention"
    assert len(bot.openai.model.turns) == 1


async def test_other_bots_are_answered_when_configured(harness: Harness) -> None:
    await harness.start(ANSWER_BOTS="true")
    slack = harness.slack
    ts = slack.next_ts()
    event = slack.message_event(
        "U0OTHERBOT", GENERAL, f"<@{slack.bot_user_id}> status report", ts=ts
    ) | {"bot_id": "B0OTHER"}
    await slack.deliver(event)
    replies = await wait_answers(slack, GENERAL, ts, 1)
    assert replies[0].text.startswith("You said: status report")


async def test_an_empty_mention_gets_a_private_hint_instead_of_an_answer(bot: Harness) -> None:
    slack = bot.slack
    ts = await slack.mention(ALICE, GENERAL, "")
    await slack.wait_for(lambda: bool(slack.ephemerals(GENERAL, ALICE)))
    assert "Write your question after the mention" in slack.ephemerals(GENERAL, ALICE)[0]
    await bot.drain_idle()
    assert slack.bot_replies(GENERAL, ts) == []


async def test_a_long_answer_is_split_into_several_messages_without_losing_a_word(
    bot: Harness,
) -> None:
    slack, openai = bot.slack, bot.openai
    paragraphs = [f"Paragraph {n}: " + "word " * 300 for n in range(12)]
    long_text = "\n\n".join(p.strip() for p in paragraphs)
    assert len(long_text) > 12_000
    openai.model.chunk_size = 2000
    openai.model.enqueue(Reply(text=long_text))
    ts = await slack.mention(ALICE, GENERAL, "tell me everything")
    await slack.wait_for(
        lambda: sum(len(m.text) for m in answers(slack, GENERAL, ts)) >= len(long_text) - 20
    )
    replies = answers(slack, GENERAL, ts)
    assert len(replies) == 2
    assert all(len(m.text) <= 12_000 for m in replies)
    assert "\n\n".join(texts(replies)) == long_text


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_once_the_bot_is_idle_every_message_delivered_so_far_is_answered(
    harness: Harness, mode: str
) -> None:
    """What the tests that check that nothing happened rely on: idle means done, not early."""
    harness.mode = mode
    await harness.start()
    slack = harness.slack
    first = await slack.mention(ALICE, GENERAL, "one")
    second = await slack.mention(BOB, GENERAL, "two")
    await harness.drain_idle()
    assert texts(answers(slack, GENERAL, first)) == [
        "You said: one (message 1 of this conversation)"
    ]
    assert texts(answers(slack, GENERAL, second)) == [
        "You said: two (message 1 of this conversation)"
    ]
