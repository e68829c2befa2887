"""Rows of the SQLite store's ``events`` table to :class:`~epoch.records.RecordedEvent`s: the hottest loop of
every read (a 10,000-event fold spends more time here and in SQLite than in decoding), so it is built for
speed: one ``datetime`` per append (the events of one append share their instant), the ids of a page
decoded in one call, and a stream's pages without the stream's name (``schema.STREAM_COLUMNS``).

A row no append could have written (an ``id`` that is not bytes, a ``recorded_at`` that is no instant, tags
that are not text: edited by hand, or corrupt) raises :class:`~epoch.errors.DecodeError` naming its stream,
version and type. The check costs nothing on a good page: it runs only once the conversion has failed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, SafeUUID

import msgspec

from epoch.errors import DecodeError
from epoch.records import RecordedEvent, msgpack_array_header
from epoch.stores.sqlite.tags import split

__all__ = ["EPOCH", "MICROSECOND", "instant", "stream_records", "to_records", "uuid_of"]

_new_object = object.__new__
_set_attribute = object.__setattr__
_from_bytes = int.from_bytes
_from_timestamp = datetime.fromtimestamp
_UNKNOWN = SafeUUID.unknown


def uuid_of(raw: bytes) -> UUID:
    """The UUID of an ``id`` column."""
    # UUID(bytes=...) validates its arguments in Python; this is the same object for a third of the cost.
    value = _new_object(UUID)
    _set_attribute(value, "int", _from_bytes(raw, "big"))
    _set_attribute(value, "is_safe", _UNKNOWN)
    return value


# A page's ids become UUIDs in one msgspec call, as records.uuid4s makes them: each id framed as a msgpack
# bin of 16 bytes (0xc4 0x10), the frames in one array. Half the cost of building each UUID in Python.
_UUIDS = msgspec.msgpack.Decoder(list[UUID])
_BIN16 = b"\xc4\x10"


def _uuids(raw_ids: list[bytes]) -> list[UUID]:
    # The store writes 16-byte ids only (UUID.bytes); other lengths misframe the buffer, which msgspec refuses.
    count = len(raw_ids)
    if count == 0:
        return []
    try:
        return _UUIDS.decode(msgpack_array_header(count) + _BIN16 + _BIN16.join(raw_ids))
    except (msgspec.MsgspecError, TypeError):  # an id that is not 16 bytes (only a caller's own SQL writes
        return [uuid_of(raw) for raw in raw_ids]  # one), or not bytes (_bad_row names it): one by one


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def instant(microseconds: int) -> datetime:
    """The aware UTC datetime of a ``recorded_at`` column (microseconds since the epoch)."""
    # Exact: the float error (< 0.13 us for this century) is far below the rounding step.
    return _from_timestamp(microseconds / 1e6, UTC)


def to_records(rows: list[tuple[Any, ...]]) -> list[RecordedEvent]:
    """The records of rows of ``schema.COLUMNS``, in the order given."""
    built: list[RecordedEvent] = []
    append = built.append
    last_us = -1
    instant = EPOCH
    try:  # free until something raises (Python 3.11): the rows are checked only then
        ids = _uuids([row[3] for row in rows])
        for (stream, version, position, _, type_, data, metadata, recorded_at, tags), event_id in zip(
            rows, ids, strict=True
        ):
            if recorded_at != last_us:  # the events of one append share their instant
                last_us = recorded_at
                instant = _from_timestamp(recorded_at / 1e6, UTC)
            if tags is None:  # untagged (the usual case): the record's default, no split
                append(RecordedEvent(stream, version, position, event_id, type_, data, metadata, instant))
            else:
                append(RecordedEvent(stream, version, position, event_id, type_, data, metadata, instant, split(tags)))
    except _BAD_ROW as exc:
        if (found := _bad_row(rows)) is None:
            raise  # not a row's fault
        raise found from exc
    return built


def stream_records(stream: str, rows: list[tuple[Any, ...]]) -> list[RecordedEvent]:
    """The records of ``stream``'s rows of ``schema.STREAM_COLUMNS`` (``COLUMNS`` but the stream), in order.

    The same loop as :func:`to_records` for rows without the stream: reading the name back costs a
    fifth of a long read (SQLite copies each text value to end it with a NUL, then Python decodes it).
    """
    built: list[RecordedEvent] = []
    append = built.append
    last_us = -1
    instant = EPOCH
    try:
        ids = _uuids([row[2] for row in rows])
        for (version, position, _, type_, data, metadata, recorded_at, tags), event_id in zip(rows, ids, strict=True):
            if recorded_at != last_us:
                last_us = recorded_at
                instant = _from_timestamp(recorded_at / 1e6, UTC)
            if tags is None:
                append(RecordedEvent(stream, version, position, event_id, type_, data, metadata, instant))
            else:
                append(RecordedEvent(stream, version, position, event_id, type_, data, metadata, instant, split(tags)))
    except _BAD_ROW as exc:
        if (found := _bad_row([(stream, *row) for row in rows])) is None:
            raise  # not a row's fault
        raise found from exc
    return built


_BAD_ROW = (TypeError, ValueError, OverflowError, OSError, AttributeError)


def _bad_row(rows: list[tuple[Any, ...]]) -> DecodeError | None:
    """The :class:`DecodeError` of the first of ``rows`` (of ``schema.COLUMNS``) no append could have written
    (``None``: none of them)."""
    for stream, version, _, raw_id, type_, _, _, recorded_at, tags in rows:
        if not isinstance(raw_id, bytes):
            return DecodeError(stream, version, type_, f"id {raw_id!r} is not bytes")
        if tags is not None and not isinstance(tags, str):
            return DecodeError(stream, version, type_, f"tags {tags!r} are not text")
        try:
            _from_timestamp(recorded_at / 1e6, UTC)
        except _BAD_ROW:
            return DecodeError(
                stream, version, type_, f"recorded_at {recorded_at!r} is not an instant (microseconds since 1970)"
            )
    return None
