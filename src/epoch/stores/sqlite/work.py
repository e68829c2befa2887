"""The work the SQLite store's threads do on their connections: appends, deletes and imports on the
writer (inside its transaction), page reads and point queries on the readers (rows become records in
``rows``).

An append whose events are stored already at the same place (guarantee 5) returns a :class:`Replay`
holding the first append's result; exceptions are for errors only. The statements are in ``schema``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from epoch.errors import DuplicateEventId, WrongExpectedVersion
from epoch.records import NO_STREAM, AppendResult, ExpectedVersion, NewEvent, RecordedEvent, category_of
from epoch.stores._checks import enforce_expected_version, is_replay
from epoch.stores._lifecycle import TOMBSTONE, refuse_tombstone
from epoch.stores.sqlite.rows import EPOCH, MICROSECOND, instant, stream_records, to_records, uuid_of
from epoch.stores.sqlite.schema import (
    DATA_VERSION,
    DROP_FROM,
    GET_EVENT,
    HEAD,
    IDS_PER_QUERY,
    INSERT_EVENT,
    LAST_EVENT,
    LOG_PAGE,
    PLACE_OF_ID,
    SELECT_STREAM,
    SET_FIRST_VISIBLE,
    STREAM_FIRST_PAGE,
    STREAM_FIRST_PAGE_BACKWARDS,
    STREAM_PAGE,
    STREAM_PAGE_BACKWARDS,
    UPSERT_STREAM,
    category_rows,
    places_of,
)
from epoch.stores.sqlite.tags import INSERT_TAG, SEPARATOR, joined, tag_rows, type_firsts

__all__ = [
    "Group",
    "Memo",
    "LogCursor",
    "Replay",
    "StreamCursor",
    "append",
    "get_event",
    "head",
    "import_runs",
    "log_page",
    "stream_page",
    "stream_version",
]


# --- work done on the writer thread ---------------------------------------------------------------


_MEMO_STREAMS = 100_000  # streams the writer remembers; past that it starts again from none


class Memo:
    """What the writer knows of the committed file between its transactions: the log's ``head`` and each
    remembered stream's ``SELECT_STREAM`` row (``None``: no such stream). Only this process's writer
    writes through its connection, so what it committed stays true until another connection commits,
    which ``PRAGMA data_version`` (read inside the write lock) shows: then all of it is forgotten.
    """

    __slots__ = ("data_version", "head", "streams")

    def __init__(self) -> None:
        self.data_version = -1
        self.head: int | None = None
        self.streams: dict[str, tuple[int, int] | None] = {}

    def forget(self) -> None:
        """After a write this memo cannot follow (a caller's own transaction) or a failed one."""
        self.head = None
        self.streams.clear()


class Group:
    """The state of one group transaction (``BEGIN IMMEDIATE`` taken), shared by the appends in it.

    ``memo.streams`` holds what the appends of this transaction wrote: the writer pops a stream whose
    savepoint it rolls back, forgets everything when the transaction fails, and sets ``memo.head`` to
    ``head`` once it committed.
    """

    __slots__ = ("connection", "head", "memo", "now")

    def __init__(self, connection: sqlite3.Connection, memo: Memo) -> None:
        self.connection = connection
        self.memo = memo
        data_version: int = connection.execute(DATA_VERSION).fetchone()[0]
        if data_version != memo.data_version or len(memo.streams) > _MEMO_STREAMS:
            memo.forget()
            memo.data_version = data_version
        head = memo.head
        self.head: int = connection.execute(HEAD).fetchone()[0] if head is None else head
        memo.head = None  # until this transaction commits
        self.now = time.time_ns() // 1000

    def stream(self, stream: str) -> tuple[int, int] | None:
        """The stream's ``(version, first_visible)`` in this transaction, ``None`` when it was never written."""
        streams = self.memo.streams
        if stream in streams:
            return streams[stream]
        row: tuple[int, int] | None = self.connection.execute(SELECT_STREAM, (stream,)).fetchone()
        streams[stream] = row
        return row


class Replay(NamedTuple):
    """What :func:`append` returns when its events are stored already, at the same place (guarantee 5).

    ``result`` is the first append's result; this append wrote nothing (the writer still rolls back its
    savepoint, so nothing of the attempt stays either way).
    """

    result: AppendResult


def _visible(row: tuple[int, int] | None) -> int | None:
    return None if row is None or row[0] < row[1] else row[0]


def _replayed(
    connection: sqlite3.Connection, stream: str, batch: Sequence[NewEvent], expected: ExpectedVersion | int
) -> Replay | None:
    """The original result if ``batch`` is already stored here (raises DuplicateEventId if elsewhere)."""
    found: dict[UUID, tuple[str, int, int, int]] = {}
    for start in range(0, len(batch), IDS_PER_QUERY):
        chunk = [event.id.bytes for event in batch[start : start + IDS_PER_QUERY]]
        for raw_id, *place in connection.execute(places_of(len(chunk)), chunk).fetchall():
            found[uuid_of(raw_id)] = tuple(place)
    if not is_replay(stream, batch, expected, {key: (row[0], row[1]) for key, row in found.items()}):
        return None
    last = found[batch[-1].id]
    positions = tuple(found[event.id][2] for event in batch)
    recorded_at = _stored_instant(connection, stream, last[1], last[3])
    return Replay(AppendResult(stream, last[1], last[2], positions, recorded_at, replayed=True))


def _stored_instant(connection: sqlite3.Connection, stream: str, version: int, recorded_at: int) -> datetime:
    """The instant of the stored event at ``version``, whose ``recorded_at`` column holds ``recorded_at``.

    A value no append could have written (edited by hand, or corrupt) raises the :class:`DecodeError` a
    read of that event raises, naming the stream, the version and the type: the row is read again for it.
    """
    try:
        return instant(recorded_at)  # an int, unless the row was edited by hand or is corrupt
    except (TypeError, ValueError, OverflowError, OSError):
        stream_records(stream, connection.execute(STREAM_PAGE, (stream, version, version, 1)).fetchall())
        raise  # not the row's fault (the read found nothing wrong with it)


def append(tx: Group, stream: str, batch: list[NewEvent], expected: ExpectedVersion | int) -> AppendResult | Replay:
    """Append ``batch`` inside the group's transaction; a :class:`Replay` when it is stored already.

    Raises ``WrongExpectedVersion`` or ``DuplicateEventId``; the writer rolls back what an append that
    raised (or replayed) may have written.
    """
    connection = tx.connection
    row = tx.stream(stream)
    if row is not None and row[1] >= TOMBSTONE:  # the row read for the guard anyway: no extra query
        refuse_tombstone(stream, row[1])
    actual = _visible(row)
    try:
        enforce_expected_version(stream, expected, actual)
    except WrongExpectedVersion:
        if batch and (replay := _replayed(connection, stream, batch, expected)) is not None:
            return replay
        raise
    if not batch:
        if actual is None:
            return AppendResult(stream, None, 0, (), None)
        position, recorded_at = connection.execute(LAST_EVENT, (stream, actual)).fetchone()
        return AppendResult(stream, actual, position, (), _stored_instant(connection, stream, actual, recorded_at))
    first_position = tx.head + 1
    first_version = 0 if row is None else row[0] + 1
    category = category_of(stream)
    now = tx.now
    rows = [
        (
            first_position + i,
            stream,
            first_version + i,
            e.id.bytes,
            e.type,
            e.data,
            e.metadata,
            category,
            now,
            SEPARATOR.join(e.tags) if e.tags else None,  # tags.joined, inlined (once per event)
            type_first,
        )
        for i, (e, type_first) in enumerate(zip(batch, type_firsts(batch, first_position), strict=True))
    ]
    try:
        if len(rows) == 1:
            connection.execute(INSERT_EVENT, rows[0])
        else:
            connection.executemany(INSERT_EVENT, rows)
    except sqlite3.IntegrityError as exc:
        # An id is stored already (BEGIN IMMEDIATE kept (stream, version) free). Drop this batch's rows
        # inserted before the failing one, so that they are not taken for stored ones.
        connection.execute(DROP_FROM, (first_position,))
        if (replay := _replayed(connection, stream, batch, expected)) is not None:
            return replay
        raise WrongExpectedVersion(stream, expected, actual) from exc
    if tagged := tag_rows(batch, first_position):
        connection.executemany(INSERT_TAG, tagged)
    last_version = first_version + len(rows) - 1
    connection.execute(UPSERT_STREAM, (stream, last_version))
    tx.memo.streams[stream] = (last_version, 0 if row is None else row[1])
    tx.head = last_position = first_position + len(rows) - 1
    return AppendResult(
        stream, last_version, last_position, tuple(range(first_position, last_position + 1)), instant(now)
    )


def import_runs(
    connection: sqlite3.Connection, runs: list[list[RecordedEvent]], first_visible: Mapping[str, int]
) -> list[int]:
    position: int = connection.execute(HEAD).fetchone()[0]
    positions: list[int] = []
    for run in runs:
        stream = run[0].stream
        row = connection.execute(SELECT_STREAM, (stream,)).fetchone()
        actual = None if row is None else row[0]
        if run[0].version > (0 if actual is None else actual + 1) and first_visible.get(stream, 0) >= run[0].version:
            actual = run[0].version - 1  # the versions before it were erased at the source (epoch copy)
        for offset, event in enumerate(run):
            if event.version != (0 if actual is None else actual + 1) + offset:
                raise WrongExpectedVersion(stream, event.version - 1 if event.version else NO_STREAM, actual)
        rows = []
        category = category_of(stream)
        for event, type_first in zip(run, type_firsts(run, position + 1), strict=True):
            position += 1
            positions.append(position)
            micros = (event.recorded_at - EPOCH) // MICROSECOND
            rows.append(
                (
                    position,
                    stream,
                    event.version,
                    event.id.bytes,
                    event.type,
                    event.data,
                    event.metadata,
                    category,
                    micros,
                    joined(event.tags),
                    type_first,
                )
            )
        try:
            connection.executemany(INSERT_EVENT, rows)
        except sqlite3.IntegrityError:  # an id is stored already: name the first one
            for event in run:
                if (found := connection.execute(PLACE_OF_ID, (event.id.bytes,)).fetchone()) is not None:
                    raise DuplicateEventId(stream, event.id, found[0], found[1]) from None
            raise
        if tagged := tag_rows(run, positions[-len(run)]):
            connection.executemany(INSERT_TAG, tagged)
        connection.execute(UPSERT_STREAM, (stream, run[-1].version))
    for stream, version in first_visible.items():
        connection.execute(SET_FIRST_VISIBLE, (version, stream))
    return positions


# --- work done on reader threads ------------------------------------------------------------------


class LogCursor(NamedTuple):
    """Where a read of the log stands: after ``after``, up to ``upto`` (``None``: the head when the next
    page is read), in ``categories`` (``None``: all of them)."""

    after: int
    upto: int | None
    categories: tuple[str, ...] | None


class StreamCursor(NamedTuple):
    """Where a read of a stream stands: the versions from ``low`` to ``high`` not read yet (``None``: fixed
    by the first page, as a snapshot), read ``backwards`` or forwards."""

    stream: str
    low: int | None
    high: int | None
    backwards: bool


def log_page(connection: sqlite3.Connection, cursor: LogCursor, n: int) -> tuple[LogCursor, list[RecordedEvent]]:
    after, upto, names = cursor
    if names == ():  # an empty filter matches nothing: no query (a subscription just waits)
        return cursor, []
    if upto is None:
        upto = head(connection)
    if names is None:
        rows = connection.execute(LOG_PAGE, (after, upto, n)).fetchall()
    else:
        rows = category_rows(connection, names, after, upto, n)
    records = to_records(rows)
    return LogCursor(records[-1].position if records else after, upto, names), records


def stream_page(
    connection: sqlite3.Connection, cursor: StreamCursor, n: int
) -> tuple[StreamCursor, list[RecordedEvent]]:
    stream, low, high, backwards = cursor
    if low is None or high is None:  # the first page fixes the bounds, as a snapshot, in the same statement
        rows = connection.execute(
            STREAM_FIRST_PAGE_BACKWARDS if backwards else STREAM_FIRST_PAGE,
            (stream, time.time_ns() // 1000, high if backwards else low, n),
        ).fetchall()
        if not rows or rows[0][2] is None:  # never written, or no event in range (or none visible)
            return cursor, []
        last, first_visible = rows[0][0], rows[0][1]
        if backwards:
            low, high = first_visible, last if high is None else min(high, last)
        else:
            low, high = first_visible if low is None else max(low, first_visible), last
        rows = [row[2:] for row in rows]
    else:
        rows = connection.execute(
            STREAM_PAGE_BACKWARDS if backwards else STREAM_PAGE, (stream, low, high, n)
        ).fetchall()
    records = stream_records(stream, rows)
    if records:
        if backwards:
            high = records[-1].version - 1
        else:
            low = records[-1].version + 1
    return StreamCursor(stream, low, high, backwards), records


def stream_version(connection: sqlite3.Connection, stream: str) -> int | None:
    row = connection.execute(SELECT_STREAM, (stream,)).fetchall()
    return _visible(row[0]) if row else None


def head(connection: sqlite3.Connection) -> int:
    return int(connection.execute(HEAD).fetchall()[0][0])


def get_event(connection: sqlite3.Connection, raw_id: bytes) -> RecordedEvent | None:
    records = to_records(connection.execute(GET_EVENT, (raw_id,)).fetchall())
    return records[0] if records else None
