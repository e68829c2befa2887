"""The KurrentDB store's snapshots: one companion stream per stream, ``$epoch-snapshots-<stream>``.

Each snapshot is an event of that stream (type ``$epoch-snapshot``): its data is the state, its metadata
the stream version, schema version, position and the stream's ``$tb`` (truncate-before: what a soft
delete and truncation move) when it was taken. ``$maxCount`` on the companion stream keeps the newest
``keep`` (the server drops older ones from reads at once, and from disk at the next scavenge).

Differences from the SQL stores (docs/stores/kurrentdb.md): the server runs no query across two streams,
so a load reads the companion stream backwards and the stream's metadata at the same time (two calls,
one wait) and compares ``$tb`` here; a save reads the event at its version and the metadata first (two
calls, one wait), then appends and sets ``$maxCount``. Saving at the same version again appends another
event, which the load and the status read as a replacement. ``snapshot_status`` scans ``$all`` for the
companion streams (a filtered read: it costs a pass over the log's index, so it is for the CLI).
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from contextlib import aclosing
from typing import Any

import msgspec

from epoch.records import NewEvent, RecordedEvent, category_of
from epoch.stores._snapshots import (
    Snapshot,
    SnapshotStatus,
    SupportsSnapshots,
    check_drop_name,
    check_load,
    check_save,
    check_status_category,
)
from epoch.stores.kurrentdb.companion import COMPANION_PREFIX, KurrentDBCompanionStreams
from epoch.stores.kurrentdb.errors import driver_errors
from epoch.stores.kurrentdb.mapping import to_record

__all__ = ["SNAPSHOT_PREFIX", "KurrentDBSnapshots"]

_NAME = "snapshots-"
SNAPSHOT_PREFIX = COMPANION_PREFIX + _NAME
"""The name of a stream's snapshot stream is this prefix and the stream's name."""

_TYPE = "$epoch-snapshot"


class _Meta(msgspec.Struct, frozen=True):
    version: int
    schema_version: int
    position: int
    first_visible: int


_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(_Meta)


def _kept(events: list[RecordedEvent]) -> list[tuple[_Meta, RecordedEvent]]:
    """The snapshots of a companion read (newest first), one per version and schema (the newest write)."""
    seen: set[tuple[int, int]] = set()
    kept = []
    for event in events:
        meta = _DECODE.decode(event.metadata)
        if (meta.version, meta.schema_version) not in seen:
            seen.add((meta.version, meta.schema_version))
            kept.append((meta, event))
    return kept


class KurrentDBSnapshots(SupportsSnapshots):
    """:class:`SupportsSnapshots` on companion streams of the store's server."""

    __slots__ = ()

    @abstractmethod
    def companion_streams(self) -> KurrentDBCompanionStreams: ...

    @abstractmethod
    def _open(self, stream: str | None = None) -> Any: ...

    @abstractmethod
    def _events(self, stream: str | None, response_call: Any) -> Any: ...

    @abstractmethod
    def _check_name(self, stream: object) -> str: ...

    async def _truncated_before(self, stream: str) -> int:
        """The stream's ``$tb`` (0 when it has none): versions below it read as gone."""
        with driver_errors(stream):
            metadata, _ = await self._open(stream).get_stream_metadata(stream)
        tb = metadata.get("$tb", 0) if isinstance(metadata, dict) else 0
        return tb if type(tb) is int else 0

    async def _event_at(self, stream: str, version: int) -> RecordedEvent | None:
        read = self._open(stream).read_stream(stream, stream_position=version, limit=1)
        async with aclosing(self._events(stream, read)) as events:
            async for event in events:
                return to_record(event)
        return None

    async def _snapshots_of(self, stream: str) -> list[RecordedEvent]:
        companions = self.companion_streams()
        return [event async for event in companions.read(_NAME + stream, backwards=True)]

    async def save_snapshot(
        self, stream: str, version: int, schema_version: int, data: bytes, keep: int, first_visible: int | None = None
    ) -> bool:
        """Append a snapshot to the stream's companion stream; see :class:`~epoch.stores.SupportsSnapshots`."""
        stream, version, schema_version, data, keep, first = check_save(
            stream, version, schema_version, data, keep, first_visible
        )
        self._check_name(stream)
        event, tb = await asyncio.gather(self._event_at(stream, version), self._truncated_before(stream))
        if event is None or event.version != version or tb > version or first not in (None, tb):
            return False  # the event at that version is not visible, or the state was folded from hidden ones
        meta = _Meta(version, schema_version, event.position, tb)
        companions = self.companion_streams()
        await companions.append(_NAME + stream, [NewEvent(_TYPE, data, _ENCODE.encode(meta))])
        await companions.set_max_count(_NAME + stream, keep)
        return True

    async def load_snapshot(self, stream: str, schema_version: int, at_most: int | None = None) -> Snapshot | None:
        """The newest usable snapshot; see :class:`~epoch.stores.SupportsSnapshots` and the module docstring."""
        stream, schema_version, highest = check_load(stream, schema_version, at_most)
        self._check_name(stream)
        found, tb, last = await asyncio.gather(
            self._snapshots_of(stream), self._truncated_before(stream), self._last_version(stream)
        )
        if last is None:
            return None
        for meta, event in _kept(found):
            usable = meta.first_visible == tb and meta.version <= min(highest, last)
            if usable and meta.schema_version == schema_version:
                return Snapshot(stream, meta.version, meta.position, schema_version, event.data, event.recorded_at, tb)
        return None

    async def _last_version(self, stream: str) -> int | None:
        read = self._open(stream).read_stream(stream, backwards=True, limit=1)
        async with aclosing(self._events(stream, read)) as events:
            async for event in events:
                return int(event.stream_position)
        return None

    async def snapshot_status(self, category: str | None = None) -> list[SnapshotStatus]:
        """Every stream with snapshots; see :class:`~epoch.stores.SupportsSnapshots` and the module docstring."""
        category = check_status_category(category)
        found = []
        for stream in await self._snapshot_streams(category):
            kept = _kept(await self._snapshots_of(stream))
            if kept:
                meta, newest = max(kept, key=lambda pair: (pair[0].version, pair[0].schema_version))
                found.append(SnapshotStatus(stream, meta.version, meta.schema_version, newest.recorded_at, len(kept)))
        return found

    async def _snapshot_streams(self, category: str | None) -> list[str]:
        """The streams that have (or had) a snapshot stream, by name, of ``category`` when given."""
        prefix = SNAPSHOT_PREFIX + (category or "")
        read = self._open().read_all(filter_include=(prefix,), filter_by_stream_name=True, filter_by_prefix=True)
        names: set[str] = set()
        async with aclosing(self._events(None, read)) as events:
            async for event in events:
                name: str = event.stream_name
                if name.startswith(SNAPSHOT_PREFIX):
                    stream = name.removeprefix(SNAPSHOT_PREFIX)
                    if category is None or category_of(stream) == category:
                        names.add(stream)
        return sorted(names)

    async def drop_snapshots(self, name: str) -> int:
        """Soft-delete the snapshot streams of a stream or a category; how many snapshots they held."""
        name, is_stream = check_drop_name(name)
        streams = [name] if is_stream else await self._snapshot_streams(name)
        dropped = 0
        companions = self.companion_streams()
        for stream in streams:
            kept = _kept(await self._snapshots_of(stream))
            if kept:
                dropped += len(kept)
                await companions.delete(_NAME + stream)
        return dropped
