"""Read models of the Users example.

- :class:`UserDirectory` — a table ``user_directory`` in the store's own database (SQLite or
  PostgreSQL), written exactly once: each batch commits with the projection's checkpoint.
- :class:`UserNamesInMemory` — the same read model in a dict, for the memory store (at least once, made
  idempotent by remembering the last position applied).
"""

from __future__ import annotations

from typing import Any

from epoch.examples.users.domain import UserAdded, UserUpdated, codec
from epoch.projections import ProjectionRunner, Transaction, database_of
from epoch.records import EventEnvelope
from epoch.stores import EventStore


class UserDirectory:
    """``user_directory(user_id, directory, name, version)``: every user, by id, with its current name."""

    name = "user-directory"
    categories = "users"
    event_types = ("UserAdded", "UserUpdated")

    async def setup(self, tx: Transaction) -> None:
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS user_directory ("
            " user_id TEXT PRIMARY KEY, directory TEXT NOT NULL, name TEXT NOT NULL, renames INTEGER NOT NULL)"
        )

    async def handle_in_transaction(self, envelope: EventEnvelope[Any], tx: Transaction) -> None:
        directory = envelope.stream.partition("-")[2]
        match envelope.data:
            case UserAdded(user_id=user_id, name=name):
                await tx.execute(
                    "INSERT INTO user_directory (user_id, directory, name, renames) VALUES (?, ?, ?, 0)",
                    [user_id, directory, name],
                )
            case UserUpdated(user_id=user_id, name=name) if name is not None:
                # Not idempotent on purpose: exactly-once delivery is what keeps `renames` right.
                await tx.execute(
                    "UPDATE user_directory SET name = ?, renames = renames + 1 WHERE user_id = ?", [name, user_id]
                )

    async def reset(self, tx: Transaction) -> None:
        await tx.execute("DELETE FROM user_directory")

    @staticmethod
    async def rows(tx: Transaction) -> list[tuple[Any, ...]]:
        """Every row, by user id (for tests and the docs)."""
        return await tx.execute("SELECT user_id, directory, name, renames FROM user_directory ORDER BY user_id")


class UserNamesInMemory:
    """Users by id with their current name, in a dict; skips events it has already applied."""

    name = "user-names"
    categories = "users"
    event_types = ("UserAdded", "UserUpdated")

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.position = 0

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        if envelope.position <= self.position:
            return  # redelivered (at-least-once): already applied
        match envelope.data:
            case UserAdded(user_id=user_id, name=name):
                self.names[user_id] = name
            case UserUpdated(user_id=user_id, name=name) if name is not None:
                self.names[user_id] = name
        self.position = envelope.position

    async def reset(self) -> None:
        self.names.clear()
        self.position = 0


def runner(store: EventStore) -> ProjectionRunner:
    """The Users read models for ``store``: what ``epoch projections --app epoch.examples.users.projections:runner`` runs.

    The exactly-once table when the store has a database (SQLite, PostgreSQL), the dict otherwise.
    """
    projection: object = UserDirectory() if database_of(store) is not None else UserNamesInMemory()
    return ProjectionRunner(store, codec, [projection])
