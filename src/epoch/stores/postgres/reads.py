"""The PostgreSQL store's reads: pages of a stream and of the global log, and waiting for events held back
by open transactions (the visibility wait) or for a subscription's lost connection to come back.

Readers only see rows of transactions older than the oldest one still running, so an event committed
after an older transaction began stays invisible until that transaction ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from epoch._backoff import Backoff
from epoch.errors import StoreUnavailable
from epoch.records import RecordedEvent
from epoch.stores._checks import MAX_INT64, clamp64
from epoch.stores._lifecycle import check_confirmed_read
from epoch.stores.postgres import sql as q
from epoch.stores.postgres.pool import Conn, Connections

__all__ = [
    "PAGE",
    "Page",
    "binary_rows",
    "confirmed_events",
    "pending",
    "read_page",
    "row_all",
    "stream_events",
    "stream_page",
    "subscription_page",
    "subscription_pending",
    "visible_pages",
    "wait_visible",
]

log = logging.getLogger("epoch.stores.postgres")

PAGE = 1000


def row_all(row: Sequence[Any]) -> RecordedEvent:
    """The event of a row of the global log (``stream, version, xid, seq, id, ...``)."""
    stream, version, xid, seq, id, type, data, metadata, at, tags = row
    position = q.encode_position(xid, seq)
    return RecordedEvent(stream, version, position, id, type, data, metadata, at, () if tags is None else tuple(tags))


async def binary_rows(conn: Conn, sql: Any, params: Any) -> list[Any]:
    """The rows of one query, in psycopg's binary format (bytea and uuid columns come back as they are)."""
    async with conn.cursor(binary=True) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def stream_events(
    db: Connections, stream: str, start: Callable[[], tuple[int, int | None]], limit: int | None, backwards: bool
) -> AsyncIterator[RecordedEvent]:
    """The events of ``read_stream`` and ``read_stream_confirmed``: page after page, at most ``limit``.

    ``start()`` checks the arguments (when iteration begins, as for any async generator) and returns the
    first version to read (a 64-bit int) and ``first``: for a confirmed read, the first visible version
    the first page's query confirms (``READ_STREAM_CONFIRMED``), else ``None``."""
    cursor, first = start()
    remaining = limit
    while remaining is None or remaining > 0:
        size = PAGE if remaining is None else min(PAGE, remaining)
        events = await stream_page(db, stream, cursor, size, backwards, first)
        for event in events:
            yield event
        if len(events) < size:
            return
        if remaining is not None:
            remaining -= len(events)
        cursor, first = events[-1].version + (-1 if backwards else 1), None  # confirmed once, by the first page
        if cursor < 0:
            return


def confirmed_events(
    db: Connections, stream: str, from_version: int, first_version: int
) -> AsyncIterator[RecordedEvent]:
    """``PostgresEventStore.read_stream_confirmed``: the first page confirms the stream's start in its own
    query; the next pages, if any, are read as ``read_stream`` reads them."""

    def start() -> tuple[int, int | None]:
        check_confirmed_read(stream, from_version, first_version)
        db.check_open(stream)
        return clamp64(from_version), clamp64(first_version)

    return stream_events(db, stream, start, None, False)


async def stream_page(
    db: Connections, stream: str, cursor: int, size: int, backwards: bool, first: int | None = None
) -> list[RecordedEvent]:
    """Up to ``size`` events of ``stream`` from version ``cursor`` on (down, ``backwards``), soft-deleted
    versions left out; ``cursor`` is a 64-bit int (a larger bound is capped by the caller). ``first``
    (forwards only): none when the stream's first visible version is past it (``READ_STREAM_CONFIRMED``)."""
    sql = q.READ_STREAM_BACKWARD if backwards else q.READ_STREAM_FORWARD
    params = {"stream": stream, "from": cursor, "limit": size}
    if first is not None:
        sql, params["first"] = q.READ_STREAM_CONFIRMED, first

    async def page(conn: Conn) -> list[RecordedEvent]:
        rows = await binary_rows(conn, sql, params)
        return [
            RecordedEvent(
                stream,
                version,
                q.encode_position(xid, seq),
                id,
                type,
                data,
                metadata,
                at,
                () if tags is None else tuple(tags),
            )
            for version, xid, seq, id, type, data, metadata, at, tags in rows
        ]

    return await db.run(page, stream)


