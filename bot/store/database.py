"""One database, SQLite or PostgreSQL, behind SQLAlchemy Core (async): the URL, the connection,
and the store's statements run in autocommit or as one transaction.

Most store calls are one statement (`first`, `all`, `write`), which commits by itself: both
databases run in autocommit, so there is no BEGIN or COMMIT round trip. `transaction` runs a
function of a SQLAlchemy `Connection` (several statements) between BEGIN and COMMIT; `run` runs
one without them. SQLite keeps one sqlite3 connection, as the bot always did, shared by every
call, and runs a transaction alone (see sqlite_driver.py). PostgreSQL runs single statements on
a psycopg pool, and the rest on SQLAlchemy's own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
import sqlalchemy as sa
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.sql.compiler import SQLCompiler

from bot.store.sqlite_driver import (
    Session,
    SQLiteThread,
    copy_from,
    open_thread,
    read_only_uri,
    run_statement,
)

T = TypeVar("T")
Params = dict[str, Any]
AnyRow = Row[*tuple[Any, ...]]

DEFAULT_URL = "sqlite:///./bot.sqlite3"
EXAMPLES = "sqlite:///path/to/bot.sqlite3 or postgresql://user:password@host:5432/database"
# PostgreSQL: connections kept open, and how many more a burst may open for a while.
POOL_SIZE = 10
POOL_OVERFLOW = 20
CONNECT_TIMEOUT_SECONDS = 10
# How long a statement waits for a pooled connection: short, so that an event is still acked
# within Slack's 3 s while the database is away.
ACQUIRE_TIMEOUT_SECONDS = 2.0
RETRY_SECONDS = 0.5  # a patient write tries again this often while the database is away
# The server ended the session (pg_terminate_backend, a restart): the statement did not run.
SESSION_ENDED = ("57P01", "57P02", "57P03")
# SQLite: SQLAlchemy connections kept for reuse, all on the one sqlite3 connection.
SQLITE_SESSIONS = 20


class StoreError(Exception):
    """The database cannot be used; the message is one line an operator can act on."""


class StoreUnavailable(StoreError):
    """The database did not answer a statement (it is down, restarting, or unreachable)."""


def sqlite_url(path: Path | str) -> str:
    """DATABASE_PATH, the shorthand for a SQLite file, as a URL."""
    return "sqlite://" if str(path) == ":memory:" else f"sqlite:///{path}"


def parse_url(value: str) -> sa.URL:
    """DATABASE_URL as SQLAlchemy's URL with the async driver this bot uses; ValueError naming
    what is wrong otherwise (never echoing a password)."""
    try:
        url = sa.make_url(value.strip())
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ValueError(f"DATABASE_URL is not a database URL ({exc}); use {EXAMPLES}.") from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "aiosqlite"):
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        if not url.database:
            raise ValueError(f"DATABASE_URL names no database after the host; use {EXAMPLES}.")
        return url.set(drivername="postgresql+psycopg")
    raise ValueError(
        f"DATABASE_URL {url.drivername}://… is not supported: use {EXAMPLES}"
        " (drivers aiosqlite and psycopg)."
    )


def shown(url: sa.URL) -> str:
    """The database as an operator may see it: a SQLite file's path, or the URL without its
    password and driver."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return sqlite_path(url)
    return url.set(drivername=backend).render_as_string(hide_password=True)


def describe_url(url: str) -> str:
    """DATABASE_URL for a log line or a report: a file's path, or the URL without password."""
    try:
        return shown(parse_url(url))
    except ValueError:
        return "(not a database URL)"


def postgresql_conninfo(url: str) -> str | None:
    """DATABASE_URL as a libpq connection string (its query options kept, e.g.
    `options=-csearch_path=…`), for the job queue; None when it names SQLite."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    base = parsed.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    options = {"connect_timeout": CONNECT_TIMEOUT_SECONDS} | {
        name: value if isinstance(value, str) else value[-1] for name, value in parsed.query.items()
    }
    return make_conninfo(base, **options)


def sqlite_file(url: str) -> Path | None:
    """The SQLite file DATABASE_URL names; None for PostgreSQL or a database in memory."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or sqlite_path(parsed) == ":memory:":
        return None
    return Path(sqlite_path(parsed))


