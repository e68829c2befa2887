"""The SQLite store's file: its schema migrations, pragmas, connections, and every SQL statement the store runs
(a caller's own statements, in ``run_in_transaction`` or ``transaction()``, are the caller's).

``events`` (``position INTEGER PRIMARY KEY``; unique ``id`` and ``(stream, version)``; indexes on
``(category, position)`` and ``(type, position)``, the latter one entry per type per append; ``tags``,
``type_first``) and ``streams`` (the version of each stream's
last event and ``first_visible``, the first version not soft-deleted); ``event_tags``, the tag index
(``tags``). The applied migration is kept in ``PRAGMA user_version``.
"""

from __future__ import annotations

import sqlite3
import time
from functools import lru_cache
from typing import Any

from epoch._backoff import Backoff
from epoch.errors import ConfigurationError
from epoch.stores._sql_keys import SQLITE_KEY_TABLES
from epoch.stores.sqlite import snapshots, tags
from epoch.stores.sqlite.errors import is_lock_conflict

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "BEGIN",
    "COLUMNS",
    "COMMIT",
    "DATA_VERSION",
    "DELETE_STREAM",
    "DROP_FROM",
    "GET_EVENT",
    "HEAD",
    "IDS_PER_QUERY",
    "INSERT_EVENT",
    "LAST_EVENT",
    "LOG_PAGE",
    "PLACE_OF_ID",
    "RELEASE_SAVEPOINT",
    "ROLLBACK",
    "ROLLBACK_TO_SAVEPOINT",
    "SAVEPOINT",
    "SCHEMA_VERSION",
    "SELECT_STREAM",
    "SET_FIRST_VISIBLE",
    "STREAM_COLUMNS",
    "STREAM_FIRST_PAGE",
    "STREAM_FIRST_PAGE_BACKWARDS",
    "STREAM_PAGE",
    "STREAM_PAGE_BACKWARDS",
    "SYNCHRONOUS",
    "UPSERT_STREAM",
    "MAX_ARMS",
    "category_page",
    "category_rows",
    "connect",
    "create_schema",
    "merged_pages",
    "places_of",
]

_V1 = (
    """CREATE TABLE IF NOT EXISTS events (
        position    INTEGER PRIMARY KEY,
        stream      TEXT    NOT NULL,
        version     INTEGER NOT NULL,
        id          BLOB    NOT NULL UNIQUE,
        type        TEXT    NOT NULL,
        data        BLOB    NOT NULL,
        metadata    BLOB    NOT NULL,
        category    TEXT    NOT NULL,
        recorded_at INTEGER NOT NULL,
        UNIQUE (stream, version)
    )""",
    "CREATE INDEX IF NOT EXISTS events_category ON events (category, position)",
    """CREATE TABLE IF NOT EXISTS streams (
        stream        TEXT    PRIMARY KEY,
        version       INTEGER NOT NULL,
        first_visible INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
)

_V3 = (
    "ALTER TABLE streams ADD COLUMN max_count INTEGER",
    "ALTER TABLE streams ADD COLUMN max_age INTEGER",  # microseconds
    """CREATE TABLE IF NOT EXISTS erased (
        only     INTEGER PRIMARY KEY CHECK (only = 0),
        position INTEGER NOT NULL
    )""",
)
"""Stream lifecycle (``lifecycle``): the streams' limits, and the highest position an erasure removed."""

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "events and streams", _V1),
    (2, "event tags, the tag index and the type index", tags.MIGRATION),
    (3, "stream limits and the erased head (stream lifecycle)", _V3),
    (4, "snapshots", snapshots.MIGRATION),
    (5, "epoch_keys, epoch_key_changes: personal-data keys", SQLITE_KEY_TABLES),
    (6, "the type index keeps one entry per type per append (events.type_first)", tags.MIGRATION_6),
    (7, "the erasure count and query snapshots (DecisionHandler)", snapshots.QUERY_MIGRATION),
)
"""``(version, description, statements)`` in version order, applied in one transaction by
:func:`create_schema`. Never edit a released one; add a new one (its statements may live in the module
of the feature that needs them)."""

SCHEMA_VERSION = MIGRATIONS[-1][0]
"""The schema this module writes, kept in ``PRAGMA user_version``."""

APPLICATION_ID = 0x45504F43  # "EPOC" in ``PRAGMA application_id``: marks the file as an epoch store
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

# -- transactions (the writer's; a group of appends shares one, each in a savepoint when there are several)

BEGIN = "BEGIN IMMEDIATE"  # takes the write lock before the expected-version check: atomic across processes
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
SAVEPOINT = "SAVEPOINT append"
ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO append"
RELEASE_SAVEPOINT = "RELEASE append"

# -- writes ----------------------------------------------------------------------------------------

