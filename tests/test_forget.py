"""Forget this conversation: what the backend holds for a thread goes, and the thread starts afresh;
old message texts go after TEXT_RETENTION_DAYS while the usage figures stay."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from bot.__main__ import forget_thread
from bot.governance.forget import erase_old_texts
from bot.messages import ConversationKey
from bot.store import Store
from bot.store.schema import turns
from tests.conftest import ALICE, BOB, BOTH_DATABASES, GENERAL, Harness, wait_answers
from tests.emulators.slack import SlackEmulator
from tests.test_files import pdf

CAROL = "U0CAROL"


async def use_forget_shortcut(slack: SlackEmulator, user: str, ts: str) -> dict[str, Any] | None:
    """`user` picks "Forget this conversation" on a message: the confirmation that opens (None
    when the bot answered privately instead)."""
    opened, told = len(slack.calls_to("views.open")), len(slack.ephemerals(GENERAL, user))
    payload = slack.message_shortcut_payload(user, GENERAL, ts, "forget_conversation")
    delivery = await slack.interaction(payload)
    assert delivery.status == 200 and not delivery.timed_out
    await slack.wait_for(
        lambda: (
            len(slack.calls_to("views.open")) > opened
            or len(slack.ephemerals(GENERAL, user)) > told
        )
    )
    if len(slack.calls_to("views.open")) == opened:
        return None
    return next(
        v
        for v in reversed(slack.views.values())
        if v["callback_id"] == "forget_conversation_confirm"
    )


async def confirm(slack: SlackEmulator, user: str, view: dict[str, Any]) -> None:
    payload = slack.view_submission_payload(
        user, view["id"], view["callback_id"], {}, private_metadata=view["private_metadata"]
    )
    delivery = await slack.interaction(payload)
    assert delivery.status == 200 and not delivery.timed_out


def backend_holds(harness: Harness, conversation_id: str) -> list[str]:
    """What the OpenAI emulator still holds of a conversation: its own record, its messages or
    items, and (Responses) the stored responses that ran in it."""
    held = []
    if harness.engine == "assistants":
        if conversation_id in harness.openai.threads:
            held.append("thread")
        if harness.openai.messages.get(conversation_id):
            held.append("messages")
        return held
    state = harness.openai.responses_api
    if conversation_id in state.conversations:
        held.append("conversation")
    if state.conversation_items.get(conversation_id):
        held.append("items")
    if any(r.stored and r.conversation_id == conversation_id for r in state.responses.values()):
        held.append("stored responses")
    return held


@pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)
async def test_forgetting_deletes_what_the_backend_holds_for_the_thread_and_the_next_message_starts_afresh(
    bot: Harness,
) -> None:
    slack, openai = bot.slack, bot.openai
    root = await slack.mention(ALICE, GENERAL, "summarise this", files=[pdf(slack)])
    await wait_answers(slack, GENERAL, root, 1)
    await slack.post(BOB, GENERAL, "and the refunds?", thread_ts=root)
    await wait_answers(slack, GENERAL, root, 2)
    await bot.drain_idle()
    assert bot.bot is not None
    key = ConversationKey(slack.team_id, GENERAL, root)
    record = await bot.bot.store.get_conversation(key)
    assert record is not None and backend_holds(bot, record.backend_id)
    assert openai.vector_stores and openai.files

    view = await use_forget_shortcut(slack, BOB, root)
    assert view is not None and view["title"]["text"] == "Forget conversation"
    await confirm(slack, BOB, view)
    await slack.wait_for(lambda: "forgotten" in slack.bot_replies(GENERAL, root)[-1].text)
    assert slack.bot_replies(GENERAL, root)[-1].text.startswith(
        "<@U0BOB> had this conversation forgotten"
    )
    assert backend_holds(bot, record.backend_id) == []
    assert openai.vector_stores == {} and openai.files == {}
    entries = await bot.bot.store.audit_entries(0)
    forgotten = [(e.actor, e.detail) for e in entries if e.action == "conversation_forgotten"]
    assert forgotten == [(BOB, {"channel": GENERAL, "thread": root, "files": 1})]

    await slack.post(ALICE, GENERAL, "what did I ask you?", thread_ts=root)
    third = (await wait_answers(slack, GENERAL, root, 4))[-1]
    assert third.text == "You said: what did I ask you? (message 1 of this conversation)"
    assert bot.backend_conversations() == 1


async def test_someone_who_did_not_write_in_the_thread_cannot_forget_it_but_an_admin_can(
    harness: Harness,
) -> None:
    await harness.start(ASSISTANT_ADMINS=CAROL)
    slack = harness.slack
    slack.add_user(CAROL, "carol")
    root = await slack.mention(ALICE, GENERAL, "remember this")
    await wait_answers(slack, GENERAL, root, 1)

    assert await use_forget_shortcut(slack, BOB, root) is None
    assert slack.ephemerals(GENERAL, BOB)[-1] == (
        "Only the people who wrote to the assistant in this thread and the bot's admins "
        "(<@U0CAROL>) can forget it."
    )
    assert not any("forgotten" in m.text for m in slack.bot_replies(GENERAL, root))

    view = await use_forget_shortcut(slack, CAROL, root)
    assert view is not None
    await confirm(slack, CAROL, view)
    await slack.wait_for(lambda: "forgotten" in slack.bot_replies(GENERAL, root)[-1].text)


async def test_a_thread_the_bot_never_joined_has_nothing_to_forget(harness: Harness) -> None:
    await harness.start()
    slack = harness.slack
    ts = await slack.post(ALICE, GENERAL, "just people talking")
    assert await use_forget_shortcut(slack, ALICE, ts) is None
    assert slack.ephemerals(GENERAL, ALICE)[-1].startswith("There is nothing to forget here")


async def test_an_operator_forgets_a_thread_from_the_command_line(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    await harness.start()
    slack = harness.slack
    root = await slack.mention(ALICE, GENERAL, "remember this")
    await wait_answers(slack, GENERAL, root, 1)
    await harness.drain_idle()

    assert await forget_thread(harness.settings(), GENERAL, root, yes=True) == 0
    assert "forget: done" in capsys.readouterr().out
    assert harness.backend_conversations() == 0
    assert slack.bot_replies(GENERAL, root)[-1].text.startswith(
        "This conversation was forgotten at an operator's request"
    )
    assert await forget_thread(harness.settings(), GENERAL, "1.000001", yes=True) == 1


@pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)
async def test_retention_erases_old_message_texts_but_keeps_their_token_counts(
    database_url: str,
) -> None:
    store = await Store.open(database_url)
    try:
        key = ConversationKey("T1", GENERAL, "100.000001")
        answered = await store.add_turn(key, "100.000001", ALICE, "my salary is 10k", False)
        waiting = await store.add_turn(key, "100.000002", ALICE, "and my address is…", False)
        assert answered is not None and waiting is not None
        await store.update_turn(answered, "running")
        await store.update_turn(answered, "done", input_tokens=120, output_tokens=30)

        assert await erase_old_texts(store, 30) == 0, "nothing is 30 days old yet"
        assert [t.text for t in await store.open_turns()] == ["and my address is…"]

        assert await erase_old_texts(store, 30, now=time.time() + 31 * 86400) == 1
        assert await store.open_turns() == [], "a message whose text is gone is not answered"
        assert await store.turn_statuses(key) == [("100.000001", "done"), ("100.000002", "failed")]
        stored = sa.select(turns.c.text, turns.c.input_tokens, turns.c.output_tokens)
        rows = await store._db.all(stored.order_by(turns.c.id), {})
        assert [tuple(row) for row in rows] == [("", 120, 30), ("", None, None)]
    finally:
        await store.close()
