"""The embedded default store: one SQLite file in WAL mode, no server.

Threads. SQLite calls block, so none run on the event loop. One writer thread owns the only writing
connection; a few reader threads each own a read-only connection (WAL readers never wait for the
writer). A call hands its work to a thread and awaits a future the thread settles; a read hands over
a page of rows at a time, and the next page is fetched while the caller consumes the current one.

Group commit. The writer takes every append waiting in its queue and commits them in one
``BEGIN IMMEDIATE ... COMMIT``, each inside its own SAVEPOINT, so one failing append (a wrong expected
version, say) rolls back alone while the others share a single commit.

Processes. ``BEGIN IMMEDIATE`` takes SQLite's write lock before the expected-version check, so the check
and the insert are atomic across threads and OS processes; a writer waits up to ``timeout`` seconds for
the lock, then gets :class:`~epoch.errors.StoreUnavailable`. Positions are assigned under that lock, so
they commit in order: ``read_all`` never has to wait for a gap. Subscribers wake at once on appends of
this store and poll every 0.1 s for other processes' commits.

Schema (version 1, in ``PRAGMA user_version``): ``events`` (``position INTEGER PRIMARY KEY``; unique
``id`` and ``(stream, version)``; an index on ``(category, position)``) and ``streams`` (the version of
each stream's last event and ``first_visible``, the first version not soft-deleted).
See docs/stores/sqlite.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl
from uuid import UUID, SafeUUID

from epoch.errors import ConfigurationError, DuplicateEventId, EpochError, StoreUnavailable, WrongExpectedVersion
from epoch.records import (
    ANY,
    NO_STREAM,
    AppendResult,
    ExpectedVersion,
    ExpectedVersionLike,
    NewEvent,
    RecordedEvent,
    category_of,
)
from epoch.stores._checks import (
    DEFAULT_MAX_EVENT_SIZE,
    check_categories,
    check_events,
    check_expected_version,
    check_read_bounds,
    check_stream_name,
    enforce_expected_version,
    is_replay,
)
from epoch.stores._import import runs_of

__all__ = ["SCHEMA_VERSION", "SQLiteEventStore"]

T = TypeVar("T")

SCHEMA_VERSION = 1
"""The schema this module writes, kept in ``PRAGMA user_version``."""

APPLICATION_ID = 0x45504F43  # "EPOC" in ``PRAGMA application_id``: marks the file as an epoch store
PAGE_SIZE = 1000  # rows per thread hop when reading
MAX_GROUP = 256  # appends committed together, at most
POLL_INTERVAL = 0.1  # seconds between a subscriber's checks for other processes' commits
_MAX_POSITION = 2**63 - 1
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

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

_COLUMNS = "stream, version, position, id, type, data, metadata, recorded_at"
_SELECT_STREAM = "SELECT version, first_visible FROM streams WHERE stream = ?"
_INSERT_EVENT = (
    "INSERT INTO events (position, stream, version, id, type, data, metadata, category, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_STREAM = (
    "INSERT INTO streams (stream, version) VALUES (?, ?) ON CONFLICT (stream) DO UPDATE SET version = excluded.version"
)
_LOG_PAGE = f"SELECT {_COLUMNS} FROM events WHERE position > ?1 AND position <= ?2 ORDER BY position LIMIT ?3"
_CATEGORY_ARM = f"SELECT {_COLUMNS} FROM events WHERE category = ?{{}} AND position > ?1 AND position <= ?2"
_STREAM_PAGE = (
    f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND version >= ? AND version <= ? ORDER BY version LIMIT ?"
)
_STREAM_PAGE_BACKWARDS = (
    f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND version >= ? AND version <= ? ORDER BY version DESC LIMIT ?"
)

# Job kinds. WRITE jobs run inside the group transaction; EXCLUSIVE ones in a transaction of their own;
# READ jobs outside any explicit transaction.
_WRITE, _EXCLUSIVE, _READ = 0, 1, 2
_Job = tuple[int, Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


# --- rows to records ------------------------------------------------------------------------------

_new_object = object.__new__
_set_attribute = object.__setattr__
_from_bytes = int.from_bytes
_from_timestamp = datetime.fromtimestamp
_UNKNOWN = SafeUUID.unknown


def _uuid(raw: bytes) -> UUID:
    # UUID(bytes=...) validates its arguments in Python; this is the same object for a third of the cost.
    value = _new_object(UUID)
    _set_attribute(value, "int", _from_bytes(raw, "big"))
    _set_attribute(value, "is_safe", _UNKNOWN)
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _instant(microseconds: int) -> datetime:
    # Exact: the float error (< 0.13 us for this century) is far below the rounding step.
    return _from_timestamp(microseconds / 1e6, UTC)


def _records(rows: Iterable[tuple[Any, ...]]) -> list[RecordedEvent]:
    records: list[RecordedEvent] = []
    append = records.append
    last_us = -1
    instant = _instant(0)
    for stream, version, position, raw_id, type_, data, metadata, recorded_at in rows:
        if recorded_at != last_us:  # the events of one append share their instant
            last_us = recorded_at
            instant = _from_timestamp(recorded_at / 1e6, UTC)
        event_id = _new_object(UUID)
        _set_attribute(event_id, "int", _from_bytes(raw_id, "big"))
        _set_attribute(event_id, "is_safe", _UNKNOWN)
        append(RecordedEvent(stream, version, position, event_id, type_, data, metadata, instant))
    return records


def _unavailable(exc: BaseException, timeout: float, stream: str | None = None) -> BaseException:
    """The epoch error for an exception raised by SQLite (others pass unchanged), chained to it."""
    if isinstance(exc, EpochError) or not isinstance(exc, sqlite3.Error):
        return exc
    text = str(exc)
    if "locked" in text or "busy" in text:
        text = f"the database is locked: another connection held it for more than {timeout:g} s ({exc})"
    else:
        text = f"SQLite failed: {exc}"
    error = StoreUnavailable(text, stream)
    error.__cause__ = exc
    return error


# --- work done on the writer thread ---------------------------------------------------------------


class _Transaction:
    """The state of one group transaction, shared by the appends in it."""

    __slots__ = ("connection", "head", "now")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.head: int = connection.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
        self.now = time.time_ns() // 1000


class _Replayed(Exception):  # a signal, not an error: roll back, then return ``result``
    def __init__(self, result: AppendResult) -> None:
        self.result = result


def _visible(row: tuple[int, int] | None) -> int | None:
    return None if row is None or row[0] < row[1] else row[0]


def _replayed(
    connection: sqlite3.Connection, stream: str, batch: Sequence[NewEvent], expected: ExpectedVersion | int
) -> AppendResult | None:
    """The original result if ``batch`` is already stored here (raises DuplicateEventId if elsewhere)."""
    found: dict[UUID, tuple[str, int, int, int]] = {}
    for start in range(0, len(batch), 500):
        chunk = [event.id.bytes for event in batch[start : start + 500]]
        sql = (
            f"SELECT id, stream, version, position, recorded_at FROM events WHERE id IN ({','.join('?' * len(chunk))})"
        )
        for raw_id, *place in connection.execute(sql, chunk).fetchall():
            found[_uuid(raw_id)] = tuple(place)
    if not is_replay(stream, batch, expected, {key: (row[0], row[1]) for key, row in found.items()}):
        return None
    last = found[batch[-1].id]
    positions = tuple(found[event.id][2] for event in batch)
    return AppendResult(stream, last[1], last[2], positions, _instant(last[3]))


def _append(tx: _Transaction, stream: str, batch: list[NewEvent], expected: ExpectedVersion | int) -> AppendResult:
    connection = tx.connection
    row = connection.execute(_SELECT_STREAM, (stream,)).fetchone()
    actual = _visible(row)
    try:
        enforce_expected_version(stream, expected, actual)
    except WrongExpectedVersion:
        if batch and (original := _replayed(connection, stream, batch, expected)) is not None:
            raise _Replayed(original) from None
        raise
    if not batch:
        if actual is None:
            return AppendResult(stream, None, 0, (), None)
        position, recorded_at = connection.execute(
            "SELECT position, recorded_at FROM events WHERE stream = ? AND version = ?", (stream, actual)
        ).fetchone()
        return AppendResult(stream, actual, position, (), _instant(recorded_at))
    first_position = tx.head + 1
    first_version = 0 if row is None else row[0] + 1
    category = category_of(stream)
    now = tx.now
    rows = [
        (first_position + i, stream, first_version + i, e.id.bytes, e.type, e.data, e.metadata, category, now)
        for i, e in enumerate(batch)
    ]
    try:
        if len(rows) == 1:
            connection.execute(_INSERT_EVENT, rows[0])
        else:
            connection.executemany(_INSERT_EVENT, rows)
    except sqlite3.IntegrityError as exc:
        # An id is stored already (BEGIN IMMEDIATE kept (stream, version) free). Drop this batch's rows
        # inserted before the failing one, so that they are not taken for stored ones.
        connection.execute("DELETE FROM events WHERE position >= ?", (first_position,))
        if (original := _replayed(connection, stream, batch, expected)) is not None:
            raise _Replayed(original) from None
        raise WrongExpectedVersion(stream, expected, actual) from exc
    last_version = first_version + len(rows) - 1
    connection.execute(_UPSERT_STREAM, (stream, last_version))
    tx.head = last_position = first_position + len(rows) - 1
    return AppendResult(
        stream, last_version, last_position, tuple(range(first_position, last_position + 1)), _instant(now)
    )


def _delete(tx: _Transaction, stream: str, expected: ExpectedVersion | int) -> None:
    connection = tx.connection
    row = connection.execute(_SELECT_STREAM, (stream,)).fetchone()
    enforce_expected_version(stream, expected, _visible(row))
    if row is not None:
        connection.execute("UPDATE streams SET first_visible = version + 1 WHERE stream = ?", (stream,))


def _import(
    connection: sqlite3.Connection, runs: list[list[RecordedEvent]], first_visible: Mapping[str, int]
) -> list[int]:
    position: int = connection.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
    positions: list[int] = []
    for run in runs:
        stream = run[0].stream
        row = connection.execute(_SELECT_STREAM, (stream,)).fetchone()
        actual = None if row is None else row[0]
        for offset, event in enumerate(run):
            if event.version != (0 if actual is None else actual + 1) + offset:
                raise WrongExpectedVersion(stream, event.version - 1 if event.version else NO_STREAM, actual)
        rows = []
        for event in run:
            position += 1
            positions.append(position)
            micros = (event.recorded_at - _EPOCH) // _MICROSECOND
            rows.append(
                (
                    position,
                    stream,
                    event.version,
                    event.id.bytes,
                    event.type,
                    event.data,
                    event.metadata,
                    category_of(stream),
                    micros,
                )
            )
        try:
            connection.executemany(_INSERT_EVENT, rows)
        except sqlite3.IntegrityError:  # an id is stored already: name the first one
            for event in run:
                place = connection.execute("SELECT stream, version FROM events WHERE id = ?", (event.id.bytes,))
                if (found := place.fetchone()) is not None:
                    raise DuplicateEventId(stream, event.id, found[0], found[1]) from None
            raise
        connection.execute(_UPSERT_STREAM, (stream, run[-1].version))
    for stream, version in first_visible.items():
        connection.execute("UPDATE streams SET first_visible = ? WHERE stream = ?", (version, stream))
    return positions


# --- work done on reader threads ------------------------------------------------------------------

_LogCursor = tuple[int, int | None, tuple[str, ...] | None]  # after, upto (None: the head now), categories
_StreamCursor = tuple[str, int | None, int | None, bool]  # stream, lowest, highest version, backwards


def _log_page(connection: sqlite3.Connection, cursor: _LogCursor, n: int) -> tuple[_LogCursor, list[RecordedEvent]]:
    after, upto, names = cursor
    if upto is None:
        upto = _head(connection)
    if names is None:
        rows = connection.execute(_LOG_PAGE, (after, upto, n)).fetchall()
    elif len(names) == 1:
        sql = _CATEGORY_ARM.format(4) + " ORDER BY position LIMIT ?3"
        rows = connection.execute(sql, (after, upto, n, names[0])).fetchall()
    else:  # a merge of one index range per category (SQLite runs UNION ALL ... ORDER BY as a merge)
        sql = " UNION ALL ".join(_CATEGORY_ARM.format(4 + i) for i in range(len(names))) + " ORDER BY 3 LIMIT ?3"
        rows = connection.execute(sql, (after, upto, n, *names)).fetchall()
    records = _records(rows)
    return (records[-1].position if records else after, upto, names), records


def _stream_page(
    connection: sqlite3.Connection, cursor: _StreamCursor, n: int
) -> tuple[_StreamCursor, list[RecordedEvent]]:
    stream, low, high, backwards = cursor
    if low is None or high is None:  # the first page: fix the bounds now, as a snapshot
        row = connection.execute(_SELECT_STREAM, (stream,)).fetchall()
        last = _visible(row[0]) if row else None
        if last is None:
            return cursor, []
        first_visible = row[0][1]
        if backwards:
            low, high = first_visible, last if high is None else min(high, last)
        else:
            low, high = first_visible if low is None else max(low, first_visible), last
    rows = connection.execute(_STREAM_PAGE_BACKWARDS if backwards else _STREAM_PAGE, (stream, low, high, n)).fetchall()
    records = _records(rows)
    if records:
        if backwards:
            high = records[-1].version - 1
        else:
            low = records[-1].version + 1
    return (stream, low, high, backwards), records


def _stream_version(connection: sqlite3.Connection, stream: str) -> int | None:
    row = connection.execute(_SELECT_STREAM, (stream,)).fetchall()
    return _visible(row[0]) if row else None


def _head(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT coalesce(max(position), 0) FROM events").fetchall()[0][0])


def _get_event(connection: sqlite3.Connection, raw_id: bytes) -> RecordedEvent | None:
    records = _records(connection.execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (raw_id,)).fetchall())
    return records[0] if records else None


# --- the store ------------------------------------------------------------------------------------


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the transaction is lost anyway; the caller reports why
            connection.execute("ROLLBACK")


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _wake(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


def _post(
    loop: asyncio.AbstractEventLoop, outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_settle, outcomes)


def _wake_all(waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop]) -> None:
    for future, loop in waiters.items():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_wake, future)


class SQLiteEventStore:
    """An event store in one SQLite file (or in memory), safe for many threads, tasks and OS processes.

    ``path`` is a file name, or ``":memory:"`` for a private in-memory database (then one connection on
    one thread does all the work). ``synchronous`` is SQLite's durability level: ``NORMAL`` (the default:
    a power loss may lose the last commits, never corrupt or split a batch) or ``FULL`` (fsync on every
    commit). ``timeout`` is how long a writer waits for another process's write lock before raising
    :class:`~epoch.errors.StoreUnavailable`. ``readers`` is the number of reader threads.

    Nothing is opened until the first call; use ``async with`` or call :meth:`close` to stop the threads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "epoch.db",
        *,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        synchronous: str = "NORMAL",
        timeout: float = 10.0,
        readers: int = 4,
    ) -> None:
        path = os.fspath(path)
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {synchronous!r}")
        if not isinstance(max_event_size, int) or max_event_size < 1:
            raise ConfigurationError(f"max_event_size must be a positive int, not {max_event_size!r}")
        if not timeout >= 0:
            raise ConfigurationError(f"timeout must be >= 0 seconds, not {timeout!r}")
        if not isinstance(readers, int) or readers < 1:
            raise ConfigurationError(f"readers must be an int >= 1, not {readers!r}")
        self.in_memory = path in ("", ":memory:")
        self.path = ":memory:" if self.in_memory else os.path.abspath(path)
        self.max_event_size = max_event_size
        self.synchronous = synchronous.upper()
        self.timeout = float(timeout)
        self.readers = 0 if self.in_memory else readers
        self._lock = threading.Lock()
        self._writes: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # In memory there is one connection, so reads queue behind writes on the writer thread.
        self._reads = self._writes if self.in_memory else queue.SimpleQueue()
        self._started: concurrent.futures.Future[None] | None = None
        self._stopped: concurrent.futures.Future[None] | None = None
        self._ready = False
        self._closed = False
        self._commits = 0  # bumped by the writer after each commit; subscribers compare it
        self._waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}

    @classmethod
    async def from_url(cls, url: str) -> SQLiteEventStore:
        """Open ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://`` (in memory).

        The file and its schema are created when missing.
        Query parameters: ``max_event_size`` (bytes), ``synchronous`` (``OFF``, ``NORMAL``, ``FULL``,
        ``EXTRA``), ``timeout`` (seconds a writer waits for the lock), ``readers`` (threads).
        """
        path, options = _parse_url(url)
        store = cls(path, **options)
        await store._start()  # fail here, not at the first call, on a bad path or a foreign file
        return store

    # -- plumbing -----------------------------------------------------------------------------------

    async def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            if self._started is None:
                self._started = concurrent.futures.Future()
                self._stopped = concurrent.futures.Future()
                threading.Thread(
                    target=self._serve_writes,
                    args=(self._started, self._stopped),
                    name=f"epoch-sqlite-writer:{self.path}",
                    daemon=True,
                ).start()
            started = self._started
        await asyncio.wrap_future(started)

    def _submit(
        self, jobs: queue.SimpleQueue[_Job | None], kind: int, fn: Callable[..., T], args: tuple[Any, ...]
    ) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            jobs.put((kind, fn, args, loop, future))
        return future

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._ready:
            await self._start()
        return await self._submit(self._writes, _WRITE, fn, args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._ready:
            await self._start()
        return await self._submit(self._reads, _READ, fn, args)

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=True, cached_statements=256
        )
        try:
            if writer:
                connection.execute(f"PRAGMA synchronous = {self.synchronous}")
            else:
                connection.execute("PRAGMA query_only = ON")
        except BaseException:
            connection.close()
            raise
        return connection

    def _create_schema(self, connection: sqlite3.Connection) -> None:
        if not self.in_memory:
            connection.execute("PRAGMA journal_mode = WAL").fetchall()
        for _ in range(2):  # read without a lock first: an up-to-date file needs no write lock
            version, application = (
                connection.execute(f"PRAGMA {name}").fetchone()[0] for name in ("user_version", "application_id")
            )
            if application not in (0, APPLICATION_ID):
                raise ConfigurationError(f"{self.path} is not an epoch event store (application_id {application:#x})")
            if version > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"{self.path} has schema version {version}, newer than this epoch ({SCHEMA_VERSION}): upgrade epoch"
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

    def _serve_writes(self, started: concurrent.futures.Future[None], stopped: concurrent.futures.Future[None]) -> None:
        connection: sqlite3.Connection | None = None
        readers: list[threading.Thread] = []
        try:
            try:
                connection = self._connect(writer=True)
                self._create_schema(connection)
                for index in range(self.readers):
                    ready: concurrent.futures.Future[None] = concurrent.futures.Future()
                    reader = threading.Thread(
                        target=self._serve_reads,
                        args=(ready,),
                        name=f"epoch-sqlite-reader-{index}:{self.path}",
                        daemon=True,
                    )
                    reader.start()
                    readers.append(reader)
                    ready.result()
            except BaseException as exc:
                with self._lock:
                    self._started = None  # the next call tries again
                started.set_exception(_unavailable(exc, self.timeout))
                return
            self._ready = True
            started.set_result(None)
            self._writer_loop(connection)
        finally:
            for _ in readers:
                self._reads.put(None)
            for reader in readers:
                reader.join()
            if connection is not None:
                connection.close()
            stopped.set_result(None)

    def _writer_loop(self, connection: sqlite3.Connection) -> None:
        jobs = self._writes
        while True:
            batch: list[_Job | None] = [jobs.get()]
            while len(batch) < MAX_GROUP and batch[-1] is not None:
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is None
            self._run_batch(connection, [job for job in batch if job is not None])
            del batch  # hold no caller's loop or future while waiting for work
            if stop:
                return

    def _run_batch(self, connection: sqlite3.Connection, batch: list[_Job]) -> None:
        start = 0
        while start < len(batch):  # consecutive WRITE jobs share one transaction
            end = start + 1
            if batch[start][0] == _WRITE:
                while end < len(batch) and batch[end][0] == _WRITE:
                    end += 1
                self._commit_group(connection, batch[start:end])
            else:
                self._run_alone(connection, batch[start])
            start = end

    def _commit_group(self, connection: sqlite3.Connection, jobs: list[_Job]) -> None:
        """Run appends (WRITE jobs) in one transaction, each in a SAVEPOINT of its own when there are several."""
        jobs = [job for job in jobs if not job[4].cancelled()]
        if not jobs:
            return
        alone = len(jobs) == 1
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            tx = _Transaction(connection)
            for job in jobs:
                outcomes.append(self._apply(tx, job, alone))
            if connection.in_transaction:
                connection.execute("COMMIT")
        except sqlite3.Error as exc:  # the transaction is lost: nothing of it was committed
            _rollback(connection)
            failed = {id(job): error for job, _, error in outcomes if error is not None}
            self._finish(
                [(job, None, failed.get(id(job)) or _unavailable(exc, self.timeout, job[2][0])) for job in jobs]
            )
            return
        self._committed()
        self._finish(outcomes)

    def _apply(self, tx: _Transaction, job: _Job, alone: bool) -> tuple[_Job, Any, BaseException | None]:
        connection = tx.connection
        head = tx.head
        if not alone:
            connection.execute("SAVEPOINT append")
        try:
            result = job[1](tx, *job[2])
        except Exception as exc:
            if not connection.in_transaction:  # SQLite gave up the whole transaction (e.g. disk full)
                raise
            tx.head = head
            connection.execute("ROLLBACK" if alone else "ROLLBACK TO append")
            if not alone:
                connection.execute("RELEASE append")
            if isinstance(exc, _Replayed):
                return job, exc.result, None
            return job, None, _unavailable(exc, self.timeout, job[2][0])
        if not alone:
            connection.execute("RELEASE append")
        return job, result, None

    def _run_alone(self, connection: sqlite3.Connection, job: _Job) -> None:
        kind, fn, args, _, future = job
        if future.cancelled():
            return
        try:
            result = fn(connection, *args) if kind == _READ else self._run_exclusive(connection, fn)
        except Exception as exc:  # run_in_transaction's own errors are mapped already; its fn's pass unchanged
            self._finish([(job, None, _unavailable(exc, self.timeout) if kind == _READ else exc)])
        else:
            self._finish([(job, result, None)])

    def _run_exclusive(self, connection: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _unavailable(exc, self.timeout) from exc
        try:
            result = fn(connection)
        except BaseException:
            _rollback(connection)
            raise
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(connection)
            raise _unavailable(exc, self.timeout) from exc
        self._committed()
        return result

    def _committed(self) -> None:
        self._commits += 1
        if self._waiters:
            with self._lock:
                waiters, self._waiters = self._waiters, {}
            _wake_all(waiters)

    @staticmethod
    def _finish(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        for job, result, error in outcomes:
            by_loop.setdefault(job[3], []).append((job[4], result, error))
        for loop, settled in by_loop.items():
            _post(loop, settled)

    def _serve_reads(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            connection = self._connect(writer=False)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        jobs = self._reads
        try:
            while (job := jobs.get()) is not None:
                self._run_read(connection, job)
                del job  # hold no caller's loop or future while waiting for work
        finally:
            connection.close()

    def _run_read(self, connection: sqlite3.Connection, job: _Job) -> None:
        _, fn, args, loop, future = job
        if future.cancelled():
            return
        try:
            result = fn(connection, *args)
        except Exception as exc:
            _post(loop, [(future, None, _unavailable(exc, self.timeout))])
        else:
            _post(loop, [(future, result, None)])

    # -- the EventStore protocol --------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Iterable[NewEvent],
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        """Append ``events`` to ``stream`` atomically if ``expected_version`` holds.

        Concurrent appends (from any task or thread) are committed together, each atomic on its own.
        Raises ``WrongExpectedVersion``, ``DuplicateEventId``, ``InvalidStreamName``,
        ``InvalidExpectedVersion``, ``InvalidEvent``, or ``StoreUnavailable`` (e.g. the write lock was
        held by another process for longer than ``timeout``).
        """
        check_stream_name(stream)
        expected = check_expected_version(stream, expected_version)
        batch = check_events(stream, events, self.max_event_size)
        return await self._write(_append, stream, batch, expected)

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield a stream's events from ``from_version`` (inclusive), as they were when reading began."""

        def start() -> _StreamCursor:
            check_stream_name(stream)
            check_read_bounds(stream, from_version, limit)
            return (stream, None, from_version, True) if backwards else (stream, from_version, None, False)

        return self._scan(start, _stream_page, limit, follow=False)

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield the events with ``position > after`` committed when reading began, in position order."""

        def start() -> _LogCursor:
            check_read_bounds("$all", after, limit)
            return after, None, _unique(check_categories(categories))

        return self._scan(start, _log_page, limit, follow=False)

    def subscribe(
        self,
        after: int = 0,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield the events after ``after``, then each new one as it commits; never ends on its own.

        Appends through this store wake the subscription at once; other processes' are seen within
        ``POLL_INTERVAL`` (0.1 s). ``aclose()`` releases it. Raises ``StoreUnavailable`` once the store closes.
        """

        def start() -> _LogCursor:
            check_read_bounds("$all", after, None)
            return after, _MAX_POSITION, _unique(check_categories(categories))

        return self._scan(start, _log_page, None, follow=True)

    async def stream_version(self, stream: str) -> int | None:
        """The version of the stream's last event, or ``None`` if it is empty, unwritten or deleted."""
        check_stream_name(stream)
        return await self._read(_stream_version, stream)

    async def head_position(self) -> int:
        """The position of the last committed event, 0 when the store is empty."""
        return await self._read(_head)

    async def get_event(self, id: UUID) -> RecordedEvent | None:
        """The stored event with this id (also when its stream is deleted), or ``None``."""
        return await self._read(_get_event, id.bytes if isinstance(id, UUID) else b"")

    async def delete_stream(self, stream: str, expected_version: ExpectedVersionLike = ANY) -> None:
        """Soft-delete a stream: it reads as empty; a later append continues its versions; ``read_all`` keeps it."""
        check_stream_name(stream)
        expected = check_expected_version(stream, expected_version)
        await self._write(_delete, stream, expected)

    async def run_in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread inside one ``BEGIN IMMEDIATE ... COMMIT``.

        For work that must commit atomically with nothing else in between, such as a projection
        writing its read model and its checkpoint together (exactly-once processing). ``fn`` runs on
        another thread while every other write of this store waits: it must be quick, must not wait for
        this store's own writes (they queue behind it), and must neither commit nor roll back itself. When it raises, the transaction is rolled back and its exception propagates
        unchanged; a failure to begin or commit raises ``StoreUnavailable``.
        """
        if not self._ready:
            await self._start()
        return await self._submit(self._writes, _EXCLUSIVE, fn, ())

    async def import_events(
        self, events: Sequence[RecordedEvent], first_visible: Mapping[str, int] | None = None
    ) -> list[int]:
        """Append already-recorded events (e.g. from another store) in one transaction, for ``epoch copy``.

        Each event lands at exactly its ``version`` (a stream's versions must continue where it ends) and
        keeps its id, type, data, metadata and ``recorded_at``; positions are this store's, in the given
        order, and are returned. ``first_visible`` then soft-deletes each named stream below that version.
        Raises ``WrongExpectedVersion`` or ``DuplicateEventId`` and writes nothing when an event does not fit.
        """
        runs = runs_of(events, self.max_event_size)
        deletes = dict(first_visible or {})
        return await self.run_in_transaction(lambda connection: _import(connection, runs, deletes))

    async def close(self) -> None:
        """Finish queued work, stop the threads and close the connections. Idempotent.

        Open subscriptions then raise ``StoreUnavailable``; later calls too.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._started is not None:
                    self._writes.put(None)
            waiters, self._waiters = self._waiters, {}
            stopped = self._stopped
        _wake_all(waiters)
        if stopped is not None:
            await asyncio.wrap_future(stopped)

    async def __aenter__(self) -> SQLiteEventStore:
        if not self._ready:
            await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- reading helpers ----------------------------------------------------------------------------

    async def _scan(
        self,
        start: Callable[[], Any],
        page: Callable[[sqlite3.Connection, Any, int], tuple[Any, list[RecordedEvent]]],
        limit: int | None,
        follow: bool,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield the events of successive pages, fetching the next page while the caller consumes one.

        ``start()`` checks the arguments (when iteration begins, as for any async generator) and returns
        the first cursor; ``page(connection, cursor, size)`` returns the next cursor and up to ``size``
        events. With ``follow``, a short page means "caught up": wait for a commit, then read on.
        """
        cursor = start()
        if not self._ready:
            await self._start()
        if limit == 0:
            if self._closed:
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            return
        size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit)
        seen = self._commits  # read before each query: a later commit may be missing from its result
        pending: asyncio.Future[tuple[Any, list[RecordedEvent]]] | None = self._submit(
            self._reads, _READ, page, (cursor, size)
        )
        try:
            while pending is not None:
                cursor, events = await pending
                pending = None
                if limit is not None:
                    limit -= len(events)
                if len(events) == size and limit != 0:
                    size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit)
                    seen = self._commits
                    pending = self._submit(self._reads, _READ, page, (cursor, size))
                for event in events:
                    yield event
                if pending is None and follow:
                    await self._wait_for_commit(seen)
                    seen = self._commits
                    pending = self._submit(self._reads, _READ, page, (cursor, size))
        finally:
            if pending is not None:
                pending.cancel()

    async def _wait_for_commit(self, seen: int) -> None:
        """Return after a commit by this store since ``seen`` was read, or after ``POLL_INTERVAL``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            self._waiters[future] = loop
        try:
            if self._commits != seen:
                return
            timer = loop.call_later(POLL_INTERVAL, _wake, future)
            try:
                await future
            finally:
                timer.cancel()
        finally:
            with self._lock:
                self._waiters.pop(future, None)


def _unique(names: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return None if names is None else tuple(dict.fromkeys(names))


def _parse_url(url: str) -> tuple[str, dict[str, Any]]:
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower().partition("+")[0] != "sqlite":  # sqlite+pysqlite:// etc. too
        raise ConfigurationError(f"not a SQLite URL: {url!r} (expected sqlite:///path.db or sqlite://)")
    rest, _, query = rest.partition("?")
    if rest and not rest.startswith("/"):
        raise ConfigurationError(
            f"a SQLite URL names no host: {url!r} (use sqlite:///relative.db or sqlite:////abs.db)"
        )
    options: dict[str, Any] = {}
    try:
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
            if key in ("max_event_size", "readers"):
                options[key] = int(value)
            elif key == "timeout":
                options[key] = float(value)
            elif key == "synchronous":
                options[key] = value
            else:
                raise ConfigurationError(
                    f"unknown SQLite URL parameter {key!r} in {url!r} (use max_event_size, synchronous, timeout, readers)"
                )
    except ValueError as exc:
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(f"bad SQLite URL parameters in {url!r}: {exc}") from exc
    return rest[1:] or ":memory:", options
