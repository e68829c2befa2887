"""The PostgreSQL store's connections: the pool, and running work on it through lost connections.

A lost or refused connection (or a server shutting down) is retried with backoff until
``reconnect_timeout``. Other errors are raised at once, chained to psycopg's (whose ``sqlstate`` callers
inspect): :class:`~epoch.errors.StoreUnavailable` for what may pass (timeouts, lock waits, deadlocks,
resources such as disk or connections), :class:`~epoch.errors.StoreError` for everything else (a syntax
error, a broken schema, missing privileges, bad data): retrying those could only loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from epoch._backoff import Backoff
from epoch.errors import MissingDependency, StoreError, StoreUnavailable

try:
    import psycopg
    import psycopg.errors
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependency("psycopg", "postgres") from exc

__all__ = ["Conn", "Connections", "is_transient", "unavailable"]

log = logging.getLogger("epoch.stores.postgres")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]


def _is_disconnect(exc: psycopg.Error) -> bool:
    """A lost or refused connection, or none free in the pool: worth retrying; not a statement timeout."""
    if isinstance(exc, (PoolTimeout, psycopg.InterfaceError)):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


# SQLSTATEs of conditions that pass on their own (besides lost connections): a statement or lock timeout,
# a deadlock or serialization failure, and class 53 (disk full, out of memory, too many connections).
_TRANSIENT_STATES = ("57014", "55P03", "40001", "40P01")


def is_transient(exc: BaseException) -> bool:
    """A lost connection, or a condition that passes: ``StoreUnavailable``, not ``StoreError``."""
    if not isinstance(exc, psycopg.Error):
        return isinstance(exc, PoolTimeout)
    if _is_disconnect(exc):
        return True
    state = exc.sqlstate or ""
    return state in _TRANSIENT_STATES or state.startswith("53")


def unavailable(exc: BaseException, stream: str | None = None) -> StoreUnavailable | StoreError:
    """The epoch error for a psycopg (or pool) error: ``StoreUnavailable`` when transient, else ``StoreError``."""
    if isinstance(exc, PoolTimeout):
        reason = "no connection to PostgreSQL within the pool timeout"
    elif isinstance(exc, psycopg.errors.QueryCanceled):
        reason = "PostgreSQL statement timed out"
    else:
        text = str(exc).strip() or type(exc).__name__
        if not is_transient(exc):
            # The server's one-line message (without the statement's text, which may hold data).
            primary, state = (
                (exc.diag.message_primary, exc.sqlstate) if isinstance(exc, psycopg.Error) else (None, None)
            )
            return StoreError(f"PostgreSQL refused the operation: {primary or text}", stream, state)
        reason = f"PostgreSQL error: {text}"
    return StoreUnavailable(reason, stream)


class Connections:
    """One store's pool (opened by the store), its session settings, and :meth:`run` with retries."""

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
    ) -> None:
        self.conninfo = conninfo
        self.statement_timeout = statement_timeout
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self.reconnect_timeout = reconnect_timeout
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            conninfo,
            min_size=pool_min,
            max_size=max(pool_min, pool_max),
            timeout=pool_timeout,
            kwargs={"autocommit": True, "prepare_threshold": 0, "connect_timeout": max(1, round(pool_timeout))},
            configure=self.configure,
            open=False,
            name="epoch",
        )
        self.opened = False
        self.closed = False
        self._recovering_until = 0.0  # after a lost connection: bypass the pool while it reconnects

    async def configure(self, conn: Conn) -> None:
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false), set_config('TimeZone', 'UTC', false),"
            " set_config('idle_in_transaction_session_timeout', %s, false)",
            (
                str(round(self.statement_timeout * 1000)),
                str(round(self.idle_in_transaction_timeout * 1000)),
            ),
            prepare=False,
        )

    def check_open(self, stream: str | None = None) -> None:
        if self.closed or not self.opened:
            raise StoreUnavailable("the PostgreSQL store is closed" if self.closed else "the store is not open", stream)

    async def run(self, fn: Callable[[Conn], Awaitable[T]], stream: str | None = None, *, retry: bool = True) -> T:
        """Run ``fn`` on a pooled connection; on a lost connection retry (with backoff) until ``reconnect_timeout``."""
        self.check_open(stream)
        deadline: float | None = None
        wait = Backoff(first=0.02, cap=1.0)
        while True:
            try:
                return await self._attempt(fn)
            except psycopg.Error as exc:
                if self.closed:
                    raise StoreUnavailable("the PostgreSQL store is closed", stream) from exc
                if not (retry and _is_disconnect(exc)):
                    raise unavailable(exc, stream) from exc
                now = time.monotonic()
                self._recovering_until = now + 60.0
                deadline = deadline or now + self.reconnect_timeout
                pause = wait.next()
                if now + pause > deadline:
                    raise unavailable(exc, stream) from exc
                log.info("lost the PostgreSQL connection (%s), retrying in %.2fs", exc, pause)
                await self._purge()
                await asyncio.sleep(pause)

    async def _attempt(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        if time.monotonic() >= self._recovering_until:
            async with self.pool.connection() as conn:
                return await fn(conn)
        # Shortly after a lost connection the pool reconnects with its own backoff (1 s, 2 s, 4 s, ...):
        # take a pooled connection if one is ready, else a direct one, so recovery is not delayed.
        try:
            async with self.pool.connection(timeout=0.05) as conn:
                result = await fn(conn)
            self._recovering_until = 0.0
            return result
        except PoolTimeout:
            pass
        direct = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, connect_timeout=max(1, round(self.pool.timeout))
        )
        async with direct:
            await self.configure(direct)
            return await fn(direct)

    async def _purge(self) -> None:
        """Drop the pool's dead connections (after a server restart all of them are)."""
        try:
            await self.pool.check()
        except Exception:  # pragma: no cover - best effort
            log.debug("pool check failed", exc_info=True)
