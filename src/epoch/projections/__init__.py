"""The read side: projections with checkpoints, exactly-once read models, process managers, scale-out.

See ``docs/projections.md``. The main names:

- :class:`ProjectionRunner` — runs projections from their checkpoints (``run``, ``run_until_idle``,
  ``rebuild``, ``replay_parked``, ``status``).
- :class:`Projection`, :class:`BatchProjection`, :class:`TransactionalProjection` — what a projection is.
- :class:`SagaRunner` — a process manager: events in, commands out through ``CommandHandler``s.
- :class:`PartitionedRunner` (``epoch.projections.scaleout``) — one projection over several processes
  (PostgreSQL).
"""

from __future__ import annotations

from epoch.projections._worker import Retry
from epoch.projections.checkpoints import (
    Checkpoint,
    CheckpointStore,
    MemoryCheckpointStore,
    SQLCheckpointStore,
    StreamCheckpointStore,
    TransactionalCheckpointStore,
    default_checkpoints,
)
from epoch.projections.parking import (
    MemoryParkingLot,
    ParkedEvent,
    ParkingLot,
    SQLParkingLot,
    StreamParkingLot,
    TransactionalParkingLot,
    default_parking,
)
from epoch.projections.projection import (
    BatchProjection,
    EventDecoder,
    FailurePolicy,
    Projection,
    ProjectionFailed,
    ProjectionSettings,
)
from epoch.projections.runner import ProjectionRunner
from epoch.projections.sagas import SagaRunner
from epoch.projections.status import ProjectionStatus, format_duration, projection_status
from epoch.projections.transactional import (
    Database,
    Dialect,
    PostgresTransaction,
    Transaction,
    TransactionalProjection,
    database_of,
)

__all__ = [
    "BatchProjection",
    "Checkpoint",
    "CheckpointStore",
    "Database",
    "Dialect",
    "EventDecoder",
    "FailurePolicy",
    "MemoryCheckpointStore",
    "MemoryParkingLot",
    "ParkedEvent",
    "ParkingLot",
    "PostgresTransaction",
    "Projection",
    "ProjectionFailed",
    "ProjectionRunner",
    "ProjectionSettings",
    "ProjectionStatus",
    "Retry",
    "SQLCheckpointStore",
    "SQLParkingLot",
    "SagaRunner",
    "StreamCheckpointStore",
    "StreamParkingLot",
    "Transaction",
    "TransactionalCheckpointStore",
    "TransactionalParkingLot",
    "TransactionalProjection",
    "database_of",
    "default_checkpoints",
    "default_parking",
    "format_duration",
    "projection_status",
]
