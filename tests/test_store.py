"""The store keeps what the bot must not forget, the same on SQLite and on PostgreSQL: each message
taken once, conversations, defaults, ratings, definitions and files; several statements written
together or not at all; an old SQLite file migrated in place; a database it cannot use refused in
one line."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from bot.definitions import AssistantDefinition
from bot.messages import ConversationKey, SharedFile
from bot.store import (
    ConversationRecord,
    SharedFileRecord,
    Store,
    StoreError,
    TurnKnowledge,
    TurnProgress,
)
from bot.store.database import parse_url
from bot.store.migrate import latest_revision
from bot.store.schema import channel_settings, metadata
from tests.conftest import ALICE, BOB, BOTH_DATABASES, GENERAL, Harness, wait_answers
from tests.fixtures import legacy_sqlite_schema

THREAD = ConversationKey("T1", "C1", "100.1")
CHANNEL = ConversationKey("T1", "C1", "")  # the channel's knowledge
REPORT = SharedFile("F1", "report.pdf", "application/pdf", 12, "https://files.slack.com/F1")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url)
    yield opened
    await opened.close()


both = pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)


@both
async def test_each_message_is_taken_once_however_often_and_however_fast_it_arrives(
    store: Store, database_url: str
) -> None:
    taken = await asyncio.gather(
        *(store.add_turn(THREAD, "100.1", ALICE, "hello", False) for _ in range(8))
    )
    assert len([turn for turn in taken if turn is not None]) == 1
    again = await Store.open(database_url)  # another process, or the bot after a restart
    try:
        assert await again.add_turn(THREAD, "100.1", ALICE, "hello", False) is None
        assert await again.add_turn(THREAD, "100.2", BOB, "and me", False) is not None
    finally:
        await again.close()


@both
async def test_a_turn_keeps_its_message_until_it_is_answered_then_forgets_it(
    store: Store,
) -> None:
    first = await store.add_turn(THREAD, "100.1", ALICE, "read this", True, [REPORT])
    second = await store.add_turn(THREAD, "100.2", BOB, "and then?", False)
    assert first is not None and second is not None
    await store.update_turn(first, "running", run_id="run_1")
    waiting = await store.open_turns()
    assert [(t.turn_id, t.text, t.status, t.is_direct) for t in waiting] == [
        (first, "read this", "running", True),
        (second, "and then?", "queued", False),
    ]
    assert waiting[0].files == (REPORT,) and waiting[0].key == THREAD

    await store.update_turn(first, "done", input_tokens=10, output_tokens=20)
    assert [t.turn_id for t in await store.open_turns()] == [second]
    assert await store.turn_statuses(THREAD) == [("100.1", "done"), ("100.2", "queued")]
    assert await store.has_conversation(THREAD)
    assert not await store.has_conversation(ConversationKey("T1", "C1", "999.9"))


@both
async def test_a_turn_keeps_its_run_and_where_its_answer_shows_for_whoever_takes_it_over(
    store: Store,
) -> None:
    turn = await store.add_turn(THREAD, "100.1", ALICE, "hello", False)
    assert turn is not None
    assert await store.turn_progress(turn) == TurnProgress()
    await store.reply_shown(turn, "100.2")
    await store.update_turn(turn, "running", run_id="run_1")
    await store.answer_shown(turn, "100.3 100.4")
    kept = TurnProgress("run_1", reply_ref="100.2", answer_ref="100.3 100.4", status="running")
    assert await store.turn_progress(turn) == kept
    [left] = await store.open_turns()
    assert left.progress == kept
    await store.update_turn(turn, "done")
    assert (await store.turn_progress(turn)).status == "done"
    assert (await store.turn_progress(turn + 1)).status == ""


@both
async def test_each_start_of_a_turn_is_counted_so_that_one_that_keeps_killing_the_bot_ends(
    store: Store, database_url: str
) -> None:
    turn = await store.add_turn(THREAD, "100.1", ALICE, "hello", False)
    assert turn is not None
    assert await store.start_turn(turn) == 1  # the first try
    [running] = await store.open_turns()
    assert running.status == "running"
    again = await Store.open(database_url)  # the bot after a crash, or another replica
    try:
        assert await again.start_turn(turn) == 2
        assert await again.start_turn(turn) == 3
    finally:
        await again.close()
    assert await store.start_turn(turn + 1) == 0  # not a turn
    await store.attempt_handed_back(turn)  # handed back whole at shutdown: not counted
    assert await store.start_turn(turn) == 3


@both
async def test_switching_a_thread_to_another_engine_starts_a_new_backend_conversation(
    store: Store,
) -> None:
    await store.save_conversation(ConversationRecord(THREAD, "assistants", "thread_1", "asst_1"))
    await store.set_thread_assistant(THREAD, "assistants", "asst_2")
    assert await store.get_conversation(THREAD) == ConversationRecord(
        THREAD, "assistants", "thread_1", "asst_2"
    )
    await store.set_thread_assistant(THREAD, "responses", "Helper")
    assert await store.get_conversation(THREAD) == ConversationRecord(
        THREAD, "responses", "", "Helper"
    )
    later = ConversationKey("T1", "C1", "200.1")  # chosen before anyone mentioned the bot
    await store.set_thread_assistant(later, "responses", "Helper")
    assert await store.get_conversation(later) == ConversationRecord(
        later, "responses", "", "Helper"
    )


@both
async def test_channel_defaults_are_replaced_and_listed_newest_first(store: Store) -> None:
    await store.set_channel_setting("T1", "C1", "asst_1", ALICE)
    await store.set_channel_setting("T1", "D1", "asst_2", BOB)
    await store.set_channel_setting("T1", "C1", "asst_3", BOB)
    setting = await store.get_channel_setting("T1", "C1")
    assert setting is not None and (setting.assistant_id, setting.set_by) == ("asst_3", BOB)
    listed = await store.list_channel_settings("T1")
    assert [(s.channel_id, s.assistant_id) for s in listed] == [("C1", "asst_3"), ("D1", "asst_2")]
    assert await store.get_channel_setting("T2", "C1") is None


@both
async def test_each_persons_latest_rating_of_an_answer_counts(store: Store) -> None:
    turn = await store.add_turn(THREAD, "100.1", ALICE, "hi", False)
    assert await store.record_feedback("T1", "C1", "100.1", ALICE, "good")
    assert await store.record_feedback("T1", "C1", "100.1", ALICE, "bad")
    assert await store.record_feedback("T1", "C1", "100.1", BOB, "good")
    assert not await store.record_feedback("T1", "C1", "555.5", BOB, "good")  # no such answer
    ratings = {(f.turn_id, f.message_ts, f.user_id, f.rating) for f in await store.list_feedback()}
    assert ratings == {(turn, "100.1", ALICE, "bad"), (turn, "100.1", BOB, "good")}


@both
async def test_a_tool_call_is_decided_once_by_whoever_presses_first(store: Store) -> None:
    await store.add_approval("apr1", "T1", ALICE)
    pending = await store.get_approval("apr1")
    assert pending is not None and (pending.asker, pending.status) == (ALICE, "pending")
    decisions = await asyncio.gather(
        store.decide_approval("apr1", "approved", ALICE),
        store.decide_approval("apr1", "denied", BOB),
    )
    assert sorted(decisions) == [False, True]
    decided = await store.get_approval("apr1")
    assert decided is not None
    assert (decided.status, decided.decided_by) in {("approved", ALICE), ("denied", BOB)}
    assert await store.get_approval("nope") is None


@both
async def test_assistant_definitions_are_found_by_id_or_name_and_listed_by_name(
    store: Store,
) -> None:
    helper = AssistantDefinition(name="helper", model="gpt-4o", temperature=0.2, id="ast_1")
    coder = AssistantDefinition(
        name="Coder", model="gpt-4.1", tools=({"type": "file_search"},), id="ast_2"
    )
    await store.save_definition(helper)
    await store.save_definition(coder)
    await store.save_definition(AssistantDefinition(name="Helper", model="gpt-4.1", id="ast_1"))
    assert [d.name for d in await store.list_definitions()] == ["Coder", "Helper"]
    assert await store.get_definition("Coder") == coder
    found = await store.get_definition("ast_1")
    assert found is not None and (found.name, found.model) == ("Helper", "gpt-4.1")
    assert await store.delete_definition("ast_2")
    assert not await store.delete_definition("ast_2")
    assert await store.get_definition("Coder") is None


@both
async def test_files_vector_stores_and_what_is_shared_where_are_remembered(store: Store) -> None:
    await store.save_conversation(ConversationRecord(THREAD, "responses", "conv_1", "Helper"))
    await store.save_backend_file("F1", "assistants", "file_old", "report.pdf", 12)
    await store.save_backend_file("F1", "assistants", "file_1", "report.pdf", 12)  # replaced
    assert await store.backend_file("F1", "assistants") == "file_1"
    assert await store.backend_file("F1", "vision") is None

    await store.save_vector_store("vs_thread", THREAD)
    await store.save_vector_store("vs_channel", CHANNEL)
    assert await store.vector_store_for(THREAD) == "vs_thread"
    assert await store.vector_store_for(CHANNEL) == "vs_channel"
    conversation = await store.get_conversation(THREAD)
    assert conversation is not None and conversation.vector_store_id == "vs_thread"

    def shared(file_id: str, use: str, store_id: str | None, at: float) -> SharedFileRecord:
        return SharedFileRecord(file_id, use, f"{file_id}.pdf", store_id, "ok", None, ALICE, at)

    await store.save_shared_file(THREAD, shared("file_1", "search", "vs_thread", 1.0))
    await store.save_shared_file(THREAD, shared("file_2", "code", None, 2.0))
    await store.save_shared_file(CHANNEL, shared("file_1", "search", "vs_channel", 3.0))
    assert [f.backend_file_id for f in await store.shared_files(THREAD)] == ["file_1", "file_2"]
    assert [f.backend_file_id for f in await store.shared_files(THREAD, "code")] == ["file_2"]
    await store.save_shared_file(THREAD, shared("file_0", "code", None, 0.5))
    assert await store.turn_knowledge(THREAD) == TurnKnowledge(
        "vs_thread", "vs_channel", ("file_0", "file_2")
    )
    await store.forget_backend_file("file_0")

    # Channel knowledge is kept; a thread's store and files expire.
    assert await store.expired_vector_stores(before=2**40) == ["vs_thread"]
    assert await store.expired_backend_files(before=2**40) == []  # file_1 is channel knowledge
    assert await store.remove_shared_file(CHANNEL, "file_1")
    assert not await store.remove_shared_file(CHANNEL, "file_1")
    assert await store.expired_backend_files(before=2**40) == ["file_1"]

    await store.forget_vector_store("vs_thread")
    assert await store.vector_store_for(THREAD) is None
    conversation = await store.get_conversation(THREAD)
    assert conversation is not None and conversation.vector_store_id is None
    assert [f.backend_file_id for f in await store.shared_files(THREAD)] == ["file_2"]
    await store.forget_backend_file("file_2")
    assert await store.shared_files(THREAD) == []


@both
async def test_a_write_of_several_statements_lands_whole_or_not_at_all(store: Store) -> None:
    """Other writes going on meanwhile are neither lost with it nor caught in it."""

    def half_then_fail(connection: sa.Connection) -> None:
        connection.execute(
            sa.insert(channel_settings),
            {"team_id": "T1", "channel_id": "C9", "assistant_id": "a", "set_by": "U", "set_at": 1},
        )
        raise RuntimeError("the second statement failed")

    async def others() -> list[int | None]:
        return await asyncio.gather(
            *(store.add_turn(THREAD, f"300.{n}", ALICE, "meanwhile", False) for n in range(20))
        )

    failed, taken = await asyncio.gather(
        store._db.transaction(half_then_fail), others(), return_exceptions=True
    )
    assert isinstance(failed, RuntimeError)
    assert await store.get_channel_setting("T1", "C9") is None
    assert isinstance(taken, list) and None not in taken
    assert len(await store.turn_statuses(THREAD)) == 20


@both
async def test_the_migrations_build_exactly_the_schema_the_store_uses(store: Store) -> None:
    differences = await store._db.run(
        lambda connection: compare_metadata(MigrationContext.configure(connection), metadata)
    )
    assert differences == []
    assert (await store.schema()).revision == latest_revision()


@both
async def test_a_database_of_a_newer_schema_is_refused_in_one_line(
    store: Store, database_url: str
) -> None:
    await store._db.run(
        lambda connection: connection.exec_driver_sql(
            "UPDATE alembic_version SET version_num = '0099'"
        )
    )
    with pytest.raises(StoreError) as refused:
        await Store.open(database_url)
    message = str(refused.value)
    assert "has schema revision 0099, newer than this bot knows" in message
    assert "\n" not in message


def fill_legacy_file(path: Path) -> None:
    """What the bot of before Alembic left in its file: a finished turn with a rating, one still
    waiting, a thread's conversation, a channel default, a definition, files."""
    legacy_sqlite_schema.build(path)
    db = sqlite3.connect(path)
    with db:
        db.execute(
            "INSERT INTO conversations VALUES"
            " ('T1', 'C1', '100.1', 'assistants', 'thread_1', 'asst_1', 1.0, 1.0, 'vs_thread')"
        )
        db.execute("INSERT INTO channel_settings VALUES ('T1', 'C1', 'asst_2', 'U0ALICE', 2.0)")
        db.execute(
            "INSERT INTO turns (team_id, channel_id, thread_ts, message_ts, user_id, text,"
            " is_direct, status, run_id, created_at, updated_at) VALUES"
            " ('T1', 'C1', '100.1', '100.1', 'U0ALICE', '', 0, 'done', 'run_1', 1.0, 1.0),"
            " ('T1', 'C1', '100.1', '100.2', 'U0BOB', 'still waiting', 1, 'queued', NULL, 2, 2)"
        )
        db.execute("INSERT INTO feedback VALUES (1, 'U0ALICE', 'good', 3.0)")
        db.execute(
            "INSERT INTO assistants VALUES"
            """ ('ast_1', 'Helper', '{"name": "Helper", "model": "gpt-4o"}', 1.0, 1.0)"""
        )
        db.execute("INSERT INTO files VALUES ('F1', 'assistants', 'file_1', 'a.pdf', 3, 1.0)")
        db.execute("INSERT INTO vector_stores VALUES ('vs_thread', 'T1', 'C1', '100.1', 1.0)")
        db.execute(
            "INSERT INTO shared_files VALUES"
            " ('T1', 'C1', '100.1', 'file_1', 'search', 'a.pdf', 'vs_thread', 'ok', NULL,"
            " 'U0ALICE', 1.0)"
        )
    db.close()


