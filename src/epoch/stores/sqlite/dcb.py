"""The SQLite store's consistency boundaries: ``read_query`` from the tag and type indexes, and the writer
jobs of ``append_with_condition`` and ``append_many`` (DESIGN §8; the tables are in ``tags``).

A query becomes one SELECT (or a few, below): ``events`` by ``position IN (...)``, the positions a ``UNION ALL`` of one arm
per query item (a range of ``event_tags`` for its first tag, with ``EXISTS`` for each further tag and a
join on ``events`` for its types) or, for an item naming types only, one arm per type (a range of
``events_type``, one entry per type per append, each entry walking its append's positions: ``tags``).
Each arm is ordered by position and limited to the page size, so a page reads at most that many events
per arm, however many match; ``IN`` gives each event once, and SQLite walks the IN-list in position
order (no sort: ``EXPLAIN QUERY PLAN`` in tests/test_sqlite_dcb.py). A query past SQLite's limits on one
statement is split into several (``_chunks``): a page merges their pages, a condition takes the first
match of any, in the same transaction.

Conditions run on the writer, inside the append's transaction (and its savepoint, under group commit):
the append is written first, so that an idempotent replay is answered as ``append`` answers it, and the
condition then looks for a matching event between ``after`` and the log's head before this append. A
failing condition raises, and the writer rolls back that append alone. ``BEGIN IMMEDIATE`` holds the
file's write lock from the check to the commit, so no other thread or process writes in between.
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from typing import NamedTuple

from epoch.errors import AppendConditionFailed
from epoch.queries import AppendCondition, Query, QueryItem
from epoch.records import AppendResult, ExpectedVersion, NewEvent, RecordedEvent
from epoch.stores._checks import clamp64
from epoch.stores._dcb import Many
from epoch.stores.sqlite import work
from epoch.stores.sqlite.rows import to_records
from epoch.stores.sqlite.schema import COLUMNS, LOG_PAGE, MAX_ARMS, merged_pages
from epoch.stores.sqlite.work import Group, Replay

__all__ = ["QueryCursor", "append_if", "append_many", "first_match", "query_page", "query_sql"]


class _Sql(NamedTuple):
    page: str  # a page of matching events: after ?1, up to ?2, at most ?3, the names from ?4 on
    first: str  # the first matching position after ?1, up to ?2 (NULL: none)
    names: tuple[str, ...]  # the tags and types bound from ?4 on


# SQLite's limits on one statement: 500 terms in a compound SELECT, an expression depth of 1,000 and (the
# default since 3.32) 32,766 parameters. A query is split into chunks within them, one statement each
# (at most MAX_ARMS arms, shared with the category reads in schema, and MAX_NAMES names).
MAX_NAMES = 30_000
MANY_TAGS = 8  # an item's further tags past this are checked by one count, not one EXISTS each (depth)


def _arms(items: tuple[QueryItem, ...]) -> tuple[list[str], tuple[str, ...]]:
    """The position subqueries of ``items``, and the names they bind from ``?4`` on."""
    slots: dict[str, int] = {}

    def slot(name: str) -> str:
        return f"?{slots.setdefault(name, 4 + len(slots))}"

    arms: dict[str, None] = {}  # de-duplicated, in order
    for item in items:
        if item.tags:
            # CROSS JOIN: SQLite keeps this order whatever its statistics say, so the arm walks the tag's
            # range in position order (never all events of the types, then a sort).
            join = " CROSS JOIN events AS e ON e.position = t.position" if item.types else ""
            where = [f"t.tag = {slot(item.tags[0])}", "t.position > ?1", "t.position <= ?2"]
            further = item.tags[1:]
            if len(further) > MANY_TAGS:  # one term, however many tags (an event's tags are distinct rows)
                where.append(
                    "(SELECT count(*) FROM event_tags AS u WHERE u.position = t.position AND u.tag IN"
                    f" ({', '.join(slot(tag) for tag in further)})) = {len(further)}"
                )
            else:
                where += [
                    f"EXISTS (SELECT 1 FROM event_tags AS u WHERE u.tag = {slot(tag)} AND u.position = t.position)"
                    for tag in further
                ]
            if item.types:
                where.append(f"e.type IN ({', '.join(slot(name) for name in item.types)})")
            inner = f"SELECT t.position FROM event_tags AS t{join} WHERE {' AND '.join(where)}"
            arms[f"SELECT position FROM ({inner} ORDER BY t.position LIMIT ?3)"] = None
            continue
        for name in item.types:
            # The type's index entries (one per append: its last event of the type, g) after ?1, each walked
            # from the append's first event of the type (g.type_first) by position, in position order.
            # The bounds are max()/min() so that each walk is one range of positions (tags.py).
            walk = "e.position > max(?1, ifnull(g.type_first, g.position) - 1) AND e.position <= min(?2, g.position)"
            inner = (
                f"SELECT e.position FROM events AS g CROSS JOIN events AS e ON {walk}"
                f" WHERE g.type = {slot(name)} AND g.type_first IS NOT 0 AND g.position > ?1"
                f" AND ifnull(g.type_first, g.position) <= ?2 AND e.type = {slot(name)}"
            )
            arms[f"SELECT position FROM ({inner} ORDER BY g.position, e.position LIMIT ?3)"] = None
    return list(arms), tuple(slots)


def _chunks(query: Query) -> list[tuple[QueryItem, ...]]:
    """``query``'s items in groups of at most :data:`MAX_ARMS` arms and about :data:`MAX_NAMES` names
    (a type-only item is one arm per type: it is split into one item per type)."""
    units = [
        unit
        for item in query.items
        for unit in ((item,) if item.tags else (QueryItem(types=(name,)) for name in item.types))
    ]
    chunks: list[tuple[QueryItem, ...]] = []
    chunk: list[QueryItem] = []
    names = 0
    for unit in units:
        size = len(unit.tags) + len(unit.types)
        if chunk and (len(chunk) == MAX_ARMS or names + size > MAX_NAMES):
            chunks.append(tuple(chunk))
            chunk, names = [], 0
        chunk.append(unit)
        names += size
    chunks.append(tuple(chunk))
    return chunks


@lru_cache(maxsize=512)
def query_sql(query: Query) -> tuple[_Sql, ...]:
    """The statements of ``query`` (neither ``Query([])`` nor one matching everything), built once each:
    one per chunk of its items (one for every query within SQLite's limits)."""
    statements = []
    for chunk in _chunks(query):
        arms, names = _arms(chunk)
        positions = " UNION ALL ".join(arms)
        page = f"SELECT {COLUMNS} FROM events WHERE position IN ({positions}) ORDER BY position LIMIT ?3"
        statements.append(_Sql(page, f"SELECT min(position) FROM ({positions})", names))
    return tuple(statements)


_FIRST_OF_ALL = "SELECT min(position) FROM events WHERE position > ?1 AND position <= ?2"


class QueryCursor(NamedTuple):
    """Where a ``read_query`` stands: after ``after``, up to ``upto`` (``None``: the head when the first
    page is read, so the read is a snapshot, as ``read_all``'s)."""

    query: Query
    after: int
    upto: int | None


def query_page(connection: sqlite3.Connection, cursor: QueryCursor, n: int) -> tuple[QueryCursor, list[RecordedEvent]]:
    query, after, upto = cursor
    if query.matches_nothing:
        return cursor, []
    if upto is None:
        upto = work.head(connection)
    if query.matches_everything:
        rows = connection.execute(LOG_PAGE, (after, upto, n)).fetchall()
    else:
        # Each chunk's first n after ``after``: the first n of the whole query are among them (an event's
        # predecessors in its chunk are among its predecessors in the query), merged once each in order.
        pages = [connection.execute(s.page, (after, upto, n, *s.names)).fetchall() for s in query_sql(query)]
        rows = merged_pages(pages, n)
    records = to_records(rows)
    return QueryCursor(query, records[-1].position if records else after, upto), records


def first_match(connection: sqlite3.Connection, query: Query, after: int, upto: int) -> int | None:
    """The first position in ``(after, upto]`` of an event matching ``query``, or ``None``."""
    if query.matches_nothing or after >= upto:
        return None
    if query.matches_everything:
        row = connection.execute(_FIRST_OF_ALL, (after, upto)).fetchone()
    else:  # each chunk's first, in the caller's transaction (the writer's: atomic with its append)
        firsts = [connection.execute(sql.first, (after, upto, 1, *sql.names)).fetchone() for sql in query_sql(query)]
        found = [row[0] for row in firsts if row is not None and row[0] is not None]
        return min(found) if found else None
    return None if row is None else row[0]


# --- writer jobs ----------------------------------------------------------------------------------


def append_if(
    tx: Group, stream: str, batch: list[NewEvent], expected: ExpectedVersion | int, condition: AppendCondition
) -> AppendResult | Replay:
    """``work.append``, then the condition over the log as it was before this append (see the module docs).

    Raises ``AppendConditionFailed`` naming the first matching position; the writer rolls back the append.
    """
    head = tx.head
    result = work.append(tx, stream, batch, expected)
    if isinstance(result, Replay):
        return result
    after = 0 if condition.after is None else clamp64(condition.after)
    found = first_match(tx.connection, condition.fail_if_events_match, after, head)
    if found is not None:
        raise AppendConditionFailed(stream, condition.after, found)
    return result


def append_many(tx: Group, first_stream: str, entries: list[Many]) -> list[AppendResult]:
    """Each entry's ``work.append`` in input order, in one savepoint: the first that raises undoes them all.

    ``first_stream`` is the stream the job is filed under (named by driver errors); the writer forgets
    only that stream when it rolls back, so this forgets the others' remembered rows itself.
    """
    results: list[AppendResult] = []
    try:
        for entry in entries:
            done = work.append(tx, entry.stream, entry.events, entry.expected)
            results.append(done.result if isinstance(done, Replay) else done)
    except BaseException:
        for entry in entries:
            tx.memo.streams.pop(entry.stream, None)
        raise
    return results
