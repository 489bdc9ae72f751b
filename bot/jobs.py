"""Turns as durable jobs on PostgreSQL, with procrastinate: any replica answers any turn.

Each turn is one job whose lock names its conversation ("team:channel:thread"): procrastinate runs
the jobs of one lock one at a time, oldest first, and jobs of different locks concurrently. Every
replica runs a worker (at most MAX_TURNS_IN_FLIGHT turns at once) and takes whichever job is next.
The replica that took the event posts the placeholder at once; the job carries where it is, so the
replica that answers writes into it.

Stop from any replica asks procrastinate to abort the job: a job still waiting is cancelled (the
replica that got the press says *Stopped.*); a running one is cancelled by its worker, which hears
the request over LISTEN/NOTIFY. A worker sends a heartbeat every few seconds; the jobs of a worker
silent for `stalled_after` seconds (a replica killed) are handed to the others. A replica shutting
down hands the turns it could not finish within the grace back at once (the job is retried), so
that another replica takes them over.

A turn is recorded and its job deferred before the event is acked, the job held until the
placeholder is shown. A job lives while its turn is open. A process that dies between recording
and deferring leaves a turn with no job (and so does a job that ended in error before it could
close its turn, the database gone): every `sweep_every` seconds one replica (a PostgreSQL
advisory lock) looks for turns still open `unqueued_after` seconds after they were recorded
that no job carries, and takes them back as a restart would: a waiting one is answered, a
cut-off one ends with a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import procrastinate
import psycopg
from procrastinate.exceptions import (
    AlreadyEnqueued,
    ConnectorException,
)
from procrastinate.job_context import AbortReason, JobContext
from procrastinate.jobs import Status
from procrastinate.worker import Worker

from bot.job_engine import (
    HELD,
    HOLD_LONGER,
    OPEN_JOBS,
    RELEASE,
    SWEEP_LOCK,
    TURN_QUEUE,
    TURNS_WITH_JOBS,
    WAITING_JOBS,
    HandBackAtShutdown,
    TurnConnector,
    TurnJobs,
    apply_job_schema,
    error_text,
    held_queue,
    queue_name,
)
from bot.messages import ConversationKey, IncomingMessage, SharedFile
from bot.turn_queue import QueuedTurn, TurnHandler

if TYPE_CHECKING:
    from bot.conversation import Reply

log = logging.getLogger(__name__)

TURN_TASK = "answer_turn"
# The job is deferred before the ack: a database that does not answer at once is tried again
# after it (Slack waits 3 s for the ack).
DEFER_BEFORE_ACK_SECONDS = 1.0


@dataclass(frozen=True)
class JobTimings:
    heartbeat: float = 5.0  # a worker says it is alive this often
    stalled_after: float = 20.0  # a worker silent this long is dead: its turns go to others
    poll: float = 5.0  # fallback for LISTEN/NOTIFY: look for new jobs and aborts this often
    restart_after: float = 5.0  # a worker that lost the database tries again this often
    # A turn recorded but not queued after this long was left by a process that died between
    # the two: the placeholder is shown and the job deferred well within it.
    unqueued_after: float = 60.0
    sweep_every: float | None = 15.0  # None: this replica never looks for such turns
    # A job waits this long for its placeholder (renewed while it is being shown): if its
    # process died meanwhile, any replica shows it again then.
    hold: float = 45.0


def conversation_lock(key: ConversationKey) -> str:
    return f"{key.team_id}:{key.channel_id}:{key.thread_ts}"


class JobTurnQueue:
    """A TurnQueue on PostgreSQL: turns are procrastinate jobs, run by any replica's worker."""

    # A turn cut off at shutdown is not lost: its job goes back to the queue (see _run_job).
    hands_back_cut_turns = True

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
        self.max_in_flight = max_in_flight
        self.take_jobs = take_jobs  # False: this process only posts jobs (no worker)
        connector = TurnConnector(conninfo, timeout=5.0)
        self.app = procrastinate.App(connector=connector)
        self.app.job_manager = manager = TurnJobs(connector, conninfo)
        manager.patience = timings.stalled_after / 2
        self.queue_name = TURN_QUEUE
        self._task = self.app.task(
            name=TURN_TASK, queue=TURN_QUEUE, pass_context=True, retry=HandBackAtShutdown()
        )(self._run_job)
        self._worker: Worker | None = None
        self._draining = False
        self._stopping = asyncio.Event()
        self._handler: TurnHandler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._posting: dict[asyncio.Task[None], ConversationKey] = {}
        self._running = 0
        self._waiting = 0  # the jobs waiting in the database (any replica's), as last counted
        self._idle = asyncio.Event()
        self._idle.set()

    async def open(self) -> None:
        """Connect, and create the job tables if this database has none yet."""
        await apply_job_schema(self.conninfo)
        self.queue_name = await queue_name(self.conninfo)
        assert isinstance(self.app.job_manager, TurnJobs)
        self.app.job_manager.wake_queue = self.queue_name
        await self.app.open_async()

    def start(self, handler: TurnHandler) -> None:
        self._handler = handler
        if self.take_jobs:
            self._tasks = [
                asyncio.create_task(self._work(), name="turn worker"),
                asyncio.create_task(self._take_over_stalled(), name="stalled turns"),
                asyncio.create_task(self._count_waiting(), name="waiting turns"),
            ]
            if self.timings.sweep_every is not None:
                self._tasks.append(asyncio.create_task(self._sweep_often(), name="sweep"))

    @property
    def handler(self) -> TurnHandler:
        assert self._handler is not None, "start() the queue before submitting turns"
        return self._handler

    async def reachable(self) -> bool:
        """The job queue's database answers (for /readyz)."""
        await self.app.connector.execute_query_one_async("SELECT 1 AS up")
        return True

    async def holds(self, key: ConversationKey) -> bool:
        # A turn deferred as a job was recorded in the store before: the store answers for it.
        return key in self._posting.values()

    async def submit(self, turn: QueuedTurn) -> None:
        """Queue the turn's job at once (one write, before the event is acked), held until its
        placeholder is shown, after this returns (nothing reaches Slack before the ack).

        Held, the job keeps its thread's later turns waiting behind it: a thread's turns run in
        the order they were recorded, whichever replica shows its placeholder first. A job whose
        process died before showing it runs when the hold ends, and shows it then."""
        if self._draining:
            return  # recorded: another replica's sweep takes it back
        key = turn.message.key
        # Well before the sweep would take the turn for one whose process died before this.
        deadline = asyncio.get_running_loop().time() + self.timings.unqueued_after / 2
        job_id = None
        try:
            async with asyncio.timeout(DEFER_BEFORE_ACK_SECONDS):
                job_id = await self._defer(turn)
        except Exception as exc:  # tried again after the ack
            log.warning("event=turn_defer_failed turn=%s error=%s", turn.turn_id, error_text(exc))
        self._idle.clear()
        # One thread's placeholders are posted one after another: sent at once over pooled
        # connections, they could land in the wrong order.
        previous = next((t for t, k in reversed(self._posting.items()) if k == key), None)
        task = asyncio.create_task(self._show(turn, job_id, previous, deadline))
        self._posting[task] = key
        task.add_done_callback(self._posted)

    async def _defer(self, turn: QueuedTurn) -> int:
        """The turn's job, held; deferred again (after a failure that may have been only the
        answer's), it is the same job."""
        message = turn.message
        held = f"turn:{turn.turn_id}"
        try:
            return await self._task.configure(
                lock=conversation_lock(message.key),
                queueing_lock=held,
                queue=held_queue(self.queue_name),
                priority=-min(turn.turn_id, 2**31 - 1),  # the older turn first
                schedule_in={"milliseconds": int(self.timings.hold * 1000)},
            ).defer_async(turn_id=turn.turn_id, message=_message_data(message), reply=None)
        except AlreadyEnqueued:
            rows = await self.app.connector.execute_query_all_async(HELD, queueing_lock=held)
            if not rows:
                raise
            return int(rows[0]["id"])

    async def _show(
        self,
        turn: QueuedTurn,
        job_id: int | None,
        previous: asyncio.Task[None] | None,
        deadline: float,
    ) -> None:
        """Show the turn's placeholder, and let its job run (deferring it first if that failed
        before the ack: until `deadline`, then the sweep takes the turn back). However long
        Slack takes (rate limits), the job stays held while this process lives."""
        loop = asyncio.get_running_loop()
        while job_id is None:
            try:
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    job_id = await self._defer(turn)
            except Exception as exc:
                if loop.time() + self.timings.restart_after >= deadline:
                    log.warning(
                        "event=turn_not_queued turn=%s ts=%s error=%s",
                        turn.turn_id,
                        turn.message.ts,
                        error_text(exc),
                    )
                    return  # recorded: a sweep takes it back
                await asyncio.sleep(self.timings.restart_after)
        keep_held = asyncio.create_task(self._keep_held(job_id))
        try:
            if previous is not None:
                await asyncio.wait([previous])
            reply = await self.handler.begin(turn)
        except Exception:
            with contextlib.suppress(Exception):
                await self.app.job_manager.cancel_job_by_id_async(job_id, delete_job=True)
            await self.handler.not_shown(turn)
            return
        finally:
            keep_held.cancel()
        try:
            released = await self.app.connector.execute_query_all_async(
                RELEASE, job_id=job_id, reply=reply.ref, queue=self.queue_name
            )
        except Exception as exc:
            released = []
            log.warning("event=turn_release_failed job=%s error=%s", job_id, error_text(exc))
        if not released:
            log.warning("event=turn_shown_late job=%s ts=%s", job_id, turn.message.ts)

    async def _keep_held(self, job_id: int) -> None:
        while True:
            await asyncio.sleep(self.timings.hold / 3)
            try:
                await self.app.connector.execute_query_async(
                    HOLD_LONGER, job_id=job_id, seconds=self.timings.hold
                )
            except Exception as exc:
                log.warning("event=turn_hold_failed job=%s error=%s", job_id, error_text(exc))

    def _posted(self, task: asyncio.Task[None]) -> None:
        del self._posting[task]
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if not self._running and not self._posting:
            self._idle.set()

    async def stop(self, key: ConversationKey, message_ts: str) -> bool:
        job = next(
            (j for j in await self._open_jobs(key) if j.task_kwargs["message"]["ts"] == message_ts),
            None,
        )
        if job is None or job.id is None or job.abort_requested:
            return False
        manager = self.app.job_manager
        log.info("event=turn_stop_requested channel=%s ts=%s", key.channel_id, message_ts)
        if job.status == Status.TODO.value and await manager.cancel_job_by_id_async(
            job.id, delete_job=True
        ):
            # It never started: no worker will hear of it, so it is said here.
            turn = _turn_of(job.task_kwargs)
            await self.handler.stopped(turn, await self._reply(turn, job.task_kwargs))
            return True
        # It runs (or has just started): the worker running it cancels it, and says Stopped.
        return await manager.cancel_job_by_id_async(job.id, abort=True)

    def turn_counts(self) -> tuple[int, int]:
        # The waiting turns are jobs in the shared database: the whole queue's, whichever
        # replica took them, as counted every `heartbeat` seconds (never when scraped).
        return self._waiting, self._running

    async def _count_waiting(self) -> None:
        """Count the jobs waiting in the database every `heartbeat` seconds; a count that
        fails leaves the last one standing (said once, until one succeeds again)."""
        queues = [self.queue_name, held_queue(self.queue_name)]
        failing = False
        while True:
            try:
                row = await self.app.connector.execute_query_one_async(WAITING_JOBS, queues=queues)
                self._waiting = int(row["waiting"])
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("event=waiting_turns_count_failed error=%s", error_text(exc))
                failing = True
            await asyncio.sleep(self.timings.heartbeat)

    async def idle(self) -> None:
        """Return once no turn is being shown or runs here, and no job waits or runs in the
        database (whichever replica took it)."""
        while True:
            await self._idle.wait()
            rows = await self.app.connector.execute_query_all_async(
                OPEN_JOBS, queues=[self.queue_name, held_queue(self.queue_name)]
            )
            if self._idle.is_set() and not rows:
                return
            await asyncio.sleep(self.timings.poll / 10)  # jobs elsewhere: look again

    async def drain(self, grace: float) -> None:
        """Take no more jobs; running turns get `grace` seconds, then go back to the queue, for
        another replica (or this one's next start) to take over. Jobs not started stay in the
        database for the others."""
        self._draining = True
        self._stopping.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._posting:
            await asyncio.wait(list(self._posting), timeout=grace)
        for task in self._tasks[1:]:
            task.cancel()
        if self._worker is not None:
            self._worker.shutdown_graceful_timeout = max(0.0, deadline - loop.time())
            self._worker.stop()  # type: ignore[no-untyped-call]
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._posting):
            task.cancel()
        await asyncio.gather(*self._posting, return_exceptions=True)
        assert isinstance(self.app.job_manager, TurnJobs)
        await self.app.job_manager.close()
        await self.app.close_async()

    async def sweep(self) -> int:
        """Take back the turns recorded long ago that no job carries (their process died
        between recording and queueing them); one replica at a time. How many it took."""
        connection = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        async with connection:
            # After another replica's sweep, if one runs: that one has queued what it found.
            await connection.execute("SELECT pg_advisory_lock(%s)", (SWEEP_LOCK,))
            return await self.handler.take_back_unqueued(
                self.timings.unqueued_after, self._without_jobs
            )

    async def _without_jobs(self, turn_ids: list[int]) -> set[int]:
        """Those of these turns that no job carries."""
        connection = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        async with connection:
            cursor = await connection.execute(TURNS_WITH_JOBS, (TURN_TASK, turn_ids))
            carried = {int(row[0]) for row in await cursor.fetchall()}
        return set(turn_ids) - carried

    async def _sweep_often(self) -> None:
        assert self.timings.sweep_every is not None
        while True:
            try:
                taken = await self.sweep()
                if taken:
                    log.info("event=unqueued_turns_taken_back count=%d", taken)
            except Exception:
                log.exception("event=sweep_failed")
            await asyncio.sleep(self.timings.sweep_every)

    async def _open_jobs(self, key: ConversationKey) -> list[Any]:
        jobs = await self.app.job_manager.list_jobs_async(
            task=TURN_TASK, lock=conversation_lock(key)
        )
        return [job for job in jobs if job.status in (Status.TODO.value, Status.DOING.value)]

    async def _reply(self, turn: QueuedTurn, job_data: dict[str, Any]) -> Reply | None:
        if job_data.get("reply") is None:
            return None
        try:
            return await self.handler.reattach(turn, str(job_data["reply"]))
        except Exception:
            log.exception("event=reattach_failed turn=%s", turn.turn_id)
            return None

    def _new_worker(self) -> Worker:
        return Worker(
            self.app,
            queues=[self.queue_name, held_queue(self.queue_name)],
            name=self.name,
            concurrency=self.max_in_flight,
            install_signal_handlers=False,
            # A job lives while its turn is open: the message it carries goes with it, as the
            # store forgets a finished turn's text.
            delete_jobs="always",
            update_heartbeat_interval=self.timings.heartbeat,
            stalled_worker_timeout=self.timings.stalled_after,
            fetch_job_polling_interval=self.timings.poll,
            abort_job_polling_interval=self.timings.poll,
        )

    async def _work(self) -> None:
        """Run the worker; one that stops on its own (it lost the database) starts again."""
        while not self._draining:
            self._worker = self._new_worker()
            try:
                await self._worker.run()  # type: ignore[no-untyped-call]
            except Exception as exc:
                log.warning("event=turn_worker_failed error=%s", error_text(exc))
            if self._draining:
                return
            log.warning("event=turn_worker_restarting after_seconds=%s", self.timings.restart_after)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.timings.restart_after)

    async def _run_job(self, context: JobContext, /, **job: Any) -> None:
        turn = _turn_of(job)
        self._running += 1
        self._idle.clear()
        try:
            if job["reply"] is None:
                # The process that took it died before showing its placeholder (or saying so).
                try:
                    reply = await self.handler.shown_again(turn)
                except Exception:
                    await self.handler.not_shown(turn)
                    return
            else:
                reply = await self.handler.reattach(turn, str(job["reply"]))

            def stop_requested() -> bool:
                return context.abort_reason() == AbortReason.USER_REQUEST

            if context.job.attempts:
                # A replica died (or was cut off at shutdown) while answering it.
                await self.handler.taken_over(turn, reply, stop_requested)
                return
            await self.handler.take(turn, reply, stop_requested)
        except asyncio.CancelledError:
            # Cut off at shutdown: the retry strategy puts the job back for another replica.
            log.info("event=turn_handed_back turn=%s ts=%s", turn.turn_id, turn.message.ts)
            raise
        finally:
            self._running -= 1
            self._maybe_idle()

    async def _take_over_stalled(self) -> None:
        """Hand the turns of dead workers to the living (each replica looks; one wins a job).

        Back from a time without the database (a restart, a fail-over, a lost network), every
        replica's heartbeat looks old: this one takes nothing over until it has reached the
        database for `stalled_after` seconds on end, time enough for a live replica's
        heartbeat to be fresh again."""
        manager = self.app.job_manager
        loop = asyncio.get_running_loop()
        reached_since: float | None = None  # reaching the database on end since then
        last_reached = 0.0
        while True:
            await asyncio.sleep(self.timings.heartbeat)
            asked = loop.time()
            try:
                stalled = await manager.get_stalled_jobs(
                    task_name=TURN_TASK,
                    seconds_since_heartbeat=self.timings.stalled_after,
                )
            except Exception as exc:
                reached_since = None
                log.warning("event=stalled_turns_check_failed error=%s", error_text(exc))
                continue
            now = loop.time()
            slow = now - asked > self.timings.heartbeat  # it waited for the database
            if reached_since is None or slow or now - last_reached > 3 * self.timings.heartbeat:
                reached_since = now
            last_reached = now
            if now - reached_since < self.timings.stalled_after:
                continue
            for job in stalled:
                try:
                    await manager.retry_job(job)
                except ConnectorException:
                    continue  # another replica was first
                log.info("event=stalled_turn_retried job=%s lock=%s", job.id, job.lock)


def _message_data(message: IncomingMessage) -> dict[str, Any]:
    return asdict(message)


def _turn_of(job: dict[str, Any]) -> QueuedTurn:
    data = dict(job["message"])
    data["key"] = ConversationKey(**data["key"])
    data["files"] = tuple(SharedFile(**f) for f in data["files"])
    return QueuedTurn(int(job["turn_id"]), IncomingMessage(**data))
