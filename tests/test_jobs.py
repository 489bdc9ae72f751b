"""Turns as jobs on PostgreSQL: replicas share one queue, in each thread's order (issue 13.2-6).

These run against the real PostgreSQL server TEST_DATABASE_URL names, each test in a database of
its own (LISTEN/NOTIFY channels are per database), with replicas as real job workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot.jobs import JobTimings, JobTurnQueue, apply_job_schema
from bot.messages import ConversationKey
from tests.job_replicas import FAST, THREAD, Journal, RecordingHandler, turn


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one test; skipped (saying why) without a server."""
    server = os.environ.get("TEST_DATABASE_URL", "").strip()
    problem = "TEST_DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"
    if server:
        try:
            admin = await psycopg.AsyncConnection.connect(
                server, autocommit=True, connect_timeout=5
            )
            problem = ""
        except psycopg.Error as exc:
            problem = f"PostgreSQL is not reachable: {' '.join(str(exc).split())}"
    if problem:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {problem}")
        pytest.skip(problem)
    name = f"jobs_{uuid.uuid4().hex[:12]}"
    async with admin:
        await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(**{**conninfo_to_dict(server), "dbname": name})
    finally:
        admin = await psycopg.AsyncConnection.connect(server, autocommit=True)
        async with admin:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


