"""Turns as durable jobs on PostgreSQL, with procrastinate: any replica answers any turn.

Each turn is one job whose lock names its conversation ("team:channel:thread"): procrastinate runs
the jobs of one lock one at a time, oldest first, and jobs of different locks concurrently. Every
replica runs a worker (at most MAX_TURNS_IN_FLIGHT turns at once) and takes whichever job is next.
The replica that took the event posts the placeholder at once; the job carries where it is, so the
replica that answers writes into it.

Stop from any replica asks procrastinate to abort the job: a job still waiting is cancelled (the
replica that got the press says *Stopped.*); a running one is cancelled by its worker, which hears
the request over LISTEN/NOTIFY. A worker sends a heartbeat every few seconds; the jobs of a worker
silent for `stalled_after` seconds (a replica killed) are handed to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import procrastinate
import psycopg
from procrastinate.exceptions import ConnectorException, NoResult
from procrastinate.job_context import AbortReason, JobContext
from procrastinate.jobs import Status
from procrastinate.schema import SchemaManager
from procrastinate.worker import Worker

from bot.messages import ConversationKey, IncomingMessage, SharedFile
from bot.turn_queue import QueuedTurn, TurnHandler

if TYPE_CHECKING:
    from bot.conversation import Reply

log = logging.getLogger(__name__)

TURN_TASK = "answer_turn"
TURN_QUEUE = "turns"
_SCHEMA_LOCK = 7_313_013  # any constant: serialises replicas that apply the schema at once


@dataclass(frozen=True)
class JobTimings:
    heartbeat: float = 5.0  # a worker says it is alive this often
    stalled_after: float = 20.0  # a worker silent this long is dead: its turns go to others
    poll: float = 5.0  # fallback for LISTEN/NOTIFY: look for new jobs and aborts this often


async def apply_job_schema(conninfo: str) -> bool:
    """Create procrastinate's tables unless they exist (replicas starting together apply it
    once); True when it was created now."""
    connection = await psycopg.AsyncConnection.connect(conninfo)
    async with connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        cursor = await connection.execute("SELECT to_regclass('procrastinate_jobs')")
        row = await cursor.fetchone()
        if row is not None and row[0] is not None:
            return False
        await connection.execute(SchemaManager.get_schema())
    log.info("event=job_schema_created")
    return True


def conversation_lock(key: ConversationKey) -> str:
    return f"{key.team_id}:{key.channel_id}:{key.thread_ts}"


class JobTurnQueue:
    """A TurnQueue on PostgreSQL: turns are procrastinate jobs, run by any replica's worker."""

    def __init__(
        self,
        conninfo: str,
        max_in_flight: int,
        *,
        name: str = "bot",
        timings: JobTimings = JobTimings(),
        take_jobs: bool = True,
    ) -> None:
        self.conninfo = conninfo
        self.timings = timings
        self.name = name
        self.take_jobs = take_jobs  # False: this process only posts jobs (no worker)
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
        self._task = self.app.task(name=TURN_TASK, queue=TURN_QUEUE, pass_context=True)(
            self._run_job
        )
        self._worker = Worker(
            self.app,
            queues=[TURN_QUEUE],
            name=name,
            concurrency=max_in_flight,
            install_signal_handlers=False,
            delete_jobs="successful",
            update_heartbeat_interval=timings.heartbeat,
            stalled_worker_timeout=timings.stalled_after,
            fetch_job_polling_interval=timings.poll,
            abort_job_polling_interval=timings.poll,
        )
        self._handler: TurnHandler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def open(self) -> None:
        """Connect, and create the job tables if this database has none yet."""
        await apply_job_schema(self.conninfo)
        await self.app.open_async()

    def start(self, handler: TurnHandler) -> None:
        self._handler = handler
        if self.take_jobs:
            self._tasks = [
                asyncio.create_task(self._work(), name="turn worker"),
                asyncio.create_task(self._take_over_stalled(), name="stalled turns"),
            ]

    @property
    def handler(self) -> TurnHandler:
        assert self._handler is not None, "start() the queue before submitting turns"
        return self._handler

    async def holds(self, key: ConversationKey) -> bool:
        return bool(await self._open_jobs(key))

    async def submit(self, turn: QueuedTurn) -> None:
        reply = await self.handler.begin(turn)
        await self._task.configure(lock=conversation_lock(turn.message.key)).defer_async(
            turn_id=turn.turn_id, message=_message_data(turn.message), reply=reply.ref
        )

    async def stop(self, key: ConversationKey, message_ts: str) -> bool:
        job = next(
            (j for j in await self._open_jobs(key) if j.task_kwargs["message"]["ts"] == message_ts),
            None,
        )
        if job is None or job.id is None or job.abort_requested:
            return False
        if not await self.app.job_manager.cancel_job_by_id_async(job.id, abort=True):
            return False
        log.info("event=turn_stop_requested channel=%s ts=%s", key.channel_id, message_ts)
        try:
            status = await self.app.job_manager.get_job_status_async(job.id)
        except NoResult:  # it was running, and has already ended (and been deleted)
            status = None
        if status == Status.CANCELLED:
            # It never started: no worker will hear of it, so it is said here.
            turn = _turn_of(job.task_kwargs)
            await self.handler.stopped(turn, await self._reply(turn, job.task_kwargs))
        # Otherwise the worker running it cancels it, and says Stopped.
        return True

    def turn_counts(self) -> tuple[int, int]:
        # The waiting turns are jobs in the shared database, counted by no one replica.
        return 0, self._running

    async def idle(self) -> None:
        """Return once no turn runs in this process (others may run elsewhere)."""
        await self._idle.wait()

    async def drain(self, grace: float) -> None:
        """Take no more jobs; running turns get `grace` seconds, then are cut short. Jobs not
        started stay in the database for the other replicas (or this one's next start)."""
        self._worker.shutdown_graceful_timeout = grace
        self._worker.stop()  # type: ignore[no-untyped-call]
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.app.close_async()

    async def _open_jobs(self, key: ConversationKey) -> list[Any]:
        jobs = await self.app.job_manager.list_jobs_async(
            task=TURN_TASK, lock=conversation_lock(key)
        )
        return [job for job in jobs if job.status in (Status.TODO.value, Status.DOING.value)]

    async def _reply(self, turn: QueuedTurn, job_data: dict[str, Any]) -> Reply | None:
        try:
            return await self.handler.reattach(turn, str(job_data["reply"]))
        except Exception:
            log.exception("event=reattach_failed turn=%s", turn.turn_id)
            return None

    async def _work(self) -> None:
        try:
            await self._worker.run()  # type: ignore[no-untyped-call]
        except Exception:
            log.exception("event=turn_worker_failed")

    async def _run_job(self, context: JobContext, /, **job: Any) -> None:
        turn = _turn_of(job)
        self._running += 1
        self._idle.clear()
        try:
            reply = await self.handler.reattach(turn, str(job["reply"]))
            if context.job.attempts:
                # A replica died (or was cut off) while answering it.
                await self.handler.taken_over(turn, reply)
                return
            await self.handler.take(
                turn, reply, lambda: context.abort_reason() == AbortReason.USER_REQUEST
            )
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def _take_over_stalled(self) -> None:
        """Hand the turns of dead workers to the living (each replica looks; one wins a job)."""
        manager = self.app.job_manager
        while True:
            await asyncio.sleep(self.timings.heartbeat)
            try:
                stalled = await manager.get_stalled_jobs(
                    queue=TURN_QUEUE,
                    task_name=TURN_TASK,
                    seconds_since_heartbeat=self.timings.stalled_after,
                )
                for job in stalled:
                    with contextlib.suppress(ConnectorException):  # another replica was first
                        await manager.retry_job(job)
                        log.info("event=turn_taken_over job=%s lock=%s", job.id, job.lock)
            except Exception:
                log.exception("event=stalled_turns_check_failed")


def _message_data(message: IncomingMessage) -> dict[str, Any]:
    return asdict(message)


def _turn_of(job: dict[str, Any]) -> QueuedTurn:
    data = dict(job["message"])
    data["key"] = ConversationKey(**data["key"])
    data["files"] = tuple(SharedFile(**f) for f in data["files"])
    return QueuedTurn(int(job["turn_id"]), IncomingMessage(**data))
