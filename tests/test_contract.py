"""The backend-agnostic contract suite, run on every store through the ``store`` fixture (conftest)."""

from epoch.testing.contract import EventStoreContract


class TestEventStore(EventStoreContract):
    """memory, SQLite and PostgreSQL: see ``store_url`` in conftest."""