def sqlite_path(url: sa.URL) -> str:
    return url.database or ":memory:"


def insert(dialect: str, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
    """An INSERT that knows ON CONFLICT: both dialects spell it alike, each with its own class."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def insert_new(dialect: str, table: sa.Table, key: Sequence[str]) -> sa.Insert:
    """Insert a row unless one with the same `key` exists (then nothing happens)."""
    return insert(dialect, table).on_conflict_do_nothing(index_elements=list(key))


def upsert(dialect: str, table: sa.Table, key: Sequence[str], columns: Sequence[str]) -> sa.Insert:
    """Insert a row, or update `columns` of the one with the same `key`."""
    statement = insert(dialect, table)
    return statement.on_conflict_do_update(
        index_elements=list(key), set_={name: statement.excluded[name] for name in columns}
    )


class Database:
    def __init__(
        self,
        engine: AsyncEngine,
        url: sa.URL,
        thread: SQLiteThread | None = None,
        statements: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.url = url
        self.dialect = url.get_backend_name()
        self._thread = thread  # SQLite: the one sqlite3 connection
        self._statements = statements  # PostgreSQL: the pool single statements run on
        self._turns = _Turns() if thread is not None else None
        self._compiled = _Compiled(engine.dialect)
        self._begin = "BEGIN IMMEDIATE" if thread is not None else "BEGIN"
        # PostgreSQL for `python -m bot check`: one connection in a transaction never committed.
        self._held: AsyncConnection | None = None
        self._held_turn = asyncio.Lock()

    @classmethod
    async def connect(cls, url: sa.URL, *, statements: bool = True) -> Database:
        """Connect (SQLite: open or create the file); StoreError saying why it cannot."""
        try:
            if url.get_backend_name() == "sqlite":
                return await cls._connect_sqlite(url)
            return await cls._connect_postgresql(url, statements)
        except (sa.exc.DBAPIError, psycopg.Error, PoolTimeout, sqlite3.Error, OSError) as exc:
            raise StoreError(f"The database {shown(url)} cannot be used: {reason(exc)}") from None

    @classmethod
    async def _connect_postgresql(cls, url: sa.URL, statements: bool) -> Database:
        settings = {"connect_timeout": CONNECT_TIMEOUT_SECONDS} | dict(url.query)  # URL's win
        engine = create_async_engine(
            url,
            isolation_level="AUTOCOMMIT",
            pool_size=1,  # transactions and migrations; single statements use `pool`
            max_overflow=POOL_OVERFLOW,
            pool_recycle=1800,
            pool_pre_ping=True,  # a connection the server ended is replaced, not used
            connect_args=settings,
        )
        pool = None
        try:
            await _run_on(engine, lambda connection: connection.exec_driver_sql("SELECT 1"))
            if statements:
                conninfo = url.set(drivername="postgresql", query={})
                pool = AsyncConnectionPool(
                    conninfo.render_as_string(hide_password=False),
                    min_size=POOL_SIZE,
                    max_size=POOL_SIZE + POOL_OVERFLOW,
                    kwargs={"autocommit": True, **settings},
                    timeout=ACQUIRE_TIMEOUT_SECONDS,
                    open=False,
                    name="store",
                )
                await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except BaseException:
            if pool is not None:
                await pool.close()
            await engine.dispose()
            raise
        return cls(engine, url, statements=pool)

    @classmethod
    async def _connect_sqlite(cls, url: sa.URL, path: str | None = None) -> Database:
        """The file `url` names, or `path` instead (the URL still names the database in
        messages)."""
        path = path or sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        thread = await open_thread(path)

        async def session() -> Session:
            return Session(thread)

        engine = create_async_engine(
            url,
            async_creator=session,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=SQLITE_SESSIONS,
            max_overflow=-1,  # sessions cost nothing: the thread is shared
        )
        return cls(engine, url, thread=thread)

    @classmethod
    async def connect_rolled_back(cls, url: sa.URL) -> tuple[Database, bool]:
        """A database whose writes nobody ever sees, and whether the real one exists yet.

        SQLite: a copy in memory of the file (read without writing a byte, not even -wal or
        -shm files). PostgreSQL: one connection in one transaction, rolled back on close.
        """
        if url.get_backend_name() == "sqlite":
            source = read_only_uri(Path(sqlite_path(url)))
            database = await cls._connect_sqlite(url, ":memory:")
            try:
                if source is not None:
                    assert database._thread is not None
                    await database._thread.on_thread(copy_from, database._thread._conn, source)
            except sqlite3.Error as exc:
                await database.close()
                raise StoreError(f"The database {shown(url)} cannot be read: {exc}") from None
            except BaseException:
                await database.close()
                raise
            return database, source is not None
        database = await cls.connect(url, statements=False)
        try:
            held = await database.engine.connect()
            await held.exec_driver_sql("BEGIN")
        except BaseException:
            await database.engine.dispose()
            raise
        database._held = held
        return database, True

    async def close(self) -> None:
        if self._held is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                await self._held.exec_driver_sql("ROLLBACK")
            await self._held.close()
        if self._statements is not None:
            await self._statements.close()
        await self.engine.dispose()
        if self._thread is not None:
            await self._thread.close()

    async def run(self, work: Callable[[sa.Connection], T]) -> T:
        """Run `work` on one connection; each of its statements commits by itself."""
        if self._turns is None:
            return await self._run(work)
        async with self._turns.shared():
            return await self._run(work)

    async def transaction(self, work: Callable[[sa.Connection], T]) -> T:
        """Run `work`'s statements as one transaction: all of them or none."""
        if self._held is not None:  # already in one: a savepoint
            return await self._run(functools.partial(_atomically, _SAVEPOINT, work))
        atomically = functools.partial(_atomically, (self._begin, "COMMIT", "ROLLBACK"), work)
        if self._turns is None:
            return await self._run(atomically)
        async with self._turns.alone():
            return await self._run(atomically)

    async def _run(self, work: Callable[[sa.Connection], T]) -> T:
        if self._held is not None:
            async with self._held_turn:
                return await self._held.run_sync(work)
        return await _run_on(self.engine, work)

    # The shapes most store calls take, each one statement. They skip SQLAlchemy's execution
    # (a greenlet, a pooled connection and a result object per call, which cost more than the
    # statement itself): the statement is compiled once, and runs on a driver connection, its
    # rows coming back in one trip (SQLite: to the connection's thread; PostgreSQL: to the
    # server). The column types (text, integer, float, boolean) go to and come from the
    # drivers as they are; SQLite gives booleans as 0 and 1.

    async def first(
        self, statement: sa.Executable, params: Params, patience: float = 0.0
    ) -> AnyRow | None:
        """The first row a statement returns (a change's RETURNING too); `patience` as for
        `write`."""
        rows = (await self._patiently(statement, params, patience))[1]
        return rows[0] if rows else None

    async def all(self, statement: sa.Executable, params: Params | None = None) -> list[AnyRow]:
        return (await self._execute(statement, params or {}))[1]

    async def write(self, statement: sa.Executable, params: Params, patience: float = 0.0) -> int:
        """Execute one change; how many rows it changed. `patience`: seconds to try again for
        while the database does not answer (for a change that may safely be made twice)."""
        return (await self._patiently(statement, params, patience))[0]

    async def _patiently(
        self, statement: sa.Executable, params: Params, patience: float
    ) -> tuple[int, list[Any]]:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + patience
        while True:
            try:
                return await self._execute(statement, params)
            except StoreUnavailable:
                if loop.time() >= give_up:
                    raise
            await asyncio.sleep(RETRY_SECONDS)

    async def _execute(self, statement: sa.Executable, params: Params) -> tuple[int, list[Any]]:
        """(rows changed, rows returned)."""
        if self._thread is not None:
            assert self._turns is not None
            sql, values = self._compiled.positional(statement, params)
            async with self._turns.shared():
                try:
                    outcome = await self._thread.on_thread(
                        run_statement, self._thread._conn, sql, values
                    )
                except sqlite3.Error as exc:  # the same errors SQLAlchemy raises
                    raise sa.exc.DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc
            return outcome[1], outcome[3]
        if self._statements is None:  # check's rolled-back connection
            return await self.run(functools.partial(_with_rows, statement, params))
        sql, named = self._compiled.named(statement, params)
        try:
            try:
                return await self._on_pool(sql, named)
            except psycopg.OperationalError as exc:
                if exc.sqlstate not in SESSION_ENDED:
                    raise
                # Other pooled connections are likely ended too: drop them, and run it again.
                await self._statements.check()
                return await self._on_pool(sql, named)
        except PoolTimeout as exc:
            raise StoreUnavailable(f"The database did not answer: {reason(exc)}") from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"The database did not answer: {reason(exc)}") from exc
        except psycopg.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, named, exc, psycopg.Error) from exc

    async def _on_pool(self, sql: str, named: Params) -> tuple[int, list[Any]]:
        assert self._statements is not None
        async with self._statements.connection() as connection:
            cursor = await connection.execute(sql, named)
            rows = await cursor.fetchall() if cursor.description else []
            return cursor.rowcount, rows


