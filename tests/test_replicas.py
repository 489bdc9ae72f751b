"""Several replicas of the bot on one PostgreSQL database: any replica takes any event, and a
person sees each message answered once, in order, whatever replica each delivery lands on.

Each bot here is the real bot (bot.app.start) in this process, in HTTP mode, on one schema of
the PostgreSQL server TEST_DATABASE_URL names; the emulated Slack sends each delivery to the
replica a test chooses. Real processes (`python -m bot`) are in the scenario tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from bot import app
from bot.config import load_settings
from bot.jobs import JobTimings
from bot.messages import ConversationKey
from bot.outcomes import GAVE_UP, MAX_ATTEMPTS, Failure
from bot.slack import words
from bot.slack.blocks import STOP_ACTION
from bot.slack.words import THINKING, failure
from bot.startup import StartupError
from tests.bot_replicas import until
from tests.conftest import ALICE, GENERAL, answers, bot_env, has_stop_button, texts
from tests.db_proxy import DatabaseProxy
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator

pytestmark = [
    pytest.mark.parametrize("database", ["postgresql"], indirect=True),
    pytest.mark.parametrize("engine", ["assistants"]),
]

# Short enough for a test, long enough that a loaded machine does not take a live worker as dead.
QUICK = JobTimings(heartbeat=0.5, stalled_after=3.0, poll=0.5, restart_after=0.5)


@dataclass
class Replicas:
    """Bots on one database, the emulators, and which bot Slack delivers to."""

    slack: SlackEmulator
    openai: OpenAIEmulator
    database_url: str
    env: dict[str, str]
    bots: dict[str, app.Bot] = field(default_factory=dict)

    async def start(self, name: str, *, listen: bool = True, **env: str) -> app.Bot:
        """A replica: `python -m bot` (listen), or `python -m bot worker`."""
        settings = load_settings(
            bot_env(self.slack, self.openai, self.database_url, "http", **(self.env | env)),
            env_file=None,
            listening=listen,
        )
        bot = await app.start(settings, listen=listen, job_timings=QUICK)
        assert bot.queue is not None, "PostgreSQL: turns are jobs"
        self.bots[name] = bot
        return bot

    def deliver_to(self, name: str) -> None:
        """Slack's next deliveries go to this replica (as a load balancer would send them)."""
        self.slack.events_url = f"http://127.0.0.1:{self.bots[name].port}/slack/events"

    async def stop(self, name: str) -> None:
        await self.bots.pop(name).stop()

    async def idle(self) -> None:
        """Every message delivered so far is answered (whichever replica answers it)."""
        async with asyncio.timeout(60):
            for bot in self.bots.values():
                await bot.conversations.idle()

    def runs(self, name: str) -> int:
        """How many turns this replica is answering now."""
        queue = self.bots[name].queue
        assert queue is not None
        return queue.turn_counts()[1]


@pytest.fixture
async def replicas(
    slack: SlackEmulator,
    openai_emu: OpenAIEmulator,
    engine_env: dict[str, str],
    database_url: str,
) -> AsyncIterator[Replicas]:
    group = Replicas(slack, openai_emu, database_url, dict(engine_env))
    try:
        yield group
    finally:
        if openai_emu.model.gate is not None:
            openai_emu.model.gate.set()
        for name in list(group.bots):
            await group.stop(name)


