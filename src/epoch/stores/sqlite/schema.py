"""The SQLite store's file: schema version 1, pragmas, connections, and every SQL statement it runs.

``events`` (``position INTEGER PRIMARY KEY``; unique ``id`` and ``(stream, version)``; an index on
``(category, position)``) and ``streams`` (the version of each stream's last event and ``first_visible``,
the first version not soft-deleted). The version is kept in ``PRAGMA user_version``.
"""

from __future__ import annotations

import sqlite3
import time

from epoch._backoff import Backoff
from epoch.errors import ConfigurationError

__all__ = [
    "APPLICATION_ID",
    "CATEGORY_ARM",
    "COLUMNS",
    "INSERT_EVENT",
    "LOG_PAGE",
    "SCHEMA_VERSION",
    "SELECT_STREAM",
    "STREAM_PAGE",
    "STREAM_PAGE_BACKWARDS",
    "SYNCHRONOUS",
    "UPSERT_STREAM",
    "connect",
    "create_schema",
]

SCHEMA_VERSION = 1
"""The schema this module writes, kept in ``PRAGMA user_version``."""

APPLICATION_ID = 0x45504F43  # "EPOC" in ``PRAGMA application_id``: marks the file as an epoch store
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

_SCHEMA = (
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
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

COLUMNS = "stream, version, position, id, type, data, metadata, recorded_at"
SELECT_STREAM = "SELECT version, first_visible FROM streams WHERE stream = ?"
INSERT_EVENT = (
    "INSERT INTO events (position, stream, version, id, type, data, metadata, category, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_STREAM = (
    "INSERT INTO streams (stream, version) VALUES (?, ?) ON CONFLICT (stream) DO UPDATE SET version = excluded.version"
)
LOG_PAGE = f"SELECT {COLUMNS} FROM events WHERE position > ?1 AND position <= ?2 ORDER BY position LIMIT ?3"
CATEGORY_ARM = f"SELECT {COLUMNS} FROM events WHERE category = ?{{}} AND position > ?1 AND position <= ?2"
STREAM_PAGE = (
    f"SELECT {COLUMNS} FROM events WHERE stream = ? AND version >= ? AND version <= ? ORDER BY version LIMIT ?"
)
STREAM_PAGE_BACKWARDS = (
    f"SELECT {COLUMNS} FROM events WHERE stream = ? AND version >= ? AND version <= ? ORDER BY version DESC LIMIT ?"
)


def connect(path: str, *, timeout: float, synchronous: str, writer: bool) -> sqlite3.Connection:
    """A connection for one thread: the writer's at the ``synchronous`` level, or a read-only one."""
    connection = sqlite3.connect(
        path, timeout=timeout, isolation_level=None, check_same_thread=True, cached_statements=256
    )
    try:
        if writer:
            connection.execute(f"PRAGMA synchronous = {synchronous}")
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
        connection.execute("BEGIN IMMEDIATE")
    if connection.in_transaction:
        try:
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
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
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(wait.next())
