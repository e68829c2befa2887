"""Where each projection stands: checkpoint, head, lag in events and seconds, throughput, failures."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from epoch.projections.checkpoints import Checkpoint, CheckpointStore
from epoch.projections.parking import ParkingLot
from epoch.projections.projection import ProjectionSettings
from epoch.stores import EventStore

__all__ = ["LAG_COUNT_LIMIT", "ProjectionStatus", "count_events", "format_duration", "projection_status"]

LAG_COUNT_LIMIT = 1_000_000
"""``lag_events`` counts at most this many events (positions need not be dense, so lag is counted)."""

_RATE_FRESH_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """One projection's progress, as ``epoch projections status`` shows it."""

    name: str
    checkpoint: int
    head: int
    lag_events: int
    """Events after the checkpoint that the projection will read (its categories; all when unknown)."""
    lag_seconds: float
    """Age of the oldest event not yet processed; 0 when caught up."""
    events_per_second: float
    """Recent throughput; 0 when the runner has not saved for a minute."""
    updated_at: float | None
    error: str | None
    """The failure while the projection is failing, else ``None``."""
    failing_since: float | None
    parked: int

    @property
    def failing(self) -> bool:
        """Whether the projection is retrying or stopped on an error."""
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (for ``--json``)."""
        return {**asdict(self), "failing": self.failing}


async def count_events(
    store: EventStore,
    after: int,
    settings: ProjectionSettings | None = None,
    limit: int = LAG_COUNT_LIMIT,
) -> tuple[int, datetime | None]:
    """Count the events after ``after`` a projection would handle; also return the oldest one's time."""
    count = 0
    oldest: datetime | None = None
    categories = None if settings is None else settings.categories
    async for recorded in store.read_all(after=after, limit=limit, categories=categories):
        if settings is None or settings.handles(recorded):
            if oldest is None:
                oldest = recorded.recorded_at
            count += 1
    return count, oldest


async def projection_status(
    store: EventStore,
    checkpoints: CheckpointStore,
    parking: ParkingLot,
    projections: Mapping[str, ProjectionSettings | None] | None = None,
) -> list[ProjectionStatus]:
    """Status of the named projections (with their filters), or of every saved checkpoint when ``None``."""
    saved = {c.name: c for c in await checkpoints.list()}
    wanted: Mapping[str, ProjectionSettings | None] = (
        projections if projections is not None else dict.fromkeys(sorted(saved))
    )
    parked: dict[str, int] = {}
    for entry in await parking.list():
        parked[entry.projection] = parked.get(entry.projection, 0) + 1
    head = await store.head_position()
    now = time.time()
    result = []
    for name, settings in wanted.items():
        checkpoint = saved.get(name) or Checkpoint(name, 0)
        lag, oldest = await count_events(store, checkpoint.position, settings)
        fresh = checkpoint.updated_at is not None and now - checkpoint.updated_at < _RATE_FRESH_SECONDS
        result.append(
            ProjectionStatus(
                name=name,
                checkpoint=checkpoint.position,
                head=head,
                lag_events=lag,
                lag_seconds=0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds()),
                events_per_second=checkpoint.events_per_second if fresh else 0.0,
                updated_at=checkpoint.updated_at,
                error=checkpoint.error,
                failing_since=checkpoint.failing_since,
                parked=parked.get(name, 0),
            )
        )
    return result


def format_duration(seconds: float) -> str:
    """A lag for people: ``4.2s``, ``3.5m``, ``1.2h`` (the CLI and the web explorer show it alike)."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
