"""Checkpoints: the last position each projection has fully processed, kept per projection name.

:class:`MemoryCheckpointStore` lives in the process; :class:`SQLCheckpointStore` keeps them in the table
``epoch_checkpoints`` of the store's own database (SQLite or PostgreSQL), created on first use, so a new
runner resumes where the last one stopped and exactly-once projections commit it with their writes
(it declares :class:`TransactionalCheckpointStore`, asked about in :func:`transactional_checkpoints`).
Positions are kept as NUMERIC on PostgreSQL: its positions may exceed 64 bits. A stored position no save
writes (text, a blob, a fraction, NaN, a number past SQLite's 64 bits, a negative one: a row edited by hand,
or corrupt) raises :class:`~epoch.errors.StoreError` naming the projection and the value when it is read:
a checkpoint is no cache, so it is never taken for 0 (a replay from the start) nor rounded.
:class:`StreamCheckpointStore` keeps them in the companion streams of a store without a database
(KurrentDB), with the same effect for a new runner.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Protocol

import msgspec

from epoch.errors import StoreError
from epoch.projections._companion import (
    CompanionStreams,
    Named,
    NameIndex,
    companion_name,
    companion_streams_of,
    decode_json,
    first,
    kept_in_memory,
)
from epoch.projections._failures import storable
from epoch.projections._tables import LazyTable
from epoch.records import NewEvent
from epoch.stores import SQLStore, Transaction, sql_store

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "MemoryCheckpointStore",
    "SQLCheckpointStore",
    "StreamCheckpointStore",
    "TransactionalCheckpointStore",
    "default_checkpoints",
    "transactional_checkpoints",
]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A projection's progress as saved: its position, when and how fast it moved, and whether it is failing."""

    name: str
    position: int
    updated_at: float | None = None
    """Unix time of the last save."""
    events_per_second: float = 0.0
    """Recent throughput measured by the runner."""
    error: str | None = None
    """The last failure while it is failing (retrying or stopped), else ``None``."""
    failing_since: float | None = None


class CheckpointStore(Protocol):
    """Where a runner keeps its checkpoints. Every method is safe to call concurrently for different names."""

    async def load(self, name: str) -> int:
        """The saved position, 0 when there is none."""
        ...

    async def save(self, name: str, position: int, events_per_second: float = 0.0) -> None:
        """Save a position; clears any failure."""
        ...

    async def mark_failing(self, name: str, error: str | None) -> None:
        """Record (or with ``None`` clear) a failure without moving the position."""
        ...

    async def delete(self, name: str) -> None:
        """Forget a checkpoint (the next run starts from the beginning)."""
        ...

    async def list(self) -> list[Checkpoint]:
        """All checkpoints, by name."""
        ...


class TransactionalCheckpointStore(ABC):
    """Declared by a checkpoint store that keeps its checkpoints in the store's own database, so they can be
    written inside a transaction of that database (exactly-once projections, scale-out leases)."""

    __slots__ = ()

    @abstractmethod
    async def ensure_table(self, tx: Transaction | None = None) -> None:
        """Create the table if needed, in ``tx`` when given: the ``*_in`` methods expect it to exist."""

    @abstractmethod
    async def load_in(self, tx: Transaction, name: str) -> int:
        """The saved position, 0 when there is none, read inside an open transaction."""

    @abstractmethod
    async def save_in(self, tx: Transaction, name: str, position: int, events_per_second: float = 0.0) -> None:
        """Save a position (clearing any failure) inside an open transaction: it commits with the rest."""

    @abstractmethod
    async def delete_in(self, tx: Transaction, name: str) -> None:
        """Forget a checkpoint inside an open transaction."""

    @abstractmethod
    async def advance_in(self, tx: Transaction, name: str, since: int, position: int, events_per_second: float) -> bool:
        """Move the checkpoint from ``since`` to ``position`` inside an open transaction, only if it is still
        at ``since`` (none counts as 0); False when another runner moved it (this transaction then must
        not commit what it applied). It locks the row: a runner racing it waits, then finds it moved."""


def transactional_checkpoints(checkpoints: object) -> TransactionalCheckpointStore | None:
    """``checkpoints`` as a :class:`TransactionalCheckpointStore`, or ``None`` when they cannot join a
    transaction (memory, companion streams)."""
    return checkpoints if isinstance(checkpoints, TransactionalCheckpointStore) else None


