"""An event store in process memory: for tests and demos, with the same semantics as the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from epoch.errors import AppendConditionFailed, ConfigurationError, StoreUnavailable, WrongExpectedVersion
from epoch.queries import AppendCondition, Query
from epoch.records import ANY, AppendResult, ExpectedVersion, ExpectedVersionLike, NewEvent, RecordedEvent, category_of
from epoch.stores._base import StoreLifecycle
from epoch.stores._checks import (
    DEFAULT_MAX_EVENT_SIZE,
    GLOBAL_LOG,
    check_append,
    check_expected_version,
    check_max_event_size,
    check_read,
    check_stream_name,
    enforce_expected_version,
    is_replay,
)
from epoch.stores._dcb import ALL_OPERATIONS, check_condition, check_many, check_query_read
from epoch.stores._keys import MemoryKeys
from epoch.stores._lifecycle import (
    TOMBSTONE,
    StreamLifecycle,
    check_hard,
    check_limits,
    check_truncate,
    is_tombstoned,
    refuse_tombstone,
    tombstone_of,
)
from epoch.stores._memory_index import EventIndex
from epoch.stores._memory_snapshots import MemoryQuerySnapshots, MemorySnapshots
from epoch.stores._memory_stream import MemoryStream
from epoch.stores._urls import integer, only_options

__all__ = ["MemoryEventStore"]


class MemoryEventStore(StoreLifecycle, MemorySnapshots, MemoryQuerySnapshots, MemoryKeys):
    """Streams and the global log in lists; every call is atomic because it never awaits mid-way. An append
    that succeeded yields to the loop once before it returns (as the SQLite store's lone append does), so
    a task looping on appends or commands lets the loop's other tasks, timeouts and servers run.

    Subscriptions wake on each append. The store lives and dies with its process. It declares no
    capability beyond the event store: it has no SQL database (:class:`~epoch.stores.SQLStore`), and
    ``epoch copy`` appends into it (no :class:`~epoch.stores.SupportsImport`), so copies get new
    ``recorded_at`` times. Snapshots live in dicts (``SupportsSnapshots``, ``SupportsQuerySnapshots``).
    """

    detects_duplicate_ids_across_streams = True
    """Guarantee 5 in full: every stored id is in an index (``epoch.testing.contract_ids``)."""

    boundary_operations = ALL_OPERATIONS
    """Every consistency-boundary operation, from the type and tag indexes (``epoch.testing.contract_dcb``)."""

    erases_at_once = True
    """Hard deletes and truncations erase the events at once (``epoch.testing.contract_erasure``)."""

    def __init__(self, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self.max_event_size = check_max_event_size(max_event_size)
        self._log: list[RecordedEvent | None] = []  # by position - 1; None once erased
        self._streams: dict[str, MemoryStream] = {}
        self._ids: dict[UUID, RecordedEvent] = {}
        self._index = EventIndex()
        self._appended: asyncio.Event | None = None
        self._closed = False
        # Snapshots, query snapshots, and the count of erasures that removed an event (query snapshots).
        self._snapshots, self._query_snapshots, self._erasures = {}, {}, 0

    @classmethod
    async def from_url(cls, url: str) -> MemoryEventStore:
        """``memory://`` gives a fresh, private store; ``memory://?max_event_size=65536`` sets its limit.

        An unknown or malformed parameter raises ``ConfigurationError`` (as on every store).
        """
        scheme, separator, rest = url.partition("://")
        if not separator or scheme.lower() != "memory":
            raise ConfigurationError(f"not a memory store URL: {url!r} (expected memory://)")
        where, _, query = rest.partition("?")
        if where not in ("", "/"):
            raise ConfigurationError(f"a memory store URL names no host or path: {url!r} (use memory://)")
        return cls(**only_options(url, query, {"max_event_size": integer}, "memory store"))

    def _visible(self, stream: str) -> tuple[int, int] | None:
        entry = self._streams.get(stream)
        return None if entry is None or entry.version is None else (entry.first_visible, entry.version)

    def _position_of(self, stream: str, version: int) -> int | None:
        recorded = self._streams[stream].events[version]
        return None if recorded is None else recorded.position  # None: erased (scavenged past a limit)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the memory store is closed")

    async def append(
        self,
        stream: str,
        events: Iterable[NewEvent],
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        stream, batch, expected = check_append(stream, events, expected_version, self.max_event_size)
        self._check_open()
        result = self._replayed(stream, batch, expected) or self._write(stream, batch)
        await asyncio.sleep(0)  # done: let the loop run once (see the class docstring)
        return result

    async def append_with_condition(
        self,
        stream: str,
        events: Iterable[NewEvent],
        condition: AppendCondition,
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        stream, batch, expected = check_append(stream, events, expected_version, self.max_event_size)
        condition = check_condition(condition)
        self._check_open()
        replayed = self._replayed(stream, batch, expected)
        if replayed is not None and batch:  # an idempotent replay: the first result, condition unread
            await asyncio.sleep(0)
            return replayed
        after = condition.after or 0
        for position in self._index.matching(condition.fail_if_events_match, after, self._log):
            raise AppendConditionFailed(stream, condition.after, position)
        result = replayed or self._write(stream, batch)  # no events: guard and condition checked
        await asyncio.sleep(0)
        return result

    async def append_many(
        self, appends: Iterable[tuple[str, Iterable[NewEvent], ExpectedVersionLike]]
    ) -> list[AppendResult]:
        checked = check_many(appends, self.max_event_size)
        self._check_open()
        # Every guard is checked before anything is written (nothing awaits in between: atomic).
        replayed = [self._replayed(entry.stream, entry.events, entry.expected) for entry in checked]
        results = [
            done if done is not None else self._write(entry.stream, entry.events)
            for entry, done in zip(checked, replayed, strict=True)
        ]
        await asyncio.sleep(0)
        return results

    def _replayed(self, stream: str, batch: list[NewEvent], expected: ExpectedVersion | int) -> AppendResult | None:
        """The first result when ``batch`` is already stored here (a replay); else check the guard, or raise."""
        entry = self._streams.get(stream)
        if entry is not None and entry.first_visible >= TOMBSTONE:
            refuse_tombstone(stream, entry.first_visible)
        stored = {e.id: (r.stream, r.version) for e in batch if (r := self._ids.get(e.id)) is not None}
        if is_replay(stream, batch, expected, stored):
            return AppendResult.of(stream, [self._ids[e.id] for e in batch], replayed=True)
        enforce_expected_version(stream, expected, entry.version if entry else None)
        if not batch:
            return AppendResult.of(stream, (), entry.events[-1] if entry and entry.version is not None else None)
        return None

    async def append_guarded(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike, first_version: int
    ) -> AppendResult:
        """``append``, also refused when the stream's first visible version moved past ``first_version``
        (see ``epoch.stores._lifecycle.GuardedAppend``)."""
        entry = self._streams.get(stream) if isinstance(stream, str) else None
        if entry is not None and not is_tombstoned(entry.first_visible) and entry.first_visible > first_version:
            stream, _, expected = check_append(stream, events, expected_version, self.max_event_size)
            raise WrongExpectedVersion(stream, expected, entry.version)
        return await self.append(stream, events, expected_version)

    def _write(self, stream: str, batch: list[NewEvent]) -> AppendResult:
        entry = self._streams.get(stream)
        if entry is None:
            entry = self._streams[stream] = MemoryStream()
        now = datetime.now(UTC)
        version = len(entry.events)
        position = len(self._log)
        written = []
        for event in batch:
            position += 1
            recorded = RecordedEvent(
                stream, version, position, event.id, event.type, event.data, event.metadata, now, event.tags
            )
            version += 1
            written.append(recorded)
            self._ids[event.id] = recorded
            self._index.add(recorded)
        entry.events.extend(written)
        self._log.extend(written)
        self._wake()
        return AppendResult.of(stream, written)

    def _wake(self) -> None:
        if self._appended is not None:
            self._appended.set()
            self._appended = None

    async def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        read = check_read(stream, from_version, limit, backwards=backwards)
        self._check_open()
        entry = self._streams.get(stream)
        if entry is None or entry.version is None or read.matches_nothing:
            return
        events = entry.events
        first = entry.start()
        if backwards:
            start = len(events) - 1 if from_version is None else min(from_version, len(events) - 1)
            chosen = events[first : start + 1][::-1]
        else:
            start = first if from_version is None else max(from_version, first)
            chosen = events[start:]
        for recorded in chosen if limit is None else chosen[:limit]:
            if recorded is not None:
                yield recorded

    async def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        read = check_read(GLOBAL_LOG, after, limit, categories=categories)
        self._check_open()
        if read.matches_nothing:  # limit=0, or an empty filter (guarantee 11)
            return
        names = read.categories
        count = 0
        for recorded in self._log[after:]:
            if limit is not None and count >= limit:
                return
            if recorded is None:  # erased
                continue
            if names is None or category_of(recorded.stream) in names:
                count += 1
                yield recorded

    async def subscribe(
        self,
        after: int = 0,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        names = check_read(GLOBAL_LOG, after, categories=categories).categories
        position = after
        while True:
            self._check_open()
            # (An empty filter matches nothing: it only waits, until the store closes.)
            while names != () and position < len(self._log):
                recorded = self._log[position]
                position += 1
                if recorded is not None and (names is None or category_of(recorded.stream) in names):
                    yield recorded
            if self._appended is None:
                self._appended = asyncio.Event()
            await self._appended.wait()

    async def read_query(self, query: Query, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        query = check_query_read(query, after, limit)
        self._check_open()
        if limit == 0:
            return
        positions = self._index.matching(query, after, self._log)
        for position in positions if limit is None else positions[:limit]:
            recorded = self._log[position - 1]
            if recorded is not None:  # None: erased while the caller held this read
                yield recorded

    async def stream_version(self, stream: str) -> int | None:
        check_stream_name(stream)
        self._check_open()
        entry = self._streams.get(stream)
        return None if entry is None else entry.version

    async def head_position(self) -> int:
        self._check_open()
        return len(self._log)

    async def get_event(self, id: UUID, stream: str | None = None) -> RecordedEvent | None:
        if stream is not None:
            check_stream_name(stream)
        self._check_open()
        found = self._ids.get(id)
        return None if found is None or (stream is not None and found.stream != stream) else found

    async def delete_stream(self, stream: str, expected_version: ExpectedVersionLike = ANY, hard: bool = False) -> None:
        check_stream_name(stream)
        expected = check_expected_version(stream, expected_version)
        hard = check_hard(stream, hard)
        self._check_open()
        entry = self._streams.get(stream)
        if entry is not None and is_tombstoned(entry.first_visible):
            return  # deleted for good already
        enforce_expected_version(stream, expected, None if entry is None else entry.version)
        if not hard:
            if entry is not None:
                entry.first_visible = len(entry.events)
            return
        if entry is None:
            entry = self._streams[stream] = MemoryStream()
        self._erase(entry, len(entry.events))
        entry.first_visible = tombstone_of(len(entry.events) - 1)
        entry.max_count = entry.max_age = None

    async def truncate_before(self, stream: str, version: int) -> None:
        stream, version = check_truncate(stream, version)
        self._check_open()
        entry = self._streams.get(stream)
        if entry is None:
            return
        refuse_tombstone(stream, entry.first_visible)
        boundary = min(version, len(entry.events))
        self._erase(entry, boundary)
        entry.first_visible = max(entry.first_visible, boundary)

    async def set_stream_limits(
        self, stream: str, max_count: int | None = None, max_age: timedelta | None = None
    ) -> None:
        stream, max_count, max_age = check_limits(stream, max_count, max_age)
        self._check_open()
        entry = self._streams.get(stream)
        if entry is not None:
            refuse_tombstone(stream, entry.first_visible)
        elif max_count is None and max_age is None:
            return
        else:
            entry = self._streams[stream] = MemoryStream()
        entry.max_count, entry.max_age = max_count, max_age

    async def scavenge(self, stream: str | None = None) -> int:
        if stream is not None:
            check_stream_name(stream)
        self._check_open()
        entries = self._streams.items() if stream is None else [(stream, self._streams.get(stream))]
        erased = 0
        for _, entry in entries:
            if entry is None or is_tombstoned(entry.first_visible) or (entry.max_count, entry.max_age) == (None, None):
                continue
            start = entry.start()
            if start <= entry.first_visible:  # nothing visible excluded: soft-deleted events stay (every store)
                continue
            erased += self._erase(entry, start)
            entry.first_visible = start
        return erased

    def _erase(self, entry: MemoryStream, below: int) -> int:
        """Forget the stream's events below version ``below``: their records, ids and places in the log."""
        erased = 0
        for version in range(entry.first_stored, below):
            recorded = entry.events[version]
            if recorded is None:
                continue
            entry.events[version] = None
            self._log[recorded.position - 1] = None
            self._ids.pop(recorded.id, None)
            erased += 1
        entry.first_stored = max(entry.first_stored, below)
        self._erasures += erased > 0
        return erased

    async def lifecycle_states(self) -> AsyncIterator[StreamLifecycle]:
        """Every stream with a lifecycle state (deleted, truncated or limited), for ``epoch copy``."""
        self._check_open()
        for name, entry in sorted(self._streams.items()):
            if entry.first_visible or entry.first_stored or entry.max_count is not None or entry.max_age is not None:
                version = len(entry.events) - 1
                yield StreamLifecycle(
                    name,
                    None if version < 0 else version,
                    entry.first_visible,
                    entry.first_stored,
                    entry.max_count,
                    entry.max_age,
                )

    async def close(self) -> None:
        self._closed = True
        self._wake()
