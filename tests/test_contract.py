"""The backend-agnostic contract suite, run on every store through the ``store`` fixture (conftest)."""

from epoch.testing.contract import EventStoreContract
from epoch.testing.contract_query_snapshots import QuerySnapshotContract
from epoch.testing.contract_snapshots import SnapshotContract


class TestEventStore(EventStoreContract):
    """memory, SQLite and PostgreSQL: see ``store_url`` in conftest."""


class TestSnapshots(SnapshotContract):
    """Snapshots on memory, SQLite and PostgreSQL (DESIGN §8)."""


class TestQuerySnapshots(QuerySnapshotContract):
    """DecisionHandler's snapshots on memory, SQLite and PostgreSQL (docs/snapshots.md)."""
