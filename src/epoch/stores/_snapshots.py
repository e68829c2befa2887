"""The snapshot capability: a store that keeps snapshots of stream states in its own database.

Declared by memory, SQLite, PostgreSQL and KurrentDB; asked about only in :func:`snapshot_store`. A store
without it (a third-party one) is still a full event store: handlers then fold every event.

A snapshot is the state of a stream after the event at ``version`` (which the store had at ``position``),
encoded by the handler (``data``), under the state's ``schema_version``. The store records which part of
the stream was visible when it took the snapshot (its ``first_visible`` version: what a soft delete, and
truncation, move) and loads a snapshot only while that is still so, in the same query: a snapshot never
brings back events deleted or truncated after it was taken.

A stored row is checked as it is loaded or listed (:func:`snapshot_row`, :func:`snapshot_status_row`): one
no save could have written (a column of another type or out of range, a version outside the stream's
visible part, a ``taken_at`` that is no instant: a row edited by hand, or corrupt) is not a snapshot,
logged at ``WARNING`` on the ``epoch.snapshots`` logger and left out, never raised.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeGuard, TypeVar

from epoch.errors import InvalidEvent, InvalidVersion
from epoch.streams import check_category, check_stream_name

__all__ = [
    "MAX_KEEP",
    "Snapshot",
    "SnapshotStatus",
    "SupportsSnapshots",
    "aware",
    "check_drop_name",
    "check_load",
    "check_save",
    "check_status_category",
    "instant_or_none",
    "snapshot_row",
    "snapshot_status_row",
    "snapshot_store",
    "valid_or_logged",
]

T = TypeVar("T")

logger = logging.getLogger("epoch.snapshots")

MAX_KEEP = 1000
"""The most snapshots per stream a save may keep."""

_MAX_INT64 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stored snapshot: ``stream``'s state after ``version`` (at ``position``), as bytes of ``schema_version``."""

    stream: str
    version: int
    position: int
    schema_version: int
    data: bytes
    taken_at: datetime
    first_visible: int = 0
    """The stream's first visible version when the snapshot was taken (a load checks it is still so)."""


@dataclass(frozen=True, slots=True)
class SnapshotStatus:
    """One stream's snapshots: the newest one's version and schema version, and how many are kept."""

    stream: str
    version: int
    schema_version: int
    taken_at: datetime
    count: int


class SupportsSnapshots(ABC):
    """Declared by an event store that keeps snapshots (see the module docstring)."""

    __slots__ = ()

    @abstractmethod
    async def save_snapshot(
        self, stream: str, version: int, schema_version: int, data: bytes, keep: int, first_visible: int | None = None
    ) -> bool:
        """Store a snapshot of the state after ``version`` (replacing one at the same version and schema) and
        keep only the newest ``keep`` of the stream; ``False`` (nothing stored) when the event at ``version``
        is not visible now (never written, deleted or truncated), or when ``first_visible`` is given and is
        not the stream's first visible version any more (the state was folded from events that a delete or
        a truncation has hidden since). Raises ``InvalidStreamName`` or ``InvalidVersion`` (also for a
        ``keep`` outside 1 to ``MAX_KEEP``) for bad input."""

    @abstractmethod
    async def load_snapshot(self, stream: str, schema_version: int, at_most: int | None = None) -> Snapshot | None:
        """The newest snapshot of ``schema_version`` at or below version ``at_most`` (``None``: any) that was
        taken while the stream's visible part began where it begins now; ``None`` when there is none."""

    @abstractmethod
    async def snapshot_status(self, category: str | None = None) -> list[SnapshotStatus]:
        """Every stream with snapshots (of ``category`` only, when given), by stream name."""

    @abstractmethod
    async def drop_snapshots(self, name: str) -> int:
        """Delete the snapshots of a stream (a name with ``-``) or of a whole category; how many were deleted."""


def snapshot_store(store: object) -> SupportsSnapshots | None:
    """``store`` as a :class:`SupportsSnapshots`, or ``None`` when it keeps no snapshots."""
    return store if isinstance(store, SupportsSnapshots) else None


def _check_int(stream: str, value: object, lowest: int, highest: int = _MAX_INT64) -> int:
    if type(value) is not int or not lowest <= value <= highest:
        raise InvalidVersion(stream, value, None, looked_up=False)
    return value


def check_save(
    stream: object, version: object, schema_version: object, data: object, keep: object, first_visible: object = None
) -> tuple[str, int, int, bytes, int, int | None]:
    """The arguments of ``save_snapshot``, checked; raises ``InvalidStreamName``, ``InvalidVersion`` or
    ``InvalidEvent`` (data that is not bytes)."""
    name = check_stream_name(stream)
    checked = (_check_int(name, version, 0), _check_int(name, schema_version, 1), _check_int(name, keep, 1, MAX_KEEP))
    first = None if first_visible is None else _check_int(name, first_visible, 0)
    if not isinstance(data, bytes):  # InvalidEvent: bad data for the store (an EpochError and a TypeError)
        raise InvalidEvent(name, 0, f"snapshot data must be bytes, not {type(data).__name__}")
    return name, checked[0], checked[1], data, checked[2], first


