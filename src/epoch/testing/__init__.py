"""Test kit: decider specifications, read-side specifications, the store contract suite, and two helpers
for tests of stores (``new_events``, ``collect``).

``EventStoreContract``, ``SnapshotContract`` (snapshots, for a store with ``SupportsSnapshots``) and
``QuerySnapshotContract`` (DecisionHandler's snapshots, for a store with ``SupportsQuerySnapshots``) need
pytest and pytest-asyncio, so they are imported only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from epoch.testing._events import collect, new_events
from epoch.testing.projections import ProjectionSpec, SagaSpec, ViewSpec
from epoch.testing.spec import DeciderSpec

if TYPE_CHECKING:
    from epoch.testing.contract import EventStoreContract
    from epoch.testing.contract_query_snapshots import QuerySnapshotContract
    from epoch.testing.contract_snapshots import SnapshotContract

__all__ = [
    "DeciderSpec",
    "EventStoreContract",
    "ProjectionSpec",
    "QuerySnapshotContract",
    "SagaSpec",
    "SnapshotContract",
    "ViewSpec",
    "collect",
    "new_events",
]


def __getattr__(name: str) -> Any:
    if name == "EventStoreContract":
        from epoch.testing.contract import EventStoreContract

        return EventStoreContract
    if name == "SnapshotContract":
        from epoch.testing.contract_snapshots import SnapshotContract

        return SnapshotContract
    if name == "QuerySnapshotContract":
        from epoch.testing.contract_query_snapshots import QuerySnapshotContract

        return QuerySnapshotContract
    raise AttributeError(f"module 'epoch.testing' has no attribute {name!r}")
