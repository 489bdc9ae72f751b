"""Crashes, as an operator meets them: the bot process killed (SIGKILL) at any moment, then
started again, and the answer it was writing taken over (the backend run followed, or run again
once); and a second bot started on the same SQLite file.

Real processes (`python -m bot`, HTTP mode) against the emulators, which run in the test and
outlive every bot. Slack's part is played as Slack plays it: an event that was not acked is
sent again (X-Slack-Retry-Num) once the bot is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.messages import ConversationKey
from bot.outcomes import GAVE_UP, MAX_ATTEMPTS, STOPPED, Failure
from bot.slack.blocks import STOP_ACTION
from bot.slack.words import THINKING, failure
from bot.store import Store
from tests.conftest import (
    ALICE,
    BOB,
    BOTH_DATABASES,
    GENERAL,
    Harness,
    bot_env,
    has_stop_button,
    wait_answers,
)
from tests.emulators.model import Reply, ToolCallSpec
from tests.emulators.slack import Message, SlackEmulator
from tests.test_operations import process_env, run_bot

RESTARTED = "The bot restarted while answering this message"


@dataclass
class BotProcess:
    """`python -m bot` in HTTP mode; its log is read as it goes."""

    env: dict[str, str]
    cwd: Path
    process: asyncio.subprocess.Process | None = None
    log: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def start(self, slack: SlackEmulator) -> float:
        """Start it; the seconds until it serves events (it logs event=started then)."""
        began = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            env=process_env(self.env),
            cwd=self.cwd,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        serving: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(serving))
        port = await asyncio.wait_for(serving, 30)
        slack.events_url = f"http://127.0.0.1:{port}/slack/events"
        return time.monotonic() - began

    async def _read(self, serving: asyncio.Future[int]) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.log.append(line)
            started = re.search(r"event=started mode=http port=(\d+)", line)
            if started and not serving.done():
                serving.set_result(int(started.group(1)))
        if not serving.done():
            serving.set_exception(RuntimeError("the bot exited:\n" + "".join(self.log[-20:])))

    async def kill(self) -> None:
        assert self.process is not None and self._reader is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        await self._reader

    def logged(self, text: str) -> list[str]:
        return [line for line in self.log if text in line]


@pytest.fixture
async def bot_process(harness: Harness, tmp_path: Path) -> Any:
    env = bot_env(harness.slack, harness.openai, harness.db, "http") | harness.env
    process = BotProcess(env, tmp_path)
    yield process
    if process.process is not None:
        await process.kill()


def mention_bodies(slack: SlackEmulator, text: str) -> tuple[str, list[dict[str, Any]]]:
    """A mention by Alice in #general, as Slack sends it: an app_mention and a message event."""
    ts = slack.next_ts()
    message = slack.message_event(ALICE, GENERAL, f"<@{slack.bot_user_id}> {text}", ts=ts)
    return ts, [
        slack.event_callback(message | {"type": "app_mention"}),
        slack.event_callback(message),
    ]


async def acked(slack: SlackEmulator, body: dict[str, Any]) -> bool:
    try:
        return (await slack.deliver_callback(body)).status == 200
    except (aiohttp.ClientError, OSError):  # refused, reset, or cut off: no ack
        return False


def streaming(slack: SlackEmulator, ts: str) -> bool:
    return any(m.streaming for m in slack.bot_replies(GENERAL, ts))


def stale(replies: list[Message]) -> list[Message]:
    """What must never stay: Thinking…, a Stop button, a stream never closed."""
    return [m for m in replies if m.streaming or m.text == THINKING or has_stop_button(m)]


def verdict(replies: list[Message], answer: str) -> str:
    answered = sum(answer in m.text and RESTARTED not in m.text for m in replies)
    explained = sum(RESTARTED in m.text for m in replies)
    if answered + explained > 1:
        return "duplicated"
    return "answered" if answered else "explained" if explained else "lost"


async def recorded(process: BotProcess, slack: SlackEmulator, what: str) -> None:
    """Return once the bot has logged `what` (it logs a run once the run is recorded, and a
    turn's end once it is recorded)."""
    await slack.wait_for(lambda: bool(process.logged(what)))


