"""The key table of the SQL stores (SQLite and PostgreSQL): :class:`SupportsKeys` over ``transaction()``.

Tables (SQLite migration 5, PostgreSQL migration 6)::

    epoch_keys(subject, key_id, key, created)   PK (subject, key_id): one row per key
    epoch_key_changes(id = 1, changes)          one row: bumped by every forget

Forgetting deletes the subject's rows. On SQLite the statement runs with ``secure_delete`` on, so the
freed cells are zeroed in the database file (the write-ahead log holds the old page until the next
checkpoint; a backup or a copy of the file made before keeps the key: docs/personal-data.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from epoch.stores._keys import SubjectKey, SupportsKeys
from epoch.stores._sql import Transaction

__all__ = ["SQLITE_KEY_TABLES", "SQLKeys"]

SQLITE_KEY_TABLES = (
    """CREATE TABLE IF NOT EXISTS epoch_keys (
        subject TEXT    NOT NULL,
        key_id  TEXT    NOT NULL,
        key     BLOB    NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (subject, key_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS epoch_key_changes (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        changes INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO epoch_key_changes (id, changes) VALUES (1, 0)",
)
"""SQLite migration 5 (the PostgreSQL one is ``stores/postgres/migrations/v6.py``)."""

_READ = "SELECT subject, key_id, key, created FROM epoch_keys WHERE subject = ? ORDER BY created, key_id"
_WRITE = "INSERT INTO epoch_keys (subject, key_id, key, created) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
_FORGET = "DELETE FROM epoch_keys WHERE subject = ?"
_BUMP = "UPDATE epoch_key_changes SET changes = changes + 1 WHERE id = 1"
_CHANGES = "SELECT changes FROM epoch_key_changes WHERE id = 1"
_EXPORT = "SELECT subject, key_id, key, created FROM epoch_keys ORDER BY subject, created, key_id"


def _row(row: tuple[Any, ...]) -> SubjectKey:
    return SubjectKey(row[0], row[1], bytes(row[2]), int(row[3]))


class SQLKeys(SupportsKeys):
    """:class:`SupportsKeys` for a store whose ``transaction()`` runs ``?``-style SQL (an ``SQLStore``)."""

    __slots__ = ()

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        raise NotImplementedError  # pragma: no cover - the SQL store's own method comes first in the MRO

    async def read_keys(self, subjects: Sequence[str]) -> list[SubjectKey]:
        found: list[SubjectKey] = []
        async with self.transaction() as tx:
            for subject in dict.fromkeys(subjects):
                found += [_row(row) for row in await tx.execute(_READ, (subject,))]
        return found

    async def write_keys(self, keys: Sequence[SubjectKey]) -> None:
        if not keys:
            return
        async with self.transaction() as tx:
            for key in keys:
                await tx.execute(_WRITE, (key.subject, key.key_id, key.key, key.created))

    async def forget_keys(self, subject: str) -> int:
        async with self.transaction() as tx:
            if tx.dialect == "sqlite":
                # Zero the freed cells in the file (a per-connection setting, harmless on the writer).
                await tx.execute("PRAGMA secure_delete = ON")
            erased = len(await tx.execute(_READ, (subject,)))
            await tx.execute(_FORGET, (subject,))
            await tx.execute(_BUMP)
        return erased

    async def key_changes(self) -> int:
        async with self.transaction() as tx:
            rows = await tx.execute(_CHANGES)
        return int(rows[0][0]) if rows else 0

    async def export_keys(self) -> AsyncIterator[SubjectKey]:
        async with self.transaction() as tx:
            rows = await tx.execute(_EXPORT)
        for row in rows:
            yield _row(row)
