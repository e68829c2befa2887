"""Translation between epoch's records, guards, filters and URLs and ``kurrentdbclient``'s.

Kept apart from the store (:mod:`epoch.stores.kurrentdb`) so it reads as the store's logic only; the
client's errors are translated in :mod:`epoch.stores.kurrentdb.errors`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from epoch.records import ANY, NO_STREAM, STREAM_EXISTS, ExpectedVersion, NewEvent, RecordedEvent, category_of
from epoch.stores._checks import url_int

try:
    from kurrentdbclient import NewEvent as KNewEvent
    from kurrentdbclient import StreamState
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from epoch.errors import MissingDependency

    raise MissingDependency("kurrentdbclient", "kurrentdb") from exc

__all__ = [
    "TAGS_KEY",
    "exact_stream",
    "split_url",
    "SYSTEM_STREAMS",
    "is_user_event",
    "split_tags",
    "stream_filter",
    "tagged_metadata",
    "to_new_event",
    "to_record",
    "to_stream_state",
]

SYSTEM_STREAMS = r"\$.*"
"""KurrentDB reserves stream names starting with ``$`` (``$settings``, ``$$users-1`` metadata, ``$ce-users``)."""

_ANY_JSON = msgspec.json.Decoder()
_UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_JSON = "application/json"
_BINARY = "application/octet-stream"


def to_stream_state(expected: ExpectedVersion | int) -> Any:
    """epoch's guard as the client's ``current_version``: a ``StreamState`` member or an int."""
    if expected is ANY:
        return StreamState.ANY
    if expected is NO_STREAM:
        return StreamState.NO_STREAM
    if expected is STREAM_EXISTS:
        return StreamState.EXISTS
    return expected


def content_type(data: bytes) -> str:
    """``application/json`` for a JSON document (so server-side projections can read it), else binary.

    KurrentDB stores the bytes unchanged either way; the content type is only a flag.
    """
    if not data:
        return _BINARY
    try:
        _ANY_JSON.decode(data)
    except msgspec.DecodeError:
        return _BINARY
    return _JSON


TAGS_KEY = "$tags"
"""A tagged event's metadata on the server: ``{"$tags": [...], "$metadata": <epoch's metadata>}``."""
_METADATA_KEY = "$metadata"
_TAGGED_PREFIX = b'{"$tags":'


class _Tagged(msgspec.Struct, forbid_unknown_fields=True):
    tags: list[str] = msgspec.field(name=TAGS_KEY)
    metadata: msgspec.Raw = msgspec.field(name=_METADATA_KEY, default=msgspec.Raw())


_TAGGED = msgspec.json.Decoder(_Tagged)
_TEXT = msgspec.json.Decoder(str)


def tagged_metadata(tags: tuple[str, ...], metadata: bytes) -> bytes:
    """The metadata a tagged event is stored with: KurrentDB events carry no tags, so they travel in the
    metadata under ``$tags``, epoch's own metadata beside them under ``$metadata`` (the JSON object as
    it is, or, when it has surrounding whitespace a JSON parser would drop, as a string), byte for byte."""
    head = _TAGGED_PREFIX + msgspec.json.encode(list(tags))
    if not metadata:
        return head + b"}"
    if metadata.strip() != metadata:  # kept exactly as a JSON string of its (UTF-8) text
        return head + b',"' + _METADATA_KEY.encode() + b'":' + msgspec.json.encode(metadata.decode()) + b"}"
    return head + b',"' + _METADATA_KEY.encode() + b'":' + metadata + b"}"


def split_tags(metadata: bytes) -> tuple[tuple[str, ...], bytes]:
    """``(tags, epoch's metadata)`` of a stored event's metadata (untagged: ``((), metadata)``)."""
    if not metadata.startswith(_TAGGED_PREFIX):
        return (), metadata
    try:
        tagged = _TAGGED.decode(metadata)
        raw = bytes(tagged.metadata)
        return tuple(tagged.tags), (_TEXT.decode(raw).encode() if raw.startswith(b'"') else raw)
    except msgspec.DecodeError:  # not ours: someone's own metadata that starts the same way
        return (), metadata


def to_new_event(event: NewEvent) -> Any:
    """epoch's ``NewEvent`` as the client's: same id (KurrentDB's idempotency key), type, bytes (the
    tags, if any, in the metadata: :func:`tagged_metadata`)."""
    return KNewEvent(
        type=event.type,
        data=event.data,
        metadata=tagged_metadata(event.tags, event.metadata) if event.tags else event.metadata,
        content_type=content_type(event.data),  # type: ignore[arg-type]
        id=event.id,
    )


def to_record(event: Any) -> RecordedEvent:
    """The client's recorded event as epoch's: ``position = commit_position + 1`` (so 0 means "before all")."""
    recorded_at = event.recorded_at if event.recorded_at is not None else _UNKNOWN_TIME
    tags, metadata = split_tags(bytes(event.metadata))
    return RecordedEvent(
        event.stream_name,
        event.stream_position,
        event.commit_position + 1,
        event.id,
        event.type,
        bytes(event.data),
        metadata,
        recorded_at.astimezone(UTC),
        tags,
    )


def is_user_event(event: Any, categories: tuple[str, ...] | None) -> bool:
    """True for an event of a non-system stream in one of ``categories`` (any, when ``None``)."""
    name: str = event.stream_name
    if name.startswith("$") or event.type == "$streamDeleted":  # a tombstone's marker (lifecycle.py)
        return False
    return categories is None or category_of(name) in categories


def stream_filter(categories: tuple[str, ...] | None) -> dict[str, Any]:
    """Server-side filter arguments for ``read_all``/``subscribe_to_all``.

    Categories filter by stream-name prefix (``users`` also matches ``usersX-1``: the exact check is
    :func:`is_user_event`); otherwise system streams are excluded.
    """
    if categories is None:
        return {"filter_exclude": (SYSTEM_STREAMS,), "filter_by_stream_name": True}
    return {"filter_include": categories, "filter_by_stream_name": True, "filter_by_prefix": True}


_EPOCH_OPTIONS = {"max_event_size", "id_check_window", "admin_url"}


def split_url(url: str) -> tuple[str, dict[str, Any]]:
    """The client's URI and epoch's own options, which are taken out before the client sees the URL."""
    parts = urlsplit(url)
    ours = {k.lower(): v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() in _EPOCH_OPTIONS}
    theirs = [(k, v) for k, v in parse_qsl(parts.query) if k.lower() not in _EPOCH_OPTIONS]
    uri = urlunsplit(parts._replace(query=urlencode(theirs)))
    options: dict[str, Any] = {}
    for name, value in ours.items():
        if name == "admin_url":
            options[name] = value
        else:
            options[name] = None if name == "id_check_window" and value.lower() == "none" else url_int(name, value)
    return uri, options


def exact_stream(stream: str) -> dict[str, Any]:
    """A server-side filter for one stream's events in ``$all`` (prefix; the caller checks the exact name)."""
    return {"filter_include": (stream,), "filter_by_stream_name": True, "filter_by_prefix": True}