def check_load(stream: object, schema_version: object, at_most: object) -> tuple[str, int, int]:
    """The arguments of ``load_snapshot``, checked; ``at_most`` of ``None`` or beyond 64 bits as the largest."""
    name = check_stream_name(stream)
    schema = _check_int(name, schema_version, 1)
    if at_most is None:
        return name, schema, _MAX_INT64
    if type(at_most) is not int or at_most < 0:
        raise InvalidVersion(name, at_most, None, looked_up=False)
    return name, schema, min(at_most, _MAX_INT64)


def check_drop_name(name: object) -> tuple[str, bool]:
    """``(name, is_stream)``: a stream name (it has a ``-``) or a category; raises ``InvalidStreamName``."""
    checked = check_stream_name(name)
    if "-" in checked:
        return checked, True
    return check_category(checked), False


def check_status_category(category: object) -> str | None:
    """``None``, or a valid category name; raises ``InvalidStreamName``."""
    return None if category is None else check_category(category)


def _is_int(value: object, lowest: int, highest: int = _MAX_INT64) -> TypeGuard[int]:
    return type(value) is int and lowest <= value <= highest


def aware(taken_at: object) -> datetime:
    """``taken_at`` when it is an aware datetime (an ``instant`` for :func:`snapshot_row`), else ``TypeError``."""
    if not isinstance(taken_at, datetime) or taken_at.utcoffset() is None:
        raise TypeError(taken_at)
    return taken_at


def instant_or_none(taken_at: object, instant: Callable[[object], datetime]) -> datetime | None:
    """``instant(taken_at)``, the stored ``taken_at`` as an aware datetime; ``None`` when it is not one."""
    try:
        return instant(taken_at)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _checked(
    stream: str,
    schema_version: int,
    row: tuple[object, ...],
    stream_version: object,
    instant: Callable[[object], datetime],
) -> Snapshot | str:
    version, position, data, taken_at, first_visible = row
    if not _is_int(first_visible, 0):
        return f"first_visible {first_visible!r} is not an int from 0 to {_MAX_INT64}"
    if not _is_int(stream_version, 0) or not _is_int(version, first_visible, stream_version):
        return (
            f"version {version!r} is not an int from its first visible version, {first_visible},"
            f" to the stream's version, {stream_version}"
        )
    if type(position) is not int or position < 1:  # PostgreSQL's positions may pass 64 bits
        return f"position {position!r} is not an int >= 1"
    if not isinstance(data, (bytes, memoryview)):
        return f"data of type {type(data).__name__}, not bytes"
    when = instant_or_none(taken_at, instant)
    if when is None:
        return f"taken_at {taken_at!r} is not an instant"
    return Snapshot(stream, version, position, schema_version, bytes(data), when, first_visible)


def _checked_status(row: tuple[object, ...], instant: Callable[[object], datetime]) -> SnapshotStatus | str:
    stream, version, schema_version, taken_at, kept = row
    if type(stream) is not str:
        return f"stream {stream!r} is not a str"
    if not _is_int(version, 0):
        return f"version {version!r} is not an int from 0 to {_MAX_INT64}"
    if not _is_int(schema_version, 1):
        return f"schema_version {schema_version!r} is not an int from 1 to {_MAX_INT64}"
    if not _is_int(kept, 1):
        return f"{kept!r} snapshots kept"
    when = instant_or_none(taken_at, instant)
    if when is None:
        return f"taken_at {taken_at!r} is not an instant"
    return SnapshotStatus(stream, version, schema_version, when, kept)


def valid_or_logged(checked: T | str, what: Callable[[], str]) -> T | None:
    """A checked row's value, or ``None`` (logged at ``WARNING``, naming ``what()``) when the check gave the
    reason it is invalid."""
    if isinstance(checked, str):
        logger.warning("%s ignored: its row is invalid (%s)", what(), checked)
        return None
    return checked


def snapshot_row(
    stream: str,
    schema_version: int,
    row: tuple[object, ...],
    stream_version: object,
    instant: Callable[[object], datetime],
) -> Snapshot | None:
    """A stored row ``(version, position, data, taken_at, first_visible)`` of ``stream``, whose version is
    ``stream_version`` now, as a snapshot; ``None`` (logged at ``WARNING``) when no save could have written
    it: see the module docstring. ``instant``: the stored ``taken_at`` as an aware datetime (an exception:
    not one)."""
    checked = _checked(stream, schema_version, row, stream_version, instant)
    return valid_or_logged(checked, lambda: f"{stream}: snapshot at version {row[0]!r}")


def snapshot_status_row(row: tuple[object, ...], instant: Callable[[object], datetime]) -> SnapshotStatus | None:
    """A stored status row ``(stream, version, schema_version, taken_at, kept)`` (a stream's newest
    snapshot and how many it keeps), or ``None`` (logged at ``WARNING``) when its columns are not what
    a save writes."""
    return valid_or_logged(_checked_status(row, instant), lambda: f"{row[0]}: snapshot at version {row[1]!r}")
