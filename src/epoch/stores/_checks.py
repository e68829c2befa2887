"""Input checks every store runs before it touches storage, so all backends fail the same way."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import NamedTuple
from uuid import UUID

import msgspec

from epoch.errors import (
    ConfigurationError,
    DuplicateEventId,
    InvalidEvent,
    InvalidStreamName,
    InvalidVersion,
)
from epoch.queries import check_tags
from epoch.records import ExpectedVersion, NewEvent, RecordedEvent
from epoch.streams import (
    MAX_TYPE_NAME,
    check_category,
    check_expected_version,
    check_name,
    check_stream_name,
    enforce_expected_version,
)

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "GLOBAL_LOG",
    "MAX_EVENT_SIZE_LIMIT",
    "MAX_INT64",
    "MAX_METADATA_DEPTH",
    "check_append",
    "check_categories",
    "check_category",
    "check_events",
    "check_expected_version",
    "check_max_event_size",
    "check_read",
    "check_read_bounds",
    "check_stream_name",
    "clamp64",
    "enforce_expected_version",
    "is_replay",
    "Read",
    "runs_of",
    "url_int",
]

DEFAULT_MAX_EVENT_SIZE = 1024 * 1024
"""Largest ``len(data) + len(metadata)`` of one event, in bytes (1 MiB)."""

MAX_EVENT_SIZE_LIMIT = 1_000_000_000
"""The largest ``max_event_size`` a store accepts: about what one SQLite or PostgreSQL value can hold."""

MAX_METADATA_DEPTH = 64
"""How deeply a metadata object may nest (objects and arrays, the metadata object itself counting 1).

Metadata is a flat map in practice; a bound keeps every reader (the codec, the CLI, the explorer) far
from a recursion limit, and one crafted event from bricking them.
"""

_JSON_OBJECT = msgspec.json.Decoder(dict)
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")


@lru_cache(maxsize=1024)
def _type_problem(name: str) -> str | None:
    return check_name(name, MAX_TYPE_NAME)  # cached: a store checks the same few type names all day


def check_categories(categories: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """Normalise a ``categories`` argument (one name or several) to a tuple, or ``None`` for all.

    Repeated names are dropped (the first occurrence keeps its place), so a store that queries one
    category at a time delivers each event once (guarantee 11). An empty iterable gives ``()``: a filter
    that matches nothing, which every store answers without querying (``read_all`` yields nothing,
    ``subscribe`` waits until it is closed).
    """
    if categories is None:
        return None
    if isinstance(categories, str):
        return (check_category(categories),)
    if isinstance(categories, (bytes, bytearray)) or not isinstance(categories, Iterable):
        raise InvalidStreamName(categories, "categories must be a category name or an iterable of them")
    return tuple(dict.fromkeys(check_category(name) for name in categories))


def check_append(
    stream: object, events: object, expected_version: object, max_event_size: int = DEFAULT_MAX_EVENT_SIZE
) -> tuple[str, list[NewEvent], ExpectedVersion | int]:
    """Everything an append checks before it touches storage, in the order every store reports it."""
    name = check_stream_name(stream)
    expected = check_expected_version(name, expected_version)
    return name, check_events(name, events, max_event_size), expected


def check_events(stream: str, events: object, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> list[NewEvent]:
    """Validate a batch to append and return it as a list; raise :class:`InvalidEvent` on the first bad one."""
    if isinstance(events, (str, bytes, NewEvent)) or not isinstance(events, Iterable):
        raise InvalidEvent(stream, 0, f"events must be a list of NewEvent, not {type(events).__name__}")
    batch = list(events)
    seen: set[int] = set()  # id.int: hashing an int is far cheaper than UUID.__hash__
    valid_metadata = b""  # the events of one command usually carry equal metadata: parse it once
    for index, event in enumerate(batch):
        if not isinstance(event, NewEvent):
            raise InvalidEvent(stream, index, f"expected a NewEvent, not {type(event).__name__}")
        if type(event.type) is not str or _type_problem(event.type) is not None:
            if isinstance(event.type, str):  # a str subclass (a StrEnum member): its value, as a plain str
                batch[index] = event = msgspec.structs.replace(event, type=str.__str__(event.type))
            reason = check_name(event.type, MAX_TYPE_NAME)
            if reason is not None:
                raise InvalidEvent(stream, index, f"event type {event.type!r} {reason}")
        if type(event.data) is not bytes:
            raise InvalidEvent(stream, index, f"data must be bytes, not {type(event.data).__name__}")
        if type(event.metadata) is not bytes:
            raise InvalidEvent(stream, index, f"metadata must be bytes, not {type(event.metadata).__name__}")
        if not isinstance(event.id, UUID):
            raise InvalidEvent(stream, index, f"id must be a UUID, not {type(event.id).__name__}")
        size = len(event.data) + len(event.metadata)
        if size > max_event_size:
            raise InvalidEvent(stream, index, f"{size} bytes of data and metadata exceed the limit of {max_event_size}")
        if event.metadata and event.metadata != valid_metadata:
            problem = _metadata_problem(event.metadata)
            if problem is not None:
                raise InvalidEvent(stream, index, problem)
            valid_metadata = event.metadata
        if event.tags or type(event.tags) is not tuple:
            tags = check_tags(event.tags)
            if type(tags) is str:
                raise InvalidEvent(stream, index, tags)
            # De-duplicated, a list made a tuple, or a str subclass made its plain value: store what is read back.
            if tags != event.tags or any(type(tag) is not str for tag in event.tags):
                batch[index] = event = msgspec.structs.replace(event, tags=tags)
        key = event.id.int
        if key in seen:
            raise DuplicateEventId(stream, event.id, stream, None)
        seen.add(key)
    return batch


def _nesting(raw: bytes) -> int:
    """How deeply the arrays and objects of the JSON text ``raw`` nest (brackets inside strings do not count)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_METADATA_DEPTH:
        return 0  # the usual case, in C: too few brackets to nest too deeply
    depth = deepest = 0
    for byte in _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", raw)):
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _metadata_problem(raw: bytes) -> str | None:
    """Why ``raw`` is not acceptable metadata (a UTF-8 JSON object nesting at most 64 levels), or None."""
    if _nesting(raw) > MAX_METADATA_DEPTH:
        return f"metadata nests deeper than {MAX_METADATA_DEPTH} levels"
    try:
        _JSON_OBJECT.decode(raw)
    except msgspec.DecodeError as exc:
        return f"metadata must be a UTF-8 JSON object: {exc}"
    except UnicodeDecodeError:  # inside a string: msgspec leaves it to Python's codec
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"metadata must be a UTF-8 JSON object: invalid UTF-8 at byte {exc.start}"
        return "metadata must be a UTF-8 JSON object: invalid UTF-8"  # pragma: no cover - msgspec agrees
    except RecursionError:  # pragma: no cover - the nesting bound comes first
        return f"metadata nests deeper than {MAX_METADATA_DEPTH} levels"
    return None


