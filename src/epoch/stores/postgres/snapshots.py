"""The PostgreSQL store's snapshots: the statements on ``epoch_snapshots`` (migration 5) and the work on them.

A save is one statement that inserts the snapshot only while the stream shows the event at its version,
with the stream's ``first_visible`` of that moment (then a second one prunes the stream's old snapshots,
in the same transaction). A load is one query joined to ``epoch_streams``: a snapshot taken before a soft
delete (or a truncation) since does not match. Neither takes the stream's lock: appends never wait for them.
The load also reads the stream's version, and a loaded or listed row is checked (``snapshot_row``,
``snapshot_status_row``; a ``taken_at`` Python cannot hold reads as ``NULL``).

Query snapshots (``epoch_query_snapshots``, migration 8; :mod:`epoch.stores._query_snapshots`) are checked
against ``epoch_erased.erasures`` the same way: a save inserts only while the count is the one given, a
load returns the count and the snapshot of that count in one query. Under READ COMMITTED one statement
sees one snapshot of the database, so the count and the row it returns belong together. The same query
reads the newest position stored or erased, which a valid row's position is at most, and leaves out a
``taken_at`` Python cannot hold (``query_snapshot_row``).
"""

from __future__ import annotations

from abc import abstractmethod
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
    aware,
    check_drop_name,
    check_load,
    check_save,
    check_status_category,
    snapshot_row,
    snapshot_status_row,
)
from epoch.stores.postgres.sql import encode_position

if TYPE_CHECKING:
    from epoch.stores.postgres.pool import Conn, Connections

__all__ = ["PostgresQuerySnapshots", "PostgresSnapshots"]

_SAVE = """
INSERT INTO epoch_snapshots (stream, schema_version, version, xid, seq, first_visible, data)
SELECT s.stream, %(schema)s, e.version, e.xid, e.seq, s.first_visible, %(data)s
FROM epoch_streams s JOIN epoch_events e ON e.stream = s.stream AND e.version = %(version)s
WHERE s.stream = %(stream)s AND s.first_visible <= %(version)s AND s.version >= %(version)s
  AND (%(first)s::bigint IS NULL OR s.first_visible = %(first)s)
ON CONFLICT (stream, schema_version, version) DO UPDATE SET
    xid = excluded.xid, seq = excluded.seq, first_visible = excluded.first_visible, data = excluded.data,
    taken_at = excluded.taken_at
"""
_PRUNE = """
DELETE FROM epoch_snapshots WHERE (stream, schema_version, version) IN (
    SELECT stream, schema_version, version FROM epoch_snapshots WHERE stream = %(stream)s
    ORDER BY version DESC, schema_version DESC OFFSET %(keep)s)
"""
_TAKEN_AT = "CASE WHEN {0}.taken_at BETWEEN '0001-01-02' AND '9999-12-30' THEN {0}.taken_at END"  # Python's range
_LOAD = f"""
SELECT n.version, n.xid, n.seq, n.data, {_TAKEN_AT.format("n")}, n.first_visible, s.version
FROM epoch_snapshots n JOIN epoch_streams s ON s.stream = n.stream
WHERE n.stream = %s AND n.schema_version = %s AND n.version <= %s
  AND n.first_visible = s.first_visible AND n.version <= s.version
ORDER BY n.version DESC LIMIT 1
"""
_STATUS = f"""
SELECT stream, version, schema_version, {_TAKEN_AT.format("ranked")}, kept FROM (
    SELECT stream, version, schema_version, taken_at, count(*) OVER (PARTITION BY stream) AS kept,
           row_number() OVER (PARTITION BY stream ORDER BY version DESC, schema_version DESC) AS newest
    FROM epoch_snapshots WHERE %(category)s::text IS NULL OR split_part(stream, '-', 1) = %(category)s
) AS ranked WHERE newest = 1 ORDER BY stream COLLATE "C"
"""
_ERASURES = "coalesce((SELECT r.erasures FROM epoch_erased r), 0)"
_NEWEST = """(SELECT u.xid, u.seq FROM ((SELECT e.xid, e.seq FROM epoch_events e ORDER BY e.xid DESC, e.seq DESC
LIMIT 1) UNION ALL (SELECT r.xid, r.seq FROM epoch_erased r)) u ORDER BY u.xid DESC, u.seq DESC LIMIT 1)"""
_ROW = f"""q.key, q.schema_version, q.position, q.folded, q.version, q.data, {_TAKEN_AT.format("q")}, q.label"""
_LOAD_QUERY = f"""
SELECT c.n, h.xid, h.seq, {_ROW}
FROM (SELECT {_ERASURES} AS n) c LEFT JOIN {_NEWEST} h ON true LEFT JOIN epoch_query_snapshots q
  ON q.key = %s AND q.schema_version = %s AND q.erasures = c.n
"""
_SAVE_QUERY = f"""
INSERT INTO epoch_query_snapshots AS q (key, schema_version, position, folded, version, data, erasures, label)
SELECT %(key)s::text, %(schema)s::bigint, %(position)s::bigint, %(folded)s::bigint, %(version)s::bigint,
       %(data)s::bytea, %(erasures)s::bigint, %(label)s::text
WHERE {_ERASURES} = %(erasures)s::bigint
ON CONFLICT (key, schema_version) DO UPDATE SET
    position = excluded.position, folded = excluded.folded, version = excluded.version, data = excluded.data,
    erasures = excluded.erasures, taken_at = excluded.taken_at, label = excluded.label
WHERE q.erasures < excluded.erasures OR q.position <= excluded.position
   OR q.position > (SELECT (n.xid << 32) | n.seq FROM {_NEWEST} n)
RETURNING 1
"""
_ERASURES_NOW = f"SELECT {_ERASURES}"
_QUERY_STATUS = f"""
SELECT {_ROW.replace("q.data", "''::bytea")}, q.erasures, {_ERASURES}, h.xid, h.seq
FROM epoch_query_snapshots q LEFT JOIN {_NEWEST} h ON true
ORDER BY q.label COLLATE "C", q.key COLLATE "C", q.schema_version
"""


