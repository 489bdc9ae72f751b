"""The core: takes messages, runs one turn at a time per conversation, and reports the outcome.

It speaks neither Slack's nor OpenAI's types: chat surfaces implement `Surface`, backends
`ConversationEngine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.assistant_choice import AssistantChooser
from bot.engine.base import (
    NO_FILES,
    Completed,
    ConversationEngine,
    EngineError,
    Failed,
    Incomplete,
    TextDelta,
    ToolCall,
    ToolCallsRequired,
    ToolOutput,
    TurnFiles,
    Usage,
)
from bot.file_ingest import FileIngest
from bot.messages import ConversationKey, IncomingMessage
from bot.outcomes import (
    INTERNAL_ERROR,
    INTERRUPTED,
    NO_USABLE_FILES,
    RESTARTING,
    STOPPED,
    TIMEOUT,
    Answer,
    Failure,
    FileProblem,
    RunningTool,
)
from bot.store import ConversationRecord, Store

log = logging.getLogger(__name__)


class Reply(Protocol):
    """One answer as it appears in the chat, from the first sign of life to the final text."""

    async def started(self) -> None:
        """The turn begins: the assistant is working on this message now."""
        ...

    async def text_delta(self, text: str) -> None:
        """More answer text; the surface shows it as it comes (and must not block the run)."""
        ...

    async def tools_running(self, tools: Sequence[RunningTool]) -> None:
        """Tools are running (each with the status it declared, like "Looking up the weather…")."""
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


class ToolBox(Protocol):
    async def run(
        self, calls: Sequence[ToolCall], message: IncomingMessage
    ) -> list[ToolOutput]: ...

    def status(self, name: str) -> str:
        """What the tool `name` declared to show while it runs ("" when nothing)."""
        ...


class NoTools:
    def status(self, name: str) -> str:
        return ""

    async def run(self, calls: Sequence[ToolCall], message: IncomingMessage) -> list[ToolOutput]:
        return [
            ToolOutput(call.id, f"error: the tool {call.name!r} is not available in this bot")
            for call in calls
        ]


@dataclass
class _Queued:
    turn_id: int
    message: IncomingMessage
    reply: asyncio.Task[Reply]
    run: asyncio.Task[None] | None = None  # the turn while it runs
    stop_requested: bool = False


@dataclass
class _Outcome:
    status: str = "failed"
    run_id: str | None = None
    error: str | None = None
    usage: Usage | None = None


class Conversations:
    """Per-conversation queues: turns of one thread run one at a time, in arrival order."""

    def __init__(
        self,
        store: Store,
        engine: ConversationEngine,
        surface: Surface,
        chooser: AssistantChooser,
        *,
        tools: ToolBox | None = None,
        files: FileIngest | None = None,
        turn_timeout: float = 300.0,
        max_turns_in_flight: int = 400,
    ) -> None:
        self.store = store
        self.engine = engine
        self.surface = surface
        self.chooser = chooser
        self.tools: ToolBox = tools or NoTools()
        self.files = files
        self.turn_timeout = turn_timeout
        self._in_flight = asyncio.Semaphore(max_turns_in_flight)
        self._queues: dict[ConversationKey, deque[_Queued]] = {}
        self._workers: dict[ConversationKey, asyncio.Task[None]] = {}
        self._taking: Counter[ConversationKey] = Counter()  # messages being written to the store
        self._accepting = True
        self._busy = 0  # messages being received, and conversations with turns to take
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        """Held while a chat message is looked at, until it is submitted or turned away."""
        self._busier()
        try:
            yield
        finally:
            self._calmer()

    async def idle(self) -> None:
        """Return once no message is being received and no turn waits or runs."""
        while self._busy:
            await self._idle.wait()

    def _busier(self) -> None:
        self._busy += 1
        self._idle.clear()

    def _calmer(self) -> None:
        self._busy -= 1
        if not self._busy:
            self._idle.set()

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
        return key in self._queues or key in self._taking or await self.store.has_conversation(key)

    async def submit(self, message: IncomingMessage) -> bool:
        """Take a message: persist it, show life at once, answer it in turn. False if seen before."""
        self._taking[message.key] += 1
        try:
            turn_id = await self.store.add_turn(
                message.key,
                message.ts,
                message.user_id,
                message.text,
                message.is_direct,
                message.files,
            )
        finally:
            self._taking[message.key] -= 1
            if not self._taking[message.key]:
                del self._taking[message.key]
        if turn_id is None:
            return False
        if self._accepting:
            self._enqueue(turn_id, message)
        return True

    async def stop(self, key: ConversationKey, message_ts: str) -> bool:
        """Stop answering one message: cancel its run, or skip it if it still waits.

        False when that message is not being answered (any more).
        """
        queue = self._queues.get(key, deque())
        item = next((q for q in queue if q.message.ts == message_ts), None)
        if item is None or item.stop_requested or (item.run is not None and item.run.done()):
            return False
        item.stop_requested = True
        log.info("event=turn_stop_requested channel=%s ts=%s", key.channel_id, message_ts)
        if item.run is not None:
            item.run.cancel()
        elif item is not queue[0]:
            queue.remove(item)  # still waiting behind another turn: it never starts
            await self._skip(item)
        return True

    async def _skip(self, item: _Queued) -> None:
        await _quietly(_say(item, Failure(STOPPED)))
        await self.store.update_turn(item.turn_id, "stopped")

    async def resume_open_turns(self) -> None:
        """Answer what a previous process took but never started; explain what it left halfway."""
        # In written order: a thread's messages may have been taken (and numbered) in another.
        turns = sorted(await self.store.open_turns(), key=lambda turn: _ts_order(turn.message_ts))
        for turn in turns:
            message = IncomingMessage(
                turn.key, turn.message_ts, turn.user_id, turn.text, turn.is_direct, turn.files
            )
            if turn.status == "queued":
                self._enqueue(turn.turn_id, message)
                continue
            await self._interrupted(turn.turn_id, await self.surface.begin(message))

    def _enqueue(self, turn_id: int, message: IncomingMessage) -> None:
        queue = self._queues.setdefault(message.key, deque())
        reply = asyncio.create_task(self._begin_after(queue[-1].reply if queue else None, message))
        # Answer in the order the messages were written, even when their events arrive (or are
        # taken) out of order; the head of the queue may already be running, so it stays first.
        position = len(queue)
        while position > 1 and _ts_order(queue[position - 1].message.ts) > _ts_order(message.ts):
            position -= 1
        queue.insert(position, _Queued(turn_id, message, reply))
        if message.key not in self._workers:
            self._busier()
            self._workers[message.key] = asyncio.create_task(self._work(message.key))

    async def _begin_after(
        self, previous: asyncio.Task[Reply] | None, message: IncomingMessage
    ) -> Reply:
        # One thread's placeholders are posted one after another: sent at once over pooled
        # connections, they could land in the wrong order.
        if previous is not None:
            await asyncio.wait([previous])
        return await self.surface.begin(message)

    async def _work(self, key: ConversationKey) -> None:
        queue = self._queues[key]
        try:
            while queue:
                item = queue[0]
                async with self._in_flight:
                    await self._take_turn(item)
                queue.popleft()
        finally:
            del self._queues[key]
            del self._workers[key]
            self._calmer()

    async def _take_turn(self, item: _Queued) -> None:
        message = item.message
        try:
            reply = await item.reply
        except Exception:
            log.exception(
                "event=sign_of_life_failed channel=%s ts=%s", message.key.channel_id, message.ts
            )
            await self.store.update_turn(item.turn_id, "failed", error="could not post to Slack")
            return
        if item.stop_requested:
            await self._skip(item)
            return
        await self.store.update_turn(item.turn_id, "running")
        await _quietly(reply.started())
        # The turn runs in a task of its own so that Stop can cancel it without ending the queue.
        outcome = _Outcome()
        item.run = asyncio.create_task(self._run_turn(message, reply, outcome))
        try:
            await item.run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not item.stop_requested or (current is not None and current.cancelling()):
                # Shutdown ran out of grace: say so instead of leaving "Thinking…" behind.
                await asyncio.shield(self._interrupted(item.turn_id, reply))
                raise
            await _quietly(reply.fail(Failure(STOPPED)))
            outcome.status, outcome.error = "stopped", "stopped by the user"
        await self.store.update_turn(
            item.turn_id,
            outcome.status,
            run_id=outcome.run_id,
            error=outcome.error,
            input_tokens=outcome.usage.input_tokens if outcome.usage else None,
            output_tokens=outcome.usage.output_tokens if outcome.usage else None,
        )
        log.info(
            "event=turn_finished channel=%s ts=%s status=%s run=%s error=%s",
            message.key.channel_id,
            message.ts,
            outcome.status,
            outcome.run_id,
            outcome.error,  # the backend's own words, which people are not shown
        )

    async def _run_turn(self, message: IncomingMessage, reply: Reply, outcome: _Outcome) -> None:
        try:
            async with asyncio.timeout(self.turn_timeout):
                conversation = await self._conversation_for(message.key)
                text, turn_files = await self._ingest_files(conversation, message, reply)
                text = "\n\n".join(part for part in (text, message.context) if part)

                async def run_tools(calls: Sequence[ToolCall]) -> list[ToolOutput]:
                    return await self.tools.run(calls, message)

                events = self.engine.run(
                    conversation.backend_id,
                    conversation.assistant_id,
                    text,
                    run_tools,
                    turn_files,
                )
                try:
                    async for event in events:
                        await self._show(event, reply, outcome)
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

    async def _show(self, event: object, reply: Reply, outcome: _Outcome) -> None:
        if isinstance(event, TextDelta):
            await reply.text_delta(event.text)
        elif isinstance(event, ToolCallsRequired):
            names = dict.fromkeys(call.name for call in event.calls)
            await reply.tools_running(
                [RunningTool(name, self.tools.status(name)) for name in names]
            )
        elif isinstance(event, Completed):
            await reply.finish(
                Answer(event.text, event.citations, event.files, event.files_missing)
            )
            outcome.status, outcome.run_id, outcome.usage = "done", event.run_id, event.usage
        elif isinstance(event, Incomplete):
            await reply.finish(Answer(event.text, incomplete=event.reason))
            outcome.status, outcome.run_id, outcome.error = "incomplete", event.run_id, event.reason
        elif isinstance(event, Failed):
            await reply.fail(Failure(event.code, event.message))
            outcome.run_id, outcome.error = event.run_id, f"{event.code}: {event.message}"

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
        choice = await self.chooser.for_thread(key)
        backend_id = await self.engine.create_conversation()
        record = ConversationRecord(key, self.engine.name, backend_id, choice.assistant_id)
        await self.store.save_conversation(record)
        return record

    async def drain(self, grace: float) -> None:
        """Stop taking new turns, let running ones finish within `grace` seconds, then cancel.

        Turns that never started stay queued in the store and are answered after the restart.
        """
        self._accepting = False
        waiting = [queue.pop() for queue in self._queues.values() for _ in range(len(queue) - 1)]
        for item in waiting:
            await _quietly(_say_restarting(item))
        workers = list(self._workers.values())
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _say_restarting(item: _Queued) -> None:
    await _say(item, Failure(RESTARTING))


async def _say(item: _Queued, failure: Failure) -> None:
    reply = await item.reply
    await reply.fail(failure)


def _ts_order(ts: str) -> tuple[int, int]:
    seconds, _, sequence = ts.partition(".")
    return int(seconds), int(sequence or 0)


async def _quietly(awaitable: object) -> None:
    try:
        await awaitable  # type: ignore[misc]
    except Exception:
        log.exception("event=report_failure_failed")
