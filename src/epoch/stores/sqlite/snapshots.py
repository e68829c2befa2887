"""The SQLite store's snapshots: the ``snapshots`` table (migration 4) and the ``query_snapshots`` one
(migration 7, beside the erasure count in ``erased``), their statements, and the work on them.

A save is a write job in the writer's group commit (beside appends, in a savepoint of its own): it reads
the stream's row in that transaction and records the stream's ``first_visible`` with the snapshot. A load
is one point query on a reader that joins the stream's row, so a snapshot taken before a soft delete (or a
truncation) since is not found. Query snapshots (:mod:`epoch.stores._query_snapshots`) work the same way
against the store's erasure count: a save compares it in its write transaction, a load in its one query
(which also reads the head position a valid row's position is at most: ``query_snapshot_row``). A stream
snapshot's row is checked the same way (``snapshot_row``: its load also reads the stream's version).
"""

from __future__ import annotations

import sqlite3
import time
from abc import abstractmethod
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from epoch.stores._query_snapshots import (
    QuerySnapshot,
    QuerySnapshotStatus,
    SupportsQuerySnapshots,
    check_query_snapshot_load,
    check_query_snapshot_save,
    query_snapshot_row,
)
from epoch.stores._snapshots import (
    Snapshot,
    SnapshotStatus,
    SupportsSnapshots,
    check_drop_name,
    check_load,
    check_save,
    check_status_category,
    snapshot_row,
    snapshot_status_row,
)

if TYPE_CHECKING:
    from epoch.stores.sqlite.threads import Workers
    from epoch.stores.sqlite.work import Group

__all__ = ["MIGRATION", "QUERY_MIGRATION", "SQLiteQuerySnapshots", "SQLiteSnapshots"]

MIGRATION = (
    """CREATE TABLE IF NOT EXISTS snapshots (
        stream         TEXT    NOT NULL,
        schema_version INTEGER NOT NULL,
        version        INTEGER NOT NULL,
        position       INTEGER NOT NULL,
        first_visible  INTEGER NOT NULL,
        data           BLOB    NOT NULL,
        taken_at       INTEGER NOT NULL,
        PRIMARY KEY (stream, schema_version, version)
    )""",
)
"""Migration 4: one row per snapshot; ``first_visible`` is the stream's when the snapshot was taken."""

