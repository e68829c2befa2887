"""Warm connections: the PostgreSQL store keeps the connections of its last statements for the next ones.

A statement's connection goes back to the pool only after ``KEEP_WARM`` seconds with the store: until
then the next statement takes it from here (the newest first) without the pool's bookkeeping, which cost
~100 us of CPU per statement (its lock, statistics and logging, and the connection's own context exit):
a fifth of the client's CPU for a command of two statements. A connection that leaves its work in a
failed or unknown state (an error, a cancel, an open transaction) goes straight back to the pool, which
rolls it back or replaces it; a lost connection sends every warm one back (``Connections._purge``). The
pool still ages and checks every connection: none stays away from it longer than ``KEEP_WARM``, even
when the store goes quiet (a timer returns them).

Warm connections count as in use for the pool, and never add to it: a statement takes a warm one before
asking the pool, so the store never holds more than the ``pool_max`` its callers' budget allows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

__all__ = ["KEEP_WARM", "Conn", "WarmConnections"]

Conn = psycopg.AsyncConnection[Any]

KEEP_WARM = 5.0
"""Seconds a connection stays with the store between statements before it goes back to the pool."""

_IDLE = psycopg.pq.TransactionStatus.IDLE


class WarmConnections:
    """The idle connections one store keeps between statements, each with the time the pool gave it."""

    def __init__(self, pool: AsyncConnectionPool[Conn], closed: Callable[[], bool]) -> None:
        self.pool = pool
        self.closed = closed
        self.idle: list[tuple[Conn, float]] = []
        self._sweep: asyncio.TimerHandle | None = None  # returns the ones kept KEEP_WARM seconds
        self._returning: set[asyncio.Task[None]] = set()

    async def take(self) -> tuple[Conn, float]:
        """A connection for one statement or block: a warm one, else the pool's (within its timeout)."""
        if self.idle:
            return self.idle.pop()
        return await self.pool.getconn(), time.monotonic()

    async def give(self, conn: Conn, since: float, ok: bool) -> None:
        """Keep ``conn`` warm after work that ended well (``ok``) and left it idle; else the pool's again."""
        if (
            ok
            and not self.closed()
            and time.monotonic() - since < KEEP_WARM
            and conn.pgconn.transaction_status == _IDLE
        ):
            self.idle.append((conn, since))
            if self._sweep is None:
                self._sweep = asyncio.get_running_loop().call_later(KEEP_WARM, self._swept)
        else:
            await self.pool.putconn(conn)

    async def cool(self) -> None:
        """Every warm connection back to the pool (after a loss: the pool checks them; before closing)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self.idle = self.idle, []
        await self._put_back([conn for conn, _ in idle])
        if self._returning:
            await asyncio.gather(*self._returning)

    def _swept(self) -> None:
        self._sweep = None
        now = time.monotonic()
        stale = [conn for conn, since in self.idle if now - since >= KEEP_WARM]
        self.idle = [(conn, since) for conn, since in self.idle if now - since < KEEP_WARM]
        loop = asyncio.get_running_loop()
        if stale:
            task = loop.create_task(self._put_back(stale))
            self._returning.add(task)
            task.add_done_callback(self._returning.discard)
        if self.idle:
            self._sweep = loop.call_later(KEEP_WARM, self._swept)

    async def _put_back(self, conns: list[Conn]) -> None:
        for conn in conns:
            await self.pool.putconn(conn)