def mention_events(
    slack: SlackEmulator, text: str, thread_ts: str | None = None
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A channel @mention's two deliveries (app_mention and message), and its ts."""
    message = slack.message_event(
        ALICE, GENERAL, f"<@{slack.bot_user_id}> {text}", thread_ts=thread_ts
    )
    return message | {"type": "app_mention"}, message, message["ts"]


async def test_deliveries_and_retries_spread_over_replicas_are_answered_once_and_in_order(
    replicas: Replicas,
) -> None:
    await replicas.start("a")
    await replicas.start("b")
    slack = replicas.slack
    replicas.openai.model.latency = 0.2

    app_mention, message, root = mention_events(slack, "question 1")
    replicas.deliver_to("a")
    await slack.deliver(app_mention)
    replicas.deliver_to("b")
    await slack.deliver(message)  # the same message, delivered again, to the other replica
    first = slack.event_callback(app_mention, "Ev0RETRY")
    await slack.deliver_callback(first, retry_num=1, retry_reason="http_timeout")
    # The thread's next messages, each to a replica in turn, one of them retried on the other.
    for n, name in zip(range(2, 6), "abab", strict=True):
        replicas.deliver_to(name)
        event = slack.message_event(ALICE, GENERAL, f"question {n}", thread_ts=root)
        await slack.deliver(event)
        if n == 3:
            replicas.deliver_to("a")
            await slack.deliver(event, retry_num=1, retry_reason="http_timeout")
    assert all(d.status == 200 for d in slack.deliveries), "every delivery acked"
    # A retry reaching one replica while the other is still recording the first delivery.
    event = slack.message_event(ALICE, GENERAL, "question 6", thread_ts=root)
    statuses = await asyncio.gather(
        *(post_event(slack, replicas.bots[name], event, "Ev0SAME") for name in "ab")
    )
    assert statuses == [200, 200]

    await replicas.idle()
    assert texts(answers(slack, GENERAL, root)) == [
        f"You said: question {n} (message {n} of this conversation)" for n in range(1, 7)
    ]
    assert len(slack.bot_replies(GENERAL, root)) == 6, "no placeholder left, none twice"
    assert len(replicas.openai.threads) == 1


async def post_event(
    slack: SlackEmulator, bot: app.Bot, event: dict[str, Any], event_id: str
) -> int:
    """Slack's POST of `event` to one replica, at once (its ack's status)."""
    body = slack.envelope(event, event_id)
    headers = {"Content-Type": "application/json", **slack.sign(body)}
    url = f"http://127.0.0.1:{bot.port}/slack/events"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status


async def test_stop_pressed_on_one_replica_stops_the_answer_another_replica_writes(
    replicas: Replicas,
) -> None:
    await replicas.start("a")
    await replicas.start("b")
    slack, openai = replicas.slack, replicas.openai
    openai.model.gate = asyncio.Event()
    replicas.deliver_to("a")
    ts = await slack.mention(ALICE, GENERAL, "a long answer please")
    await slack.wait_for(lambda: len(openai.model.turns) == 1)
    running = "a" if replicas.runs("a") else "b"
    other = "b" if running == "a" else "a"
    control = next(m for m in slack.bot_replies(GENERAL, ts) if has_stop_button(m))
    stop = next(
        element["value"]
        for block in control.blocks
        for element in block.get("elements") or []
        if isinstance(element, dict) and element.get("action_id") == STOP_ACTION
    )
    replicas.deliver_to(other)
    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, control.ts, STOP_ACTION, stop)
    )
    await slack.wait_for(
        lambda: any(m.text.endswith("_Stopped._") for m in slack.bot_replies(GENERAL, ts)),
        timeout=15,
    )
    openai.model.gate.set()
    # The thread goes on, whichever replica takes its next message.
    await slack.post(ALICE, GENERAL, "and now?", thread_ts=ts)
    await replicas.idle()
    assert answers(slack, GENERAL, ts)[-1].text.startswith("You said: and now?")


