"""Several real bots on one PostgreSQL database, as a team runs them behind a load balancer.

Each replica is `python -m bot` in HTTP mode, on a port of its own that it keeps across
restarts. The emulators run in the test and outlive every replica: the emulated Slack sends
each delivery to the next replica in turn, and sends again (to the next one) whatever was not
acked, as Slack does when a replica is down or restarting.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from tests.test_operations import process_env

SLACK_REDELIVERIES = 3  # Slack sends an event it did not see acked again, three times


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Replica:
    """One `python -m bot` process; its log (stderr) is read as it goes."""

    name: str
    env: dict[str, str]
    cwd: Path
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    log: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Start it and return once it serves events (it logs event=started then)."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            env=process_env(self.env | {"PORT": str(self.port)}),
            cwd=self.cwd,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        serving: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(self.process, serving))
        await asyncio.wait_for(serving, 60)

    async def _read(
        self, process: asyncio.subprocess.Process, serving: asyncio.Future[None]
    ) -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace")
            self.log.append(line)
            if re.search(r"event=started mode=http port=", line) and not serving.done():
                serving.set_result(None)
        if not serving.done():
            serving.set_exception(RuntimeError(f"{self.name} exited:\n" + "".join(self.log[-20:])))

    async def kill(self) -> None:
        """SIGKILL: gone at once, as an OOM kill or a lost node."""
        await self._end(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM, as a rolling deploy stops it; return once it has exited."""
        await self._end(signal.SIGTERM)

    async def _end(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            self.process.send_signal(sig)
        try:
            await asyncio.wait_for(self.process.wait(), 60)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader

    async def metric(self, name: str, **labels: str) -> float:
        """A sample of its /metrics, as Prometheus reads it (summed over the samples that have
        these `labels`)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}/metrics") as response,
        ):
            text = await response.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def logged(self, text: str) -> list[str]:
        return [line for line in self.log if text in line]


@dataclass
class Replicas:
    """N replicas on one database; the emulated Slack spreads deliveries over them."""

    slack: SlackEmulator
    openai: OpenAIEmulator
    env: dict[str, str]
    cwd: Path
    database: str
    members: list[Replica] = field(default_factory=list)

    async def start(self, count: int) -> list[Replica]:
        """Start `count` replicas, one after the other (the first creates the tables)."""
        for number in range(len(self.members) + 1, len(self.members) + count + 1):
            replica = Replica(f"replica {number}", dict(self.env), self.cwd)
            self.members.append(replica)
            await replica.start()
        self.slack.events_urls = [replica.url for replica in self.members]
        self.slack.redeliveries = SLACK_REDELIVERIES
        return self.members

    @contextlib.contextmanager
    def sending_only_to(self, replica: Replica) -> Iterator[None]:
        """The load balancer sends what Slack delivers meanwhile to this replica."""
        self.slack.events_urls = [replica.url]
        try:
            yield
        finally:
            self.slack.events_urls = [member.url for member in self.members]

    async def running_a_turn(self, timeout: float = 30.0) -> Replica:
        """The replica whose metrics say it is running a turn now."""
        found: list[Replica] = []

        async def one_is_running() -> bool:
            for replica in self.members:
                if replica.alive and await replica.metric("slackbot_turns_running") > 0:
                    found.append(replica)
                    return True
            return False

        await until(one_is_running, timeout)
        return found[0]

    async def until_no_turn_is_open(self, timeout: float = 60.0) -> None:
        """Wait until every turn taken has ended and no job is left to run (so that an answer
        given twice would have shown by now)."""

        async def none_open() -> bool:
            async with await psycopg.AsyncConnection.connect(self.database) as connection:
                cursor = await connection.execute(
                    "SELECT count(*) FROM turns WHERE status IN ('queued', 'running')"
                )
                turns = await cursor.fetchone()
                cursor = await connection.execute(
                    "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                    if await _has_table(connection, "procrastinate_jobs")
                    else "SELECT 0"
                )
                jobs = await cursor.fetchone()
            return turns is not None and jobs is not None and turns[0] == jobs[0] == 0

        await until(none_open, timeout)

    async def close(self) -> None:
        for replica in self.members:
            await replica.kill()

    def logged(self, text: str) -> list[str]:
        return [line for replica in self.members for line in replica.logged(text)]


async def _has_table(connection: psycopg.AsyncConnection[Any], name: str) -> bool:
    cursor = await connection.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def until(
    condition: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.1
) -> None:
    """Wait until `condition()` holds (for state only a request can read, like /metrics)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {condition.__qualname__}")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def replica_database_url(server: str) -> AsyncIterator[str]:
    """A new PostgreSQL database on `server` for one test, dropped afterwards. A database, not
    a schema: job notifications (LISTEN/NOTIFY) are per database, and tests running at once
    must not hear each other's."""
    name = f"replicas_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        async with await psycopg.AsyncConnection.connect(server, autocommit=True) as admin:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
