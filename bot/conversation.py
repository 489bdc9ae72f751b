"""The core: takes messages, runs one turn at a time per conversation, and reports the outcome.

It speaks neither Slack's nor OpenAI's types: chat surfaces implement `Surface`, backends
`ConversationEngine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from bot import logs, metrics
from bot.assistant_choice import AssistantChooser
from bot.engine.base import (
    CANCELLED_RUN,
    NO_FILES,
    RUN_GONE,
    Completed,
    ConversationEngine,
    EngineError,
    EngineEvent,
    Failed,
    FollowsRuns,
    HostedToolActivity,
    Incomplete,
    ReasoningSummary,
    RunStarted,
    TextDelta,
    ToolCall,
    ToolCallsRequired,
    ToolOutput,
    ToolRunner,
    TurnFiles,
    Usage,
)
from bot.file_ingest import FileIngest
from bot.messages import ConversationKey, IncomingMessage
from bot.outcomes import (
    GAVE_UP,
    INTERNAL_ERROR,
    INTERRUPTED,
    MAX_ATTEMPTS,
    NO_USABLE_FILES,
    RESTARTING,
    STOPPED,
    TIMEOUT,
    Answer,
    ApprovalRequest,
    Approver,
    Decision,
    Failure,
    FileProblem,
    LimitState,
    Refusal,
    RunningTool,
    Task,
)
from bot.store import ConversationRecord, PendingTurn, Store, TurnProgress
from bot.turn_queue import LocalTurnQueue, QueuedTurn, TurnQueue, ts_order

log = logging.getLogger(__name__)

RECOVERING_AT_ONCE = 8  # threads whose leftovers are tidied at the same time after a restart
RECOVERY_TIMEOUT = 120.0  # seconds one thread's tidying may take before its turns go on


class Reply(Protocol):
    """One answer as it appears in the chat, from the first sign of life to the final text."""

    @property
    def ref(self) -> str:
        """Where the sign of life is, for `Surface.reattach` (in this process or another)."""
        ...

    def track(self, moved: Callable[[str], Awaitable[None]]) -> None:
        """From now on, await `moved(answer_ref)` each time the answer takes one more message
        (`answer_ref` names them all, for `Surface.reattach`)."""
        ...

    async def started(self) -> None:
        """The turn begins: the assistant is working on this message now."""
        ...

    async def text_delta(self, text: str) -> None:
        """More answer text; the surface shows it as it comes (and must not block the run)."""
        ...

    async def tools_running(self, tools: Sequence[RunningTool]) -> None:
        """Tools are running (each with the status it declared, like "Looking up the weather…")."""
        ...

    async def task_update(self, task: Task) -> None:
        """A tool call began or ended (tasks are reported in the order they begin)."""
        ...

    async def reasoning(self, summary: str) -> None:
        """The model's summary of its reasoning so far: shown while it works, never answered."""
        ...

    async def approve(self, request: ApprovalRequest) -> Decision:
        """Ask the person who asked (or an admin) whether this call may run, and wait for the
        decision (or its timeout, which denies). Cancelled: the request is withdrawn."""
        ...

    async def reading(self, names: Sequence[str]) -> None:
        """Files shared with the message are being taken in (uploaded, indexed)."""
        ...

    async def file_problem(self, problem: FileProblem) -> None:
        """A file shared with the message could not be used (said next to the answer)."""
        ...

    async def finish(self, answer: Answer) -> None:
        """The whole answer: what was streamed so far, completed, with its sources and files."""
        ...

    async def fail(self, failure: Failure) -> None:
        """The answer ends here (after whatever part of it was already shown), and why."""
        ...


class Surface(Protocol):
    async def begin(self, message: IncomingMessage) -> Reply:
        """Show a sign of life for this message at once; the returned Reply carries the answer."""
        ...

    def reattach(self, message: IncomingMessage, ref: str, answer_ref: str = "") -> Reply:
        """The Reply whose sign of life is at `ref` (shown by `begin`, maybe in another process);
        with `answer_ref`, the answer rewrites the messages a process that died had written."""
        ...

    async def refuse(self, message: IncomingMessage, refusal: Refusal) -> None:
        """Tell the message's writer, privately where the chat can, why it is not answered."""
        ...


class Gate(Protocol):
    """What may be answered: budgets and rate limits, computed from the stored usage."""

    async def admit(self, message: IncomingMessage) -> Refusal | None:
        """None if the message may be answered; else why not (the model is not called)."""
        ...

    async def turned_away(self, message: IncomingMessage, refusal: Refusal) -> None:
        """`message` was refused (once, whatever the retries) for `refusal`."""
        ...

    async def near_limit(
        self, message: IncomingMessage, assistant_id: str, usage: Usage
    ) -> LimitState | None:
        """The limit this turn's `usage` (not yet stored) took its asker near, if any: a limit
        crossed into its last fifth by this very turn, so that it is said once."""
        ...


