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
from bot.store.records import Feedback, PendingTurn, TurnProgress
from bot.store.schema import feedback, turns

OPEN_STATUSES = ("queued", "running")
REFUSED = "refused"  # turned away before the model was asked (a budget, the rate limit)
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
    "cached_input_tokens": sa.func.coalesce(
        sa.bindparam("new_cached_input_tokens", type_=sa.Integer), turns.c.cached_input_tokens
    ),
    "model": sa.func.coalesce(sa.bindparam("new_model", type_=sa.Text), turns.c.model),
    "assistant_id": sa.func.coalesce(
        sa.bindparam("new_assistant_id", type_=sa.Text), turns.c.assistant_id
    ),
    "updated_at": sa.bindparam("now", type_=sa.Float),
}
# A turn starts (or starts again, taken over after a crash): running, and one more attempt.
_START = (
    sa.update(turns)
    .where(turns.c.id == sa.bindparam("turn"))
    .values(
        status="running",
        error=None,
        attempts=turns.c.attempts + 1,
        updated_at=sa.bindparam("now", type_=sa.Float),
    )
    .returning(turns.c.attempts)
)
# A turn cut off at shutdown and handed back whole to another process: not an attempt.
_HANDED_BACK = (
    sa.update(turns)
    .where(turns.c.id == sa.bindparam("turn"), turns.c.attempts > 0)
    .values(attempts=turns.c.attempts - 1)
)
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
        turns.c.run_id,
        turns.c.reply_ref,
        turns.c.stream_ref,
    )
    .where(_OPEN)
    .order_by(turns.c.id)
)
_PROGRESS = sa.select(turns.c.run_id, turns.c.reply_ref, turns.c.stream_ref, turns.c.status).where(
    turns.c.id == sa.bindparam("turn")
)
_REPLY_SHOWN = (
    sa.update(turns)
    .where(turns.c.id == sa.bindparam("turn"))
    .values(reply_ref=sa.bindparam("ref", type_=sa.Text))
)
_ANSWER_SHOWN = (
    sa.update(turns)
    .where(turns.c.id == sa.bindparam("turn"))
    .values(stream_ref=sa.bindparam("ref", type_=sa.Text))
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
_IN_THREAD = sa.and_(
    turns.c.team_id == sa.bindparam("team_id"),
    turns.c.channel_id == sa.bindparam("channel_id"),
    turns.c.thread_ts == sa.bindparam("thread_ts"),
)
_TEAMS_OF_THREAD = (
    sa.select(turns.c.team_id)
    .distinct()
    .where(
        turns.c.channel_id == sa.bindparam("channel_id"),
        turns.c.thread_ts == sa.bindparam("thread_ts"),
    )
    .order_by(turns.c.team_id)
)
_PARTICIPANTS = sa.select(turns.c.user_id).distinct().where(_IN_THREAD)
_RUN_IDS = (
    sa.select(turns.c.run_id).where(_IN_THREAD, turns.c.run_id.is_not(None)).order_by(turns.c.id)
)
# Forgetting or retention: the words go, the figures (tokens, model, times) stay. A message not
# answered yet whose text goes is not answered any more.
_ERASE = {
    "text": "",
    "files": "[]",
    "status": sa.case((_OPEN, "failed"), else_=turns.c.status),
    "error": sa.case((_OPEN, sa.bindparam("why", type_=sa.Text)), else_=turns.c.error),
}
_ERASE_THREAD = (
    sa.update(turns)
    .where(
        turns.c.team_id == sa.bindparam("team"),
        turns.c.channel_id == sa.bindparam("channel"),
        turns.c.thread_ts == sa.bindparam("thread"),
    )
    .values(_ERASE)
)
_ERASE_BEFORE = (
    sa.update(turns)
    .where(
        turns.c.created_at < sa.bindparam("before"),
        sa.or_(turns.c.text != "", turns.c.files != "[]"),
    )
    .values(_ERASE)
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
        refused: str | None = None,
    ) -> int | None:
        """Record a message the bot takes; None if this message was already taken.

        The unique (team, channel, message ts) is the dedupe: Slack's retries and the second
        delivery of an @mention (`app_mention` and `message`) cannot both win, across restarts
        and processes too. A message turned away (`refused` says why: over a budget, too fast)
        is recorded too, without its text, so that it is turned away once.
        """
        now = time.time()
        if refused is not None:
            text, files = "", ()
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
                "status": "queued" if refused is None else REFUSED,
                "error": refused,
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
        cached_input_tokens: int | None = None,
        model: str | None = None,
        assistant_id: str | None = None,
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
                "new_cached_input_tokens": cached_input_tokens,
                "new_model": model,
                "new_assistant_id": assistant_id,
                "now": time.time(),
            },
            patience=TURN_WRITE_PATIENCE,
        )

    async def start_turn(self, turn_id: int) -> int:
        """Mark a turn running and count the attempt, in one statement: how many times it has
        been started now (1 the first time; 0 for a turn that is not known).

        Tried again while the database is away (TURN_WRITE_PATIENCE), as `update_turn`: a change
        that landed but whose answer was lost is then counted twice, which only brings the
        give-up of a turn that keeps killing the bot one attempt nearer.
        """
        row = await self._db.first(
            _START, {"turn": turn_id, "now": time.time()}, patience=TURN_WRITE_PATIENCE
        )
        return int(row[0]) if row else 0

    async def attempt_handed_back(self, turn_id: int) -> None:
        """The turn's last start does not count: its process handed it back at shutdown."""
        await self._db.write(_HANDED_BACK, {"turn": turn_id})

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
                progress=TurnProgress(row[10], row[11], row[12], row[8]),
            )
            for row in await self._db.all(statement, params)
        ]

    async def turn_progress(self, turn_id: int) -> TurnProgress:
        """The run and the refs a turn's process kept, and its status ("" for a turn that is
        not known)."""
        row = await self._db.first(_PROGRESS, {"turn": turn_id})
        return TurnProgress(row[0], row[1], row[2], row[3]) if row else TurnProgress(status="")

    async def reply_shown(self, turn_id: int, reply_ref: str) -> None:
        """Where the turn's sign of life is (the chat's ref), for whoever takes the turn over."""
        await self._db.write(_REPLY_SHOWN, {"turn": turn_id, "ref": reply_ref})

    async def answer_shown(self, turn_id: int, answer_ref: str) -> None:
        """The messages the answer is being written into (the chat's ref)."""
        await self._db.write(_ANSWER_SHOWN, {"turn": turn_id, "ref": answer_ref})

    async def turn_statuses(self, key: ConversationKey) -> list[tuple[str, str]]:
        """(message_ts, status) of a conversation's turns, in arrival order."""
        return [(row[0], row[1]) for row in await self._db.all(_STATUSES, _key(key))]

    async def threads_named(self, channel_id: str, thread_ts: str) -> list[ConversationKey]:
        """The thread (in each workspace that has it) the bot took messages in."""
        params = {"channel_id": channel_id, "thread_ts": thread_ts}
        rows = await self._db.all(_TEAMS_OF_THREAD, params)
        return [ConversationKey(str(row[0]), channel_id, thread_ts) for row in rows]

    async def thread_participants(self, key: ConversationKey) -> set[str]:
        """The people who wrote the messages the bot took in a thread."""
        return {str(row[0]) for row in await self._db.all(_PARTICIPANTS, _key(key))}

    async def thread_run_ids(self, key: ConversationKey) -> list[str]:
        """The backend runs (or responses) of a thread's turns, oldest first."""
        return [str(row[0]) for row in await self._db.all(_RUN_IDS, _key(key))]

    async def erase_thread_texts(self, key: ConversationKey) -> int:
        """Erase the stored texts (and file lists) of a thread's turns; how many turns."""
        params = {"team": key.team_id, "channel": key.channel_id, "thread": key.thread_ts}
        return await self._db.write(_ERASE_THREAD, params | {"why": "forgotten"})

    async def erase_texts_before(self, before: float) -> int:
        """Erase the stored texts of turns taken before `before`; how many turns."""
        return await self._db.write(_ERASE_BEFORE, {"before": before, "why": "text expired"})

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


def _key(key: ConversationKey) -> dict[str, str]:
    return {"team_id": key.team_id, "channel_id": key.channel_id, "thread_ts": key.thread_ts}
