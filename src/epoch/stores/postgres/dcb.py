"""Dynamic consistency boundaries on PostgreSQL: ``read_query`` pages, ``append_with_condition`` and
``append_many`` (schema: ``migrations/v3.py``).

``read_query`` reads the tag index (``epoch_event_tags``) and the type index in log order, with
``read_all``'s visibility rule. ``append_with_condition`` is one statement (``epoch_append_if``): the
stream's lock, an exclusive advisory lock on one tag of each tagged item of the query (its first: every
matching event carries it) and on each type of a type-only item, shared ones on the batch's own types
and tags, then the guard, the check and the append; every plain append takes the shared locks of its
events' types and tags, so none of a matching event slips past a check. ``append_many`` is one
transaction: every stream's lock and every shared key first, each guard checked by its own append.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from functools import partial
from typing import Any, LiteralString

import msgspec

from epoch.errors import AppendConditionFailed, StoreUnavailable, WrongExpectedVersion
from epoch.queries import AppendCondition, Query
from epoch.records import ANY, AppendResult, ExpectedVersion, ExpectedVersionLike, NewEvent, RecordedEvent
from epoch.stores._checks import MAX_INT64, check_append, is_replay
from epoch.stores._dcb import Many, check_condition, check_many, check_query_read
from epoch.stores.postgres import appends, reads
from epoch.stores.postgres import sql as q
from epoch.stores.postgres.pool import ConditionFailed, Conn, Connections, IdsTaken, driver_errors

__all__ = ["Boundaries", "append_if", "append_many", "query_page"]


def _page_query(query: Query, after: int, size: int) -> tuple[LiteralString, dict[str, Any]]:
    xid, seq = q.decode_position(after)
    params: dict[str, Any] = {"xid": xid, "seq": seq, "limit": size}
    if query.matches_everything:
        return q.READ_ALL, params
    shape: list[tuple[int, int]] = []
    for i, item in enumerate(query.items):
        shape.append((len(item.tags), len(item.types)))
        if item.tags:
            params[f"t{i}"] = item.tags[0]
            params[f"a{i}"] = list(item.tags)
            params[f"k{i}"] = list(item.types)
        else:
            params.update({f"k{i}_{j}": name for j, name in enumerate(item.types)})
    return q.read_query(tuple(shape)), params


async def query_page(db: Connections, query: Query, after: int, size: int) -> list[RecordedEvent]:
    """Up to ``size`` visible events matching ``query`` after ``after``, in log order."""
    if q.decode_position(after)[0] > MAX_INT64:
        return []  # past every transaction id a bigint holds: past the end of the log (guarantee 13)
    sql, params = _page_query(query, after, size)

    async def page(conn: Conn) -> list[RecordedEvent]:
        return [reads.row_all(row) for row in await reads.binary_rows(conn, sql, params)]

    return await db.run(page)


def _condition_params(query: Query, after: int | None) -> tuple[str, list[str], list[str], bool, int, int] | None:
    """``epoch_append_if``'s query arguments, or ``None`` when no event can match (nothing to lock)."""
    xid, seq = q.decode_position(after or 0)
    if query.matches_nothing or xid > MAX_INT64:
        return None
    items = [{"types": list(item.types), "tags": list(item.tags)} for item in query.items]
    lock_types = [name for item in query.items if not item.tags for name in item.types]
    lock_tags = [item.tags[0] for item in query.items if item.tags]
    return msgspec.json.encode(items).decode(), lock_types, lock_tags, query.matches_everything, xid, seq


async def _held_back(db: Connections, stream: str, xid: int, position: int, within: float) -> StoreUnavailable | None:
    """The error for a condition refused by an event no read can return yet, or ``None`` when it is visible
    (at once, or within ``within`` seconds: a transaction about to end).

    The check sees what is committed; reads only what every older transaction has ended before (sql.py).
    While an older transaction stays open, a decision reads without that event and is refused by it again
    on every attempt: it is told so, instead of ``AppendConditionFailed`` (which a decision retries).
    """
    if await reads.wait_visible(db, xid, within):
        return None

    async def holder(conn: Conn) -> tuple[int, int | None, float | None]:
        row = await (await conn.execute(q.HOLDER)).fetchone()
        assert row is not None
        return int(row[0]), row[1], row[2]

    xmin, pid, age = await db.run(holder)
    if xmin > xid:
        return None  # it ended since
    who = f"xid {xmin}, whose session this role cannot see" if pid is None else f"xid {xmin}, pid {pid}"
    if age is not None:
        who += f", open for {age:.1f}s"
    return StoreUnavailable(
        f"append condition refused by an event matching its query at position {position}, which readers cannot"
        f" see yet: the log's visibility is held back by an open transaction ({who}); a read cannot return"
        " that event until that transaction ends, so deciding again now would fail the same way"
        " (docs/stores/postgresql.md, 'Long transactions and conditions')",
        stream,
    )


