"""Stream lifecycle (DESIGN §8) shared by every backend: the checks of ``truncate_before`` and
``set_stream_limits``, the tombstone marker, what a stream's lifecycle state is, and the capabilities
``epoch copy`` and ``CommandHandler`` ask a store about.

A stream's lifecycle lives on its row (``streams`` in SQLite, ``epoch_streams`` in PostgreSQL, a dict
in memory): ``first_visible``, the first version reads return (moved by a soft delete, a truncation and
a scavenge), and the limits. A hard delete (tombstone) sets ``first_visible`` to :data:`TOMBSTONE`, a
value no version reaches: the stream then reads as empty and its version as ``None`` through the same
``version >= first_visible`` test soft deletes use, and the appends of every backend refuse it by looking
at the row they read anyway (no extra query on the append path). Snapshots (wt-snapshots) stamp
``first_visible`` and are ignored once it moves, so every operation that erases events moves it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from datetime import timedelta
from typing import Any, NamedTuple, Protocol

from epoch.errors import InvalidVersion, StreamDeleted, WrongExpectedVersion
from epoch.records import AppendResult, ExpectedVersionLike, NewEvent, RecordedEvent
from epoch.stores._checks import check_read, check_read_bounds
from epoch.streams import check_stream_name

__all__ = [
    "MAX_AGE_LIMIT",
    "TOMBSTONE",
    "ConfirmedRead",
    "GuardedAppend",
    "StreamLifecycle",
    "check_confirmed_read",
    "check_hard",
    "check_limits",
    "check_truncate",
    "confirmed_read_of",
    "effective_start",
    "guarded_append_of",
    "is_tombstoned",
    "lifecycle_states_of",
    "limited_streams_of",
    "max_age_micros",
    "refuse_tombstone",
    "tombstone_of",
    "tombstoned_version",
]

TOMBSTONE = 2**62
"""``first_visible`` at or above this marks a hard-deleted stream: beyond every version, so it reads as
deleted everywhere. A tombstone is ``TOMBSTONE + version + 1`` (:func:`tombstone_of`), so it also says
which version the stream had (what ``StreamDeleted`` names) without a column of its own."""


def tombstone_of(version: int | None) -> int:
    """The ``first_visible`` of a stream hard-deleted at ``version`` (``None`` or -1: never written)."""
    return TOMBSTONE + (-1 if version is None else version) + 1


def tombstoned_version(first_visible: int) -> int | None:
    """The version a tombstoned stream had, from its ``first_visible``."""
    version = first_visible - TOMBSTONE - 1
    return None if version < 0 else version


MAX_AGE_LIMIT = timedelta(days=365 * 1000)
"""The largest ``max_age`` accepted (a thousand years): it fits every backend's interval type."""


def is_tombstoned(first_visible: int) -> bool:
    """Whether a stream row's ``first_visible`` marks a hard delete.

    The one store-internal check "is this stream tombstoned": ``append_many`` and
    ``append_with_condition`` call it (through :func:`refuse_tombstone`) on the row they lock.
    """
    return first_visible >= TOMBSTONE


def refuse_tombstone(stream: str, first_visible: int) -> None:
    """Raise :class:`StreamDeleted` (naming the stream's last version) when the row is a tombstone."""
    if first_visible >= TOMBSTONE:
        raise StreamDeleted(stream, tombstoned_version(first_visible))


def check_hard(stream: str, hard: object) -> bool:
    """``delete_stream``'s ``hard``: a ``bool`` (a truthy string must not erase a stream), else ``InvalidVersion``."""
    if not isinstance(hard, bool):
        raise InvalidVersion(stream, f"hard={hard!r}", None, looked_up=False)
    return hard


def check_truncate(stream: object, version: object) -> tuple[str, int]:
    """``truncate_before``'s arguments: a stream name, and an int >= 0 of any size (else ``InvalidVersion``)."""
    name = check_stream_name(stream)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise InvalidVersion(name, version, None, looked_up=False)
    return name, version


def check_limits(stream: object, max_count: object, max_age: object) -> tuple[str, int | None, timedelta | None]:
    """``set_stream_limits``'s arguments: ``max_count`` an int >= 1 or ``None``; ``max_age`` a positive
    ``timedelta`` up to :data:`MAX_AGE_LIMIT` or ``None`` (else ``InvalidVersion`` naming the argument)."""
    name = check_stream_name(stream)
    if max_count is not None and (not isinstance(max_count, int) or isinstance(max_count, bool) or max_count < 1):
        raise InvalidVersion(name, f"max_count={max_count!r}", None, looked_up=False)
    if max_age is not None and (
        not isinstance(max_age, timedelta) or not timedelta(0) < max_age <= MAX_AGE_LIMIT or max_age_micros(max_age) < 1
    ):
        raise InvalidVersion(name, f"max_age={max_age!r}", None, looked_up=False)
    count = None if max_count is None else min(int(max_count), TOMBSTONE)  # beyond 64 bits: no limit at all
    return name, count, max_age


def max_age_micros(max_age: timedelta) -> int:
    """``max_age`` in whole microseconds (how SQLite stores it)."""
    return max_age // timedelta(microseconds=1)


