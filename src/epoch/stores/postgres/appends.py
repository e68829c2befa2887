"""The PostgreSQL store's writes: appends (with idempotent replays), soft deletes and imports.

Appends are one round trip: the ``epoch_append`` function locks the stream's row, checks the ids and the
expected version, inserts the batch (``unnest``) and sends ``NOTIFY epoch_events`` in one statement.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from uuid import UUID

import psycopg

from epoch.errors import DuplicateEventId, StoreError, StoreUnavailable, WrongExpectedVersion
from epoch.records import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, ExpectedVersion, NewEvent, RecordedEvent
from epoch.stores._checks import MAX_INT64, is_replay
from epoch.stores.postgres import sql as q
from epoch.stores.postgres.pool import Conn, Connections
from epoch.stores.postgres.schema import (
    EXPECT_ANY,
    EXPECT_NO_STREAM,
    EXPECT_STREAM_EXISTS,
    EXPECT_UNREACHABLE,
    UNIQUE_VIOLATION,
    WRONG_VERSION,
)

__all__ = ["append", "delete", "import_runs"]


def _expected_code(expected: ExpectedVersion | int) -> int:
    if expected is ANY:
        return EXPECT_ANY
    if expected is NO_STREAM:
        return EXPECT_NO_STREAM
    if expected is STREAM_EXISTS:
        return EXPECT_STREAM_EXISTS
    assert isinstance(expected, int)
    # A bigint holds every version a stream can reach; a larger expected version can never match (and
    # would not bind): the guard fails and reports the stream's actual version, as for any wrong one.
    return expected if expected <= MAX_INT64 else EXPECT_UNREACHABLE


async def append(
    db: Connections,
    stream: str,
    batch: list[NewEvent],
    expected: ExpectedVersion | int,
    hook: Callable[[], Awaitable[None]] | None,
) -> AppendResult:
    """Append a checked batch; ``hook`` (a test's) is awaited inside the transaction before it commits."""
    params = (
        stream,
        _expected_code(expected),
        [e.id for e in batch],
        [e.type for e in batch],
        [e.data for e in batch],
        [e.metadata for e in batch],
    )

    async def attempt(conn: Conn) -> tuple[int | None, int, int, datetime | None] | None:
        async with conn.cursor() as cur:
            if hook is None:
                await cur.execute(q.APPEND, params)
                return await cur.fetchone()
            async with conn.transaction():
                await cur.execute(q.APPEND, params)
                row = await cur.fetchone()
                await hook()
                return row

    try:
        row = await db.run(attempt, stream)
    except (StoreUnavailable, StoreError) as exc:
        cause = exc.__cause__
        state = getattr(cause, "sqlstate", None)
        if state not in (WRONG_VERSION, UNIQUE_VIOLATION):
            raise
        # Some ids may be stored already: an idempotent retry (even with a stale guard) returns the
        # first result; ids stored elsewhere raise DuplicateEventId (as on every store, that wins).
        if batch and (replayed := await _replay(db, stream, batch, expected)) is not None:
            return replayed
        if state == UNIQUE_VIOLATION:  # only ids are unique outside the stream lock: not reached
            raise
        detail = cause.diag.message_detail if isinstance(cause, psycopg.Error) else None
        raise WrongExpectedVersion(stream, expected, int(detail) if detail else None) from None
    if not batch:
        if row is None:
            return AppendResult(stream, None, 0, (), None)
        version, xid, seq, at = row
        return AppendResult(stream, version, q.encode_position(xid, seq), (), at)
    assert row is not None
    version, xid, seq, at = row
    base = xid << q.SEQ_BITS
    positions = tuple(range(base | seq, (base | seq) + len(batch)))
    return AppendResult(stream, version, positions[-1], positions, at)


async def _replay(
    db: Connections, stream: str, batch: list[NewEvent], expected: ExpectedVersion | int
) -> AppendResult | None:
    """The first result when ``batch`` is stored here already; ``DuplicateEventId`` when any id is
    stored elsewhere; ``None`` when no id is stored."""

    async def fetch(conn: Conn) -> list[tuple[UUID, str, int, int, int, datetime]]:
        cur = await conn.execute(q.FOUND_IDS, ([e.id for e in batch],))
        return await cur.fetchall()

    rows = {row[0]: row for row in await db.run(fetch, stream)}
    stored = {id: (row[1], row[2]) for id, row in rows.items()}
    if not is_replay(stream, batch, expected, stored):  # raises DuplicateEventId when misplaced
        return None
    written = [rows[e.id] for e in batch]
    positions = tuple(q.encode_position(r[3], r[4]) for r in written)
    return AppendResult(stream, written[-1][2], positions[-1], positions, written[-1][5])


async def delete(db: Connections, stream: str, expected: ExpectedVersion | int) -> None:
    async def statement(conn: Conn) -> None:
        await conn.execute(q.DELETE, (stream, _expected_code(expected)))

    try:
        await db.run(statement, stream, retry=False)
    except (StoreUnavailable, StoreError) as exc:
        cause = exc.__cause__
        if isinstance(cause, psycopg.Error) and cause.sqlstate == WRONG_VERSION:
            detail = cause.diag.message_detail
            raise WrongExpectedVersion(stream, expected, int(detail) if detail else None) from None
        raise


async def import_runs(
    db: Connections, runs: list[list[RecordedEvent]], first_visible: Mapping[str, int] | None
) -> list[int]:
    """Write each run (one stream's events, checked by ``runs_of``) at its versions, in one transaction."""

    streams = [run[0].stream for run in runs] + list(first_visible or {})

    async def write(conn: Conn) -> list[int]:
        positions: list[int] = []
        async with conn.transaction(), conn.cursor() as cur:
            # Every stream's lock before the first write gives this transaction its id: each run then
            # sorts after its stream's earlier events (a lock taken later, by epoch_append, would come
            # after the id and could not keep that order; see migration 2).
            await cur.execute(q.LOCK_STREAMS, (streams,))
            for run in runs:
                await cur.execute(
                    q.IMPORT,
                    (
                        run[0].stream,
                        [e.id for e in run],
                        [e.type for e in run],
                        [e.data for e in run],
                        [e.metadata for e in run],
                        [e.recorded_at for e in run],
                    ),
                )
                row = await cur.fetchone()
                assert row is not None
                version, xid, seq, _ = row
                if version != run[-1].version:
                    actual = version - len(run)
                    raise WrongExpectedVersion(run[0].stream, run[0].version - 1, None if actual < 0 else actual)
                positions.extend(q.encode_position(xid, seq + i) for i in range(len(run)))
            for stream, version in (first_visible or {}).items():
                await cur.execute(q.SET_FIRST_VISIBLE, (version, stream))
        return positions

    try:
        return await db.run(write, retry=False)
    except (StoreUnavailable, StoreError) as exc:
        if getattr(exc.__cause__, "sqlstate", None) != UNIQUE_VIOLATION:
            raise
        ids = [e.id for run in runs for e in run]

        async def fetch(conn: Conn) -> list[tuple[UUID, str, int, int, int, datetime]]:
            cur = await conn.execute(q.FOUND_IDS, (ids,))
            return await cur.fetchall()

        found = {row[0]: row for row in await db.run(fetch)}
        for run in runs:
            for event in run:
                if (place := found.get(event.id)) is not None:
                    raise DuplicateEventId(event.stream, event.id, place[1], place[2]) from None
        raise
