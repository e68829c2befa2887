"""How the SQLite store's writer runs the jobs it takes from its queue: group commit, savepoints, rollback,
and each outcome (a result, or a driver error mapped by :mod:`~epoch.stores.sqlite.errors`) sent back to
its caller's event loop.

Group commit. The writer takes every append waiting in its queue and commits them in one
``BEGIN IMMEDIATE ... COMMIT``. It first runs them one after another as they come; when one of them
fails (a wrong expected version, say) or finds its events stored already, it rolls the transaction back
and runs them again, each inside its own SAVEPOINT, so that one rolls back alone while the others share
a single commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

from epoch.stores.sqlite.bridge import Outcome, post
from epoch.stores.sqlite.errors import epoch_error
from epoch.stores.sqlite.schema import BEGIN, COMMIT, RELEASE_SAVEPOINT, ROLLBACK, ROLLBACK_TO_SAVEPOINT, SAVEPOINT
from epoch.stores.sqlite.work import Group, Memo, Replay

__all__ = [
    "EXCLUSIVE",
    "READ",
    "STORE_EXCLUSIVE",
    "WRITE",
    "Job",
    "commit_begun",
    "run_batch",
    "run_read",
    "settled_after",
]

T = TypeVar("T")

# Job kinds. WRITE jobs run inside the group transaction; EXCLUSIVE ones (a caller's fn, whose own
# exceptions pass unchanged) and STORE_EXCLUSIVE ones (the store's own work, such as an import, whose driver
# errors are mapped like a WRITE's) in a transaction of their own; READ jobs outside any explicit transaction.
WRITE, EXCLUSIVE, STORE_EXCLUSIVE, READ = 0, 1, 2, 3


class Job(NamedTuple):
    """One call handed to a thread: ``fn(group or connection, *args)``, settled on ``future`` in ``loop``."""

    kind: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    stream: str | None  # the stream a WRITE job writes, named by its errors
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class _Done(NamedTuple):
    job: Job
    result: Any
    error: BaseException | None


_held = threading.local()  # the writer thread's outcomes of a batch, posted once it let go of the connection


@contextmanager
def settled_after() -> Iterator[None]:
    """Post the outcomes of the block's jobs when the block ends, not as each is settled: the writer runs a
    batch holding the connection's lock, and a caller woken before it lets go finds the lock taken and
    sends its next append to the writer too, instead of running it on its own thread."""
    _held.outcomes = []
    try:
        yield
    finally:
        outcomes, _held.outcomes = _held.outcomes, None
        _post(outcomes)


def _finish(outcomes: list[_Done]) -> None:
    held: list[_Done] | None = getattr(_held, "outcomes", None)
    if held is not None:
        held.extend(outcomes)
    else:
        _post(outcomes)


def _post(outcomes: list[_Done]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for job, result, error in outcomes:
        by_loop.setdefault(job.loop, []).append(Outcome(job.future, result, error))
    for loop, settled in by_loop.items():
        post(loop, settled)


def run_read(connection: sqlite3.Connection, job: Job, timeout: float) -> None:
    """Run a READ job on ``connection`` (a reader's, or the writer's in memory) and settle its future."""
    if job.future.cancelled():
        return
    try:
        result = job.fn(connection, *job.args)
    except Exception as exc:
        _finish([_Done(job, None, epoch_error(exc, timeout))])
    else:
        _finish([_Done(job, result, None)])


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the transaction is lost anyway; the caller reports why
            connection.execute(ROLLBACK)


def run_batch(
    connection: sqlite3.Connection, batch: list[Job], timeout: float, committed: Callable[[], None], memo: Memo
) -> None:
    """Run the jobs the writer took from its queue, in order; ``committed()`` after each commit.

    ``memo`` is what the writer knows of the file (see ``work.Memo``): kept up to date by the appends,
    forgotten after a failed transaction and after every transaction of a caller's own.
    """
    start = 0
    while start < len(batch):  # consecutive WRITE jobs share one transaction
        end = start + 1
        if batch[start].kind == WRITE:
            while end < len(batch) and batch[end].kind == WRITE:
                end += 1
            _commit_group(connection, batch[start:end], timeout, committed, memo)
        elif batch[start].kind == READ:
            run_read(connection, batch[start], timeout)
        else:
            memo.forget()  # it may write anything, and its commits do not move data_version
            _run_exclusive(connection, batch[start], timeout, committed)
            memo.forget()
        start = end


def commit_begun(
    connection: sqlite3.Connection, jobs: list[Job], timeout: float, committed: Callable[[], None], memo: Memo
) -> None:
    """Run appends in the transaction their caller began (``BEGIN IMMEDIATE`` taken) and settle them."""
    _commit_group(connection, jobs, timeout, committed, memo, begun=True)


def _commit_group(
    connection: sqlite3.Connection,
    jobs: list[Job],
    timeout: float,
    committed: Callable[[], None],
    memo: Memo,
    *,
    begun: bool = False,
) -> None:
    """Run appends (WRITE jobs) in one transaction: all at once, else each in a SAVEPOINT of its own."""
    jobs = [job for job in jobs if not job.future.cancelled()]
    if not jobs:
        if begun:
            _rollback(connection)
        return
    alone = len(jobs) == 1
    outcomes: list[_Done] = []
    try:
        if not begun:
            connection.execute(BEGIN)
        group = Group(connection, memo)
        every = None if alone else _all_or_none(group, jobs)
        if every is not None:
            outcomes = every
        else:
            if not alone:  # one failed or replayed: start over, each append in a savepoint of its own
                memo.forget()
                _rollback(connection)
                connection.execute(BEGIN)
                group = Group(connection, memo)
            for job in jobs:
                outcomes.append(_apply(group, job, alone, timeout))
        if connection.in_transaction:
            connection.execute(COMMIT)
        memo.head = group.head  # committed (or, for one append rolled back, as the transaction found it)
    except sqlite3.Error as exc:  # the transaction is lost: nothing of it was committed
        memo.forget()
        _rollback(connection)
        failed = {id(done.job): done.error for done in outcomes if done.error is not None}
        _finish([_Done(job, None, failed.get(id(job)) or epoch_error(exc, timeout, job.stream)) for job in jobs])
        return
    committed()
    _finish(outcomes)


def _all_or_none(group: Group, jobs: list[Job]) -> list[_Done] | None:
    """Run the group's appends one after another without savepoints: their outcomes when every one of
    them succeeded, else ``None`` (one raised or replayed, and the others' rows are in the transaction,
    which the caller then rolls back). Almost every group succeeds whole, and two statements fewer per
    append (SAVEPOINT, RELEASE) were 7% more commands/s with 16 tasks; a group that fails pays its
    appends twice."""
    outcomes: list[_Done] = []
    for job in jobs:
        try:
            result = job.fn(group, *job.args)
        except Exception:
            return None
        if isinstance(result, Replay):
            return None
        outcomes.append(_Done(job, result, None))
    return outcomes


def _undo(group: Group, head: int, alone: bool, stream: str | None) -> None:
    """Roll back what one append of the group wrote (all of the transaction when it is alone)."""
    connection = group.connection
    group.head = head
    group.memo.streams.pop(stream or "", None)  # asked again next time
    connection.execute(ROLLBACK if alone else ROLLBACK_TO_SAVEPOINT)
    if not alone:
        connection.execute(RELEASE_SAVEPOINT)


def _apply(group: Group, job: Job, alone: bool, timeout: float) -> _Done:
    connection = group.connection
    head = group.head
    if not alone:
        connection.execute(SAVEPOINT)
    try:
        result = job.fn(group, *job.args)
    except Exception as exc:
        if not connection.in_transaction:  # SQLite gave up the whole transaction (e.g. disk full)
            raise
        _undo(group, head, alone, job.stream)
        return _Done(job, None, epoch_error(exc, timeout, job.stream))
    if isinstance(result, Replay):  # stored already: keep nothing of the attempt, answer as the first time
        _undo(group, head, alone, job.stream)
        return _Done(job, result.result, None)
    if not alone:
        connection.execute(RELEASE_SAVEPOINT)
    return _Done(job, result, None)


def _run_exclusive(connection: sqlite3.Connection, job: Job, timeout: float, committed: Callable[[], None]) -> None:
    """``job.fn(connection)`` in a transaction of its own. Failing to begin or commit is mapped; what ``fn``
    raises is mapped too for the store's own work, and passes unchanged from a caller's ``fn``."""
    if job.future.cancelled():
        return
    try:
        result = _in_transaction(connection, job.fn, timeout, committed)
    except Exception as exc:
        _finish([_Done(job, None, epoch_error(exc, timeout) if job.kind == STORE_EXCLUSIVE else exc)])
    else:
        _finish([_Done(job, result, None)])


def _in_transaction(
    connection: sqlite3.Connection,
    fn: Callable[[sqlite3.Connection], T],
    timeout: float,
    committed: Callable[[], None],
) -> T:
    try:
        connection.execute(BEGIN)
    except sqlite3.Error as exc:
        raise epoch_error(exc, timeout) from exc
    try:
        result = fn(connection)
    except BaseException:
        _rollback(connection)
        raise
    try:
        connection.execute(COMMIT)
    except sqlite3.Error as exc:
        _rollback(connection)
        raise epoch_error(exc, timeout) from exc
    committed()
    return result