async def metric(bot: app.Bot, name: str) -> float:
    """A sample of the replica's /metrics, as Prometheus scrapes it."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{bot.port}/metrics") as response,
    ):
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def test_the_turns_waiting_in_the_shared_queue_show_on_metrics(replicas: Replicas) -> None:
    bot = await replicas.start("a")
    slack, openai = replicas.slack, replicas.openai
    openai.model.gate = asyncio.Event()
    replicas.deliver_to("a")
    ts = await slack.mention(ALICE, GENERAL, "one")
    await slack.wait_for(lambda: len(openai.model.turns) == 1)
    # The thread's next two messages wait behind the one being answered.
    await slack.post(ALICE, GENERAL, "two", thread_ts=ts)
    await slack.post(ALICE, GENERAL, "three", thread_ts=ts)

    async def two_waiting() -> bool:
        return await metric(bot, "slackbot_turns_waiting") == 2

    await until(two_waiting, timeout=30)
    assert await metric(bot, "slackbot_turns_running") == 1

    openai.model.gate.set()
    await replicas.idle()
    assert [m.text.split(" (")[0] for m in answers(slack, GENERAL, ts)] == [
        "You said: one",
        "You said: two",
        "You said: three",
    ]

    async def none_waiting() -> bool:
        return await metric(bot, "slackbot_turns_waiting") == 0

    await until(none_waiting, timeout=30)


async def test_a_worker_answers_what_the_listening_replicas_take(replicas: Replicas) -> None:
    await replicas.start("listener", MAX_TURNS_IN_FLIGHT="1")
    worker = await replicas.start("worker", listen=False, MAX_TURNS_IN_FLIGHT="1")
    assert worker.port is None, "a worker takes no events"
    slack, openai = replicas.slack, replicas.openai
    openai.model.gate = asyncio.Event()
    replicas.deliver_to("listener")
    first = await slack.mention(ALICE, GENERAL, "one")
    second = await slack.mention(ALICE, GENERAL, "two")
    # Each runs one turn at most: the listener one, the worker the other.
    await slack.wait_for(lambda: len(openai.model.turns) == 2)
    assert (replicas.runs("listener"), replicas.runs("worker")) == (1, 1)
    openai.model.gate.set()
    await replicas.idle()
    assert answers(slack, GENERAL, first)[0].text.startswith("You said: one")
    assert answers(slack, GENERAL, second)[0].text.startswith("You said: two")


async def test_a_worker_needs_postgresql(replicas: Replicas, tmp_path: Path) -> None:
    """`python -m bot worker` on SQLite stops at once, saying why."""
    env = bot_env(replicas.slack, replicas.openai, tmp_path / "bot.sqlite3", "http")
    settings = load_settings(env | replicas.env, env_file=None, listening=False)
    with pytest.raises(StartupError, match="needs PostgreSQL"):
        await app.start(settings, listen=False)


async def test_a_message_recorded_by_a_replica_that_died_before_queueing_it_is_answered(
    replicas: Replicas,
) -> None:
    bot = await replicas.start("a")
    slack = replicas.slack
    # What a replica killed between recording the message (the ack) and queueing it leaves.
    event = slack.message_event(ALICE, GENERAL, f"<@{slack.bot_user_id}> still there?")
    key = ConversationKey(slack.team_id, GENERAL, event["ts"])
    turn = await bot.store.add_turn(key, event["ts"], ALICE, event["text"], False)
    assert turn is not None
    assert bot.queue is not None
    bot.queue.timings = dataclasses.replace(bot.queue.timings, unqueued_after=0.0)

    await bot.queue.sweep()  # (or the one it runs on its own, at start)
    await replicas.idle()
    assert texts(answers(slack, GENERAL, event["ts"])) == [
        f"You said: <@{slack.bot_user_id}> still there? (message 1 of this conversation)"
    ]
    assert await bot.queue.sweep() == 0, "taken back once"


async def test_a_replica_shutting_down_hands_its_running_answer_to_another(
    replicas: Replicas, caplog: pytest.LogCaptureFixture
) -> None:
    await replicas.start("a", SHUTDOWN_GRACE_SECONDS="0.2")
    slack, openai = replicas.slack, replicas.openai
    openai.model.gate = asyncio.Event()
    replicas.deliver_to("a")
    ts = await slack.mention(ALICE, GENERAL, "one")
    await slack.post(ALICE, GENERAL, "two", thread_ts=ts)
    await slack.wait_for(lambda: len(openai.model.turns) == 1)
    await replicas.start("b")
    with caplog.at_level(logging.INFO, logger="bot.jobs"):
        await replicas.stop("a")
    assert "event=turn_handed_back" in caplog.text
    shown = [m.text for m in slack.bot_replies(GENERAL, ts)]
    assert not any("restarting" in text for text in shown), shown

    openai.model.gate.set()
    await replicas.idle()
    shown = [m.text for m in slack.bot_replies(GENERAL, ts)]
    assert THINKING not in shown, "the cut-off answer was taken over, and ended"
    answers = [text for text in shown if text.startswith("You said: ")]
    assert [a.split(" ", 3)[2] for a in answers] == ["one", "two"], shown
    assert not any("cancel" in text for text in shown), "its run, cut short, was run afresh"


async def test_an_answer_handed_on_by_every_replica_of_a_rolling_deploy_is_still_answered(
    replicas: Replicas,
) -> None:
    """Handed back at shutdown is not a crash: however many replicas hand an answer on, it is
    never given up as one that kills the bot."""
    slack, openai = replicas.slack, replicas.openai
    openai.model.gate = asyncio.Event()
    names = [f"deploy{n}" for n in range(MAX_ATTEMPTS + 2)]
    await replicas.start(names[0], SHUTDOWN_GRACE_SECONDS="0.2")
    replicas.deliver_to(names[0])
    ts = await slack.mention(ALICE, GENERAL, "long one")
    await slack.wait_for(lambda: len(openai.model.turns) == 1)
    for taken, (leaving, coming) in enumerate(itertools.pairwise(names), start=2):
        await replicas.start(coming, SHUTDOWN_GRACE_SECONDS="0.2")
        await replicas.stop(leaving)
        await slack.wait_for(lambda taken=taken: len(openai.model.turns) == taken)
    openai.model.gate.set()
    await replicas.idle()
    assert texts(answers(slack, GENERAL, ts)) == [
        "You said: long one (message 1 of this conversation)"
    ]
    assert failure(Failure(GAVE_UP)) not in [m.text for m in slack.bot_replies(GENERAL, ts)]


async def test_while_draining_a_replica_turns_events_away_for_another_to_take(
    replicas: Replicas,
) -> None:
    bot = await replicas.start("a")
    slack = replicas.slack
    replicas.deliver_to("a")
    bot.health.stopping = True  # what SIGTERM does first
    app_mention, _, ts = mention_events(slack, "hello?")
    delivery = await slack.deliver(app_mention)
    assert delivery.status == 503, "Slack sends it again, and the load balancer elsewhere"
    assert await bot.store.turn_statuses(ConversationKey(slack.team_id, GENERAL, ts)) == []


async def until_ready(bot: app.Bot, timeout: float = 60) -> None:
    """Wait until /readyz would say ready (the database answers again)."""
    async with asyncio.timeout(timeout):
        while True:
            if not await bot.health.failed_checks():
                return
            await asyncio.sleep(0.2)


# --- the database goes away -------------------------------------------------------------------


async def _terminate_backends(server: str, application_name: str) -> int:
    """End every connection the bot has (as a database restart or failover would)."""
    admin = await psycopg.AsyncConnection.connect(server, autocommit=True)
    async with admin:
        cursor = await admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (application_name,),
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def test_the_bot_answers_on_when_its_database_connections_are_cut(
    replicas: Replicas, database_url: str, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"bot_{database_url[-12:]}"
    replicas.database_url = (
        sa.make_url(database_url)
        .update_query_dict({"application_name": name})
        .render_as_string(hide_password=False)
    )
    await replicas.start("a")
    slack = replicas.slack
    replicas.deliver_to("a")
    first = await slack.mention(ALICE, GENERAL, "before")
    await replicas.idle()
    assert await _terminate_backends(postgres_url, name) > 0
    with caplog.at_level(logging.WARNING, logger="bot.jobs"):
        await slack.post(ALICE, GENERAL, "after", thread_ts=first)
        assert all(d.status == 200 for d in slack.deliveries)
        await replicas.idle()
    assert texts(answers(slack, GENERAL, first)) == [
        "You said: before (message 1 of this conversation)",
        "You said: after (message 2 of this conversation)",
    ]
    assert words.NOT_RECORDED not in slack.ephemerals(GENERAL, ALICE)
    # Its job went on new connections at once: not deferred after the ack, nor held for long.
    assert "event=turn_defer_failed" not in caplog.text
    assert "event=turn_release_failed" not in caplog.text


async def test_a_message_that_cannot_be_recorded_is_acked_and_its_writer_told_and_the_bot_recovers(
    replicas: Replicas, database_url: str
) -> None:
    url = sa.make_url(database_url)
    proxy = DatabaseProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    replicas.database_url = url.set(port=proxy.listen_port).render_as_string(hide_password=False)
    try:
        bot = await replicas.start("a")
        slack = replicas.slack
        replicas.deliver_to("a")
        first = await slack.mention(ALICE, GENERAL, "before")
        await replicas.idle()

        await proxy.cut()
        lost = await slack.mention(ALICE, GENERAL, "while the database is away")
        assert [d.status for d in slack.deliveries[-2:]] == [200, 200], "acked all the same"
        await slack.wait_for(lambda: words.NOT_RECORDED in slack.ephemerals(GENERAL, ALICE))
        assert slack.ephemerals(GENERAL, ALICE).count(words.NOT_RECORDED) == 1

        await proxy.restore()
        await until_ready(bot)
        await slack.post(ALICE, GENERAL, "after", thread_ts=first)
        await replicas.idle()
        assert texts(answers(slack, GENERAL, first)) == [
            "You said: before (message 1 of this conversation)",
            "You said: after (message 2 of this conversation)",
        ]
        assert slack.bot_replies(GENERAL, lost) == [], "nothing was taken, nothing is answered"
    finally:
        for name in list(replicas.bots):
            await replicas.stop(name)
        await proxy.cut()


async def test_an_answer_written_while_the_database_is_away_is_answered_once(
    replicas: Replicas, database_url: str, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = sa.make_url(database_url)
    proxy = DatabaseProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    replicas.database_url = url.set(port=proxy.listen_port).render_as_string(hide_password=False)
    try:
        await replicas.start("a")
        await replicas.start("b")
        slack, openai = replicas.slack, replicas.openai
        openai.model.gate = asyncio.Event()
        replicas.deliver_to("a")
        ts = await slack.mention(ALICE, GENERAL, "take your time")
        await slack.wait_for(lambda: len(openai.model.turns) == 1)

        await proxy.cut()  # for every replica: the database restarts, or fails over
        options = str(url.query["options"])
        await until_heartbeats_are_stale(postgres_url, options, QUICK.stalled_after)
        with caplog.at_level(logging.INFO, logger="bot.jobs"):
            await proxy.restore()
            for bot in replicas.bots.values():
                await until_ready(bot)
            openai.model.gate.set()
            await replicas.idle()
        assert texts(answers(slack, GENERAL, ts)) == [
            "You said: take your time (message 1 of this conversation)"
        ]
        assert len(slack.bot_replies(GENERAL, ts)) == 1
        assert "event=stalled_turn_retried" not in caplog.text, "the living replica kept its turn"
    finally:
        for name in list(replicas.bots):
            await replicas.stop(name)
        await proxy.cut()


async def until_heartbeats_are_stale(server: str, options: str, seconds: float) -> None:
    """Wait until the database holds no worker heartbeat newer than `seconds` (as every
    replica's looks after an outage that long)."""
    schema = options.split("=", 1)[1]
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as admin:
        async with asyncio.timeout(30):
            while True:
                cursor = await admin.execute(
                    f"SELECT count(*) FROM {schema}.procrastinate_workers"
                    " WHERE last_heartbeat > now() - make_interval(secs => %s)",
                    (seconds,),
                )
                row = await cursor.fetchone()
                if row is not None and row[0] == 0:
                    return
                await asyncio.sleep(0.2)
