"""The input checks of the consistency-boundary entries (``read_query``, ``append_with_condition``,
``append_many``), run by every store before it touches storage, so all backends fail the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import NamedTuple

from epoch.errors import DuplicateEventId, InvalidEvent, InvalidQuery, InvalidVersion, NotSupported
from epoch.queries import AppendCondition, Query
from epoch.records import ANY, AppendResult, ExpectedVersion, ExpectedVersionLike, NewEvent, RecordedEvent
from epoch.stores._checks import check_append, check_read_bounds

__all__ = ["ALL_OPERATIONS", "QUERY", "Many", "WithoutBoundaries", "check_condition", "check_many", "check_query_read"]

ALL_OPERATIONS = frozenset({"read_query", "append_with_condition", "append_many"})
"""What a store serving every boundary operation declares as its ``boundary_operations``."""

QUERY = "$query"
"""The name errors of a query read carry where a stream read names its stream."""


def check_query_read(query: object, after: object, limit: object) -> Query:
    """Validate ``read_query``'s arguments (the query, then ``after``, then ``limit``) and return the query.

    ``after`` and ``limit`` follow ``read_all``: ints >= 0 of any size (else ``InvalidVersion``).
    """
    if not isinstance(query, Query):
        raise InvalidQuery(f"read_query takes a Query, not {type(query).__name__}")
    if after is None:  # the log has no "from the end": after=0 is its beginning (as read_all)
        raise InvalidVersion(QUERY, after, None, looked_up=False)
    check_read_bounds(QUERY, after, limit)  # type: ignore[arg-type]
    return query


def check_condition(condition: object) -> AppendCondition:
    """``condition`` if it is an :class:`AppendCondition`, else :class:`InvalidQuery`."""
    if not isinstance(condition, AppendCondition):
        raise InvalidQuery(f"condition must be an AppendCondition, not {type(condition).__name__}")
    return condition


class Many(NamedTuple):
    """One checked entry of ``append_many``."""

    stream: str
    events: list[NewEvent]
    expected: ExpectedVersion | int


def check_many(appends: object, max_event_size: int) -> list[Many]:
    """Validate ``append_many``'s ``[(stream, events, expected_version), ...]`` in input order.

    Each entry is checked as ``append`` checks its arguments. A stream may appear once: two entries for
    one stream would make its second guard ambiguous (``InvalidEvent``). An event id used in two entries
    raises ``DuplicateEventId`` (via the per-batch check, across the whole call).
    """
    if isinstance(appends, (str, bytes, tuple)) or not isinstance(appends, Iterable):
        raise InvalidEvent(
            "", 0, f"append_many takes a list of (stream, events, expected_version), not {type(appends).__name__}"
        )
    checked: list[Many] = []
    seen: set[str] = set()
    for index, entry in enumerate(appends):
        if not isinstance(entry, tuple) or len(entry) != 3:
            raise InvalidEvent("", index, "each entry of append_many is a (stream, events, expected_version) tuple")
        stream, events, expected = check_append(*entry, max_event_size)
        if stream in seen:
            raise InvalidEvent(stream, 0, "append_many names this stream twice: append its events in one entry")
        seen.add(stream)
        checked.append(Many(stream, events, expected))
    ids: dict[int, str] = {}
    for entry in checked:
        for event in entry.events:
            other = ids.setdefault(event.id.int, entry.stream)
            if other != entry.stream:
                raise DuplicateEventId(entry.stream, event.id, other, None)
    return checked


class WithoutBoundaries:
    """The consistency-boundary entries of a store that cannot serve them: each raises ``NotSupported``
    (after checking its arguments, so bad input still gets its own error)."""

    max_event_size: int

    boundary_operations: frozenset[str] = frozenset()
    """The boundary operations this store serves (none): ``epoch.testing.contract_dcb`` reads it."""

    def _unsupported(self, operation: str) -> NotSupported:
        return NotSupported(
            type(self).__name__, operation, "this store keeps no tag index and no multi-stream transaction"
        )

    async def read_query(self, query: Query, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        check_query_read(query, after, limit)
        raise self._unsupported("read_query")
        yield  # pragma: no cover - makes this an async generator, like every read

    async def append_with_condition(
        self,
        stream: str,
        events: Iterable[NewEvent],
        condition: AppendCondition,
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        check_append(stream, events, expected_version, self.max_event_size)
        check_condition(condition)
        raise self._unsupported("append_with_condition")

    async def append_many(
        self, appends: Iterable[tuple[str, Iterable[NewEvent], ExpectedVersionLike]]
    ) -> list[AppendResult]:
        check_many(appends, self.max_event_size)
        raise self._unsupported("append_many")