class ChatError(Exception):
    """The chat refused a call or could not be reached; `code` says why (for the log)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class LeftBehind:
    """What a process that died while writing an answer left of it in the chat."""

    shown_whole: bool = False  # the answer was shown to its end: only its record is missing
    answer_ref: str = ""  # else the messages it was being written into, to be rewritten


class Leftovers(Protocol):
    """What a process that stopped without warning (killed, crashed) left in the chat."""

    async def tidy(
        self,
        key: ConversationKey,
        waiting: Sequence[IncomingMessage],
        cut_off: Sequence[IncomingMessage],
        failure: Failure,
    ) -> None:
        """Before a thread's turns are taken back: the signs of life shown for `waiting`
        messages go (they get new ones when answered), and each answer still being written for
        a `cut_off` message ends with `failure` where it stands (an answer that had ended is left
        as it is). Raises when the chat cannot be reached or the thread is gone."""
        ...

    async def take_back(
        self,
        message: IncomingMessage,
        reply_ref: str,
        answer_ref: str,
        keep: Callable[[str], Awaitable[None]],
    ) -> LeftBehind:
        """Before this process goes on with the answer to `message`, which a process that died
        was writing (its sign of life at `reply_ref`, its text in `answer_ref`): what it left.
        Streams it left open are ended, each passed to `keep` (with the others) before, should
        this process die too. Raises when the chat cannot be reached."""
        ...


class ToolBox(Protocol):
    async def run(
        self, calls: Sequence[ToolCall], message: IncomingMessage, approve: Approver | None = None
    ) -> list[ToolOutput]:
        """Run one step's calls; a call that needs approval asks `approve` first."""
        ...

    def status(self, name: str) -> str:
        """What the tool `name` declared to show while it runs ("" when nothing)."""
        ...

    def identify(self, name: str) -> tuple[str, str]:
        """(the tool's own name, its MCP server or "") for a name the model called."""
        ...


class NoTools:
    def status(self, name: str) -> str:
        return ""

    def identify(self, name: str) -> tuple[str, str]:
        return name, ""

    async def run(
        self, calls: Sequence[ToolCall], message: IncomingMessage, approve: Approver | None = None
    ) -> list[ToolOutput]:
        return [
            ToolOutput(call.id, f"error: the tool {call.name!r} is not available in this bot")
            for call in calls
        ]


@dataclass
class _Outcome:
    status: str = "failed"
    run_id: str | None = None
    error: str | None = None
    usage: Usage | None = None
    taken_at: float = 0.0
    text_shown: bool = False
    assistant: str = ""
    tasks: dict[str, Task] = field(default_factory=dict)  # by id, in the order they began


