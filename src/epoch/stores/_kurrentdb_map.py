"""Translation between epoch's records and ``kurrentdbclient``'s, and between their errors.

Kept apart from :mod:`epoch.stores.kurrentdb` so the store module reads as the store's logic only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from epoch.errors import ConfigurationError, EpochError, StoreUnavailable, StreamDeleted
from epoch.records import ANY, NO_STREAM, STREAM_EXISTS, ExpectedVersion, NewEvent, RecordedEvent, category_of
from epoch.stores._checks import url_int

try:
    import grpc
    from kurrentdbclient import NewEvent as KNewEvent
    from kurrentdbclient import StreamState
    from kurrentdbclient.exceptions import (
        AccessDeniedError,
        KurrentDBClientError,
        ProgrammingError,
        StreamIsDeletedError,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from epoch.errors import MissingDependency

    raise MissingDependency("kurrentdbclient", "kurrentdb") from exc

__all__ = [
    "exact_stream",
    "split_url",
    "SYSTEM_STREAMS",
    "driver_errors",
    "is_user_event",
    "stream_filter",
    "to_actual",
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


def to_actual(value: object) -> int | None:
    """The ``actual_version`` of a ``WrongCurrentVersionError`` as epoch's actual version."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


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


def to_new_event(event: NewEvent) -> Any:
    """epoch's ``NewEvent`` as the client's: same id (KurrentDB's idempotency key), type, bytes."""
    return KNewEvent(
        type=event.type,
        data=event.data,
        metadata=event.metadata,
        content_type=content_type(event.data),  # type: ignore[arg-type]
        id=event.id,
    )


def to_record(event: Any) -> RecordedEvent:
    """The client's recorded event as epoch's: ``position = commit_position + 1`` (so 0 means "before all")."""
    recorded_at = event.recorded_at if event.recorded_at is not None else _UNKNOWN_TIME
    return RecordedEvent(
        event.stream_name,
        event.stream_position,
        event.commit_position + 1,
        event.id,
        event.type,
        bytes(event.data),
        bytes(event.metadata),
        recorded_at.astimezone(UTC),
    )


def is_user_event(event: Any, categories: tuple[str, ...] | None) -> bool:
    """True for an event of a non-system stream in one of ``categories`` (any, when ``None``)."""
    name: str = event.stream_name
    if name.startswith("$"):
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


@contextlib.contextmanager
def driver_errors(stream: str | None) -> Iterator[None]:
    """Turn the client's and gRPC's errors into epoch's; epoch's own errors pass through."""
    try:
        yield
    except EpochError:
        raise
    except StreamIsDeletedError as exc:  # hard-deleted (tombstoned) by another tool
        raise StreamDeleted(stream or "$all") from exc
    except AccessDeniedError as exc:  # the server's ACLs: a setting to fix, not a connection to retry
        hint = ""
        if stream is not None and stream.startswith("$"):
            hint = ": system streams ($...) need a user in $admins, or the server's $systemStreamAcl to allow it"
        raise ConfigurationError(
            f"{stream or '$all'}: KurrentDB refused access ({str(exc) or 'access denied'}){hint}"
        ) from exc
    except (KurrentDBClientError, ProgrammingError, grpc.RpcError, grpc.aio.BaseError, OSError) as exc:
        raise StoreUnavailable(f"KurrentDB: {type(exc).__name__}: {exc}".rstrip(": "), stream) from exc


_EPOCH_OPTIONS = {"max_event_size", "id_check_window"}


def split_url(url: str) -> tuple[str, dict[str, Any]]:
    """The client's URI and epoch's own options, which are taken out before the client sees the URL."""
    parts = urlsplit(url)
    ours = {k.lower(): v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() in _EPOCH_OPTIONS}
    theirs = [(k, v) for k, v in parse_qsl(parts.query) if k.lower() not in _EPOCH_OPTIONS]
    uri = urlunsplit(parts._replace(query=urlencode(theirs)))
    options: dict[str, Any] = {}
    for name, value in ours.items():
        options[name] = None if name == "id_check_window" and value.lower() == "none" else url_int(name, value)
    return uri, options


def exact_stream(stream: str) -> dict[str, Any]:
    """A server-side filter for one stream's events in ``$all`` (prefix; the caller checks the exact name)."""
    return {"filter_include": (stream,), "filter_by_stream_name": True, "filter_by_prefix": True}