def is_replay(
    stream: str,
    events: Sequence[NewEvent],
    expected: ExpectedVersion | int,
    stored: Mapping[UUID, tuple[str, int]],
) -> bool:
    """Decide what to do when some ids of a batch are already stored (``stored`` maps id -> place).

    Returns True when the whole batch is already stored, in order, in this stream at consecutive
    versions that ``expected`` points at: the append is an idempotent retry and writes nothing.
    Raises :class:`DuplicateEventId` when any id is stored anywhere else. Returns False when no id is stored.
    """
    if not stored:
        return False
    first = stored.get(events[0].id) if events else None
    if first is not None and first[0] == stream:
        start = first[1]
        in_place = all(stored.get(e.id) == (stream, start + i) for i, e in enumerate(events))
        guard_matches = not isinstance(expected, int) or expected == start - 1
        if in_place and guard_matches:
            return True
    for event in events:
        place = stored.get(event.id)
        if place is not None:
            raise DuplicateEventId(stream, event.id, place[0], place[1])
    return False


MAX_INT64 = 2**63 - 1
"""The largest version (and SQLite position) a store can hold: SQL's ``bigint``/``INTEGER``."""


def check_read_bounds(stream: str, start: int | None, limit: int | None) -> None:
    """Refuse a ``from_version``/``after`` or ``limit`` that is not an int >= 0 with :class:`InvalidVersion`.

    Any int >= 0 is accepted, also beyond 64 bits (guarantee 13): a bound past every version or position
    a store can hold is simply past the end (an empty read forwards, the whole stream backwards), and a
    huge ``limit`` is no limit. Stores pass such numbers to their database through :func:`clamp64`.
    """
    if start is not None and (not isinstance(start, int) or isinstance(start, bool) or start < 0):
        raise InvalidVersion(stream, start, None, looked_up=False)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise InvalidVersion(stream, f"limit={limit!r}", None, looked_up=False)


class _Log(enum.Enum):
    GLOBAL = "$all"

    def __repr__(self) -> str:
        return "GLOBAL_LOG"


GLOBAL_LOG = _Log.GLOBAL
"""What :func:`check_read` is given instead of a stream name for a read of the global log (``read_all``,
``subscribe``): not a string, so no stream name, ``"$all"`` included, can be mistaken for it."""


