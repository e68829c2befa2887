"""The memory store's index of event types and tags: what ``read_query`` and append conditions search."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from epoch.queries import Query
from epoch.records import RecordedEvent

__all__ = ["EventIndex"]


class EventIndex:
    """Positions by type and by tag, each list ascending (events are indexed in position order)."""

    __slots__ = ("_by_tag", "_by_type")

    def __init__(self) -> None:
        self._by_tag: dict[str, list[int]] = {}
        self._by_type: dict[str, list[int]] = {}

    def add(self, recorded: RecordedEvent) -> None:
        position = recorded.position
        self._by_type.setdefault(recorded.type, []).append(position)
        for tag in recorded.tags:
            self._by_tag.setdefault(tag, []).append(position)

    def matching(self, query: Query, after: int, log: Sequence[RecordedEvent | None]) -> list[int]:
        """The positions after ``after`` of the events of ``log`` (by position - 1; ``None``: erased) that
        match ``query``, ascending."""
        if query.matches_nothing:
            return []
        if query.matches_everything:
            return [position for position in range(after + 1, len(log) + 1) if log[position - 1] is not None]
        found: set[int] = set()
        for item in query.items:
            if item.tags:  # the rarest tag's events, each then checked against the whole item
                runs = [min((self._by_tag.get(tag, []) for tag in item.tags), key=len)]
            else:
                runs = [self._by_type.get(name, []) for name in item.types]
            for run in runs:
                for position in run[bisect.bisect_right(run, after) :]:
                    recorded = log[position - 1]
                    if recorded is not None and item.matches(recorded.type, recorded.tags):
                        found.add(position)
        return sorted(found)
