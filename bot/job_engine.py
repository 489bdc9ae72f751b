"""procrastinate, adapted to turns: the few SQL statements the bot adds to its tables, its job
manager made to live through a database that goes away, and the retry that hands a turn cut off
at shutdown to another replica. bot/jobs.py builds the turn queue on it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, LiteralString, TypeVar

import procrastinate
import psycopg
from procrastinate.exceptions import ConnectorException, UniqueViolation
from procrastinate.jobs import Job, Status
from procrastinate.manager import JobManager
from procrastinate.schema import SchemaManager
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bot.store.database import SESSION_ENDED

log = logging.getLogger(__name__)
T = TypeVar("T")

TURN_QUEUE = "turns"
# Any constants: they serialise the replicas that apply the schema, or sweep, at once.
SCHEMA_LOCK = 7_313_013
SWEEP_LOCK = 7_313_014
# procrastinate notifies on the channel "procrastinate_queue_v1#QUEUE"; PostgreSQL names are at
# most 63 bytes.
QUEUE_NAME_BYTES = 63 - len("procrastinate_queue_v1#")

# Let a held job run, saying where its placeholder is, and wake the workers.
RELEASE = """
WITH released AS (
    UPDATE procrastinate_jobs
    SET args = args || jsonb_build_object('reply', %(reply)s::text),
        scheduled_at = NULL,
        queue_name = %(queue)s
    WHERE id = %(job_id)s AND status = 'todo'
    RETURNING id, queue_name
)
SELECT pg_notify(
    'procrastinate_queue_v1#' || queue_name,
    json_build_object('type', 'job_inserted', 'job_id', id)::text
) FROM released
"""
# A held job waits longer: its placeholder is still being shown.
HOLD_LONGER = """
UPDATE procrastinate_jobs SET scheduled_at = now() + make_interval(secs => %(seconds)s)
WHERE id = %(job_id)s AND status = 'todo' AND scheduled_at IS NOT NULL
"""
# A turn's job, by the queueing lock that keeps it to one job per turn.
HELD = (
    "SELECT id FROM procrastinate_jobs WHERE queueing_lock = %(queueing_lock)s AND status = 'todo'"
)
# Is any job waiting or running?
OPEN_JOBS = """
SELECT id FROM procrastinate_jobs
WHERE queue_name = ANY(%(queues)s) AND status IN ('todo', 'doing') LIMIT 1
"""
# How many jobs wait (held for their placeholder, behind their thread, or for a free worker).
WAITING_JOBS = """
SELECT count(*) AS waiting FROM procrastinate_jobs
WHERE queue_name = ANY(%(queues)s) AND status = 'todo'
"""
# Those of a list of turns that a job carries.
TURNS_WITH_JOBS = (
    "SELECT (args->>'turn_id')::bigint FROM procrastinate_jobs"
    " WHERE task_name = %s AND (args->>'turn_id')::bigint = ANY(%s)"
)

_HEARTBEAT = "SELECT procrastinate_update_heartbeat_v1(%(worker_id)s)"
_WAKE = "SELECT pg_notify(%(channel)s, %(payload)s)"
# procrastinate's finish_job, and in the same trip the workers woken when a turn of the same
# thread waits (only then: else every answer would send every worker looking).
_FINISH_AND_WAKE = """
SELECT procrastinate_finish_job_v1(%(job_id)s, %(status)s, %(delete_job)s),
    (SELECT pg_notify(%(channel)s, %(payload)s) WHERE EXISTS (
        SELECT 1 FROM procrastinate_jobs WHERE lock = %(lock)s AND status = 'todo'))
