"""One small SQL seam over the store's own database, so checkpoints, parking and read models share it.

A :class:`Transaction` runs ``?``-style SQL on SQLite or PostgreSQL. :func:`database_of` finds the
database behind a store by duck typing (stores never import projections, and projections never import a
backend): a SQLite store offers ``run_in_transaction(fn)``, a PostgreSQL store ``transaction()``.
"""

from __future__ import annotations

import asyncio
import queue
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from functools import lru_cache
from typing import Any, Literal, Protocol, cast

__all__ = ["Database", "Dialect", "LazyTable", "PostgresTransaction", "Transaction", "create_table", "database_of"]

Dialect = Literal["sqlite", "postgresql"]


class Transaction(Protocol):
    """An open transaction in the store's database; SQL uses ``?`` placeholders on every dialect."""

    @property
    def dialect(self) -> Dialect:
        """``"sqlite"`` or ``"postgresql"``, for the few statements that differ."""
        ...

    async def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows (``[]`` when it returns none)."""
        ...


class Database(Protocol):
    """Where transactions come from."""

    @property
    def dialect(self) -> Dialect: ...

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """Open a transaction: committed when the block ends, rolled back when it raises or is cancelled."""
        ...


def database_of(store: object) -> Database | None:
    """The SQL database behind ``store``, or ``None`` (e.g. the memory store)."""
    if callable(getattr(store, "run_in_transaction", None)):
        return _SQLiteDatabase(store)
    if callable(getattr(store, "transaction", None)):
        return _PostgresDatabase(store)
    return None


# --- PostgreSQL ---------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _to_pyformat(sql: str) -> str:
    # psycopg uses %s; keep literal % intact. A '?' inside a string literal would be misread, so pass
    # values as parameters (the jsonb '?' operator has the spelling jsonb_exists()).
    return re.sub(r"\?", "%s", sql.replace("%", "%%"))


class PostgresTransaction:
    """A :class:`Transaction` over a psycopg ``AsyncConnection`` that is inside a transaction."""

    dialect: Literal["postgresql"] = "postgresql"

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        """The psycopg ``AsyncConnection``, for anything ``execute`` cannot say (e.g. COPY)."""

    async def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        cursor = await self.connection.execute(_to_pyformat(sql), tuple(params))
        if cursor.description is None:
            return []
        return list(await cursor.fetchall())


class _PostgresDatabase:
    dialect: Literal["postgresql"] = "postgresql"

    def __init__(self, store: Any) -> None:
        self._store = store

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._store.transaction() as connection:
            yield PostgresTransaction(connection)


# --- SQLite -------------------------------------------------------------------------------------
#
# The SQLite store runs ``fn(connection)`` on its writer connection (in a worker thread) inside one
# BEGIN IMMEDIATE ... COMMIT. To let async projection code run SQL in that transaction, ``fn`` serves a
# queue of statements sent from the event loop until the block ends, then returns (commit) or raises
# (rollback). Never await the store's own append from inside such a block: the writer is busy with us.


class _Rollback(Exception):
    pass


_COMMIT = object()
_ROLLBACK = object()


def _resolve(future: asyncio.Future[Any], rows: object, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(rows)


class _SQLiteTransaction:
    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._worker: asyncio.Future[Any] | None = None
        self._loop_thread = threading.get_ident()

    def serve(self, connection: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("run_in_transaction must run its function off the event loop thread")
        while True:
            item = self._requests.get()
            if item is _COMMIT:
                return
            if item is _ROLLBACK:
                raise _Rollback
            sql, params, future = cast("tuple[str, tuple[object, ...], asyncio.Future[Any]]", item)
            try:
                rows = connection.execute(sql, params).fetchall()
            except BaseException as exc:
                self._loop.call_soon_threadsafe(_resolve, future, None, exc)
            else:
                self._loop.call_soon_threadsafe(_resolve, future, rows, None)

    async def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        assert self._worker is not None
        future: asyncio.Future[list[tuple[Any, ...]]] = self._loop.create_future()
        self._requests.put((sql, tuple(params), future))
        await asyncio.wait({future, self._worker}, return_when=asyncio.FIRST_COMPLETED)
        if not future.done():  # the store failed to start (or lost) the transaction
            future.cancel()
            self._worker.result()
            raise RuntimeError("the SQLite transaction ended early")
        return future.result()


class _SQLiteDatabase:
    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, store: Any) -> None:
        self._run: Callable[[Callable[[Any], None]], Any] = store.run_in_transaction

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        tx = _SQLiteTransaction(asyncio.get_running_loop())
        worker = tx._worker = asyncio.ensure_future(self._run(tx.serve))
        try:
            yield tx
        except BaseException:
            tx._requests.put(_ROLLBACK)
            with suppress(_Rollback, Exception, asyncio.CancelledError):
                await asyncio.shield(worker)
            raise
        tx._requests.put(_COMMIT)
        # Shielded: once COMMIT is queued the outcome is decided by the database, not by a cancel here.
        await asyncio.shield(worker)


async def create_table(tx: Transaction, ddl: str) -> None:
    """Run ``CREATE TABLE IF NOT EXISTS`` safely when several processes race to do it first."""
    if tx.dialect == "postgresql":
        # Concurrent CREATE TABLE IF NOT EXISTS can fail on the catalog's unique index: serialise it.
        await tx.execute("SELECT pg_advisory_xact_lock(?)", [0x45504F4348])
    await tx.execute(ddl)


class LazyTable:
    """A table in the store's database created on first use (once per instance), e.g. checkpoints."""

    def __init__(self, database: Database, ddl: Mapping[str, str]) -> None:
        self.database = database
        self._ddl = ddl
        self._ready = False
        self._lock = asyncio.Lock()

    async def ensure(self, tx: Transaction | None = None) -> None:
        """Create the table if needed, in ``tx`` when given (so it commits with the caller's work)."""
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            if tx is None:
                async with self.database.transaction() as own:
                    await create_table(own, self._ddl[own.dialect])
            else:
                await create_table(tx, self._ddl[tx.dialect])
            self._ready = True
