"""One stream of the memory store: its events by version and its lifecycle state (deletes, erasures, limits)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from epoch.records import RecordedEvent
from epoch.stores._lifecycle import effective_start

__all__ = ["MemoryStream"]


class MemoryStream:
    """A stream's events (``None`` where erased), where reads start, and its limits."""

    __slots__ = ("events", "first_stored", "first_visible", "max_age", "max_count")

    def __init__(self) -> None:
        self.events: list[RecordedEvent | None] = []  # by version; None once erased
        self.first_visible = 0  # versions below this were deleted or truncated (TOMBSTONE: hard-deleted)
        self.first_stored = 0  # versions below this were erased
        self.max_count: int | None = None
        self.max_age: timedelta | None = None

    @property
    def version(self) -> int | None:
        last = len(self.events) - 1
        return last if last >= self.first_visible else None

    def start(self) -> int:
        """The first version reads return: ``first_visible``, moved on by the limits."""
        start = effective_start(self.first_visible, len(self.events) - 1, self.max_count)
        if self.max_age is not None:
            oldest = datetime.now(UTC) - self.max_age
            while start < len(self.events) and (event := self.events[start]) is not None and event.recorded_at < oldest:
                start += 1
        return start
