"""What the explorer knows about the log: streams, positions and correlations, read forward incrementally.

The store protocol has no "list streams" or "find by correlation id", so the explorer reads the global
log once and then only what was appended since (``read_all(after=...)``) before each page it serves.
Memory grows with the log: one position per event, one entry per stream and per correlation id.
"""

from __future__ import annotations

import asyncio
import bisect
from array import array
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from epoch import EventStore, RecordedEvent
from epoch._payload import object_of

__all__ = ["LogIndex", "StreamSummary", "metadata_of"]


def metadata_of(event: RecordedEvent) -> dict[str, Any]:
    """The event's metadata as a dict; empty when there is none or it is not shown as a JSON object
    (bytes written by another tool or an older version may be anything: see ``epoch._payload``)."""
    return object_of(event.metadata)


@dataclass(slots=True)
class StreamSummary:
    """One stream as seen in the log (deleted streams included: their events stay in the log)."""

    name: str
    events: int
    first_position: int
    last_position: int
    last_version: int
    last_type: str
    last_recorded_at: datetime


class LogIndex:
    """Streams, positions and correlation chains of one store; :meth:`refresh` catches up with the log."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.position = 0
        self.streams: dict[str, StreamSummary] = {}
        self.positions = array("q")
        self._correlations: dict[str, list[UUID]] = {}
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the events appended since the last refresh (one reader at a time)."""
        async with self._lock:
            async for event in self.store.read_all(after=self.position):
                self._add(event)

    def _add(self, event: RecordedEvent) -> None:
        self.position = event.position
        self.positions.append(event.position)
        summary = self.streams.get(event.stream)
        if summary is None:
            self.streams[event.stream] = StreamSummary(
                event.stream, 1, event.position, event.position, event.version, event.type, event.recorded_at
            )
        else:
            summary.events += 1
            summary.last_position = event.position
            summary.last_version = event.version
            summary.last_type = event.type
            summary.last_recorded_at = event.recorded_at
        correlation = metadata_of(event).get("$correlation_id")
        if correlation is not None:
            self._correlations.setdefault(str(correlation), []).append(event.id)

    def find_streams(self, text: str, prefix: bool) -> list[StreamSummary]:
        """Streams whose name contains ``text`` (starts with it when ``prefix``), case-insensitively, by name."""
        needle = text.casefold()
        if prefix:
            found = (s for s in self.streams.values() if s.name.casefold().startswith(needle))
        else:
            found = (s for s in self.streams.values() if needle in s.name.casefold())
        return sorted(found, key=lambda s: s.name)

    def correlated(self, correlation_id: str) -> list[UUID]:
        """Ids of the events carrying this ``$correlation_id``, in log order."""
        return list(self._correlations.get(correlation_id, ()))

    def position_before(self, position: int, count: int) -> int:
        """The ``after`` that pages back ``count`` events from the page starting after ``position``."""
        index = bisect.bisect_right(self.positions, position)
        start = index - count
        return 0 if start <= 0 else self.positions[start - 1]

    def tail_after(self, count: int) -> int:
        """The ``after`` that shows the last ``count`` events."""
        return self.position_before(self.position, count)