async def test_a_sqlite_file_of_the_old_schema_is_migrated_in_place_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bot.sqlite3"
    fill_legacy_file(path)
    store = await Store.open(path)
    try:
        assert (await store.schema()).revision == latest_revision()
        assert await missing_tables_columns_or_indexes(store) == []
        assert await store.get_conversation(THREAD) == ConversationRecord(
            THREAD, "assistants", "thread_1", "asst_1", "vs_thread"
        )
        setting = await store.get_channel_setting("T1", "C1")
        assert setting is not None and setting.assistant_id == "asst_2"
        [waiting] = await store.open_turns()
        assert (waiting.message_ts, waiting.text, waiting.is_direct) == (
            "100.2",
            "still waiting",
            True,
        )
        assert await store.add_turn(THREAD, "100.1", ALICE, "again", False) is None  # taken before
        assert [(f.turn_id, f.rating) for f in await store.list_feedback()] == [(1, "good")]
        helper = await store.get_definition("Helper")
        assert helper is not None and helper.model == "gpt-4o"
        assert await store.backend_file("F1", "assistants") == "file_1"
        assert [f.name for f in await store.shared_files(THREAD, "search")] == ["a.pdf"]
        new_turn = await store.add_turn(THREAD, "100.3", ALICE, "new", False)
        assert new_turn == 3  # ids go on from the old ones
    finally:
        await store.close()