def latest_run(harness: Harness) -> tuple[str, str]:
    """The id and status of the backend run (or response) started last."""
    if harness.engine == "assistants":
        run = list(harness.openai.runs.values())[-1]
        return run.id, run.status
    response = harness.openai.responses_api.response_list()[-1]
    return response.id, response.status


@pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)
async def test_a_bot_killed_mid_answer_gives_the_whole_answer_once_restarted_and_then_what_waited(
    harness: Harness, bot_process: BotProcess
) -> None:
    slack, openai = harness.slack, harness.openai
    on_postgresql = str(harness.db).startswith("postgresql")
    if on_postgresql:
        # The turn is taken over once the dead process is found silent (its job's heartbeat).
        bot_process.env["REPLICA_DEAD_AFTER_SECONDS"] = "5"
    openai.model.gate = asyncio.Event()
    await bot_process.start(slack)
    ts = await slack.mention(ALICE, GENERAL, "first")
    await slack.post(BOB, GENERAL, "second", thread_ts=ts)
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, ts)) == 2)  # two placeholders
    await recorded(bot_process, slack, f"event=run_started channel={GENERAL} ts={ts}")
    await bot_process.kill()  # "first" runs, "second" waits its turn
    openai.model.gate.set()
    # The run goes on without the bot, and has finished by the time the bot is back.
    await slack.wait_for(lambda: latest_run(harness)[1] == "completed")

    await bot_process.start(slack)
    await wait_answers(slack, GENERAL, ts, 2, timeout=60 if on_postgresql else 15)
    await slack.wait_for(lambda: stale(slack.bot_replies(GENERAL, ts)) == [])
    replies = slack.bot_replies(GENERAL, ts)
    assert len(replies) == 2
    assert replies[0].text.startswith("You said: first")
    assert replies[1].text.startswith("You said: second")
    assert not [m for m in replies if RESTARTED in m.text]
    # Both recorded as answered: the first, taken over, and the second.
    await slack.wait_for(lambda: len(bot_process.logged("status=done")) == 2)
    assert openai.user_messages("first") == 1  # followed, not asked again
    assert len(bot_process.logged("event=turn_taken_over")) == 1


async def test_an_answer_killed_while_streaming_is_finished_in_the_same_message_once_restarted(
    harness: Harness, bot_process: BotProcess
) -> None:
    slack, openai = harness.slack, harness.openai
    openai.model.chunk_delay = 0.05
    text = "A long answer, written slowly, word after word. " * 4
    openai.model.enqueue(Reply(text=text))
    await bot_process.start(slack)
    ts = await slack.mention(ALICE, GENERAL, "tell me slowly")
    await slack.wait_for(lambda: streaming(slack, ts))
    [half] = [m for m in slack.bot_replies(GENERAL, ts) if m.streaming]
    await bot_process.kill()

    await bot_process.start(slack)
    await wait_answers(slack, GENERAL, ts, 1)
    await slack.wait_for(lambda: stale(slack.bot_replies(GENERAL, ts)) == [])
    [answer] = slack.bot_replies(GENERAL, ts)
    assert answer.ts == half.ts  # the half-written message now holds the whole answer
    assert answer.text.startswith(text.strip())
    assert RESTARTED not in answer.text
    assert openai.user_messages("tell me slowly") == 1


async def test_where_slack_refuses_streaming_an_answer_killed_halfway_is_finished_in_its_placeholder(
    harness: Harness, bot_process: BotProcess
) -> None:
    slack, openai = harness.slack, harness.openai
    slack.refuse_streaming = True
    openai.model.chunk_delay = 0.05
    text = "An answer written into its placeholder, a little at a time. " * 6
    openai.model.enqueue(Reply(text=text))
    await bot_process.start(slack)
    ts = await slack.mention(ALICE, GENERAL, "write it in place")
    await slack.wait_for(
        lambda: any(
            has_stop_button(m) and "placeholder" in m.text for m in slack.bot_replies(GENERAL, ts)
        )
    )
    [placeholder] = slack.bot_replies(GENERAL, ts)
    await bot_process.kill()

    await bot_process.start(slack)
    await wait_answers(slack, GENERAL, ts, 1)
    await slack.wait_for(lambda: stale(slack.bot_replies(GENERAL, ts)) == [])
    [answer] = slack.bot_replies(GENERAL, ts)
    assert answer.ts == placeholder.ts and answer.text.startswith(text.strip())


