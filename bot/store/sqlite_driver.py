"""SQLite for SQLAlchemy's `sqlite+aiosqlite` dialect: one aiosqlite connection (one thread), any
number of SQLAlchemy connections on it, and a statement with its rows in one trip to the thread.

Why not plain aiosqlite under SQLAlchemy: its adapter makes five trips to the thread per statement
(open a cursor, enter it, execute, fetch, close) and one for each commit and rollback even when
there is nothing to end; each trip wakes a thread and the event loop. And one SQLAlchemy connection
shared by every coroutine would have to be taken in turn for a whole unit of work, so a burst
queued behind each statement's round trip; here each unit of work has its own SQLAlchemy
connection and their statements queue on the one thread, as they did with plain aiosqlite.

The store runs transactions alone (bot/store/database.py): on a shared connection, a BEGIN holds
everyone's statements until its COMMIT.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

BUSY_TIMEOUT_MS = 5000
T = TypeVar("T")
Row = tuple[Any, ...]
Outcome = tuple[Any, int, int | None, list[Row]]


def _connect(path: str) -> sqlite3.Connection:
    """Runs on the connection's thread. Autocommit: each statement is its own transaction unless
    the store says BEGIN; WAL lets other processes read while one writes."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path != ":memory:":
            _switch_to_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        db.close()
        raise
    return db


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """The switch needs the file to itself and does not wait for a busy file (another process
    opening it at the same moment), so it is tried again for a few seconds."""
    for attempt in range(100):
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)


def read_only_uri(path: Path) -> str | None:
    """A URI that reads the file without writing anything; None when there is no file.

    With no write-ahead log beside it, the file is read as it stands (a read-only open would
    leave -wal and -shm files behind); with one (the bot is running), through it, so that the
    latest writes are seen."""
    if not path.is_file():
        return None
    uri = path.resolve().as_uri()
    wal = path.with_name(path.name + "-wal")
    return f"{uri}?mode=ro" if wal.exists() else f"{uri}?immutable=1"


def copy_from(db: sqlite3.Connection, source_uri: str) -> None:
    """Runs on the connection's thread: `db` becomes a copy of the database at `source_uri`."""
    source = sqlite3.connect(source_uri, uri=True)
    try:
        source.backup(db)
    finally:
        source.close()


def run_statement(db: sqlite3.Connection, sql: str, parameters: Sequence[Any]) -> Outcome:
    cursor = db.execute(sql, parameters)
    try:
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class SQLiteThread(aiosqlite.Connection):
    """The database's one sqlite3 connection, on its own thread."""

    def __init__(self, path: str) -> None:
        super().__init__(lambda: _connect(path), iter_chunk_size=64)
        self._thread.daemon = True  # a connection left open never keeps the process alive
        self._functions: set[str] = set()

    async def on_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on the connection's thread."""
        result: T = await self._execute(function, *args)  # type: ignore[no-untyped-call]
        return result

    async def end_transaction(self, commit: bool) -> None:
        if self._connection is not None and self._connection.in_transaction:
            await self.on_thread(self._connection.commit if commit else self._connection.rollback)

    async def add_function(self, name: str, *args: Any, **kwargs: Any) -> None:
        """SQLAlchemy adds its functions (regexp, floor) to each of its connections: once here."""
        if name not in self._functions:
            await self.create_function(name, *args, **kwargs)
            self._functions.add(name)


class _Cursor:
    """What SQLAlchemy's adapter uses of an aiosqlite cursor; results come back with the call."""

    arraysize = 1

    def __init__(self, thread: SQLiteThread) -> None:
        self._thread = thread
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Row] = []

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> _Cursor:
        outcome = await self._thread.on_thread(run_statement, self._thread._conn, sql, parameters)
        self.description, self.rowcount, self.lastrowid, self._rows = outcome
        return self

    async def executemany(self, sql: str, parameters: Sequence[Sequence[Any]]) -> _Cursor:
        db = self._thread._conn
        cursor = await self._thread.on_thread(db.executemany, sql, parameters)
        self.description, self.rowcount, self._rows = None, cursor.rowcount, []
        return self

    async def fetchall(self) -> list[Row]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []


class Session:
    """One SQLAlchemy connection's driver connection, as SQLAlchemy's aiosqlite adapter sees it.
    Closing it leaves the thread open: the store closes that."""

    def __init__(self, thread: SQLiteThread) -> None:
        self._thread = thread

    @property
    def _connection(self) -> sqlite3.Connection | None:  # the adapter checks it before commits
        return self._thread._connection

    def cursor(self) -> _Cursor:
        return _Cursor(self._thread)

    async def commit(self) -> None:
        await self._thread.end_transaction(commit=True)

    async def rollback(self) -> None:
        await self._thread.end_transaction(commit=False)

    async def create_function(self, name: str, *args: Any, **kwargs: Any) -> None:
        await self._thread.add_function(name, *args, **kwargs)

    async def close(self) -> None:
        return None

    def stop(self) -> None:
        return None


async def open_thread(path: str) -> SQLiteThread:
    thread = SQLiteThread(path)
    await thread
    return thread
