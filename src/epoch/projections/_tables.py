"""Tables the projections keep in the store's own database (checkpoints, parking), created on first use.

The database is the store's :class:`~epoch.stores.SQLStore` seam, found by :func:`~epoch.stores.sql_store`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from epoch.stores import SQLStore, Transaction

__all__ = ["LazyTable", "create_table"]


async def create_table(tx: Transaction, ddl: str) -> None:
    """Run ``CREATE TABLE IF NOT EXISTS`` safely when several processes race to do it first."""
    if tx.dialect == "postgresql":
        # Concurrent CREATE TABLE IF NOT EXISTS can fail on the catalog's unique index: serialise it.
        await tx.execute("SELECT pg_advisory_xact_lock(?)", [0x45504F4348])
    await tx.execute(ddl)


class LazyTable:
    """A table in the store's database created on first use (once per instance), e.g. checkpoints."""

    def __init__(self, database: SQLStore, ddl: Mapping[str, str]) -> None:
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
