"""Dynamic consistency boundaries on KurrentDB, as far as the server can: tags travel in the metadata
(``mapping.tagged_metadata``), ``read_query`` is a scan of ``$all`` filtered here (KurrentDB keeps no
index of tags), and the two atomic writes raise ``NotSupported`` for the reasons in :data:`WHY_NOT`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from epoch.errors import NotSupported
from epoch.queries import Query
from epoch.records import RecordedEvent
from epoch.stores._dcb import WithoutBoundaries, check_query_read
from epoch.stores.kurrentdb.mapping import is_user_event, stream_filter, to_record

__all__ = ["MAX_SERVER_INT", "WHY_NOT", "AtomicWritesUnsupported", "matching"]

WHY_NOT = {
    "append_with_condition": "KurrentDB checks a guard per stream only, never a condition over a query of "
    "other streams' events, so the check and the append cannot be one atomic step",
    "append_many": "kurrentdbclient's multi_append_to_stream (KurrentDB 25.1+) is atomic but carries "
    "metadata only as string-valued properties, so epoch's metadata bytes would not round-trip",
}
"""Why each atomic write of the boundaries is not served (the message of its ``NotSupported``)."""


MAX_SERVER_INT = 2**63 - 1
"""The largest revision or commit position the server takes."""


class AtomicWritesUnsupported(WithoutBoundaries):
    """``append_with_condition`` and ``append_many`` raise ``NotSupported`` saying :data:`WHY_NOT` (after
    the input checks); ``read_query`` scans ``$all``."""

    if TYPE_CHECKING:  # the store's own (KurrentDBEventStore)

        def _open(self, stream: str | None = None) -> Any: ...

        def _events(self, stream: str | None, response_call: Any) -> AsyncGenerator[Any, None]: ...

    def _unsupported(self, operation: str) -> NotSupported:
        return NotSupported(type(self).__name__, operation, WHY_NOT[operation])

    async def read_query(self, query: Query, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        """A scan of ``$all`` from ``after``, matched here: KurrentDB keeps no index of tags."""
        query = check_query_read(query, after, limit)
        client = self._open()
        if query.matches_nothing or limit == 0 or after - 1 > MAX_SERVER_INT:
            return
        read = client.read_all(commit_position=after - 1 if after else None, **stream_filter(None))
        async with (
            aclosing(self._events(None, read)) as events,
            aclosing(matching(events, query, after, limit)) as found,
        ):
            async for record in found:
                yield record


async def matching(
    events: AsyncIterator[Any], query: Query, after: int, limit: int | None
) -> AsyncGenerator[RecordedEvent, None]:
    """The user events of a ``$all`` read (from ``after``) that match ``query``, at most ``limit``."""
    count = 0
    async for event in events:
        if event.commit_position + 1 > after and is_user_event(event, None):
            record = to_record(event)
            if query.matches(record.type, record.tags):
                yield record
                count += 1
                if limit is not None and count >= limit:
                    return
