"""The ``EventStore`` protocol every backend implements, and :func:`open_store` to get one from a URL.

Backends live in ``epoch.stores.<name>`` and import their drivers lazily; a missing driver raises
:class:`~epoch.errors.MissingDependency` naming the extra to install.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterable
from datetime import timedelta
from types import TracebackType
from typing import Any, Protocol
from uuid import UUID

from epoch.errors import ConfigurationError
from epoch.queries import AppendCondition, Query
from epoch.records import ANY, AppendResult, ExpectedVersionLike, NewEvent, RecordedEvent

__all__ = [
    "DEFAULT_STORE_URL",
    "Dialect",
    "EventStore",
    "PostgresTransaction",
    "QuerySnapshot",
    "QuerySnapshotStatus",
    "SQLStore",
    "Snapshot",
    "SnapshotStatus",
    "StoreOpener",
    "SubjectKey",
    "SupportsImport",
    "SupportsKeys",
    "SupportsQuerySnapshots",
    "SupportsSnapshots",
    "Transaction",
    "confirmed_read_of",
    "guarded_append_of",
    "importer_of",
    "keys_of",
    "open_store",
    "query_snapshot_store",
    "snapshot_store",
    "sql_store",
]

DEFAULT_STORE_URL = "sqlite:///epoch.db"


class EventStore(Protocol):
    """An append-only log of streams with a store-wide order.

    Guarantees (checked for every backend by :class:`epoch.testing.EventStoreContract`):

    1. ``append`` is atomic: all events of a call are written, or none.
    2. ``expected_version`` is enforced under concurrency: one of N racing appends wins.
    3. Stream versions are dense from 0 and never reused (also across a soft delete).
    4. ``read_all``/``subscribe`` deliver every committed event exactly once, in position order (events
       erased by a hard delete, a truncation or a scavenge are skipped from then on).
    5. Appending the same event ids again at the same place is a no-op returning the same result;
       the same id anywhere else raises ``DuplicateEventId``.
    6. Bytes round-trip exactly; ``recorded_at`` is UTC.
    7. A crash leaves whole batches or none.
    8. Bad input raises an ``EpochError`` and stores nothing.
    10. Within a stream, ``read_all``/``subscribe`` deliver events in version order, whatever the guards.
    11. ``categories`` with repeated names delivers each event once; ``categories=[]`` delivers nothing.
    13. Numbers beyond 64 bits are a wrong guard, an invalid version or an empty read: never a driver error.
    """

    async def append(
        self,
        stream: str,
        events: Iterable[NewEvent],
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        """Append ``events`` to ``stream`` atomically if ``expected_version`` holds.

        Raises ``WrongExpectedVersion`` (with the actual version), ``DuplicateEventId``,
        ``InvalidStreamName``, ``InvalidExpectedVersion``, ``InvalidEvent``, ``StoreUnavailable`` or
        ``StoreError``. An int ``expected_version`` of any size is a version: one no stream can reach
        (beyond 64 bits) raises ``WrongExpectedVersion`` with the actual version, like any wrong one;
        a negative one, a bool or a non-int raises ``InvalidExpectedVersion`` (guarantee 13).
        """
        ...

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield a stream's events from ``from_version`` (inclusive; ``None``: first, or last backwards).

        A never-written or deleted stream yields nothing. ``from_version`` and ``limit`` are ints >= 0 of
        any size (else ``InvalidVersion``): past the last version forwards reads nothing, backwards it
        reads from the last event; a ``limit`` beyond what is stored is no limit.
        """
        ...

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield every committed event with ``position > after`` in position order (deleted ones too).

        ``categories``: one name or several; repeated names count once, and an empty iterable matches
        nothing (it yields nothing, without querying). ``after`` and ``limit`` are ints >= 0 of any size
        (else ``InvalidVersion``): an ``after`` past every position is an empty read.
        """
        ...

    def subscribe(
        self,
        after: int = 0,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Like ``read_all``, then wait for and yield new events as they commit; never ends on its own.

        Close it with ``aclose()`` (or ``break``) to release its resources. With ``categories=[]``, or an
        ``after`` past every position the store can hold, nothing can match: it yields nothing and waits
        (without querying in a loop) until it is closed, or raises ``StoreUnavailable`` once the store is.
        """
        ...

    async def stream_version(self, stream: str) -> int | None:
        """The version of the stream's last event, or ``None`` if it is empty, unwritten or deleted."""
        ...

    async def head_position(self) -> int:
        """The position of the last committed (visible) event in the store, 0 when empty.

        Never goes back: erasing the newest events (a hard delete, say) leaves it where it was.
        """
        ...

    async def get_event(self, id: UUID, stream: str | None = None) -> RecordedEvent | None:
        """The stored event with this id, or ``None``: used for command idempotency.

        With ``stream``, only that stream is searched (a store without an index by id reads just that
        stream): an event stored elsewhere then gives ``None``.
        """
        ...

    async def delete_stream(self, stream: str, expected_version: ExpectedVersionLike = ANY, hard: bool = False) -> None:
        """Delete a stream; ``expected_version`` as for ``append`` (beyond 64 bits: ``WrongExpectedVersion``).

        Soft (the default): it reads as empty and ``stream_version`` is ``None``; a later append continues
        its versions; ``read_all`` keeps its events. Hard (``hard=True``, a tombstone): its events' data
        and metadata are erased at once and ``read_all`` skips them; it reads as empty for good and every
        later append raises ``StreamDeleted``. Deleting a tombstoned stream again is a no-op.
        """
        ...

    async def truncate_before(self, stream: str, version: int) -> None:
        """Erase the stream's events below ``version`` at once: ``read_stream`` then starts at ``version``
        and ``read_all`` skips them. Versions are never reused; a ``version`` past the last event erases
        them all (the stream then reads as deleted until it is appended to). No-op on an unwritten stream.

        Raises ``InvalidVersion`` (not an int >= 0) and ``StreamDeleted`` (a tombstoned stream).
        """
        ...

    async def set_stream_limits(
        self, stream: str, max_count: int | None = None, max_age: timedelta | None = None
    ) -> None:
        """Keep only the last ``max_count`` events, and those younger than ``max_age`` (``None``: no limit).

        ``read_stream`` honours them at once; ``read_all`` still delivers the excluded events until
        :meth:`scavenge` erases them. Setting both to ``None`` removes the limits. Raises
        ``InvalidVersion`` for a ``max_count`` < 1 or a ``max_age`` that is not a positive ``timedelta``,
        and ``StreamDeleted`` for a tombstoned stream.
        """
        ...

    async def scavenge(self, stream: str | None = None) -> int:
        """Erase the events the limits exclude (of one stream, or of every stream); the number erased.

        Afterwards ``read_all`` skips them too. Positions of erased events are never reused.
        """
        ...

    def read_query(self, query: Query, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        """Yield the events matching ``query`` with ``position > after``, in position order, each once.

        Served by an index of types and tags (never a scan of the whole log on the SQL stores).
        ``Query([])`` yields nothing without querying; ``after``/``limit`` as for ``read_all``. Events of
        deleted streams are yielded as ``read_all`` yields them.
        """
        ...

    async def append_with_condition(
        self,
        stream: str,
        events: Iterable[NewEvent],
        condition: AppendCondition,
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        """Append atomically unless an event matching ``condition.fail_if_events_match`` has a position
        greater than ``condition.after`` (``None``: any such event), which raises ``AppendConditionFailed``.

        Safe under concurrent writers (in other processes too) without a store-wide lock on PostgreSQL;
        ``expected_version`` is checked as ``append`` checks it, and an idempotent replay of the same ids
        returns the first result without checking the condition again.
        """
        ...

    async def append_many(
        self, appends: Iterable[tuple[str, Iterable[NewEvent], ExpectedVersionLike]]
    ) -> list[AppendResult]:
        """Append to several streams, each with its own guard, all or nothing; results in input order.

        A failing guard raises ``WrongExpectedVersion`` naming that stream, and nothing is written. A
        stream may appear once. Stores that cannot do this atomically raise ``NotSupported``.
        """
        ...

    async def close(self) -> None:
        """Release connections and threads. Idempotent."""
        ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class StoreOpener:
    """What :func:`open_store` returns: await it, or use it as an async context manager."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store: EventStore | None = None

    async def _open(self) -> EventStore:
        scheme, _, _ = self.url.partition("://")
        scheme = scheme.lower().split("+", 1)[0]
        if scheme == "memory":
            from epoch.stores.memory import MemoryEventStore

            return await MemoryEventStore.from_url(self.url)
        if scheme == "sqlite":
            from epoch.stores.sqlite import SQLiteEventStore

            return await SQLiteEventStore.from_url(self.url)
        if scheme in ("postgresql", "postgres"):
            from epoch.stores.postgres import PostgresEventStore

            return await PostgresEventStore.from_url(self.url)
        if scheme in ("kurrentdb", "esdb", "kdb"):
            from epoch.stores.kurrentdb import KurrentDBEventStore

            return await KurrentDBEventStore.from_url(self.url)
        raise ConfigurationError(
            f"unknown store URL {self.url!r}: use memory://, sqlite:///path.db, postgresql://... or kurrentdb://..."
        )

    def __await__(self) -> Generator[Any, None, EventStore]:
        return self._open().__await__()

    async def __aenter__(self) -> EventStore:
        self._store = await self._open()
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None


def open_store(url: str | None = None) -> StoreOpener:
    """Open the store a URL names (``EPOCH_STORE``, else ``sqlite:///epoch.db``, when ``url`` is None).

    ``async with open_store(url) as store: ...`` or ``store = await open_store(url)``.
    URLs follow SQLAlchemy: ``memory://``, ``sqlite:///relative.db``, ``sqlite:////abs.db``,
    ``sqlite://`` (in-memory SQLite), ``postgresql://user@host/db``, ``kurrentdb://host:2113``.
    """
    if url is None:
        url = os.environ.get("EPOCH_STORE") or DEFAULT_STORE_URL
    if "://" not in url:
        raise ConfigurationError(f"not a store URL: {url!r} (expected e.g. sqlite:///epoch.db)")
    return StoreOpener(url)


# The declared capabilities (after EventStore: they are part of this package's public surface).
from epoch.stores._keys import SubjectKey, SupportsKeys, keys_of  # noqa: E402
from epoch.stores._lifecycle import confirmed_read_of, guarded_append_of  # noqa: E402
from epoch.stores._query_snapshots import (  # noqa: E402
    QuerySnapshot,
    QuerySnapshotStatus,
    SupportsQuerySnapshots,
    query_snapshot_store,
)
from epoch.stores._snapshots import (  # noqa: E402
    Snapshot,
    SnapshotStatus,
    SupportsSnapshots,
    snapshot_store,
)
from epoch.stores._sql import (  # noqa: E402
    Dialect,
    PostgresTransaction,
    SQLStore,
    SupportsImport,
    Transaction,
    importer_of,
    sql_store,
)
