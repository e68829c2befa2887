"""The SQLite store's stream lifecycle (DESIGN §8): hard deletes, truncations, limits and scavenges, done on
the writer inside its group transaction (``work.Group``), plus migration 3 and its statements.

Erasure is physical: the rows are deleted with ``PRAGMA secure_delete`` on (set on the writer's
connection, ``schema.connect``), so SQLite overwrites their bytes with zeros in the pages it writes; once
the WAL is checkpointed into the file (``PRAGMA wal_checkpoint``, which SQLite also runs on its own every
1000 pages), no page of the file holds them. The WAL file itself keeps old page images until a checkpoint
resets it (``wal_checkpoint(TRUNCATE)`` empties it).

Positions of erased events are never reused: the highest position an erasure removed is kept in
``erased``, and ``schema.HEAD`` (the writer's next position, ``head_position``) counts it. The
migration (3) and the expression reads use to honour the limits (``_START``, in ``STREAM_FIRST_PAGE``)
are in ``schema``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from datetime import timedelta

from epoch.errors import WrongExpectedVersion
from epoch.records import AppendResult, ExpectedVersion, NewEvent
from epoch.stores._checks import enforce_expected_version
from epoch.stores._lifecycle import (
    TOMBSTONE,
    StreamLifecycle,
    is_tombstoned,
    max_age_micros,
    refuse_tombstone,
    tombstone_of,
)
from epoch.stores.sqlite.tags import split
from epoch.stores.sqlite.work import Group, Replay, append

__all__ = [
    "append_guarded",
    "delete",
    "lifecycle_states",
    "scavenge",
    "set_limits",
    "truncate",
]

_ERASE_BELOW = "DELETE FROM events WHERE stream = ? AND version < ?"
_TAGGED_BELOW = "SELECT position, tags FROM events WHERE stream = ? AND version < ? AND tags IS NOT NULL"
_ERASE_TAG = "DELETE FROM event_tags WHERE tag = ? AND position = ?"
_LAST_ERASED = "SELECT max(position) FROM events WHERE stream = ? AND version < ?"
_KEEP_HEAD = (  # and count the erasure: query snapshots of an older count are not used (snapshots.py)
    "INSERT INTO erased (only, position, erasures) VALUES (0, ?, 1)"
    " ON CONFLICT (only) DO UPDATE SET position = max(position, excluded.position), erasures = erasures + 1"
)
_TOMBSTONE_ROW = (  # first_visible = tombstone_of(version)
    f"INSERT INTO streams (stream, version, first_visible) VALUES (?, -1, {TOMBSTONE})"
    f" ON CONFLICT (stream) DO UPDATE SET first_visible = {TOMBSTONE} + version + 1, max_count = NULL, max_age = NULL"
)
_MOVE_FIRST_VISIBLE = "UPDATE streams SET first_visible = max(first_visible, ?) WHERE stream = ?"
_NEW_ROW = "INSERT INTO streams (stream, version, max_count, max_age) VALUES (?, -1, ?, ?)"
_SET_LIMITS = "UPDATE streams SET max_count = ?, max_age = ? WHERE stream = ?"
_LIMITED = (
    "SELECT stream, version, first_visible, max_count, max_age FROM streams"
    f" WHERE (max_count IS NOT NULL OR max_age IS NOT NULL) AND first_visible < {TOMBSTONE}"
)
_LIMITED_ONE = _LIMITED + " AND stream = ?"
_OLDEST_KEPT = "SELECT min(version) FROM events WHERE stream = ? AND version >= ? AND recorded_at >= ?"
_STATES = (
    "SELECT s.stream, s.version, s.first_visible, s.max_count, s.max_age,"
    " coalesce((SELECT min(e.version) FROM events e WHERE e.stream = s.stream), s.version + 1)"
    " FROM streams s WHERE s.first_visible > 0 OR s.max_count IS NOT NULL OR s.max_age IS NOT NULL"
    " ORDER BY s.stream"
)


def _erase(tx: Group, stream: str, below: int) -> int:
    """Delete the stream's events below version ``below``; how many. Keeps their highest position and
    counts the erasure."""
    connection = tx.connection
    last = connection.execute(_LAST_ERASED, (stream, below)).fetchone()[0]
    if last is None:
        return 0
    connection.execute(_KEEP_HEAD, (last,))
    # The tag index holds the tags too (tags.py): erased with their events, row by row through its key.
    tagged = connection.execute(_TAGGED_BELOW, (stream, below)).fetchall()
    connection.executemany(_ERASE_TAG, [(tag, position) for position, joined in tagged for tag in split(joined)])
    return int(connection.execute(_ERASE_BELOW, (stream, below)).rowcount)


def _visible(row: tuple[int, int] | None) -> int | None:
    return None if row is None or row[0] < row[1] else row[0]


def delete(tx: Group, stream: str, expected: ExpectedVersion | int, hard: bool) -> None:
    """Soft or hard delete; a tombstoned stream is left as it is (a second delete is a no-op)."""
    row = tx.stream(stream)
    if row is not None and is_tombstoned(row[1]):
        return
    enforce_expected_version(stream, expected, _visible(row))
    if not hard:
        if row is not None:
            tx.connection.execute(_MOVE_FIRST_VISIBLE, (row[0] + 1, stream))
            tx.memo.streams[stream] = (row[0], max(row[1], row[0] + 1))
        return
    if row is not None:
        _erase(tx, stream, row[0] + 1)
    tx.connection.execute(_TOMBSTONE_ROW, (stream,))
    tx.memo.streams[stream] = (-1 if row is None else row[0], tombstone_of(None if row is None else row[0]))


def append_guarded(
    tx: Group, stream: str, batch: list[NewEvent], expected: ExpectedVersion | int, first_version: int
) -> AppendResult | Replay:
    """``work.append``, refused when the stream's ``first_visible`` moved past ``first_version``."""
    row = tx.stream(stream)
    if row is not None and row[1] > first_version and not is_tombstoned(row[1]):
        raise WrongExpectedVersion(stream, expected, _visible(row))
    return append(tx, stream, batch, expected)


