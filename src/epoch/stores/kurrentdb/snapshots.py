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

Anyone who may write a companion stream can append an event no save wrote (or a hand can): one whose
metadata does not decode to the four ints, or holds numbers no save writes, is checked as the SQL stores
check a row (:func:`~epoch.stores._snapshots.snapshot_row`, ``snapshot_status_row``), logged at
``WARNING`` on the ``epoch.snapshots`` logger and passed over, never raised: a load goes on to the older
snapshots under it, and folds from the events when none is left.
"""

from __future__ import annotations

import asyncio
import dataclasses
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import aclosing
from functools import partial
from typing import Any

import msgspec

from epoch.records import NewEvent, RecordedEvent, category_of
from epoch.stores._snapshots import (
    Snapshot,
    SnapshotStatus,
    SupportsSnapshots,
    aware,
    check_drop_name,
    check_load,
    check_save,
    check_status_category,
    snapshot_row,
    snapshot_status_row,
    valid_or_logged,
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


def _decoded(event: RecordedEvent) -> _Meta | str:
    """The metadata of a companion event, or why it is not a save's (it does not decode to the four ints)."""
    try:
        return _DECODE.decode(event.metadata)
    except (msgspec.DecodeError, RecursionError) as exc:  # not JSON, a field missing or not an int, too deep
        return f"its metadata is not a snapshot's: {exc}"


def _decodable(stream: str, events: list[RecordedEvent]) -> Iterator[tuple[_Meta, RecordedEvent]]:
    """The events of a companion read with their metadata, as they are reached (a load stops at the first
    usable one); an event whose metadata does not decode is logged and left out."""
    for event in events:
        meta = valid_or_logged(_decoded(event), partial(_event_name, stream, event))
        if meta is not None:
            yield meta, event


def _event_name(stream: str, event: RecordedEvent) -> str:
    return f"{stream}: snapshot event {event.version} of {SNAPSHOT_PREFIX}{stream}"


def _row(meta: _Meta, event: RecordedEvent) -> tuple[object, ...]:
    """A snapshot event as the row :func:`snapshot_row` checks: (version, position, data, taken_at, first)."""
    return meta.version, meta.position, event.data, event.recorded_at, meta.first_visible


def _status(stream: str, events: list[RecordedEvent]) -> SnapshotStatus | None:
    """The newest of the snapshots of a companion read (newest first) that a save could have written (the
    others: logged) and how many there are, one per version and schema (a save at the same version and
    schema replaces the one before); ``None`` when there is none."""
    kept: dict[tuple[int, int], SnapshotStatus] = {}
    for meta, event in _decodable(stream, events):
        status = snapshot_status_row((stream, meta.version, meta.schema_version, event.recorded_at, 1), aware)
        if status is not None:
            kept.setdefault((status.version, status.schema_version), status)
    if not kept:
        return None
    return dataclasses.replace(kept[max(kept)], count=len(kept))


def _held(events: list[RecordedEvent]) -> int:
    """How many snapshots a companion read holds: one per version and schema, and each event that does not
    decode (as the SQL stores count an invalid row)."""
    return len({(m.version, m.schema_version) if isinstance(m := _decoded(e), _Meta) else e.version for e in events})


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
        for meta, event in _decodable(stream, found):
            if meta.schema_version != schema_version:
                continue
            # Checked whether or not it is usable now, as the SQL stores check the row their query found.
            snapshot = snapshot_row(stream, schema_version, _row(meta, event), last, aware)
            if snapshot is not None and snapshot.first_visible == tb and snapshot.version <= highest:
                return snapshot
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
            status = _status(stream, await self._snapshots_of(stream))
            if status is not None:
                found.append(status)
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
            held = _held(await self._snapshots_of(stream))
            if held:
                dropped += held
                await companions.delete(_NAME + stream)
        return dropped
