"""The memory store's snapshots: a dict from stream name to its snapshots, newest last, and one from a
query snapshot's ``(key, schema_version)`` to it (``_erasures`` counts the erasures, :mod:`.._query_snapshots`;
one past the store's head, ``len(_log)``, is not loaded, as on the other stores)."""

from __future__ import annotations

from abc import abstractmethod
from datetime import UTC, datetime
from typing import Any

from epoch.records import category_of
from epoch.stores._query_snapshots import (
    QuerySnapshot,
    QuerySnapshotStatus,
    SupportsQuerySnapshots,
    check_query_snapshot_load,
    check_query_snapshot_save,
    query_snapshot_row,
)
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
)

__all__ = ["MemoryQuerySnapshots", "MemorySnapshots"]


class MemorySnapshots(SupportsSnapshots):
    """:class:`SupportsSnapshots` on a dict; the store says which part of a stream is visible."""

    __slots__ = ()

    _snapshots: dict[str, list[tuple[int, Snapshot]]]
    """stream -> ``(first_visible when taken, snapshot)``, by version then schema version."""

    @abstractmethod
    def _visible(self, stream: str) -> tuple[int, int] | None:
        """The stream's ``(first_visible, version)``, ``None`` when it shows no event."""

    @abstractmethod
    def _position_of(self, stream: str, version: int) -> int | None:
        """The position of the stream's event at ``version`` (a visible one), or ``None`` once erased."""

    @abstractmethod
    def _check_open(self) -> None: ...

    async def save_snapshot(
        self, stream: str, version: int, schema_version: int, data: bytes, keep: int, first_visible: int | None = None
    ) -> bool:
        stream, version, schema_version, data, keep, first = check_save(
            stream, version, schema_version, data, keep, first_visible
        )
        self._check_open()
        visible = self._visible(stream)
        if visible is None or not visible[0] <= version <= visible[1] or first not in (None, visible[0]):
            return False
        position = self._position_of(stream, version)
        if position is None:
            return False
        taken = Snapshot(stream, version, position, schema_version, data, datetime.now(UTC), visible[0])
        kept = [
            entry
            for entry in self._snapshots.get(stream, [])
            if (entry[1].version, entry[1].schema_version) != (version, schema_version)
        ]
        kept.append((visible[0], taken))
        kept.sort(key=lambda entry: (entry[1].version, entry[1].schema_version))
        self._snapshots[stream] = kept[-keep:]
        return True

    async def load_snapshot(self, stream: str, schema_version: int, at_most: int | None = None) -> Snapshot | None:
        stream, schema_version, highest = check_load(stream, schema_version, at_most)
        self._check_open()
        visible = self._visible(stream)
        if visible is None:
            return None
        for first_visible, snapshot in reversed(self._snapshots.get(stream, [])):
            usable = first_visible == visible[0] and snapshot.version <= min(highest, visible[1])
            if usable and snapshot.schema_version == schema_version:  # checked as the other stores check rows
                row = (snapshot.version, snapshot.position, snapshot.data, snapshot.taken_at, snapshot.first_visible)
                return snapshot_row(stream, schema_version, row, visible[1], aware)
        return None

    async def snapshot_status(self, category: str | None = None) -> list[SnapshotStatus]:
        category = check_status_category(category)
        self._check_open()
        found = []
        for stream in sorted(self._snapshots):
            kept = self._snapshots[stream]
            if kept and (category is None or category_of(stream) == category):
                newest = kept[-1][1]
                status = snapshot_status_row(
                    (stream, newest.version, newest.schema_version, newest.taken_at, len(kept)), aware
                )
                if status is not None:  # an invalid entry: logged, left out
                    found.append(status)
        return found

    async def drop_snapshots(self, name: str) -> int:
        name, is_stream = check_drop_name(name)
        self._check_open()
        streams = [name] if is_stream else [s for s in self._snapshots if category_of(s) == name]
        return sum(len(self._snapshots.pop(stream, [])) for stream in streams)


class MemoryQuerySnapshots(SupportsQuerySnapshots):
    """:class:`SupportsQuerySnapshots` on a dict; the store counts its erasures in ``_erasures``."""

    __slots__ = ()

    _query_snapshots: dict[tuple[str, int], QuerySnapshot]
    _erasures: int
    _log: list[Any]  # the store's events by position: its head is their count

    @abstractmethod
    def _check_open(self) -> None: ...

    async def load_query_snapshot(self, key: str, schema_version: int) -> tuple[QuerySnapshot | None, int]:
        key, schema_version = check_query_snapshot_load(key, schema_version)
        self._check_open()
        found = self._query_snapshots.get((key, schema_version))
        if found is None or found.erasures != self._erasures:
            return None, self._erasures
        row = (key, schema_version, found.position, found.count, found.version, found.data, found.taken_at, found.label)
        return query_snapshot_row(row, found.erasures, len(self._log), lambda taken_at: found.taken_at), self._erasures

    async def save_query_snapshot(
        self,
        key: str,
        schema_version: int,
        position: int,
        count: int,
        version: int | None,
        data: bytes,
        erasures: int,
        label: str = "",
    ) -> bool:
        key, schema_version, position, count, version, data, erasures, label = check_query_snapshot_save(
            key, schema_version, position, count, version, data, erasures, label
        )
        self._check_open()
        if erasures != self._erasures:
            return False
        old = self._query_snapshots.get((key, schema_version))
        if old is not None and old.erasures == erasures and len(self._log) >= old.position > position:
            return True  # a newer one is kept (one past the head is never loaded: replaced)
        taken = datetime.now(UTC)
        self._query_snapshots[key, schema_version] = QuerySnapshot(
            key, schema_version, position, count, version, data, erasures, taken, label
        )
        return True

    async def query_snapshot_status(self) -> list[QuerySnapshotStatus]:
        self._check_open()
        return [
            QuerySnapshotStatus(
                s.key, s.schema_version, s.position, s.count, s.taken_at, s.label, s.erasures == self._erasures
            )
            for s in sorted(self._query_snapshots.values(), key=lambda s: (s.label, s.key, s.schema_version))
            if s.position <= len(self._log)  # past the head: not a snapshot (another store's: logged there)
        ]

    async def drop_query_snapshots(self) -> int:
        self._check_open()
        dropped = len(self._query_snapshots)
        self._query_snapshots.clear()
        return dropped