QUERY_MIGRATION = (
    "ALTER TABLE erased ADD COLUMN erasures INTEGER NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS query_snapshots (
        key            TEXT    NOT NULL,
        schema_version INTEGER NOT NULL,
        position       INTEGER NOT NULL,
        folded         INTEGER NOT NULL,
        version        INTEGER,
        data           BLOB    NOT NULL,
        erasures       INTEGER NOT NULL,
        taken_at       INTEGER NOT NULL,
        label          TEXT    NOT NULL,
        PRIMARY KEY (key, schema_version)
    )""",
)
"""Migration 7: the erasure count (``lifecycle`` adds one per erasure) and one row per query snapshot."""

_ERASURES = "SELECT ifnull((SELECT erasures FROM erased), 0)"
_HEAD = "max(ifnull((SELECT max(position) FROM events), 0), ifnull((SELECT max(position) FROM erased), 0))"
_LOAD_QUERY = (
    f"SELECT c.n, {_HEAD}, q.key, q.schema_version, q.position, q.folded, q.version, q.data, q.taken_at, q.label"
    f" FROM ({_ERASURES} AS n) AS c LEFT JOIN query_snapshots AS q"
    " ON q.key = ?1 AND q.schema_version = ?2 AND q.erasures = c.n"
)
_UPSERT_QUERY = (  # over an older one, or one past the head (a row no save wrote: never loaded)
    "INSERT INTO query_snapshots (key, schema_version, position, folded, version, data, erasures, taken_at, label)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key, schema_version) DO UPDATE SET"
    " position = excluded.position, folded = excluded.folded, version = excluded.version, data = excluded.data,"
    " erasures = excluded.erasures, taken_at = excluded.taken_at, label = excluded.label"
    " WHERE query_snapshots.erasures < excluded.erasures OR query_snapshots.position <= excluded.position"
    f" OR query_snapshots.position > {_HEAD}"
)
_QUERY_STATUS = (  # the data's type, not the data: a valid row's is a blob
    f"SELECT key, schema_version, position, folded, version, typeof(data) = 'blob', taken_at, label, erasures,"
    f" ({_ERASURES}), {_HEAD} FROM query_snapshots ORDER BY label, key, schema_version"
)
_DROP_QUERIES = "DELETE FROM query_snapshots"

_UPSERT = (
    "INSERT INTO snapshots (stream, schema_version, version, position, first_visible, data, taken_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stream, schema_version, version) DO UPDATE SET"
    " position = excluded.position, first_visible = excluded.first_visible, data = excluded.data,"
    " taken_at = excluded.taken_at"
)
_POSITION = "SELECT position FROM events WHERE stream = ? AND version = ?"
_PRUNE = (
    "DELETE FROM snapshots WHERE rowid IN (SELECT rowid FROM snapshots WHERE stream = ?1"
    " ORDER BY version DESC, schema_version DESC LIMIT -1 OFFSET ?2)"
)
_LOAD = (  # with the stream's version, which a valid row's is at most (snapshot_row)
    "SELECT n.version, n.position, n.data, n.taken_at, n.first_visible, s.version"
    " FROM snapshots AS n JOIN streams AS s ON s.stream = n.stream"
    " WHERE n.stream = ?1 AND n.schema_version = ?2 AND n.version <= ?3"
    " AND n.first_visible = s.first_visible AND n.version <= s.version"
    " ORDER BY n.version DESC LIMIT 1"
)
_CATEGORY = "CASE WHEN instr(stream, '-') > 0 THEN substr(stream, 1, instr(stream, '-') - 1) ELSE stream END"
_STATUS = (
    "SELECT stream, version, schema_version, taken_at, kept FROM ("
    " SELECT stream, version, schema_version, taken_at, count(*) OVER (PARTITION BY stream) AS kept,"
    " row_number() OVER (PARTITION BY stream ORDER BY version DESC, schema_version DESC) AS newest"
    f" FROM snapshots WHERE ?1 IS NULL OR {_CATEGORY} = ?1) WHERE newest = 1 ORDER BY stream"
)
_DROP_STREAM = "DELETE FROM snapshots WHERE stream = ?"
_DROP_CATEGORY = f"DELETE FROM snapshots WHERE {_CATEGORY} = ?"


def _instant(microseconds: int) -> datetime:
    return datetime.fromtimestamp(microseconds / 1e6, UTC)


def _stored_instant(microseconds: object) -> datetime:
    if type(microseconds) is not int:
        raise TypeError(microseconds)
    return _instant(microseconds)


def _save(tx: Group, stream: str, version: int, schema_version: int, data: bytes, keep: int, first: int | None) -> bool:
    row = tx.stream(stream)  # (version, first_visible), as this transaction sees it
    if row is None or not row[1] <= version <= row[0] or first not in (None, row[1]):
        return False  # the event at that version is not visible, or the state was folded from hidden ones
    (position,) = tx.connection.execute(_POSITION, (stream, version)).fetchone()
    now = time.time_ns() // 1000
    tx.connection.execute(_UPSERT, (stream, schema_version, version, position, row[1], data, now))
    tx.connection.execute(_PRUNE, (stream, keep))
    return True


def _load(connection: sqlite3.Connection, stream: str, schema_version: int, at_most: int) -> Snapshot | None:
    row = connection.execute(_LOAD, (stream, schema_version, at_most)).fetchone()
    if row is None:
        return None
    return snapshot_row(stream, schema_version, row[:5], row[5], _stored_instant)


def _status(connection: sqlite3.Connection, category: str | None) -> list[SnapshotStatus]:
    rows: list[tuple[Any, ...]] = connection.execute(_STATUS, (category,)).fetchall()
    listed = (snapshot_status_row(row, _stored_instant) for row in rows)
    return [status for status in listed if status is not None]  # an invalid row: logged, left out


def _drop(tx: Group, name: str, is_stream: bool) -> int:
    return tx.connection.execute(_DROP_STREAM if is_stream else _DROP_CATEGORY, (name,)).rowcount


class SQLiteSnapshots(SupportsSnapshots):
    """:class:`SupportsSnapshots` on the store's file (its ``_workers``)."""

    __slots__ = ()

    @property
    @abstractmethod
    def _snapshot_workers(self) -> Workers: ...

    async def save_snapshot(
        self, stream: str, version: int, schema_version: int, data: bytes, keep: int, first_visible: int | None = None
    ) -> bool:
        """Store a snapshot in the next group commit; see :class:`~epoch.stores.SupportsSnapshots`."""
        args = check_save(stream, version, schema_version, data, keep, first_visible)
        result: bool = await self._snapshot_workers.write(_save, *args)
        return result

    async def load_snapshot(self, stream: str, schema_version: int, at_most: int | None = None) -> Snapshot | None:
        """The newest usable snapshot, in one query; see :class:`~epoch.stores.SupportsSnapshots`."""
        stream, schema_version, highest = check_load(stream, schema_version, at_most)
        return await self._snapshot_workers.read(_load, stream, schema_version, highest)

    async def snapshot_status(self, category: str | None = None) -> list[SnapshotStatus]:
        """Every stream with snapshots; see :class:`~epoch.stores.SupportsSnapshots`."""
        return await self._snapshot_workers.read(_status, check_status_category(category))

    async def drop_snapshots(self, name: str) -> int:
        """Delete a stream's or a category's snapshots; see :class:`~epoch.stores.SupportsSnapshots`."""
        name, is_stream = check_drop_name(name)
        dropped: int = await self._snapshot_workers.write(_drop, name, is_stream)
        return dropped