class Read(NamedTuple):
    """A read's arguments once :func:`check_read` accepted them."""

    stream: str
    """The stream read, or ``"$all"`` for the global log (the name errors carry)."""
    start: int | None
    """``from_version`` of a stream read (``None``: its first event, or its last backwards); ``after`` of a
    global read (an int)."""
    limit: int | None
    """At most this many events (``None``: no limit)."""
    backwards: bool
    """Newest first (stream reads only; always False for the global log)."""
    categories: tuple[str, ...] | None
    """The categories a global read keeps (``None``: all), from :func:`check_categories`."""

    @property
    def matches_nothing(self) -> bool:
        """True when no event can be delivered (``limit=0``, or an empty ``categories`` filter), so a
        store answers without touching storage: a read yields nothing, ``subscribe`` waits until closed."""
        return self.limit == 0 or self.categories == ()


def check_read(
    stream: str | _Log,
    start: int | None = None,
    limit: int | None = None,
    *,
    backwards: bool = False,
    categories: str | Iterable[str] | None = None,
) -> Read:
    """The prologue of every read: validate its arguments in one order, before the store is touched.

    - ``read_stream(stream, from_version, backwards, limit)``:
      ``check_read(stream, from_version, limit, backwards=backwards)``;
    - ``read_all(after, limit, categories)``: ``check_read(GLOBAL_LOG, after, limit, categories=categories)``;
    - ``subscribe(after, categories)``: ``check_read(GLOBAL_LOG, after, categories=categories)``.

    The annotations are the read API's; the values are checked at run time all the same, in this order,
    the first problem raised:

    1. the stream name (:func:`check_stream_name`: :class:`InvalidStreamName`);
    2. the start: ``from_version`` is ``None`` or an int >= 0, ``after`` an int >= 0;
    3. the limit: ``None`` or an int >= 0 (2 and 3 as :func:`check_read_bounds`: :class:`InvalidVersion`,
       a ``bool`` is no int here, ints beyond 64 bits are accepted: guarantee 13);
    4. ``backwards``: a ``bool`` (:class:`InvalidVersion`; a truthy string would read newest first);
    5. the categories of a global read (:func:`check_categories`: :class:`InvalidStreamName`).

    Errors name the stream, or ``"$all"`` for a global read.
    """
    if stream is GLOBAL_LOG:
        name = "$all"
        if start is None:  # the global log has no "from the end": after=0 is its beginning
            raise InvalidVersion(name, start, None, looked_up=False)
    else:
        name = check_stream_name(stream)
    check_read_bounds(name, start, limit)
    if not isinstance(backwards, bool):
        raise InvalidVersion(name, f"backwards={backwards!r}", None, looked_up=False)
    names = check_categories(categories) if stream is GLOBAL_LOG else None
    return Read(name, start, limit, backwards, names)


def clamp64(number: int) -> int:
    """``number`` capped at :data:`MAX_INT64`, to bind as a bound where nothing lies beyond that value.

    No version reaches ``MAX_INT64`` (a stream would need 2**63 events), so reading from a capped bound
    reads exactly what the uncapped one would.
    """
    return number if number <= MAX_INT64 else MAX_INT64


def check_max_event_size(value: object) -> int:
    """A store's ``max_event_size`` setting: an int from 1 to :data:`MAX_EVENT_SIZE_LIMIT`, else ``ConfigurationError``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_EVENT_SIZE_LIMIT:
        raise ConfigurationError(
            f"max_event_size must be an int from 1 to {MAX_EVENT_SIZE_LIMIT} (bytes), not {value!r}"
        )
    return value


def url_int(key: str, value: str) -> int:
    """A store URL's integer parameter (ASCII digits, at most 100), else ``ConfigurationError`` naming it.

    (The URL itself is not quoted: it may hold a password.)
    """
    text = value.strip()
    if not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 100:
        raise ConfigurationError(f"bad value for {key} in the store URL: {value!r} is not an int")
    return int(text)


def runs_of(events: Sequence[RecordedEvent], max_event_size: int) -> list[list[RecordedEvent]]:
    """Validate ``events`` of an ``import_events`` like appends and split them into runs of consecutive
    events of one stream (``epoch copy`` imports already-recorded events, grouped by stream)."""
    runs: list[list[RecordedEvent]] = []
    for index, event in enumerate(events):
        if not isinstance(event, RecordedEvent):
            raise InvalidEvent("$import", index, f"expected a RecordedEvent, not {type(event).__name__}")
        check_stream_name(event.stream)
        if runs and runs[-1][-1].stream == event.stream:
            runs[-1].append(event)
        else:
            runs.append([event])
    for run in runs:
        checked = check_events(
            run[0].stream, [NewEvent(e.type, e.data, e.metadata, e.id, e.tags) for e in run], max_event_size
        )
        for index, (event, new) in enumerate(zip(run, checked, strict=True)):
            if new.tags is not event.tags:  # de-duplicated (or a list made a tuple): import what will be read back
                run[index] = msgspec.structs.replace(event, tags=new.tags)
    return runs