class Conversations:
    """Takes messages, records them as turns and answers them through a `TurnQueue` (by default
    in this process: a thread's turns one at a time, in the order written)."""

    def __init__(
        self,
        store: Store,
        engine: ConversationEngine,
        surface: Surface,
        chooser: AssistantChooser,
        *,
        tools: ToolBox | None = None,
        files: FileIngest | None = None,
        leftovers: Leftovers | None = None,
        turn_timeout: float = 300.0,
        max_turns_in_flight: int = 400,
        queue: TurnQueue | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.surface = surface
        self.chooser = chooser
        self.tools: ToolBox = tools or NoTools()
        self.files = files
        self.leftovers = leftovers
        self.turn_timeout = turn_timeout
        self.gate = gate
        self._telling: set[asyncio.Task[None]] = set()  # refusals being told
        self._taking: Counter[ConversationKey] = Counter()  # messages being written to the store
        # Threads whose turns a previous process left open: their new turns wait for these.
        self._recovering: dict[ConversationKey, asyncio.Event] = {}
        self.queue: TurnQueue = queue or LocalTurnQueue(max_turns_in_flight)
        self.queue.start(self)
        self._busy = 0  # messages being received, and the recovery of what a process left
        self._calm = asyncio.Event()
        self._calm.set()

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        """Held while a chat message is looked at, until it is submitted or turned away."""
        self._busier()
        try:
            yield
        finally:
            self._calmer()

    async def idle(self) -> None:
        """Return once no message is being received or recovered and no turn waits or runs."""
        while True:
            await self._calm.wait()
            await self.queue.idle()
            if not self._busy:
                return

    def _busier(self) -> None:
        self._busy += 1
        self._calm.clear()

    def _calmer(self) -> None:
        self._busy -= 1
        if not self._busy:
            self._calm.set()

    def turn_counts(self) -> tuple[int, int]:
        """Turns waiting and turns running, now."""
        return self.queue.turn_counts()

    async def record_feedback(
        self, team_id: str, channel_id: str, message_ts: str, user_id: str, rating: str
    ) -> bool:
        """One person's rating ("good" or "bad") of the answer to a message; False if unknown."""
        if not await self.store.record_feedback(team_id, channel_id, message_ts, user_id, rating):
            return False
        log.info("event=feedback channel=%s ts=%s rating=%s", channel_id, message_ts, rating)
        return True

    async def is_conversation(self, key: ConversationKey) -> bool:
        """True once a message of the thread was taken, or is being taken: a reply may arrive
        before the store can show the thread's first message (on PostgreSQL another connection
        writes it)."""
        return (
            key in self._taking
            or await self.queue.holds(key)
            or await self.store.has_conversation(key)
        )

    async def submit(self, message: IncomingMessage) -> bool:
        """Take a message: persist it, show life at once, answer it in turn. False if seen before.

        A message over a budget or the rate limit is recorded as refused (so that it is turned
        away once) and its writer is told why; it is never answered, not even later.
        """
        refusal = await self.gate.admit(message) if self.gate is not None else None
        self._taking[message.key] += 1
        try:
            turn_id = await self.store.add_turn(
                message.key,
                message.ts,
                message.user_id,
                message.text,
                message.is_direct,
                message.files,
                refused=_refused(refusal) if refusal is not None else None,
            )
        finally:
            self._taking[message.key] -= 1
            if not self._taking[message.key]:
                del self._taking[message.key]
        if turn_id is None:
            return False
        if refusal is not None:
            self._tell(message, refusal)
            return True
        await self.queue.submit(QueuedTurn(turn_id, message))
        return True

    async def _turn_away(self, message: IncomingMessage, refusal: Refusal) -> None:
        await _quietly(self.surface.refuse(message, refusal))
        if self.gate is not None:
            await _quietly(self.gate.turned_away(message, refusal))

    def _tell(self, message: IncomingMessage, refusal: Refusal) -> None:
        """Say why a message is turned away, in the background (the chat may be waiting for
        its ack); `idle` waits for it."""
        log.info(
            "event=message_refused channel=%s ts=%s user=%s reason=%s",
            message.key.channel_id,
            message.ts,
            message.user_id,
            _refused(refusal),
        )
        metrics.turn_finished("refused", refusal.code)
        self._busier()
        task = asyncio.create_task(self._turn_away(message, refusal))
        self._telling.add(task)
        task.add_done_callback(self._told)

    def _told(self, task: asyncio.Task[None]) -> None:
        self._telling.discard(task)
        self._calmer()

    async def stop(self, key: ConversationKey, message_ts: str) -> bool:
        """Stop answering one message: cancel its run, or skip it if it still waits.

        False when that message is not being answered (any more).
        """
        return await self.queue.stop(key, message_ts)

    async def begin_recovery(
        self, turns: Sequence[PendingTurn] | None = None
    ) -> asyncio.Task[None]:
        """Take back what a previous process left open, in the background: answer the messages
        it took but never started, and end the answers it was writing with a plain note.

        Only the store is read before this returns: the chat and the backend are reached in the
        returned task, so start-up never waits on them. A thread's new messages wait until its
        old ones are taken back, so that they are answered in the order they were written.
        `turns`: only these (by default every turn the store holds open).
        """
        by_thread: dict[ConversationKey, list[PendingTurn]] = {}
        for turn in await self.store.open_turns() if turns is None else turns:
            if _readable_ts(turn.message_ts) and _readable_ts(turn.key.thread_ts):
                by_thread.setdefault(turn.key, []).append(turn)
                continue
            log.warning(
                "event=turn_unreadable turn=%s channel=%s ts=%r",
                turn.turn_id,
                turn.key.channel_id,
                turn.message_ts[:40],
            )
            await self.store.update_turn(turn.turn_id, "failed", error="unreadable record")
        for key in by_thread:
            self._recovering[key] = asyncio.Event()
        self._busier()
        return asyncio.create_task(self._recover(by_thread))

    async def _recover(self, by_thread: dict[ConversationKey, list[PendingTurn]]) -> None:
        at_once = asyncio.Semaphore(RECOVERING_AT_ONCE)

        async def recover(key: ConversationKey, turns: list[PendingTurn]) -> None:
            try:
                async with at_once:
                    await self._recover_thread(key, turns)
            finally:
                self._recovering.pop(key).set()

        try:
            await asyncio.gather(*(recover(key, turns) for key, turns in by_thread.items()))
        finally:
            for event in self._recovering.values():
                event.set()
            self._recovering.clear()
            self._calmer()

    async def _recover_thread(self, key: ConversationKey, turns: list[PendingTurn]) -> None:
        # In written order: a thread's messages may have been taken (and numbered) in another.
        turns.sort(key=lambda turn: ts_order(turn.message_ts))
        waiting = [turn for turn in turns if turn.status == "queued"]
        # An answer cut off halfway is taken over where its sign of life is known; else (a
        # record from before take-over, or an engine that cannot follow) it ends with a note.
        following = isinstance(self.engine, FollowsRuns)
        started = [turn for turn in turns if turn.status != "queued"]
        taken_over = [turn for turn in started if following and turn.progress.reply_ref]
        cut_off = [turn for turn in started if turn not in taken_over]
        error = "interrupted by restart"
        try:
            if self.leftovers is not None and (waiting or cut_off):
                async with asyncio.timeout(RECOVERY_TIMEOUT):
                    await self.leftovers.tidy(
                        key,
                        [_message(turn) for turn in waiting],
                        [_message(turn) for turn in cut_off],
                        Failure(INTERRUPTED),
                    )
        except Exception as exc:
            # A channel that is gone, a chat that keeps failing: the old answers cannot be
            # ended in the thread, and their turns are failed all the same.
            log.warning(
                "event=recovery_failed channel=%s thread=%s cut_off=%d error=%s",
                key.channel_id,
                key.thread_ts,
                len(cut_off),
                _error_name(exc),
            )
            error = f"interrupted by restart; the chat could not be told ({_error_name(exc)})"
        for turn in cut_off:
            await self.store.update_turn(turn.turn_id, "failed", error=error)
            log.info("event=turn_interrupted channel=%s ts=%s", key.channel_id, turn.message_ts)
        for turn in turns:
            if turn in waiting:
                await self.queue.submit(QueuedTurn(turn.turn_id, _message(turn)))
            elif turn in taken_over:
                shown_at = turn.progress.reply_ref or ""
                await self.queue.submit(QueuedTurn(turn.turn_id, _message(turn), shown_at=shown_at))

    async def take_back_unqueued(
        self, older_than: float, no_queue_holds: Callable[[list[int]], Awaitable[set[int]]]
    ) -> int:
        """Take back, as after a restart, the turns still open `older_than` seconds after they
        were recorded that no queue holds (`no_queue_holds` picks those of a list of turn ids):
        a process died between recording one and queueing it. How many were taken back."""
        recorded = await self.store.open_turns(created_before=time.time() - older_than)
        if not recorded:
            return 0
        lost = await no_queue_holds([turn.turn_id for turn in recorded])
        turns = [turn for turn in recorded if turn.turn_id in lost]
        if turns:
            await (await self.begin_recovery(turns))
        return len(turns)

    async def drain(self, grace: float) -> None:
        """Stop taking new turns, let running ones finish within `grace` seconds, then cancel
        them (or, on PostgreSQL, hand them back to the job queue for another replica).

        Turns that never started stay queued, and are answered after the restart (or, on
        PostgreSQL, by whichever replica is free).
        """
        await self.queue.drain(grace)

    # --- what the queue asks of the core (TurnHandler) --------------------------------------

    async def ready(self, key: ConversationKey) -> None:
        recovering = self._recovering.get(key)
        if recovering is not None:
            await recovering.wait()

    async def begin(self, turn: QueuedTurn) -> Reply:
        reply = await self.surface.begin(turn.message)
        metrics.sign_of_life(turn.taken_at)
        try:
            await self.store.reply_shown(turn.turn_id, reply.ref)
        except Exception as exc:  # the turn is answered all the same; a take-over would miss it
            log.warning("event=reply_ref_not_kept turn=%s error=%s", turn.turn_id, _error_name(exc))
        return reply

    async def shown_again(self, turn: QueuedTurn) -> Reply:
        message = turn.message
        if self.leftovers is not None:
            try:
                async with asyncio.timeout(RECOVERY_TIMEOUT):
                    await self.leftovers.tidy(message.key, [message], [], Failure(INTERRUPTED))
            except Exception as exc:
                log.warning(
                    "event=recovery_failed channel=%s thread=%s error=%s",
                    message.key.channel_id,
                    message.key.thread_ts,
                    _error_name(exc),
                )
        return await self.begin(turn)

    async def reattach(self, turn: QueuedTurn, ref: str) -> Reply:
        return self.surface.reattach(turn.message, ref)

    async def taken_over(
        self,
        turn: QueuedTurn,
        reply: Reply,
        stop_requested: Callable[[], bool] = lambda: False,
    ) -> None:
        """Go on with a turn whose process died halfway: follow its backend run to the end (or
        run it again once when there is none to follow), writing the answer where it was."""
        if not isinstance(self.engine, FollowsRuns):
            await self._interrupted(turn.turn_id, reply)
            return
        progress = await self.store.turn_progress(turn.turn_id)
        if progress.status not in ("queued", "running"):
            # It had ended (and been recorded) before its process died: nothing is left to do.
            log.info("event=turn_already_ended turn=%s status=%s", turn.turn_id, progress.status)
            return
        try:
            left = await self._left_behind(turn, reply.ref, progress.answer_ref or "")
        except asyncio.CancelledError:
            if not stop_requested():
                raise  # shutdown: it is left to be taken over again (after a restart, or elsewhere)
            outcome = _Outcome(taken_at=turn.taken_at)
            await self._stopped_by_user(turn, reply, outcome, progress)
            await self._record(turn, outcome)
            return
        log.info(
            "event=turn_taken_over channel=%s ts=%s run=%s shown_whole=%s",
            turn.message.key.channel_id,
            turn.message.ts,
            progress.run_id,
            left.shown_whole,
        )
        if left.shown_whole:
            await self.store.update_turn(turn.turn_id, "done", run_id=progress.run_id)
            metrics.turn_finished("done", "")
            return
        if left.answer_ref:
            reply = self.surface.reattach(turn.message, reply.ref, left.answer_ref)
        await self.take(turn, reply, stop_requested, progress)

    async def _cancel_left_run(self, key: ConversationKey, left: TurnProgress | None) -> None:
        """A turn stopped while being taken over, before the run its dead process started was
        followed: that run is cancelled on the backend too (no one else would)."""
        if left is not None and left.run_id:
            await self._cancel_run(key, left.run_id)

    async def _cancel_run(self, key: ConversationKey, run_id: str) -> None:
        record = await self.store.get_conversation(key)
        if record is not None and isinstance(self.engine, FollowsRuns):
            await _quietly(self.engine.cancel_run(record.backend_id, run_id))

    async def _left_behind(self, turn: QueuedTurn, reply_ref: str, answer_ref: str) -> LeftBehind:
        """What the dead process left of the turn's answer in the chat; where it was being
        written is kept in the store before this process rewrites it, should it die too."""
        left = LeftBehind(answer_ref=answer_ref)
        kept = answer_ref

        async def keep(answer_ref: str) -> None:
            nonlocal kept
            if answer_ref != kept:
                await self.store.answer_shown(turn.turn_id, answer_ref)
                kept = answer_ref

        if self.leftovers is not None:
            try:
                async with asyncio.timeout(RECOVERY_TIMEOUT):
                    left = await self.leftovers.take_back(turn.message, reply_ref, answer_ref, keep)
            except Exception as exc:  # what is known is rewritten; a stream not known stays
                log.warning(
                    "event=take_back_failed channel=%s ts=%s error=%s",
                    turn.message.key.channel_id,
                    turn.message.ts,
                    _error_name(exc),
                )
                return LeftBehind(answer_ref=kept)
        await keep(left.answer_ref)
        return left

    async def not_shown(self, turn: QueuedTurn) -> None:
        message = turn.message
        log.error("event=sign_of_life_failed channel=%s ts=%s", message.key.channel_id, message.ts)
        await self.store.update_turn(turn.turn_id, "failed", error="could not post to Slack")
        metrics.turn_finished("failed", "slack")

    async def stopped(self, turn: QueuedTurn, reply: Reply | None) -> None:
        metrics.turn_finished("stopped", None)
        if reply is not None:
            await _quietly(reply.fail(Failure(STOPPED)))
        await self.store.update_turn(turn.turn_id, "stopped")
        # A turn whose process died while answering it, stopped before it was taken over (it
        # waited for a free worker): the run that process left is cancelled too.
        try:
            left = await self.store.turn_progress(turn.turn_id)
        except Exception as exc:  # recorded as stopped all the same
            log.warning("event=left_run_unknown turn=%s error=%s", turn.turn_id, _error_name(exc))
            return
        await self._cancel_left_run(turn.message.key, left)

    async def handed_back(self, turn: QueuedTurn, reply: Reply | None) -> None:
        if reply is not None:
            await _quietly(reply.fail(Failure(RESTARTING)))

    async def take(
        self,
        turn: QueuedTurn,
        reply: Reply,
        stop_requested: Callable[[], bool],
        taking_over: TurnProgress | None = None,
    ) -> None:
        message = turn.message
        key = message.key
        logs.turn_ids.set(
            {
                "workspace": key.team_id,
                "channel": key.channel_id,
                "thread": key.thread_ts,
                "message_ts": message.ts,
            }
        )
        outcome = _Outcome(taken_at=turn.taken_at)
        turn_id = turn.turn_id

        async def answer_moved(answer_ref: str) -> None:
            await self.store.answer_shown(turn_id, answer_ref)

        reply.track(answer_moved)
        try:
            attempts = await self.store.start_turn(turn.turn_id)
            if attempts > MAX_ATTEMPTS:
                # Each time it was tried, the process died with it (run out of memory, say):
                # it is not tried again, or the bot would do nothing else.
                await self._give_up(turn, reply, outcome, attempts, taking_over)
            else:
                await _quietly(reply.started())
                await self._run_turn(turn.turn_id, message, reply, outcome, taking_over)
        except asyncio.CancelledError:
            if not stop_requested():
                # Shutdown ran out of grace: say so instead of leaving "Thinking…" behind,
                # unless the queue hands the turn to another process, which takes it over.
                if not self.queue.hands_back_cut_turns:
                    await asyncio.shield(self._interrupted(turn.turn_id, reply))
                else:
                    # Handed back whole: a rolling deploy must not bring a give-up nearer.
                    await asyncio.shield(self._not_an_attempt(turn.turn_id))
                raise
            await self._stopped_by_user(turn, reply, outcome, taking_over)
        await self._record(turn, outcome)

    async def _not_an_attempt(self, turn_id: int) -> None:
        try:
            await self.store.attempt_handed_back(turn_id)
        except Exception as exc:  # a give-up only comes one try sooner
            log.warning("event=hand_back_not_recorded turn=%s error=%s", turn_id, _error_name(exc))

    async def _stopped_by_user(
        self,
        turn: QueuedTurn,
        reply: Reply,
        outcome: _Outcome,
        taking_over: TurnProgress | None,
    ) -> None:
        """Stop was pressed (this task cancelled for it): the turn ends as stopped, and says so;
        one being taken over (`taking_over`), whose run was not followed yet (the answer left
        behind may still have been read back), has that run cancelled too."""
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        if outcome.run_id is None:
            await self._cancel_left_run(turn.message.key, taking_over)
        await _quietly(reply.fail(Failure(STOPPED)))
        outcome.status, outcome.error = "stopped", "stopped by the user"

    async def _record(self, turn: QueuedTurn, outcome: _Outcome) -> None:
        """The turn's end, in the store, the metrics and the log."""
        message = turn.message
        await self.store.update_turn(
            turn.turn_id,
            outcome.status,
            run_id=outcome.run_id,
            error=outcome.error,
            input_tokens=outcome.usage.input_tokens if outcome.usage else None,
            output_tokens=outcome.usage.output_tokens if outcome.usage else None,
            cached_input_tokens=outcome.usage.cached_input_tokens if outcome.usage else None,
            model=(outcome.usage.model or None) if outcome.usage else None,
            assistant_id=outcome.assistant or None,
        )
        metrics.turn_finished(outcome.status, (outcome.error or "").split(":", 1)[0])
        if outcome.usage is not None:
            usage = outcome.usage
            metrics.tokens_used(
                outcome.assistant, usage.model, usage.input_tokens, usage.output_tokens
            )
        log.info(
            "event=turn_finished channel=%s ts=%s status=%s run=%s error=%s",
            message.key.channel_id,
            message.ts,
            outcome.status,
            outcome.run_id,
            outcome.error,  # the backend's own words, which people are not shown
        )

    async def _give_up(
        self,
        turn: QueuedTurn,
        reply: Reply,
        outcome: _Outcome,
        attempts: int,
        taking_over: TurnProgress | None,
    ) -> None:
        message = turn.message
        # `starts`: this one too, and any give-up the process died in before it was recorded.
        log.error(
            "event=turn_given_up channel=%s ts=%s attempts=%d starts=%d",
            message.key.channel_id,
            message.ts,
            MAX_ATTEMPTS,
            attempts,
        )
        outcome.status = "failed"
        outcome.error = f"{GAVE_UP}: gave up after {MAX_ATTEMPTS} attempts"
        await self._cancel_left_run(message.key, taking_over)  # it would keep the thread busy
        await _quietly(reply.fail(Failure(GAVE_UP)))

    async def _run_turn(
        self,
        turn_id: int,
        message: IncomingMessage,
        reply: Reply,
        outcome: _Outcome,
        taking_over: TurnProgress | None = None,
    ) -> None:
        try:
            async with asyncio.timeout(self.turn_timeout) as deadline:
                conversation = await self._conversation_for(message.key)
                outcome.assistant = conversation.assistant_id or ""
                text, turn_files = await self._ingest_files(conversation, message, reply)
                text = "\n\n".join(part for part in (text, message.context) if part)
                approve = _paused_while_waiting(reply.approve, deadline)

                async def run_tools(calls: Sequence[ToolCall]) -> list[ToolOutput]:
                    ours = [call for call in calls if not call.hosted_server]
                    hosted = [call for call in calls if call.hosted_server]
                    outputs, decided = await asyncio.gather(
                        self.tools.run(ours, message, approve),
                        asyncio.gather(*(_decide(call, approve) for call in hosted)),
                    )
                    _count_tool_calls(ours, outputs)
                    for output in outputs:
                        task = outcome.tasks[output.call_id]
                        if output.output.startswith("not run:"):
                            task = replace(task, not_run=True)
                        failed = task.not_run or output.output.startswith("error:")
                        await self._task(reply, outcome, task, "error" if failed else "complete")
                    return [*outputs, *decided]

                if taking_over is None:
                    events = self.engine.run(
                        conversation.backend_id,
                        conversation.assistant_id,
                        text,
                        run_tools,
                        turn_files,
                    )
                else:
                    events = self._go_on(
                        conversation, text, run_tools, turn_files, taking_over.run_id or ""
                    )
                try:
                    async for event in events:
                        if isinstance(event, RunStarted):
                            # Kept at once: whoever takes the turn over follows this run.
                            outcome.run_id = event.run_id
                            await self.store.update_turn(turn_id, "running", run_id=event.run_id)
                            log.info(
                                "event=run_started channel=%s ts=%s run=%s",
                                message.key.channel_id,
                                message.ts,
                                event.run_id,
                            )
                            continue
                        await self._show(event, message, reply, outcome)
                finally:
                    # A turn cut short (Stop, timeout) closes the engine's stream at once, so the
                    # engine cancels its backend run before the conversation's next turn starts.
                    close = getattr(events, "aclose", None)
                    if close is not None:
                        await close()
        except TimeoutError:
            outcome.error = TIMEOUT
            await reply.fail(Failure(TIMEOUT))
        except EngineError as exc:
            outcome.error = f"{exc.code}: {exc.message}"
            await reply.fail(Failure(exc.code, exc.message))
        except Exception as exc:  # a turn must never take the process (or its queue) down
            log.exception("event=turn_crashed channel=%s ts=%s", message.key.channel_id, message.ts)
            outcome.error = f"internal: {type(exc).__name__}"
            await _quietly(reply.fail(Failure(INTERNAL_ERROR, type(exc).__name__)))

    async def _go_on(
        self,
        conversation: ConversationRecord,
        text: str,
        run_tools: ToolRunner,
        files: TurnFiles,
        run_id: str,
    ) -> AsyncIterator[EngineEvent]:
        """A taken-over turn's events: its run followed, or, when it has none the backend
        still knows, the turn run again (once: a run lost again fails the turn)."""
        engine = self.engine
        assert isinstance(engine, FollowsRuns)
        backend_id, assistant_id = conversation.backend_id, conversation.assistant_id
        if run_id:
            try:
                async with _closing(
                    engine.follow(backend_id, assistant_id, run_id, run_tools, files)
                ) as followed:
                    async for event in followed:
                        if isinstance(event, Failed) and event.code == CANCELLED_RUN:
                            # A replica shutting down cut the turn short (and so cancelled its
                            # run) for another to take over: this one answers it afresh.
                            log.info("event=run_cancelled_meanwhile run=%s", run_id)
                            break
                        yield event
                    else:
                        return
            except EngineError as exc:
                if exc.code != RUN_GONE:
                    raise
                log.info("event=run_gone run=%s", run_id)
        async with _closing(
            engine.run_again(backend_id, assistant_id, text, run_tools, files, lost_run=run_id)
        ) as again:
            async for event in again:
                yield event

    async def _show(
        self, event: object, message: IncomingMessage, reply: Reply, outcome: _Outcome
    ) -> None:
        if isinstance(event, TextDelta):
            if not outcome.text_shown:
                outcome.text_shown = True
                metrics.first_token(outcome.taken_at)
            await reply.text_delta(event.text)
        elif isinstance(event, ToolCallsRequired):
            ours = [call for call in event.calls if not call.hosted_server]
            if not ours:
                return  # only approvals of a hosted server's calls (asked when they are run)
            names = dict.fromkeys(call.name for call in ours)
            await reply.tools_running(
                [
                    RunningTool(*self.tools.identify(name), status=self.tools.status(name))
                    for name in names
                ]
            )
            for call in ours:
                name, server = self.tools.identify(call.name)
                kind = "mcp" if server else "function"
                task = Task(call.id, kind, "in_progress", name, server, detail=call.arguments)
                await self._task(reply, outcome, task, "in_progress")
        elif isinstance(event, HostedToolActivity):
            task = outcome.tasks.get(event.id) or Task(
                event.id, event.kind, event.status, event.name, event.server
            )
            await self._task(reply, outcome, replace(task, sources=event.sources), event.status)
        elif isinstance(event, ReasoningSummary):
            await reply.reasoning(event.text)
        elif isinstance(event, Completed):
            outcome.usage = event.usage
            near = await self._near_limit(message, outcome)
            await reply.finish(
                Answer(
                    event.text,
                    event.citations,
                    event.files,
                    event.files_missing,
                    near_limit=near,
                    tasks=tuple(outcome.tasks.values()),
                )
            )
            outcome.status, outcome.run_id = "done", event.run_id
            metrics.answered(outcome.taken_at)
        elif isinstance(event, Incomplete):
            outcome.usage = event.usage
            await reply.finish(Answer(event.text, incomplete=event.reason))
            outcome.status, outcome.run_id, outcome.error = "incomplete", event.run_id, event.reason
        elif isinstance(event, Failed):
            await reply.fail(Failure(event.code, event.message))
            outcome.run_id, outcome.error = event.run_id, f"{event.code}: {event.message}"

    async def _near_limit(self, message: IncomingMessage, outcome: _Outcome) -> LimitState | None:
        if self.gate is None or outcome.usage is None:
            return None
        try:
            return await self.gate.near_limit(message, outcome.assistant, outcome.usage)
        except Exception:  # a warning is not worth an answer
            log.exception("event=budget_warning_failed")
            return None

    async def _task(self, reply: Reply, outcome: _Outcome, task: Task, status: str) -> None:
        task = replace(task, status=status)
        outcome.tasks[task.id] = task
        await _quietly(reply.task_update(task))

    async def _ingest_files(
        self, conversation: ConversationRecord, message: IncomingMessage, reply: Reply
    ) -> tuple[str, TurnFiles]:
        """Take in the message's files; the text to send and what the turn may use."""
        if self.files is None:
            return message.text, NO_FILES
        images: list[str] = []
        text = message.text
        if message.files:
            assistant = await self.chooser.assistant(conversation.assistant_id)
            ingested = await self.files.add_to_conversation(
                conversation, message.files, message.user_id, assistant, reading=reply.reading
            )
            for problem in ingested.problems:
                log.info(
                    "event=file_not_used file=%s reason=%s detail=%s",
                    problem.file_id,
                    problem.reason,
                    problem.detail,
                )
                await reply.file_problem(problem)
            images = ingested.image_file_ids
            if not text and ingested.added:
                # What the assistant reads in place of a message that was only files.
                text = "I shared " + ", ".join(ingested.added) + "."
            if not text:
                raise EngineError(NO_USABLE_FILES, "none of the shared files could be used")
        return text, await self.files.turn_files(conversation, images)

    async def _interrupted(self, turn_id: int, reply: Reply) -> None:
        await _quietly(reply.fail(Failure(INTERRUPTED)))
        await self.store.update_turn(turn_id, "failed", error="interrupted by restart")

    async def _conversation_for(self, key: ConversationKey) -> ConversationRecord:
        """The thread's conversation, created on its first turn; read anew on every turn, so a
        switched assistant answers from the next turn on."""
        record = await self.store.get_conversation(key)
        if record is not None and record.engine == self.engine.name and record.backend_id:
            return record
        choice = await self.chooser.for_conversation(key, record)
        backend_id = await self.engine.create_conversation()
        record = ConversationRecord(key, self.engine.name, backend_id, choice.assistant_id)
        await self.store.save_conversation(record)
        return record


async def _decide(call: ToolCall, approve: Approver) -> ToolOutput:
    """A hosted MCP server's call that waits for approval: the decision, for the backend."""
    decision = await approve(
        ApprovalRequest(call.id, call.name, call.hosted_server, call.arguments)
    )
    log.info("event=tool_approval tool=%s outcome=%s", call.name, decision.outcome)
    return ToolOutput(call.id, decision.outcome, approved=decision.approved)


def _paused_while_waiting(approve: Approver, deadline: asyncio.Timeout) -> Approver:
    """`approve`, with the turn's timeout stopped while a person is asked (however many calls
    wait together): the time left when the first began waiting is what is left after the last."""
    waiting = 0
    left: float | None = None

    async def approve_paused(request: ApprovalRequest) -> Decision:
        nonlocal waiting, left
        loop = asyncio.get_running_loop()
        if not waiting:
            when = deadline.when()
            left = None if when is None else when - loop.time()
            deadline.reschedule(None)
        waiting += 1
        try:
            return await approve(request)
        finally:
            waiting -= 1
            if not waiting and left is not None:
                deadline.reschedule(loop.time() + left)

    return approve_paused


@contextlib.asynccontextmanager
async def _closing(events: AsyncIterator[EngineEvent]) -> AsyncIterator[AsyncIterator[EngineEvent]]:
    """The engine's stream, closed on the way out: a run cut short is cancelled at once."""
    try:
        yield events
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


def _count_tool_calls(calls: Sequence[ToolCall], outputs: Sequence[ToolOutput]) -> None:
    for call, output in zip(calls, outputs, strict=False):
        unknown = output.output.startswith("error: there is no tool named")
        failed = output.output.startswith("error:")
        metrics.tool_called("unknown" if unknown else call.name, "error" if failed else "ok")


def _message(turn: PendingTurn) -> IncomingMessage:
    return IncomingMessage(
        turn.key, turn.message_ts, turn.user_id, turn.text, turn.is_direct, turn.files
    )


def _refused(refusal: Refusal) -> str:
    """Why a message was turned away, as the turn's error (for the log and the store)."""
    limit = refusal.limit
    return f"{refusal.code}: {limit.scope} {limit.unit} per {limit.period}"


def _readable_ts(ts: str) -> bool:
    return re.fullmatch(r"[0-9]+(\.[0-9]+)?", ts) is not None


def _error_name(exc: BaseException) -> str:
    """What failed, for the log: the chat's error code when it gave one, else the kind."""
    return exc.code if isinstance(exc, ChatError) else type(exc).__name__


async def _quietly(awaitable: object) -> None:
    try:
        await awaitable  # type: ignore[misc]
    except Exception:
        log.exception("event=report_failure_failed")