class MemoryCheckpointStore:
    """Checkpoints in a dict: for the memory store and tests."""

    def __init__(self) -> None:
        self._rows: dict[str, Checkpoint] = {}

    async def load(self, name: str) -> int:
        row = self._rows.get(name)
        return 0 if row is None else row.position

    async def save(self, name: str, position: int, events_per_second: float = 0.0) -> None:
        self._rows[name] = Checkpoint(name, position, time.time(), events_per_second)

    async def mark_failing(self, name: str, error: str | None) -> None:
        row = self._rows.get(name) or Checkpoint(name, 0)
        since = None if error is None else (row.failing_since or time.time())
        self._rows[name] = replace(row, error=error, failing_since=since)

    async def delete(self, name: str) -> None:
        self._rows.pop(name, None)

    async def list(self) -> list[Checkpoint]:
        return [self._rows[name] for name in sorted(self._rows)]


_DDL = {
    "sqlite": """CREATE TABLE IF NOT EXISTS epoch_checkpoints (
        name TEXT PRIMARY KEY, position INTEGER NOT NULL, updated_at REAL,
        events_per_second REAL NOT NULL DEFAULT 0, error TEXT, failing_since REAL)""",
    "postgresql": """CREATE TABLE IF NOT EXISTS epoch_checkpoints (
        name TEXT PRIMARY KEY, position NUMERIC(40, 0) NOT NULL, updated_at DOUBLE PRECISION,
        events_per_second DOUBLE PRECISION NOT NULL DEFAULT 0, error TEXT, failing_since DOUBLE PRECISION)""",
}

_UPSERT = """INSERT INTO epoch_checkpoints (name, position, updated_at, events_per_second, error, failing_since)
    VALUES (?, ?, ?, ?, NULL, NULL)
    ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at,
    events_per_second = excluded.events_per_second, error = NULL, failing_since = NULL"""


_ADVANCE = _UPSERT + " WHERE epoch_checkpoints.position = ? RETURNING position"
"""The compare-and-set of :meth:`SQLCheckpointStore.advance_in`: an insert when there is no row, else an
update of the row that is still at the position given (no row returned: it was not)."""


def stored_position(name: str, value: object) -> int:
    """The position a row of ``epoch_checkpoints`` holds for ``name``: an int (SQLite) or an integral
    NUMERIC (PostgreSQL), >= 0; anything else raises ``StoreError`` naming the projection and the value."""
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, Decimal) and value.is_finite() and value >= 0 and value == value.to_integral_value():
        return int(value)
    raise StoreError(
        f"projection {name!r}: its checkpoint in epoch_checkpoints is {value!r}, not a position (an integer >= 0):"
        " correct or delete the row (without one it starts again from the beginning)"
    )


class SQLCheckpointStore(TransactionalCheckpointStore):
    """Checkpoints in ``epoch_checkpoints`` of the store's database (created lazily, on first use)."""

    def __init__(self, database: SQLStore) -> None:
        self.database = database
        self._table = LazyTable(database, _DDL)

    async def ensure_table(self, tx: Transaction | None = None) -> None:
        """Create the table if needed (once per instance)."""
        await self._table.ensure(tx)

    async def load(self, name: str) -> int:
        await self.ensure_table()
        async with self.database.transaction() as tx:
            return await self.load_in(tx, name)

    async def load_in(self, tx: Transaction, name: str) -> int:
        """:meth:`load` inside an open transaction."""
        rows = await tx.execute("SELECT position FROM epoch_checkpoints WHERE name = ?", [name])
        return stored_position(name, rows[0][0]) if rows else 0

    async def save(self, name: str, position: int, events_per_second: float = 0.0) -> None:
        await self.ensure_table()
        async with self.database.transaction() as tx:
            await self.save_in(tx, name, position, events_per_second)

    async def save_in(self, tx: Transaction, name: str, position: int, events_per_second: float = 0.0) -> None:
        """:meth:`save` inside an open transaction: it commits with whatever else the transaction wrote."""
        await tx.execute(_UPSERT, [name, position, time.time(), events_per_second])

    async def advance_in(self, tx: Transaction, name: str, since: int, position: int, events_per_second: float) -> bool:
        return bool(await tx.execute(_ADVANCE, [name, position, time.time(), events_per_second, since]))

    async def mark_failing(self, name: str, error: str | None) -> None:
        await self.ensure_table()
        async with self.database.transaction() as tx:
            await tx.execute(
                "INSERT INTO epoch_checkpoints (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING", [name]
            )
            if error is None:
                await tx.execute(
                    "UPDATE epoch_checkpoints SET error = NULL, failing_since = NULL WHERE name = ?", [name]
                )
            else:
                await tx.execute(
                    "UPDATE epoch_checkpoints SET error = ?, failing_since = COALESCE(failing_since, ?) WHERE name = ?",
                    [storable(error), time.time(), name],  # lone surrogates (quoted user data): escaped
                )

    async def delete(self, name: str) -> None:
        await self.ensure_table()
        async with self.database.transaction() as tx:
            await self.delete_in(tx, name)

    async def delete_in(self, tx: Transaction, name: str) -> None:
        """:meth:`delete` inside an open transaction."""
        await tx.execute("DELETE FROM epoch_checkpoints WHERE name = ?", [name])

    async def list(self) -> list[Checkpoint]:
        await self.ensure_table()
        async with self.database.transaction() as tx:
            rows = await tx.execute(
                "SELECT name, position, updated_at, events_per_second, error, failing_since"
                " FROM epoch_checkpoints ORDER BY name"
            )
        return [
            Checkpoint(
                str(r[0]),
                stored_position(str(r[0]), r[1]),
                None if r[2] is None else float(r[2]),
                float(r[3]),
                r[4],
                None if r[5] is None else float(r[5]),
            )
            for r in rows
        ]