async def missing_tables_columns_or_indexes(store: Store) -> list[object]:
    """How the file differs from schema.py, beyond how SQLite spells a type (REAL for FLOAT,
    INTEGER for BOOLEAN) and its quirk of nullable primary keys."""
    differences = await store._db.run(
        lambda connection: compare_metadata(MigrationContext.configure(connection), metadata)
    )
    return [
        change
        for change in differences
        if not (isinstance(change, list) and change[0][0] in ("modify_type", "modify_nullable"))
    ]


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_a_sqlite_file_of_an_older_schema_still_reaches_todays(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "bot.sqlite3"
    legacy_sqlite_schema.build(path, version)
    store = await Store.open(path)
    try:
        assert (await store.schema()).revision == latest_revision()
        assert await missing_tables_columns_or_indexes(store) == []
        await store.save_vector_store("vs_1", CHANNEL)  # a table of version 3
        assert await store.vector_store_for(CHANNEL) == "vs_1"
    finally:
        await store.close()


async def test_a_sqlite_file_newer_than_the_old_schema_and_without_alembic_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bot.sqlite3"
    legacy_sqlite_schema.build(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 5")
    db.close()
    with pytest.raises(StoreError, match="newer than this bot knows"):
        await Store.open(path)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("not a url", "DATABASE_URL is not a database URL"),
        ("mysql://me@db/bot", "DATABASE_URL mysql://… is not supported"),
        ("postgresql://me:secret@db", "DATABASE_URL names no database"),
        ("postgresql://me:secret@db:port/bot", "DATABASE_URL is not a database URL"),
    ],
)
def test_a_malformed_database_url_is_named_without_its_password(url: str, words: str) -> None:
    with pytest.raises(ValueError) as wrong:
        parse_url(url)
    assert words in str(wrong.value) and "secret" not in str(wrong.value)