async def append_if(
    db: Connections,
    stream: str,
    batch: list[NewEvent],
    expected: ExpectedVersion | int,
    condition: AppendCondition,
    visibility_timeout: float,
) -> AppendResult:
    """``append_with_condition`` of a checked batch, in one statement (``epoch_append_if``); a condition
    refused by an event readers cannot see raises :class:`StoreUnavailable` (``_held_back``)."""
    shape = _condition_params(condition.fail_if_events_match, condition.after)
    if shape is None:  # a condition no event can fail: a plain append (its locks included)
        return await appends.append(db, stream, batch, expected, None)
    query_json, lock_types, lock_tags, everything, xid, seq = shape
    tag_events, tags = appends.tag_arrays(batch) or (None, None)
    params = (
        stream,
        q.expected_code(expected),
        *appends.batch_arrays(batch),
        tag_events,
        tags,
        query_json,
        lock_types,
        lock_tags,
        everything,
        xid,
        seq,
    )

    async def attempt(conn: Conn) -> tuple[int | None, int, int, datetime | None] | None:
        row: tuple[int | None, int, int, datetime | None] | None = await (
            await conn.execute(q.APPEND_IF, params)
        ).fetchone()
        return row

    try:
        row = await db.run(attempt, stream, expected=expected)
    except (WrongExpectedVersion, IdsTaken, ConditionFailed) as exc:
        # A replay of stored ids is answered as append answers it, before the condition (the events
        # match their own query once stored).
        if batch and (replayed := await appends.replay(db, stream, batch, expected)) is not None:
            return replayed
        if isinstance(exc, ConditionFailed):
            position = q.encode_position(exc.xid, exc.seq)
            if (hidden := await _held_back(db, stream, exc.xid, position, visibility_timeout)) is not None:
                raise hidden from None
            raise AppendConditionFailed(stream, condition.after, position) from None
        raise
    if row is None:
        return AppendResult(stream, None, 0, (), None)
    version, row_xid, row_seq, at = row
    if not batch:
        return AppendResult(stream, version, q.encode_position(row_xid, row_seq), (), at)
    positions = q.positions_of(row_xid, row_seq, len(batch))
    return AppendResult(stream, version, positions[-1], positions, at)


async def append_many(db: Connections, entries: list[Many]) -> list[AppendResult]:
    """Write every entry in one transaction, or none; results in input order."""
    if not entries:
        return []
    streams = [entry.stream for entry in entries]
    every = [e for entry in entries for e in entry.events]
    ids = [e.id for e in every]
    all_tags = [tag for e in every for tag in e.tags]

    async def write(conn: Conn) -> list[AppendResult]:
        results: list[AppendResult] = []
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(q.LOCK_MANY, (streams, [e.type for e in every], all_tags))
            row = await cur.fetchone()
            assert row is not None
            now: datetime = row[2]
            # Under the locks: which ids are stored already (a replayed entry is answered, not written).
            found: dict[Any, Any] = {}
            if ids:
                await cur.execute(q.FOUND_IDS, (ids,))
                found = {r[0]: r for r in await cur.fetchall()}
            for entry in entries:
                stored = {e.id: (found[e.id][1], found[e.id][2]) for e in entry.events if e.id in found}
                if is_replay(entry.stream, entry.events, entry.expected, stored):  # or DuplicateEventId
                    written = [found[e.id] for e in entry.events]
                    positions = tuple(q.encode_position(r[3], r[4]) for r in written)
                    results.append(
                        AppendResult(entry.stream, written[-1][2], positions[-1], positions, written[-1][5], True)
                    )
                    continue
                results.append(await _write_entry(cur, entry, now))
        return results

    try:
        return await db.run(write, retry=False)
    except IdsTaken:
        # An id was stored by a concurrent writer since the look-up: once more, which now sees it.
        return await db.run(write, retry=False)


async def _write_entry(cur: Any, entry: Many, now: datetime) -> AppendResult:
    batch = entry.events
    tag_events, tags = appends.tag_arrays(batch) or (None, None)
    params = (
        entry.stream,
        q.expected_code(entry.expected),
        *appends.batch_arrays(batch),
        [now] * len(batch),
        tag_events,
        tags,
    )
    with driver_errors(entry.stream, entry.expected):  # a failed guard names this entry's stream
        await cur.execute(q.APPEND_AT, params)
        row = await cur.fetchone()
    if row is None:
        return AppendResult(entry.stream, None, 0, (), None)
    version, xid, seq, at = row
    if not batch:
        return AppendResult(entry.stream, version, q.encode_position(xid, seq), (), at)
    positions = q.positions_of(xid, seq, len(batch))
    return AppendResult(entry.stream, version, positions[-1], positions, now)


class Boundaries:
    """The store's consistency-boundary entries (``PostgresEventStore`` mixes this in)."""

    _db: Connections
    max_event_size: int
    visibility_timeout: float

    async def append_with_condition(
        self,
        stream: str,
        events: Iterable[NewEvent],
        condition: AppendCondition,
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        stream, batch, expected = check_append(stream, events, expected_version, self.max_event_size)
        return await append_if(self._db, stream, batch, expected, check_condition(condition), self.visibility_timeout)

    async def append_many(
        self, appends: Iterable[tuple[str, Iterable[NewEvent], ExpectedVersionLike]]
    ) -> list[AppendResult]:
        entries = check_many(appends, self.max_event_size)
        self._db.check_open()
        return await append_many(self._db, entries)

    def read_query(self, query: Query, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        def start() -> reads.Page | None:
            checked = check_query_read(query, after, limit)
            self._db.check_open()
            return None if checked.matches_nothing else partial(query_page, self._db, checked)

        return reads.visible_pages(self._db, start, after, limit, self.visibility_timeout)
