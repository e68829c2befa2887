"""An event store wrapped in spans: what a traced handler or projection reads and appends through.

Each append and read is a ``CLIENT`` span named ``{operation} {category}`` (``read_all`` and
``get_event`` name no category) with the database semantic conventions' attributes, timed in
``db.client.operation.duration``. Everything else passes through to the wrapped store untouched.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any
from uuid import UUID

from opentelemetry.trace import SpanKind, Status, StatusCode

from epoch.records import ANY, AppendResult, ExpectedVersionLike, NewEvent, RecordedEvent, category_of
from epoch.stores import EventStore, guarded_append_of

if TYPE_CHECKING:
    from epoch.telemetry._otel import Telemetry

__all__ = ["TracedStore", "system_of"]

# db.system.name: the semantic conventions' names where they have one (sqlite, postgresql).
_SYSTEMS = {"memory": "epoch.memory", "sqlite": "sqlite", "postgres": "postgresql", "kurrentdb": "kurrentdb"}


def system_of(store: object) -> str:
    """The ``db.system.name`` of a store: its backend's name, or its class name for a store from elsewhere."""
    module = type(store).__module__
    if module.startswith("epoch.stores."):
        backend = module.removeprefix("epoch.stores.").split(".")[0]
        return _SYSTEMS.get(backend, backend)
    return type(store).__name__


def untraced(store: EventStore) -> EventStore:
    """The store a :class:`TracedStore` wraps (``store`` itself otherwise): telemetry's own reads make no spans."""
    return store._store if isinstance(store, TracedStore) else store


class TracedStore:
    """``store``'s appends and reads in spans; every other attribute is the store's own."""

    def __init__(self, store: EventStore, telemetry: Telemetry) -> None:
        self._store = store
        self._telemetry = telemetry
        self._system = system_of(store)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _attributes(self, operation: str, stream: str | None) -> dict[str, str]:
        attributes = {"db.system.name": self._system, "db.operation.name": operation}
        if stream is not None:
            attributes["epoch.stream"] = stream
            attributes["epoch.category"] = category_of(stream)
        return attributes

    def _record(self, started: float, operation: str, error: str | None) -> None:
        labels = {"db.system.name": self._system, "db.operation.name": operation}
        if error is not None:
            labels["error.type"] = error
        self._telemetry.duration.record(time.perf_counter() - started, labels)

    async def append(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike = ANY
    ) -> AppendResult:
        events = list(events)
        return await self._appending(stream, self._store.append(stream, events, expected_version))

    async def append_guarded(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike, first_version: int
    ) -> AppendResult:
        """A cached ``CommandHandler``'s append (``epoch.stores.guarded_append_of``), in the same span."""
        events = list(events)
        guarded = guarded_append_of(self._store)
        return await self._appending(stream, guarded(stream, events, expected_version, first_version))

    async def _appending(self, stream: str, call: Awaitable[AppendResult]) -> AppendResult:
        attributes = self._attributes("append", stream)
        name = f"append {category_of(stream)}"
        error: str | None = None
        started = time.perf_counter()
        with self._telemetry.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
            try:
                result = await call
            except BaseException as exc:
                error = type(exc).__qualname__
                span.set_attribute("error.type", error)
                raise
            finally:
                self._record(started, "append", error)
            span.set_attributes({"epoch.events": len(result.positions), "epoch.position": result.position})
        if result.positions:
            self._telemetry.appended.add(len(result.positions), {"db.system.name": self._system})
        return result

    def read_stream(
        self, stream: str, from_version: int | None = None, backwards: bool = False, limit: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        events = self._store.read_stream(stream, from_version=from_version, backwards=backwards, limit=limit)
        return self._traced("read_stream", stream, events)

    def read_all(
        self, after: int = 0, limit: int | None = None, categories: str | Iterable[str] | None = None
    ) -> AsyncIterator[RecordedEvent]:
        return self._traced("read_all", None, self._store.read_all(after=after, limit=limit, categories=categories))

    async def _traced(
        self, operation: str, stream: str | None, events: AsyncIterator[RecordedEvent]
    ) -> AsyncIterator[RecordedEvent]:
        # The span is started when the read starts (the first step of this generator, in the reader's
        # context) and never made current: a generator's steps may run in other contexts.
        name = operation if stream is None else f"{operation} {category_of(stream)}"
        span = self._telemetry.tracer.start_span(
            name, kind=SpanKind.CLIENT, attributes=self._attributes(operation, stream)
        )
        rows = 0
        error: str | None = None
        started = time.perf_counter()
        try:
            async for recorded in events:
                rows += 1
                yield recorded
        except Exception as exc:
            error = type(exc).__qualname__
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.set_attribute("error.type", error)
            raise
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
            self._record(started, operation, error)
            span.set_attribute("db.response.returned_rows", rows)
            span.end()

    def subscribe(self, after: int = 0, categories: str | Iterable[str] | None = None) -> AsyncIterator[RecordedEvent]:
        return self._store.subscribe(after=after, categories=categories)

    async def get_event(self, id: UUID, stream: str | None = None) -> RecordedEvent | None:
        error: str | None = None
        started = time.perf_counter()
        attributes = self._attributes("get_event", stream)
        with self._telemetry.tracer.start_as_current_span("get_event", kind=SpanKind.CLIENT, attributes=attributes):
            try:
                return await self._store.get_event(id, stream)
            except BaseException as exc:
                error = type(exc).__qualname__
                raise
            finally:
                self._record(started, "get_event", error)

    async def stream_version(self, stream: str) -> int | None:
        return await self._store.stream_version(stream)

    async def head_position(self) -> int:
        return await self._store.head_position()

    async def delete_stream(self, stream: str, expected_version: ExpectedVersionLike = ANY, hard: bool = False) -> None:
        await self._store.delete_stream(stream, expected_version, hard)

    async def truncate_before(self, stream: str, version: int) -> None:
        await self._store.truncate_before(stream, version)

    async def set_stream_limits(
        self, stream: str, max_count: int | None = None, max_age: timedelta | None = None
    ) -> None:
        await self._store.set_stream_limits(stream, max_count, max_age)

    async def scavenge(self, stream: str | None = None) -> int:
        return await self._store.scavenge(stream)

    async def close(self) -> None:
        await self._store.close()

    async def __aenter__(self) -> TracedStore:
        await self._store.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._store.__aexit__(exc_type, exc, tb)
