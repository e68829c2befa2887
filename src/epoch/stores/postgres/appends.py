"""The PostgreSQL store's writes: appends (with idempotent replays), soft deletes and imports.

Appends are one round trip: the ``epoch_append`` function locks the stream, checks the expected version,
inserts the batch (``unnest``) and, while a subscription listens (migration 7), sends ``NOTIFY
epoch_events``, in one statement. A failed guard comes back as ``WrongExpectedVersion`` and an id stored
already as ``IdsTaken`` (``pool.driver_errors``); only then are the batch's ids looked up, to tell an
idempotent replay from ``DuplicateEventId``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import LiteralString
from uuid import UUID

from epoch.errors import DuplicateEventId, WrongExpectedVersion
from epoch.records import AppendResult, ExpectedVersion, NewEvent, RecordedEvent
from epoch.stores._checks import MAX_INT64, is_replay
from epoch.stores.postgres import sql as q
from epoch.stores.postgres.pool import Conn, Connections, IdsTaken

__all__ = ["append", "batch_arrays", "delete", "import_runs", "replay", "tag_arrays"]

_Row = tuple[int | None, int, int, datetime | None]
# A cached CommandHandler's append: the same statement, refused when the stream's start moved (migration 4).
_GUARDED: dict[str, LiteralString] = {
    q.APPEND_ONE: q.APPEND_ONE_GUARDED,
    q.APPEND: q.APPEND_GUARDED,
    q.APPEND_TAGGED: q.APPEND_TAGGED_GUARDED,
}
_Found = tuple[UUID, str, int, int, int, datetime]


async def append(
    db: Connections,
    stream: str,
    batch: list[NewEvent],
    expected: ExpectedVersion | int,
    hook: Callable[[], Awaitable[None]] | None,
    first_version: int | None = None,
) -> AppendResult:
    """Append a checked batch; ``hook`` (a test's) is awaited inside the transaction before it commits.

    ``first_version``: refuse also when the stream's first visible version moved past it (a cached
    ``CommandHandler``'s check, ``epoch_first_kept`` of migration 4, in the same statement).
    """
    statement: LiteralString
    params: tuple[object, ...]
    if len(batch) == 1 and not batch[0].tags:
        one = batch[0]
        statement, params = q.APPEND_ONE, (stream, q.expected_code(expected), one.id, one.type, one.data, one.metadata)
    elif (tags := tag_arrays(batch)) is None:
        statement, params = q.APPEND, (stream, q.expected_code(expected), *batch_arrays(batch))
    else:
        statement = q.APPEND_TAGGED
        params = (stream, q.expected_code(expected), *batch_arrays(batch), None, *tags)
    if first_version is not None and batch:
        statement = _GUARDED[statement]
        params = (*params, stream, min(first_version, MAX_INT64), len(batch))

    async def attempt(conn: Conn) -> _Row | None:
        if hook is None:
            return await (await conn.execute(statement, params)).fetchone()
        async with conn.transaction():
            row = await (await conn.execute(statement, params)).fetchone()
            await hook()
            return row

    try:
        row = await db.run(attempt, stream, expected=expected)
    except (WrongExpectedVersion, IdsTaken):
        # Some ids may be stored already: an idempotent retry (even with a stale guard) returns the
        # first result; ids stored elsewhere raise DuplicateEventId (as on every store, that wins).
        # IdsTaken with no id found is not reached: only ids are unique outside the stream's lock.
        if batch and (replayed := await replay(db, stream, batch, expected)) is not None:
            return replayed
        raise
    if not batch:
        if row is None:
            return AppendResult(stream, None, 0, (), None)
        version, xid, seq, at = row
        return AppendResult(stream, version, q.encode_position(xid, seq), (), at)
    assert row is not None
    version, xid, seq, at = row
    positions = q.positions_of(xid, seq, len(batch))
    return AppendResult(stream, version, positions[-1], positions, at)


def batch_arrays(batch: Sequence[NewEvent | RecordedEvent]) -> tuple[list[UUID], list[str], list[bytes], list[bytes]]:
    """A batch's ids, types, data and metadata: the array parameters of ``epoch_append`` and its kin."""
    return [e.id for e in batch], [e.type for e in batch], [e.data for e in batch], [e.metadata for e in batch]


def tag_arrays(batch: Sequence[NewEvent | RecordedEvent]) -> tuple[list[int], list[str]] | None:
    """``epoch_append``'s ``p_tag_events, p_tags`` for a batch (each tag with its event's 1-based index),
    or ``None`` when no event of it carries a tag."""
    if not any(event.tags for event in batch):
        return None
    events: list[int] = []
    tags: list[str] = []
    for index, event in enumerate(batch, 1):
        for tag in dict.fromkeys(event.tags):  # a NewEvent's are unique already, an imported event's maybe not
            events.append(index)
            tags.append(tag)
    return events, tags


async def _found(db: Connections, ids: list[UUID], stream: str | None = None) -> dict[UUID, _Found]:
    """Where each of ``ids`` is stored: ``{id: (id, stream, version, xid, seq, recorded_at)}``."""

    async def fetch(conn: Conn) -> list[_Found]:
        return await (await conn.execute(q.FOUND_IDS, (ids,))).fetchall()

    return {row[0]: row for row in await db.run(fetch, stream)}


async def replay(
    db: Connections, stream: str, batch: list[NewEvent], expected: ExpectedVersion | int
) -> AppendResult | None:
    """The first result when ``batch`` is stored here already; ``DuplicateEventId`` when any id is
    stored elsewhere; ``None`` when no id is stored."""
    rows = await _found(db, [e.id for e in batch], stream)
    stored = {id: (row[1], row[2]) for id, row in rows.items()}
    if not is_replay(stream, batch, expected, stored):  # raises DuplicateEventId when misplaced
        return None
    written = [rows[e.id] for e in batch]
    positions = tuple(q.encode_position(r[3], r[4]) for r in written)
    return AppendResult(stream, written[-1][2], positions[-1], positions, written[-1][5], replayed=True)


async def delete(db: Connections, stream: str, expected: ExpectedVersion | int) -> None:
    async def statement(conn: Conn) -> None:
        await conn.execute(q.DELETE, (stream, q.expected_code(expected)))

    await db.run(statement, stream, retry=False, expected=expected)


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
                if (first_visible or {}).get(run[0].stream, 0) >= run[0].version > 0:
                    # The versions before it were erased at the source (epoch copy): start the stream there.
                    await cur.execute(q.PLACE_STREAM, (run[0].stream, run[0].version - 1))
                await cur.execute(
                    q.IMPORT,
                    (
                        run[0].stream,
                        *batch_arrays(run),
                        [e.recorded_at for e in run],
                        *(tag_arrays(run) or (None, None)),
                    ),
                )
                row = await cur.fetchone()
                assert row is not None
                version, xid, seq, _ = row
                if version != run[-1].version:
                    actual = version - len(run)
                    raise WrongExpectedVersion(run[0].stream, run[0].version - 1, None if actual < 0 else actual)
                positions.extend(q.positions_of(xid, seq, len(run)))
            for stream, version in (first_visible or {}).items():
                await cur.execute(q.SET_FIRST_VISIBLE, (version, stream))
        return positions

    try:
        return await db.run(write, retry=False)
    except IdsTaken:
        found = await _found(db, [e.id for run in runs for e in run])
        for run in runs:
            for event in run:
                if (place := found.get(event.id)) is not None:
                    raise DuplicateEventId(event.stream, event.id, place[1], place[2]) from None
        raise
