"""The SQL seam: a store that runs a caller's SQL atomically in its own database.

Exactly-once read models, checkpoints, parking and scale-out leases write their tables in the same
transaction as the work they record, so they need "the store's own SQL transaction". A store declares
that it can give one by deriving from :class:`SQLStore`; :func:`sql_store` is the one place that asks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Literal, Protocol

__all__ = ["Dialect", "SQLStore", "Transaction", "sql_store"]

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


class SQLStore(ABC):
    """Declared by an event store whose own database runs a caller's SQL atomically."""

    __slots__ = ()

    dialect: ClassVar[Dialect]

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """Open a transaction: committed when the block ends, rolled back when it raises or is cancelled.

        Never await the same store's appends inside the block: on SQLite they queue behind it.
        """


def sql_store(store: object) -> SQLStore | None:
    """``store`` as an :class:`SQLStore`, or ``None`` when its database is not SQL (memory, KurrentDB)."""
    return store if isinstance(store, SQLStore) else None
