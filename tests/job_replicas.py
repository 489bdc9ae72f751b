"""Replicas of the job queue for tests: a handler that records what each replica does with the
turns it gets, and a process that runs one replica (`python -m tests.job_replicas URL NAME`), for
tests that kill it."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.jobs import JobTimings, JobTurnQueue
from bot.messages import ConversationKey, IncomingMessage
from bot.turn_queue import QueuedTurn

# Short enough for a test, long enough that a loaded machine does not take a live worker as dead.
FAST = JobTimings(heartbeat=0.5, stalled_after=3.0, poll=0.5, sweep_every=None)


@dataclass
class PlaceholderReply:
    ref: str


@dataclass
class Journal:
    """What every replica did, in order: (what, replica, message ts)."""

    entries: list[tuple[str, str, str]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    release: dict[str, asyncio.Event] = field(default_factory=dict)
    stuck: set[str] = field(default_factory=set)  # messages whose placeholder never shows

    async def add(self, what: str, replica: str, ts: str) -> None:
        async with self.changed:
            self.entries.append((what, replica, ts))
            self.changed.notify_all()

    async def until(self, done: Callable[[list[tuple[str, str, str]]], bool], timeout=30.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: done(self.entries))

    def of(self, what: str) -> list[str]:
        return [ts for w, _, ts in self.entries if w == what]

    def gate(self, ts: str) -> asyncio.Event:
        return self.release.setdefault(ts, asyncio.Event())


class RecordingHandler:
    """Answers a turn by waiting until the test releases it (forever, unless released)."""

    def __init__(self, journal: Journal, name: str) -> None:
        self.journal = journal
        self.name = name

    async def begin(self, turn: QueuedTurn) -> PlaceholderReply:
        if turn.message.ts in self.journal.stuck:
            # Slack does not answer (until the test says so, or the process goes).
            await self.journal.gate(f"placeholder {turn.message.ts}").wait()
        await self.journal.add("placeholder", self.name, turn.message.ts)
        return PlaceholderReply(f"placeholder-{turn.message.ts}")

    async def shown_again(self, turn: QueuedTurn) -> PlaceholderReply:
        await self.journal.add("shown again", self.name, turn.message.ts)
        return PlaceholderReply(f"placeholder-{turn.message.ts}")

    async def reattach(self, turn: QueuedTurn, ref: str) -> PlaceholderReply:
        assert ref == f"placeholder-{turn.message.ts}"
        return PlaceholderReply(ref)

    async def take(
        self, turn: QueuedTurn, reply: object, stop_requested: Callable[[], bool]
    ) -> None:
        ts = turn.message.ts
        await self.journal.add("started", self.name, ts)
        try:
            await self.journal.gate(ts).wait()
        except asyncio.CancelledError:
            if not stop_requested():
                await self.journal.add("cut off", self.name, ts)
                raise
            await self.journal.add("stopped", self.name, ts)
            return
        await self.journal.add("answered", self.name, ts)

    async def taken_over(self, turn: QueuedTurn, reply: object) -> None:
        await self.journal.add("taken over", self.name, turn.message.ts)

    async def stopped(self, turn: QueuedTurn, reply: object) -> None:
        await self.journal.add("skipped", self.name, turn.message.ts)

    async def handed_back(self, turn: QueuedTurn, reply: object) -> None:
        await self.journal.add("handed back", self.name, turn.message.ts)

    async def not_shown(self, turn: QueuedTurn) -> None:
        await self.journal.add("not shown", self.name, turn.message.ts)


THREAD = ConversationKey("T1", "C1", "100.000100")


def turn(turn_id: int, ts: str, key: ConversationKey = THREAD) -> QueuedTurn:
    return QueuedTurn(turn_id, IncomingMessage(key, ts, "U1", f"message {ts}"))


async def _replica_process(url: str, name: str) -> None:
    """One replica in a process of its own: prints each thing it does as a JSON line."""
    journal = Journal()
    queue = JobTurnQueue(url, 10, name=name, timings=FAST)
    await queue.open()
    queue.start(RecordingHandler(journal, name))  # type: ignore[arg-type]
    print(json.dumps(["ready", name, ""]), flush=True)
    shown = 0
    while True:
        await journal.until(lambda entries, shown=shown: len(entries) > shown, timeout=3600)
        for entry in journal.entries[shown:]:
            print(json.dumps(entry), flush=True)
        shown = len(journal.entries)


if __name__ == "__main__":
    asyncio.run(_replica_process(sys.argv[1], sys.argv[2]))