"""


class TurnConnector(procrastinate.PsycopgConnector):
    """procrastinate's connector with its connections in autocommit and handed out unchecked.

    Each of its queries is one statement: in a transaction, BEGIN and COMMIT cost two more
    round trips, and the pool's check before each query a third. Instead, a query whose
    connection the server had ended (a restart, a fail-over, pg_terminate_backend) runs again
    once, on connections checked then, as the store's statements do."""

    def __init__(self, conninfo: str, timeout: float) -> None:
        super().__init__(
            conninfo=conninfo, timeout=timeout, configure=_autocommit, pool_factory=_unchecked
        )

    async def execute_query_async(self, query: LiteralString, **arguments: Any) -> None:
        await self._again_if_ended(super().execute_query_async, query, arguments)

    async def execute_query_one_async(
        self, query: LiteralString, **arguments: Any
    ) -> dict[str, Any]:
        return await self._again_if_ended(super().execute_query_one_async, query, arguments)

    async def execute_query_all_async(
        self, query: LiteralString, **arguments: Any
    ) -> list[dict[str, Any]]:
        return await self._again_if_ended(super().execute_query_all_async, query, arguments)

    async def _again_if_ended(
        self, execute: Callable[..., Awaitable[T]], query: LiteralString, arguments: dict[str, Any]
    ) -> T:
        try:
            return await execute(query, **arguments)
        except ConnectorException as exc:
            cause = exc.__cause__
            if not isinstance(cause, psycopg.OperationalError) or (
                cause.sqlstate is not None and cause.sqlstate not in SESSION_ENDED
            ):
                raise
        await self.pool.check()  # the others pooled are likely ended too
        return await execute(query, **arguments)


async def _autocommit(connection: psycopg.AsyncConnection[Any]) -> None:
    await connection.set_autocommit(True)


def _unchecked(**settings: Any) -> AsyncConnectionPool[Any]:
    settings.pop("check", None)
    return AsyncConnectionPool(**settings)