def _load_query(connection: sqlite3.Connection, key: str, schema_version: int) -> tuple[QuerySnapshot | None, int]:
    erasures, head, *row = connection.execute(_LOAD_QUERY, (key, schema_version)).fetchone()
    if row[0] is None:
        return None, erasures
    return query_snapshot_row(tuple(row), erasures, head, _stored_instant), erasures


def _save_query(
    tx: Group,
    key: str,
    schema_version: int,
    position: int,
    folded: int,
    version: int | None,
    data: bytes,
    erasures: int,
    label: str,
) -> bool:
    if tx.connection.execute(_ERASURES).fetchone()[0] != erasures:
        return False  # an erasure since the state's events were read: they may be among them
    now = time.time_ns() // 1000
    row = (key, schema_version, position, folded, version, data, erasures, now, label)
    tx.connection.execute(_UPSERT_QUERY, row)
    return True


def _query_status(connection: sqlite3.Connection) -> list[QuerySnapshotStatus]:
    listed = []
    for *row, erasures, now, head in connection.execute(_QUERY_STATUS).fetchall():
        row[5] = b"" if row[5] else None  # the data's type only (a blob, or not)
        found = query_snapshot_row(tuple(row), erasures, head, _stored_instant)
        if found is not None:  # an invalid row: logged, left out
            status = (found.key, found.schema_version, found.position, found.count, found.taken_at, found.label)
            listed.append(QuerySnapshotStatus(*status, found.erasures == now))
    return listed


def _drop_queries(tx: Group, _: str) -> int:
    return tx.connection.execute(_DROP_QUERIES).rowcount


class SQLiteQuerySnapshots(SupportsQuerySnapshots):
    """:class:`SupportsQuerySnapshots` on the store's file (its ``_workers``)."""

    __slots__ = ()

    @property
    @abstractmethod
    def _snapshot_workers(self) -> Workers: ...

    async def load_query_snapshot(self, key: str, schema_version: int) -> tuple[QuerySnapshot | None, int]:
        """The usable snapshot and the erasure count, in one query; see :class:`~epoch.stores.SupportsQuerySnapshots`."""
        key, schema_version = check_query_snapshot_load(key, schema_version)
        return await self._snapshot_workers.read(_load_query, key, schema_version)

    async def save_query_snapshot(
        self,
        key: str,
        schema_version: int,
        position: int,
        count: int,
        version: int | None,
        data: bytes,
        erasures: int,
        label: str = "",
    ) -> bool:
        """Store a query snapshot in the next group commit; see :class:`~epoch.stores.SupportsQuerySnapshots`."""
        args = check_query_snapshot_save(key, schema_version, position, count, version, data, erasures, label)
        saved: bool = await self._snapshot_workers.write(_save_query, *args)
        return saved

    async def query_snapshot_status(self) -> list[QuerySnapshotStatus]:
        """Every query snapshot; see :class:`~epoch.stores.SupportsQuerySnapshots`."""
        return await self._snapshot_workers.read(_query_status)

    async def drop_query_snapshots(self) -> int:
        """Delete every query snapshot; see :class:`~epoch.stores.SupportsQuerySnapshots`."""
        dropped: int = await self._snapshot_workers.write(_drop_queries, "query snapshots")
        return dropped
