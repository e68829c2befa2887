"""The query-snapshot capability: a store that keeps snapshots of :class:`~epoch.DecisionHandler` states.

A decision's state is the fold of the events a query matches, across any streams, so a snapshot of it
cannot be checked against one stream's row as a stream snapshot is. The store counts its erasures
instead: every hard delete, truncation or scavenge that removes at least one event adds one to a counter
kept in the store's own database, in the erasure's own transaction. A query snapshot records the count of
the moment its state was read; the store saves it only while the count is still that one, and loads it
only while the count is unchanged, in the same query. So a snapshot never brings back an event erased
after it was taken (DESIGN §8), whichever stream held it. The price: any erasure in the store makes every
query snapshot unusable, and the next decision over each query folds from the start (and saves a new one).

A snapshot is keyed by the handler (``key``: a digest of the query, the decider and the stream, built by
:mod:`epoch.snapshots`) and its state's ``schema_version``; each key keeps one snapshot per schema version,
the newest. Declared by memory, SQLite and PostgreSQL. KurrentDB does not declare it: its server erases
events on its own (scavenges, ``$maxAge``, other clients' deletes), which no counter of ours would see.

A stored row is checked as it is loaded or listed (:func:`query_snapshot_row`): one no save could have
written (a column of another type or out of range, a position past the store's head, a ``taken_at`` that
is no instant: a row edited by hand, or corrupt) is not a snapshot, logged and left out, never raised.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from epoch.errors import InvalidQuery
from epoch.stores._snapshots import instant_or_none, valid_or_logged

__all__ = [
    "MAX_LABEL",
    "QuerySnapshot",
    "QuerySnapshotStatus",
    "SupportsQuerySnapshots",
    "check_query_snapshot_key",
    "check_query_snapshot_load",
    "check_query_snapshot_save",
    "query_snapshot_row",
    "query_snapshot_store",
]


MAX_LABEL = 1000
"""The most characters of a snapshot's label (what ``epoch snapshots status`` shows of its query) kept."""

_MAX_INT64 = 2**63 - 1
_MAX_KEY = 128


@dataclass(frozen=True, slots=True)
class QuerySnapshot:
    """A decision's state (``data``, of ``schema_version``): the fold of the ``count`` events its query
    matched at or below ``position``, with the decision stream's own events up to ``version`` when the
    handler reads that stream too (``None`` otherwise, or when the stream had none), taken while the store
    had made ``erasures`` erasures."""

    key: str
    schema_version: int
    position: int
    count: int
    version: int | None
    data: bytes
    erasures: int
    taken_at: datetime
    label: str = ""


@dataclass(frozen=True, slots=True)
class QuerySnapshotStatus:
    """One query snapshot as ``epoch snapshots status`` lists it (``usable``: no erasure since it was taken)."""

    key: str
    schema_version: int
    position: int
    count: int
    taken_at: datetime
    label: str
    usable: bool


class SupportsQuerySnapshots(ABC):
    """Declared by an event store that keeps query snapshots (see the module docstring)."""

    __slots__ = ()

    @abstractmethod
    async def load_query_snapshot(self, key: str, schema_version: int) -> tuple[QuerySnapshot | None, int]:
        """The snapshot of ``key`` and ``schema_version`` when no erasure happened since it was taken
        (else ``None``), and the store's erasure count now, read together. Raises ``InvalidQuery`` for a
        bad key and ``InvalidVersion`` for a bad schema version."""

    @abstractmethod
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
        """Store the snapshot in place of the key's one of that schema version, unless that one is newer
        (a higher position under the same erasure count); ``False`` (nothing stored) when the store's
        erasure count is no longer ``erasures`` (the count read before the state's events were)."""

    @abstractmethod
    async def query_snapshot_status(self) -> list[QuerySnapshotStatus]:
        """Every query snapshot, by label, key and schema version."""

    @abstractmethod
    async def drop_query_snapshots(self) -> int:
        """Delete every query snapshot; how many were deleted."""


def query_snapshot_store(store: object) -> SupportsQuerySnapshots | None:
    """``store`` as a :class:`SupportsQuerySnapshots`, or ``None`` when it keeps no query snapshots."""
    return store if isinstance(store, SupportsQuerySnapshots) else None