@pytest.mark.parametrize("engine", ["assistants"])  # its run is polled: a take-over is long
async def test_a_bot_killed_again_while_it_takes_an_answer_over_still_gives_it_once(
    harness: Harness, bot_process: BotProcess, tmp_path: Path
) -> None:
    slack, openai = harness.slack, harness.openai
    openai.model.chunk_delay = 0.1
    text = "An answer that takes its time, one word after another. " * 6
    openai.model.enqueue(Reply(text=text))
    await bot_process.start(slack)
    ts = await slack.mention(ALICE, GENERAL, "take your time")
    await slack.wait_for(lambda: streaming(slack, ts))
    [half] = [m for m in slack.bot_replies(GENERAL, ts) if m.streaming]
    await bot_process.kill()
    # As if it was killed before it could record where the answer streams.
    store = await Store.open(tmp_path / "bot.sqlite3")
    [turn] = await store.open_turns()
    await store.answer_shown(turn.turn_id, "")
    await store.close()

    await bot_process.start(slack)  # finds the stream, and is killed while it follows the run
    await slack.wait_for(lambda: bool(bot_process.logged("event=turn_taken_over")))
    assert not streaming(slack, ts)
    await bot_process.kill()

    await bot_process.start(slack)
    await wait_answers(slack, GENERAL, ts, 1)
    await slack.wait_for(lambda: stale(slack.bot_replies(GENERAL, ts)) == [])
    [answer] = slack.bot_replies(GENERAL, ts)
    assert answer.ts == half.ts and answer.text.startswith(text.strip())


async def test_stop_pressed_while_a_restarted_bot_takes_an_answer_over_stops_it(
    harness: Harness, bot_process: BotProcess
) -> None:
    slack, openai = harness.slack, harness.openai
    openai.model.gate = asyncio.Event()
    await bot_process.start(slack)
    ts = await slack.mention(ALICE, GENERAL, "never mind")
    await recorded(bot_process, slack, "event=run_started")
    await bot_process.kill()

    await bot_process.start(slack)
    await recorded(bot_process, slack, "event=turn_taken_over")
    [placeholder] = slack.bot_replies(GENERAL, ts)
    [stop] = [
        element
        for block in placeholder.blocks
        for element in block.get("elements") or []
        if isinstance(element, dict) and element.get("action_id") == STOP_ACTION
    ]
    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, placeholder.ts, STOP_ACTION, stop["value"])
    )
    await recorded(bot_process, slack, f"ts={ts} status=stopped")
    await slack.wait_for(lambda: stale(slack.bot_replies(GENERAL, ts)) == [])
    assert [m.text for m in slack.bot_replies(GENERAL, ts)] == [failure(Failure(STOPPED))]
    await slack.wait_for(lambda: latest_run(harness)[1] == "cancelled")  # on the backend too
    openai.model.gate.set()


@pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)
async def test_stop_pressed_while_a_restarted_bot_reads_back_the_answer_it_takes_over_stops_the_run(
    harness: Harness, bot_process: BotProcess
) -> None:
    slack, openai = harness.slack, harness.openai
    if str(harness.db).startswith("postgresql"):
        # The turn is taken over once the dead process is found silent (its job's heartbeat).
        bot_process.env["REPLICA_DEAD_AFTER_SECONDS"] = "5"
    openai.model.gate = asyncio.Event()
    await bot_process.start(slack)
    ts = await slack.mention(ALICE, GENERAL, "never mind")
    await recorded(bot_process, slack, "event=run_started")
    await bot_process.kill()

    # Slack is slow to show the thread the restarted bot reads back, to see what the dead one
    # left of the answer; meanwhile the person presses Stop.
    slack.hold("conversations.replies")
    await bot_process.start(slack)
    await slack.wait_for(
        lambda: any(call["ts"] == ts for call in slack.withheld("conversations.replies")),
        timeout=30,
    )
    [placeholder] = slack.bot_replies(GENERAL, ts)
    [stop] = [
        element
        for block in placeholder.blocks
        for element in block.get("elements") or []
        if isinstance(element, dict) and element.get("action_id") == STOP_ACTION
    ]
    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, placeholder.ts, STOP_ACTION, stop["value"])
    )
    await slack.wait_for(lambda: latest_run(harness)[1] == "cancelled")  # on the backend too
    runs = harness.backend_runs()
    slack.release("conversations.replies")
    openai.model.gate.set()

    # The thread's next message is answered after the stopped one has ended: by then, anything
    # the stopped turn would write has been written.
    await slack.post(ALICE, GENERAL, "and now?", thread_ts=ts)
    await wait_answers(slack, GENERAL, ts, 2, timeout=30)
    await slack.wait_for(lambda: stale(slack.bot_replies(GENERAL, ts)) == [])
    shown = [m.text for m in slack.bot_replies(GENERAL, ts)]
    assert shown[0] == failure(Failure(STOPPED)), shown
    assert len(shown) == 2 and shown[1].startswith("You said: and now?"), shown
    assert harness.backend_runs() == runs + 1, "the stopped one is not run again"


def run_status(harness: Harness, run_id: str) -> str:
    if harness.engine == "assistants":
        return harness.openai.runs[run_id].status
    return harness.openai.responses_api.responses[run_id].status


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_stop_pressed_while_a_taken_over_answer_waits_for_a_free_replica_stops_its_run(
    harness: Harness, bot_process: BotProcess
) -> None:
    """On PostgreSQL a turn taken over waits in the queue like any other until a replica is
    free; stopped there, it never runs, and the run its dead process left is cancelled."""
    slack, openai = harness.slack, harness.openai
    bot_process.env |= {"REPLICA_DEAD_AFTER_SECONDS": "5", "MAX_TURNS_IN_FLIGHT": "1"}
    openai.model.gate = asyncio.Event()
    await bot_process.start(slack)
    ts = await slack.mention(ALICE, GENERAL, "never mind")
    await recorded(bot_process, slack, "event=run_started")
    left_running, _ = latest_run(harness)
    await bot_process.kill()

    await bot_process.start(slack)
    # The restarted bot is busy with another thread before it finds the dead process gone.
    busy = await slack.mention(BOB, GENERAL, "keep me busy")
    await recorded(bot_process, slack, f"event=run_started channel={GENERAL} ts={busy}")
    await recorded(bot_process, slack, "event=stalled_turn_retried")
    [placeholder] = slack.bot_replies(GENERAL, ts)
    [stop] = [
        element
        for block in placeholder.blocks
        for element in block.get("elements") or []
        if isinstance(element, dict) and element.get("action_id") == STOP_ACTION
    ]
    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, placeholder.ts, STOP_ACTION, stop["value"])
    )
    await slack.wait_for(lambda: run_status(harness, left_running) == "cancelled")
    assert [m.text for m in slack.bot_replies(GENERAL, ts)] == [failure(Failure(STOPPED))]
    openai.model.gate.set()
    await wait_answers(slack, GENERAL, busy, 1)
    assert [m.text for m in slack.bot_replies(GENERAL, ts)] == [failure(Failure(STOPPED))]
    assert not bot_process.logged("event=turn_taken_over"), "it never ran"


