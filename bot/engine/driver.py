"""The run loop both OpenAI engines share: stream, tool rounds, and cancelling a run cut short.

An engine describes one run as a `StreamedRun` (how to start it, read its events, go on after
tools, cancel it); `drive` does the rest the same way for every engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

import openai

from bot.engine.base import (
    PROGRESS_EVENTS,
    Completed,
    EngineEvent,
    Failed,
    ToolCallsRequired,
    ToolOutput,
    ToolRunner,
)
from bot.engine.errors import engine_error


class StreamedRun(Protocol):
    """One run of one engine, streamed; the SDK's streams and events stay inside the engine."""

    @property
    def active_run(self) -> str | None:
        """The backend run that would go on if the turn stopped now, before the run ended."""
        ...

    async def start(self) -> Any:
        """Add the user's message and start the run; its event stream."""
        ...

    async def submit(self, outputs: list[ToolOutput]) -> Any:
        """Hand the tools' outputs back; the stream of the run going on."""
        ...

    def to_engine_event(self, event: Any) -> EngineEvent | None:
        """A stream event as an engine event: the run's id once it exists, text, tool calls,
        the end, or nothing to show."""
        ...

    async def finish(self, completed: Completed) -> Completed:
        """The answer with everything it refers to (cited file names, generated files)."""
        ...

    def cut_off(self) -> Failed:
        """What to report when a stream ends before the run does."""
        ...

    async def cancel(self, run_id: str) -> None:
        """Cancel the backend run (bounded in time; failures are logged, not raised)."""
        ...


async def drive(run: StreamedRun, run_tools: ToolRunner) -> AsyncIterator[EngineEvent]:
    """Stream a run's events, running tools whenever it asks, until it ends.

    Ends with exactly one Completed, Failed or Incomplete (or raises EngineError). A turn cut
    short (timeout, Stop, a lost stream) cancels the backend run, so that it no longer holds
    the conversation for its next turn.
    """
    ended = False
    try:
        stream = await run.start()
        while True:
            ending: EngineEvent | None = None  # tool calls, or how the run ended
            async with stream:
                async for event in stream:
                    outcome = run.to_engine_event(event)
                    if isinstance(outcome, PROGRESS_EVENTS):
                        yield outcome
                    elif outcome is not None:
                        ending = outcome
                        break
            if isinstance(ending, ToolCallsRequired):
                yield ending
                stream = await run.submit(await run_tools(ending.calls))
                continue
            if ending is None:
                yield run.cut_off()
                return
            ended = True  # nothing left to cancel
            if isinstance(ending, Completed):
                yield await run.finish(ending)
            else:
                yield ending
            return
    except openai.OpenAIError as exc:
        raise engine_error(exc) from exc
    finally:
        if not ended and run.active_run:
            await asyncio.shield(run.cancel(run.active_run))