async def test_a_postgresql_server_that_refuses_is_named_in_one_line() -> None:
    with pytest.raises(StoreError) as refused:
        await Store.open("postgresql://bot:secret@127.0.0.1:1/bot")
    message = str(refused.value)
    assert message.startswith("The database postgresql://bot:***@127.0.0.1:1/bot cannot be used:")
    assert "refused" in message.lower() and "secret" not in message and "\n" not in message


async def test_a_database_that_does_not_exist_on_the_server_is_named(postgres_url: str) -> None:
    missing = sa.make_url(postgres_url).set(database="no_such_database_here")
    with pytest.raises(StoreError, match='database "no_such_database_here" does not exist'):
        await Store.open(missing.render_as_string(hide_password=False))


@pytest.mark.parametrize("engine", ["assistants"])
async def test_the_bot_started_on_an_old_sqlite_file_answers_what_it_left_waiting_once(
    harness: Harness, tmp_path: Path
) -> None:
    """An operator upgrades the bot in place: the message the old bot took but had not answered
    yet is answered, and a message it had answered is not answered again when Slack resends it."""
    slack = harness.slack
    answered = slack.add_message(ALICE, GENERAL, f"<@{slack.bot_user_id}> answered long ago")
    waiting = slack.add_message(BOB, GENERAL, f"<@{slack.bot_user_id}> still waiting")
    path = tmp_path / "old.sqlite3"
    legacy_sqlite_schema.build(path)
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO turns (team_id, channel_id, thread_ts, message_ts, user_id, text,"
            " is_direct, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, 1, 1)",
            [
                (slack.team_id, GENERAL, answered, answered, ALICE, "", "done"),
                (slack.team_id, GENERAL, waiting, waiting, BOB, "still waiting", "queued"),
            ],
        )
    db.close()
    harness.db = path
    await harness.start()

    [reply] = await wait_answers(slack, GENERAL, waiting, 1)
    assert reply.text.startswith("You said: still waiting")
    text = f"<@{slack.bot_user_id}> answered long ago"
    event = slack.message_event(ALICE, GENERAL, text, ts=answered) | {"type": "app_mention"}
    assert (await slack.deliver(event, retry_num=1, retry_reason="http_timeout")).status == 200
    await harness.drain_idle()
    assert slack.bot_replies(GENERAL, answered) == []
