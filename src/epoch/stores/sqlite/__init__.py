"""The embedded default store: one SQLite file in WAL mode, no server.

Threads. SQLite calls block, so only short ones run on the event loop: small reads, and an append made
while the store and the loop are idle (``here``). One writer thread owns the only writing connection
(lent to the callers' threads under a lock); a few reader threads each own a read-only connection
(``threads``). The writer commits every append waiting in its queue together, in one transaction, and
takes a SAVEPOINT per append only for a group in which one fails (group commit, ``writer``).

Processes. ``BEGIN IMMEDIATE`` takes SQLite's write lock before the expected-version check, so the check
and the insert are atomic across threads and OS processes; a writer waits up to ``timeout`` seconds for
the lock, then gets :class:`~epoch.errors.StoreUnavailable`. Positions are assigned under that lock, so
they commit in order: ``read_all`` never has to wait for a gap. Subscribers wake at once on appends of
this store and poll every 0.1 s for other processes' commits.

Schema (in ``PRAGMA user_version``; ``schema``, which holds the migrations): ``events``, ``streams``,
the tag index ``event_tags`` (``tags``) and ``snapshots`` (``snapshots``). The work on a connection is in
``work``, and rows are made records in ``rows``; queries by type and tag and the conditional and
multi-stream appends in ``dcb``; deletes, truncation, limits and scavenging in ``lifecycle``; the one
table from driver errors to epoch errors in ``errors``; futures across the loop and the threads, and the
async SQL bridge of :meth:`transaction`, in ``bridge``. See docs/stores/sqlite.md.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from epoch.errors import ConfigurationError
from epoch.queries import AppendCondition, Query
from epoch.records import ANY, AppendResult, ExpectedVersionLike, NewEvent, RecordedEvent
from epoch.stores._base import StoreLifecycle
from epoch.stores._checks import (
    DEFAULT_MAX_EVENT_SIZE,
    GLOBAL_LOG,
    MAX_INT64,
    check_append,
    check_expected_version,
    check_max_event_size,
    check_read,
    check_stream_name,
    clamp64,
    runs_of,
)
from epoch.stores._dcb import ALL_OPERATIONS, check_condition, check_many, check_query_read
from epoch.stores._lifecycle import StreamLifecycle, check_hard, check_limits, check_truncate
from epoch.stores._sql import Dialect, SQLStore, SupportsImport
from epoch.stores._sql_keys import SQLKeys
from epoch.stores._urls import Parser, flag, integer, only_options, seconds, text
from epoch.stores.sqlite import dcb, lifecycle, work
from epoch.stores.sqlite.bridge import SQLiteTransaction, transaction_on
from epoch.stores.sqlite.schema import APPLICATION_ID as APPLICATION_ID
from epoch.stores.sqlite.schema import SCHEMA_VERSION, SYNCHRONOUS
from epoch.stores.sqlite.snapshots import SQLiteQuerySnapshots, SQLiteSnapshots
from epoch.stores.sqlite.threads import MAX_GROUP as MAX_GROUP
from epoch.stores.sqlite.threads import PAGE_SIZE as PAGE_SIZE
from epoch.stores.sqlite.threads import POLL_INTERVAL as POLL_INTERVAL
from epoch.stores.sqlite.threads import Workers

__all__ = ["SCHEMA_VERSION", "SQLiteEventStore"]

T = TypeVar("T")

_MAX_READERS = 64  # reader threads: more only cost memory (WAL readers never wait for each other)


class SQLiteEventStore(StoreLifecycle, SQLStore, SupportsImport, SQLiteSnapshots, SQLiteQuerySnapshots, SQLKeys):
    """An event store in one SQLite file (or in memory), safe for many threads, tasks and OS processes.

    ``path`` is a file name, or ``":memory:"`` for a private in-memory database (then one connection on
    one thread does all the work). ``synchronous`` is SQLite's durability level: ``NORMAL`` (the default:
    a power loss may lose the last commits, never corrupt or split a batch) or ``FULL`` (fsync on every
    commit). ``timeout`` is how long a writer waits for another process's write lock before raising
    :class:`~epoch.errors.StoreUnavailable`. ``readers`` is the number of reader threads.
    ``inline_writes`` (on by default): an append made while the store and the event loop are idle runs on
    the caller's thread, blocking the loop for that one commit (never for a lock) instead of paying two
    thread hand-offs; off, every append goes through the writer thread (see ``sqlite.here``).

    Nothing is opened until the first call; use ``async with`` or call :meth:`close` to stop the threads.
    """

    dialect: ClassVar[Dialect] = "sqlite"

    detects_duplicate_ids_across_streams = True
    """Guarantee 5 in full: every stored id is in an index (``epoch.testing.contract_ids``)."""

    boundary_operations = ALL_OPERATIONS
    """``read_query`` from the tag and type indexes; conditions and ``append_many`` in the writer's transaction."""

    erases_at_once = True
    """Hard deletes and truncations erase the events at once (``epoch.testing.contract_erasure``)."""

    def __init__(
        self,
        path: str | os.PathLike[str] = "epoch.db",
        *,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        synchronous: str = "NORMAL",
        timeout: float = 10.0,
        readers: int = 4,
        inline_writes: bool = True,
    ) -> None:
        path = os.fspath(path)
        if synchronous.upper() not in SYNCHRONOUS:
            raise ConfigurationError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}")
        check_max_event_size(max_event_size)
        if not timeout >= 0:
            raise ConfigurationError(f"timeout must be >= 0 seconds, not {timeout!r}")
        if not isinstance(readers, int) or isinstance(readers, bool) or not 1 <= readers <= _MAX_READERS:
            raise ConfigurationError(f"readers must be an int from 1 to {_MAX_READERS}, not {readers!r}")
        if not isinstance(inline_writes, bool):
            raise ConfigurationError(f"inline_writes must be True or False, not {inline_writes!r}")
        self.in_memory = path in ("", ":memory:")
        self.path = ":memory:" if self.in_memory else os.path.abspath(path)
        self.max_event_size = max_event_size
        self.synchronous = synchronous.upper()
        self.timeout = float(timeout)
        self.readers = 0 if self.in_memory else readers
        self._workers = Workers(
            self.path,
            in_memory=self.in_memory,
            synchronous=self.synchronous,
            timeout=self.timeout,
            readers=self.readers,
            inline_writes=inline_writes,
        )

    @classmethod
    async def from_url(cls, url: str) -> SQLiteEventStore:
        """Open ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://`` (in memory).

        The file and its schema are created when missing.
        Query parameters: ``max_event_size`` (bytes), ``synchronous`` (``OFF``, ``NORMAL``, ``FULL``,
        ``EXTRA``), ``timeout`` (seconds a writer waits for the lock), ``readers`` (threads),
        ``inline_writes`` (``true``/``false``).
        """
        path, options = _parse_url(url)
        store = cls(path, **options)
        await store._workers.start()  # fail here, not at the first call, on a bad path or a foreign file
        return store

    @staticmethod
    def path_of(url: str) -> str:
        """The file a ``sqlite://`` URL names, as :meth:`from_url` opens it (``":memory:"`` for ``sqlite://``).

        Lets a caller that only reads (``epoch streams``) check that the file exists, rather than have
        :meth:`from_url` create it. Raises ``ConfigurationError`` for a malformed URL.
        """
        return _parse_url(url)[0]

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
        ``InvalidExpectedVersion``, ``InvalidEvent``, ``StoreUnavailable`` (e.g. the write lock was
        held by another process for longer than ``timeout``; ``StoreFull`` when the disk is full) or
        ``StoreError`` (a damaged or read-only file: retrying cannot help).
        """
        stream, batch, expected = check_append(stream, events, expected_version, self.max_event_size)
        return await self._workers.write(work.append, stream, batch, expected)

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield a stream's events from ``from_version`` (inclusive), as they were when reading began."""

        def start() -> work.StreamCursor:
            check_read(stream, from_version, limit, backwards=backwards)
            start = None if from_version is None else clamp64(from_version)  # SQLite binds 64 bits at most
            if backwards:
                return work.StreamCursor(stream, None, start, True)
            return work.StreamCursor(stream, start, None, False)

        return self._workers.scan(start, work.stream_page, limit, follow=False)

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield the events with ``position > after`` committed when reading began, in position order."""

        def start() -> work.LogCursor:
            read = check_read(GLOBAL_LOG, after, limit, categories=categories)
            return work.LogCursor(clamp64(after), None, read.categories)

        return self._workers.scan(start, work.log_page, limit, follow=False)

    def subscribe(
        self,
        after: int = 0,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield the events after ``after``, then each new one as it commits; never ends on its own.

        Appends through this store wake the subscription at once; other processes' are seen within
        ``POLL_INTERVAL`` (0.1 s). ``aclose()`` releases it. Raises ``StoreUnavailable`` once the store closes.
        """

        def start() -> work.LogCursor:
            read = check_read(GLOBAL_LOG, after, categories=categories)
            return work.LogCursor(clamp64(after), MAX_INT64, read.categories)

        return self._workers.scan(start, work.log_page, None, follow=True)

    def read_query(self, query: Query, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        """Yield the events matching ``query`` after ``after``, committed when reading began, in position order.

        Served by the indexes ``event_tags (tag, position)`` and ``events_type (type, position)``, a page
        at a time, as ``read_all`` (see ``dcb``).
        """

        def start() -> dcb.QueryCursor:
            return dcb.QueryCursor(check_query_read(query, after, limit), clamp64(after), None)

        return self._workers.scan(start, dcb.query_page, limit, follow=False)

    async def append_with_condition(
        self,
        stream: str,
        events: Iterable[NewEvent],
        condition: AppendCondition,
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        """Append atomically unless an event matching the condition's query has a position after
        ``condition.after`` (``AppendConditionFailed``); checked on the writer, under the file's write lock,
        so it holds against every thread and process. Raises what :meth:`append` raises, too."""
        stream, batch, expected = check_append(stream, events, expected_version, self.max_event_size)
        condition = check_condition(condition)
        return await self._workers.write(dcb.append_if, stream, batch, expected, condition)

    async def append_many(
        self, appends: Iterable[tuple[str, Iterable[NewEvent], ExpectedVersionLike]]
    ) -> list[AppendResult]:
        """Append to several streams in one transaction, all or nothing; results in input order.

        A failing guard raises ``WrongExpectedVersion`` naming its stream; raises what :meth:`append` raises.
        """
        checked = check_many(appends, self.max_event_size)
        first = checked[0].stream if checked else ""
        results: list[AppendResult] = await self._workers.write(dcb.append_many, first, checked)
        return results

    async def stream_version(self, stream: str) -> int | None:
        """The version of the stream's last event, or ``None`` if it is empty, unwritten or deleted."""
        check_stream_name(stream)
        return await self._workers.read(work.stream_version, stream)

    async def head_position(self) -> int:
        """The position of the last committed event, 0 when the store is empty."""
        return await self._workers.read(work.head)

    async def get_event(self, id: UUID, stream: str | None = None) -> RecordedEvent | None:
        """The stored event with this id (also when its stream is deleted), or ``None``; see the protocol."""
        if stream is not None:
            check_stream_name(stream)
        found = await self._workers.read(work.get_event, id.bytes if isinstance(id, UUID) else b"")
        return None if found is None or (stream is not None and found.stream != stream) else found

    async def delete_stream(self, stream: str, expected_version: ExpectedVersionLike = ANY, hard: bool = False) -> None:
        """Soft-delete a stream (it reads as empty; a later append continues its versions; ``read_all``
        keeps it), or with ``hard=True`` tombstone it: its events are erased at once (see ``lifecycle``)."""
        check_stream_name(stream)
        expected = check_expected_version(stream, expected_version)
        await self._workers.write(lifecycle.delete, stream, expected, check_hard(stream, hard))

    async def truncate_before(self, stream: str, version: int) -> None:
        """Erase the stream's events below ``version`` at once; see the protocol."""
        stream, version = check_truncate(stream, version)
        await self._workers.write(lifecycle.truncate, stream, clamp64(version))

    async def set_stream_limits(
        self, stream: str, max_count: int | None = None, max_age: timedelta | None = None
    ) -> None:
        """Limit the stream to its last ``max_count`` events and those younger than ``max_age``; see the protocol."""
        stream, max_count, max_age = check_limits(stream, max_count, max_age)
        await self._workers.write(lifecycle.set_limits, stream, max_count, max_age)

    async def scavenge(self, stream: str | None = None) -> int:
        """Erase the events the limits exclude (of ``stream``, or of every stream); the number erased."""
        if stream is not None:
            check_stream_name(stream)
        return await self._workers.write(lifecycle.scavenge, stream or "", stream)

    async def append_guarded(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike, first_version: int
    ) -> AppendResult:
        """``append``, also refused when the stream's first visible version moved past ``first_version``
        (the check of a cached ``CommandHandler``, made on the row the append reads anyway)."""
        stream, batch, expected = check_append(stream, events, expected_version, self.max_event_size)
        return await self._workers.write(lifecycle.append_guarded, stream, batch, expected, first_version)

    async def lifecycle_states(self) -> AsyncIterator[StreamLifecycle]:
        """Every stream with a lifecycle state (deleted, truncated or limited), for ``epoch copy``."""
        for state in await self._workers.read(lifecycle.lifecycle_states):
            yield state

    async def run_in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread inside one ``BEGIN IMMEDIATE ... COMMIT``.

        For work that must commit atomically with nothing else in between, such as a projection
        writing its read model and its checkpoint together (exactly-once processing). ``fn`` runs on
        another thread while every other write of this store waits: it must be quick, must not wait for
        this store's own writes (they queue behind it), and must neither commit nor roll back itself.
        When it raises, the transaction is rolled back and its exception propagates unchanged; a failure
        to begin or commit raises ``StoreUnavailable`` (or ``StoreError`` for a damaged or read-only file).
        """
        return await self._workers.exclusive(fn)

    def transaction(self) -> AbstractAsyncContextManager[SQLiteTransaction]:
        """An async transaction on the writer (``?``-style SQL via ``await tx.execute(sql, params)``).

        Committed when the block ends, rolled back when it raises or is cancelled; every other write of
        this store waits for it, so never await this store's own appends inside the block.
        """
        return transaction_on(self.run_in_transaction)

    async def import_events(
        self, events: Sequence[RecordedEvent], first_visible: Mapping[str, int] | None = None
    ) -> list[int]:
        """Append already-recorded events (e.g. from another store) in one transaction, for ``epoch copy``.

        Each event lands at exactly its ``version`` (a stream's versions must continue where it ends) and
        keeps its id, type, data, metadata and ``recorded_at``; positions are this store's, in the given
        order, and are returned. ``first_visible`` then soft-deletes each named stream below that version.
        Raises ``WrongExpectedVersion`` or ``DuplicateEventId`` and writes nothing when an event does not fit;
        the database's own failures raise as for :meth:`append` (``StoreFull``, ``StoreUnavailable``, ...).
        """
        runs = runs_of(events, self.max_event_size)
        deletes = dict(first_visible or {})
        return await self._workers.exclusive(
            lambda connection: work.import_runs(connection, runs, deletes), store_work=True
        )

    async def close(self) -> None:
        """Finish queued work, stop the threads and close the connections. Idempotent.

        Open subscriptions then raise ``StoreUnavailable``; later calls too.
        """
        await self._workers.close()

    async def _enter(self) -> None:
        await self._workers.start()

    @property
    def _snapshot_workers(self) -> Workers:
        return self._workers


def _parse_url(url: str) -> tuple[str, dict[str, Any]]:
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower().partition("+")[0] != "sqlite":  # sqlite+pysqlite:// etc. too
        raise ConfigurationError(f"not a SQLite URL: {url!r} (expected sqlite:///path.db or sqlite://)")
    rest, _, query = rest.partition("?")
    if rest and not rest.startswith("/"):
        raise ConfigurationError(
            f"a SQLite URL names no host: {url!r} (use sqlite:///relative.db or sqlite:////abs.db)"
        )
    return rest[1:] or ":memory:", only_options(url, query, _OPTIONS, "SQLite")


_OPTIONS: dict[str, Parser] = {
    "max_event_size": integer,
    "synchronous": text,
    "timeout": seconds,
    "readers": integer,
    "inline_writes": flag,
}
"""The SQLite URL's parameters; the store checks ``max_event_size``, ``synchronous`` and ``readers``."""