COLUMNS = "stream, version, position, id, type, data, metadata, recorded_at, tags"  # the order records are built in
# The log's head also counts the highest erased position (lifecycle.py), so positions are never reused.
HEAD = "SELECT max(ifnull(max(position),0),(SELECT ifnull(max(position),0)FROM erased))FROM events"  # short:
# a statement is bounded by SQLITE_LIMIT_LENGTH too (tests/test_sqlite_errors.py sets it to 100)
DATA_VERSION = "PRAGMA data_version"  # changes when another connection commits to the file
SELECT_STREAM = "SELECT version, first_visible FROM streams WHERE stream = ?"
# Where a read starts: the first version it returns, honouring the limits (?2 now in microseconds). One
# row lookup; the max_age subquery runs only when a max_age is set.
_START = """max(s.first_visible,
    CASE WHEN s.max_count IS NULL THEN 0 ELSE s.version - s.max_count + 1 END,
    CASE WHEN s.max_age IS NULL THEN 0 ELSE coalesce((SELECT min(x.version) FROM events x
        WHERE x.stream = s.stream AND x.version >= s.first_visible AND x.recorded_at >= ?2 - s.max_age),
        s.version + 1) END)"""
LAST_EVENT = "SELECT position, recorded_at FROM events WHERE stream = ? AND version = ?"
INSERT_EVENT = (
    "INSERT INTO events (position, stream, version, id, type, data, metadata, category, recorded_at, tags, type_first)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
DROP_FROM = "DELETE FROM events WHERE position >= ?"  # a failed batch's rows, inside its own transaction
UPSERT_STREAM = (
    "INSERT INTO streams (stream, version) VALUES (?, ?) ON CONFLICT (stream) DO UPDATE SET version = excluded.version"
)
DELETE_STREAM = "UPDATE streams SET first_visible = version + 1 WHERE stream = ?"
SET_FIRST_VISIBLE = "UPDATE streams SET first_visible = ? WHERE stream = ?"
PLACE_OF_ID = "SELECT stream, version FROM events WHERE id = ?"

IDS_PER_QUERY = 500
"""Ids looked up by one :func:`places_of` query (SQLite allows 32766 parameters; a page of ids is plenty)."""


def places_of(n: int) -> str:
    """Where each of ``n`` ids (parameters 1 to ``n``) is stored: ``id, stream, version, position, recorded_at``."""
    return f"SELECT id, stream, version, position, recorded_at FROM events WHERE id IN ({','.join('?' * n)})"


# -- reads -----------------------------------------------------------------------------------------

GET_EVENT = f"SELECT {COLUMNS} FROM events WHERE id = ?"
LOG_PAGE = f"SELECT {COLUMNS} FROM events WHERE position > ?1 AND position <= ?2 ORDER BY position LIMIT ?3"
_CATEGORY_ARM = f"SELECT {COLUMNS} FROM events WHERE category = ?{{}} AND position > ?1 AND position <= ?2"
# A stream's pages leave out the stream's name, which the reader knows (rows.stream_records).
STREAM_COLUMNS = COLUMNS.removeprefix("stream, ")
STREAM_PAGE = (
    f"SELECT {STREAM_COLUMNS} FROM events WHERE stream = ? AND version >= ? AND version <= ? ORDER BY version LIMIT ?"
)
STREAM_PAGE_BACKWARDS = (
    f"SELECT {STREAM_COLUMNS} FROM events WHERE stream = ? AND version >= ? AND version <= ?"
    " ORDER BY version DESC LIMIT ?"
)
# A read's first page and the bounds it fixes for the later ones, in ONE statement (two took 40% longer:
# 44 against 27 us on a 6-event stream): each row is (last, first, *STREAM_COLUMNS), the stream's last
# version and the first one the read may return (honouring the limits); a single row whose event columns
# are NULL when no event is in range, none when the stream was never written. ?1 the stream, ?2 now in
# microseconds, ?3 the caller's from_version (NULL: none), ?4 the page size.
_FIRST_PAGE = """SELECT s.last, s.first, {columns} FROM (SELECT version AS last, {start} AS first FROM streams s
    WHERE s.stream = ?1) s LEFT JOIN events e ON e.stream = ?1 AND e.version >= {low} AND e.version <= {high}
ORDER BY e.version{order} LIMIT ?4"""
_E_COLUMNS = ", ".join(f"e.{name.strip()}" for name in STREAM_COLUMNS.split(","))
STREAM_FIRST_PAGE = _FIRST_PAGE.format(
    columns=_E_COLUMNS, start=_START, low="max(s.first, coalesce(?3, 0))", high="s.last", order=""
)
STREAM_FIRST_PAGE_BACKWARDS = _FIRST_PAGE.format(
    columns=_E_COLUMNS, start=_START, low="s.first", high="min(s.last, coalesce(?3, s.last))", order=" DESC"
)


MAX_ARMS = 200
"""Arms of one ``UNION ALL`` at most: SQLite runs 500 terms in a compound SELECT (and 32,766 parameters),
so a read of more (categories, query items) is split into statements of this many, pages merged."""
_POSITION = COLUMNS.split(", ").index("position")


def merged_pages(pages: list[list[Any]], n: int) -> list[Any]:
    """The first ``n`` rows of several pages, each in position order and holding its first ``n`` rows
    after the same point: in position order, each position once (one page is returned as it is)."""
    if len(pages) == 1:
        return pages[0]
    return sorted({row[_POSITION]: row for page in pages for row in page}.values(), key=lambda r: r[_POSITION])[:n]


@lru_cache(maxsize=64)
def category_page(categories: int) -> str:
    """A page of the log in ``categories`` categories (at most :data:`MAX_ARMS`): after ``?1``, up to
    ``?2``, ``?3`` rows, names from ``?4``.

    Several categories are a merge of one index range each (SQLite runs ``UNION ALL ... ORDER BY`` as a merge).
    """
    if categories == 1:
        return _CATEGORY_ARM.format(4) + " ORDER BY position LIMIT ?3"
    return " UNION ALL ".join(_CATEGORY_ARM.format(4 + i) for i in range(categories)) + " ORDER BY 3 LIMIT ?3"


def category_rows(connection: sqlite3.Connection, names: tuple[str, ...], after: int, upto: int, n: int) -> list[Any]:
    """The first ``n`` rows of the log in the categories ``names`` in ``(after, upto]``, however many names:
    one statement per :data:`MAX_ARMS` of them, their pages merged (a category's events are in it alone)."""
    pages = [
        connection.execute(category_page(len(chunk)), (after, upto, n, *chunk)).fetchall()
        for chunk in (names[i : i + MAX_ARMS] for i in range(0, len(names), MAX_ARMS))
    ]
    return merged_pages(pages, n)


# -- the file --------------------------------------------------------------------------------------


def connect(path: str, *, timeout: float, synchronous: str, writer: bool, shared: bool = False) -> sqlite3.Connection:
    """A connection: the writer's at the ``synchronous`` level, or a read-only one.

    ``shared``: used by more than one thread, one at a time (the writer's, which callers' threads use
    too, and a caller thread's read-only one, which the store's ``close`` closes from its own thread).
    """
    connection = sqlite3.connect(
        path, timeout=timeout, isolation_level=None, check_same_thread=not shared, cached_statements=256
    )
    try:
        if writer:
            connection.execute(f"PRAGMA synchronous = {synchronous}")
            # Erased events (lifecycle.py) are overwritten with zeros, not just unlinked from their pages.
            connection.execute("PRAGMA secure_delete = ON")
        else:
            connection.execute("PRAGMA query_only = ON")
    except BaseException:
        connection.close()
        raise
    return connection


def create_schema(connection: sqlite3.Connection, path: str, *, in_memory: bool) -> None:
    """Switch the file to WAL and create the schema when missing; refuse foreign and newer files."""
    # Switching a file to WAL takes an exclusive lock; asking first leaves a file that is already WAL
    # (every file but a new one) alone, so a process opening it never waits on busy writers.
    if not in_memory and connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        _switch_to_wal(connection)
    for _ in range(2):  # read without a lock first: an up-to-date file needs no write lock
        version, application = (
            connection.execute(f"PRAGMA {name}").fetchone()[0] for name in ("user_version", "application_id")
        )
        if application not in (0, APPLICATION_ID):
            raise ConfigurationError(f"{path} is not an epoch event store (application_id {application:#x})")
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"{path} has schema version {version}, newer than this epoch ({SCHEMA_VERSION}): upgrade epoch"
            )
        if version == SCHEMA_VERSION or connection.in_transaction:
            break
        connection.execute(BEGIN)
    if connection.in_transaction:
        try:
            for number, _, statements in MIGRATIONS:
                if number > version:
                    for statement in statements:
                        connection.execute(statement)
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute(COMMIT)
        except BaseException:
            connection.execute(ROLLBACK)
            raise


def _switch_to_wal(connection: sqlite3.Connection, budget: float = 10.0) -> None:
    """Switch a new file to WAL. Processes opening the same new file at once can each hold the shared
    lock while waiting for the exclusive one; SQLite then answers "locked" at once instead of waiting,
    so retry after a random pause (which breaks the tie) until the budget is spent."""
    deadline = time.monotonic() + budget
    wait = Backoff(first=0.005, cap=0.05)
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.Error as exc:
            if not is_lock_conflict(exc) or time.monotonic() > deadline:
                raise
            time.sleep(wait.next())
