"""The PostgreSQL store's stream lifecycle (DESIGN §8): one call of a migration-4 function each.

Erasure is a ``DELETE`` of the rows: no query returns them from then on, and ``VACUUM`` (autovacuum, or
an explicit one) frees their space for reuse, after which no table page holds them either. What the
server's write-ahead log, its archive (``archive_command``) and base backups already hold stays there
until they expire: erasure in PostgreSQL is only as complete as the retention of those (see
docs/lifecycle.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

from epoch.records import ANY, ExpectedVersion, ExpectedVersionLike
from epoch.stores._checks import MAX_INT64, check_expected_version, check_stream_name
from epoch.stores._lifecycle import StreamLifecycle, check_hard, check_limits, check_truncate
from epoch.stores.postgres import appends
from epoch.stores.postgres import sql as q
from epoch.stores.postgres.pool import Conn, Connections

__all__ = ["Lifecycle", "delete_hard", "lifecycle_states", "scavenge", "set_limits", "truncate"]

_TOMBSTONE = "SELECT epoch_tombstone(%s, %s)"
_TRUNCATE = "SELECT epoch_truncate(%s, %s)"
_SET_LIMITS = "SELECT epoch_set_limits(%s, %s, %s)"
_SCAVENGE = "SELECT epoch_scavenge(%s)"
_STATES = (
    "SELECT s.stream, s.version, s.first_visible, s.max_count, s.max_age,"
    " coalesce((SELECT min(e.version) FROM epoch_events e WHERE e.stream = s.stream), s.version + 1)"
    " FROM epoch_streams s WHERE s.first_visible > 0 OR s.max_count IS NOT NULL OR s.max_age IS NOT NULL"
    " ORDER BY s.stream"
)


async def delete_hard(db: Connections, stream: str, expected: ExpectedVersion | int) -> None:
    async def statement(conn: Conn) -> None:
        await conn.execute(_TOMBSTONE, (stream, q.expected_code(expected)))

    await db.run(statement, stream, retry=False, expected=expected)


async def truncate(db: Connections, stream: str, version: int) -> None:
    async def statement(conn: Conn) -> None:
        await conn.execute(_TRUNCATE, (stream, min(version, MAX_INT64)))

    await db.run(statement, stream, retry=False)


async def set_limits(db: Connections, stream: str, max_count: int | None, max_age: timedelta | None) -> None:
    async def statement(conn: Conn) -> None:
        await conn.execute(_SET_LIMITS, (stream, max_count, max_age))

    await db.run(statement, stream, retry=False)


async def scavenge(db: Connections, stream: str | None) -> int:
    async def statement(conn: Conn) -> int:
        row = await (await conn.execute(_SCAVENGE, (stream,))).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    return await db.run(statement, stream, retry=False)


async def lifecycle_states(db: Connections) -> list[StreamLifecycle]:
    async def statement(conn: Conn) -> list[StreamLifecycle]:
        rows = await (await conn.execute(_STATES)).fetchall()
        return [
            StreamLifecycle(stream, None if version < 0 else version, first, stored, count, age)
            for stream, version, first, count, age, stored in rows
        ]

    return await db.run(statement)


class Lifecycle:
    """The store's lifecycle methods, soft deletes included (``appends.delete``)."""

    _db: Connections

    async def delete_stream(self, stream: str, expected_version: ExpectedVersionLike = ANY, hard: bool = False) -> None:
        check_stream_name(stream)
        expected = check_expected_version(stream, expected_version)
        if check_hard(stream, hard):
            await delete_hard(self._db, stream, expected)
        else:
            await appends.delete(self._db, stream, expected)

    async def truncate_before(self, stream: str, version: int) -> None:
        stream, version = check_truncate(stream, version)
        await truncate(self._db, stream, version)

    async def set_stream_limits(
        self, stream: str, max_count: int | None = None, max_age: timedelta | None = None
    ) -> None:
        stream, max_count, max_age = check_limits(stream, max_count, max_age)
        await set_limits(self._db, stream, max_count, max_age)

    async def scavenge(self, stream: str | None = None) -> int:
        if stream is not None:
            check_stream_name(stream)
        return await scavenge(self._db, stream)

    async def lifecycle_states(self) -> AsyncIterator[StreamLifecycle]:
        """Every stream with a lifecycle state (deleted, truncated or limited), for ``epoch copy``."""
        for state in await lifecycle_states(self._db):
            yield state
