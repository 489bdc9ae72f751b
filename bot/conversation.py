"""The core: takes messages, runs one turn at a time per conversation, and reports the outcome.

It speaks neither Slack's nor OpenAI's types: chat surfaces implement `Surface`, backends `Engine`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.assistant_choice import AssistantChooser
from bot.engine.base import (
    NO_FILES,
    Citation,
    Completed,
    Engine,
    EngineError,
    Failed,
    GeneratedFile,
    Incomplete,
    TextDelta,
    ToolCall,
    ToolCallsRequired,
    ToolOutput,
    TurnFiles,
)
from bot.files import FileIngest
from bot.messages import ConversationKey, IncomingMessage
from bot.store import ConversationRecord, Store

log = logging.getLogger(__name__)


class Reply(Protocol):
    """One answer as it appears in the chat, from the first sign of life to the final text."""

    async def text_delta(self, text: str) -> None: ...

    async def tools_running(self, names: Sequence[str]) -> None: ...

    async def reading(self, names: Sequence[str]) -> None:
        """Files shared with the message are being taken in (uploaded, indexed)."""
        ...

    async def note(self, text: str) -> None:
        """A message of its own next to the answer (a file that could not be used…)."""
        ...

    async def finish(
        self,
        text: str,
        citations: Sequence[Citation] = (),
        files: Sequence[GeneratedFile] = (),
    ) -> None: ...

    async def fail(self, text: str) -> None: ...


class Surface(Protocol):
    async def begin(self, message: IncomingMessage) -> Reply:
        """Show a sign of life for this message at once; the returned Reply carries the answer."""
        ...


class ToolBox(Protocol):
    async def run(
        self, calls: Sequence[ToolCall], message: IncomingMessage
    ) -> list[ToolOutput]: ...


class NoTools:
    async def run(self, calls: Sequence[ToolCall], message: IncomingMessage) -> list[ToolOutput]:
        return [
            ToolOutput(call.id, f"error: the tool {call.name!r} is not available in this bot")
            for call in calls
        ]


FAILURE_WORDS = {
    "rate_limit_exceeded": "The assistant service is busy right now (rate limited). "
    "Please try again in a minute.",
    "server_error": "The assistant service had an internal error while answering.",
    "expired": "The assistant took too long and the run expired.",
    "timeout": "The assistant took too long to answer, so I stopped waiting.",
    "connection_error": "I could not reach the assistant service.",
    "stream_ended": "The answer was cut off: the connection to the assistant service ended early.",
    "no_usable_files": "None of the shared files could be used, so there is nothing to answer.",
}

INCOMPLETE_WORDS = {
    "max_completion_tokens": "the answer reached its length limit",
    "max_output_tokens": "the answer reached its length limit",
    "max_prompt_tokens": "the conversation is too long for the model's context",
    "content_filter": "the content filter stopped it",
}


INTERRUPTED = (
    ":warning: The bot restarted while answering this message, so the answer was lost. "
    "Please send it again."
)


def failure_text(code: str, message: str) -> str:
    words = FAILURE_WORDS.get(code) or f"The assistant could not answer ({code}: {message})."
    return f":warning: {words} Your next message in this thread will work as usual."


@dataclass
class _Queued:
    turn_id: int
    message: IncomingMessage
    reply: asyncio.Task[Reply]
    posted: int  # the order its placeholder was posted in, within its thread


class Conversations:
    """Per-conversation queues: turns of one thread run one at a time, in arrival order."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        surface: Surface,
        default_assistant_id: str,
        *,
        chooser: AssistantChooser | None = None,
        tools: ToolBox | None = None,
        files: FileIngest | None = None,
        turn_timeout: float = 300.0,
        max_turns_in_flight: int = 400,
    ) -> None:
        self.store = store
        self.engine = engine
        self.surface = surface
        self.default_assistant_id = default_assistant_id
        self.chooser = chooser or AssistantChooser(store, engine, default_assistant_id)
        self.tools: ToolBox = tools or NoTools()
        self.files = files
        self.turn_timeout = turn_timeout
        self._in_flight = asyncio.Semaphore(max_turns_in_flight)
        self._queues: dict[ConversationKey, deque[_Queued]] = {}
        self._workers: dict[ConversationKey, asyncio.Task[None]] = {}
        self._accepting = True
        self._placeholders = itertools.count()

    async def is_conversation(self, key: ConversationKey) -> bool:
        return key in self._queues or await self.store.has_conversation(key)

    async def submit(self, message: IncomingMessage) -> bool:
        """Take a message: persist it, show life at once, answer it in turn. False if seen before."""
        turn_id = await self.store.add_turn(
            message.key,
            message.ts,
            message.user_id,
            message.text,
            message.is_direct,
            message.files,
        )
        if turn_id is None:
            return False
        if self._accepting:
            self._enqueue(turn_id, message)
        return True

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
        queue.insert(position, _Queued(turn_id, message, reply, next(self._placeholders)))
        if message.key not in self._workers:
            self._workers[message.key] = asyncio.create_task(self._work(message.key))

    async def _begin_after(
        self, previous: asyncio.Task[Reply] | None, message: IncomingMessage
    ) -> Reply:
        # One thread's placeholders are posted one after another: sent at once over pooled
        # connections, they could land (and be answered) in the wrong order.
        if previous is not None:
            await asyncio.wait([previous])
        return await self.surface.begin(message)

    async def _work(self, key: ConversationKey) -> None:
        queue = self._queues[key]
        try:
            while queue:
                _earliest_placeholder_first(queue)
                item = queue[0]
                async with self._in_flight:
                    await self._take_turn(item)
                queue.popleft()
        finally:
            del self._queues[key]
            del self._workers[key]

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
        await self.store.update_turn(item.turn_id, "running")
        status, run_id, error, usage = "failed", None, None, None
        try:
            async with asyncio.timeout(self.turn_timeout):
                conversation = await self._conversation_for(message.key)
                text, turn_files = await self._take_files(conversation, message, reply)

                async def run_tools(calls: Sequence[ToolCall]) -> list[ToolOutput]:
                    return await self.tools.run(calls, message)

                async for event in self.engine.run(
                    conversation.backend_id,
                    conversation.assistant_id,
                    text,
                    run_tools,
                    turn_files,
                ):
                    if isinstance(event, TextDelta):
                        await reply.text_delta(event.text)
                    elif isinstance(event, ToolCallsRequired):
                        await reply.tools_running([call.name for call in event.calls])
                    elif isinstance(event, Completed):
                        await reply.finish(event.text, event.citations, event.files)
                        status, run_id, usage = "done", event.run_id, event.usage
                    elif isinstance(event, Incomplete):
                        why = INCOMPLETE_WORDS.get(event.reason, event.reason)
                        await reply.finish(f"{event.text}\n\n_(The answer is incomplete: {why}.)_")
                        status, run_id, error = "incomplete", event.run_id, event.reason
                    elif isinstance(event, Failed):
                        await reply.fail(failure_text(event.code, event.message))
                        run_id, error = event.run_id, f"{event.code}: {event.message}"
        except asyncio.CancelledError:
            # Shutdown ran out of grace: say so instead of leaving "Thinking…" behind.
            await asyncio.shield(self._interrupted(item.turn_id, reply))
            raise
        except TimeoutError:
            error = "timeout"
            await reply.fail(failure_text("timeout", ""))
        except EngineError as exc:
            error = f"{exc.code}: {exc.message}"
            await reply.fail(failure_text(exc.code, exc.message))
        except Exception as exc:  # a turn must never take the process (or its queue) down
            log.exception("event=turn_crashed channel=%s ts=%s", message.key.channel_id, message.ts)
            error = f"internal: {type(exc).__name__}"
            await _quietly(reply.fail(failure_text("internal_error", type(exc).__name__)))
        await self.store.update_turn(
            item.turn_id,
            status,
            run_id=run_id,
            error=error,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
        )
        log.info(
            "event=turn_finished channel=%s ts=%s status=%s run=%s",
            message.key.channel_id,
            message.ts,
            status,
            run_id,
        )

    async def _take_files(
        self, conversation: ConversationRecord, message: IncomingMessage, reply: Reply
    ) -> tuple[str, TurnFiles]:
        """Take in the message's files; the text to send and what the turn may use."""
        if self.files is None:
            return message.text, NO_FILES
        images: list[str] = []
        text = message.text
        if message.files:
            await reply.reading([file.name for file in message.files])
            assistant = await self.engine.get_assistant(conversation.assistant_id)
            taken = await self.files.take(conversation, message.files, message.user_id, assistant)
            for problem in taken.problems:
                await reply.note(problem)
            images = taken.image_file_ids
            if not text and taken.added:
                text = "I shared " + ", ".join(taken.added) + "."
            if not text:
                raise EngineError("no_usable_files", "none of the shared files could be used")
        return text, await self.files.turn_files(conversation, images)

    async def _interrupted(self, turn_id: int, reply: Reply) -> None:
        await _quietly(reply.fail(INTERRUPTED))
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
    reply = await item.reply
    await reply.fail("_The bot is restarting; it will answer this message when it is back._")


def _earliest_placeholder_first(queue: deque[_Queued]) -> None:
    """Give the next answer the thread's earliest placeholder, so the thread reads in order.

    Messages can be taken in another order than they were written (their events race); they are
    answered in written order, and their placeholders, all alike, are used in posted order.
    """
    earliest = min(range(len(queue)), key=lambda index: queue[index].posted)
    if earliest:
        head, other = queue[0], queue[earliest]
        head.reply, other.reply = other.reply, head.reply
        head.posted, other.posted = other.posted, head.posted


def _ts_order(ts: str) -> tuple[int, int]:
    seconds, _, sequence = ts.partition(".")
    return int(seconds), int(sequence or 0)


async def _quietly(awaitable: object) -> None:
    try:
        await awaitable  # type: ignore[misc]
    except Exception:
        log.exception("event=report_failure_failed")