def truncate(tx: Group, stream: str, version: int) -> None:
    row = tx.stream(stream)
    if row is None:
        return
    refuse_tombstone(stream, row[1])
    boundary = min(version, row[0] + 1)
    _erase(tx, stream, boundary)
    if boundary > row[1]:
        tx.connection.execute(_MOVE_FIRST_VISIBLE, (boundary, stream))
        tx.memo.streams[stream] = (row[0], boundary)


def set_limits(tx: Group, stream: str, max_count: int | None, max_age: timedelta | None) -> None:
    row = tx.stream(stream)
    age = None if max_age is None else max_age_micros(max_age)
    if row is None:
        if max_count is not None or age is not None:
            tx.connection.execute(_NEW_ROW, (stream, max_count, age))
            tx.memo.streams[stream] = (-1, 0)
        return
    refuse_tombstone(stream, row[1])
    tx.connection.execute(_SET_LIMITS, (max_count, age, stream))


def scavenge(tx: Group, _: str, stream: str | None) -> int:
    """Erase what the limits exclude, of ``stream`` or of every limited stream; how many events."""
    connection = tx.connection
    now = time.time_ns() // 1000
    rows: Iterable[tuple[str, int, int, int | None, int | None]] = (
        connection.execute(_LIMITED).fetchall()
        if stream is None
        else connection.execute(_LIMITED_ONE, (stream,)).fetchall()
    )
    erased = 0
    for name, version, first_visible, max_count, max_age in rows:
        start = first_visible if max_count is None else max(first_visible, version - max_count + 1)
        if max_age is not None:
            oldest = connection.execute(_OLDEST_KEPT, (name, start, now - max_age)).fetchone()[0]
            start = version + 1 if oldest is None else max(start, oldest)
        if start <= first_visible:
            continue
        erased += _erase(tx, name, start)
        connection.execute(_MOVE_FIRST_VISIBLE, (start, name))
        tx.memo.streams.pop(name, None)  # read again: safe also when a later stream's statement fails
    return erased


def lifecycle_states(connection: sqlite3.Connection) -> list[StreamLifecycle]:
    states = []
    for stream, version, first_visible, max_count, max_age, first_stored in connection.execute(_STATES).fetchall():
        states.append(
            StreamLifecycle(
                stream,
                None if version < 0 else version,
                first_visible,
                first_stored,
                max_count,
                None if max_age is None else timedelta(microseconds=max_age),
            )
        )
    return states
