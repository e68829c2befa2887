"""The PostgreSQL store's connections: the pool, running work on it through lost connections, and the
one table that turns driver errors into epoch's (:func:`driver_errors`).

Every psycopg error becomes an :class:`~epoch.errors.EpochError` where it leaves the driver, chained to
psycopg's (only the errors of a caller's own SQL in ``transaction()`` stay psycopg's): a lost or refused
connection (or a server shutting down) is :class:`ConnectionLost`, which :meth:`Connections.run` retries
with backoff until ``reconnect_timeout``; the failed guard of an append or a delete is
:class:`~epoch.errors.WrongExpectedVersion`; an event id stored already is :class:`IdsTaken`;
:class:`~epoch.errors.StoreUnavailable` is what may pass (timeouts, lock waits, deadlocks, resources such
as disk or connections), :class:`~epoch.errors.StoreError` everything else (a syntax error, a broken
schema, missing privileges, bad data): retrying those could only loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from epoch._backoff import Backoff
from epoch.errors import (
    EpochError,
    MissingDependency,
    StoreError,
    StoreUnavailable,
    StreamDeleted,
    WrongExpectedVersion,
)
from epoch.records import ExpectedVersion
from epoch.stores.postgres.sql import CONDITION_FAILED, CONFIGURE, STREAM_DELETED, UNIQUE_VIOLATION, WRONG_VERSION
from epoch.stores.postgres.url import network_options, server_side

try:
    import psycopg
    import psycopg.errors
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependency("psycopg", "postgres") from exc

from epoch.stores.postgres.warm import Conn, WarmConnections  # needs the driver, checked above

__all__ = [
    "ConditionFailed",
    "Conn",
    "ConnectionLost",
    "Connections",
    "IdsTaken",
    "driver_errors",
    "epoch_error",
]

log = logging.getLogger("epoch.stores.postgres")

T = TypeVar("T")


class ConnectionLost(StoreUnavailable):
    """A lost or refused connection, a server shutting down, or no free connection in the pool: the
    next attempt, on a new connection, may succeed (:meth:`Connections.run` retries it)."""


class IdsTaken(StoreError):
    """An event id of the write is stored already (the unique index on ids refused it): the writer tells
    an idempotent replay from :class:`~epoch.errors.DuplicateEventId` by looking the ids up."""


class ConditionFailed(StoreError):
    """``epoch_append_if`` found an event matching the append condition; ``xid, seq`` is the first one.
    The writer tells an idempotent replay from :class:`~epoch.errors.AppendConditionFailed`."""

    def __init__(self, message: str, stream: str | None, xid: int, seq: int) -> None:
        super().__init__(message, stream, CONDITION_FAILED)
        self.xid = xid
        self.seq = seq


_Guard = ExpectedVersion | int | None
_Make = Callable[[psycopg.Error, str | None, _Guard], EpochError]


def _text(exc: psycopg.Error) -> str:
    return str(exc).strip() or type(exc).__name__


def _server_says(exc: psycopg.Error) -> str:
    # The server's one-line message (without the statement's text, which may hold data).
    return f"PostgreSQL refused the operation: {exc.diag.message_primary or _text(exc)}"


def _refused(exc: psycopg.Error, stream: str | None, expected: _Guard) -> EpochError:
    return StoreError(_server_says(exc), stream, exc.sqlstate)


def _passes(exc: psycopg.Error, stream: str | None, expected: _Guard) -> EpochError:
    return StoreUnavailable(f"PostgreSQL error: {_text(exc)}", stream)


def _lost(exc: psycopg.Error, stream: str | None, expected: _Guard) -> EpochError:
    return ConnectionLost(f"PostgreSQL error: {_text(exc)}", stream)


def _no_connection(exc: psycopg.Error, stream: str | None, expected: _Guard) -> EpochError:
    return ConnectionLost("no connection to PostgreSQL within the pool timeout", stream)


def _timed_out(exc: psycopg.Error, stream: str | None, expected: _Guard) -> EpochError:
    return StoreUnavailable("PostgreSQL statement timed out", stream)


def _wrong_version(exc: psycopg.Error, stream: str | None, expected: _Guard) -> EpochError:
    if stream is None or expected is None:  # not a guard of epoch's: a statement of the caller's own
        return _refused(exc, stream, expected)
    detail = exc.diag.message_detail  # epoch_check_expected: the stream's actual version ('' for none)
    return WrongExpectedVersion(stream, expected, int(detail) if detail else None)


def _deleted(exc: psycopg.Error, stream: str | None, expected: _Guard) -> EpochError:
    if stream is None:  # not a statement of epoch's own
        return _refused(exc, stream, expected)
    detail = exc.diag.message_detail  # the version the tombstoned stream had (-1: never written)
    version = int(detail) if detail else -1
    return StreamDeleted(stream, version if version >= 0 else None)


def _ids_taken(exc: psycopg.Error, stream: str | None, expected: _Guard) -> EpochError:
    return IdsTaken(_server_says(exc), stream, exc.sqlstate)


def _condition_failed(exc: psycopg.Error, stream: str | None, expected: _Guard) -> EpochError:
    xid, _, seq = (exc.diag.message_detail or "0:0").partition(":")  # epoch_append_if: the first match
    return ConditionFailed(_server_says(exc), stream, int(xid), int(seq))


_ANY_STATE = "*"

_TABLE: tuple[tuple[type[psycopg.Error], str | None, _Make], ...] = (
    # (psycopg exception, its SQLSTATE or SQLSTATE class, or None for none, or "*" for any; the epoch error)
    # The first row that matches wins.
    (PoolTimeout, _ANY_STATE, _no_connection),
    (psycopg.errors.QueryCanceled, _ANY_STATE, _timed_out),  # 57014: statement_timeout
    (psycopg.InterfaceError, _ANY_STATE, _lost),  # the connection is closed or broken on the client side
    (psycopg.OperationalError, None, _lost),  # no answer from the server: the connection broke
    (psycopg.OperationalError, "08", _lost),  # connection exceptions
    (psycopg.OperationalError, "57P01", _lost),  # admin shutdown (pg_terminate_backend, a fast stop)
    (psycopg.OperationalError, "57P02", _lost),  # crash shutdown
    (psycopg.OperationalError, "57P03", _lost),  # cannot connect now (the server is starting)
    (psycopg.Error, WRONG_VERSION, _wrong_version),  # EP001, from epoch_check_expected
    (psycopg.Error, STREAM_DELETED, _deleted),  # EP003, a tombstone (migration 4)
    (psycopg.Error, UNIQUE_VIOLATION, _ids_taken),  # 23505: the unique index on event ids
    (psycopg.Error, CONDITION_FAILED, _condition_failed),  # EPD01, from epoch_append_if
    (psycopg.Error, "55P03", _passes),  # lock not available (lock_timeout)
    (psycopg.Error, "40001", _passes),  # serialization failure
    (psycopg.Error, "40P01", _passes),  # deadlock detected
    (psycopg.Error, "53", _passes),  # insufficient resources: disk full, out of memory, too many connections
    (psycopg.Error, _ANY_STATE, _refused),
)


def _state_matches(code: str | None, state: str | None) -> bool:
    if code == _ANY_STATE:
        return True
    if code is None:
        return state is None
    return state is not None and state.startswith(code)  # a class ("08") or a whole SQLSTATE


def epoch_error(exc: psycopg.Error, stream: str | None = None, expected: _Guard = None) -> EpochError:
    """The epoch error for a psycopg (or pool) error, from the first matching row of the table.

    ``stream`` is named in the error; ``expected`` (the checked expected version of an append or a
    delete) turns a failed guard into :class:`~epoch.errors.WrongExpectedVersion`.
    """
    for kind, code, make in _TABLE:
        if isinstance(exc, kind) and _state_matches(code, exc.sqlstate):
            return make(exc, stream, expected)
    raise AssertionError("unreachable: the table's last row matches every psycopg error")  # pragma: no cover


@contextmanager
def driver_errors(
    stream: str | None = None,
    expected: _Guard = None,
    *,
    closed: Callable[[], bool] | None = None,
    only: type[psycopg.Error] = psycopg.Error,
) -> Iterator[None]:
    """Raise the epoch error for a psycopg error inside the block (see :func:`epoch_error`), ``from`` it.

    ``closed`` says whether the store has been closed meanwhile: then any driver error is
    ``StoreUnavailable("the PostgreSQL store is closed")``, whatever the server said. ``only`` narrows
    what is mapped (``psycopg.OperationalError`` around a caller's own SQL, whose errors stay its own).
    """
    try:
        yield
    except only as exc:
        if closed is not None and closed():
            raise StoreUnavailable("the PostgreSQL store is closed", stream) from exc
        raise epoch_error(exc, stream, expected) from exc


class Connections:
    """One store's connections: the asyncio pool every append, read and ``transaction()`` block draws
    from (at most ``pool_max`` in use at once), and :meth:`run` with retries.

    Why asyncio rather than blocking connections in threads: a statement on the loop wakes the process
    once (the server's answer wakes the loop's ``epoll``), a statement in a thread three times (the
    thread to send, the thread for the answer, the loop through its self-pipe), and under concurrency
    the loop takes many answers in one wake-up where each thread wakes alone. Measured in the
    benchmark's own workloads, before and after in alternate processes, fsync on: one writer a median
    1.30x the commands/s on asyncio, 8 writers 1.34x, with 20-40% less client CPU per command
    (docs/stores/postgresql.md, "The write path").

    A statement takes a warm connection when there is one (``warm``), else one from the pool.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        pool_min: int,
        pool_max: int,
        pool_timeout: float,
        statement_timeout: float,
        idle_in_transaction_timeout: float,
        reconnect_timeout: float,
        prepare_threshold: int | None = 0,
        prepared_max: int | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.statement_timeout = statement_timeout
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self.reconnect_timeout = reconnect_timeout
        self.network: dict[str, Any] = network_options(conninfo)
        self._server_side = server_side(conninfo)
        # The network options (keepalives, timeouts) bound how long a cut-off connection goes unnoticed.
        # Prepared statements: see url.prepare_options (``None``: none at all).
        self.options: dict[str, Any] = {"autocommit": True, "prepare_threshold": prepare_threshold, **self.network}
        self.prepared_max = prepared_max
        self.apool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            conninfo,
            min_size=pool_min,
            max_size=max(pool_min, pool_max),
            timeout=pool_timeout,
            kwargs=self.options,
            configure=self.configure,
            open=False,
            name="epoch",
        )
        self.timeout = pool_timeout
        # One budget for pooled and direct connections alike (a direct one replaces a pooled one
        # while the pool reconnects): never more than pool_max in use.
        self._budget = asyncio.Semaphore(max(pool_min, pool_max))
        self.opened = False
        self.closed = False
        self._recovering_until = 0.0  # after a lost connection: bypass the pool while it reconnects
        self.warm = WarmConnections(self.apool, self._closed)

    def _settings(self) -> tuple[str, ...]:
        timeouts = str(round(self.statement_timeout * 1000)), str(round(self.idle_in_transaction_timeout * 1000))
        return (*timeouts, *self._server_side)

    async def configure(self, conn: Conn) -> None:
        if self.prepared_max is not None:
            conn.prepared_max = self.prepared_max
        await conn.execute(CONFIGURE, self._settings(), prepare=False)

    def _closed(self) -> bool:
        return self.closed

    def check_open(self, stream: str | None = None) -> None:
        if self.closed or not self.opened:
            raise StoreUnavailable("the PostgreSQL store is closed" if self.closed else "the store is not open", stream)

    async def open(self) -> None:
        await self.apool.open(wait=True, timeout=self.timeout)

    async def close(self) -> None:
        await self.warm.cool()
        await self.apool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A connection for a block (``transaction()``), warm or the pool's, given back after it."""
        conn, since = await self.warm.take()
        ok = False
        try:
            yield conn
            ok = True
        finally:
            await self.warm.give(conn, since, ok)

    @asynccontextmanager
    async def direct(self) -> AsyncIterator[Conn]:
        """A new asyncio connection of its own (configured as the pooled ones), closed after the block."""
        conn = await psycopg.AsyncConnection.connect(self.conninfo, **self.options)
        async with conn:
            await self.configure(conn)
            yield conn

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the ``pool_max`` connections in use (``PoolTimeout`` when none frees within the timeout)."""
        await self._acquire()
        try:
            yield
        finally:
            self._budget.release()

    async def _acquire(self) -> None:
        if self._budget.locked():
            try:
                await asyncio.wait_for(self._budget.acquire(), self.timeout)
            except TimeoutError:
                raise PoolTimeout(f"couldn't get a connection after {self.timeout:.2f} sec") from None
        else:
            await self._budget.acquire()  # free: returns at once

    async def run(
        self,
        fn: Callable[[Conn], Awaitable[T]],
        stream: str | None = None,
        *,
        retry: bool = True,
        expected: ExpectedVersion | int | None = None,
    ) -> T:
        """``await fn(conn)`` on a pooled connection, its driver errors mapped by :func:`driver_errors`
        (``expected``: the guard ``fn`` passes, if any); on a lost connection retry (with backoff) until
        ``reconnect_timeout`` after the call."""
        self.check_open(stream)
        # Counted from the call, not from the loss, and the retries are cut off there: a caller cut off
        # from the server hears within reconnect_timeout, or the time the network options take to notice
        # the dead connection if that is longer.
        deadline = time.monotonic() + self.reconnect_timeout
        wait: Backoff | None = None
        lost: ConnectionLost | None = None
        while True:
            try:
                with driver_errors(stream, expected, closed=self._closed):
                    if lost is None:  # the usual case, without a context manager's generator (slot())
                        await self._acquire()
                        try:
                            return await self._attempt(fn)
                        finally:
                            self._budget.release()
                    # A retry waits no longer than the deadline (a statement cut off by it may still have
                    # committed at the server: retrying an append with the same ids is a replay).
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await self._purge()
                        async with self.slot():
                            return await self._attempt(fn)
            except TimeoutError:
                if lost is None:
                    raise
                raise lost from lost.__cause__  # the last loss, still chained to the driver error
            except ConnectionLost as exc:
                if not retry:
                    raise
                lost = exc
                wait = wait or Backoff(first=0.02, cap=1.0)
                now = time.monotonic()
                self._recovering_until = now + 60.0
                pause = wait.next()
                if now + pause > deadline:
                    raise
                log.info("lost the PostgreSQL connection (%s), retrying in %.2fs", exc.message, pause)
                await asyncio.sleep(pause)

    async def _attempt(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        if time.monotonic() >= self._recovering_until:
            conn, since = await self.warm.take()
            try:
                result = await fn(conn)
            except BaseException:
                await self.apool.putconn(conn)  # rolled back, or replaced when broken
                raise
            await self.warm.give(conn, since, True)
            return result
        # Shortly after a lost connection the pool reconnects with its own backoff (1 s, 2 s, 4 s, ...):
        # take a pooled connection if one is ready, else a direct one, so recovery is not delayed.
        try:
            async with self.apool.connection(timeout=0.05) as conn:
                result = await fn(conn)
            self._recovering_until = 0.0
            return result
        except PoolTimeout:
            pass
        async with self.direct() as direct:
            return await fn(direct)

    async def _purge(self) -> None:
        """Drop the pool's dead connections (after a server restart all of them are)."""
        await self.warm.cool()
        try:
            await self.apool.check()
        except Exception:  # pragma: no cover - best effort
            log.debug("pool check failed", exc_info=True)
