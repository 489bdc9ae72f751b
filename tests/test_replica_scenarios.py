"""Several replicas of the bot on one PostgreSQL database, as people in Slack meet them (issue 13.7).

Real `python -m bot` processes in HTTP mode (tests/bot_replicas.py) share a database made for the
test; the emulated Slack sends each delivery to the next replica in turn and sends again, to the
next one, what was not acked. Without PostgreSQL (TEST_DATABASE_URL) these are skipped, saying
why; `.ci/run` requires them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.outcomes import GAVE_UP, MAX_ATTEMPTS, Failure
from bot.slack.blocks import STOP_ACTION
from bot.slack.words import THINKING, failure
from tests.bot_replicas import Replicas, replica_database_url
from tests.conftest import ALICE, BOB, GENERAL, bot_env, has_stop_button, wait_answers
from tests.emulators.model import Reply
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import Message, SlackEmulator
from tests.test_streaming import element, long_words

STOPPED = "_Stopped._"


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[str]:
    async with replica_database_url(postgres_url) as url:
        yield url


@pytest.fixture
async def replicas(
    slack: SlackEmulator,
    openai_emu: OpenAIEmulator,
    engine_env: dict[str, str],
    database: str,
    tmp_path: Path,
) -> AsyncIterator[Replicas]:
    env = bot_env(slack, openai_emu, database, "http") | engine_env
    group = Replicas(slack, openai_emu, env, tmp_path, database)
    yield group
    await group.close()


def stale(replies: list[Message]) -> list[Message]:
    """What must never stay: Thinking…, a Stop button, a stream never closed."""
    return [m for m in replies if m.streaming or m.text == THINKING or has_stop_button(m)]


def message_bodies(
    slack: SlackEmulator, user: str, text: str, thread_ts: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """A message as Slack sends it: a mention (app_mention and message) or a thread reply."""
    ts = slack.next_ts()
    if thread_ts is None:
        text = f"<@{slack.bot_user_id}> {text}"
    event = slack.message_event(user, GENERAL, text, ts=ts, thread_ts=thread_ts)
    bodies = [slack.event_callback(event)]
    if thread_ts is None:
        bodies.insert(0, slack.event_callback(event | {"type": "app_mention"}))
    return ts, bodies


@pytest.mark.parametrize("engine", ["responses"])
async def test_messages_delivered_and_sent_again_to_different_replicas_are_answered_once_in_order(
    replicas: Replicas,
) -> None:
    slack, openai = replicas.slack, replicas.openai
    members = await replicas.start(3)
    openai.model.latency = 0.2  # the thread's later messages arrive while earlier ones run
    said = ["one", "two", "three", "four", "five"]
    thread_ts = None
    for number, text in enumerate(said):
        ts, bodies = message_bodies(slack, ALICE if number % 2 == 0 else BOB, text, thread_ts)
        thread_ts = thread_ts or ts
        # Slack did not see the ack in time: it sends each event again, and the load balancer
        # hands the original and its retry to two replicas at once.
        await asyncio.gather(
            *(slack.deliver_callback(body) for body in bodies),
            *(
                slack.deliver_callback(body, retry_num=1, retry_reason="http_timeout")
                for body in bodies
            ),
        )
    assert thread_ts is not None
    assert {d.url for d in slack.deliveries} == {replica.url for replica in members}

    replies = await wait_answers(slack, GENERAL, thread_ts, len(said), timeout=60)
    await replicas.until_no_turn_is_open()
    replies = slack.bot_replies(GENERAL, thread_ts)
    assert [m.text.split(" (")[0] for m in replies] == [f"You said: {text}" for text in said]
    assert [m.text for m in replies] == [
        f"You said: {text} (message {number} of this conversation)"
        for number, text in enumerate(said, 1)
    ], "each message reached the assistant once, in the order written"
    assert len(openai.model.turns) == len(said)


@pytest.mark.parametrize("engine", ["assistants"])
async def test_stop_pressed_while_another_replica_writes_the_answer_stops_it(
    replicas: Replicas,
) -> None:
    slack, openai = replicas.slack, replicas.openai
    members = await replicas.start(2)
    text = long_words(3000)
    openai.model.chunk_size, openai.model.chunk_delay = 5, 0.01
    openai.model.enqueue(Reply(text=text))
    ts = await slack.mention(ALICE, GENERAL, "tell me everything")
    await slack.wait_for(
        lambda: any(m.streaming and m.text for m in slack.bot_replies(GENERAL, ts)), timeout=30
    )
    writing = await replicas.running_a_turn()
    elsewhere = next(replica for replica in members if replica is not writing)
    control = next(m for m in slack.bot_replies(GENERAL, ts) if has_stop_button(m))
    stop = element(control, STOP_ACTION)["value"]

    with replicas.sending_only_to(elsewhere):
        pressed = await slack.interaction(
            slack.block_action_payload(ALICE, GENERAL, control.ts, STOP_ACTION, stop)
        )
    assert (pressed.status, pressed.url) == (200, elsewhere.url)

    [stopped] = await wait_answers(slack, GENERAL, ts, 1, timeout=30)
    assert stopped.text.endswith("\n\n" + STOPPED)
    assert text.startswith(stopped.text.removesuffix("\n\n" + STOPPED))
    await replicas.until_no_turn_is_open()
    assert any(r.path.endswith("/cancel") for r in openai.requests), "the backend run is cancelled"

    openai.model.chunk_delay = 0
    await slack.post(ALICE, GENERAL, "a short one then", thread_ts=ts)
    both = await wait_answers(slack, GENERAL, ts, 2, timeout=30)
    assert both[1].text.startswith("You said: a short one then")


DEAD_AFTER = 5.0  # REPLICA_DEAD_AFTER_SECONDS here: short, yet no slow beat on a busy machine


async def test_the_replica_writing_an_answer_is_killed_and_the_answer_still_arrives_once(
    replicas: Replicas,
) -> None:
    slack, openai = replicas.slack, replicas.openai
    replicas.env["REPLICA_DEAD_AFTER_SECONDS"] = f"{DEAD_AFTER:g}"
    await replicas.start(2)
    openai.model.chunk_delay = 0.05
    whole = "A long answer, written slowly, word after word. " * 6
    openai.model.enqueue(Reply(text=whole))
    ts = await slack.mention(ALICE, GENERAL, "tell me slowly")
    await slack.wait_for(
        lambda: any(m.streaming and m.text for m in slack.bot_replies(GENERAL, ts)), timeout=30
    )
    writing = await replicas.running_a_turn()
    await writing.kill()  # as an OOM kill or a lost node: no goodbye
    # Meanwhile Bob writes in another thread; his deliveries to the dead replica fail and Slack
    # sends them again, to the living one.
    other = await slack.mention(BOB, GENERAL, "anyone there?")

    await replicas.until_no_turn_is_open(timeout=DEAD_AFTER + 60)
    await wait_answers(slack, GENERAL, other, 1)
    with contextlib.suppress(AssertionError):  # the assertions below say what is wrong
        await slack.wait_for(lambda: not stale(slack.bot_replies(GENERAL, ts)), timeout=5)
    replies = slack.bot_replies(GENERAL, ts)
    assert [m.text.strip() for m in replies] == [whole.strip()], "the whole answer, once"
    assert replicas.logged("event=turn_taken_over"), "the living replica took it over"


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_message_whose_answering_kills_each_replica_that_takes_it_is_given_up_after_three(
    replicas: Replicas,
) -> None:
    slack, openai = replicas.slack, replicas.openai
    replicas.env["REPLICA_DEAD_AFTER_SECONDS"] = f"{DEAD_AFTER:g}"
    await replicas.start(2)
    openai.model.gate = asyncio.Event()  # the answer is never written: a replica dies over it
    poison = "the message that runs the bot out of memory"
    ts = await slack.mention(ALICE, GENERAL, poison)
    started = f"event=run_started channel={GENERAL} ts={ts}"
    await slack.wait_for(lambda: bool(replicas.logged(started)), timeout=30)
    run_id = openai.responses_api.response_list()[-1].id

    def asked_about_the_answer() -> int:
        return sum(run_id in request.path for request in openai.requests)

    for attempt in range(MAX_ATTEMPTS):
        dying = await replicas.running_a_turn()
        await dying.kill()  # as an OOM kill: no goodbye
        asked = asked_about_the_answer()
        await dying.start()  # as its orchestrator starts it again
        if attempt < MAX_ATTEMPTS - 1:  # a living replica takes the answer over, and dies too
            await slack.wait_for(
                lambda asked=asked: asked_about_the_answer() > asked, timeout=DEAD_AFTER + 60
            )

    gave_up = failure(Failure(GAVE_UP))
    await slack.wait_for(
        lambda: [m.text for m in slack.bot_replies(GENERAL, ts)] == [gave_up],
        timeout=DEAD_AFTER + 60,
    )
    await replicas.until_no_turn_is_open()
    assert stale(slack.bot_replies(GENERAL, ts)) == []
    [giver] = [replica for replica in replicas.members if replica.logged("event=turn_given_up")]
    assert len(giver.logged("event=turn_given_up")) == 1
    assert await giver.metric("slackbot_turns_total", outcome="failed", code=GAVE_UP) == 1
    model_asked = [turn for turn in openai.model.turns if turn.user_texts[-1] == poison]
    assert len(model_asked) == 1  # each take-over followed the one run

    openai.model.gate.set()
    other = await slack.mention(BOB, GENERAL, "are you back?")
    [answer] = await wait_answers(slack, GENERAL, other, 1, timeout=30)
    assert answer.text.startswith("You said: are you back?")


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_rolling_restart_of_every_replica_during_a_burst_loses_no_message(
    replicas: Replicas,
) -> None:
    slack, openai = replicas.slack, replicas.openai
    members = await replicas.start(2)
    openai.model.latency = 0.3
    channels = [GENERAL, "C0RANDOM", "C0HELP"]
    for channel in channels[1:]:
        slack.add_channel(channel, channel.lower())
    sent: list[tuple[str, str]] = []
    restarted = asyncio.Event()

    async def burst() -> None:
        number = 0
        while not restarted.is_set() or number < 10:
            channel = channels[number % len(channels)]
            sent.append((channel, await slack.mention(ALICE, channel, f"question {number}")))
            number += 1
            await asyncio.sleep(0.1)

    sending = asyncio.create_task(burst())
    for replica in members:  # one at a time, as a deploy does
        await replica.stop()
        await replica.start()
    restarted.set()
    await sending

    for channel, ts in sent:
        await wait_answers(slack, channel, ts, 1, timeout=60)
    await replicas.until_no_turn_is_open()
    for number, (channel, ts) in enumerate(sent):
        replies = slack.bot_replies(channel, ts)
        assert [m.text.split(" (")[0] for m in replies] == [f"You said: question {number}"]
    assert len(openai.model.turns) == len(sent), "each question reached the assistant once"