async def test_a_message_whose_answering_kills_the_bot_each_time_is_given_up_after_three_tries(
    harness: Harness, bot_process: BotProcess
) -> None:
    slack, openai = harness.slack, harness.openai
    openai.model.gate = asyncio.Event()  # the answer is never written: the bot dies over it
    poison = "the message that runs the bot out of memory"
    await bot_process.start(slack)
    ts = await slack.mention(ALICE, GENERAL, poison)
    await recorded(bot_process, slack, f"event=run_started channel={GENERAL} ts={ts}")
    run_id = latest_run(harness)[0]

    def asked_about_the_answer() -> int:
        return sum(run_id in request.path for request in openai.requests)

    for _ in range(MAX_ATTEMPTS - 1):
        await bot_process.kill()
        asked = asked_about_the_answer()
        await bot_process.start(slack)  # takes the answer over, and dies over it again
        await slack.wait_for(lambda asked=asked: asked_about_the_answer() > asked)
    await bot_process.kill()

    await bot_process.start(slack)  # the third restart: the bot gives the message up
    gave_up = failure(Failure(GAVE_UP))
    await slack.wait_for(lambda: [m.text for m in slack.bot_replies(GENERAL, ts)] == [gave_up])
    assert stale(slack.bot_replies(GENERAL, ts)) == []  # no Thinking…, no Stop button
    assert "each of the three times" in gave_up
    await recorded(bot_process, slack, f"ts={ts} status=failed")
    assert len(bot_process.logged("event=turn_given_up")) == 1
    await slack.wait_for(lambda: latest_run(harness)[1] == "cancelled")  # not left going
    model_asked = [turn for turn in openai.model.turns if turn.user_texts[-1] == poison]
    assert len(model_asked) == 1  # each take-over followed the one run; none asked the model again

    # The bot serves everyone else again.
    openai.model.gate.set()
    other = await slack.mention(BOB, GENERAL, "are you back?")
    [answer] = await wait_answers(slack, GENERAL, other, 1)
    assert answer.text.startswith("You said: are you back?")


async def test_a_run_the_backend_lost_meanwhile_is_run_again_once_without_repeating_the_message(
    harness: Harness, bot_process: BotProcess, tmp_path: Path
) -> None:
    slack, openai = harness.slack, harness.openai
    openai.model.gate = asyncio.Event()
    await bot_process.start(slack)
    ts = await slack.mention(ALICE, GENERAL, "are you still there?")
    await recorded(bot_process, slack, "event=run_started")
    await bot_process.kill()
    await openai.lose_run(latest_run(harness)[0])
    runs = harness.backend_runs()
    openai.model.gate.set()

    await bot_process.start(slack)
    [answer] = await wait_answers(slack, GENERAL, ts, 1)
    await slack.wait_for(lambda: stale(slack.bot_replies(GENERAL, ts)) == [])
    assert answer.text.startswith("You said: are you still there?")
    assert len(slack.bot_replies(GENERAL, ts)) == 1
    assert harness.backend_runs() == runs + 1  # run again, once
    assert openai.user_messages("are you still there?") == 1
    await recorded(bot_process, slack, f"ts={ts} status=done")


async def test_a_bot_killed_while_a_tool_call_waits_for_approval_asks_again_once_restarted(
    harness: Harness, bot_process: BotProcess
) -> None:
    slack, openai = harness.slack, harness.openai
    bot_process.env["TOOLS_MODULE"] = "tests.tools_for_tests"
    openai.model.enqueue(Reply(tool_calls=[ToolCallSpec("launch_release", '{"version": "2.4"}')]))
    await bot_process.start(slack)
    ts = await slack.mention(ALICE, GENERAL, "ship 2.4")
    question = "The assistant wants to use *launch_release*. Allow it?"

    def cards() -> list[Message]:
        return [m for m in slack.bot_replies(GENERAL, ts) if m.text.startswith(question)]

    def buttons(card: Message) -> dict[str, str]:
        return {
            e["action_id"]: e["value"]
            for b in card.blocks
            for e in b.get("elements") or []
            if e.get("type") == "button"
        }

    await slack.wait_for(lambda: len(cards()) == 1)
    await bot_process.kill()

    await bot_process.start(slack)
    # The dead process's card loses its buttons; the bot taking the answer over asks again.
    await slack.wait_for(lambda: len(cards()) == 2 and not buttons(cards()[0]))
    withdrawn, asking = cards()
    assert "Withdrawn: the bot restarted while this call waited" in withdrawn.text
    approve = buttons(asking)["approve_tool_call"]
    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, asking.ts, "approve_tool_call", approve)
    )
    await slack.wait_for(lambda: stale(slack.bot_replies(GENERAL, ts)) == [])
    answers = [m for m in slack.bot_replies(GENERAL, ts) if not m.text.startswith(question)]
    assert len(answers) == 1 and not any(RESTARTED in m.text for m in answers), answers
    assert openai.user_messages("ship 2.4") == 1, "the run that waited was followed"
    assert "2.4 is live" in answers[0].text, answers[0].text


