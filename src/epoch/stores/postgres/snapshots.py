"""The PostgreSQL store's snapshots: the statements on ``epoch_snapshots`` (migration 5) and the work on them.

A save is one statement that inserts the snapshot only while the stream shows the event at its version,
with the stream's ``first_visible`` of that moment (then a second one prunes the stream's old snapshots,
in the same transaction). A load is one query joined to ``epoch_streams``: a snapshot taken before a soft
delete (or a truncation) since does not match. Neither takes the stream's lock: appends never wait for them.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from epoch.stores._snapshots import (
    Snapshot,
    SnapshotStatus,
    SupportsSnapshots,
    check_drop_name,
    check_load,
    check_save,
    check_status_category,
)
from epoch.stores.postgres.sql import encode_position

if TYPE_CHECKING:
    from epoch.stores.postgres.pool import Conn, Connections

__all__ = ["PostgresSnapshots"]

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
_LOAD = """
SELECT n.version, n.xid, n.seq, n.data, n.taken_at, n.first_visible
FROM epoch_snapshots n JOIN epoch_streams s ON s.stream = n.stream
WHERE n.stream = %s AND n.schema_version = %s AND n.version <= %s
  AND n.first_visible = s.first_visible AND n.version <= s.version
ORDER BY n.version DESC LIMIT 1
"""
_STATUS = """
SELECT stream, version, schema_version, taken_at, kept FROM (
    SELECT stream, version, schema_version, taken_at, count(*) OVER (PARTITION BY stream) AS kept,
           row_number() OVER (PARTITION BY stream ORDER BY version DESC, schema_version DESC) AS newest
    FROM epoch_snapshots WHERE %(category)s::text IS NULL OR split_part(stream, '-', 1) = %(category)s
) AS ranked WHERE newest = 1 ORDER BY stream COLLATE "C"
"""
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
            version, xid, seq, data, taken_at, first = row
            return Snapshot(stream, version, encode_position(xid, seq), schema_version, bytes(data), taken_at, first)

        return await self._snapshot_db.run(load, stream)

    async def snapshot_status(self, category: str | None = None) -> list[SnapshotStatus]:
        """Every stream with snapshots; see :class:`~epoch.stores.SupportsSnapshots`."""
        params = {"category": check_status_category(category)}

        async def status(conn: Conn) -> list[SnapshotStatus]:
            return [SnapshotStatus(*row) for row in await (await conn.execute(_STATUS, params)).fetchall()]

        return await self._snapshot_db.run(status)

    async def drop_snapshots(self, name: str) -> int:
        """Delete a stream's or a category's snapshots; see :class:`~epoch.stores.SupportsSnapshots`."""
        name, is_stream = check_drop_name(name)

        async def drop(conn: Conn) -> int:
            return (await conn.execute(_DROP_STREAM if is_stream else _DROP_CATEGORY, (name,))).rowcount

        return await self._snapshot_db.run(drop, name if is_stream else None)
