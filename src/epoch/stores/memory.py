"""An event store in process memory: for tests and demos, with the same semantics as the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from uuid import UUID

from epoch.errors import ConfigurationError, StoreUnavailable
from epoch.records import ANY, AppendResult, ExpectedVersionLike, NewEvent, RecordedEvent, category_of
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
from epoch.stores._keys import MemoryKeys
from epoch.stores._urls import integer, only_options

__all__ = ["MemoryEventStore"]


class _Stream:
    __slots__ = ("events", "first_visible")

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self.first_visible = 0  # versions below this were soft-deleted

    @property
    def version(self) -> int | None:
        last = len(self.events) - 1
        return last if last >= self.first_visible else None


class MemoryEventStore(StoreLifecycle, MemoryKeys):
    """Streams and the global log in lists; every call is atomic because it never awaits mid-way.

    Subscriptions wake on each append. The store lives and dies with its process. It declares no
    capability beyond the event store: it has no SQL database (:class:`~epoch.stores.SQLStore`), and
    ``epoch copy`` appends into it (no :class:`~epoch.stores.SupportsImport`), so copies get new
    ``recorded_at`` times.
    """

    detects_duplicate_ids_across_streams = True
    """Guarantee 5 in full: every stored id is in an index (``epoch.testing.contract_ids``)."""

    def __init__(self, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self.max_event_size = check_max_event_size(max_event_size)
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, _Stream] = {}
        self._ids: dict[UUID, RecordedEvent] = {}
        self._appended: asyncio.Event | None = None
        self._closed = False

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
        entry = self._streams.get(stream)
        stored = {e.id: (r.stream, r.version) for e in batch if (r := self._ids.get(e.id)) is not None}
        if is_replay(stream, batch, expected, stored):
            return AppendResult.of(stream, [self._ids[e.id] for e in batch])
        enforce_expected_version(stream, expected, entry.version if entry else None)
        if not batch:
            return AppendResult.of(stream, (), entry.events[-1] if entry and entry.version is not None else None)
        if entry is None:
            entry = self._streams[stream] = _Stream()
        now = datetime.now(UTC)
        version = len(entry.events)
        position = len(self._log)
        written = []
        for event in batch:
            position += 1
            recorded = RecordedEvent(stream, version, position, event.id, event.type, event.data, event.metadata, now)
            version += 1
            written.append(recorded)
            self._ids[event.id] = recorded
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
        if backwards:
            start = len(events) - 1 if from_version is None else min(from_version, len(events) - 1)
            chosen = events[entry.first_visible : start + 1][::-1]
        else:
            start = entry.first_visible if from_version is None else max(from_version, entry.first_visible)
            chosen = events[start:]
        for recorded in chosen if limit is None else chosen[:limit]:
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
                if names is None or category_of(recorded.stream) in names:
                    yield recorded
            if self._appended is None:
                self._appended = asyncio.Event()
            await self._appended.wait()

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

    async def delete_stream(self, stream: str, expected_version: ExpectedVersionLike = ANY) -> None:
        check_stream_name(stream)
        expected = check_expected_version(stream, expected_version)
        self._check_open()
        entry = self._streams.get(stream)
        enforce_expected_version(stream, expected, None if entry is None else entry.version)
        if entry is not None:
            entry.first_visible = len(entry.events)

    async def close(self) -> None:
        self._closed = True
        self._wake()