async def test_recovery_never_holds_up_start_up_even_when_slack_fails_or_the_channel_is_gone(
    harness: Harness, bot_process: BotProcess, tmp_path: Path
) -> None:
    slack, openai = harness.slack, harness.openai
    slack.add_channel("C0DOOMED", "doomed")
    await bot_process.start(slack)

    async def cut_off(channel: str, text: str) -> str:
        """A mention whose answer the bot is writing when it is killed."""
        openai.model.gate = asyncio.Event()
        ts = await slack.mention(ALICE, channel, text)
        await slack.wait_for(
            lambda: any(turn.user_texts[-1] == text for turn in openai.model.turns)
        )
        await recorded(bot_process, slack, f"event=run_started channel={channel}")
        await bot_process.kill()
        openai.model.gate.set()
        return ts

    async def restart_and_answer(text: str) -> None:
        # Slack does not answer the reading back of the old thread until the bot has started
        # and answered a new message: start-up and new messages never wait for recovery.
        slack.hold("conversations.replies")
        await bot_process.start(slack)
        ts = await slack.mention(BOB, GENERAL, text)
        await wait_answers(slack, GENERAL, ts, 1)
        slack.release("conversations.replies")

    await cut_off("C0DOOMED", "in a channel about to go")
    del slack.channels["C0DOOMED"]  # archived and deleted meanwhile
    await restart_and_answer("are you there?")
    await slack.wait_for(lambda: bool(bot_process.logged("event=take_back_failed")))
    [failed] = bot_process.logged("event=take_back_failed")
    assert "channel=C0DOOMED" in failed and "error=channel_not_found" in failed
    await slack.wait_for(lambda: bool(bot_process.logged("event=turn_finished channel=C0DOOMED")))

    failing = await cut_off(GENERAL, "in a thread Slack will not show")
    slack.fail_next(
        "conversations.replies", "internal_error", times=5, status=500
    )  # the try and 4 retries
    await restart_and_answer("and now?")
    # Slack would not show the thread, so the answer is written anew where it can be.
    [answer] = await wait_answers(slack, GENERAL, failing, 1)
    assert answer.text.startswith("You said: in a thread Slack will not show")
    [_, failed] = bot_process.logged("event=take_back_failed")
    assert "error=internal_error" in failed
    await recorded(bot_process, slack, f"ts={failing} status=done")


