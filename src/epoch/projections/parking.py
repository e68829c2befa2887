"""Parked events: the dead-letter table of projections whose policy is ``"park"``.

An event that still fails after the runner's retries is parked with the error, and the projection moves
on. Each entry keeps a full copy of the event, so :meth:`ProjectionRunner.replay_parked` can hand it to
the projection again later (after a fix) and drop the entries that now succeed. In the store's database
the table is ``epoch_parked``, created on first use (it declares :class:`TransactionalParkingLot`, asked
about in :func:`transactional_parking`); in a store's companion streams (KurrentDB) a stream per
projection; otherwise a dict in memory.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

import msgspec

from epoch.projections._companion import (
    CompanionStreams,
    NameIndex,
    companion_name,
    companion_streams_of,
    decode_json,
    kept_in_memory,
)
from epoch.projections._failures import describe, storable
from epoch.projections._tables import LazyTable
from epoch.records import NewEvent, RecordedEvent
from epoch.stores import SQLStore, Transaction, sql_store

__all__ = [
    "MemoryParkingLot",
    "ParkedEvent",
    "ParkingLot",
    "SQLParkingLot",
    "StreamParkingLot",
    "TransactionalParkingLot",
    "default_parking",
    "transactional_parking",
]


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event a projection gave up on, with the error it raised."""

    projection: str
    event: RecordedEvent
    error: str
    parked_at: float
    """Unix time."""


class ParkingLot(Protocol):
    """Where parked events wait for a replay."""

    async def park(self, entry: ParkedEvent) -> None:
        """Keep an entry (parking the same event twice for a projection keeps the latest error)."""
        ...

    async def list(self, projection: str | None = None) -> list[ParkedEvent]:
        """Parked entries in position order, for one projection or all."""
        ...

    async def remove(self, projection: str, position: int) -> None:
        """Drop an entry (after a successful replay)."""
        ...

    async def clear(self, projection: str) -> None:
        """Drop all entries of a projection (a rebuild starts clean)."""
        ...


class TransactionalParkingLot(ABC):
    """Declared by a parking lot that keeps its entries in the store's own database, so an exactly-once
    projection parks an event (or drops it after a replay) in the transaction that moves its checkpoint."""

    __slots__ = ()

    @abstractmethod
    async def ensure_table(self, tx: Transaction | None = None) -> None:
        """Create the table if needed, in ``tx`` when given: the ``*_in`` methods expect it to exist."""

    @abstractmethod
    async def park_in(self, tx: Transaction, entry: ParkedEvent) -> None:
        """Keep an entry inside an open transaction."""

    @abstractmethod
    async def remove_in(self, tx: Transaction, projection: str, position: int) -> bool:
        """Drop an entry inside an open transaction; False when there was none (another replay took it)."""

    @abstractmethod
    async def clear_in(self, tx: Transaction, projection: str) -> None:
        """Drop every entry of ``projection`` inside an open transaction (a rebuild's reset)."""


def transactional_parking(parking: object) -> TransactionalParkingLot | None:
    """``parking`` as a :class:`TransactionalParkingLot`, or ``None`` when it cannot join a transaction
    (memory, companion streams)."""
    return parking if isinstance(parking, TransactionalParkingLot) else None