class TurnJobs(JobManager):
    """procrastinate's job manager, with two changes.

    Workers hear of new jobs, not of a lock set free: without a word, a thread's next message
    would wait for the next poll once the one before it is answered (or handed back); so the
    workers are told.

    A worker stops at the first failed query (a heartbeat, a fetch, its listening connection)
    and, stopping, stops its heartbeat while its turns run on: after `stalled_after` the other
    replicas would take those turns over while they still run here. So while the database is
    away, the worker keeps running, says nothing new, and tries again; a finished job's end is
    written once it can be.
    """

    patience = 10.0  # seconds a finished job's end is tried again
    wake_queue = TURN_QUEUE  # the queue whose workers are woken

    def __init__(self, connector: procrastinate.PsycopgConnector, conninfo: str) -> None:
        super().__init__(connector)
        self.conninfo = conninfo
        # Heartbeats go on a connection of their own, made again at once when it breaks: from
        # the pool they would wait for its reconnection, which backs off for seconds after an
        # outage, and meanwhile the other replicas would take this one for dead.
        self._beat: psycopg.AsyncConnection[Any] | None = None

    async def finish_job(self, job: Job, status: Status, delete_job: bool) -> None:
        await self._patiently(
            lambda: self.connector.execute_query_async(
                _FINISH_AND_WAKE,
                job_id=job.id,
                status=status.value,
                delete_job=delete_job,
                lock=job.lock,
                **self._wake(job),
            )
        )

    async def retry_job(self, job: Job, *args: Any, **kwargs: Any) -> None:
        await self._patiently(lambda: super(TurnJobs, self).retry_job(job, *args, **kwargs))
        try:
            await self.connector.execute_query_async(_WAKE, **self._wake(job))
        except ConnectorException as exc:  # the workers' next poll finds the job
            log.warning("event=job_wake_failed error=%s", error_text(exc))

    async def fetch_job(self, queues: Iterable[str] | None, worker_id: int) -> Job | None:
        try:
            return await super().fetch_job(queues, worker_id)
        except UniqueViolation:
            # Two workers took two turns of one thread at the same moment: one of them may run.
            # This one looks again when the other ends.
            return None
        except ConnectorException as exc:
            log.warning("event=job_fetch_failed error=%s", error_text(exc))
            return None  # the next poll tries again

    async def update_heartbeat(self, worker_id: int) -> None:
        try:
            if self._beat is None or self._beat.broken or self._beat.closed:
                self._beat = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            await self._beat.execute(_HEARTBEAT, {"worker_id": worker_id})
        except psycopg.Error as exc:
            log.warning("event=heartbeat_failed error=%s", error_text(exc))
            await self.close()

    async def close(self) -> None:
        if self._beat is not None:
            await self._beat.close()
            self._beat = None

    async def listen_for_jobs(
        self, *, on_notification: Any, queues: Iterable[str] | None = None
    ) -> None:
        pause = 1.0
        loop = asyncio.get_running_loop()
        heard = [queue for queue in queues or [] if not queue.endswith("~")] or None
        while True:
            began = loop.time()
            try:
                await super().listen_for_jobs(on_notification=on_notification, queues=heard)
            except ConnectorException as exc:
                log.warning(
                    "event=job_listener_failed retry_in=%s error=%s", pause, error_text(exc)
                )
            if loop.time() - began > 60:
                pause = 1.0  # it listened for a while: a new outage
            await asyncio.sleep(pause)  # meanwhile the workers poll
            pause = min(pause * 2, 30.0)

    async def _patiently(self, write: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.patience
        while True:
            try:
                return await write()
            except ConnectorException as exc:
                if not unreachable(exc) or loop.time() >= give_up:
                    raise
                await asyncio.sleep(1.0)

    def _wake(self, job: Job) -> dict[str, str]:
        return {
            "channel": f"procrastinate_queue_v1#{self.wake_queue}",
            "payload": json.dumps({"type": "job_inserted", "job_id": job.id}),
        }


class HandBackAtShutdown(procrastinate.BaseRetryStrategy):
    """A turn cut off by its replica's shutdown goes back to the queue at once (another replica
    takes it over); a turn that failed is not run again."""

    def get_retry_decision(
        self, *, exception: BaseException, job: Job
    ) -> procrastinate.RetryDecision | None:
        if isinstance(exception, asyncio.CancelledError):
            return procrastinate.RetryDecision()
        return None


async def apply_job_schema(conninfo: str) -> bool:
    """Create procrastinate's tables unless they exist (replicas starting together apply it
    once); True when it was created now."""
    connection = await psycopg.AsyncConnection.connect(conninfo)
    async with connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        cursor = await connection.execute("SELECT to_regclass('procrastinate_jobs')")
        row = await cursor.fetchone()
        if row is not None and row[0] is not None:
            return False
        await connection.execute(SchemaManager.get_schema())
    log.info("event=job_schema_created")
    return True


async def queue_name(conninfo: str) -> str:
    """The turns' queue in this database: one per schema, so that replicas of bots on other
    schemas of the same database (whose notifications all share one namespace) never hear of
    these jobs (an abort request names a job id, which each schema counts from 1)."""
    connection = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    async with connection:
        cursor = await connection.execute("SELECT current_schema()")
        row = await cursor.fetchone()
    schema = str(row[0]) if row is not None and row[0] is not None else "public"
    if schema == "public":
        return TURN_QUEUE
    return f"{TURN_QUEUE}@{schema}".encode()[: QUEUE_NAME_BYTES - 1].decode(errors="ignore")


def held_queue(queue: str) -> str:
    """Where a turn's job waits until its placeholder is shown: a queue the workers take jobs
    from (a job whose hold ended) but do not listen to, so that queueing a job wakes nobody."""
    return queue + "~"


def unreachable(exc: BaseException) -> bool:
    """The database did not answer (rather than refused what was asked)."""
    return isinstance(exc.__cause__, psycopg.OperationalError | PoolTimeout)


def error_text(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {' '.join(str(cause).split())[:200]}"