@pytest.mark.parametrize("engine", ["assistants"])
async def test_a_stored_turn_that_cannot_be_read_is_skipped_with_a_warning(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    store = await Store.open(harness.db)
    key = ConversationKey(harness.slack.team_id, GENERAL, "not-a-ts")
    await store.add_turn(key, "not-a-ts", ALICE, "garbled", False)
    await store.close()
    caplog.set_level(logging.WARNING)
    await harness.start()
    assert "event=turn_unreadable" in caplog.text
    ts = await harness.slack.mention(ALICE, GENERAL, "hello")
    await wait_answers(harness.slack, GENERAL, ts, 1)
    await harness.drain_idle()
    assert [s for _, s in await harness.bot.store.turn_statuses(key)] == ["failed"]  # type: ignore[union-attr]


# --- killed at random moments --------------------------------------------------------------------

ROUNDS = 10  # per engine: 20 in all
MOMENTS = ("before the ack", "right after the ack", "while streaming")


async def test_killed_at_random_moments_every_message_is_answered_once_and_nothing_left_stale(
    harness: Harness, bot_process: BotProcess, engine: str
) -> None:
    slack, openai = harness.slack, harness.openai
    openai.model.latency = 0.05
    openai.model.chunk_delay = 0.02
    openai.model.respond = lambda context: Reply(
        text=f"You said: {context.user_texts[-1]}. " + "Here is a longer answer. " * 3
    )
    moments = random.Random(f"kill-{engine}")
    sent: list[tuple[str, str, str]] = []  # (ts, text, moment)

    def answered(ts: str, text: str) -> bool:
        replies = slack.bot_replies(GENERAL, ts)
        return not stale(replies) and verdict(replies, f"You said: {text}.") == "answered"

    await bot_process.start(slack)
    for number in range(ROUNDS):
        # A message is tried at most MAX_ATTEMPTS times, then given up: the bot is killed again
        # only once the messages before the last one are answered, so that each is cut off by
        # two kills at most (its own round's and, while it is taken over, the next one's).
        settled = sent[: max(0, len(sent) - (MAX_ATTEMPTS - 2))]
        await slack.wait_for(lambda settled=settled: all(answered(t, x) for t, x, _ in settled))
        moment = moments.choice(MOMENTS)
        text = f"round {number}"
        ts, bodies = mention_bodies(slack, text)
        sent.append((ts, text, moment))
        deliveries = [asyncio.create_task(acked(slack, body)) for body in bodies]
        if moment == "before the ack":
            await asyncio.sleep(moments.uniform(0, 0.004))
        elif moment == "right after the ack":  # the moment a message was lost before
            await asyncio.gather(*deliveries)
        else:
            await slack.wait_for(lambda ts=ts: streaming(slack, ts))
            await asyncio.sleep(moments.uniform(0, 0.1))
        await bot_process.kill()
        not_acked = [
            body
            for body, ok in zip(bodies, await asyncio.gather(*deliveries), strict=True)
            if not ok
        ]
        # Slack fails during the restart too: recovery reads threads back through this.
        slack.fail_next("conversations.replies", "internal_error", status=500)
        slack.fail_next("chat.delete", "ratelimited", retry_after=1)
        await bot_process.start(slack)
        for body in not_acked:  # Slack sends again what was not acked
            await slack.deliver_callback(body, retry_num=1, retry_reason="http_error")

    def outcomes() -> dict[str, list[str]]:
        seen: dict[str, list[str]] = {}
        for ts, text, moment in sent:
            replies = slack.bot_replies(GENERAL, ts)
            state = "stale" if stale(replies) else verdict(replies, f"You said: {text}.")
            seen.setdefault(state, []).append(f"{text} ({moment})")
        return seen

    with contextlib.suppress(AssertionError):  # the assertion below says what went wrong
        await slack.wait_for(lambda: set(outcomes()) == {"answered"}, timeout=20)
    assert set(outcomes()) == {"answered"}, outcomes()
    assert {moment for _, _, moment in sent} == set(MOMENTS)


# --- one bot per SQLite file ---------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_second_bot_on_the_same_sqlite_file_refuses_to_start_in_one_line(
    harness: Harness, bot_process: BotProcess, tmp_path: Path
) -> None:
    slack = harness.slack
    await bot_process.start(slack)
    env = bot_process.env

    code, _, err = await run_bot(env=env, cwd=tmp_path)
    assert code == 1 and "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("The bot cannot start: Another bot process is already running on the ")
    assert f"SQLite database {tmp_path / 'bot.sqlite3'}" in line
    assert "Several processes need PostgreSQL." in line

    # What only reads, or manages definitions, works beside the running bot.
    code, out, _ = await run_bot("check", env=env, cwd=tmp_path)
    assert code == 0 and "assistant: ok, Helper" in out, out
    code, out, _ = await run_bot("assistants", "list", env=env, cwd=tmp_path)
    assert code == 0 and "Helper" in out, out

    ts = await slack.mention(ALICE, GENERAL, "still yours?")
    await wait_answers(slack, GENERAL, ts, 1)  # the first bot never noticed

    await bot_process.kill()  # the lock goes with its process, however it ends
    await bot_process.start(slack)
