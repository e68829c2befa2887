"""Dynamic consistency boundaries on KurrentDB, as far as the server can: tags travel in the metadata
(``mapping.tagged_metadata``), ``read_query`` is a scan of ``$all`` filtered here (KurrentDB keeps no
index of tags), and the two atomic writes raise ``NotSupported`` for the reasons in :data:`WHY_NOT`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from epoch.errors import NotSupported
from epoch.queries import Query
from epoch.records import RecordedEvent
from epoch.stores._dcb import WithoutBoundaries
from epoch.stores.kurrentdb.mapping import is_user_event, to_record

__all__ = ["WHY_NOT", "AtomicWritesUnsupported", "matching"]

WHY_NOT = {
    "append_with_condition": "KurrentDB checks a guard per stream only, never a condition over a query of "
    "other streams' events, so the check and the append cannot be one atomic step",
    "append_many": "kurrentdbclient's multi_append_to_stream (KurrentDB 25.1+) is atomic but carries "
    "metadata only as string-valued properties, so epoch's metadata bytes would not round-trip",
}
"""Why each atomic write of the boundaries is not served (the message of its ``NotSupported``)."""


class AtomicWritesUnsupported(WithoutBoundaries):
    """``append_with_condition`` and ``append_many`` raise ``NotSupported`` saying :data:`WHY_NOT` (after
    the input checks); the store overrides ``read_query``."""

    def _unsupported(self, operation: str) -> NotSupported:
        return NotSupported(type(self).__name__, operation, WHY_NOT[operation])


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