def _head(xid: int | None, seq: int | None) -> int:
    return 0 if xid is None or seq is None else encode_position(xid, seq)


_DROP_QUERIES = "DELETE FROM epoch_query_snapshots"
_DROP_STREAM = "DELETE FROM epoch_snapshots WHERE stream = %s"
_DROP_CATEGORY = "DELETE FROM epoch_snapshots WHERE split_part(stream, '-', 1) = %s"


class PostgresSnapshots(SupportsSnapshots):
    """:class:`SupportsSnapshots` on the store's database (its ``_db`` connections)."""

    __slots__ = ()

    @property
    @abstractmethod
    def _snapshot_db(self) -> Connections: ...

    async def save_snapshot(
        self, stream: str, version: int, schema_version: int, data: bytes, keep: int, first_visible: int | None = None
    ) -> bool:
        """Store a snapshot; see :class:`~epoch.stores.SupportsSnapshots`."""
        stream, version, schema_version, data, keep, first = check_save(
            stream, version, schema_version, data, keep, first_visible
        )
        params = {"stream": stream, "version": version, "schema": schema_version, "data": data, "keep": keep}
        params["first"] = first

        async def save(conn: Conn) -> bool:
            async with conn.transaction():
                saved = (await conn.execute(_SAVE, params)).rowcount == 1
                if saved:
                    await conn.execute(_PRUNE, params)
            return saved

        return await self._snapshot_db.run(save, stream)

    async def load_snapshot(self, stream: str, schema_version: int, at_most: int | None = None) -> Snapshot | None:
        """The newest usable snapshot, in one query; see :class:`~epoch.stores.SupportsSnapshots`."""
        stream, schema_version, highest = check_load(stream, schema_version, at_most)

        async def load(conn: Conn) -> Snapshot | None:
            row: Any = await (await conn.execute(_LOAD, (stream, schema_version, highest))).fetchone()
            if row is None:
                return None
            version, xid, seq, data, taken_at, first, stream_version = row
            found = (version, encode_position(xid, seq), data, taken_at, first)
            return snapshot_row(stream, schema_version, found, stream_version, aware)

        return await self._snapshot_db.run(load, stream)

    async def snapshot_status(self, category: str | None = None) -> list[SnapshotStatus]:
        """Every stream with snapshots; see :class:`~epoch.stores.SupportsSnapshots`."""
        params = {"category": check_status_category(category)}

        async def status(conn: Conn) -> list[SnapshotStatus]:
            listed = [snapshot_status_row(row, aware) for row in await (await conn.execute(_STATUS, params)).fetchall()]
            return [status for status in listed if status is not None]  # an invalid row: logged, left out

        return await self._snapshot_db.run(status)

    async def drop_snapshots(self, name: str) -> int:
        """Delete a stream's or a category's snapshots; see :class:`~epoch.stores.SupportsSnapshots`."""
        name, is_stream = check_drop_name(name)

        async def drop(conn: Conn) -> int:
            return (await conn.execute(_DROP_STREAM if is_stream else _DROP_CATEGORY, (name,))).rowcount

        return await self._snapshot_db.run(drop, name if is_stream else None)