_SAVED = "Checkpoint"
_DELETED = "CheckpointDeleted"


class StreamCheckpointStore:
    """Checkpoints in the store's companion streams (KurrentDB: ``$epoch-checkpoint-<name>``).

    Each projection has a stream whose newest event is its checkpoint, written with ``$maxCount`` 1 so
    the server keeps only that one; a delete writes a ``CheckpointDeleted`` event. The names are listed
    in the index stream ``$epoch-checkpoints`` (for :meth:`list`). One append per save, one read per load.
    """

    def __init__(self, streams: CompanionStreams) -> None:
        self.streams = streams
        self._index = NameIndex(streams, "checkpoints", "CheckpointNamed")

    @staticmethod
    def stream(name: str) -> str:
        """The companion stream of the checkpoint called ``name``."""
        return companion_name("checkpoint", name)

    async def _row(self, name: str) -> Checkpoint | None:
        record = await first(self.streams.read(self.stream(name), backwards=True, limit=1))
        if record is None or record.type == _DELETED:
            return None
        return decode_json(record, record.data, Checkpoint)

    async def _write(self, row: Checkpoint) -> None:
        stream = self.stream(row.name)
        await self._index.add(row.name, before=lambda: self.streams.set_max_count(stream, 1))
        await self.streams.append(stream, [NewEvent(_SAVED, msgspec.json.encode(row))])

    async def load(self, name: str) -> int:
        row = await self._row(name)
        return 0 if row is None else row.position

    async def save(self, name: str, position: int, events_per_second: float = 0.0) -> None:
        await self._write(Checkpoint(name, position, time.time(), events_per_second))

    async def mark_failing(self, name: str, error: str | None) -> None:
        row = await self._row(name) or Checkpoint(name, 0)
        since = None if error is None else (row.failing_since or time.time())
        if error is not None:  # it may quote user data with lone surrogates, which JSON cannot carry
            error = storable(error)
        await self._write(replace(row, error=error, failing_since=since))

    async def delete(self, name: str) -> None:
        if await self._row(name) is not None:
            await self.streams.append(self.stream(name), [NewEvent(_DELETED, msgspec.json.encode(Named(name)))])

    async def list(self) -> list[Checkpoint]:
        result = []
        for name in await self._index.names():
            row = await self._row(name)
            if row is not None:
                result.append(row)
        return result


def default_checkpoints(store: object) -> CheckpointStore:
    """Checkpoints in the store's own database when it has one (SQLite, PostgreSQL), else in its companion
    streams when it has those (KurrentDB), else in memory (the memory store)."""
    database = sql_store(store)
    if database is not None:
        return SQLCheckpointStore(database)
    streams = companion_streams_of(store)
    return kept_in_memory(store, MemoryCheckpointStore) if streams is None else StreamCheckpointStore(streams)
