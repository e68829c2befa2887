"""Exactly-once read models: the projection writes in the store's transaction, next to its checkpoint.

When the read model lives in the store's own database (SQLite or PostgreSQL), the runner opens one
transaction per batch, passes it to ``handle_in_transaction`` for every event, saves the checkpoint in
the same transaction and commits. A crash anywhere leaves either the batch and its checkpoint, or
neither: the read model always equals a fresh rebuild up to its checkpoint.

Example (``?`` placeholders work on both dialects)::

    class UserNames:
        name = "user-names"
        categories = "users"

        async def setup(self, tx: Transaction) -> None:
            await tx.execute("CREATE TABLE IF NOT EXISTS user_names (id TEXT PRIMARY KEY, name TEXT)")

        async def handle_in_transaction(self, envelope: EventEnvelope[Any], tx: Transaction) -> None:
            await tx.execute("INSERT INTO user_names VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                             [envelope.data.user_id, envelope.data.name])

        async def reset(self, tx: Transaction) -> None:
            await tx.execute("DELETE FROM user_names")

With any other store (or read models elsewhere) delivery is at least once: make ``handle`` idempotent,
for instance by storing ``envelope.position`` with each row.
"""

from __future__ import annotations

from typing import Any, Protocol

from epoch.records import EventEnvelope
from epoch.stores import Dialect, PostgresTransaction, SQLStore, Transaction, sql_store

__all__ = [
    "Database",
    "Dialect",
    "PostgresTransaction",
    "Transaction",
    "TransactionalProjection",
    "database_of",
]

Database = SQLStore
"""Where transactions come from: the store itself, when it declares :class:`~epoch.stores.SQLStore`."""

database_of = sql_store
"""The store as its own database (:func:`~epoch.stores.sql_store` under the projections' name), or ``None``."""


class TransactionalProjection(Protocol):
    """A projection whose writes commit atomically with its checkpoint.

    Optional: ``async setup(tx)`` (create tables; run once per runner before the first batch) and
    ``async reset(tx)`` (clear the read model; a rebuild runs it in the transaction that resets the
    checkpoint). ``categories``, ``event_types`` and ``policy`` work as for any projection.
    """

    @property
    def name(self) -> str: ...

    async def handle_in_transaction(self, envelope: EventEnvelope[Any], tx: Transaction) -> None: ...
