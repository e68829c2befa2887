"""Async SQL inside the SQLite writer's transaction: statements sent from the event loop to the thread.

The SQLite store runs ``fn(connection)`` on its writer thread inside one ``BEGIN IMMEDIATE ... COMMIT``.
To let async code (a projection's read model) run SQL in that transaction, ``fn`` serves a queue of
statements sent from the event loop until the block ends, then returns (commit) or raises (rollback).
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Literal, cast

__all__ = ["SQLiteTransaction", "transaction_on"]


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


class SQLiteTransaction:
    """A :class:`~epoch.stores._sql.Transaction` whose statements run on the writer thread."""

    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._worker: asyncio.Future[Any] | None = None
        self._loop_thread = threading.get_ident()

    def serve(self, connection: sqlite3.Connection) -> None:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("a SQLite transaction must be served off the event loop thread")
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


@asynccontextmanager
async def transaction_on(
    run: Callable[[Callable[[sqlite3.Connection], None]], Awaitable[None]],
) -> AsyncIterator[SQLiteTransaction]:
    """A transaction served by ``run`` (the store's ``run_in_transaction``)."""
    tx = SQLiteTransaction(asyncio.get_running_loop())
    worker = tx._worker = asyncio.ensure_future(run(tx.serve))
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
