"""The seam to a store's *companion streams*: where checkpoints and parked events live on a store that has
streams but no SQL database (KurrentDB).

:func:`companion_streams_of` finds them by duck typing (stores never import projections, and projections
never import a backend): a store that keeps epoch's own data in streams hidden from its users' reads
offers ``companion_streams()``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Protocol, TypeVar, cast

import msgspec

from epoch.errors import DecodeError, InvalidStreamName
from epoch.records import NewEvent, RecordedEvent

__all__ = [
    "CompanionStreams",
    "NameIndex",
    "Named",
    "companion_name",
    "companion_streams_of",
    "kept_in_memory",
    "decode_json",
    "first",
]

T = TypeVar("T")


class CompanionStreams(Protocol):
    """Streams of the store's own, by name, that never show up in ``read_all``/``subscribe``."""

    async def append(self, name: str, events: Sequence[NewEvent]) -> None:
        """Append atomically (no expected-version guard)."""
        ...

    def read(self, name: str, backwards: bool = False, limit: int | None = None) -> AsyncGenerator[RecordedEvent, None]:
        """The stream's visible events; a missing or deleted stream reads empty."""
        ...

    async def set_max_count(self, name: str, max_count: int) -> None:
        """Keep only the newest ``max_count`` events."""
        ...

    async def delete(self, name: str) -> None:
        """Soft-delete: reads see nothing until the next append."""
        ...


def companion_name(kind: str, name: str) -> str:
    """The companion stream ``f"{kind}-{name}"`` (e.g. of a projection's checkpoint).

    Raises :class:`~epoch.errors.InvalidStreamName` when the name cannot be sent as UTF-8 (a lone
    surrogate): before anything is written, rather than a ``UnicodeEncodeError`` from the driver.
    """
    stream = f"{kind}-{name}"
    try:
        stream.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidStreamName(stream, "contains a lone surrogate") from None
    return stream


def companion_streams_of(store: object) -> CompanionStreams | None:
    """The companion streams of ``store``, or ``None`` when it has none."""
    factory = getattr(store, "companion_streams", None)
    if not callable(factory):
        return None
    streams: CompanionStreams = factory()
    return streams


_IN_MEMORY: weakref.WeakKeyDictionary[object, dict[Callable[[], object], object]] = weakref.WeakKeyDictionary()

K = TypeVar("K")


def kept_in_memory(store: object, kind: Callable[[], K]) -> K:
    """One in-memory ``kind()`` per store object, for a store with neither a database nor companion
    streams (the memory store): a new runner on the same store resumes where the last one stopped."""
    kept = _IN_MEMORY.setdefault(store, {})
    if kind not in kept:
        kept[kind] = kind()
    return cast(K, kept[kind])


async def first(iterator: AsyncGenerator[RecordedEvent, None]) -> RecordedEvent | None:
    """The first record of a read (closing the read at once), or ``None``."""
    async with aclosing(iterator) as records:
        async for record in records:
            return record
    return None


def decode_json(record: RecordedEvent, data: bytes, schema: type[T]) -> T:
    """Decode epoch's own JSON from a companion stream; anything else there is a :class:`DecodeError`."""
    try:
        return msgspec.json.decode(data, type=schema)
    except msgspec.DecodeError as exc:
        raise DecodeError(record.stream, record.version, record.type, str(exc)) from exc


class Named(msgspec.Struct, frozen=True):
    """An event's JSON data that names one thing (a projection)."""

    name: str


class NameIndex:
    """The names that have a companion stream of one kind (e.g. every projection with a checkpoint),
    kept in the index stream ``index`` as one ``event_type`` event per name.

    Streams cannot be listed by prefix without scanning the whole log, so a name is added here the first
    time this process writes for it (and it is not there yet). Two processes adding one name at once add
    it twice; readers ignore the repeat.
    """

    def __init__(self, streams: CompanionStreams, index: str, event_type: str) -> None:
        self.streams = streams
        self.index = index
        self.event_type = event_type
        self._known: set[str] | None = None
        self._lock = asyncio.Lock()

    async def names(self) -> list[str]:
        """Every name in the index, sorted."""
        found = set()
        async with aclosing(self.streams.read(self.index)) as records:
            async for record in records:
                found.add(decode_json(record, record.data, Named).name)
        return sorted(found)

    async def add(self, name: str, before: Callable[[], Awaitable[None]] | None = None) -> None:
        """Add ``name`` unless it is there; ``before()`` runs first (so a crash in between leaves the name
        unindexed and the next write does both again)."""
        async with self._lock:
            if self._known is None:
                self._known = set(await self.names())
            if name in self._known:
                return
            if before is not None:
                await before()
            await self.streams.append(self.index, [NewEvent(self.event_type, msgspec.json.encode(Named(name)))])
            self._known.add(name)