class Replicas:
    """Replicas of the bot's job queue in this process, all writing to one journal."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.journal = Journal()
        self.queues: dict[str, JobTurnQueue] = {}

    async def start(
        self,
        name: str,
        max_in_flight: int = 10,
        *,
        take_jobs: bool = True,
        timings: JobTimings = FAST,
    ) -> JobTurnQueue:
        queue = JobTurnQueue(
            self.database, max_in_flight, name=name, timings=timings, take_jobs=take_jobs
        )
        await queue.open()
        queue.start(RecordingHandler(self.journal, name))  # type: ignore[arg-type]
        self.queues[name] = queue
        return queue

    async def stop_all(self) -> None:
        for queue in list(self.queues.values()):
            await queue.drain(0)
        self.queues.clear()


@pytest.fixture
async def replicas(database: str) -> AsyncIterator[Replicas]:
    group = Replicas(database)
    try:
        yield group
    finally:
        for gate in group.journal.release.values():
            gate.set()
        await group.stop_all()


async def test_a_threads_messages_are_answered_one_at_a_time_in_order_by_any_replica(
    replicas: Replicas,
) -> None:
    a = await replicas.start("a")
    b = await replicas.start("b")
    journal = replicas.journal
    # Three messages of one thread, taken by alternating replicas.
    for number, (queue, ts) in enumerate([(a, "101.1"), (b, "102.1"), (a, "103.1")], 1):
        await queue.submit(turn(number, ts))
    await journal.until(lambda entries: len(journal.of("placeholder")) == 3)
    assert sorted(journal.of("placeholder")) == ["101.1", "102.1", "103.1"]

    for ts in ["101.1", "102.1", "103.1"]:
        await journal.until(
            lambda entries, ts=ts: "started" in {e[0] for e in entries if e[2] == ts}
        )
        # While one runs, the next does not start.
        assert journal.of("started")[-1] == ts
        assert len(journal.of("started")) == len(journal.of("answered")) + 1
        journal.gate(ts).set()
        await journal.until(
            lambda entries, ts=ts: ("answered", ts) in {(e[0], e[2]) for e in entries}
        )
    assert journal.of("answered") == ["101.1", "102.1", "103.1"]


async def test_different_threads_are_answered_at_once_up_to_the_limit_per_replica(
    replicas: Replicas,
) -> None:
    a = await replicas.start("a", max_in_flight=2)
    threads = [ConversationKey("T1", f"C{n}", "100.1") for n in range(3)]
    for number, key in enumerate(threads, 1):
        await a.submit(turn(number, f"{200 + number}.1", key))
    journal = replicas.journal
    await journal.until(lambda entries: len([e for e in entries if e[0] == "started"]) == 2)
    # The third thread waits for a free slot on this replica; another replica takes it.
    await replicas.start("b", max_in_flight=2)
    await journal.until(lambda entries: len([e for e in entries if e[0] == "started"]) == 3)
    assert {replica for what, replica, _ in journal.entries if what == "started"} == {"a", "b"}


async def test_stop_pressed_on_one_replica_cancels_the_turn_running_on_another(
    replicas: Replicas,
) -> None:
    a = await replicas.start("a")
    await a.submit(turn(1, "101.1"))
    journal = replicas.journal
    await journal.until(lambda entries: ("started", "a", "101.1") in entries)
    b = await replicas.start("b")  # b runs nothing: the press lands there
    assert await b.stop(THREAD, "101.1")
    await journal.until(lambda entries: ("stopped", "a", "101.1") in entries, timeout=10)
    assert not await b.stop(THREAD, "101.1")  # a second press: nothing left to stop
    # The thread goes on.
    await b.submit(turn(2, "102.1"))
    await journal.until(
        lambda entries: any(e[:1] == ("started",) and e[2] == "102.1" for e in entries)
    )


async def test_stop_on_a_waiting_message_skips_it_from_any_replica(replicas: Replicas) -> None:
    a = await replicas.start("a")
    b = await replicas.start("b")
    await a.submit(turn(1, "101.1"))
    await a.submit(turn(2, "102.1"))
    journal = replicas.journal
    await journal.until(lambda entries: any(e[0] == "started" for e in entries))
    assert await b.stop(THREAD, "102.1")
    assert ("skipped", "b", "102.1") in journal.entries  # said by the replica that got the press
    journal.gate("101.1").set()
    await journal.until(lambda entries: any(e[0] == "answered" for e in entries))
    await a.submit(turn(3, "103.1"))
    await journal.until(lambda entries: any(e[0] == "started" and e[2] == "103.1" for e in entries))
    assert "102.1" not in journal.of("started")


async def test_a_replica_shutting_down_finishes_its_turn_and_leaves_the_rest_to_another(
    replicas: Replicas,
) -> None:
    a = await replicas.start("a")
    await a.submit(turn(1, "101.1"))
    await a.submit(turn(2, "102.1"))
    journal = replicas.journal
    await journal.until(lambda entries: ("started", "a", "101.1") in entries)
    b = await replicas.start("b")
    draining = asyncio.create_task(a.drain(30))
    await asyncio.sleep(0)  # drain's first step (no awaiting before it): a takes no more jobs
    journal.gate("101.1").set()  # the answer in progress finishes within the grace
    await draining
    replicas.queues.pop("a")
    assert ("answered", "a", "101.1") in journal.entries
    await journal.until(lambda entries: ("started", "b", "102.1") in entries)
    assert not [e for e in journal.entries if e[0] in ("cut off", "handed back")]
    assert b.name == "b"


async def test_a_killed_replicas_turn_is_taken_over_and_its_thread_goes_on(
    replicas: Replicas, database: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.job_replicas",
        database,
        "doomed",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        assert json.loads(await process.stdout.readline())[0] == "ready"
        listener = await replicas.start("listener", take_jobs=False)
        await listener.submit(turn(1, "101.1"))
        await listener.submit(turn(2, "102.1"))
        line = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert line == ["started", "doomed", "101.1"]
        await replicas.start("survivor")
    finally:
        process.kill()
        await process.wait()
    journal = replicas.journal
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    await journal.until(lambda entries: ("taken over", "survivor", "101.1") in entries, timeout=30)
    assert loop.time() - killed_at < FAST.stalled_after + 3 * FAST.heartbeat + 5
    # The thread's next message is answered after it, not before, and not lost.
    await journal.until(lambda entries: ("started", "survivor", "102.1") in entries)
    assert journal.entries.index(("taken over", "survivor", "101.1")) < journal.entries.index(
        ("started", "survivor", "102.1")
    )


async def test_replicas_starting_together_create_the_job_tables_once(database: str) -> None:
    created = await asyncio.gather(*(apply_job_schema(database) for _ in range(3)))
    assert sorted(created) == [False, False, True]
    assert not await apply_job_schema(database)


async def test_a_turn_whose_replica_died_before_showing_its_placeholder_is_shown_again(
    replicas: Replicas,
) -> None:
    held = dataclasses.replace(FAST, hold=2.0)
    a = await replicas.start("a", timings=held)
    journal = replicas.journal
    journal.stuck.add("101.1")
    # Both queued (before the ack), each held until its placeholder shows: never.
    await a.submit(turn(1, "101.1"))
    await a.submit(turn(2, "102.1"))
    await a.drain(0)  # gone before it could say where the placeholders are
    replicas.queues.pop("a")
    await replicas.start("b", timings=held)
    await journal.until(lambda entries: ("shown again", "b", "101.1") in entries)
    await journal.until(lambda entries: ("started", "b", "101.1") in entries)
    assert "102.1" not in journal.of("started"), "the thread's order holds"
    journal.gate("101.1").set()
    await journal.until(lambda entries: ("started", "b", "102.1") in entries)


async def test_a_placeholder_slow_to_show_keeps_its_turn_for_the_replica_showing_it(
    replicas: Replicas, database: str
) -> None:
    held = dataclasses.replace(FAST, hold=1.0)
    a = await replicas.start("a", timings=held)
    await replicas.start("b", timings=held)
    journal = replicas.journal
    journal.stuck.add("101.1")
    await a.submit(turn(1, "101.1"))
    # Slack keeps the placeholder waiting for three holds and more.
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as db:
        cursor = await db.execute("SELECT clock_timestamp()")
        row = await cursor.fetchone()
        assert row is not None
        queued = row[0]
        async with asyncio.timeout(30):
            while True:
                cursor = await db.execute(
                    "SELECT clock_timestamp() - %s > interval '3 s'", (queued,)
                )
                late = await cursor.fetchone()
                if late is not None and late[0]:
                    break
                await asyncio.sleep(0.2)
    journal.gate("placeholder 101.1").set()
    await journal.until(lambda entries: any(e[0] == "started" for e in entries))
    assert journal.entries[0] == ("placeholder", "a", "101.1")
    assert "shown again" not in {e[0] for e in journal.entries}
