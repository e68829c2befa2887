"""Capabilities a store declares beyond :class:`~epoch.stores.EventStore`, each asked about in one function.

:class:`SQLStore`: the store's own database runs a caller's SQL atomically. Exactly-once read models,
checkpoints, parking and scale-out leases write their tables in the same transaction as the work they
record, so they need "the store's own SQL transaction"; :func:`sql_store` is the one place that asks.

:class:`SupportsImport`: the store takes already-recorded events as they are (``epoch copy`` keeps their
``recorded_at``); :func:`importer_of` is the one place that asks.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import lru_cache
from typing import Any, ClassVar, Literal, Protocol

from epoch.records import RecordedEvent

__all__ = ["Dialect", "PostgresTransaction", "SQLStore", "SupportsImport", "Transaction", "importer_of", "sql_store"]

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


@lru_cache(maxsize=256)
def _to_pyformat(sql: str) -> str:
    # psycopg uses %s; keep literal % intact. A '?' inside a string literal would be misread, so pass
    # values as parameters (the jsonb '?' operator has the spelling jsonb_exists()).
    return re.sub(r"\?", "%s", sql.replace("%", "%%"))


class PostgresTransaction:
    """``?``-style SQL on a psycopg ``AsyncConnection`` that is inside a transaction (no driver import:
    the connection is the caller's, so this seam stays importable without the ``postgres`` extra)."""

    dialect: Literal["postgresql"] = "postgresql"

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        """The psycopg ``AsyncConnection``, for anything ``execute`` cannot say (e.g. COPY)."""

    async def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        cursor = await self.connection.execute(_to_pyformat(sql), tuple(params))
        if cursor.description is None:
            return []
        return list(await cursor.fetchall())


class SQLStore(ABC):
    """Declared by an event store whose own database runs a caller's SQL atomically."""

    __slots__ = ()

    dialect: ClassVar[Dialect]

    conninfo: str | None = None
    """Where other connections to the same database open (PostgreSQL: the libpq connection string), for
    work that needs a session of its own (scale-out's session-level leases); ``None`` when the store offers
    none (SQLite)."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """Open a transaction: committed when the block ends, rolled back when it raises or is cancelled.

        Never await the same store's appends inside the block: on SQLite they queue behind it.
        """


def sql_store(store: object) -> SQLStore | None:
    """``store`` as an :class:`SQLStore`, or ``None`` when its database is not SQL (memory, KurrentDB)."""
    return store if isinstance(store, SQLStore) else None


class SupportsImport(ABC):
    """Declared by a store that can take already-recorded events as they are (SQLite and PostgreSQL).

    ``import_events`` appends ``events`` in one transaction, in the given order, each at exactly its
    ``version`` and with its own id, type, data, metadata and ``recorded_at`` (positions are the store's
    own), then soft-deletes each stream in ``first_visible`` below the given version. It returns the new
    positions and raises ``WrongExpectedVersion`` (writing nothing) when a version does not continue its
    stream, unless ``first_visible`` names that version or a later one for it: the versions before it
    were erased at the source (a truncation, a scavenge), and the stream starts there.
    """

    __slots__ = ()

    @abstractmethod
    async def import_events(
        self, events: Sequence[RecordedEvent], first_visible: Mapping[str, int] | None = None
    ) -> list[int]: ...


def importer_of(store: object) -> SupportsImport | None:
    """``store`` as a :class:`SupportsImport`, or ``None`` when it can only append."""
    return store if isinstance(store, SupportsImport) else None