class PostgresQuerySnapshots(SupportsQuerySnapshots):
    """:class:`SupportsQuerySnapshots` on the store's database (its ``_db`` connections)."""

    __slots__ = ()

    @property
    @abstractmethod
    def _snapshot_db(self) -> Connections: ...

    async def load_query_snapshot(self, key: str, schema_version: int) -> tuple[QuerySnapshot | None, int]:
        """The usable snapshot and the erasure count, in one query; see :class:`~epoch.stores.SupportsQuerySnapshots`."""
        key, schema_version = check_query_snapshot_load(key, schema_version)

        async def load(conn: Conn) -> tuple[QuerySnapshot | None, int]:
            loaded: Any = await (await conn.execute(_LOAD_QUERY, (key, schema_version))).fetchone()
            erasures, xid, seq, *row = loaded
            if row[0] is None:
                return None, erasures
            return query_snapshot_row(tuple(row), erasures, _head(xid, seq), aware), erasures

        return await self._snapshot_db.run(load)

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
        """Store a query snapshot; see :class:`~epoch.stores.SupportsQuerySnapshots`."""
        key, schema, position, count, version, data, erasures, label = check_query_snapshot_save(
            key, schema_version, position, count, version, data, erasures, label
        )
        params = {
            "key": key,
            "schema": schema,
            "position": position,
            "folded": count,
            "version": version,
            "data": data,
            "erasures": erasures,
            "label": label,
        }

        async def save(conn: Conn) -> bool:
            if (await conn.execute(_SAVE_QUERY, params)).rowcount == 1:
                return True
            # Nothing written: a newer snapshot is kept (True), or the count moved (False).
            row: Any = await (await conn.execute(_ERASURES_NOW)).fetchone()
            return bool(row[0] == erasures)

        return await self._snapshot_db.run(save)

    async def query_snapshot_status(self) -> list[QuerySnapshotStatus]:
        """Every query snapshot; see :class:`~epoch.stores.SupportsQuerySnapshots`."""

        async def status(conn: Conn) -> list[QuerySnapshotStatus]:
            listed = []
            for *row, erasures, now, xid, seq in await (await conn.execute(_QUERY_STATUS)).fetchall():
                found = query_snapshot_row(tuple(row), erasures, _head(xid, seq), aware)
                if found is not None:  # an invalid row: logged, left out
                    status = (found.key, found.schema_version, found.position, found.count, found.taken_at)
                    listed.append(QuerySnapshotStatus(*status, found.label, found.erasures == now))
            return listed

        return await self._snapshot_db.run(status)

    async def drop_query_snapshots(self) -> int:
        """Delete every query snapshot; see :class:`~epoch.stores.SupportsQuerySnapshots`."""

        async def drop(conn: Conn) -> int:
            return (await conn.execute(_DROP_QUERIES)).rowcount

        return await self._snapshot_db.run(drop)
