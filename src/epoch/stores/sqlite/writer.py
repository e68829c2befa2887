"""Jobs for the SQLite store's threads: how the writer runs a batch of them (group commit), how a failure
becomes an epoch error, and how each caller's future is settled on the caller's event loop.

Group commit. The writer takes every append waiting in its queue and commits them in one
``BEGIN IMMEDIATE ... COMMIT``, each inside its own SAVEPOINT, so one failing append (a wrong expected
version, say) rolls back alone while the others share a single commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from epoch.errors import EpochError, StoreFull, StoreUnavailable
from epoch.stores.sqlite.work import Replayed, Transaction

__all__ = ["EXCLUSIVE", "READ", "WRITE", "Job", "post", "run_batch", "unavailable", "wake", "wake_all"]

T = TypeVar("T")

# Job kinds. WRITE jobs run inside the group transaction; EXCLUSIVE ones in a transaction of their own;
# READ jobs outside any explicit transaction.
WRITE, EXCLUSIVE, READ = 0, 1, 2
Job = tuple[int, Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_Outcome = tuple[Job, Any, BaseException | None]


def unavailable(exc: BaseException, timeout: float, stream: str | None = None) -> BaseException:
    """The epoch error for an exception raised by SQLite (others pass unchanged), chained to it."""
    if isinstance(exc, EpochError) or not isinstance(exc, sqlite3.Error):
        return exc
    text = str(exc)
    error: StoreUnavailable
    # SQLITE_FULL: the file system is out of space, or the file reached max_page_count. SQLite has
    # rolled the transaction back; say so, so nobody goes looking for a lost connection.
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
        error = StoreFull(
            "the database or disk is full: nothing of this write was stored;"
            " free space (or raise max_page_count) and retry",
            stream,
        )
    elif "locked" in text or "busy" in text:
        text = f"the database is locked: another connection held it for more than {timeout:g} s ({exc})"
        error = StoreUnavailable(text, stream)
    else:
        error = StoreUnavailable(f"SQLite failed: {exc}", stream)
    error.__cause__ = exc
    return error


# --- settling callers' futures --------------------------------------------------------------------


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def wake(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


def post(
    loop: asyncio.AbstractEventLoop, outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_settle, outcomes)


def wake_all(waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop]) -> None:
    for future, loop in waiters.items():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(wake, future)


def _finish(outcomes: list[_Outcome]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for job, result, error in outcomes:
        by_loop.setdefault(job[3], []).append((job[4], result, error))
    for loop, settled in by_loop.items():
        post(loop, settled)


# --- the writer's batches -------------------------------------------------------------------------


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the transaction is lost anyway; the caller reports why
            connection.execute("ROLLBACK")


def run_batch(connection: sqlite3.Connection, batch: list[Job], timeout: float, committed: Callable[[], None]) -> None:
    """Run the jobs the writer took from its queue, in order; ``committed()`` after each commit."""
    start = 0
    while start < len(batch):  # consecutive WRITE jobs share one transaction
        end = start + 1
        if batch[start][0] == WRITE:
            while end < len(batch) and batch[end][0] == WRITE:
                end += 1
            _commit_group(connection, batch[start:end], timeout, committed)
        else:
            _run_alone(connection, batch[start], timeout, committed)
        start = end


def _commit_group(
    connection: sqlite3.Connection, jobs: list[Job], timeout: float, committed: Callable[[], None]
) -> None:
    """Run appends (WRITE jobs) in one transaction, each in a SAVEPOINT of its own when there are several."""
    jobs = [job for job in jobs if not job[4].cancelled()]
    if not jobs:
        return
    alone = len(jobs) == 1
    outcomes: list[_Outcome] = []
    try:
        connection.execute("BEGIN IMMEDIATE")
        tx = Transaction(connection)
        for job in jobs:
            outcomes.append(_apply(tx, job, alone, timeout))
        if connection.in_transaction:
            connection.execute("COMMIT")
    except sqlite3.Error as exc:  # the transaction is lost: nothing of it was committed
        _rollback(connection)
        failed = {id(job): error for job, _, error in outcomes if error is not None}
        _finish([(job, None, failed.get(id(job)) or unavailable(exc, timeout, job[2][0])) for job in jobs])
        return
    committed()
    _finish(outcomes)


def _apply(tx: Transaction, job: Job, alone: bool, timeout: float) -> _Outcome:
    connection = tx.connection
    head = tx.head
    if not alone:
        connection.execute("SAVEPOINT append")
    try:
        result = job[1](tx, *job[2])
    except Exception as exc:
        if not connection.in_transaction:  # SQLite gave up the whole transaction (e.g. disk full)
            raise
        tx.head = head
        connection.execute("ROLLBACK" if alone else "ROLLBACK TO append")
        if not alone:
            connection.execute("RELEASE append")
        if isinstance(exc, Replayed):
            return job, exc.result, None
        return job, None, unavailable(exc, timeout, job[2][0])
    if not alone:
        connection.execute("RELEASE append")
    return job, result, None


def _run_alone(connection: sqlite3.Connection, job: Job, timeout: float, committed: Callable[[], None]) -> None:
    kind, fn, args, _, future = job
    if future.cancelled():
        return
    try:
        result = fn(connection, *args) if kind == READ else _run_exclusive(connection, fn, timeout, committed)
    except Exception as exc:  # run_in_transaction's own errors are mapped already; its fn's pass unchanged
        _finish([(job, None, unavailable(exc, timeout) if kind == READ else exc)])
    else:
        _finish([(job, result, None)])


def _run_exclusive(
    connection: sqlite3.Connection,
    fn: Callable[[sqlite3.Connection], T],
    timeout: float,
    committed: Callable[[], None],
) -> T:
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise unavailable(exc, timeout) from exc
    try:
        result = fn(connection)
    except BaseException:
        _rollback(connection)
        raise
    try:
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(connection)
        raise unavailable(exc, timeout) from exc
    committed()
    return result
