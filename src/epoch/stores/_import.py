"""Shared checks for ``import_events`` (``epoch copy``): already-recorded events, grouped by stream."""

from __future__ import annotations

from collections.abc import Sequence

from epoch.errors import InvalidEvent
from epoch.records import NewEvent, RecordedEvent
from epoch.stores._checks import check_events, check_stream_name

__all__ = ["runs_of"]


def runs_of(events: Sequence[RecordedEvent], max_event_size: int) -> list[list[RecordedEvent]]:
    """Validate ``events`` like appends and split them into runs of consecutive events of one stream."""
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
        check_events(run[0].stream, [NewEvent(e.type, e.data, e.metadata, e.id) for e in run], max_event_size)
    return runs