def _page_query(names: tuple[str, ...] | None, after: int, size: int) -> tuple[Any, dict[str, Any]]:
    xid, seq = q.decode_position(after)
    params: dict[str, Any] = {"xid": xid, "seq": seq, "limit": size}
    if names is None:
        return q.READ_ALL, params
    if len(names) > q.MAX_UNION_CATEGORIES:
        params["categories"] = list(names)
    else:
        params.update({f"c{i}": name for i, name in enumerate(names)})
    return q.read_categories(len(names)), params


async def read_page(db: Connections, names: tuple[str, ...] | None, after: int, size: int) -> list[RecordedEvent]:
    if q.decode_position(after)[0] > MAX_INT64:
        return []  # past every transaction id a bigint holds: past the end of the log (guarantee 13)
    sql, params = _page_query(names, after, size)

    async def page(conn: Conn) -> list[RecordedEvent]:
        return [row_all(row) for row in await binary_rows(conn, sql, params)]

    return await db.run(page)


async def pending(db: Connections, after: int) -> int | None:
    """The newest committed-but-invisible transaction id past ``after``, or None when there is none."""

    async def check(conn: Conn) -> tuple[int | None, int]:
        row = await (await conn.execute(q.NEWEST_AND_XMIN)).fetchone()
        assert row is not None
        return row[0], row[1]

    newest, xmin = await db.run(check)
    if newest is None or newest < xmin or newest < q.decode_position(after)[0]:
        return None
    return newest


async def wait_visible(db: Connections, xid: int, within: float) -> bool:
    """Wait (polling, up to ``within`` seconds) until every transaction up to ``xid`` has ended."""
    deadline = time.monotonic() + within
    delay = 0.001

    async def xmin(conn: Conn) -> int:
        row = await (await conn.execute(q.XMIN_ONLY)).fetchone()
        assert row is not None
        return int(row[0])

    while await db.run(xmin) <= xid:
        if time.monotonic() + delay > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


Page = Callable[[int, int], Awaitable[list[RecordedEvent]]]
"""``page(after, size)``: up to ``size`` visible events after position ``after``, in log order."""


async def visible_pages(
    db: Connections, start: Callable[[], Page | None], after: int, limit: int | None, visibility_timeout: float
) -> AsyncIterator[RecordedEvent]:
    """The events of ``read_all`` and ``read_query``: page after page, at most ``limit``, to the end of the
    visible log. There, wait once (bounded) for events committed before this read that an older,
    still-open transaction keeps invisible, and read on.

    ``start()`` checks the arguments (when iteration begins, as for any async generator) and returns the
    page function, or ``None`` when nothing can match (no query is sent)."""
    page = start()
    if page is None:
        return
    remaining = limit
    waited = False
    while remaining is None or remaining > 0:
        size = PAGE if remaining is None else min(PAGE, remaining)
        events = await page(after, size)
        for event in events:
            yield event
        if events:
            after = events[-1].position
        if remaining is not None:
            remaining -= len(events)
        if len(events) < size:
            if waited:
                return
            waited = True
            waiting = await pending(db, after)
            if waiting is None or not await wait_visible(db, waiting, visibility_timeout):
                return


async def subscription_page(db: Connections, names: tuple[str, ...] | None, after: int) -> list[RecordedEvent]:
    """A page for a subscription: lost connections (and other transient errors) are retried forever,
    with backoff, until closed; any other error is raised."""
    wait = Backoff(first=0.05, cap=2.0)
    while True:
        db.check_open()
        try:
            return await read_page(db, names, after, PAGE)
        except StoreUnavailable as exc:
            # Only what passes is retried: a StoreError (a statement the server refuses, a broken
            # schema) is raised at once, as retrying it would loop forever. The store was open above,
            # so a StoreUnavailable is the server's or the network's, unless the store closed since.
            if db.closed:
                raise
            pause = wait.next()
            log.warning("subscription lost PostgreSQL (%s); retrying in %.2fs", exc, pause)
            await asyncio.sleep(pause)


async def subscription_pending(db: Connections, after: int) -> bool:
    try:
        return await pending(db, after) is not None
    except StoreUnavailable:
        if db.closed:
            raise
        return True  # retry soon through subscription_page's backoff
