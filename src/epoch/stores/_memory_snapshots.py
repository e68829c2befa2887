"""The memory store's snapshots: a dict from stream name to its snapshots, newest last."""

from __future__ import annotations

from abc import abstractmethod
from datetime import UTC, datetime

from epoch.records import category_of
from epoch.stores._snapshots import (
    Snapshot,
    SnapshotStatus,
    SupportsSnapshots,
    check_drop_name,
    check_load,
    check_save,
    check_status_category,
)

__all__ = ["MemorySnapshots"]


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
            if usable and snapshot.schema_version == schema_version:
                return snapshot
        return None

    async def snapshot_status(self, category: str | None = None) -> list[SnapshotStatus]:
        category = check_status_category(category)
        self._check_open()
        found = []
        for stream in sorted(self._snapshots):
            kept = self._snapshots[stream]
            if kept and (category is None or category_of(stream) == category):
                newest = kept[-1][1]
                found.append(SnapshotStatus(stream, newest.version, newest.schema_version, newest.taken_at, len(kept)))
        return found

    async def drop_snapshots(self, name: str) -> int:
        name, is_stream = check_drop_name(name)
        self._check_open()
        streams = [name] if is_stream else [s for s in self._snapshots if category_of(s) == name]
        return sum(len(self._snapshots.pop(stream, [])) for stream in streams)
