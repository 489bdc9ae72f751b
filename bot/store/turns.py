"""The messages the bot takes, one turn each, and people's ratings of the answers (tables turns,
feedback)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import asdict

import sqlalchemy as sa

from bot.messages import ConversationKey, SharedFile
from bot.store.database import Database, insert, insert_new
from bot.store.records import Feedback, PendingTurn
from bot.store.schema import feedback, turns

OPEN_STATUSES = ("queued", "running")
# A turn's state is written again while the database is away this long (a restart, a fail-over)
# rather than failing the answer in progress: the change is the same made twice.
TURN_WRITE_PATIENCE = 30.0
_OPEN = sa.text("status IN ('queued', 'running')")  # as the index turns_open says it

_SET_STATUS = {
    "status": sa.bindparam("new_status", type_=sa.Text),
    "run_id": sa.func.coalesce(sa.bindparam("new_run_id", type_=sa.Text), turns.c.run_id),
    "error": sa.bindparam("new_error", type_=sa.Text),
    "input_tokens": sa.func.coalesce(
        sa.bindparam("new_input_tokens", type_=sa.Integer), turns.c.input_tokens
    ),
    "output_tokens": sa.func.coalesce(
        sa.bindparam("new_output_tokens", type_=sa.Integer), turns.c.output_tokens
    ),
    "updated_at": sa.bindparam("now", type_=sa.Float),
}
_UPDATE = sa.update(turns).where(turns.c.id == sa.bindparam("turn")).values(_SET_STATUS)
# A finished turn forgets the message text and files: they were kept only to resume after a crash.
_FINISH = _UPDATE.values(text="", files="[]")
_OPEN_TURNS = (
    sa.select(
        turns.c.id,
        turns.c.team_id,
        turns.c.channel_id,
        turns.c.thread_ts,
        turns.c.message_ts,
        turns.c.user_id,
        turns.c.text,
        turns.c.is_direct,
        turns.c.status,
        turns.c.files,
    )
    .where(_OPEN)
    .order_by(turns.c.id)
)
_OPEN_TURNS_BEFORE = _OPEN_TURNS.where(turns.c.created_at < sa.bindparam("before", type_=sa.Float))
_STATUSES = (
    sa.select(turns.c.message_ts, turns.c.status)
    .where(
        turns.c.team_id == sa.bindparam("team_id"),
        turns.c.channel_id == sa.bindparam("channel_id"),
        turns.c.thread_ts == sa.bindparam("thread_ts"),
    )
    .order_by(turns.c.id)
)
_FEEDBACK = (
    sa.select(feedback.c.turn_id, turns.c.message_ts, feedback.c.user_id, feedback.c.rating)
    .join(turns, turns.c.id == feedback.c.turn_id)
    .order_by(feedback.c.created_at)
)


@functools.cache
def _add(dialect: str) -> sa.Insert:
    return insert_new(dialect, turns, ("team_id", "channel_id", "message_ts")).returning(turns.c.id)


@functools.cache
def _rate(dialect: str) -> sa.Insert:
    """One person's rating of the answer to a message, found by the message's ts."""
    statement = insert(dialect, feedback).from_select(
        ["turn_id", "user_id", "rating", "created_at"],
        sa.select(
            turns.c.id,
            sa.bindparam("rater", type_=sa.Text),
            sa.bindparam("rating_given", type_=sa.Text),
            sa.bindparam("now", type_=sa.Float),
        ).where(
            turns.c.team_id == sa.bindparam("team"),
            turns.c.channel_id == sa.bindparam("channel"),
            turns.c.message_ts == sa.bindparam("message"),
        ),
    )
    return statement.on_conflict_do_update(
        index_elements=["turn_id", "user_id"],
        set_={"rating": statement.excluded.rating, "created_at": statement.excluded.created_at},
    ).returning(feedback.c.turn_id)


class TurnTables:
    _db: Database

    async def add_turn(
        self,
        key: ConversationKey,
        message_ts: str,
        user_id: str,
        text: str,
        is_direct: bool,
        files: Sequence[SharedFile] = (),
    ) -> int | None:
        """Record a message the bot takes; None if this message was already taken.

        The unique (team, channel, message ts) is the dedupe: Slack's retries and the second
        delivery of an @mention (`app_mention` and `message`) cannot both win, across restarts
        and processes too.
        """
        now = time.time()
        row = await self._db.first(
            _add(self._db.dialect),
            {
                "team_id": key.team_id,
                "channel_id": key.channel_id,
                "thread_ts": key.thread_ts,
                "message_ts": message_ts,
                "user_id": user_id,
                "text": text,
                "is_direct": is_direct,
                "files": json.dumps([asdict(f) for f in files]),
                "status": "queued",
                "created_at": now,
                "updated_at": now,
            },
        )
        return int(row[0]) if row else None

    async def update_turn(
        self,
        turn_id: int,
        status: str,
        *,
        run_id: str | None = None,
        error: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        await self._db.write(
            _UPDATE if status in OPEN_STATUSES else _FINISH,
            {
                "turn": turn_id,
                "new_status": status,
                "new_run_id": run_id,
                "new_error": error,
                "new_input_tokens": input_tokens,
                "new_output_tokens": output_tokens,
                "now": time.time(),
            },
            patience=TURN_WRITE_PATIENCE,
        )

    async def open_turns(self, created_before: float | None = None) -> list[PendingTurn]:
        """Turns left queued or running by a previous process, oldest first; with
        `created_before` (a time.time()), only those recorded before then."""
        statement = _OPEN_TURNS
        params: dict[str, float] = {}
        if created_before is not None:
            statement = _OPEN_TURNS_BEFORE
            params = {"before": created_before}
        return [
            PendingTurn(
                turn_id=row[0],
                key=ConversationKey(row[1], row[2], row[3]),
                message_ts=row[4],
                user_id=row[5],
                text=row[6],
                is_direct=bool(row[7]),
                status=row[8],
                files=tuple(SharedFile(**f) for f in json.loads(row[9])),
            )
            for row in await self._db.all(statement, params)
        ]

    async def turn_statuses(self, key: ConversationKey) -> list[tuple[str, str]]:
        """(message_ts, status) of a conversation's turns, in arrival order."""
        params = {"team_id": key.team_id, "channel_id": key.channel_id, "thread_ts": key.thread_ts}
        return [(row[0], row[1]) for row in await self._db.all(_STATUSES, params)]

    async def record_feedback(
        self, team_id: str, channel_id: str, message_ts: str, user_id: str, rating: str
    ) -> bool:
        """Record (or change) one person's rating of the answer to a message; False if unknown."""
        row = await self._db.first(
            _rate(self._db.dialect),
            {
                "rater": user_id,
                "rating_given": rating,
                "now": time.time(),
                "team": team_id,
                "channel": channel_id,
                "message": message_ts,
            },
        )
        return row is not None

    async def list_feedback(self) -> list[Feedback]:
        return [Feedback(row[0], row[1], row[2], row[3]) for row in await self._db.all(_FEEDBACK)]