async def _run_on(engine: AsyncEngine, work: Callable[[sa.Connection], T]) -> T:
    async with engine.connect() as connection:
        return await connection.run_sync(work)


def _with_rows(
    statement: sa.Executable, params: Params, connection: sa.Connection
) -> tuple[int, list[Any]]:
    result = connection.execute(statement, params)
    return result.rowcount, list(result) if result.returns_rows else []


class _Compiled:
    """Statements compiled for one dialect, each once per set of parameter names."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self._dialect = dialect
        self._cache: dict[tuple[sa.Executable, tuple[str, ...]], SQLCompiler] = {}

    def named(self, statement: sa.Executable, params: Params) -> tuple[str, Params]:
        """The SQL and its values by name (psycopg's %(name)s)."""
        compiled = self._compile(statement, params)
        return compiled.string, dict(compiled.construct_params(params) or {})

    def positional(self, statement: sa.Executable, params: Params) -> tuple[str, list[Any]]:
        """The SQL and its values in order (sqlite3's ?)."""
        compiled = self._compile(statement, params)
        values = compiled.construct_params(params) or {}
        return compiled.string, [values[name] for name in compiled.positiontup or ()]

    def _compile(self, statement: sa.Executable, params: Params) -> SQLCompiler:
        key = (statement, tuple(params))
        compiled = self._cache.get(key)
        if compiled is None:
            clause = cast(sa.ClauseElement, statement)
            compiled = cast(
                SQLCompiler, clause.compile(dialect=self._dialect, column_keys=[*params])
            )
            self._cache[key] = compiled
        return compiled


class _Turns:
    """SQLite's one connection: any number of autocommit units of work at once (their statements
    queue on its thread), or one transaction alone."""

    def __init__(self) -> None:
        self._door = asyncio.Lock()  # a transaction holds it while it waits and runs
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        if self._door.locked():
            async with self._door:
                pass
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self._door:
            await self._idle.wait()
            yield


_SAVEPOINT = ("SAVEPOINT unit", "RELEASE SAVEPOINT unit", "ROLLBACK TO SAVEPOINT unit")


def _atomically(
    ends: tuple[str, str, str], work: Callable[[sa.Connection], T], connection: sa.Connection
) -> T:
    begin, commit, rollback = ends
    connection.exec_driver_sql(begin)
    try:
        result = work(connection)
    except BaseException:
        with contextlib.suppress(sa.exc.DBAPIError):
            connection.exec_driver_sql(rollback)
        raise
    connection.exec_driver_sql(commit)
    return result


def reason(exc: BaseException) -> str:
    """The driver's own words for what went wrong, on one line."""
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    return text.removeprefix("connection failed: ")