def effective_start(first_visible: int, version: int, max_count: int | None) -> int:
    """The first version a read returns under ``max_count`` (``max_age`` needs the events' times)."""
    start = first_visible
    if max_count is not None:
        start = max(start, version - max_count + 1)
    return start


class StreamLifecycle(NamedTuple):
    """A stream's lifecycle state as a store keeps it (what ``epoch copy`` carries over)."""

    stream: str
    version: int | None
    """The version of its last event, deleted or not (``None``: never written)."""
    first_visible: int
    """The first version reads return (:data:`TOMBSTONE` after a hard delete)."""
    first_stored: int
    """The first version whose event is still stored: the ones below were erased."""
    max_count: int | None
    max_age: timedelta | None

    @property
    def tombstoned(self) -> bool:
        return is_tombstoned(self.first_visible)


class GuardedAppend(Protocol):
    """``append`` that also refuses (``WrongExpectedVersion`` with the actual version) when the stream's
    ``first_visible`` moved past ``first_version``: events the caller folded were erased meanwhile.

    What a :class:`~epoch.commands.CommandHandler` appends a cached state's events with, so a truncation,
    a hard delete or a scavenge by anyone surfaces as a conflict in the same round trip as the append.
    """

    def __call__(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike, first_version: int
    ) -> Awaitable[AppendResult]: ...


def guarded_append_of(store: Any) -> GuardedAppend:
    """The store's own :class:`GuardedAppend` (``append_guarded``, checked in the append's round trip),
    else one that reads the stream's first event before a plain ``append`` (not atomic with it).

    A store's own is used only when its class defines ``append_guarded`` beside ``append``: a wrapper that
    overrides ``append`` (a decorator of the user's, a test's) must see every append.
    """
    if _owns(store, "append_guarded", "append"):
        found: GuardedAppend = store.append_guarded
        return found

    async def checked(
        stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike, first_version: int
    ) -> AppendResult:
        start = None
        async for recorded in store.read_stream(stream, limit=1):
            start = recorded.version
        if start is not None and start > first_version:
            raise WrongExpectedVersion(stream, expected_version, await store.stream_version(stream))
        result: AppendResult = await store.append(stream, events, expected_version)
        return result

    return checked


class ConfirmedRead(Protocol):
    """``read_stream(stream, from_version=...)``, or no event at all when the stream's first visible
    version is past ``first_version`` (or it has none): events the caller folded were erased meanwhile.

    What a :class:`~epoch.commands.CommandHandler` folds on a cached state with (``load`` and the
    commands that append nothing), so the check that the state is still built on stored events costs no
    round trip of its own where the store answers it in the read's query.
    """

    def __call__(self, stream: str, from_version: int, first_version: int) -> AsyncIterator[RecordedEvent]: ...


def _owns(store: Any, method: str, beside: str) -> bool:
    """Whether the class that defines ``beside`` (``append``, ``read_stream``) defines ``method`` too: a
    wrapper that overrides ``beside`` (a decorator of the user's, a test's) must see every call of it."""
    kind = type(store)
    owners = [next((c for c in kind.__mro__ if name in vars(c)), None) for name in (beside, method)]
    return owners[1] is not None and owners[1] is owners[0]


def check_confirmed_read(stream: str, from_version: int, first_version: int) -> str:
    """A :class:`ConfirmedRead`'s arguments, checked as ``read_stream``'s (both versions ints >= 0, any
    size), before the store is touched; the stream's name."""
    name = check_read(stream, from_version, None).stream
    check_read_bounds(name, first_version, None)
    return name


def confirmed_read_of(store: Any) -> ConfirmedRead:
    """The store's own :class:`ConfirmedRead` (``read_stream_confirmed``, checked in the read's own
    query), else one that reads the stream's first event before the read: two reads, not atomic (a
    truncation between them is caught by the next guarded append, as it is after any read)."""
    if _owns(store, "read_stream_confirmed", "read_stream"):
        found: ConfirmedRead = store.read_stream_confirmed
        return found

    async def confirmed(stream: str, from_version: int, first_version: int) -> AsyncIterator[RecordedEvent]:
        check_confirmed_read(stream, from_version, first_version)
        start = None
        async for recorded in store.read_stream(stream, limit=1):
            start = recorded.version
        if start is None or start > first_version:
            return
        async with aclosing(store.read_stream(stream, from_version=from_version)) as events:
            async for recorded in events:
                yield recorded

    return confirmed


def lifecycle_states_of(store: object) -> Callable[[], Any] | None:
    """The store's ``lifecycle_states()`` (an async iterator of :class:`StreamLifecycle` for every stream
    with a lifecycle state: deleted, truncated or limited), or ``None`` when it keeps none it can list."""
    found = getattr(store, "lifecycle_states", None)
    return found if callable(found) else None


def limited_streams_of(store: object) -> Callable[[], Awaitable[list[str]]] | None:
    """The store's ``limited_streams()`` (the names of the streams whose limits are set), for a store that
    lists no lifecycle states (KurrentDB), or ``None`` when it has no such list."""
    found = getattr(store, "limited_streams", None)
    return found if callable(found) else None