class MemoryParkingLot:
    """Parked events in a dict."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], ParkedEvent] = {}

    async def park(self, entry: ParkedEvent) -> None:
        self._entries[(entry.projection, entry.event.position)] = entry

    async def list(self, projection: str | None = None) -> list[ParkedEvent]:
        keys = sorted(k for k in self._entries if projection is None or k[0] == projection)
        return [self._entries[k] for k in keys]

    async def remove(self, projection: str, position: int) -> None:
        self._entries.pop((projection, position), None)

    async def clear(self, projection: str) -> None:
        for key in [k for k in self._entries if k[0] == projection]:
            del self._entries[key]


_DDL = {
    "sqlite": """CREATE TABLE IF NOT EXISTS epoch_parked (
        projection TEXT NOT NULL, position INTEGER NOT NULL, stream TEXT NOT NULL, version INTEGER NOT NULL,
        event_id TEXT NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, metadata BLOB NOT NULL,
        recorded_at REAL NOT NULL, error TEXT NOT NULL, parked_at REAL NOT NULL,
        PRIMARY KEY (projection, position))""",
    "postgresql": """CREATE TABLE IF NOT EXISTS epoch_parked (
        projection TEXT NOT NULL, position NUMERIC(40, 0) NOT NULL, stream TEXT NOT NULL, version BIGINT NOT NULL,
        event_id TEXT NOT NULL, type TEXT NOT NULL, data BYTEA NOT NULL, metadata BYTEA NOT NULL,
        recorded_at DOUBLE PRECISION NOT NULL, error TEXT NOT NULL, parked_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (projection, position))""",
}

_INSERT = """INSERT INTO epoch_parked
    (projection, position, stream, version, event_id, type, data, metadata, recorded_at, error, parked_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (projection, position) DO UPDATE SET error = excluded.error, parked_at = excluded.parked_at"""


class SQLParkingLot(TransactionalParkingLot):
    """Parked events in ``epoch_parked`` of the store's database."""

    def __init__(self, database: SQLStore) -> None:
        self.database = database
        self._table = LazyTable(database, _DDL)

    async def ensure_table(self, tx: Transaction | None = None) -> None:
        """Create the table if needed (once per instance)."""
        await self._table.ensure(tx)

    async def park(self, entry: ParkedEvent) -> None:
        await self.ensure_table()
        async with self.database.transaction() as tx:
            await self.park_in(tx, entry)

    async def park_in(self, tx: Transaction, entry: ParkedEvent) -> None:
        """:meth:`park` inside an open transaction (exactly-once projections park with their checkpoint)."""
        e = entry.event
        await tx.execute(
            _INSERT,
            [
                entry.projection,
                e.position,
                e.stream,
                e.version,
                str(e.id),
                e.type,
                e.data,
                e.metadata,
                e.recorded_at.timestamp(),
                storable(entry.error),
                entry.parked_at,
            ],
        )

    async def list(self, projection: str | None = None) -> list[ParkedEvent]:
        await self.ensure_table()
        sql = (
            "SELECT projection, position, stream, version, event_id, type, data, metadata, recorded_at, error,"
            " parked_at FROM epoch_parked"
        )
        async with self.database.transaction() as tx:
            if projection is None:
                rows = await tx.execute(sql + " ORDER BY projection, position")
            else:
                rows = await tx.execute(sql + " WHERE projection = ? ORDER BY position", [projection])
        return [
            ParkedEvent(
                projection=r[0],
                event=RecordedEvent(
                    stream=r[2],
                    version=int(r[3]),
                    position=int(r[1]),
                    id=UUID(r[4]),
                    type=r[5],
                    data=bytes(r[6]),
                    metadata=bytes(r[7]),
                    recorded_at=datetime.fromtimestamp(float(r[8]), UTC),
                ),
                error=r[9],
                parked_at=float(r[10]),
            )
            for r in rows
        ]

    async def remove(self, projection: str, position: int) -> None:
        await self.ensure_table()
        async with self.database.transaction() as tx:
            await self.remove_in(tx, projection, position)

    async def remove_in(self, tx: Transaction, projection: str, position: int) -> bool:
        """:meth:`remove` inside an open transaction; False when no entry was there."""
        removed = await tx.execute(
            "DELETE FROM epoch_parked WHERE projection = ? AND position = ? RETURNING position", [projection, position]
        )
        return bool(removed)

    async def clear(self, projection: str) -> None:
        await self.ensure_table()
        async with self.database.transaction() as tx:
            await self.clear_in(tx, projection)

    async def clear_in(self, tx: Transaction, projection: str) -> None:
        await tx.execute("DELETE FROM epoch_parked WHERE projection = ?", [projection])


class _Header(msgspec.Struct, frozen=True):
    """Everything of a parked entry but the event's data (which is the parked event's data, unchanged)."""

    projection: str
    error: str
    parked_at: float
    stream: str
    version: int
    position: int
    id: UUID
    type: str
    recorded_at: datetime
    metadata: bytes  # base64 in JSON: stored metadata need not be JSON


class _Unparked(msgspec.Struct, frozen=True):
    position: int


_PARKED = "Parked"
_UNPARKED = "Unparked"


class StreamParkingLot:
    """Parked events in the store's companion streams (KurrentDB: ``$epoch-parked-<projection>``).

    Each projection has a stream of ``Parked`` events (the parked event's data as the event's data, its
    stream, version, position, id, type, time, metadata and the error as the event's metadata) and
    ``Unparked`` events (a successful replay); :meth:`list` folds them, so parking an event again keeps
    the latest error. :meth:`clear` soft-deletes the stream. Projections with parked events are listed in
    the index stream ``$epoch-parked``.

    KurrentDB limits one append (``MaxAppendSize``, 1 MiB by default), and a parked entry is its event
    plus about 1/3 of its metadata (base64) plus the error: an event within that margin of the limit
    cannot be parked (:class:`~epoch.errors.InvalidEvent`).
    """

    def __init__(self, streams: CompanionStreams) -> None:
        self.streams = streams
        self._index = NameIndex(streams, "parked", "ParkingNamed")

    @staticmethod
    def stream(projection: str) -> str:
        """The companion stream of a projection's parked events."""
        return companion_name("parked", projection)

    async def park(self, entry: ParkedEvent) -> None:
        stream = self.stream(entry.projection)  # refuses a name that cannot be sent, before any write
        e = entry.event
        error = storable(entry.error)  # lone surrogates (quoted user data): JSON cannot carry them
        header = _Header(
            entry.projection, error, entry.parked_at, e.stream, e.version, e.position, e.id, e.type,
            e.recorded_at, e.metadata,
        )  # fmt: skip
        await self._index.add(entry.projection)
        await self.streams.append(stream, [NewEvent(_PARKED, e.data, msgspec.json.encode(header))])

    async def list(self, projection: str | None = None) -> list[ParkedEvent]:
        names = [projection] if projection is not None else await self._index.names()
        result: list[ParkedEvent] = []
        for name in names:
            entries: dict[int, ParkedEvent] = {}
            async with aclosing(self.streams.read(self.stream(name))) as records:
                async for record in records:
                    if record.type == _UNPARKED:
                        entries.pop(decode_json(record, record.data, _Unparked).position, None)
                    elif record.type == _PARKED:
                        h = decode_json(record, record.metadata, _Header)
                        event = RecordedEvent(
                            h.stream, h.version, h.position, h.id, h.type, record.data, h.metadata, h.recorded_at
                        )
                        entries[h.position] = ParkedEvent(h.projection, event, h.error, h.parked_at)
            result.extend(entries[position] for position in sorted(entries))
        return result

    async def remove(self, projection: str, position: int) -> None:
        await self.streams.append(
            self.stream(projection), [NewEvent(_UNPARKED, msgspec.json.encode(_Unparked(position)))]
        )

    async def clear(self, projection: str) -> None:
        await self.streams.delete(self.stream(projection))


def default_parking(store: object) -> ParkingLot:
    """Parking in the store's own database when it has one, else in its companion streams when it has
    those (KurrentDB), else in memory."""
    database = sql_store(store)
    if database is not None:
        return SQLParkingLot(database)
    streams = companion_streams_of(store)
    return kept_in_memory(store, MemoryParkingLot) if streams is None else StreamParkingLot(streams)


def parked_now(projection: str, event: RecordedEvent, error: BaseException) -> ParkedEvent:
    """An entry for ``event`` failing with ``error`` now."""
    return ParkedEvent(projection, event, describe(error), time.time())
