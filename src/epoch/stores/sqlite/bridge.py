"""Between the event loop and the SQLite store's threads: futures settled from a thread on their loop, and
async SQL inside the writer's transaction (statements sent from the loop to the thread).

The writer runs ``fn(connection)`` inside one ``BEGIN IMMEDIATE ... COMMIT`` (``run_in_transaction``). To
let async code (a projection's read model) run SQL in that transaction, ``fn`` serves a queue of
statements sent from the event loop until the block ends, then returns (commit) or raises (rollback).
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Literal, NamedTuple, cast

__all__ = ["Outcome", "SQLiteTransaction", "post", "transaction_on", "wake", "wake_all"]


# --- settling callers' futures --------------------------------------------------------------------


class Outcome(NamedTuple):
    """What a thread sends back for one call: its ``result``, or the ``error`` it raised."""

    future: asyncio.Future[Any]
    result: Any
    error: BaseException | None


def _settle(outcomes: list[Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # cancelled by its caller: nobody is waiting for it
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def post(loop: asyncio.AbstractEventLoop, outcomes: list[Outcome]) -> None:
    """Settle ``outcomes`` on ``loop`` (their futures' loop), from any thread: at once from its own."""
    if asyncio._get_running_loop() is loop:  # work done on the loop's own thread (sqlite.here)
        _settle(outcomes)
        return
    with suppress(RuntimeError):  # the caller's loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_settle, outcomes)


def wake(future: asyncio.Future[Any]) -> None:
    """Resolve ``future`` with ``None`` unless it is done (on its own loop)."""
    if not future.done():
        future.set_result(None)


def wake_all(waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop]) -> None:
    """:func:`wake` each waiter on its loop, from any thread; waiters of closed loops are skipped."""
    for future, loop in waiters.items():
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(wake, future)


# --- the statement bridge -------------------------------------------------------------------------


class _Rollback(Exception):
    pass


_COMMIT = object()
_ROLLBACK = object()


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
            # Not post(): when the loop is closed, nobody can end the block, so let the RuntimeError end
            # it here (rolled back) instead of leaving the writer waiting for a statement forever.
            try:
                rows = connection.execute(sql, params).fetchall()
            except BaseException as exc:
                self._loop.call_soon_threadsafe(_settle, [Outcome(future, None, exc)])
            else:
                self._loop.call_soon_threadsafe(_settle, [Outcome(future, rows, None)])

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
