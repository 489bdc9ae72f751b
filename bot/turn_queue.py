"""Turn queues: a conversation's turns run one at a time, in the order they were written.

The core (conversation.py) records a turn and hands it to a `TurnQueue`; the queue decides when
and where it runs, and calls back into the core (`TurnHandler`) to show a sign of life and to
answer it. `LocalTurnQueue` keeps the queues in this process (the embedded SQLite mode);
bot/jobs.py runs each turn as a durable job on PostgreSQL, taken by whichever replica is free.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from bot import metrics
from bot.messages import ConversationKey, IncomingMessage

if TYPE_CHECKING:
    from bot.conversation import Reply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueuedTurn:
    """A message the core recorded (as turn `turn_id`) and wants answered."""

    turn_id: int
    message: IncomingMessage
    taken_at: float = field(default_factory=metrics.now)  # for the latency histograms


class TurnHandler(Protocol):
    """What a queue asks of the core."""

    async def ready(self, key: ConversationKey) -> None:
        """Return once the conversation's turns may start (what a previous process left open
        in it has been taken back)."""
        ...

    async def begin(self, turn: QueuedTurn) -> Reply:
        """Show a sign of life for the turn (its placeholder) at once."""
        ...

    async def take(
        self, turn: QueuedTurn, reply: Reply, stop_requested: Callable[[], bool]
    ) -> None:
        """Answer the turn. The queue cancels the task running it for Stop (then
        `stop_requested()` is true, and the turn ends as stopped) or at shutdown (then the turn
        says it was interrupted and the cancellation goes on)."""
        ...

    async def reattach(self, turn: QueuedTurn, ref: str) -> Reply:
        """The turn's sign of life, shown earlier (maybe by another process), found by its
        `Reply.ref`."""
        ...

    async def shown_again(self, turn: QueuedTurn) -> Reply:
        """The process that took the turn died before it said where its sign of life was
        (maybe before showing it): remove any, and show it anew."""
        ...

    async def taken_over(self, turn: QueuedTurn, reply: Reply) -> None:
        """The process answering the turn died (or was cut off) halfway; this one takes over."""
        ...

    async def stopped(self, turn: QueuedTurn, reply: Reply | None) -> None:
        """The turn was stopped before it started."""
        ...

    async def handed_back(self, turn: QueuedTurn, reply: Reply | None) -> None:
        """The turn will not be answered by this process (it is shutting down)."""
        ...

    async def not_shown(self, turn: QueuedTurn) -> None:
        """Its sign of life could not be shown, so the turn is not answered."""
        ...

    async def take_back_unqueued(
        self, older_than: float, no_queue_holds: Callable[[list[int]], Awaitable[set[int]]]
    ) -> int:
        """Take back the turns recorded `older_than` seconds ago or more that are still open and
        that no queue holds (a process died between recording and queueing them)."""
        ...


class TurnQueue(Protocol):
    # True: a turn cut off at shutdown goes back to the queue, and another process takes it
    # over (so the turn must not say it was interrupted); False: it is lost, and says so.
    hands_back_cut_turns: bool

    def start(self, handler: TurnHandler) -> None:
        """Begin taking turns, answered through `handler`."""
        ...

    async def holds(self, key: ConversationKey) -> bool:
        """True while a turn of this conversation waits or runs."""
        ...

    async def submit(self, turn: QueuedTurn) -> None:
        """Show the turn's sign of life and answer it in its conversation's order."""
        ...

    async def stop(self, key: ConversationKey, message_ts: str) -> bool:
        """Stop answering one message (cancel its run, or skip it if it waits); False when that
        message is not being answered (any more)."""
        ...

    def turn_counts(self) -> tuple[int, int]:
        """Turns waiting and turns running, now (read by a gauge at scrape time)."""
        ...

    async def idle(self) -> None:
        """Return once no turn waits or runs here."""
        ...

    async def drain(self, grace: float) -> None:
        """Take no more turns; let running ones finish within `grace` seconds, then cancel them."""
        ...


@dataclass
class _Entry:
    turn: QueuedTurn
    reply: asyncio.Task[Reply]
    run: asyncio.Task[None] | None = None  # the turn while it runs
    stop_requested: bool = False


class LocalTurnQueue:
    """Queues in this process's memory: one worker task per conversation with turns to take,
    at most `max_in_flight` turns running at once. Turns it never started stay recorded as queued,
    and are answered when the process starts again."""

    hands_back_cut_turns = False

    def __init__(self, max_in_flight: int) -> None:
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._queues: dict[ConversationKey, deque[_Entry]] = {}
        self._workers: dict[ConversationKey, asyncio.Task[None]] = {}
        self._handler: TurnHandler | None = None
        self._accepting = True
        self._cutting = False  # shutdown ran out of grace: cancellations are not Stop presses
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self, handler: TurnHandler) -> None:
        self._handler = handler

    @property
    def handler(self) -> TurnHandler:
        assert self._handler is not None, "start() the queue before submitting turns"
        return self._handler

    async def holds(self, key: ConversationKey) -> bool:
        return key in self._queues

    async def submit(self, turn: QueuedTurn) -> None:
        if not self._accepting:
            return
        key = turn.message.key
        queue = self._queues.setdefault(key, deque())
        reply = asyncio.create_task(self._begin_after(queue[-1].reply if queue else None, turn))
        # Answer in the order the messages were written, even when their events arrive (or are
        # taken) out of order; the head of the queue may already be running, so it stays first.
        position = len(queue)
        while position > 1 and ts_order(queue[position - 1].turn.message.ts) > ts_order(
            turn.message.ts
        ):
            position -= 1
        queue.insert(position, _Entry(turn, reply))
        if key not in self._workers:
            self._idle.clear()
            self._workers[key] = asyncio.create_task(self._work(key))

    async def _begin_after(self, previous: asyncio.Task[Reply] | None, turn: QueuedTurn) -> Reply:
        # One thread's placeholders are posted one after another: sent at once over pooled
        # connections, they could land in the wrong order.
        if previous is not None:
            await asyncio.wait([previous])
        return await self.handler.begin(turn)

    async def stop(self, key: ConversationKey, message_ts: str) -> bool:
        queue = self._queues.get(key, deque())
        entry = next((e for e in queue if e.turn.message.ts == message_ts), None)
        if entry is None or entry.stop_requested or (entry.run is not None and entry.run.done()):
            return False
        entry.stop_requested = True
        log.info("event=turn_stop_requested channel=%s ts=%s", key.channel_id, message_ts)
        if entry.run is not None:
            entry.run.cancel()
        elif entry is not queue[0]:
            queue.remove(entry)  # still waiting behind another turn: it never starts
            await self.handler.stopped(entry.turn, await _reply_of(entry))
        return True

    def turn_counts(self) -> tuple[int, int]:
        queued = sum(len(queue) for queue in self._queues.values())
        running = sum(
            1
            for queue in self._queues.values()
            if queue and queue[0].run is not None and not queue[0].run.done()
        )
        return queued - running, running

    async def idle(self) -> None:
        await self._idle.wait()

    async def _work(self, key: ConversationKey) -> None:
        queue = self._queues[key]
        try:
            await self.handler.ready(key)
            while queue:
                entry = queue[0]
                async with self._in_flight:
                    await self._take(entry)
                queue.popleft()
        finally:
            del self._queues[key]
            del self._workers[key]
            if not self._workers:
                self._idle.set()

    async def _take(self, entry: _Entry) -> None:
        try:
            reply = await entry.reply
        except Exception:
            await self.handler.not_shown(entry.turn)
            return
        if entry.stop_requested:
            await self.handler.stopped(entry.turn, reply)
            return
        # The turn runs in a task of its own so that Stop can cancel it without ending the queue.
        entry.run = asyncio.create_task(
            self.handler.take(entry.turn, reply, lambda: entry.stop_requested and not self._cutting)
        )
        try:
            await entry.run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            # Stop was pressed before the run took its first step: the turn never started.
            await self.handler.stopped(entry.turn, reply)

    async def drain(self, grace: float) -> None:
        self._accepting = False
        waiting = [queue.pop() for queue in self._queues.values() for _ in range(len(queue) - 1)]
        for entry in waiting:
            await self.handler.handed_back(entry.turn, await _reply_of(entry))
        workers = list(self._workers.values())
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=grace)
        self._cutting = True
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _reply_of(entry: _Entry) -> Reply | None:
    try:
        return await entry.reply
    except Exception:
        return None


def ts_order(ts: str) -> tuple[int, int]:
    """A Slack message timestamp as a sortable pair (seconds, sequence)."""
    seconds, _, sequence = ts.partition(".")
    return int(seconds), int(sequence or 0)