def check_query_snapshot_key(key: object) -> str:
    """``key`` when it is 1 to 128 characters of ASCII letters, digits, ``-``, ``_`` and ``.``."""
    if (
        type(key) is not str
        or not 1 <= len(key) <= _MAX_KEY
        or not key.isascii()
        or not key.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        raise InvalidQuery(
            f"a query snapshot key must be 1 to {_MAX_KEY} ASCII letters, digits, '-', '_' or '.', not {key!r}"
        )
    return key


def _check_int(key: str, name: str, value: object, lowest: int) -> int:
    if type(value) is not int or not lowest <= value <= _MAX_INT64:
        raise InvalidQuery(f"query snapshot {key}: {name} must be an int from {lowest} to {_MAX_INT64}, not {value!r}")
    return value


def check_query_snapshot_load(key: object, schema_version: object) -> tuple[str, int]:
    """The arguments of ``load_query_snapshot``, checked."""
    name = check_query_snapshot_key(key)
    return name, _check_int(name, "schema_version", schema_version, 1)


def check_query_snapshot_save(
    key: object,
    schema_version: object,
    position: object,
    count: object,
    version: object,
    data: object,
    erasures: object,
    label: object,
) -> tuple[str, int, int, int, int | None, bytes, int, str]:
    """The arguments of ``save_query_snapshot``, checked (a label is cut to :data:`MAX_LABEL` characters,
    a lone surrogate in it replaced, so that every backend can store it)."""
    name = check_query_snapshot_key(key)
    schema = _check_int(name, "schema_version", schema_version, 1)
    at = _check_int(name, "position", position, 0)
    folded = _check_int(name, "count", count, 0)
    stream_version = None if version is None else _check_int(name, "version", version, 0)
    seen = _check_int(name, "erasures", erasures, 0)
    if not isinstance(data, bytes):
        raise InvalidQuery(f"query snapshot {name}: data must be bytes, not {type(data).__name__}")
    if not isinstance(label, str):
        raise InvalidQuery(f"query snapshot {name}: label must be a str, not {type(label).__name__}")
    text = label[:MAX_LABEL].encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return name, schema, at, folded, stream_version, bytes(data), seen, text


def _int(value: object, lowest: int, highest: int = _MAX_INT64) -> int | None:
    return value if type(value) is int and lowest <= value <= highest else None


def _checked_row(
    row: tuple[object, ...], erasures: object, head: int, instant: Callable[[object], datetime]
) -> QuerySnapshot | str:
    key, schema, position, folded, version, data, taken_at, label = row
    seen, at, count, schema_version = _int(erasures, 0), _int(position, 0, head), _int(folded, 0), _int(schema, 1)
    if type(key) is not str or schema_version is None or seen is None:
        return f"key {key!r}, schema_version {schema!r}, erasures {erasures!r}"
    if at is None:
        return f"position {position!r} is not an int from 0 to the store's head, {head}"
    if count is None:
        return f"folded {folded!r} is not an int from 0 to {_MAX_INT64}"
    stream_version = _int(version, 0)
    if version is not None and stream_version is None:
        return f"version {version!r} is not None or an int from 0 to {_MAX_INT64}"
    if not isinstance(data, (bytes, memoryview)) or type(label) is not str:
        return f"data of type {type(data).__name__}, label {label!r}"
    when = instant_or_none(taken_at, instant)
    if when is None:
        return f"taken_at {taken_at!r} is not an instant"
    return QuerySnapshot(key, schema_version, at, count, stream_version, bytes(data), seen, when, label)


def query_snapshot_row(
    row: tuple[object, ...], erasures: object, head: int, instant: Callable[[object], datetime]
) -> QuerySnapshot | None:
    """A stored row ``(key, schema_version, position, folded, version, data, taken_at, label)`` as a snapshot
    taken at ``erasures``, or ``None`` (logged at ``WARNING``) when no save could have written it: see the
    module docstring. ``head``: the store's head position; ``instant``: the stored ``taken_at`` as an aware
    datetime (an exception: not one)."""
    return valid_or_logged(_checked_row(row, erasures, head, instant), lambda: f"query snapshot {row[0]!r}")
