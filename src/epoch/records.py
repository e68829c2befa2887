"""What stores move: new events in, recorded events out, plus append results and version guards.

Records are frozen ``msgspec.Struct``s: they are built once per event on the hottest paths (reading the
log), and a Struct is several times cheaper to construct than a frozen dataclass. ``NewEvent`` and
``RecordedEvent`` are left out of the cyclic garbage collector (``gc=False``): their fields are strs,
bytes, ints, a UUID, a datetime and a tuple of strs, which never form a cycle, and a batch of 200,000
new events kept in a list was built in 12 ms instead of 55 (the collector scanned them again and again).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import msgspec

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "EventEnvelope",
    "ExpectedVersion",
    "ExpectedVersionLike",
    "NewEvent",
    "RecordedEvent",
    "category_of",
    "msgpack_array_header",
    "uuid4s",
]

E = TypeVar("E")


class ExpectedVersion(enum.Enum):
    """Symbolic optimistic-concurrency guards for ``append``."""

    ANY = "any"
    """Append whatever the stream's version is."""
    NO_STREAM = "no_stream"
    """The stream must not exist (never written, or deleted)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must exist and hold at least one (undeleted) event."""

    def __repr__(self) -> str:
        return self.name


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS

ExpectedVersionLike = ExpectedVersion | int | None
"""What ``expected_version`` accepts: a member, ``None`` (same as NO_STREAM) or a version >= 0."""


# uuid4s builds every id of a batch from one os.urandom call: each id is a msgpack bin (0xc4, length 16,
# then its 16 bytes), so one decode in C makes all the UUID objects, several times faster than uuid4()
# per id from a few ids up. The translate tables set the version (4) and variant (RFC 4122) bits.
_UUIDS = msgspec.msgpack.Decoder(list[UUID])
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT_RFC4122 = bytes((b & 0x3F) | 0x80 for b in range(256))


def msgpack_array_header(count: int) -> bytes:
    """The msgpack header of an array of ``count`` items (the frame of :func:`uuid4s`'s ids, and of the
    ids of a SQLite page, which the store decodes the same way)."""
    if count < 16:
        return bytes((0x90 | count,))  # fixarray
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def uuid4s(count: int) -> list[UUID]:
    """``count`` fresh random (version 4) UUIDs, as ``uuid4()`` makes them, from one ``os.urandom`` call."""
    header = msgpack_array_header(count)
    ids = bytearray(os.urandom(18 * count))
    ids[0::18] = b"\xc4" * count
    ids[1::18] = b"\x10" * count
    ids[8::18] = ids[8::18].translate(_VERSION_4)  # byte 6 of the UUID: the version nibble
    ids[10::18] = ids[10::18].translate(_VARIANT_RFC4122)  # byte 8: the variant bits
    return _UUIDS.decode(header + ids)


# A NewEvent's default id comes from a pool that one uuid4s call refills: uuid4() costs ~1.2 us (a
# getrandom call, then UUID.__init__ in Python), about as much as encoding the event, and appending a
# batch builds one id per event. list.pop is atomic, so threads never take the same id; a forked child
# empties its copy of the pool, so no two processes hand out the same ids.
_POOL_SIZE = 256
_pool: list[UUID] = []
os.register_at_fork(after_in_child=_pool.clear)


def _fresh_id() -> UUID:
    try:
        return _pool.pop()
    except IndexError:
        _pool.extend(uuid4s(_POOL_SIZE))
        return _pool.pop()


class NewEvent(msgspec.Struct, frozen=True, gc=False):
    """An event to append: a type name, opaque ``data`` bytes, optional JSON ``metadata`` bytes, an id.

    The id defaults to a fresh UUID4; appending the same ids again at the same place is a no-op.
    ``tags`` (strings following the rules of an event type name) index the event for
    :meth:`~epoch.stores.EventStore.read_query` and append conditions (dynamic consistency boundaries);
    they are stored de-duplicated, in the order given.
    """

    type: str
    data: bytes
    metadata: bytes = b""
    id: UUID = msgspec.field(default_factory=_fresh_id)
    tags: tuple[str, ...] = ()


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as stored: where it is (stream, version, position), what it is, and when it was recorded."""

    stream: str
    version: int
    position: int
    id: UUID
    type: str
    data: bytes
    metadata: bytes
    recorded_at: datetime
    tags: tuple[str, ...] = ()

    @property
    def category(self) -> str:
        """The stream's category (the part before the first ``-``)."""
        return category_of(self.stream)


class EventEnvelope(msgspec.Struct, Generic[E], frozen=True):
    """A decoded :class:`RecordedEvent`: ``data`` is the domain event, ``metadata`` a dict."""

    stream: str
    version: int
    position: int
    id: UUID
    type: str
    data: E
    metadata: dict[str, Any]
    recorded_at: datetime
    tags: tuple[str, ...] = ()

    @property
    def correlation_id(self) -> str | None:
        """The ``$correlation_id`` metadata entry, if any."""
        value = self.metadata.get("$correlation_id")
        return None if value is None else str(value)

    @property
    def causation_id(self) -> str | None:
        """The ``$causation_id`` metadata entry, if any."""
        value = self.metadata.get("$causation_id")
        return None if value is None else str(value)

    @property
    def category(self) -> str:
        """The stream's category (the part before the first ``-``)."""
        return category_of(self.stream)


class AppendResult(msgspec.Struct, frozen=True):
    """Where an append left the stream.

    ``version``/``position`` are those of the last event written, or of the stream's last event when
    nothing was written (``None``/0 for an empty stream). ``positions`` has one entry per event written.
    ``replayed``: the events were stored already, at this place, by an earlier append of the same ids
    (guarantee 5): this one wrote nothing and answers with where they are.
    """

    stream: str
    version: int | None
    position: int
    positions: tuple[int, ...]
    recorded_at: datetime | None
    replayed: bool = False

    @classmethod
    def of(
        cls, stream: str, written: Sequence[RecordedEvent], head: RecordedEvent | None = None, replayed: bool = False
    ) -> AppendResult:
        """The result of an append to ``stream`` that wrote (or, replayed, had already written) ``written``.

        ``version``, ``position`` and ``recorded_at`` are the last written event's and ``positions`` are
        all of theirs. When nothing was written, they are those of ``head``, the stream's last event (no
        positions), or ``None``/0/``None`` for an empty stream.
        """
        last = written[-1] if written else head
        if last is None:
            return cls(stream, None, 0, (), None)
        return cls(stream, last.version, last.position, tuple(e.position for e in written), last.recorded_at, replayed)


def category_of(stream: str) -> str:
    """The category of a stream name: the part before the first ``-``, or the whole name."""
    head, _, _ = stream.partition("-")
    return head
